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
"""Read PCI devices from sysfs under an injectable root.

Every read answers None when the file or link is missing or its content is
not text (a non-UTF-8 byte), so a device that vanishes or garbles in the
middle of a scan reads as unknown instead of raising.
``virtfnN``, ``physfn``, ``driver`` and ``iommu_group`` are symlinks and are
read as links (libudev does not expose them as attributes).
"""

import os
import re
import typing

_VIRTFN = re.compile(r'^virtfn(\d+)$')
_ADDRESS = re.compile(r'^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$')
_PCI_ID = re.compile(r'^(0x)?[0-9a-f]{4}$')


def pci_id(text):
    """``10de`` for ``0x10de``; None unless ``text`` is a 16-bit hex id."""
    text = (text or '').strip().lower()
    return text.removeprefix('0x') if _PCI_ID.match(text) else None


def mdevs_in(device_directory):
    """``{uuid: mdev type}`` of the mdevs on a parent device.

    Unlike the other reads, raises ``OSError`` when the device or one of
    its entries cannot be read: callers that destroy what no mdev uses
    must not take "unreadable" for "none". Reads links, follows none.
    """
    found = {}
    for entry in os.listdir(device_directory):
        try:
            target = os.readlink(os.path.join(device_directory, entry,
                                              'mdev_type'))
        except (FileNotFoundError, NotADirectoryError):
            continue
        found[entry] = os.path.basename(target)
    return found


def is_pci_address(name):
    """Whether ``name`` is a ``dddd:bb:dd.f`` PCI address."""
    return bool(_ADDRESS.match(name or ''))


def vf_address(pf_address, offset, stride, index):
    """The address the kernel gives VF ``index`` of a PF (routing id
    ``PF + sriov_offset + index * sriov_stride``), None if unknowable.
    """
    match = _ADDRESS.match(pf_address or '')
    if match is None or offset is None or stride is None:
        return None
    domain, bus, device, function = match.groups()
    rid = ((int(bus, 16) << 8) | (int(device, 16) << 3) | int(function)) + \
        offset + index * stride
    if not 0 <= rid <= 0xffff:
        return None
    return '%s:%02x:%02x.%d' % (domain, rid >> 8, (rid >> 3) & 0x1f, rid & 7)


def virtfn_links(device_directory):
    """``[(vf_index, vf_address)]`` from a PF's ``virtfnN`` links.

    A link whose target vanished is still listed; [] if the directory is
    gone.
    """
    try:
        names = os.listdir(device_directory)
    except OSError:
        return []
    vfs = []
    for name in names:
        match = _VIRTFN.match(name)
        if match:
            try:
                target = os.readlink(os.path.join(device_directory, name))
            except OSError:
                continue
            vfs.append((int(match.group(1)), os.path.basename(target)))
    return sorted(vfs)


class VendorDevices(typing.NamedTuple):
    """One vendor's devices and those whose ``vendor`` cannot be read."""

    #: Addresses whose ``vendor`` is the vendor's id, sorted.
    of_vendor: list
    #: Addresses whose ``vendor`` is missing, not text or not an id
    #: (listed by no vendor), sorted.
    unidentified: list


class PciAttributes:
    """Typed PCI attributes over a ``read(address, name)`` of text.

    Shared by the sysfs reader below and the udev one, which differ only in
    how they get an attribute's text.
    """

    def read(self, address, name):
        raise NotImplementedError

    def read_int(self, address, name, base=10):
        """An integer attribute (``base=16`` for ``0x10de``), or None."""
        text = self.read(address, name)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError:
            return None

    def vendor(self, address):
        """``10de`` for ``0x10de``; None if unreadable or not an id."""
        return pci_id(self.read(address, 'vendor'))

    def device_id(self, address):
        text = self.read(address, 'device')
        return text.lower().removeprefix('0x') if text else None

    def numa_node(self, address):
        """NUMA node, or None where the firmware gives none (-1)."""
        node = self.read_int(address, 'numa_node')
        return node if node is not None and node >= 0 else None

    def virtfn_links(self, address):
        """``[(vf_index, link target name)]`` of a PF's ``virtfnN``."""
        raise NotImplementedError

    def vfs_by_physfn(self, address):
        raise NotImplementedError

    def addresses(self):
        """PCI addresses of every device, sorted."""
        raise NotImplementedError

    def devices_by_vendor(self, vendor_id, physical_functions_only=True):
        """:class:`VendorDevices` of ``vendor_id`` (PFs only by default),
        each device's ``vendor`` read once.
        """
        found = VendorDevices([], [])
        for address in self.addresses():
            vendor = self.vendor(address)
            if vendor == vendor_id:
                listed = found.of_vendor
            elif vendor is None:
                listed = found.unidentified
            else:
                continue
            if not (physical_functions_only and self.physfn(address)):
                listed.append(address)
        return found

    def sriov_numvfs(self, address):
        """How many VFs the PF has (``sriov_numvfs``), None if unread."""
        return self.read_int(address, 'sriov_numvfs')

    def virtfns(self, address):
        """``[(vf_index, vf_address)]`` of a PF in VF-index order.

        The PF has as many VFs as ``sriov_numvfs`` says, found by their
        ``virtfnN`` links and by the VFs' own ``physfn`` links (a link
        missing or naming a wrong device loses no VF). A VF index below
        ``sriov_numvfs`` that no VF of this PF answers is still listed,
        under the address the kernel gives it (``sriov_offset`` and
        ``sriov_stride``) or, when that cannot be known, under a name that
        is no PCI address: callers check :meth:`exists` before reading a
        VF and count one that does not exist as unknown. A link at or past
        ``sriov_numvfs`` to no VF of this PF is a VF gone; with
        ``sriov_numvfs`` unreadable it is unknown.
        """
        count = self.sriov_numvfs(address)
        links = self.virtfn_links(address)
        kernel_address = self._kernel_vf_addresses(address)
        slots = self._vfs_of_links(address, links, kernel_address, count)
        # Unread ``sriov_numvfs``: a link to no VF of this PF is unknown.
        missing = [index for index in (
            range(count) if count is not None else [i for i, _ in links])
            if index not in slots]
        # A device without SR-IOV (no link, no ``sriov_totalvfs``) has no
        # VF to look for.
        if missing or count is None and (
                links or self.read(address, 'sriov_totalvfs') is not None):
            last = max([i for i, _ in links] + missing + [count or 0]) + 1
            missing = self._add_vfs_naming_pf(address, slots, missing, last,
                                              kernel_address)
            slots.update(self._stand_ins(address, missing, links,
                                         kernel_address))
        return sorted(slots.items())

    def _kernel_vf_addresses(self, address):
        """``index -> the address the kernel gives VF index`` of PF
        ``address`` (:func:`vf_address`), None if unknowable;
        ``sriov_offset`` and ``sriov_stride`` are read at the first call.
        """
        geometry = []

        def kernel_address(index):
            if not geometry:
                geometry.extend((self.read_int(address, 'sriov_offset'),
                                 self.read_int(address, 'sriov_stride')))
            return vf_address(address, geometry[0], geometry[1], index)

        return kernel_address

    def _vfs_of_links(self, address, links, kernel_address, count):
        """``{index: VF}`` of the ``virtfnN`` links that name a VF of PF
        ``address``: one that exists and whose ``physfn`` names it or,
        below ``count`` (``sriov_numvfs``), names no device (missing or
        dangling: nothing says it is another's, and a busy VF left out
        loses its guest's record).
        """
        claims = {}
        for index, vf in links:
            if not self.exists(vf):
                continue
            owner = self.physfn(vf)
            if owner == address or (
                    count is not None and index < count
                    and (owner is None or not self.exists(owner))):
                claims.setdefault(vf, []).append(index)
        # A VF two links name takes the index the kernel gave it.
        return {next((i for i in indices if kernel_address(i) == vf),
                     indices[0]): vf for vf, indices in claims.items()}

    def _add_vfs_naming_pf(self, address, slots, missing, last,
                           kernel_address):
        """Add to ``slots`` the VFs whose ``physfn`` names PF ``address``
        that no link placed, each at the index the kernel gave its address
        when free, else at the first ``missing`` index, else past every
        index (``last`` is past the indexes known); returns the indexes
        still missing.
        """
        missing = list(missing)
        spare = {kernel_address(i): i for i in range(last)}
        for vf in sorted(set(self.vfs_by_physfn(address))
                         - set(slots.values())):
            index = spare.get(vf)
            if index is None or index in slots:
                index = missing[0] if missing else max(
                    list(slots) + [last - 1]) + 1
            if index in missing:
                missing.remove(index)
            slots[index] = vf
        return missing

    def _stand_ins(self, address, missing, links, kernel_address):
        """``{index: stand-in}`` for the VF indexes no VF answers: the
        address the kernel gives the VF, else its dangling link's target,
        else a name that is no PCI address; never a device that exists
        (it is another's).
        """
        dangling = dict(links)
        return {index: next(
            (guess for guess in (kernel_address(index), dangling.get(index))
             if guess is not None and not self.exists(guess)),
            'virtfn%d-of-%s' % (index, address)) for index in missing}

    def vendor_evidence(self, address, vendor_id, drivers):
        """Why a device whose ``vendor`` cannot be read may still be
        ``vendor_id``'s, or None when nothing in sysfs says so.

        Evidence, first found wins: bound to one of ``drivers`` (a kernel
        driver that binds only that vendor's devices), a
        ``subsystem_vendor`` of ``vendor_id``, or a VF (``virtfnN``) whose
        ``vendor`` is ``vendor_id``. Not evidence against: OEM boards carry
        the OEM in ``subsystem_vendor``.
        """
        driver = self.driver(address)
        if driver in drivers:
            return 'bound to %s' % driver
        if pci_id(self.read(address, 'subsystem_vendor')) == vendor_id:
            return 'its subsystem_vendor is 0x%s' % vendor_id
        for _index, vf in self.virtfns(address):
            if self.vendor(vf) == vendor_id:
                return 'its VF %s is of vendor 0x%s' % (vf, vendor_id)
        return None


class Sysfs(PciAttributes):
    """PCI devices under ``<root>/bus/pci/devices``."""

    def __init__(self, root='/sys'):
        self.root = root

    def device_path(self, address, *names):
        return os.path.join(self.root, 'bus', 'pci', 'devices', address,
                            *names)

    def exists(self, address):
        return os.path.isdir(self.device_path(address))

    def addresses(self):
        """PCI addresses of every device, sorted; [] without a PCI bus."""
        try:
            return sorted(os.listdir(self.device_path('')))
        except OSError:
            return []

    def read(self, address, name):
        """The stripped text of an attribute, None if missing or not text."""
        try:
            with open(self.device_path(address, name)) as attribute:
                return attribute.read().strip()
        except (OSError, ValueError):
            # ValueError: UnicodeDecodeError on a non-UTF-8 byte.
            return None

    def list_names(self, address, *names):
        """Sorted entries of a directory under the device, [] if none."""
        try:
            return sorted(os.listdir(self.device_path(address, *names)))
        except OSError:
            return []

    def mdevs(self, address):
        """:func:`mdevs_in` the device's directory."""
        return mdevs_in(self.device_path(address))

    def write(self, address, name, value):
        """Write an attribute. Callers run this inside a privsep context."""
        with open(self.device_path(address, name), 'w') as attribute:
            attribute.write(str(value))

    def link_name(self, address, name):
        """Base name of a symlink's target (``driver`` gives ``nvidia``)."""
        try:
            return os.path.basename(
                os.readlink(self.device_path(address, name)))
        except OSError:
            return None

    def driver(self, address):
        """The bound driver's name; None for none, or for a ``driver``
        link that names no loaded driver (dangling).
        """
        if not os.path.isdir(self.device_path(address, 'driver')):
            return None
        return self.link_name(address, 'driver')

    def physfn(self, address):
        """The PF address of a VF; None for a PF."""
        return self.link_name(address, 'physfn')

    def virtfn_links(self, address):
        return virtfn_links(self.device_path(address))

    def vfs_by_physfn(self, address):
        """Addresses of the devices whose ``physfn`` names ``address``."""
        return [vf for vf in self.addresses() if self.physfn(vf) == address]
