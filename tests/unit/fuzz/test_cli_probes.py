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
"""What a second probe round of the ``gpu-partitions`` command found:
signals, output paths that are no plain file, driver and cloud names,
bench flags checked late, and empty option values.
"""

import argparse
import errno
import os
import signal
import stat
import subprocess
import sys
from unittest import mock

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from gpu_partitions.bench import cloudinit
from gpu_partitions import cli
from gpu_partitions.commands import bench
from gpu_partitions.simulator import report
from gpu_partitions.simulator import run as run_mod
from tests.unit.cli_output import run_cli


def one_line(test, err):
    lines = err.strip().splitlines()
    test.assertEqual(1, len(lines), err)
    test.assertNotIn('Traceback', err)
    return lines[0]


class SignalsTest(testtools.TestCase):

    def test_ctrl_c_is_one_line_and_status_130(self):
        with mock.patch('gpu_partitions.commands.inventory.run',
                        side_effect=KeyboardInterrupt):
            code, out, err = run_cli(['inventory', '--fixture', 'awkward'])
        self.assertEqual(130, code)
        self.assertEqual('gpu-partitions inventory: interrupted',
                         one_line(self, err))

    def test_closed_pipe_is_quiet(self):
        with mock.patch('gpu_partitions.commands.inventory.run',
                        side_effect=BrokenPipeError):
            code, out, err = run_cli(['inventory', '--fixture', 'awkward'])
        self.assertEqual(128 + signal.SIGPIPE, code)
        self.assertEqual('', err)

    def test_reader_gone_in_a_real_pipe(self):
        """``gpu-partitions inventory --list-fixtures | head -0``: the
        whole command, as a shell runs it, ends without a stack.
        """
        # Block-buffered stdout, as a shell without PYTHONUNBUFFERED
        # gives: the output is written when flushed, at the end.
        environ = dict(os.environ, PYTHONWARNINGS='ignore')
        environ.pop('PYTHONUNBUFFERED', None)
        process = subprocess.Popen(
            [sys.executable, '-m', 'gpu_partitions.cli', 'inventory',
             '--list-fixtures'], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=environ)
        process.stdout.close()      # the reader is gone before it writes
        err = process.stderr.read().decode()
        process.stderr.close()
        self.assertEqual(128 + signal.SIGPIPE, process.wait())
        self.assertNotIn('Traceback', err)
        self.assertNotIn('BrokenPipeError', err)

    def test_workers_end_by_ctrl_c_quietly(self):
        """A simulator worker gets Ctrl-C with its process group: it ends
        by the signal (no stack of its own); the parent's own handler is
        left as it was.
        """
        before = signal.getsignal(signal.SIGINT)
        with run_mod.Workers(1) as workers:
            handler = workers.submit(signal.getsignal,
                                     signal.SIGINT).result(timeout=120)
        self.assertEqual(signal.SIG_DFL, handler)
        self.assertIs(before, signal.getsignal(signal.SIGINT))


class WholeCommandTest(testtools.TestCase):

    def test_an_error_is_one_line_of_stderr(self):
        """Run as a shell runs it: eventlet's deprecation notice, nine
        lines printed when the drivers' libraries import it, came before
        every error; and run as ``python -m gpu_partitions.cli`` every
        usage error was a traceback (``__main__.UsageError`` is not the
        class the commands raise).
        """
        environ = dict(os.environ)
        environ.pop('PYTHONWARNINGS', None)
        environ.pop('EVENTLET_TESTS', None)
        done = subprocess.run(
            [sys.executable, '-m', 'gpu_partitions.cli', 'inventory',
             '--fixture', 'no-such-host'], capture_output=True, text=True,
            env=environ, timeout=300)
        self.assertEqual(2, done.returncode)
        self.assertIn('no such reference host', one_line(self, done.stderr))


class HelpTest(testtools.TestCase):

    def test_every_command_prints_its_help(self):
        """``--help`` of each command and subcommand: a help string that
        Python's ``%`` formatting left with a bare ``%`` made argparse's
        own formatting raise ValueError (``simulate --help``).
        """
        def walk(parser, path):
            self.assertIn('usage:', parser.format_help(), path)
            for action in parser._actions:
                choices = getattr(action, 'choices', None)
                if not isinstance(choices, dict):
                    continue
                for name, sub in choices.items():
                    if isinstance(sub, argparse.ArgumentParser):
                        walk(sub, path + [name])
                        walked.append(name)
        walked = []
        walk(cli.build_parser(), ['gpu-partitions'])
        self.assertIn('simulate', walked)
        self.assertGreater(len(walked), 5)


class OutputPathsTest(testtools.TestCase):
    """Outputs are renamed into place, but never over what is no regular
    file: ``--json /dev/null`` run as root replaced /dev/null. (A FIFO
    stands for the device here: a regression must not cost the test
    machine its /dev/null.)
    """

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def write(self, path, data=b'{"a": 1}\n'):
        report.check_writable(path)
        report.atomic_write(path, lambda stream: stream.write(data))

    def test_fifo_is_written_into_not_replaced(self):
        fifo = os.path.join(self.tmp, 'out.json')
        os.mkfifo(fifo)
        # Non-blocking: the reader needs no writer to open, the writer
        # then finds a reader.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        self.write(fifo)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        self.assertEqual(b'{"a": 1}\n', os.read(reader, 100))
        self.assertEqual(['out.json'], os.listdir(self.tmp))

    def test_link_target_is_replaced_link_kept(self):
        target = os.path.join(self.tmp, 'target.json')
        link = os.path.join(self.tmp, 'link.json')
        with open(target, 'w') as stream:
            stream.write('old')
        os.symlink('target.json', link)
        self.write(link)
        self.assertTrue(os.path.islink(link))
        with open(target, 'rb') as stream:
            self.assertEqual(b'{"a": 1}\n', stream.read())

    def test_name_too_long_is_refused_before_the_run(self):
        """A file name over the file system's limit passed the check and
        failed at the end, losing the run (simulate: minutes to hours).
        """
        path = os.path.join(self.tmp, 'a' * 300 + '.json')
        error = self.assertRaises(ValueError, report.check_writable, path)
        self.assertIn('its name is longer than', str(error))
        code, _out, err = run_cli(['inventory', '--fixture', 'awkward',
                                   '--record', path])
        self.assertEqual(2, code)
        self.assertIn('its name is longer than', one_line(self, err))
        self.assertEqual([], os.listdir(self.tmp))

    def test_failed_record_leaves_nothing(self):
        """``inventory --record``: a rename that fails left FILE.partial
        beside the file asked for.
        """
        path = os.path.join(self.tmp, 'host.json')
        with mock.patch('os.replace',
                        side_effect=OSError(errno.EXDEV, 'Invalid '
                                            'cross-device link')):
            code, _out, err = run_cli(['inventory', '--fixture', 'awkward',
                                       '--record', path])
        self.assertEqual(2, code)
        self.assertIn('cannot write %s' % path, one_line(self, err))
        self.assertEqual([], os.listdir(self.tmp))

    def test_record_refuses_a_directory_before_recording(self):
        code, _out, err = run_cli(['inventory', '--fixture', 'awkward',
                                   '--record', self.tmp])
        self.assertEqual(2, code)
        self.assertIn('is a directory', one_line(self, err))
        self.assertEqual([], os.listdir(self.tmp))
        self.assertFalse(os.path.exists(self.tmp + '.partial'))

    def test_record_of_a_sysfs_root_that_is_no_directory(self):
        """A typo recorded a host with no device, exit status 0."""
        path = os.path.join(self.tmp, 'host.json')
        for root in (os.path.join(self.tmp, 'missing'), os.devnull):
            code, _out, err = run_cli(['inventory', '--sysfs-root', root,
                                       '--libvirt-uri', 'none',
                                       '--record', path])
            self.assertEqual(2, code)
            self.assertIn('--sysfs-root %s is not a directory' % root,
                          one_line(self, err))
        self.assertEqual([], os.listdir(self.tmp))

    def test_packing_output_not_made_when_inputs_fail(self):
        output = os.path.join(self.tmp, 'new')
        code, _out, err = run_cli(['benchmark', 'packing', '--quick',
                                   '--traces', 'no-such-trace',
                                   '--output', output])
        self.assertEqual(2, code)
        one_line(self, err)
        self.assertFalse(os.path.exists(output))

    def test_packing_output_that_is_a_file(self):
        code, _out, err = run_cli(['benchmark', 'packing', '--quick',
                                   '--output', os.devnull])
        self.assertEqual(2, code)
        self.assertIn('is not a directory', one_line(self, err))


class DriverAndCloudNamesTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(config_fixture.Config(cfg.CONF))
        self.tmp = self.useFixture(fixtures.TempDir()).path
        # No clouds.yaml of this machine is read.
        clouds = os.path.join(self.tmp, 'clouds.yaml')
        with open(clouds, 'w') as stream:
            stream.write('clouds: {}\n')
        self.useFixture(fixtures.EnvironmentVariable(
            'OS_CLIENT_CONFIG_FILE', clouds))

    def config(self, text, name='cyborg.conf'):
        path = os.path.join(self.tmp, name)
        with open(path, 'w') as stream:
            stream.write(text)
        return path

    def test_unknown_driver_names(self):
        unknown = self.config('[agent]\nenabled_drivers = no_such_drv\n')
        empty = self.config('[DEFAULT]\n', 'empty.conf')
        cases = [
            (['inventory', '--config-file', unknown],
             "[agent] enabled_drivers: no driver 'no_such_drv'"),
            (['exporter', '--once', '--config-file', unknown],
             "[agent] enabled_drivers: no driver 'no_such_drv'"),
            (['inventory', '--config-file', empty, '--driver', 'bogus'],
             "--driver: no driver 'bogus'"),
            (['exporter', '--once', '--config-file', empty, '--driver',
              'bogus'], "--driver: no driver 'bogus'"),
        ]
        for argv, says in cases:
            code, _out, err = run_cli(argv)
            self.assertEqual(2, code, (argv, err))
            line = one_line(self, err)
            self.assertIn(says, line)
            self.assertIn('gpu_partitions_nvidia_mig', line)

    def test_driver_that_cannot_start(self):
        path = self.config(
            '[agent]\nenabled_drivers = gpu_partitions_fake_hardware\n'
            '[gpu_partitions_fake_hardware]\nreference_host = no-such\n'
            'state_path = %s\n' % os.path.join(self.tmp, 'state'))
        code, _out, err = run_cli(['inventory', '--config-file', path])
        self.assertEqual(2, code)
        self.assertIn('driver gpu_partitions_fake_hardware cannot start: '
                      'no-such: no such reference host', one_line(self, err))

    def test_unknown_cloud(self):
        for argv in (['exporter', '--fixture', 'awkward', '--once',
                      '--os-cloud', 'no-such-cloud'],
                     ['bench', 'qualify', '--os-cloud', 'no-such-cloud',
                      '--flavor', 'f', '--image', 'i', '--network', 'n',
                      '--output-dir', os.path.join(self.tmp, 'out')]):
            code, _out, err = run_cli(argv)
            self.assertEqual(2, code, (argv, err))
            self.assertIn('--os-cloud no-such-cloud: ConfigException',
                          one_line(self, err))
        # Nothing made for a run that never started.
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'out')))


class NamesThatCannotServeTest(testtools.TestCase):

    def test_listen_name_no_resolver_takes(self):
        """A label over 63 characters failed in the IDNA codec: a
        UnicodeError traceback, not 'cannot listen'.
        """
        code, _out, err = run_cli(['exporter', '--fixture', 'awkward',
                                   '--listen', 'a' * 300, '--port', '0'])
        self.assertEqual(2, code)
        self.assertIn('cannot listen on aaa', one_line(self, err))

    def test_guidellm_that_is_no_executable(self):
        """It failed with a traceback after our own generator's runs."""
        tmp = self.useFixture(fixtures.TempDir()).path
        self.useFixture(fixtures.EnvironmentVariable('GUIDELLM'))
        with mock.patch('gpu_partitions.bench.ceiling.run') as run:
            for path in (os.devnull, tmp, os.path.join(tmp, 'missing')):
                code, _out, err = run_cli(['benchmark', 'harness',
                                           '--quick', '--guidellm', path])
                self.assertEqual(2, code)
                self.assertIn('--guidellm %s: no such executable' % path,
                              one_line(self, err))
            self.useFixture(fixtures.EnvironmentVariable('GUIDELLM',
                                                         os.devnull))
            code, _out, err = run_cli(['benchmark', 'harness', '--quick'])
            self.assertEqual(2, code)
            self.assertIn('$GUIDELLM %s' % os.devnull, one_line(self, err))
        run.assert_not_called()


class BenchFlagsFirstTest(testtools.TestCase):
    """Flags argparse cannot check are checked before an endpoint is
    asked or a guest booted, and a file read is bounded.
    """

    def qualify(self, *flags):
        tmp = self.useFixture(fixtures.TempDir()).path
        return cli.build_parser().parse_args(
            ['bench', 'qualify', '--flavor', 'f', '--image', 'i',
             '--network', 'n', '--output-dir', os.path.join(tmp, 'out')]
            + list(flags))

    def test_bad_flags_before_the_cloud(self):
        connect = mock.Mock()
        for flags, says in (
                (['--goodput', 'bogus'], "goodput SLO 'bogus'"),
                (['--metric-percentiles', '0'], '--metric-percentiles'),
                (['--request-rate', '1', '2', '--max-concurrency', '1', '2'],
                 'not both')):
            error = self.assertRaises(cli.UsageError, bench.do_qualify,
                                      self.qualify(*flags), connect=connect)
            self.assertIn(says, str(error))
        connect.assert_not_called()

    def test_bad_flags_before_the_endpoint(self):
        with mock.patch('gpu_partitions.bench.preflight.check_endpoint') \
                as check:
            code, _out, err = run_cli(['bench', '--base-url',
                                       'http://127.0.0.1:9', '--goodput',
                                       'ttft:x'])
        self.assertEqual(2, code)
        self.assertIn("goodput SLO 'ttft:x'", one_line(self, err))
        check.assert_not_called()

    def test_every_output_of_a_run_is_checked_first(self):
        """The report and plots beside ``--result-file`` were written
        only after the run: a directory named like the report failed it
        then, with a traceback. (No endpoint listens on port 9: checked
        first, the error names the output, not the endpoint.)
        """
        tmp = self.useFixture(fixtures.TempDir()).path
        result = os.path.join(tmp, 'r.json')
        os.mkdir(os.path.join(tmp, 'r.md'))
        open(os.path.join(tmp, 'r-plots'), 'w').close()
        run = ['bench', '--base-url', 'http://127.0.0.1:9',
               '--result-file', result]
        code, _out, err = run_cli(run)
        self.assertEqual(2, code)
        self.assertIn('r.md is a directory', one_line(self, err))
        os.rmdir(os.path.join(tmp, 'r.md'))
        code, _out, err = run_cli(run)
        self.assertEqual(2, code)
        self.assertIn('r-plots is not a directory', one_line(self, err))
        code, _out, err = run_cli(run + ['--no-plots'])
        self.assertIn('endpoint http://127.0.0.1:9 not ready',
                      one_line(self, err))

    def test_user_data_is_read_bounded(self):
        """It was read whole: ``--user-data /dev/zero`` ran out of
        memory. (A file one byte too large stands for it here.)
        """
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'user-data')
        with open(path, 'wb') as stream:
            stream.write(b'#' * (cloudinit.MAX_USER_DATA_BYTES + 1))
        connect = mock.Mock()
        error = self.assertRaises(
            cli.UsageError, bench.do_qualify,
            self.qualify('--user-data', path), connect=connect)
        self.assertIn('--user-data %s: larger than' % path, str(error))
        connect.assert_not_called()


class SimulateTargetTest(testtools.TestCase):

    def test_target_below_the_curve_resolution(self):
        """``--target 1e-300`` passed the parser and then crashed in the
        report: no mark of the 1% curve was reached.
        """
        for value in ('0.001', '1e-300', '0.009'):
            code, err = self.parse(['simulate', '--target', value])
            self.assertEqual(2, code)
            self.assertIn('must be at least 0.01', err)
        error = self.assertRaises(ValueError, run_mod.simulate, None, [],
                                  [], target=0.001)
        self.assertIn('at least 0.01', str(error))

    def parse(self, argv):
        stderr = self.useFixture(fixtures.StringStream('stderr')).stream
        self.useFixture(fixtures.MonkeyPatch('sys.stderr', stderr))
        try:
            cli.build_parser().parse_args(argv)
        except SystemExit as exit_:
            stderr.seek(0)
            return exit_.code, stderr.read()
        return 0, ''
