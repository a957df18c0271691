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
"""mdev parents and mdevs as libvirt lists them: the only libvirt import.

:meth:`NodeDevices.scan` opens one read-only connection, lists the node
devices with the ``mdev_types`` capability (mdev parents: a pre-Ada PF, or
each VF of an Ampere GPU in SR-IOV mode) and those with the ``mdev``
capability (created mdevs), and parses their XML into plain data. The
parsers are plain functions over XML text.

Errors: :class:`LibvirtUnavailable` when libvirt cannot be reached or
listed; a node device that vanishes between listing and ``XMLDesc`` is
left out with one warning, the others are returned.
"""

import dataclasses
from xml.etree import ElementTree

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

DEFAULT_URI = 'qemu:///system'


class LibvirtUnavailable(Exception):
    """libvirt could not be opened or asked for node devices."""


@dataclasses.dataclass(frozen=True)
class MdevType:
    """One ``<type>`` of a parent: ``nvidia-476`` named ``NVIDIA A100D-20C``.
    """
    id: str
    name: str
    device_api: str | None
    available_instances: int


@dataclasses.dataclass(frozen=True)
class MdevParent:
    """A PCI device that can create mdevs.

    ``phys_function`` is the PF address when the parent is a VF (Ampere
    SR-IOV), None for a PF. ``physical_gpu`` is the address of the
    physical GPU the parent belongs to.
    """
    name: str
    address: str
    phys_function: str | None
    numa_node: int | None
    types: tuple[MdevType, ...]

    @property
    def physical_gpu(self):
        return self.phys_function or self.address


@dataclasses.dataclass(frozen=True)
class Mdev:
    """A created mdev: its type id and the node device name of its parent.
    """
    name: str
    uuid: str | None
    type_id: str
    parent: str


@dataclasses.dataclass(frozen=True)
class Scan:
    parents: tuple[MdevParent, ...]
    mdevs: tuple[Mdev, ...]

    def mdevs_on(self, parent):
        return [mdev for mdev in self.mdevs if mdev.parent == parent.name]


# --- XML parsing (plain) -----------------------------------------------------

def _int(text, default=None):
    try:
        return int(str(text).strip(), 0)
    except (TypeError, ValueError):
        return default


def _address(element):
    """``dddd:bb:dd.f`` from an ``<address domain= bus= slot= function=>``.
    """
    values = [_int(element.get(key)) for key in
              ('domain', 'bus', 'slot', 'function')]
    if None in values:
        return None
    return '%04x:%02x:%02x.%x' % tuple(values)


def _pci_capability(root):
    return root.find("capability[@type='pci']")


def parse_parent(xml):
    """An :class:`MdevParent` from a node device's XML, or None when the
    device is not a PCI device with mdev types.
    """
    root = ElementTree.fromstring(xml)
    pci = _pci_capability(root)
    if pci is None:
        return None
    types_element = pci.find("capability[@type='mdev_types']")
    if types_element is None:
        return None
    values = [_int(pci.findtext(key)) for key in
              ('domain', 'bus', 'slot', 'function')]
    if None in values:
        return None
    physfn = pci.find("capability[@type='phys_function']/address")
    numa = pci.find('numa')
    types = []
    for element in types_element.findall('type'):
        type_id = element.get('id')
        if not type_id:
            continue
        types.append(MdevType(
            id=type_id,
            # Names may carry inner runs of spaces; the type is the last
            # token, see vgpu_types.
            name=' '.join((element.findtext('name') or type_id).split()),
            device_api=element.findtext('deviceAPI'),
            available_instances=max(
                _int(element.findtext('availableInstances'), 0), 0)))
    numa_node = _int(numa.get('node')) if numa is not None else None
    return MdevParent(
        name=root.findtext('name'),
        address='%04x:%02x:%02x.%x' % tuple(values),
        phys_function=_address(physfn) if physfn is not None else None,
        numa_node=numa_node if numa_node is not None and numa_node >= 0
        else None,
        types=tuple(types))


def parse_mdev(xml):
    """An :class:`Mdev` from a node device's XML, or None if not an mdev."""
    root = ElementTree.fromstring(xml)
    capability = root.find("capability[@type='mdev']")
    if capability is None:
        return None
    type_element = capability.find('type')
    if type_element is None or not type_element.get('id'):
        return None
    return Mdev(name=root.findtext('name'),
                uuid=capability.findtext('uuid'),
                type_id=type_element.get('id'),
                parent=root.findtext('parent'))


# --- libvirt ----------------------------------------------------------------

class NodeDevices:
    """Node devices of one libvirt URI; ``libvirt`` is imported on use."""

    def __init__(self, uri=None, module=None):
        self.uri = uri or DEFAULT_URI
        self._module = module

    @property
    def module(self):
        if self._module is None:
            import libvirt
            # libvirt prints every error to stderr by default; they reach
            # the log here, once, as exceptions.
            libvirt.registerErrorHandler(lambda _context, _error: None, None)
            self._module = libvirt
        return self._module

    def scan(self):
        """A :class:`Scan` of every mdev parent and mdev, sorted by name."""
        try:
            libvirt = self.module
        except ImportError as error:
            raise LibvirtUnavailable('libvirt-python is not installed: %s'
                                     % error)
        try:
            connection = libvirt.openReadOnly(self.uri)
        except libvirt.libvirtError as error:
            raise LibvirtUnavailable('cannot open %s: %s'
                                     % (self.uri, error))
        try:
            parents = self._parsed(
                connection,
                libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV_TYPES,
                parse_parent)
            mdevs = self._parsed(
                connection, libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV,
                parse_mdev)
        finally:
            connection.close()
        return Scan(parents=tuple(sorted(parents, key=lambda p: p.address)),
                    mdevs=tuple(sorted(mdevs, key=lambda m: m.name)))

    def _parsed(self, connection, flag, parse):
        libvirt = self.module
        try:
            devices = connection.listAllDevices(flag)
        except libvirt.libvirtError as error:
            raise LibvirtUnavailable('cannot list node devices of %s: %s'
                                     % (self.uri, error))
        found = []
        for device in devices:
            try:
                name = device.name()
                xml = device.XMLDesc(0)
            except libvirt.libvirtError as error:
                # Removed between listing and reading (an mdev deleted, a
                # VF gone with sriov_numvfs): the rest is still good.
                LOG.warning('libvirt node device vanished during the scan, '
                            'leaving it out: %s', error)
                continue
            try:
                parsed = parse(xml)
            except ElementTree.ParseError as error:
                LOG.warning('libvirt node device %s has unparsable XML, '
                            'leaving it out: %s', name, error)
                continue
            if parsed is not None:
                found.append(parsed)
        return found
