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
"""The sysfs tree and libvirt XML a reference host materializes to."""

import os

import fixtures
import testtools

from gpu_partitions import reference_hosts

try:
    import libvirt
except ImportError:  # libvirt-python needs libvirt-dev to build
    libvirt = None


def read(path):
    with open(path) as stream:
        return stream.read()


class MaterializedHost(testtools.TestCase):
    """Materializes ``HOST`` once for the class: the tests only read it."""

    HOST = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._tmp = fixtures.TempDir()
        cls._tmp.setUp()
        cls.env = reference_hosts.load(cls.HOST).materialize(cls._tmp.path)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanUp()
        super().tearDownClass()

    def device(self, address, *parts):
        return os.path.join(self.env.sysfs_root, 'bus/pci/devices', address,
                            *parts)


class TestHgxH100Tree(MaterializedHost):

    HOST = 'hgx-h100'

    def test_environment(self):
        self.assertEqual(os.path.join(self.env.directory, 'sys'),
                         self.env.sysfs_root)
        self.assertIsNone(self.env.libvirt_uri)
        self.assertIsNone(self.env.amdsmi)
        self.assertEqual('hgx-h100', self.env.host.name)

    def test_pf_attributes(self):
        self.assertEqual('0x10de\n', read(self.device('0000:1b:00.0',
                                                      'vendor')))
        self.assertEqual('0x2330\n', read(self.device('0000:1b:00.0',
                                                      'device')))
        self.assertEqual('0x030200\n', read(self.device('0000:1b:00.0',
                                                        'class')))
        self.assertEqual('0\n', read(self.device('0000:61:00.0',
                                                 'numa_node')))
        self.assertEqual('1\n', read(self.device('0000:9d:00.0',
                                                 'numa_node')))
        self.assertEqual('56-111,168-223\n',
                         read(self.device('0000:df:00.0', 'local_cpulist')))
        self.assertEqual('32\n', read(self.device('0000:1b:00.0',
                                                  'sriov_totalvfs')))
        self.assertEqual('32\n', read(self.device('0000:1b:00.0',
                                                  'sriov_numvfs')))
        self.assertEqual('2330\n', read(self.device('0000:1b:00.0',
                                                    'sriov_vf_device')))

    def test_bus_entries_link_to_real_directories(self):
        bus_entry = self.device('0000:43:00.0')
        self.assertTrue(os.path.islink(bus_entry))
        self.assertEqual('../../../devices/pci0000:00/0000:43:00.0',
                         os.readlink(bus_entry))
        self.assertTrue(os.path.isdir(os.path.realpath(bus_entry)))
        gpus = [name for name in
                os.listdir(os.path.join(self.env.sysfs_root,
                                        'bus/pci/devices'))
                if read(self.device(name, 'device')) == '0x2330\n' and
                not os.path.exists(self.device(name, 'physfn'))]
        self.assertEqual(8, len(gpus))

    def test_virtfn_and_physfn_links(self):
        virtfn = self.device('0000:1b:00.0', 'virtfn0')
        self.assertEqual('../0000:1b:00.4', os.readlink(virtfn))
        self.assertEqual(os.path.realpath(self.device('0000:1b:00.4')),
                         os.path.realpath(virtfn))
        last = self.device('0000:1b:00.0', 'virtfn31')
        self.assertEqual('../0000:1b:04.3', os.readlink(last))
        self.assertEqual(
            os.path.realpath(self.device('0000:1b:00.0')),
            os.path.realpath(self.device('0000:1b:04.3', 'physfn')))

    def test_driver_and_iommu_group_links(self):
        driver = self.device('0000:1b:00.0', 'driver')
        self.assertEqual('nvidia', os.path.basename(os.readlink(driver)))
        self.assertTrue(os.path.isdir(driver))
        self.assertTrue(os.path.islink(os.path.join(
            self.env.sysfs_root, 'bus/pci/drivers/nvidia/0000:1b:00.5')))
        group = os.readlink(self.device('0000:1b:00.5', 'iommu_group'))
        self.assertEqual('101', os.path.basename(group))
        self.assertEqual(
            ['0000:1b:00.5'],
            os.listdir(os.path.join(self.device('0000:1b:00.5'),
                                    'iommu_group', 'devices')))
        self.assertEqual('nvidia-nvswitch', os.path.basename(
            os.readlink(self.device('0000:05:00.0', 'driver'))))

    def test_vendor_vfio_files(self):
        # GPU 0 holds one 7g.80gb instance: virtfn0 has its MIG-backed type.
        model = self.env.host.data['nvml']['models']['H100-SXM5-80GB']
        full = [vgpu_type for vgpu_type in model['vgpu_types']
                if vgpu_type['gpu_instance_profile_id'] == 0]
        self.assertEqual('NVIDIA H100XM-7-80C', full[0]['name'])
        self.assertEqual('%d\n' % full[0]['id'], read(self.device(
            '0000:1b:00.4', 'nvidia/current_vgpu_type')))
        self.assertEqual('0\n', read(self.device(
            '0000:1b:00.5', 'nvidia/current_vgpu_type')))
        self.assertEqual('ID    : vGPU Name\n', read(self.device(
            '0000:1b:00.5', 'nvidia/creatable_vgpu_types')))


class TestAwkwardTree(MaterializedHost):

    HOST = 'awkward'

    def test_numa_node_minus_one(self):
        for address in ('0000:01:00.0', '0000:02:00.0', '0000:03:00.4'):
            self.assertEqual('-1\n', read(self.device(address, 'numa_node')))

    def test_vanished_vf_leaves_a_dangling_virtfn(self):
        virtfn = self.device('0000:03:00.0', 'virtfn5')
        self.assertTrue(os.path.islink(virtfn))
        self.assertEqual('../0000:03:01.1', os.readlink(virtfn))
        self.assertFalse(os.path.exists(virtfn))
        self.assertFalse(os.path.lexists(self.device('0000:03:01.1')))
        # Its siblings are still there.
        self.assertTrue(os.path.isdir(self.device('0000:03:00.0',
                                                  'virtfn4')))
        self.assertTrue(os.path.isdir(self.device('0000:03:00.0',
                                                  'virtfn6')))
        self.assertEqual('8\n', read(self.device('0000:03:00.0',
                                                 'sriov_numvfs')))

    def test_gpu_without_vfs_has_no_virtfn(self):
        names = os.listdir(self.device('0000:01:00.0'))
        self.assertFalse([name for name in names
                          if name.startswith('virtfn')])
        self.assertNotIn('sriov_numvfs', names)


class TestA100MdevTree(MaterializedHost):

    HOST = 'pcie-a100'

    def test_every_vf_is_an_mdev_parent(self):
        parents = os.listdir(os.path.join(self.env.sysfs_root,
                                          'class/mdev_bus'))
        self.assertEqual(40, len(parents))
        self.assertIn('0000:41:02.7', parents)
        self.assertNotIn('0000:41:00.0', parents)
        types_dir = os.path.join(self.env.sysfs_root, 'class/mdev_bus',
                                 '0000:41:00.4', 'mdev_supported_types')
        self.assertEqual(['nvidia-%d' % i for i in range(472, 479)],
                         sorted(os.listdir(types_dir)))
        self.assertEqual('NVIDIA A100D-4C\n',
                         read(os.path.join(types_dir, 'nvidia-472/name')))
        self.assertIn('framebuffer=4096M',
                      read(os.path.join(types_dir,
                                        'nvidia-472/description')))

    def test_created_mdevs(self):
        mdevs = os.path.join(self.env.sysfs_root, 'bus/mdev/devices')
        self.assertEqual(2, len(os.listdir(mdevs)))
        for uuid in os.listdir(mdevs):
            mdev_type = os.path.realpath(os.path.join(mdevs, uuid,
                                                      'mdev_type'))
            self.assertEqual('nvidia-476', os.path.basename(mdev_type))
            self.assertEqual('NVIDIA A100D-20C\n',
                             read(os.path.join(mdev_type, 'name')))
        # The parents of those mdevs offer nothing more; their siblings
        # still offer the type already in use on the GPU, and only it.
        available = 'mdev_supported_types/%s/available_instances'
        self.assertEqual('0\n', read(self.device('0000:01:00.4',
                                                 available % 'nvidia-476')))
        self.assertEqual('1\n', read(self.device('0000:01:00.6',
                                                 available % 'nvidia-476')))
        self.assertEqual('0\n', read(self.device('0000:01:00.6',
                                                 available % 'nvidia-472')))

    def test_libvirt_test_driver_lists_mdev_parents(self):
        if libvirt is None:
            self.skipTest('libvirt-python is not installed')
        self.assertTrue(self.env.libvirt_uri.startswith('test:///'))
        conn = libvirt.open(self.env.libvirt_uri)
        self.addCleanup(conn.close)
        parents = conn.listAllDevices(
            libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV_TYPES)
        self.assertEqual(40, len(parents))
        names = sorted(device.name() for device in parents)
        self.assertEqual('pci_0000_01_00_4', names[0])
        xml = conn.nodeDeviceLookupByName('pci_0000_41_00_4').XMLDesc()
        self.assertIn("<type id='nvidia-472'>", xml)
        self.assertIn('<name>NVIDIA A100D-4C</name>', xml)
        self.assertIn('<availableInstances>1</availableInstances>', xml)
        mdevs = conn.listAllDevices(
            libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_MDEV)
        self.assertEqual(2, len(mdevs))
        self.assertIn("<type id='nvidia-476'/>", mdevs[0].XMLDesc())


class TestMi300xTree(MaterializedHost):

    HOST = 'mi300x-cpx'

    def test_gim_files_and_vfs(self):
        pf = '0000:05:00.0'
        self.assertEqual('gim', os.path.basename(
            os.readlink(self.device(pf, 'driver'))))
        self.assertEqual('CPX\n', read(self.device(
            pf, 'spatial_partition_mode')))
        memory = read(self.device(pf, 'memory_partition_mode')).splitlines()
        self.assertEqual(['memory_partition_mode: NPS4', 'numa_count: 4'],
                         memory[:2])
        self.assertEqual(6, len(memory))
        self.assertEqual('8\n', read(self.device(pf, 'sriov_numvfs')))
        vf = os.path.realpath(self.device(pf, 'virtfn7'))
        self.assertEqual('0000:05:02.7', os.path.basename(vf))
        self.assertEqual('0x74b5\n', read(os.path.join(vf, 'device')))
        self.assertEqual('vfio-pci', os.path.basename(
            os.readlink(os.path.join(vf, 'driver'))))
        self.assertEqual(8, len(self.env.amdsmi['gpus']))


class TestMaterializeTwice(testtools.TestCase):

    def test_side_by_side_environments_are_independent(self):
        host = reference_hosts.load('mi300x-spx')
        first = host.materialize(self.useFixture(fixtures.TempDir()).path)
        second = host.materialize(self.useFixture(fixtures.TempDir()).path)
        self.assertNotEqual(first.sysfs_root, second.sysfs_root)
        self.assertIsNot(first.nvml, second.nvml)
        self.assertEqual(
            sorted(os.listdir(os.path.join(first.sysfs_root,
                                           'bus/pci/devices'))),
            sorted(os.listdir(os.path.join(second.sysfs_root,
                                           'bus/pci/devices'))))

    def test_refuses_a_directory_already_materialized(self):
        host = reference_hosts.load('mi300x-spx')
        directory = self.useFixture(fixtures.TempDir()).path
        host.materialize(directory)
        error = self.assertRaises(FileExistsError, host.materialize,
                                  directory)
        self.assertIn('already holds a materialized host', str(error))
