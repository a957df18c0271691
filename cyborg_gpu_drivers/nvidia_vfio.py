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
"""SR-IOV VFs of NVIDIA's vendor-specific VFIO interface (vGPU 17+).

On Ada, Hopper and Blackwell hosts without mdev, every VF of a GPU has
``/sys/bus/pci/devices/<VF>/nvidia/``:

``creatable_vgpu_types``
    a header line, then one ``<id> : <full name>`` line per vGPU type the
    VF can take *now* (it shrinks as siblings are assigned);
``current_vgpu_type``
    ``0`` when the VF is free, else the id of the type it holds. Writing a
    type id assigns it; writing ``0`` releases it.

Both the MIG driver (MIG-backed types) and the vGPU driver (time-sliced
types) use this module. Reads are plain functions over a
:class:`~cyborg_gpu_drivers.adapters.sysfs.Sysfs`; the two writes,
:func:`assign_type` and :func:`release_type`, validate first and then call
a writer, by default the privsep entrypoint. Whether a VF is *in use* (a
guest runs on it) is the caller's knowledge, from NVML's active vGPUs: a
VF in use is never written.

Typical use::

    vfs = nvidia_vfio.list_vfs(sysfs, '0000:1b:00.0')
    free = [vf for vf in vfs if vf.is_free]
    nvidia_vfio.assign_type(sysfs, free[0].address, 1134,
                            in_use_addresses=busy)
"""

import dataclasses
import os

from oslo_log import log as logging

from cyborg_gpu_drivers import privsep

LOG = logging.getLogger(__name__)

#: ``current_vgpu_type`` of a free VF, and the value that releases one.
NO_TYPE = 0

CREATABLE_FILE = os.path.join('nvidia', 'creatable_vgpu_types')
CURRENT_FILE = os.path.join('nvidia', 'current_vgpu_type')


class VfioError(Exception):
    """A VF cannot be given the requested vGPU type; nothing was written."""


@dataclasses.dataclass(frozen=True)
class VgpuType:
    """One line of ``creatable_vgpu_types``: ``1134 : NVIDIA H100XM-3-40C``.

    ``name`` is the full name as the driver prints it (it may hold
    spaces: ``NVIDIA RTX Pro 6000 Blackwell DC-1-24Q``).
    """
    id: int
    name: str


@dataclasses.dataclass(frozen=True)
class Vf:
    """What sysfs says about one vendor-VFIO VF.

    ``current_type`` is the id of the vGPU type it holds (``NO_TYPE`` when
    free, None when the file could not be read). ``creatable`` are the
    types it could take now.
    """
    address: str
    index: int
    current_type: int | None
    creatable: tuple[VgpuType, ...]

    @property
    def is_free(self):
        return self.current_type == NO_TYPE

    def offers(self, type_id):
        return any(vgpu_type.id == type_id for vgpu_type in self.creatable)


def parse_creatable_types(text):
    """Types listed in a ``creatable_vgpu_types`` text, in file order.

    Lenient, as NVIDIA's own vgpu-device-manager: the header and any line
    not starting with a digit are skipped; ``ID : Name`` and ``ID Name``
    are both accepted; the name keeps its inner spaces.
    """
    types = []
    for line in (text or '').splitlines():
        line = line.strip()
        if not line[:1].isdecimal():
            continue
        if ':' in line:
            number, _, name = line.partition(':')
        else:
            number, _, name = line.partition(' ')
        number, name = number.strip(), ' '.join(name.split())
        if not number.isdecimal() or not name:
            LOG.debug('Skipping unparsable vGPU type line %r', line)
            continue
        types.append(VgpuType(int(number), name))
    return types


def parse_current_type(text):
    """The type id in a ``current_vgpu_type`` text; None if unparsable."""
    text = (text or '').strip()
    # Some drivers print hex ids as nvidia-smi does (0x46e).
    try:
        return int(text, 16) if text.lower().startswith('0x') else int(text)
    except ValueError:
        return None


def has_vendor_vfio(sysfs, address):
    """True when ``address`` is a VF with the vendor VFIO interface."""
    return os.path.isfile(sysfs.device_path(address, CURRENT_FILE))


def read_current_type(sysfs, address):
    """The vGPU type id a VF holds (``NO_TYPE`` if free), None if unread."""
    return parse_current_type(sysfs.read(address, CURRENT_FILE))


def read_creatable_types(sysfs, address):
    """The vGPU types a VF can take now ([] if none or unreadable)."""
    return parse_creatable_types(sysfs.read(address, CREATABLE_FILE))


def read_vf(sysfs, address, index=0):
    """A :class:`Vf`, or None when the VF vanished or is not vendor VFIO."""
    if not sysfs.exists(address) or not has_vendor_vfio(sysfs, address):
        return None
    return Vf(address=address, index=index,
              current_type=read_current_type(sysfs, address),
              creatable=tuple(read_creatable_types(sysfs, address)))


def list_vfs(sysfs, pf_address, unknown=None, note=LOG.warning):
    """The vendor-VFIO VFs of a PF, in VF index order.

    A VF whose ``virtfnN`` link dangles (it vanished during the scan) or
    that lacks the vendor interface is left out with a warning through
    ``note`` (a driver passes its log-once notes). With a set ``unknown``,
    the addresses of those VFs and of VFs whose type cannot be read are
    added to it: their state is unknown.
    """
    vfs = []
    for index, address in sysfs.virtfns(pf_address):
        vf = read_vf(sysfs, address, index)
        if vf is None or vf.current_type is None:
            if unknown is not None:
                unknown.add(address)
        if vf is None:
            note('VF %s (virtfn%d of %s) vanished or has no NVIDIA vendor '
                 'VFIO interface; leaving it out'
                 % (address, index, pf_address))
            continue
        vfs.append(vf)
    return vfs


def _check_not_in_use(address, in_use_addresses):
    if address in set(in_use_addresses or ()):
        raise VfioError('VF %s is in use by a guest; its vGPU type is '
                        'left alone' % address)


def assign_type(sysfs, address, type_id, in_use_addresses=(), writer=None):
    """Give a free VF the vGPU type ``type_id``.

    Refused with :class:`VfioError`, before any write, unless ``type_id``
    is a positive integer, the VF exists, is not in ``in_use_addresses``,
    holds no type and lists ``type_id`` in its ``creatable_vgpu_types``.
    ``writer(address, type_id)`` does the write; the default is the
    privsep entrypoint, which checks everything again on its side.
    """
    if isinstance(type_id, bool) or not isinstance(type_id, int) or \
            type_id <= NO_TYPE:
        raise VfioError('vGPU type id must be a positive integer, got %r '
                        '(use release_type to free a VF)' % (type_id,))
    _check_not_in_use(address, in_use_addresses)
    vf = read_vf(sysfs, address)
    if vf is None:
        raise VfioError('VF %s does not exist or has no NVIDIA vendor VFIO '
                        'interface' % address)
    if vf.current_type == type_id:
        return False
    if not vf.is_free:
        raise VfioError('VF %s already holds vGPU type %s; release it first'
                        % (address, vf.current_type))
    if not vf.offers(type_id):
        raise VfioError(
            'VF %s cannot take vGPU type %d now; it offers: %s'
            % (address, type_id, ', '.join(
                '%d (%s)' % (t.id, t.name) for t in vf.creatable) or
               'nothing'))
    (writer or privsep.privileged_write_vgpu_type)(address, type_id)
    LOG.info('Assigned vGPU type %d to VF %s', type_id, address)
    return True


def release_type(sysfs, address, in_use_addresses=(), writer=None):
    """Free a VF (write ``0``) unless a guest uses it.

    Returns False when the VF was already free. Refused with
    :class:`VfioError` for a VF in use or one that does not exist.
    """
    _check_not_in_use(address, in_use_addresses)
    vf = read_vf(sysfs, address)
    if vf is None:
        raise VfioError('VF %s does not exist or has no NVIDIA vendor VFIO '
                        'interface' % address)
    if vf.is_free:
        return False
    (writer or privsep.privileged_write_vgpu_type)(address, NO_TYPE)
    LOG.info('Released vGPU type %s from VF %s', vf.current_type, address)
    return True
