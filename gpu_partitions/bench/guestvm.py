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
"""Boot a benchmark guest image under QEMU on this host.

What Nova would give the guest, without a cloud: a copy-on-write overlay
of the image, an OpenStack config drive (label ``config-2``) carrying the
user-data of ``gpu-partitions bench cloud-init`` and the instance
metadata, and user-mode networking with the guest's serving port
forwarded to 127.0.0.1.

KVM is used where it works.  ``/dev/kvm`` can exist and still fail (a
nested or emulated host: "KVM internal error ... emulation failure"), so
the first boot under KVM is also the probe: if QEMU reports a KVM error,
exits, or the guest kernel has not reached user space within
``KVM_PROBE_S``, that boot is stopped and the guest boots again under
TCG.  Which one ran is reported.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid

OVMF_PATHS = ('/usr/share/ovmf/OVMF.fd', '/usr/share/OVMF/OVMF.fd',
              '/usr/share/qemu/OVMF.fd')
ISO_TOOLS = ('genisoimage', 'mkisofs', 'xorrisofs')
# Seconds a KVM boot may take to reach the guest's user space before KVM
# is deemed unusable (a working KVM boots the kernel in a few seconds).
KVM_PROBE_S = 45
KVM_ERROR = re.compile(r'KVM internal error|emulation failure|'
                       r'failed to initialize kvm|Could not access KVM')
# Console lines that show the guest kernel handed over to user space.
USER_SPACE = re.compile(r'Run /\S*init as init process|systemd\[1\]: |'
                        r'Welcome to ')
# Where a boot's time goes: the console line that marks the start of each
# stage, in boot order.  The guest's own timestamps are no clock under an
# emulated CPU (its TSC is marked unstable and lost ticks slow it), so the
# host's clock times them as the lines appear.
BOOT_STAGES = (
    ('bootloader', re.compile(r"Booting `")),
    ('kernel', re.compile(r'Linux version \d')),
    ('initramfs', re.compile(r'Run /\S*init as init process')),
    ('systemd', re.compile(r'Welcome to ')),
    ('cloud-init local', re.compile(r"running 'init-local'")),
    ('network', re.compile(r'Reached target network\.target')),
    ('cloud-init network', re.compile(r"running 'init' at")),
    ('cloud-init config', re.compile(r"running 'modules:config'")),
    ('cloud-init final', re.compile(r"running 'modules:final'")),
    ('login prompt', re.compile(r' login: ')),
)
ANSI_ESCAPE = re.compile(r'\x1b(\[[0-9;?]*)?[A-Za-z]')
# systemd's progress spinner: one console line per second while a unit
# starts, which would bury everything else in a console tail.
SPINNER = re.compile(r'^\[[ *]*\] (A start job|Job .*) is running|'
                     r'^\[[ *]*\] Job \S+ running')


class BootError(RuntimeError):
    """The guest could not be started; the message says why."""


def free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def kvm_usable_device(path='/dev/kvm'):
    """(usable, reason): whether /dev/kvm exists and can be opened."""
    if not os.path.exists(path):
        return False, '%s does not exist' % path
    if not os.access(path, os.R_OK | os.W_OK):
        return False, '%s is not readable and writable' % path
    return True, '%s present' % path


def readable_console(text):
    """The console's lines without colour codes, carriage returns and
    systemd's spinner.
    """
    lines = ANSI_ESCAPE.sub('', text).replace('\r', '\n').split('\n')
    return [line.rstrip() for line in lines
            if line.strip() and not SPINNER.search(line.strip())]


def ovmf():
    """The OVMF (UEFI) firmware file, or None."""
    for path in OVMF_PATHS:
        if os.path.exists(path):
            return path
    return None


def config_drive(directory, user_data, meta=None, name='gpu-bench'):
    """Write an OpenStack config drive ISO (label config-2); its path.

    ``meta`` becomes the instance metadata's ``meta`` map (Nova server
    metadata: the ``vllm_*`` keys the guest's launcher reads).
    """
    tool = next((t for t in ISO_TOOLS if shutil.which(t)), None)
    if tool is None:
        raise BootError('no ISO tool found (%s): install genisoimage '
                        '(bindep profile image)' % ', '.join(ISO_TOOLS))
    tree = os.path.join(directory, 'config-drive')
    latest = os.path.join(tree, 'openstack', 'latest')
    os.makedirs(latest, exist_ok=True)
    instance = str(uuid.uuid4())
    with open(os.path.join(latest, 'meta_data.json'), 'w') as stream:
        json.dump({'uuid': instance, 'name': name, 'hostname': name,
                   'availability_zone': 'nova', 'launch_index': 0,
                   'meta': dict(meta or {})}, stream)
    with open(os.path.join(latest, 'user_data'), 'w') as stream:
        stream.write(user_data)
    iso = os.path.join(directory, 'config-drive.iso')
    subprocess.run([tool, '-quiet', '-o', iso, '-V', 'config-2', '-r',
                    '-J', tree], check=True, capture_output=True)
    return iso


def qemu_command(disk, drive_iso, port, guest_port, accelerator,
                 console_log, memory_mib=3072, cpus=2, bios=None):
    """The qemu-system-x86_64 argv for one guest.

    ``-cpu max`` under TCG offers the newest instructions QEMU emulates
    (AVX2, FMA, F16C since QEMU 7.2), which a portable llama.cpp build
    uses; ``-cpu host`` under KVM.
    """
    argv = ['qemu-system-x86_64', '-machine', 'q35',
            '-accel', accelerator if accelerator == 'kvm' else
            'tcg,thread=multi',
            '-cpu', 'host' if accelerator == 'kvm' else 'max',
            '-smp', str(cpus), '-m', str(memory_mib),
            '-drive', 'if=virtio,format=qcow2,file=%s' % disk,
            '-drive', 'media=cdrom,readonly=on,file=%s' % drive_iso,
            '-netdev', 'user,id=net0,hostfwd=tcp:127.0.0.1:%d-:%d'
            % (port, guest_port),
            '-device', 'virtio-net-pci,netdev=net0',
            '-device', 'virtio-rng-pci',
            '-display', 'none', '-monitor', 'none',
            '-serial', 'file:%s' % console_log]
    if bios:
        argv += ['-bios', bios]
    return argv


def overlay(image, path):
    """A qcow2 overlay backed by ``image`` (which stays as built)."""
    if os.path.exists(path):
        os.remove(path)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F',
                    'qcow2', '-b', os.path.abspath(image), path],
                   check=True, capture_output=True)
    return path


class Guest:
    """One QEMU process; ``stop()`` ends it (also on error paths).

    ``firmware``: 'uefi' (OVMF) or 'bios' (SeaBIOS).
    """

    def __init__(self, image, directory, user_data, meta=None,
                 guest_port=8000, memory_mib=3072, cpus=2, firmware='uefi',
                 log=print):
        self.image = image
        self.directory = directory
        self.user_data = user_data
        self.meta = meta
        self.guest_port = guest_port
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.firmware = firmware
        self.log = log
        self.process = None
        self.accelerator = None
        self.started_at = None
        self.port = None
        self.console_log = os.path.join(directory, 'console.log')
        self.kvm_probe = None
        self.stages = {}

    @property
    def base_url(self):
        return 'http://127.0.0.1:%d' % self.port

    def _start(self, accelerator):
        disk = overlay(self.image, os.path.join(self.directory,
                                                'disk.qcow2'))
        iso = config_drive(self.directory, self.user_data, self.meta)
        bios = None
        if self.firmware == 'uefi':
            bios = ovmf()
            if bios is None:
                raise BootError('no OVMF firmware (%s): install ovmf '
                                '(bindep profile image)'
                                % ', '.join(OVMF_PATHS))
        self.port = free_port()
        open(self.console_log, 'w').close()
        argv = qemu_command(disk, iso, self.port, self.guest_port,
                            accelerator, self.console_log,
                            self.memory_mib, self.cpus, bios)
        self.log('guest: %s' % ' '.join(argv))
        self.stderr = open(os.path.join(self.directory,
                                        'qemu-%s.log' % accelerator), 'w+')
        self.started_at = time.monotonic()
        self.stages = {}
        self.process = subprocess.Popen(argv, stdout=self.stderr,
                                        stderr=subprocess.STDOUT)
        self.accelerator = accelerator

    def _read(self, path):
        try:
            with open(path, errors='replace') as stream:
                return stream.read()
        except OSError:
            return ''

    def _probe_kvm(self, timeout):
        """Watch a KVM boot: None if it reached user space, else why."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            errors = self._read(self.stderr.name)
            match = KVM_ERROR.search(errors)
            if match:
                return 'QEMU reported "%s"' % match.group(0)
            if self.process.poll() is not None:
                return 'QEMU exited with status %d: %s' % (
                    self.process.returncode, errors.strip()[-300:])
            if USER_SPACE.search(self._read(self.console_log)):
                return None
        return 'the guest kernel did not reach user space in %ds' % timeout

    def boot(self, accelerator='auto', kvm_probe_s=KVM_PROBE_S):
        """Start the guest: KVM if it works (auto), else TCG."""
        if accelerator in ('auto', 'kvm'):
            usable, reason = kvm_usable_device()
            if usable:
                self._start('kvm')
                failure = self._probe_kvm(kvm_probe_s)
                if failure is None:
                    self.kvm_probe = 'KVM works: %s' % reason
                    self.log('guest: booting under KVM')
                    return
                self.stop()
                reason = failure
            self.kvm_probe = 'KVM unusable: %s' % reason
            if accelerator == 'kvm':
                raise BootError(self.kvm_probe)
            self.log('guest: %s; falling back to TCG' % self.kvm_probe)
        else:
            self.kvm_probe = 'TCG requested (%s)' % accelerator
        self._start('tcg')

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def watch_stages(self):
        """Record (and log) the boot stages the console reached since the
        last call: seconds since QEMU started, by the host's clock.
        """
        text = ANSI_ESCAPE.sub('', self._read(self.console_log))
        seconds = time.monotonic() - self.started_at
        for name, pattern in BOOT_STAGES:
            if name not in self.stages and pattern.search(text):
                self.stages[name] = round(seconds, 1)
                self.log('guest: %6.1f s: %s' % (seconds, name))
        return self.stages

    def console_tail(self, lines=40):
        return '\n'.join(readable_console(
            self._read(self.console_log))[-lines:])

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()
        self.process = None
