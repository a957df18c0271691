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
"""libvirt node devices: XML parsing and libvirt's real test driver."""

import atexit
import shutil
import subprocess
import sys
import tempfile

import fixtures
import libvirt
import testtools

from cyborg_gpu_drivers.adapters import libvirt_nodedev
from gpu_partitions import reference_hosts

PARENT_XML = """
<device>
  <name>pci_0000_41_00_4</name>
  <parent>computer</parent>
  <capability type='pci'>
    <domain>0</domain><bus>65</bus><slot>0</slot><function>4</function>
    <capability type='phys_function'>
      <address domain='0x0000' bus='0x41' slot='0x00' function='0x0'/>
    </capability>
    <capability type='mdev_types'>
      <type id='nvidia-476'>
        <name>NVIDIA  A100D-20C</name>
        <deviceAPI>vfio-pci</deviceAPI>
        <availableInstances>1</availableInstances>
      </type>
      <type id='nvidia-999'>
        <deviceAPI>vfio-pci</deviceAPI>
        <availableInstances>-3</availableInstances>
      </type>
    </capability>
    <numa node='1'/>
  </capability>
</device>
"""

PF_PARENT_XML = """
<device>
  <name>pci_0000_3b_00_0</name>
  <capability type='pci'>
    <domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
    <capability type='mdev_types'>
      <type id='nvidia-222'><name>GRID T4-1B</name>
        <availableInstances>16</availableInstances></type>
    </capability>
    <numa node='-1'/>
  </capability>
</device>
"""

MDEV_XML = """
<device>
  <name>mdev_54ea9c25_1f1c_53d6_bd03_7447ae9406af_0000_01_00_4</name>
  <parent>pci_0000_01_00_4</parent>
  <capability type='mdev'>
    <type id='nvidia-476'/>
    <uuid>54ea9c25-1f1c-53d6-bd03-7447ae9406af</uuid>
  </capability>
</device>
"""

_SHARED = {}


def a100_uri():
    """pcie-a100 materialized once per process; tests only read it."""
    if 'uri' not in _SHARED:
        directory = tempfile.mkdtemp(prefix='vgpu-libvirt-')
        atexit.register(shutil.rmtree, directory, True)
        _SHARED['uri'] = reference_hosts.load('pcie-a100').materialize(
            directory).libvirt_uri
    return _SHARED['uri']


class ParseTest(testtools.TestCase):

    def test_vf_parent(self):
        parent = libvirt_nodedev.parse_parent(PARENT_XML)
        self.assertEqual(('pci_0000_41_00_4', '0000:41:00.4', '0000:41:00.0',
                          '0000:41:00.0', 1),
                         (parent.name, parent.address, parent.phys_function,
                          parent.physical_gpu, parent.numa_node))
        self.assertEqual(
            [libvirt_nodedev.MdevType('nvidia-476', 'NVIDIA A100D-20C',
                                      'vfio-pci', 1),
             libvirt_nodedev.MdevType('nvidia-999', 'nvidia-999',
                                      'vfio-pci', 0)],
            list(parent.types))

    def test_pf_parent_without_numa(self):
        parent = libvirt_nodedev.parse_parent(PF_PARENT_XML)
        self.assertEqual(('0000:3b:00.0', None, '0000:3b:00.0', None),
                         (parent.address, parent.phys_function,
                          parent.physical_gpu, parent.numa_node))
        self.assertEqual(16, parent.types[0].available_instances)

    def test_not_a_parent(self):
        self.assertIsNone(libvirt_nodedev.parse_parent(MDEV_XML))
        self.assertIsNone(libvirt_nodedev.parse_mdev(PARENT_XML))

    def test_mdev(self):
        self.assertEqual(
            libvirt_nodedev.Mdev(
                'mdev_54ea9c25_1f1c_53d6_bd03_7447ae9406af_0000_01_00_4',
                '54ea9c25-1f1c-53d6-bd03-7447ae9406af', 'nvidia-476',
                'pci_0000_01_00_4'),
            libvirt_nodedev.parse_mdev(MDEV_XML))


class _VanishingConnection:
    """A real test-driver connection whose first listed device vanishes
    between listing and reading, as an mdev deleted mid-scan does.
    """

    def __init__(self, connection):
        self._connection = connection

    def listAllDevices(self, flags):
        devices = self._connection.listAllDevices(flags)
        return [_Vanished()] + devices

    def close(self):
        self._connection.close()


class _Vanished:

    def name(self):
        return 'mdev_gone'

    def XMLDesc(self, flags):
        raise libvirt.libvirtError('Node device not found: mdev_gone')


class _Module:
    """libvirt itself, with openReadOnly wrapped."""

    def __getattr__(self, name):
        return getattr(libvirt, name)

    def openReadOnly(self, uri):
        return _VanishingConnection(libvirt.openReadOnly(uri))


class TestDriverScanTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.log = self.useFixture(fixtures.FakeLogger(
            name='cyborg_gpu_drivers'))

    def test_scan_of_the_a100_host(self):
        scan = libvirt_nodedev.NodeDevices(a100_uri()).scan()
        self.assertEqual(40, len(scan.parents))
        self.assertEqual({'0000:01:00.0': 20, '0000:41:00.0': 20},
                         {gpu: sum(1 for p in scan.parents
                                   if p.physical_gpu == gpu)
                          for gpu in ('0000:01:00.0', '0000:41:00.0')})
        first = scan.parents[0]
        self.assertEqual('0000:01:00.4', first.address)
        self.assertEqual(['nvidia-476'],
                         [m.type_id for m in scan.mdevs_on(first)])
        self.assertEqual(2, len(scan.mdevs))

    def test_vanished_device_costs_one_log_line(self):
        scan = libvirt_nodedev.NodeDevices(a100_uri(),
                                           module=_Module()).scan()
        self.assertEqual((40, 2), (len(scan.parents), len(scan.mdevs)))
        lines = [line for line in self.log.output.splitlines()
                 if 'vanished during the scan' in line]
        # One per listing (parents, then mdevs), each naming the error.
        self.assertEqual(2, len(lines))
        self.assertIn('mdev_gone', lines[0])

    def test_unreachable_libvirt(self):
        error = self.assertRaises(
            libvirt_nodedev.LibvirtUnavailable,
            libvirt_nodedev.NodeDevices('test:///nonexistent/node.xml').scan)
        self.assertIn('test:///nonexistent/node.xml', str(error))


class LazyImportTest(testtools.TestCase):

    def test_driver_import_does_not_import_libvirt(self):
        # The agent loads every enabled driver; hosts without mdev need
        # no libvirt-python.
        output = subprocess.run(
            [sys.executable, '-c',
             'import sys; import cyborg_gpu_drivers.nvidia_vgpu; '
             'print("libvirt" in sys.modules)'],
            capture_output=True, text=True, check=True).stdout
        self.assertEqual('False', output.strip().splitlines()[-1])
