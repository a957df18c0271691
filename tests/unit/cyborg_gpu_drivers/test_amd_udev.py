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
"""The AMD driver's pyudev path over a umockdev testbed.

umockdev fakes /sys for libudev and for plain file calls through an
LD_PRELOAD library, so the whole test process must start under it::

    umockdev-wrapper python -m stestr --test-path tests/unit run test_amd_udev

(tox: ``tox -e umockdev``). Outside such a process every test here is
skipped. Needs Debian's umockdev, libumockdev0 and gir1.2-umockdev-1.0,
PyGObject importable by the test Python, and pyudev.
"""

import os

from oslo_config import cfg
import testtools

from cyborg_gpu_drivers.adapters import sysfs
from cyborg_gpu_drivers.adapters import udev
from cyborg_gpu_drivers import amd_mxgpu
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import report
from tests.unit.cyborg_gpu_drivers import base

CONF = cfg.CONF
GIM_PF = '0000:05:00.0'
FREE_VF = '0000:05:02.0'
OPEN_VF = '0000:05:02.1'
AMDGPU_VF = '0000:05:02.2'
GONE_VF = '0000:05:02.3'
# CPX/NPS4 on an MI300X is 8 VFs (GIM's release notes): four more, free.
MORE_VFS = ('0000:05:02.4', '0000:05:02.5', '0000:05:02.6', '0000:05:02.7')
AMDGPU_PF = '0000:26:00.0'
NVIDIA_PF = '0000:1b:00.0'


def _umockdev():
    """The UMockdev GI module, or None when not in a mock environment."""
    if 'libumockdev-preload' not in os.environ.get('LD_PRELOAD', ''):
        return None
    try:
        import gi
        gi.require_version('UMockdev', '1.0')
        from gi.repository import UMockdev
    except (ImportError, ValueError):
        return None
    return UMockdev


UMOCKDEV = _umockdev()
PYUDEV = udev.import_pyudev()


@testtools.skipIf(UMOCKDEV is None or PYUDEV is None,
                  'not under umockdev-wrapper with PyGObject and pyudev')
class UdevPathTest(base.DriverTestCase):

    def setUp(self):
        # Placement as the agent's driver reads it is the base class's
        # stand-in (the GPU's provider not there yet): without one, the
        # busy GPU would be a stub (what holds its units unknown).
        super().setUp()
        self.conf.config(group='amd_mxgpu', use_amdsmi=False)
        self.bed = UMOCKDEV.Testbed.new()
        self.addCleanup(self._drop_bed)
        self.root = self.bed.get_root_dir()
        self.paths = {}
        self.pci(GIM_PF, '0x74a1', 'gim', numa_node='1', files={
            'sriov_numvfs': '8\n', 'sriov_offset': '16\n',
            'sriov_stride': '1\n',
            'spatial_partition_mode': 'CPX\n',
            'memory_partition_mode': (
                'memory_partition_mode: NPS4\nnuma_count: 4\n'
                'NUMA0 type=HBM start=0x0 end=0xbffffffff\n'),
            'xgmi_hive_info/xgmi_hive_id': '4660\n'})
        self.pci(FREE_VF, '0x74b5', 'vfio-pci', files={'enable': '0\n'})
        self.pci(OPEN_VF, '0x74b5', 'vfio-pci', files={'enable': '1\n'})
        self.pci(AMDGPU_VF, '0x74b5', 'amdgpu')
        for vf in MORE_VFS:
            self.pci(vf, '0x74b5', 'vfio-pci', files={'enable': '0\n'})
        for index, vf in enumerate((FREE_VF, OPEN_VF, AMDGPU_VF, GONE_VF)
                                   + MORE_VFS):
            self.link(GIM_PF, 'virtfn%d' % index, '../' + vf)
            if vf != GONE_VF:
                self.link(vf, 'physfn', '../' + GIM_PF)
        self.pci(AMDGPU_PF, '0x74a1', 'amdgpu')
        self.pci(NVIDIA_PF, '0x2330', 'nvidia', vendor='0x10de')

    def _drop_bed(self):
        for device in list(self.paths.values()):
            self.bed.remove_device(device)
        self.bed = None

    def pci(self, address, device, driver, vendor='0x1002', numa_node='0',
            files=None):
        attributes = ['vendor', vendor, 'device', device,
                      'class', '0x120000', 'numa_node', numa_node]
        path = self.bed.add_device(
            'pci', address, None, attributes,
            ['PCI_SLOT_NAME', address,
             'PCI_ID', '%s:%s' % (vendor[2:].upper(), device[2:].upper())])
        self.paths[address] = path
        for name, content in (files or {}).items():
            self.bed.set_attribute(path, name, content)
        drivers = os.path.join(self.root, 'sys', 'bus', 'pci', 'drivers',
                               driver)
        os.makedirs(drivers, exist_ok=True)
        os.symlink(os.path.relpath(drivers, self.root + path),
                   os.path.join(self.root + path, 'driver'))

    def link(self, address, name, target):
        os.symlink(target, os.path.join(self.root + self.paths[address],
                                        name))

    def test_adapter_reads_through_libudev(self):
        pci = udev.UdevPci(PYUDEV)
        self.assertEqual(([GIM_PF, AMDGPU_PF], []),
                         pci.devices_by_vendor('1002'))
        self.assertEqual('gim', pci.driver(GIM_PF))
        self.assertEqual(1, pci.numa_node(GIM_PF))
        self.assertEqual('74a1', pci.device_id(GIM_PF))
        self.assertEqual(
            [(0, FREE_VF), (1, OPEN_VF), (2, AMDGPU_VF), (3, GONE_VF)]
            + [(4 + i, vf) for i, vf in enumerate(MORE_VFS)],
            pci.virtfns(GIM_PF))
        self.assertEqual(GIM_PF, pci.physfn(OPEN_VF))
        self.assertFalse(pci.exists(GONE_VF))
        self.assertIsNone(pci.read(GONE_VF, 'vendor'))
        self.assertIsNone(pci.read(GIM_PF, 'no_such_attribute'))

    def test_driver_over_udev(self):
        driver = amd_mxgpu.AmdMxgpuDriver(hostname='mi300x-udev')
        self.assertIsInstance(driver._pci, udev.UdevPci)
        # GONE_VF is one of the 8 (sriov_numvfs) but cannot be read, and
        # no report since the agent started holds its unit: a stub.
        devices = driver.discover()
        self.assertEqual([True, True], [device.stub for device in devices])
        self.assertIn('AMD GPU %s: VFs %s cannot be read' % (
            GIM_PF, GONE_VF), self.log.output)
        self.pci(GONE_VF, '0x74b5', 'vfio-pci', files={'enable': '0\n'})
        self.link(GONE_VF, 'physfn', '../' + GIM_PF)
        driver.discover()
        # It vanishes again mid-scan: its last report stays.
        self.bed.remove_device(self.paths.pop(GONE_VF))
        devices = {device.controlpath_id.cpid_info: device
                   for device in driver.discover()}
        self.assertEqual(2, len(devices))
        gpu = [d for d in devices.values() if not d.stub]
        stub = [d for d in devices.values() if d.stub]
        self.assertEqual(1, len(gpu))
        self.assertEqual(1, len(stub))
        self.assertEqual([], stub[0].deployable_list)
        [deployable] = gpu[0].deployable_list
        self.assertEqual('mi300x-udev_0000_05_00_0_MI300X-CPX',
                         deployable.name)
        self.assertEqual(7, deployable.num_accelerators)
        attributes = sorted(a.value for a in deployable.attribute_list)
        for name in ('CUSTOM_GPU_VF_MI300X_CPX',
                     'CUSTOM_GPU_COMPUTE_PARTITION_CPX',
                     'CUSTOM_GPU_MEMORY_PARTITION_NPS4',
                     'CUSTOM_GPU_NUMA_NODE_1', 'CUSTOM_GPU_XGMI_HIVE_1234'):
            self.assertIn(name, attributes)
        handles = {h.attach_info: h.in_use
                   for h in deployable.attach_handle_list}
        self.assertEqual(7, len(handles))
        inventory_handles = driver.collect().gpus
        by_address = {g.address: g for g in inventory_handles}
        self.assertEqual(
            [inventory.AttachHandle(inventory.PCI, FREE_VF),
             inventory.AttachHandle(inventory.PCI, OPEN_VF, in_use=True),
             inventory.AttachHandle(inventory.PCI, GONE_VF)]
            + [inventory.AttachHandle(inventory.PCI, vf) for vf in MORE_VFS],
            by_address[GIM_PF].slices[0].handles)
        output = self.log.output
        self.assertIn('VF %s (virtfn2 of %s) is bound to amdgpu' % (
            AMDGPU_VF, GIM_PF), output)
        self.assertIn('VF %s (virtfn3 of %s) vanished during the scan' % (
            GONE_VF, GIM_PF), output)
        self.assertIn('AMD GPU %s: bound to amdgpu, not gim' % AMDGPU_PF,
                      output)

    def test_pf_whose_vendor_cannot_be_read_is_still_reported(self):
        # Every VF readable here (GONE_VF back, not on vfio-pci).
        self.pci(GONE_VF, '0x74b5', 'amdgpu')
        self.link(GONE_VF, 'physfn', '../' + GIM_PF)
        # Garbled at the agent's start: no vendor lists the PF, and
        # Cyborg's conductor would delete what it holds.
        with open(os.path.join(self.root + self.paths[GIM_PF], 'vendor'),
                  'wb') as f:
            f.write(b'\xff\xfe\n')
        pci = udev.UdevPci(PYUDEV)
        self.assertEqual(([AMDGPU_PF], [GIM_PF]),
                         pci.devices_by_vendor('1002'))
        devices = amd_mxgpu.AmdMxgpuDriver(hostname='mi300x-udev').discover()
        by_stub = {device.stub: device for device in devices}
        self.assertEqual(2, len(devices))
        [deployable] = by_stub[False].deployable_list
        self.assertEqual(6, deployable.num_accelerators)
        self.assertEqual(1, len([h for h in deployable.attach_handle_list
                                 if h.in_use]))
        self.assertIn('PCI device %s: its vendor cannot be read, but bound '
                      'to gim' % GIM_PF, self.log.output)
        # Its driver link gone too: its AMD VFs keep it, as a stub.
        os.unlink(os.path.join(self.root + self.paths[GIM_PF], 'driver'))
        devices = amd_mxgpu.AmdMxgpuDriver(hostname='mi300x-udev').discover()
        self.assertEqual(2, len(devices))
        self.assertTrue(all(device.stub for device in devices))
        self.assertIn('PCI device %s: its vendor cannot be read, but its VF '
                      '%s is of vendor 0x1002' % (GIM_PF, FREE_VF),
                      self.log.output)

    def test_vendor_reads_as_on_sysfs(self):
        # One reader of ``vendor`` for every list: an id that is AMD's
        # in another spelling is AMD's, as on sysfs (libudev's exact match
        # of "0x1002" once left it out of every list).
        sysfs_pci = sysfs.Sysfs(os.path.join(self.root, 'sys'))
        for spelling in ('0X1002', '1002'):
            with open(os.path.join(self.root + self.paths[GIM_PF],
                                   'vendor'), 'w') as f:
                f.write(spelling + '\n')
            self.assertEqual(([GIM_PF, AMDGPU_PF], []),
                             udev.UdevPci(PYUDEV).devices_by_vendor('1002'),
                             spelling)
            self.assertEqual(sysfs_pci.devices_by_vendor('1002'),
                             udev.UdevPci(PYUDEV).devices_by_vendor('1002'),
                             spelling)
        devices = amd_mxgpu.AmdMxgpuDriver(hostname='mi300x-udev').discover()
        self.assertEqual(2, len(devices))
        self.assertNotIn('its vendor cannot be read', self.log.output)

    def test_open_vf_whose_driver_link_is_lost_stays_in_use(self):
        self.pci(GONE_VF, '0x74b5', 'amdgpu')
        self.link(GONE_VF, 'physfn', '../' + GIM_PF)
        link = os.path.join(self.root + self.paths[OPEN_VF], 'driver')
        for target in ('../no-such-driver', None):
            os.unlink(link)
            if target is not None:
                os.symlink(target, link)
            self.assertIsNone(udev.UdevPci(PYUDEV).driver(OPEN_VF), target)
            devices = amd_mxgpu.AmdMxgpuDriver(
                hostname='mi300x-udev').discover()
            [deployable] = [d for d in devices if not d.stub][0] \
                .deployable_list
            self.assertIn(
                report.attach_info(inventory.AttachHandle(
                    inventory.PCI, OPEN_VF)),
                [h.attach_info for h in deployable.attach_handle_list
                 if h.in_use], target)

    def test_busy_vf_whose_virtfn_link_is_lost_stays_in_use(self):
        self.pci(GONE_VF, '0x74b5', 'amdgpu')
        self.link(GONE_VF, 'physfn', '../' + GIM_PF)
        link = os.path.join(self.root + self.paths[GIM_PF], 'virtfn1')
        for target in ('../no-such-device', None, '../' + FREE_VF):
            if os.path.lexists(link):
                os.unlink(link)
            if target is not None:
                os.symlink(target, link)
            devices = amd_mxgpu.AmdMxgpuDriver(
                hostname='mi300x-udev').discover()
            [deployable] = [d for d in devices if not d.stub][0] \
                .deployable_list
            self.assertEqual(6, deployable.num_accelerators, target)
            self.assertEqual(
                [report.attach_info(inventory.AttachHandle(
                    inventory.PCI, OPEN_VF))],
                [h.attach_info for h in deployable.attach_handle_list
                 if h.in_use], target)
