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
"""The sysfs adapter over a real temporary tree."""

import collections
import os

import fixtures
import testtools

from cyborg_gpu_drivers.adapters import sysfs


class SysfsTreeTestCase(testtools.TestCase):
    """A sysfs tree in a temporary folder, with helpers to fill it."""

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.devices = os.path.join(self.root, 'bus', 'pci', 'devices')

    def device(self, address, **files):
        path = os.path.join(self.devices, address)
        os.makedirs(path)
        for name, content in files.items():
            with open(os.path.join(path, name), 'w') as f:
                f.write(content + '\n')

    def link(self, address, name, target):
        """Point link ``name`` of ``address`` at ``target`` (None: no
        link).
        """
        path = os.path.join(self.devices, address, name)
        if os.path.lexists(path):
            os.unlink(path)
        if target is not None:
            os.symlink(target, path)


class SysfsTest(SysfsTreeTestCase):

    def setUp(self):
        super().setUp()
        drivers = os.path.join(self.root, 'bus', 'pci', 'drivers')
        os.makedirs(os.path.join(drivers, 'nvidia'))
        self.device('0000:1b:00.0', vendor='0x10de', device='0x2330',
                    numa_node='1')
        self.device('0000:1b:00.4', vendor='0x10de', device='0x2330',
                    numa_node='-1')
        self.device('0000:02:00.0', vendor='0x8086', device='0x1234')
        self.link('0000:1b:00.0', 'virtfn0', '../0000:1b:00.4')
        # A VF that vanished between listing the PF and reading it.
        self.link('0000:1b:00.0', 'virtfn1', '../0000:1b:00.5')
        self.link('0000:1b:00.4', 'physfn', '../0000:1b:00.0')
        self.link('0000:1b:00.0', 'driver', '../../drivers/nvidia')
        self.sysfs = sysfs.Sysfs(self.root)

    def test_attributes(self):
        self.assertEqual('10de', self.sysfs.vendor('0000:1b:00.0'))
        self.assertEqual('2330', self.sysfs.device_id('0000:1b:00.0'))
        self.assertEqual(1, self.sysfs.numa_node('0000:1b:00.0'))
        self.assertEqual(0x10de,
                         self.sysfs.read_int('0000:1b:00.0', 'vendor', 16))

    def test_unknown_numa_node_is_none(self):
        self.assertIsNone(self.sysfs.numa_node('0000:1b:00.4'))
        self.assertIsNone(self.sysfs.numa_node('0000:02:00.0'))

    def test_links_are_read_as_links(self):
        self.assertEqual('nvidia', self.sysfs.driver('0000:1b:00.0'))
        self.assertEqual('0000:1b:00.0', self.sysfs.physfn('0000:1b:00.4'))
        self.assertIsNone(self.sysfs.physfn('0000:1b:00.0'))

    def test_vanished_vf_is_listed_but_does_not_exist(self):
        self.assertEqual([(0, '0000:1b:00.4'), (1, '0000:1b:00.5')],
                         self.sysfs.virtfns('0000:1b:00.0'))
        self.assertTrue(self.sysfs.exists('0000:1b:00.4'))
        self.assertFalse(self.sysfs.exists('0000:1b:00.5'))
        self.assertIsNone(self.sysfs.read('0000:1b:00.5', 'vendor'))

    def test_devices_by_vendor_skips_vfs(self):
        self.assertEqual((['0000:1b:00.0'], []),
                         self.sysfs.devices_by_vendor('10de'))
        self.assertEqual((['0000:1b:00.0', '0000:1b:00.4'], []),
                         self.sysfs.devices_by_vendor(
                             '10de', physical_functions_only=False))
        self.assertEqual(([], []), self.sysfs.devices_by_vendor('1002'))

    def test_devices_by_vendor_reads_each_vendor_once(self):
        os.unlink(os.path.join(self.devices, '0000:1b:00.4', 'vendor'))
        reads = collections.Counter()
        read = self.sysfs.read

        def counted(address, name):
            reads[address, name] += 1
            return read(address, name)

        self.sysfs.read = counted
        self.assertEqual(
            (['0000:1b:00.0'], ['0000:1b:00.4']),
            self.sysfs.devices_by_vendor('10de',
                                         physical_functions_only=False))
        self.assertEqual({(address, 'vendor'): 1
                          for address in self.sysfs.addresses()}, reads)

    def test_missing_root_reads_as_empty(self):
        empty = sysfs.Sysfs(os.path.join(self.root, 'nowhere'))
        self.assertEqual([], empty.addresses())
        self.assertEqual([], empty.virtfns('0000:1b:00.0'))
        self.assertIsNone(empty.driver('0000:1b:00.0'))

    def garble(self, address, name, content):
        with open(os.path.join(self.devices, address, name), 'wb') as f:
            f.write(content)

    def test_a_vendor_that_is_not_an_id_is_unknown(self):
        for content in (b'\xff\xfe\n', b'zz%?\n', b'0x10de0\n', b'\n'):
            self.garble('0000:1b:00.0', 'vendor', content)
            self.assertIsNone(self.sysfs.vendor('0000:1b:00.0'), content)
            # Listed apart, for every vendor.
            for vendor in ('10de', '1002'):
                self.assertEqual(
                    ([], ['0000:1b:00.0']),
                    self.sysfs.devices_by_vendor(vendor), content)

    def test_unidentified_devices_skip_vfs_and_identified_ones(self):
        self.assertEqual([], self.sysfs.devices_by_vendor('10de').unidentified)
        os.unlink(os.path.join(self.devices, '0000:1b:00.4', 'vendor'))
        self.assertEqual((['0000:1b:00.0'], []),
                         self.sysfs.devices_by_vendor('10de'))
        self.assertEqual((['0000:1b:00.0'], ['0000:1b:00.4']),
                         self.sysfs.devices_by_vendor(
                             '10de', physical_functions_only=False))

    def test_vendor_evidence_of_an_unidentified_device(self):
        pf = '0000:1b:00.0'
        os.unlink(os.path.join(self.devices, pf, 'vendor'))
        self.assertEqual('bound to nvidia', self.sysfs.vendor_evidence(
            pf, '10de', ('nvidia',)))
        # Not bound to the driver named: its VF still reads 10de.
        self.assertEqual('its VF 0000:1b:00.4 is of vendor 0x10de',
                         self.sysfs.vendor_evidence(pf, '10de', ('gim',)))
        self.garble(pf, 'subsystem_vendor', b'0x10de\n')
        self.assertEqual('its subsystem_vendor is 0x10de',
                         self.sysfs.vendor_evidence(pf, '10de', ('gim',)))
        self.assertIsNone(self.sysfs.vendor_evidence(pf, '1002', ('gim',)))
        self.assertIsNone(self.sysfs.vendor_evidence(
            '0000:02:00.0', '10de', ('nvidia',)))


class VirtfnsTest(SysfsTreeTestCase):
    """A PF's VFs: as many as ``sriov_numvfs`` says, whatever its
    ``virtfnN`` links say.
    """

    PF = '0000:1b:00.0'
    VFS = ('0000:1b:00.4', '0000:1b:00.5', '0000:1b:00.6', '0000:1b:00.7')

    def setUp(self):
        super().setUp()
        self.device(self.PF, sriov_numvfs='4', sriov_totalvfs='4',
                    sriov_offset='4', sriov_stride='1')
        self.device('0000:3b:00.0')
        self.device('0000:3b:00.4')
        self.link('0000:3b:00.4', 'physfn', '../0000:3b:00.0')
        for index, vf in enumerate(self.VFS):
            self.device(vf)
            self.link(vf, 'physfn', '../' + self.PF)
            self.link(self.PF, 'virtfn%d' % index, '../' + vf)
        self.sysfs = sysfs.Sysfs(self.root)

    def write(self, address, name, content):
        with open(os.path.join(self.devices, address, name), 'w') as f:
            f.write(content)

    def test_all_links_good(self):
        self.assertEqual(list(enumerate(self.VFS)),
                         self.sysfs.virtfns(self.PF))

    def test_a_link_missing_or_wrong_loses_no_vf(self):
        for target in (None, '../no-such-device', '../0000:3b:00.4',
                       '../0000:02:00.0', '../0000:1b:00.6'):
            self.link(self.PF, 'virtfn1', target)
            self.assertEqual(list(enumerate(self.VFS)),
                             self.sysfs.virtfns(self.PF), target)

    def test_a_vf_whose_physfn_names_nothing_keeps_its_link(self):
        # Found by a probe: a busy VF whose physfn link was missing or
        # dangled was listed under a stand-in, and its record was lost.
        for target in (None, '../no-such-device'):
            self.link(self.VFS[1], 'physfn', target)
            self.assertEqual(list(enumerate(self.VFS)),
                             self.sysfs.virtfns(self.PF), target)
        # Naming another PF, it is that PF's.
        self.link(self.VFS[1], 'physfn', '../0000:3b:00.0')
        vfs = dict(self.sysfs.virtfns(self.PF))
        self.assertNotIn(self.VFS[1], vfs.values())
        self.assertFalse(self.sysfs.exists(vfs[1]))

    def test_a_vf_gone_below_numvfs_is_listed_where_the_kernel_puts_it(self):
        for target in (None, '../no-such-device', '../0000:3b:00.4'):
            os.rename(os.path.join(self.devices, self.VFS[2]),
                      os.path.join(self.root, 'gone'))
            self.link(self.PF, 'virtfn2', target)
            self.assertEqual(list(enumerate(self.VFS)),
                             self.sysfs.virtfns(self.PF), target)
            self.assertFalse(self.sysfs.exists(self.VFS[2]))
            os.rename(os.path.join(self.root, 'gone'),
                      os.path.join(self.devices, self.VFS[2]))

    def test_without_offset_a_gone_vf_gets_a_name_that_is_no_address(self):
        os.unlink(os.path.join(self.devices, self.PF, 'sriov_offset'))
        os.rename(os.path.join(self.devices, self.VFS[3]),
                  os.path.join(self.root, 'gone'))
        self.link(self.PF, 'virtfn3', None)
        vfs = self.sysfs.virtfns(self.PF)
        self.assertEqual(list(enumerate(self.VFS[:3])), vfs[:3])
        self.assertEqual(3, vfs[3][0])
        self.assertFalse(sysfs.is_pci_address(vfs[3][1]))
        self.assertFalse(self.sysfs.exists(vfs[3][1]))
        # A dangling link names the VF the kernel made.
        self.link(self.PF, 'virtfn3', '../' + self.VFS[3])
        self.assertEqual(list(enumerate(self.VFS)),
                         self.sysfs.virtfns(self.PF))

    def test_vfs_past_numvfs_are_gone_unless_they_exist(self):
        self.write(self.PF, 'sriov_numvfs', '2\n')
        for vf in self.VFS[2:]:
            os.unlink(os.path.join(self.devices, vf, 'physfn'))
        self.assertEqual(list(enumerate(self.VFS[:2])),
                         self.sysfs.virtfns(self.PF))
        # Still there, theirs: they count (the kernel lowers numvfs last).
        self.link(self.VFS[2], 'physfn', '../' + self.PF)
        self.assertEqual(list(enumerate(self.VFS[:3])),
                         self.sysfs.virtfns(self.PF))

    def test_unreadable_numvfs_counts_what_can_be_found(self):
        for content in ('garbage\n', None):
            if content is None:
                os.unlink(os.path.join(self.devices, self.PF,
                                       'sriov_numvfs'))
            else:
                self.write(self.PF, 'sriov_numvfs', content)
            self.assertIsNone(self.sysfs.sriov_numvfs(self.PF))
            self.link(self.PF, 'virtfn0', None)
            self.link(self.PF, 'virtfn3', '../no-such-device')
            os.rename(os.path.join(self.devices, self.VFS[3]),
                      os.path.join(self.root, 'gone'))
            # virtfn0's VF found by its physfn; virtfn3's VF unknown.
            self.assertEqual(list(enumerate(self.VFS)),
                             self.sysfs.virtfns(self.PF))
            os.rename(os.path.join(self.root, 'gone'),
                      os.path.join(self.devices, self.VFS[3]))

    def test_vf_address_follows_offset_and_stride(self):
        self.assertEqual('0000:1b:00.7',
                         sysfs.vf_address('0000:1b:00.0', 4, 1, 3))
        self.assertEqual('0000:05:02.1',
                         sysfs.vf_address('0000:05:00.0', 16, 1, 1))
        self.assertEqual('0000:06:00.0',
                         sysfs.vf_address('0000:05:1f.7', 1, 1, 0))
        self.assertIsNone(sysfs.vf_address('0000:05:00.0', None, 1, 0))
        self.assertIsNone(sysfs.vf_address('0000:ff:1f.7', 1, 1, 0))
        self.assertIsNone(sysfs.vf_address('virtfn0', 1, 1, 0))
