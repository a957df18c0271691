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
"""Write a reference host's sysfs tree and libvirt node XML to disk.

The tree mimics the kernel's layout closely enough that code written for
``/sys`` works unchanged on ``sysfs_root``: real directories under
``devices/``, relative symlinks from ``bus/pci/devices``, ``driver``,
``iommu_group``, ``virtfnN``/``physfn`` and ``class/mdev_bus``.
"""

import os
from xml.sax import saxutils

# Attributes written for every device, in sysfs order: (file, key).
_ATTRIBUTES = (('vendor', 'vendor'), ('device', 'device'),
               ('class', 'class'), ('subsystem_vendor', 'subsystem_vendor'),
               ('subsystem_device', 'subsystem_device'),
               ('numa_node', 'numa_node'), ('local_cpulist', 'local_cpulist'))
_MDEV_TYPES_DIR = 'mdev_supported_types/'


def _device_dir(address):
    """Path of a device's real directory, relative to the sysfs root."""
    return os.path.join('devices', 'pci%s:00' % address.split(':')[0],
                        address)


class OutsideRoot(ValueError):
    """A path or link target would leave the materialization root."""


class _Tree:
    """Writes files and links under a root, creating each directory once.

    Remembering the directories made keeps a 300-device host to a few
    thousand system calls, which matters on a loaded CI disk. Every path
    and every link target is checked to stay under the root, and files
    are opened without following a final symlink, so a fixture that got
    past validation still cannot write anywhere else.
    """

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self._real_root = os.path.realpath(self.root)
        self._made = set()
        # Parents already resolved: nothing replaces a directory by a link
        # later (os.symlink refuses an existing path).
        self._resolved = set()

    def _inside(self, relative, what):
        full = os.path.normpath(os.path.join(self.root, relative))
        if os.path.commonpath([self.root, full]) != self.root:
            raise OutsideRoot('%s %s leaves %s' % (what, relative,
                                                   self.root))
        return full

    def _parent(self, relative):
        full = self._inside(relative, 'path')
        parent = os.path.dirname(relative)
        if parent not in self._made:
            os.makedirs(os.path.join(self.root, parent), exist_ok=True)
            while parent and parent not in self._made:
                self._made.add(parent)
                parent = os.path.dirname(parent)
        if parent not in self._resolved:
            real = os.path.realpath(os.path.dirname(full))
            if os.path.commonpath([self._real_root, real]) != \
                    self._real_root:
                raise OutsideRoot('path %s resolves outside %s'
                                  % (relative, self.root))
            self._resolved.add(parent)
        return full

    def write(self, relative, content):
        full = self._parent(relative)
        descriptor = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                             os.O_NOFOLLOW, 0o644)
        with open(descriptor, 'w', encoding='utf-8') as stream:
            stream.write(content)

    def link(self, target, relative):
        self._inside(os.path.join(os.path.dirname(relative), target),
                     'link target')
        os.symlink(target, self._parent(relative))


def _expand_vfs(pf):
    """The PF's VFs as full device entries (defaults and PF values in)."""
    defaults = pf.get('vf_defaults', {})
    vfs = []
    for vf in pf.get('virtfns') or ():
        entry = {key: pf[key] for key in ('vendor', 'subsystem_vendor',
                                          'subsystem_device', 'numa_node',
                                          'local_cpulist', 'class')
                 if key in pf}
        entry['device'] = pf['sriov_vf_device']
        entry.update({key: value for key, value in defaults.items()
                      if key != 'files'})
        entry.update(vf)
        entry['files'] = dict(defaults.get('files', {}))
        entry['files'].update(vf.get('files', {}))
        vfs.append(entry)
    return vfs


def build_sysfs(pci_devices, root):
    """Materialize ``pci_devices`` under ``root``; return ``root``."""
    tree = _Tree(root)
    os.makedirs(os.path.join(root, 'bus', 'pci', 'devices'))
    os.makedirs(os.path.join(root, 'bus', 'pci', 'drivers'))
    for pf in pci_devices:
        vfs = _expand_vfs(pf)
        _write_device(tree, pf)
        pf_dir = _device_dir(pf['address'])
        if 'virtfns' in pf:
            tree.write(os.path.join(pf_dir, 'sriov_numvfs'),
                       '%d\n' % len(vfs))
        for key in ('sriov_totalvfs', 'sriov_offset', 'sriov_stride'):
            if key in pf:
                tree.write(os.path.join(pf_dir, key), '%d\n' % pf[key])
        if 'sriov_vf_device' in pf:
            # The kernel prints this one as bare hex: "2330", not "0x2330".
            tree.write(os.path.join(pf_dir, 'sriov_vf_device'),
                       '%x\n' % int(pf['sriov_vf_device'], 16))
        for number, vf in enumerate(vfs):
            # A missing VF keeps its virtfn link: the link dangles, as when
            # the VF vanishes between listing the PF and reading the VF.
            tree.link('../' + vf['address'],
                      os.path.join(pf_dir, 'virtfn%d' % number))
            if vf.get('missing'):
                continue
            _write_device(tree, vf)
            tree.link('../' + pf['address'],
                      os.path.join(_device_dir(vf['address']), 'physfn'))
    return root


def _write_device(tree, device):
    address = device['address']
    device_dir = _device_dir(address)
    os.makedirs(os.path.join(tree.root, device_dir))
    up = '../../../'  # from devices/pciDDDD:00/<address> to the root
    tree.link(up + device_dir, os.path.join('bus/pci/devices', address))
    for name, key in _ATTRIBUTES:
        if key in device:
            tree.write(os.path.join(device_dir, name), '%s\n' % device[key])
    driver = device.get('driver')
    if driver:
        tree.link(up + 'bus/pci/drivers/' + driver,
                  os.path.join(device_dir, 'driver'))
        tree.link('../../../../' + device_dir,
                  os.path.join('bus/pci/drivers', driver, address))
    if 'iommu_group' in device:
        group = 'kernel/iommu_groups/%d' % device['iommu_group']
        tree.link(up + group, os.path.join(device_dir, 'iommu_group'))
        tree.link('../../../../' + device_dir,
                  os.path.join(group, 'devices', address))
    # Every PCI device has ``enable`` (its enable count): 0, nobody holds
    # it, unless the host's files say otherwise.
    files = dict({'enable': '0\n'}, **device.get('files', {}))
    for name, content in files.items():
        tree.write(os.path.join(device_dir, name), content)
    if any(name.startswith(_MDEV_TYPES_DIR) for name in files):
        tree.link('../../' + device_dir,
                  os.path.join('class/mdev_bus', address))
    for mdev in device.get('mdevs', ()):
        mdev_dir = os.path.join(device_dir, mdev['uuid'])
        tree.link('../' + _MDEV_TYPES_DIR + mdev['type'],
                  os.path.join(mdev_dir, 'mdev_type'))
        tree.link('../../../' + mdev_dir,
                  os.path.join('bus/mdev/devices', mdev['uuid']))


def write_libvirt_node_xml(nodedevs, hostname, path):
    """Write a libvirt test-driver ``<node>`` document to ``path``."""
    computer = (
        "<device>\n  <name>computer</name>\n"
        "  <capability type='system'>\n"
        "    <product>%s</product>\n"
        "    <hardware>\n      <vendor>openstack-gpu-partitions</vendor>\n"
        "      <uuid>00000000-0000-4000-8000-000000000001</uuid>\n"
        "    </hardware>\n  </capability>\n</device>\n"
        % saxutils.escape(hostname))
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write('<node>\n')
        stream.write(computer)
        for device in nodedevs:
            stream.write(device.rstrip('\n') + '\n')
        stream.write('</node>\n')
