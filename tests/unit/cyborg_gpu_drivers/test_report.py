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
"""Inventory -> Cyborg driver objects, and the never-raising discover()."""

import json
import uuid

from cyborg.objects.driver_objects import driver_device
import testtools

from cyborg_gpu_drivers import base
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import report
import placement_traits as names


def h100(healthy=True, busy=1):
    vfs = ['0000:1b:00.%d' % f for f in range(4, 8)]
    handles = [inventory.AttachHandle(inventory.PCI, vf, in_use=i < busy)
               for i, vf in enumerate(vfs)]
    return inventory.Gpu(
        address='0000:1b:00.0', vendor_id='10de', device_id='2330',
        model='NVIDIA H100 80GB HBM3', memory_mib=81559, numa_node=0,
        link_domain='0', healthy=healthy,
        traits=[names.vendor_trait('10de'), names.numa_node_trait(0)],
        slices=[inventory.Slice(
            name='1g.10gb', resource_class=names.mig_resource_class('1g.10gb'),
            traits=[names.mig_profile_trait('1g.10gb')], handles=handles,
            total=len(handles))])


class ReportTest(testtools.TestCase):

    def test_one_device_per_gpu_one_deployable_per_slice(self):
        host = inventory.HostInventory('compute-1', [h100()])
        [device] = report.to_driver_devices(host, 'TEST')
        self.assertEqual('GPU', device.type)
        self.assertEqual({'bus': '1b', 'device': '00', 'domain': '0000',
                          'function': '0'},
                         json.loads(device.controlpath_id.cpid_info))
        [deployable] = device.deployable_list
        self.assertEqual('compute-1_0000_1b_00_0_1g_10gb', deployable.name)
        self.assertEqual(4, deployable.num_accelerators)
        attributes = [(a.key, a.value) for a in deployable.attribute_list]
        self.assertEqual(('rc', 'CUSTOM_MIG_1G_10GB'), attributes[0])
        self.assertEqual(
            [('trait0', 'CUSTOM_GPU_MIG_PROFILE_1G_10GB'),
             ('trait1', 'CUSTOM_GPU_NUMA_NODE_0'),
             ('trait2', 'CUSTOM_GPU_PCI_0000_1B_00_0'),
             ('trait3', 'CUSTOM_GPU_VENDOR_NVIDIA'),
             ('trait4', 'OWNER_CYBORG')], attributes[1:])
        self.assertEqual(
            ['{"bus": "1b", "device": "00", "domain": "0000", '
             '"function": "%d"}' % f for f in range(4, 8)],
            [h.attach_info for h in deployable.attach_handle_list])
        self.assertEqual([True, False, False, False],
                         [h.in_use for h in deployable.attach_handle_list])

    def test_report_is_deterministic(self):
        first = report.to_driver_devices(
            inventory.HostInventory('h', [h100()]), 'TEST')
        second = report.to_driver_devices(
            inventory.HostInventory('h', [h100()]), 'TEST')
        self.assertEqual([d.obj_to_primitive() for d in first],
                         [d.obj_to_primitive() for d in second])

    def test_objects_survive_rpc_serialisation(self):
        [device] = report.to_driver_devices(
            inventory.HostInventory('h', [h100()]), 'TEST')
        copy = driver_device.DriverDevice.obj_from_primitive(
            device.obj_to_primitive())
        self.assertEqual(device.deployable_list[0].name,
                         copy.deployable_list[0].name)

    def unhealthy(self, busy, allocated):
        gpu = h100(healthy=False, busy=busy)
        gpu.slices[0].allocated = allocated
        [device] = report.to_driver_devices(
            inventory.HostInventory('h', [gpu]), 'TEST')
        return device

    def test_unhealthy_gpu_offers_only_what_is_in_use_or_allocated(self):
        device = self.unhealthy(busy=2, allocated=1)
        self.assertEqual(2, device.deployable_list[0].num_accelerators)
        self.assertEqual(4, len(device.deployable_list[0].attach_handle_list))
        # A shut-off guest: allocated in Placement, nothing running.
        device = self.unhealthy(busy=0, allocated=3)
        self.assertEqual(3, device.deployable_list[0].num_accelerators)

    def test_unhealthy_gpu_with_unknown_allocations_keeps_its_total(self):
        # Never below what Placement may hold: the whole last total.
        device = self.unhealthy(busy=1, allocated=None)
        self.assertEqual(4, device.deployable_list[0].num_accelerators)

    def test_unhealthy_gpu_with_nothing_in_use_has_no_provider(self):
        # Placement refuses a total of 0; the provider goes instead, which
        # Placement allows: nothing is allocated on it.
        self.assertEqual([], self.unhealthy(busy=0, allocated=0)
                         .deployable_list)

    def test_mdev_handle(self):
        handle = inventory.AttachHandle(inventory.MDEV, '0000:41:00.4',
                                        mdev_type='nvidia-472',
                                        mark='nvidia-472_0')
        self.assertEqual(
            {'asked_type': 'nvidia-472', 'bus': '41', 'device': '00',
             'domain': '0000', 'function': '4', 'vgpu_mark': 'nvidia-472_0'},
            json.loads(report.attach_info(handle)))

    def test_provider_uuid_follows_cyborg_rule(self):
        # Cyborg's conductor names the provider uuid3(DNS, deployable name),
        # so a stable name is a stable provider UUID.
        [device] = report.to_driver_devices(
            inventory.HostInventory('h', [h100()]), 'TEST')
        name = device.deployable_list[0].name
        self.assertEqual(uuid.uuid3(uuid.NAMESPACE_DNS, name),
                         uuid.uuid3(uuid.NAMESPACE_DNS,
                                    'h_0000_1b_00_0_1g_10gb'))


class FlakyDriver(base.GpuPartitionDriver):
    DRIVER_NAME = 'FLAKY'

    def __init__(self, scans):
        super().__init__(hostname='h')
        self.scans = list(scans)
        # No Placement here: the report as a tool prints it.
        self.reserves_in_placement = False

    def collect(self):
        scan = self.scans.pop(0)
        if isinstance(scan, Exception):
            raise scan
        return scan


class DiscoverNeverRaisesTest(testtools.TestCase):

    def test_failure_before_any_good_scan_reports_nothing(self):
        driver = FlakyDriver([RuntimeError('boom')])
        self.assertEqual([], driver.discover())

    def test_failure_resends_last_good_report_as_stubs(self):
        good = inventory.HostInventory('h', [h100()])
        driver = FlakyDriver([good, RuntimeError('boom'), good])
        [first] = driver.discover()
        self.assertFalse(first.stub)
        [again] = driver.discover()
        self.assertTrue(again.stub)
        self.assertEqual(first.deployable_list[0].name,
                         again.deployable_list[0].name)
        [fresh] = driver.discover()
        self.assertFalse(fresh.stub)

    def test_base_answers_the_rest_of_cyborgs_interface(self):
        driver = FlakyDriver([])
        self.assertFalse(driver.update('cp', 'image'))
        self.assertEqual({}, driver.get_stats())


class StubTest(testtools.TestCase):

    def test_a_stub_gpu_is_sent_as_a_cyborg_stub(self):
        gpu = h100()
        gpu.stub = True
        [device] = report.to_driver_devices(
            inventory.HostInventory('h', [gpu]), 'TEST')
        self.assertTrue(device.stub)
