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
"""The package's privileged contexts and their entrypoints.

Every write the drivers make to the host (a vGPU type on a VF, a MIG
layout on a GPU, one GPU instance made or destroyed on demand) goes
through an entrypoint here. Each entrypoint checks its arguments before
touching anything and then calls a plain function of
the same name without the ``privileged_`` prefix; tests call those plain
functions directly, on a fake sysfs tree or a fake NVML.

Each entrypoint has a context of its own, so each daemon holds only the
capabilities its one job needs. A daemon is started by the Cyborg agent's
root helper (``sudo privsep-helper``) on first use, with the options of
its section (:data:`conf.VGPU_TYPE_PRIVSEP_GROUP`,
:data:`conf.MIG_LAYOUT_PRIVSEP_GROUP`).
"""

import os
import re
import stat

from oslo_config import cfg
from oslo_privsep import capabilities
from oslo_privsep import priv_context

from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import conf

CONF = cfg.CONF

# Writing a vGPU type is a write(2) to current_vgpu_type, a sysfs
# attribute owned by root with mode 0644: the daemon needs only to pass
# the file's permission check, which CAP_DAC_OVERRIDE grants also when
# the daemon runs as another user (the section's "user" option). Reads
# of sysfs need nothing (0444/0644). It gets no CAP_SYS_ADMIN: sysfs
# decides on the file's mode (not verified on an NVIDIA host: none was
# at hand; should the nvidia module refuse, the write fails, is logged
# and retried, and nothing else changes).
VGPU_TYPE_CAPABILITIES = (capabilities.CAP_DAC_OVERRIDE,)
vgpu_type_pctxt = priv_context.PrivContext(
    'cyborg_gpu_drivers',
    cfg_section=conf.VGPU_TYPE_PRIVSEP_GROUP,
    pypath=__name__ + '.vgpu_type_pctxt',
    capabilities=VGPU_TYPE_CAPABILITIES)

# Creating and destroying MIG GPU and compute instances through NVML
# needs the "mig-config" nvidia-capability; the NVIDIA MIG User Guide
# ("Device Nodes and Capabilities") says a process with CAP_SYS_ADMIN
# implicitly holds every nvidia-capability. The daemon's other work here
# is reading sysfs (the GPU's VFs and their types), which needs nothing,
# so it gets no CAP_DAC_OVERRIDE.
MIG_LAYOUT_CAPABILITIES = (capabilities.CAP_SYS_ADMIN,)
mig_layout_pctxt = priv_context.PrivContext(
    'cyborg_gpu_drivers',
    cfg_section=conf.MIG_LAYOUT_PRIVSEP_GROUP,
    pypath=__name__ + '.mig_layout_pctxt',
    capabilities=MIG_LAYOUT_CAPABILITIES)

# The sysfs form of a PCI address, as the kernel names devices; fullmatch,
# so no trailing newline gets through.
_PCI_ADDRESS = re.compile(r'[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]')

NVIDIA_VENDOR = '0x10de'
VGPU_TYPE_DIR = 'nvidia'
VGPU_TYPE_FILE = 'current_vgpu_type'
CREATABLE_FILE = 'creatable_vgpu_types'
# Opened without following a symlink at any step below the device.
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
# What an error message shows of a caller's argument.
_SHOWN = 80
# The largest id NVML and the nvidia sysfs attributes take (C unsigned int).
_UINT_MAX = 2 ** 32 - 1


class InvalidPrivilegedRequest(ValueError):
    """An argument of a privileged call failed validation; nothing ran."""


class DeviceBusy(InvalidPrivilegedRequest):
    """The device is in use, or its state cannot be read; nothing ran."""


def shown(value):
    """``repr(value)``, cut short: an error names a caller's argument
    without copying megabytes of it into the logs.
    """
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + '...'


def check_pci_address(address):
    if not isinstance(address, str) or not _PCI_ADDRESS.fullmatch(address):
        raise InvalidPrivilegedRequest(
            '%s is not a sysfs PCI address (dddd:bb:dd.f)' % shown(address))
    return address


def check_non_negative_int(name, value):
    """``value`` if it is an NVML or sysfs id: an unsigned 32-bit int.

    NVML takes ids as C ``unsigned int``, and ctypes passes a larger
    Python int cut to its low 32 bits without a word: 2**32 + 3 would be
    checked as itself and acted on as 3.
    """
    # bool is an int subclass; True is not a type id.
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 0 <= value <= _UINT_MAX:
        raise InvalidPrivilegedRequest(
            '%s must be an integer from 0 to %d, got %s' % (
                name, _UINT_MAX, shown(value)))
    return value


def sysfs_root():
    """The sysfs root, from the daemon's own configuration, never from
    its caller: ``[gpu_partitions] sysfs_root`` (``/sys``).
    """
    return os.path.realpath(CONF.gpu_partitions.sysfs_root)


def device_directory(address):
    """The real directory of PCI device ``address`` under the sysfs root.

    ``bus/pci/devices/<address>`` is the kernel's symlink into
    ``devices/``; it is resolved once and the result must be a directory
    named ``address`` under ``<root>/devices``.
    """
    check_pci_address(address)
    root = sysfs_root()
    device = os.path.realpath(
        os.path.join(root, 'bus', 'pci', 'devices', address))
    if not device.startswith(os.path.join(root, 'devices') + os.sep) or \
            os.path.basename(device) != address or \
            not os.path.isdir(device):
        raise InvalidPrivilegedRequest('no PCI device %s under %s'
                                       % (address, root))
    return device


def _open_below(directory, names, flags):
    """Open ``directory/names...`` refusing a symlink at every step and
    anything but a regular file at the end. Non-blocking, so that a FIFO
    or device node in the tree cannot hold the daemon in open(2); sysfs
    attributes and regular files ignore the flag.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    try:
        for name in names[:-1]:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW,
                            dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open(names[-1], flags | _NOFOLLOW | os.O_NONBLOCK,
                       dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):
        os.close(leaf)
        raise InvalidPrivilegedRequest('%s is not a regular file'
                                       % os.path.join(directory, *names))
    return leaf


def _read(directory, *names):
    try:
        fd = _open_below(directory, names, os.O_RDONLY)
    except OSError as error:
        raise InvalidPrivilegedRequest('cannot read %s: %s' % (
            os.path.join(directory, *names), error.strerror))
    with os.fdopen(fd, 'rb') as attribute:
        return attribute.read(65536).decode('ascii', 'replace').strip()


def vgpu_type_state(vf_address):
    """``(device directory, current type id, creatable type ids)`` of an
    NVIDIA vendor-VFIO VF, read inside the daemon.
    """
    device = device_directory(vf_address)
    if _read(device, 'vendor') != NVIDIA_VENDOR or \
            not os.path.islink(os.path.join(device, 'physfn')):
        raise InvalidPrivilegedRequest('%s is not a VF of an NVIDIA GPU'
                                       % vf_address)
    current = _read(device, VGPU_TYPE_DIR, VGPU_TYPE_FILE)
    try:
        current = int(current, 16) if current.startswith('0x') \
            else int(current)
    except ValueError:
        raise DeviceBusy('VF %s: current_vgpu_type %r cannot be read'
                         % (vf_address, current))
    creatable = set()
    for line in _read(device, VGPU_TYPE_DIR, CREATABLE_FILE).splitlines():
        number = line.strip().split(':')[0].split(' ')[0]
        if number.isdecimal():
            creatable.add(int(number))
    return device, current, creatable


def write_vgpu_type(vf_address, type_id):
    """Write ``type_id`` (``0`` releases) to a VF's current_vgpu_type.

    Checked here, before anything is written: the VF is an NVIDIA VF
    under the configured sysfs root; it is not open (``enable`` 0: vfio
    enables a VF while a guest holds it); a type is given only to a free
    VF that lists it as creatable; no path component is a symlink.
    """
    check_non_negative_int('type_id', type_id)
    device, current, creatable = vgpu_type_state(vf_address)
    if current == type_id:
        return
    if _read(device, 'enable') != '0':
        raise DeviceBusy('VF %s is enabled (in use by a guest); its vGPU '
                         'type is left alone' % vf_address)
    if type_id and (current != 0 or type_id not in creatable):
        raise InvalidPrivilegedRequest(
            'VF %s cannot take vGPU type %d now (it holds %d)'
            % (vf_address, type_id, current))
    # O_TRUNC as the shell's "echo >" does; sysfs ignores it.
    fd = _open_below(device, (VGPU_TYPE_DIR, VGPU_TYPE_FILE),
                     os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, 'w') as attribute:
        attribute.write('%d\n' % type_id)


@vgpu_type_pctxt.entrypoint
def privileged_write_vgpu_type(vf_address, type_id):
    write_vgpu_type(vf_address, type_id)


def release_idle_gpu(pf_address):
    """Release the vGPU type of every VF of an idle NVIDIA GPU, so that
    it can take another type; returns the VFs released.

    Checked here, whatever the caller knows: the PF is an NVIDIA device
    under the configured sysfs root, and *every* one of its VFs is
    closed (``enable`` 0) with a readable type; otherwise nothing is
    written (:class:`DeviceBusy`). Should a write fail half-way, the VFs
    already released get their type back before the error is raised.
    """
    device = device_directory(pf_address)
    if _read(device, 'vendor') != NVIDIA_VENDOR:
        raise InvalidPrivilegedRequest('%s is not an NVIDIA GPU'
                                       % pf_address)
    held = []
    for vf in _vfs(pf_address):
        vf_device, current, _creatable = vgpu_type_state(vf)
        if _read(vf_device, 'enable') != '0':
            raise DeviceBusy('GPU %s: VF %s is enabled (in use by a guest); '
                             'no type is released' % (pf_address, vf))
        if current:
            held.append((vf, current))
    released = []
    try:
        for vf, _current in held:
            write_vgpu_type(vf, 0)
            released.append(vf)
    except Exception:
        for vf, current in held:
            if vf in released:
                try:
                    write_vgpu_type(vf, current)
                except Exception:  # the scan reports what the VF holds
                    continue
        raise
    return released


@vgpu_type_pctxt.entrypoint
def privileged_release_idle_gpu(pf_address):
    return release_idle_gpu(pf_address)


def check_mig_layout(gpu_address, instances):
    """Validate a MIG layout request: ``[(profile_id, start), ...]``."""
    check_pci_address(gpu_address)
    if not isinstance(instances, (list, tuple)) or not instances:
        raise InvalidPrivilegedRequest(
            'a MIG layout must list at least one (profile id, start)')
    checked = []
    for item in instances:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InvalidPrivilegedRequest(
                'a MIG layout entry must be (profile id, start), got %s'
                % shown(item))
        checked.append((check_non_negative_int('profile_id', item[0]),
                        check_non_negative_int('start', item[1])))
    return checked


def apply_mig_layout(session, gpu_address, instances):
    """Replace the GPU instances of an idle GPU; ``session`` is an open
    :class:`~cyborg_gpu_drivers.adapters.nvml.Session`.

    Everything is checked first, inside the daemon: the layout against
    the GPU's own profiles and placements (known ids, valid starts, no
    overlap), and idleness (NVML lists no running vGPU, and no VF of the
    GPU holds a vGPU type). If creating fails half-way, what was created
    is destroyed and the previous layout is put back.
    """
    instances = check_mig_layout(gpu_address, instances)
    device_directory(gpu_address)
    session.check_layout(gpu_address, instances)
    active = session.active_vgpus_at(gpu_address)
    if active is None or active:
        raise DeviceBusy('GPU %s: %s' % (
            gpu_address, 'NVML cannot list its running vGPUs'
            if active is None else '%d vGPUs are running' % len(active)))
    for vf in _vfs(gpu_address):
        if vgpu_type_state(vf)[1] != 0:
            raise DeviceBusy('GPU %s: VF %s holds a vGPU type'
                             % (gpu_address, vf))
    session.replace_gpu_instances(gpu_address, instances)


def _vfs(pf_address):
    """The VF addresses of a PF; a ``virtfn`` entry that is not a link,
    or a device that cannot be listed, is refused (:class:`DeviceBusy`):
    a VF that cannot be named cannot be known idle.
    """
    device = device_directory(pf_address)
    try:
        return sorted(
            os.path.basename(os.readlink(os.path.join(device, name)))
            for name in os.listdir(device)
            if re.fullmatch(r'virtfn\d+', name))
    except OSError as error:
        raise DeviceBusy('GPU %s: its VFs cannot be listed (%s: %s)'
                         % (pf_address, error.filename, error.strerror))


@mig_layout_pctxt.entrypoint
def privileged_apply_mig_layout(gpu_address, instances):
    """Replace the GPU instances of an idle GPU (real NVML, as root)."""
    # Imported here: only the privileged daemon applies layouts.
    from cyborg_gpu_drivers.adapters import nvml
    with nvml.Nvml().session() as session:
        apply_mig_layout(session, gpu_address, instances)


def create_gpu_instance(session, gpu_address, profile_id, start):
    """Create one GPU instance (and its compute instance) on a GPU.

    Checked inside the daemon, whatever the caller said: the address is a
    PCI device under the configured sysfs root, the profile and start are
    the GPU's own, and the new instance overlaps no existing one in
    memory slots or compute slices (NVML is asked, not the caller).
    Returns the GPU instance id.
    """
    check_pci_address(gpu_address)
    check_non_negative_int('profile_id', profile_id)
    check_non_negative_int('start', start)
    device_directory(gpu_address)
    try:
        return session.create_gpu_instance(gpu_address, profile_id, start)
    except ValueError as error:
        raise InvalidPrivilegedRequest(str(error))


def destroy_gpu_instance(session, gpu_address, gpu_instance_id):
    """Destroy one GPU instance no running vGPU uses.

    Refused (:class:`DeviceBusy`) when NVML cannot list the GPU's running
    vGPUs, or one of them runs on that instance or on an instance NVML
    cannot name; or when it would leave fewer instances of its profile
    than the GPU has mdevs that may need one (of its profile's types, or
    of a type NVML does not name; a parent that cannot be read counts as
    full), since a guest's mdev takes its instance only when it starts.
    An id NVML does not list is refused
    (:class:`InvalidPrivilegedRequest`): nothing can be checked about it.
    """
    check_pci_address(gpu_address)
    check_non_negative_int('gpu_instance_id', gpu_instance_id)
    device_directory(gpu_address)
    active = session.active_vgpus_at(gpu_address)
    if active is None:
        raise DeviceBusy('GPU %s: NVML cannot list its running vGPUs'
                         % gpu_address)
    if any(vgpu.gpu_instance_id in (None, gpu_instance_id)
           for vgpu in active):
        raise DeviceBusy('GPU %s: a running vGPU may use GPU instance %d'
                         % (gpu_address, gpu_instance_id))
    instances, profile_of_type = session.mig_state_at(gpu_address)
    target = next((gi for gi in instances if gi.id == gpu_instance_id), None)
    if target is None:
        # The checks above and below are about the instances NVML lists:
        # one it does not list cannot be known idle.
        raise InvalidPrivilegedRequest(
            'GPU %s: NVML lists no GPU instance %d' % (gpu_address,
                                                       gpu_instance_id))
    same = sum(1 for gi in instances if gi.profile_id == target.profile_id)
    waiting = sum(
        1 for mdev_type in _mdev_types(gpu_address)
        if profile_of_type.get(_mdev_type_id(mdev_type),
                               target.profile_id) == target.profile_id)
    if waiting >= same:
        raise DeviceBusy(
            'GPU %s: %d mdevs may need the %d GPU instances of profile '
            'id %d; GPU instance %d is kept' % (
                gpu_address, waiting, same, target.profile_id,
                gpu_instance_id))
    session.destroy_gpu_instance(gpu_address, gpu_instance_id)


def _mdev_type_id(mdev_type):
    """``nvidia-700`` gives 700; None for a name of another form."""
    prefix, _, number = mdev_type.rpartition('-')
    return int(number) if prefix == 'nvidia' and number.isdecimal() else None


def _mdev_types(gpu_address):
    """Types of the mdevs on the GPU's mdev parents (its VFs, else
    itself), read inside the daemon; a parent that cannot be read is
    refused (:class:`DeviceBusy`), never taken as holding none.
    """
    found = []
    for parent in _vfs(gpu_address) or [gpu_address]:
        try:
            found.extend(sysfs_adapter.mdevs_in(
                device_directory(parent)).values())
        except OSError as error:
            raise DeviceBusy('GPU %s: the mdevs of %s cannot be read (%s)'
                             % (gpu_address, parent, error.strerror))
    return found


@mig_layout_pctxt.entrypoint
def privileged_create_gpu_instance(gpu_address, profile_id, start):
    """Create one GPU instance on demand (real NVML, as root)."""
    from cyborg_gpu_drivers.adapters import nvml
    with nvml.Nvml().session() as session:
        return create_gpu_instance(session, gpu_address, profile_id, start)


@mig_layout_pctxt.entrypoint
def privileged_destroy_gpu_instance(gpu_address, gpu_instance_id):
    """Destroy one idle GPU instance (real NVML, as root)."""
    from cyborg_gpu_drivers.adapters import nvml
    with nvml.Nvml().session() as session:
        destroy_gpu_instance(session, gpu_address, gpu_instance_id)
