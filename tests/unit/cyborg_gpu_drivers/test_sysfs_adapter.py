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

import os

import fixtures
import testtools

from cyborg_gpu_drivers.adapters import sysfs


class SysfsTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.devices = os.path.join(self.root, 'bus', 'pci', 'devices')
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

    def device(self, address, **files):
        path = os.path.join(self.devices, address)
        os.makedirs(path)
        for name, content in files.items():
            with open(os.path.join(path, name), 'w') as f:
                f.write(content + '\n')

    def link(self, address, name, target):
        os.symlink(target, os.path.join(self.devices, address, name))

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

    def test_devices_of_vendor_skips_vfs(self):
        self.assertEqual(['0000:1b:00.0'],
                         self.sysfs.devices_of_vendor('10de'))
        self.assertEqual(['0000:1b:00.0', '0000:1b:00.4'],
                         self.sysfs.devices_of_vendor(
                             '10de', physical_functions_only=False))

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
            self.assertEqual([], self.sysfs.devices_of_vendor('10de'))
            self.assertEqual(['0000:1b:00.0'],
                             self.sysfs.unidentified_devices(), content)

    def test_unidentified_devices_skip_vfs_and_identified_ones(self):
        self.assertEqual([], self.sysfs.unidentified_devices())
        os.unlink(os.path.join(self.devices, '0000:1b:00.4', 'vendor'))
        self.assertEqual([], self.sysfs.unidentified_devices())
        self.assertEqual(['0000:1b:00.4'], self.sysfs.unidentified_devices(
            physical_functions_only=False))

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
