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
"""The ``gpu-partitions`` commands' own inputs: every ``--config-file``
that cannot serve and every numeric flag, refused in one line.
"""

import os

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from gpu_partitions.bench import results
from gpu_partitions import cli
from gpu_partitions.commands import guest_image_benchmark
from tests.unit.cli_output import run_cli
from tests.unit.fuzz import outcomes

#: A name -> (the file's bytes, or a function making the path; what the
#: one-line error says).
CONFIG_FILES = {
    'missing': (None, 'does not exist'),
    'directory': (os.mkdir, 'is not a file'),
    'binary': (b'\x00\xaa\xff' * 100, "can't decode"),
    'latin-1': (b'[agent]\nenabled_drivers = caf\xe9\n', "can't decode"),
    'no section': (b'garbage\n', 'Failed to parse'),
    'nan option': (b'[gpu_partitions]\ngpu_scan_timeout = nan\n',
                   '[gpu_partitions] gpu_scan_timeout: '),
    'out of range option': (b'[gpu_partitions]\ngpu_scan_timeout = -5\n',
                            '[gpu_partitions] gpu_scan_timeout: '),
    'bad DEFAULT option': (b'[DEFAULT]\nhost = \n', '[DEFAULT] host: '),
    # Relative: a tree under the privileged daemon's working directory.
    'relative sysfs_root': (b'[gpu_partitions]\nsysfs_root = sys\n',
                            '[gpu_partitions] sysfs_root: '),
    'empty sysfs_root': (b'[gpu_partitions]\nsysfs_root =\n',
                         '[gpu_partitions] sysfs_root: '),
}

#: Commands that read a Cyborg configuration file.
CONFIG_COMMANDS = (['inventory'], ['exporter', '--once'])


def parse(test, parser, argv):
    """``(exit code, stderr)`` of parsing ``argv`` alone."""
    stderr = test.useFixture(fixtures.StringStream('stderr')).stream
    test.useFixture(fixtures.MonkeyPatch('sys.stderr', stderr))
    try:
        parser.parse_args(argv)
    except SystemExit as exit_:
        code = exit_.code
    else:
        code = 0
    stderr.seek(0)
    return code, stderr.read()


class ConfigFileTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        # The commands parse into the global options, as the agent does.
        self.useFixture(config_fixture.Config(cfg.CONF))
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def test_each_bad_file_is_one_line_before_any_scan(self):
        counted = outcomes.Outcomes('--config-file')
        for name, (content, says) in sorted(CONFIG_FILES.items()):
            path = os.path.join(self.tmp, name.replace(' ', '-') + '.conf')
            if callable(content):
                content(path)
            elif content is not None:
                with open(path, 'wb') as stream:
                    stream.write(content)
            for command in CONFIG_COMMANDS:
                what = '%s %s' % (command[0], name)
                try:
                    code, out, err = run_cli(
                        command + ['--config-file', path])
                except Exception as error:  # noqa: B902 counted
                    counted.traceback('%s: %s: %s' % (
                        what, type(error).__name__, error))
                    continue
                if code == 2 and says in err and path in err:
                    counted.clear(err)
                else:
                    counted.traceback('%s: exit %s, %r' % (what, code, err))
        counted.check(self, len(CONFIG_FILES) * len(CONFIG_COMMANDS))


class NumericFlagsTest(testtools.TestCase):

    def test_every_numeric_flag_refuses_what_is_no_number(self):
        """Each flag of each command that takes a number goes through
        :func:`cli.number` (bounds, no NaN) rather than a bare int or
        float, and refuses NaN with argparse's one-line error.
        """
        parser = cli.build_parser()
        [commands] = [action for action in parser._actions
                      if action.dest == 'command']
        counted = outcomes.Outcomes('numeric flags')
        for name, command in sorted(commands.choices.items()):
            for action in command._actions:
                flag = (action.option_strings or [action.dest])[-1]
                what = '%s %s' % (name, flag)
                if action.type in (int, float):
                    counted.traceback('%s: a bare %s' % (
                        what, action.type.__name__))
                    continue
                if getattr(action.type, '__qualname__', '') != \
                        'number.<locals>.convert':
                    continue
                for value in ('nan', '-1e999', 'x', ''):
                    code, err = parse(self, parser,
                                      [name, flag + '=' + value])
                    last = (err.strip().splitlines() or [''])[-1]
                    if code == 2 and 'error: argument %s' % flag in last:
                        counted.clear(last)
                    else:
                        counted.traceback('%s=%s: %r' % (what, value, err))
        counted.check(self, 100)


class BenchOutputsTest(testtools.TestCase):
    """Outputs and inputs of ``bench`` that cannot serve are refused
    before any benchmark runs (whose results would be lost at the end),
    in one line.
    """

    def test_each_bad_path(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        a_file = os.path.join(tmp, 'a-file')
        with open(a_file, 'wb') as stream:
            stream.write(b'\x00\xaa\xff')
        missing = os.path.join(tmp, 'missing', 'x')
        # No endpoint listens on port 9: were the paths not checked
        # first, the error would name the endpoint.
        run = ['bench', '--base-url', 'http://127.0.0.1:9']
        qualify = ['bench', 'qualify', '--os-cloud', 'none', '--flavor',
                   'f', '--image', 'i', '--network', 'n']
        cases = [
            (run + ['--result-file', tmp], 'is a directory'),
            (run + ['--result-file', missing + '.json'], 'no directory'),
            (qualify + ['--user-data', missing], '--user-data'),
            (qualify + ['--user-data', a_file], "can't decode"),
            (qualify + ['--output-dir', a_file], 'is not a directory'),
            (qualify + ['--output-dir', missing], 'no directory'),
            (['bench', 'compare', a_file, '--output-dir', a_file],
             'is not a directory'),
        ]
        for argv, says in cases:
            code, _out, err = run_cli(argv)
            self.assertEqual(2, code, argv)
            self.assertIn(says, err, argv)
            self.assertEqual(1, len(err.strip().splitlines()), err)


class InputFilesTest(testtools.TestCase):
    """Files the commands read whole or by lines, fed what has no end or
    no shape: refused in one line, in bounded memory and time.
    """

    def test_endless_and_malformed_inputs(self):
        self.useFixture(fixtures.Timeout(120, gentle=True))
        tmp = self.useFixture(fixtures.TempDir()).path

        def write(name, data):
            path = os.path.join(tmp, name)
            with open(path, 'wb') as stream:
                stream.write(data)
            return path

        long_line = write('long.csv', b'a' * 70000 + b'\n')
        json_list = write('list.json', b'[1]')
        no_runs = write('no-runs.json', b'{"schema": "%s"}'
                        % results.SCHEMA.encode())
        bad_run = write('bad-run.json', b'{"schema": "%s", "preflight": {}, '
                        b'"runs": [{"config": {}}]}'
                        % results.SCHEMA.encode())
        cases = [
            (['simulate', '--trace', '/dev/zero'], 'line longer than'),
            (['simulate', '--trace', '/dev/urandom'], ''),
            (['simulate', '--trace', long_line], 'line longer than'),
            (['bench', 'compare', '/dev/zero'], 'larger than'),
            (['bench', 'compare', json_list], 'not a gpu-partitions bench'),
            (['bench', 'compare', no_runs], 'not a complete bench result'),
            (['bench', 'compare', bad_run], 'not a complete bench result'),
            (['inventory', '--fixture-file', '/dev/zero'], 'larger than'),
        ]
        for argv, says in cases:
            code, _out, err = run_cli(argv)
            self.assertEqual(2, code, (argv, err))
            self.assertIn(says, err, argv)
            self.assertEqual(1, len(err.strip().splitlines()), err)


class GuestImageSettingsTest(testtools.TestCase):
    """The guest-image harness's environment, checked before it builds
    or boots anything.
    """

    def test_each_bad_setting(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        wheelhouse = os.path.join(tmp, 'wheels')
        os.mkdir(wheelhouse)
        open(os.path.join(wheelhouse, 'llama_cpp_python-0.3-py3-none-any.whl'),
             'w').close()
        good = {'GPU_PARTITIONS_WHEELHOUSE': wheelhouse}
        cases = [
            ({}, 'GPU_PARTITIONS_WHEELHOUSE'),
            ({'GPU_PARTITIONS_WHEELHOUSE': tmp}, 'GPU_PARTITIONS_WHEELHOUSE'),
            (dict(good, GPU_PARTITIONS_GUEST_ACCEL='bogus'), 'allowed auto'),
            (dict(good, GPU_PARTITIONS_GUEST_ACCEL='KVM'), 'allowed auto'),
            (dict(good, GPU_PARTITIONS_GUEST_IMAGE=os.path.join(tmp, 'x')),
             'is not a file'),
            (dict(good, GPU_PARTITIONS_GUEST_IMAGE=tmp), 'is not a file'),
        ]
        for environ, says in cases:
            error = self.assertRaises(cli.UsageError,
                                      guest_image_benchmark.settings, environ)
            self.assertIn(says, str(error), environ)
            self.assertNotIn('\n', str(error))


class NamesTest(testtools.TestCase):
    """Names of reference hosts given on the command line, refused before
    anything runs.
    """

    def test_unknown_names(self):
        for argv in (['demo', '--host', 'bogus'],
                     ['demo', '--host', 'hgx-h100', '--host', '../x'],
                     ['inventory', '--fixture', '../../etc/passwd'],
                     ['exporter', '--fixture', 'no-such-host', '--once']):
            code, _out, err = run_cli(argv)
            self.assertEqual(2, code, (argv, err))
            self.assertIn('no such reference host', err, argv)
            self.assertEqual(1, len(err.strip().splitlines()), err)


class EmptyArgumentsTest(testtools.TestCase):

    def test_empty_names_and_paths_are_refused(self):
        """An empty name or path (an unset shell variable) was taken as
        the option left out: ``--fixture ""`` scanned this host,
        ``simulate --json ""`` wrote no result and exited 0.
        """
        parser = cli.build_parser()
        [commands] = [action for action in parser._actions
                      if action.dest == 'command']
        tried = 0
        for name, command in sorted(commands.choices.items()):
            for action in command._actions:
                if not action.option_strings or action.nargs == 0 or \
                        action.choices or \
                        getattr(action.type, '__name__', '') in (
                            'int', 'float'):
                    continue
                flag = action.option_strings[-1]
                code, err = parse(self, parser, [name, flag + '='])
                self.assertEqual(2, code, (name, flag, err))
                if action.type is not cli.nonempty:
                    # Its own parser (simulate --policies) refuses it.
                    self.assertIn('error: argument %s: ' % flag, err)
                    continue
                self.assertIn('argument %s: must not be empty' % flag, err)
                tried += 1
        self.assertGreaterEqual(tried, 45)
