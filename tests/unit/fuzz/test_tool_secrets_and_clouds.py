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
"""The licence token stays private; --os-cloud failures are one line;
every numeric ``bench`` flag is bounded at parse time.
"""

import contextlib
import io
import os
import stat

import fixtures
import testtools
import yaml

from gpu_partitions.bench import cloudinit
from gpu_partitions import cli
from tests.unit import cli_output
from tests.unit.fuzz import outcomes

ELEMENT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir,
                       os.pardir, 'elements', 'nvidia-guest-driver',
                       'install.d', '30-nvidia-licence')


def main(argv):
    try:
        return cli_output.run_cli(argv)
    except SystemExit as exit_:
        # run_cli's streams are lost with it: a refusal's code is enough
        return exit_.code, '', ''


class LicenceTokenTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.token = os.path.join(self.tmp, 'token.tok')
        with open(self.token, 'w') as stream:
            stream.write('SECRET\n')

    def cloud_init(self, output, *extra):
        return main(['bench', 'cloud-init', '--model', 'm',
                     '--licence-token-file', self.token, '--output',
                     output] + list(extra))

    def test_output_is_owner_only_even_under_a_lax_umask(self):
        output = os.path.join(self.tmp, 'user-data')
        old = os.umask(0)
        try:
            code, _, err = self.cloud_init(output)
        finally:
            os.umask(old)
        self.assertEqual(0, code, err)
        self.assertEqual(0o600, stat.S_IMODE(os.stat(output).st_mode))

    def test_existing_world_readable_output_is_narrowed(self):
        output = os.path.join(self.tmp, 'user-data')
        with open(output, 'w') as stream:
            stream.write('old')
        os.chmod(output, 0o644)
        code, _, err = self.cloud_init(output)
        self.assertEqual(0, code, err)
        self.assertEqual(0o600, stat.S_IMODE(os.stat(output).st_mode))
        with open(output) as stream:
            self.assertIn('SECRET', stream.read())

    def test_token_file_in_the_guest_is_root_only(self):
        config = yaml.safe_load(cloudinit.render(
            {'VLLM_MODEL': 'm', 'VLLM_MAX_NUM_SEQS': 1,
             'VLLM_MAX_NUM_BATCHED_TOKENS': 1, 'VLLM_MAX_MODEL_LEN': 1},
            licence_token='SECRET'))
        token = next(entry for entry in config['write_files']
                     if entry['path'] == cloudinit.LICENCE_TOKEN_PATH)
        self.assertEqual('0600', token['permissions'])

    def test_image_element_installs_the_token_root_only(self):
        with open(ELEMENT) as stream:
            script = stream.read()
        self.assertIn('install -m 0600 "${token}"', script)
        self.assertNotIn('0744', script)

    def test_unreadable_token_or_output_is_one_line(self):
        for argv in (
                ['--licence-token-file', os.path.join(self.tmp, 'none')],
                ['--licence-token-file', self.tmp],
                ['--output', os.path.join(self.tmp, 'no', 'such', 'dir')]):
            code, out, err = main(['bench', 'cloud-init', '--model', 'm'] +
                                  argv)
            self.assertEqual(2, code, argv)
            self.assertEqual(1, len(err.strip().splitlines()), err)
            self.assertIn('error:', err)
        with open(self.token, 'wb') as stream:
            stream.write(b'\xff\xfe')
        code, _, err = self.cloud_init(os.path.join(self.tmp, 'u'))
        self.assertEqual(2, code)
        self.assertEqual(1, len(err.strip().splitlines()), err)


class OsCloudTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        clouds = os.path.join(tmp, 'clouds.yaml')
        with open(clouds, 'w') as stream:
            # Nothing listens on port 9 of loopback (discard, closed).
            stream.write('clouds:\n  unreachable:\n    auth:\n'
                         '      auth_url: http://127.0.0.1:9/identity\n'
                         '      username: u\n      password: p\n'
                         '      project_name: p\n'
                         '      user_domain_name: Default\n'
                         '      project_domain_name: Default\n')
        self.useFixture(fixtures.EnvironmentVariable('OS_CLIENT_CONFIG_FILE',
                                                     clouds))
        for name in ('OS_CLOUD', 'OS_AUTH_URL'):
            self.useFixture(fixtures.EnvironmentVariable(name))

    def test_unknown_and_unreachable_clouds_are_one_line(self):
        for cloud in ('no-such-cloud', 'unreachable'):
            code, out, err = main(['inventory', '--fixture', 'mi300x-spx',
                                   '--os-cloud', cloud])
            lines = err.strip().splitlines()
            self.assertEqual(2, code, err)
            self.assertEqual(1, len(lines), err)
            self.assertIn('--os-cloud %s' % cloud, lines[0])
            self.assertNotIn('Traceback', err)


# Numeric bench flags, each with values it must refuse.
BENCH_FLAGS = {
    '--num-prompts': ['0', '-1', 'nan', '1e3', '10000001', '1_000'],
    '--request-rate': ['0', '-1', 'nan', '-inf', 'abc'],
    '--burstiness': ['0', 'nan', '-1'],
    '--max-concurrency': ['0', '100001', 'nan'],
    '--random-input-len': ['0', '1048577', '1e9', 'nan'],
    '--random-output-len': ['0', '-5', '1048577'],
    '--random-range-ratio': ['-0.1', '1', 'nan', 'inf'],
    '--seed': ['-1', '4294967296', 'nan', '1.5'],
    '--num-warmups': ['-1', '10001', 'x'],
    '--request-timeout': ['0', 'nan', 'inf', '-1'],
    '--stall-timeout': ['0', 'nan', 'inf', '-1'],
    '--port': ['0', '65536', '-1', 'http'],
    '--endpoint-timeout': ['0', 'nan', 'inf'],
    '--max-num-seqs': ['0', 'nan'],
    '--max-num-batched-tokens': ['0', '1048577'],
    '--max-model-len': ['0', '-1'],
    '--kv-cache-memory-bytes': ['0', '1e30'],
    '--gpu-memory-utilization': ['0', '1.5', 'nan', '-1'],
}


class BenchFlagsTest(testtools.TestCase):

    def test_every_numeric_flag_is_bounded(self):
        counted = outcomes.Outcomes('bench flags')
        parser = cli.build_parser()
        for flag, values in sorted(BENCH_FLAGS.items()):
            for value in values:
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    try:
                        parser.parse_args(['bench', flag + '=' + value])
                    except SystemExit as exit_:
                        code = exit_.code
                    else:
                        code = 0
                what = '%s=%s' % (flag, value)
                last = (err.getvalue().strip().splitlines() or [''])[-1]
                if code == 0:
                    counted.accepted(what)
                elif code == 2 and 'error: argument ' + flag in last:
                    counted.clear(last)
                else:
                    counted.traceback('%s: %r' % (what, err.getvalue()))
        counted.check(self, sum(map(len, BENCH_FLAGS.values())))
