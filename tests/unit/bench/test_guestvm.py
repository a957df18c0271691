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
"""The QEMU side of the guest-image benchmark, with fake QEMU binaries.

A fake ``qemu-system-x86_64`` on PATH plays a host whose KVM fails the way
this one does (or works), so the KVM probe and the TCG fallback run for
real; ``tox -e guest-image`` boots the real image.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
from unittest import mock

import fixtures
import testtools

from gpu_partitions.bench import guestvm
from gpu_partitions import cli
from gpu_partitions.commands import guest_image_benchmark as benchmark

# Fake QEMU: under KVM it prints $FAKE_KVM_STDERR and exits or hangs; under
# TCG it writes a booting kernel's console line into the -serial file.
FAKE_QEMU = r'''#!/bin/bash
serial=""
accel=""
while [ $# -gt 0 ]; do
    case "$1" in
        -serial) serial=${2#file:}; shift ;;
        -accel) accel=$2; shift ;;
    esac
    shift
done
echo "$accel" >> "$FAKE_QEMU_CALLS"
if [ "$accel" = kvm ] && [ -n "${FAKE_KVM_STDERR:-}" ]; then
    echo "$FAKE_KVM_STDERR" >&2
    [ -n "${FAKE_KVM_EXIT:-}" ] && exit 1
    sleep 60
fi
echo "[    1.0] Run /init as init process" >> "$serial"
sleep 60
'''
FAKE_QEMU_IMG = '#!/bin/sh\nfor last; do :; done\ntouch "$last"\n'


class GuestBootTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.directory = self.useFixture(fixtures.TempDir()).path
        bin_dir = os.path.join(self.directory, 'bin')
        os.makedirs(bin_dir)
        for name, text in (('qemu-system-x86_64', FAKE_QEMU),
                           ('qemu-img', FAKE_QEMU_IMG)):
            with open(os.path.join(bin_dir, name), 'w') as stream:
                stream.write(text)
            os.chmod(os.path.join(bin_dir, name), 0o755)
        self.calls = os.path.join(self.directory, 'calls')
        self.useFixture(fixtures.EnvironmentVariable(
            'PATH', bin_dir + os.pathsep + os.environ['PATH']))
        self.useFixture(fixtures.EnvironmentVariable('FAKE_QEMU_CALLS',
                                                     self.calls))
        # No ISO tool needed: the config drive is tested on its own.
        self.useFixture(fixtures.MockPatch(
            'gpu_partitions.bench.guestvm.config_drive',
            return_value='/dev/null'))
        self.image = os.path.join(self.directory, 'image.qcow2')
        open(self.image, 'w').close()
        self.lines = []

    def guest(self):
        # A folder per guest: an earlier guest's QEMU, still running,
        # must not write into this one's console log.
        directory = tempfile.mkdtemp(dir=self.directory)
        guest = guestvm.Guest(self.image, directory, '#cloud-config\n',
                              firmware='bios', log=self.lines.append)
        self.addCleanup(guest.stop)
        return guest

    def accelerators(self, count):
        """The -accel values of the first ``count`` QEMU starts (a TCG
        boot returns as soon as QEMU is started).
        """
        for _ in range(100):
            if os.path.exists(self.calls):
                with open(self.calls) as stream:
                    found = stream.read().split()
                if len(found) >= count:
                    return found
            time.sleep(0.1)
        self.fail('QEMU was not started %d times' % count)

    def kvm(self, usable):
        return mock.patch.object(guestvm, 'kvm_usable_device',
                                 return_value=(usable, 'fake /dev/kvm'))

    def test_kvm_emulation_failure_falls_back_to_tcg(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'FAKE_KVM_STDERR', 'KVM internal error. Suberror: 1'))
        guest = self.guest()
        with self.kvm(True):
            guest.boot('auto', kvm_probe_s=10)
        self.assertEqual('tcg', guest.accelerator)
        self.assertIn('KVM internal error', guest.kvm_probe)
        self.assertEqual(['kvm', 'tcg,thread=multi'], self.accelerators(2))
        self.assertTrue(guest.alive())
        self.assertTrue(any('falling back to TCG' in line
                            for line in self.lines))

    def test_kvm_that_exits_or_stalls_falls_back(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'FAKE_KVM_STDERR', 'something else'))
        self.useFixture(fixtures.EnvironmentVariable('FAKE_KVM_EXIT', '1'))
        guest = self.guest()
        with self.kvm(True):
            guest.boot('auto', kvm_probe_s=10)
        self.assertIn('exited with status 1', guest.kvm_probe)
        self.assertEqual('tcg', guest.accelerator)
        self.useFixture(fixtures.EnvironmentVariable('FAKE_KVM_EXIT', ''))
        stalled = self.guest()
        with self.kvm(True):
            stalled.boot('auto', kvm_probe_s=1)
        self.assertIn('did not reach user space', stalled.kvm_probe)
        self.assertEqual('tcg', stalled.accelerator)

    def test_working_kvm_keeps_its_boot(self):
        guest = self.guest()
        with self.kvm(True):
            guest.boot('auto', kvm_probe_s=10)
        self.assertEqual('kvm', guest.accelerator)
        self.assertEqual(['kvm'], self.accelerators(1))
        self.assertIn('KVM works', guest.kvm_probe)

    def test_no_kvm_device_boots_tcg_and_kvm_only_refuses(self):
        guest = self.guest()
        with self.kvm(False):
            guest.boot('auto')
        self.assertEqual('tcg', guest.accelerator)
        self.assertEqual(['tcg,thread=multi'], self.accelerators(1))
        with self.kvm(False):
            error = self.assertRaises(guestvm.BootError,
                                      self.guest().boot, 'kvm')
        self.assertIn('fake /dev/kvm', str(error))

    def test_boot_stages_timed_by_the_host_and_console_tail_readable(self):
        guest = self.guest()
        with self.kvm(False):
            guest.boot('tcg')
        console = guest.console_log
        for _ in range(100):
            if guest.watch_stages():
                break
            time.sleep(0.1)
        self.assertEqual(['initramfs'], list(guest.stages))
        self.assertTrue(any(line.startswith('guest: ') and
                            line.endswith(' s: initramfs')
                            for line in self.lines))
        # Coloured systemd output with its spinner; the guest's own
        # timestamps (9999.0) are no clock: the host's is used.
        with open(console, 'a') as stream:
            stream.write(
                '[\x1b[0;32m  OK  \x1b[0m] Reached target '
                '\x1b[0;1;39mnetwork.target\x1b[0m - Network.\r\n'
                '\x1bM\r\n\x1b[K[ \x1b[0;31m*\x1b[0m] Job '
                'networking.service/start running (2min 52s / 7min 33s)'
                '\r\n[ 9999.0] cloud-init[400]: Cloud-init v. 22.4.2 '
                "running 'init-local' at Thu. Up 392.65 seconds.\r\n")
        stages = guest.watch_stages()
        self.assertEqual(['initramfs', 'cloud-init local', 'network'],
                         list(stages))
        self.assertLess(stages['network'], 60)
        self.assertLessEqual(stages['initramfs'], stages['network'])
        tail = guest.console_tail(3).splitlines()
        self.assertEqual('[  OK  ] Reached target network.target - '
                         'Network.', tail[1])
        self.assertIn("running 'init-local'", tail[2])
        self.assertNotIn('running (2min', guest.console_tail())

    def test_stop_ends_qemu(self):
        guest = self.guest()
        with self.kvm(False):
            guest.boot('tcg')
        process = guest.process
        guest.stop()
        self.assertIsNotNone(process.poll())
        self.assertFalse(guest.alive())


class QemuCommandTest(testtools.TestCase):

    def test_forwards_the_serving_port_to_loopback_only(self):
        argv = guestvm.qemu_command('d.qcow2', 'c.iso', 18000, 8000, 'tcg',
                                    'console.log', bios='/ovmf.fd')
        netdev = argv[argv.index('-netdev') + 1]
        self.assertIn('hostfwd=tcp:127.0.0.1:18000-:8000', netdev)
        self.assertEqual('max', argv[argv.index('-cpu') + 1])
        self.assertEqual('tcg,thread=multi', argv[argv.index('-accel') + 1])
        self.assertEqual('/ovmf.fd', argv[argv.index('-bios') + 1])
        kvm = guestvm.qemu_command('d.qcow2', 'c.iso', 1, 2, 'kvm', 'c.log')
        self.assertEqual('host', kvm[kvm.index('-cpu') + 1])
        self.assertNotIn('-bios', kvm)


class ConfigDriveTest(testtools.TestCase):

    def test_openstack_layout_and_label(self):
        if not any(shutil.which(tool) for tool in guestvm.ISO_TOOLS):
            self.skipTest('no ISO tool (bindep profile image)')
        directory = self.useFixture(fixtures.TempDir()).path
        iso = guestvm.config_drive(directory, '#cloud-config\n{}\n',
                                   {'vllm_engine': 'auto'})
        with open(iso, 'rb') as stream:
            # ISO 9660 primary volume descriptor: volume id at 16*2048+40.
            stream.seek(16 * 2048 + 40)
            self.assertEqual(b'config-2', stream.read(32).strip())
        latest = os.path.join(directory, 'config-drive', 'openstack',
                              'latest')
        with open(os.path.join(latest, 'meta_data.json')) as stream:
            meta = json.load(stream)
        self.assertEqual({'vllm_engine': 'auto'}, meta['meta'])
        self.assertTrue(meta['uuid'])
        with open(os.path.join(latest, 'user_data')) as stream:
            self.assertTrue(stream.read().startswith('#cloud-config'))


class DriverElementsTest(testtools.TestCase):

    def test_unreachable_repositories_are_skipped_saying_so(self):
        chosen, skipped = benchmark.driver_elements(
            {}, probe=lambda url: (False, 'Network is unreachable'))
        self.assertEqual([], chosen)
        self.assertEqual(2, len(skipped))
        for line, element in zip(skipped, ('nvidia-guest-driver',
                                           'rocm-guest')):
            self.assertIn(element + ' skipped', line)
            self.assertIn('unreachable (Network is unreachable)', line)

    def test_reachable_repositories_are_built_in(self):
        seen = []

        def probe(url):
            seen.append(url)
            return True, None

        chosen, skipped = benchmark.driver_elements(
            {'DIB_ROCM_REPO_URL': 'http://mirror/rocm'}, probe=probe)
        self.assertEqual(['rocm-guest'], chosen)
        self.assertIn('no DIB_NVIDIA_DRIVER_PACKAGE', skipped[0])
        self.assertIn('http://mirror/rocm', seen)
        chosen, skipped = benchmark.driver_elements(
            {'DIB_NVIDIA_DRIVER_PACKAGE': '/srv/nvidia.run'}, probe=probe)
        self.assertEqual(['nvidia-guest-driver', 'rocm-guest'], chosen)
        self.assertEqual([], skipped)


class UserDataTest(testtools.TestCase):

    def test_user_data_is_bench_cloud_init_and_host_gets_its_env(self):
        directory = self.useFixture(fixtures.TempDir()).path
        path, text = benchmark.user_data(directory, '/models/g.gguf')
        self.assertTrue(os.path.exists(path))
        env = benchmark.guest_env_file(text)
        self.assertIn("VLLM_MODEL='/models/g.gguf'", env)
        self.assertIn("VLLM_MAX_MODEL_LEN='1024'", env)
        self.assertIn("VLLM_PORT='8000'", env)
        self.assertRaises(ValueError, benchmark.guest_env_file,
                          '#cloud-config\nwrite_files: []\n')

    def test_missing_wheelhouse_is_a_clear_error(self):
        self.useFixture(fixtures.EnvironmentVariable(
            'GPU_PARTITIONS_WHEELHOUSE', '/nonexistent'))
        args = mock.Mock(output=self.useFixture(fixtures.TempDir()).path,
                         quick=True)
        error = self.assertRaises(cli.UsageError, benchmark.guest_image,
                                  args)
        self.assertIn('GPU_PARTITIONS_WHEELHOUSE', str(error))


class LauncherOnHostTest(testtools.TestCase):

    def test_launcher_is_the_packaged_one(self):
        self.assertTrue(os.path.isfile(benchmark.LAUNCHER))
        done = subprocess.run(['bash', '-n', benchmark.LAUNCHER],
                              check=False)
        self.assertEqual(0, done.returncode)
        self.assertTrue(os.path.isdir(os.path.join(benchmark.ELEMENTS_DIR,
                                                   'vllm-server')))


class NoDeviceMapperToolsTest(testtools.TestCase):
    """The stand-ins' argument handling (the loop partitions they map
    need root and a kernel; ``tox -e guest-image`` uses them for real).
    """

    def run_tool(self, name, *args):
        return subprocess.run(
            [os.path.join(benchmark.NO_DEVICE_MAPPER_TOOLS, name)] +
            list(args), capture_output=True, text=True, timeout=30,
            check=False)

    def test_dmsetup_mknodes_is_a_no_op_and_the_rest_refused(self):
        self.assertEqual(0, self.run_tool('dmsetup', '--noudevsync',
                                          'mknodes').returncode)
        done = self.run_tool('dmsetup', 'ls')
        self.assertEqual(1, done.returncode)
        self.assertIn('no device-mapper', done.stderr)

    def test_kpartx_refuses_what_is_not_a_block_device(self):
        done = self.run_tool('kpartx', '-av', '/nonexistent')
        self.assertEqual(1, done.returncode)
        self.assertIn('usage', done.stderr)

    def test_sudo_runs_the_command_without_its_options(self):
        if os.getuid() != 0:
            done = self.run_tool('sudo', 'true')
            self.assertIn('only runs as root', done.stderr)
            return
        done = self.run_tool('sudo', '-E', '--', 'printf', '%s,', '-E',
                             'x')
        self.assertEqual('-E,x,', done.stdout)
        self.assertEqual(1, self.run_tool('sudo', '-u', 'nobody',
                                          'true').returncode)

    def test_device_mapper_read_from_proc_misc(self):
        directory = self.useFixture(fixtures.TempDir()).path
        misc = os.path.join(directory, 'misc')
        with open(misc, 'w') as stream:
            stream.write('237 loop-control\n236 device-mapper\n')
        self.assertTrue(benchmark.device_mapper_present(misc))
        with open(misc, 'w') as stream:
            stream.write('237 loop-control\n')
        self.assertFalse(benchmark.device_mapper_present(misc))
        self.assertFalse(benchmark.device_mapper_present('/nonexistent'))
        environ = benchmark.build_environment('/w', '/m.gguf',
                                              device_mapper=False)
        self.assertTrue(environ['PATH'].startswith(
            benchmark.NO_DEVICE_MAPPER_TOOLS + os.pathsep))
        environ = benchmark.build_environment('/w', '/m.gguf',
                                              device_mapper=True)
        self.assertNotIn(benchmark.NO_DEVICE_MAPPER_TOOLS, environ['PATH'])
        self.assertEqual('', environ['DIB_VLLM_VERSION'])
        self.assertEqual('/m.gguf', environ['DIB_LLAMA_CPP_MODEL'])


class BuildRecordTest(testtools.TestCase):

    def test_a_given_image_reports_its_own_build(self):
        directory = self.useFixture(fixtures.TempDir()).path
        image = os.path.join(directory, 'gpu-bench-cpu.qcow2')
        self.assertEqual(('bios', None), benchmark.read_build_record(image))
        benchmark.write_build_record(image, 'uefi', 812.34)
        self.assertEqual(('uefi', 812.3),
                         benchmark.read_build_record(image))
        with open(benchmark.build_record_path(image), 'w') as stream:
            stream.write('[not a record')
        self.assertEqual(('bios', None), benchmark.read_build_record(image))


class DiskLayoutTest(testtools.TestCase):

    def test_efi_layout_only_where_vfat_mounts(self):
        directory = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(directory, 'filesystems')
        with open(path, 'w') as stream:
            stream.write('nodev\tproc\n\text4\n\tvfat\n')
        self.assertEqual(('block-device-efi', 'uefi'),
                         benchmark.disk_layout(path))
        with open(path, 'w') as stream:
            stream.write('nodev\tproc\n\text4\n')
        self.assertEqual(('block-device-gpt', 'bios'),
                         benchmark.disk_layout(path))

    def test_uefi_without_ovmf_is_a_clear_error(self):
        directory = self.useFixture(fixtures.TempDir()).path
        guest = guestvm.Guest('/i.qcow2', directory, '', firmware='uefi')
        with mock.patch.object(guestvm, 'ovmf', return_value=None), \
                mock.patch.object(guestvm, 'overlay'), \
                mock.patch.object(guestvm, 'config_drive'):
            error = self.assertRaises(guestvm.BootError, guest.boot, 'tcg')
        self.assertIn('OVMF', str(error))
