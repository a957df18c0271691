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
"""The tempest plugin loads in a real tempest workspace."""

import os
import subprocess
import sys

import fixtures
import testtools

BIN = os.path.dirname(sys.executable)
EXPECTED = {
    'gpu_partitions.tempest.tests.api.test_providers.GpuProvidersTest',
    'gpu_partitions.tempest.tests.scenario.test_scheduling.'
    'GpuSchedulingTest',
}


class TempestWorkspaceTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.workspace = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'workspace')
        self.tempest('init', self.workspace, cwd=None)

    def tempest(self, *args, cwd=''):
        result = subprocess.run(
            [os.path.join(BIN, 'tempest')] + list(args),
            cwd=self.workspace if cwd == '' else cwd,
            capture_output=True, text=True, timeout=300)
        return result

    def test_list_tests_shows_the_plugin(self):
        result = self.tempest('run', '--list-tests')
        self.assertEqual(0, result.returncode, result.stderr[-2000:])
        classes = {line.split('[')[0].rsplit('.', 1)[0]
                   for line in result.stdout.splitlines()
                   if line.startswith('gpu_partitions.')}
        self.assertEqual(EXPECTED, classes)

    def test_skips_cleanly_without_the_service(self):
        result = self.tempest('run', '--regex', 'gpu_partitions')
        self.assertIn('Skipped: 2', result.stdout)
        self.assertIn('Failed: 0', result.stdout)
