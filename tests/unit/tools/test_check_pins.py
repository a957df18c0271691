#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.
"""tools/check-pins.py, run as tox runs it, against this environment."""

import os
import subprocess
import sys

import fixtures
import testtools

ROOT = os.path.join(os.path.dirname(__file__), '..', '..', '..')
SCRIPT = os.path.join(ROOT, 'tools', 'check-pins.py')
CONSTRAINTS = os.path.join(ROOT, 'constraints.txt')


class CheckPinsTest(testtools.TestCase):

    def run_check(self, constraints_text):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'constraints.txt')
        with open(path, 'w') as stream:
            stream.write(constraints_text)
        return subprocess.run([sys.executable, SCRIPT, path],
                              capture_output=True, text=True, timeout=60)

    def test_this_environment_is_fully_pinned(self):
        with open(CONSTRAINTS) as stream:
            result = self.run_check(stream.read())
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn('are pinned', result.stdout)

    def test_a_removed_pin_is_named(self):
        with open(CONSTRAINTS) as stream:
            lines = stream.read().splitlines()
        kept = [line for line in lines
                if not line.lower().startswith('testtools==')]
        self.assertEqual(len(lines) - 1, len(kept))
        result = self.run_check('\n'.join(kept) + '\n')
        self.assertEqual(1, result.returncode)
        self.assertIn('testtools==', result.stderr)
        self.assertIn('is installed but not pinned', result.stderr)
        self.assertIn('1 problem(s)', result.stderr)

    def test_a_moved_pin_and_a_range_are_named(self):
        with open(CONSTRAINTS) as stream:
            text = stream.read()
        text = text.replace('\nfixtures==', '\nfixtures==0.0.1\n# ')
        text += 'stestr>=1.0\n'
        result = self.run_check(text)
        self.assertEqual(1, result.returncode)
        self.assertIn('but pinned to 0.0.1', result.stderr)
        self.assertIn("'stestr>=1.0' is not NAME==VERSION", result.stderr)
