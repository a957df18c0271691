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
"""The drivers' faults through Cyborg's real conductor and Placement.

Each case is reported by Cyborg's ``report_data`` into the in-process
Placement, next to a server holding a GPU slice. Every case must leave:
``report_data`` returning (no ``ResourceProviderInUse``, no traceback),
every provider of the host in place, every allocation where it was (0
lost, 0 doubled), and the next good report restoring the host.
"""

import copy

import fixtures

from cyborg_gpu_drivers import amd_mxgpu
from cyborg_gpu_drivers import nvidia_mig
from cyborg_gpu_drivers import nvidia_vgpu
from gpu_partitions.cloud import harness
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_amdsmi
from gpu_partitions.reference_hosts import fake_nvml
import placement_traits as names
from tests.functional import base
from tests.unit.cyborg_gpu_drivers import faults
from tests.unit.cyborg_gpu_drivers import test_amd_fault_matrix as amd_faults

DRIVERS = (nvidia_mig.NvidiaMigDriver, nvidia_vgpu.NvidiaVgpuDriver)


class DriverFaultsTestCase(base.GpuCloudTestCase):

    HOST = None

    def setUp(self):
        super().setUp()
        # No case hangs: a loaded test machine must not turn a slow read
        # into a timeout.
        self.flags(group='gpu_partitions', gpu_scan_timeout=60)
        self.host = reference_hosts.load(self.HOST)
        self.env = self.host.materialize(
            self.useFixture(fixtures.TempDir()).path)
        self.section = self.host.data['nvml']

    def drivers(self, nvml):
        return [cls(hostname=self.host.hostname, nvml=nvml,
                    sysfs_root=self.env.sysfs_root,
                    libvirt_uri=self.env.libvirt_uri, read_only=True)
                for cls in DRIVERS]

    def discover(self, drivers):
        devices = []
        for driver in drivers:
            devices.extend(driver.discover())
        return devices

    def state(self, server):
        """What must survive every fault: the providers, the server's
        allocations and the project's usages (0 lost, 0 doubled).
        """
        return (sorted(self.provider_names().values()),
                self.allocations(server),
                self.placement_get('/usages?project_id=%s' % server[
                    'tenant_id'])['usages'])


class TestColdStartMatrix(DriverFaultsTestCase):
    """The issue's matrix: 9 NVML calls x error classes, one of the 8
    GPUs of hgx-h100 faulted, each at a cold start (agent restart).
    """

    HOST = 'hgx-h100'
    GPU_INDEX = 0

    def run_matrix(self, error):
        good = self.discover(self.drivers(fake_nvml.FakeNvml(self.section)))
        self.add_gpu_host(self.host.hostname, good)
        rc = names.mig_resource_class('3g.40gb')
        server = self.boot(self.create_flavor(harness.gpu_extra_specs(rc)))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        before = self.state(server)
        for function in faults.ISSUE_CALLS:
            where = '%s %s' % (function, error)
            nvml = faults.FaultyNvml(self.section, function,
                                     faults.ERRORS[error], self.GPU_INDEX)
            devices = self.discover(self.drivers(nvml))
            self.assertGreater(nvml.injected, 0, where)
            self.assertEqual(8, len({d.controlpath_id.cpid_info
                                     for d in devices}), where)
            # report_data raises on any provider it cannot delete.
            self.report(self.host.hostname, devices)
            self.assertEqual(before, self.state(server), where)
            self.report(self.host.hostname, good)
            self.assertEqual(before, self.state(server), where)


# One test per error class (9 cases each), so that each stays well within
# the test timeout and stestr spreads them: the issue's 5 classes (45
# cases) and 3 further ones (27 cases).
for _error in faults.ERRORS:
    def _test(self, error=_error):
        self.run_matrix(error)
    _test.__name__ = 'test_%s' % _error
    setattr(TestColdStartMatrix, _test.__name__, _test)


class TestLostGpuWithAllocations(DriverFaultsTestCase):
    """A lost GPU whose provider holds an allocation no guest runs on
    (a shut-off guest) no longer aborts the host's report.
    """

    HOST = 'hgx-h200'

    def test_lost_gpus_keep_allocations_and_take_no_new_guest(self):
        section = copy.deepcopy(self.section)
        drivers = self.drivers(fake_nvml.FakeNvml(section))
        self.add_gpu_host(self.host.hostname, self.discover(drivers))
        rc = names.mig_resource_class('1g.18gb')
        server = self.boot(self.create_flavor(harness.gpu_extra_specs(rc)))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        [(first, _)] = [(name, res) for name, res in
                        self.allocations(server).items() if rc in res]
        held = self.allocations(server)
        # That GPU and another one fall off the bus.
        first_bus = first.split('_')[2]
        lost = [device for device in section['devices']
                if device['pci_bus_id'][9:11].lower() == first_bus]
        lost.append(next(device for device in section['devices']
                         if device not in lost and not device['active_vgpus']))
        for device in lost:
            device['lost'] = True
        for driver in drivers:
            driver._nvml = type(driver._nvml)(fake_nvml.FakeNvml(section))
        self.report(self.host.hostname, self.discover(drivers))
        self.assertEqual(held, self.allocations(server))
        usages = self.provider_usages()
        for provider in self.providers():
            for resource_class, total in provider.inventories.items():
                self.assertGreaterEqual(
                    total, usages[provider.name].get(resource_class, 0),
                    provider.name)
        # The second lost GPU offers nothing new: a boot asking for it
        # does not land there.
        second = names.physical_gpu_trait(names.pci_address(
            lost[1]['pci_bus_id']))
        server = self.boot(self.create_flavor(harness.gpu_extra_specs(
            rc, required_traits=[second])))
        self.assertEqual('ERROR', server['status'])


class TestAmdColdStartMatrix(base.GpuCloudTestCase):
    """The AMD driver's matrix through Cyborg's conductor and Placement:
    on mi300x-cpx, a server holds a VF of GPU 0; every amdsmi call and
    PCI read about that GPU x error class, each at a cold start (agent
    restart), then the good report again.
    """

    def run_matrix(self, error):
        self.flags(group='gpu_partitions', gpu_scan_timeout=60)
        host = reference_hosts.load('mi300x-cpx')
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)

        def driver(amdsmi=None):
            return amd_mxgpu.AmdMxgpuDriver(
                hostname=host.hostname, sysfs_root=env.sysfs_root,
                amdsmi=amdsmi or fake_amdsmi.FakeAmdsmi(host.data['amdsmi']))

        good = driver().discover()
        self.add_gpu_host(host.hostname, good)
        rc = names.vf_resource_class('AMD Instinct MI300X', 'CPX')
        gpu0 = names.physical_gpu_trait(amd_faults.PF)
        server = self.boot(self.create_flavor(harness.gpu_extra_specs(
            rc, required_traits=[gpu0])))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        before = DriverFaultsTestCase.state(self, server)
        cases = 0
        for function in amd_faults.HOST_CALLS + amd_faults.GPU_CALLS + tuple(
                'pci.' + name for name in amd_faults.SYSFS_CALLS):
            where = '%s %s' % (function, error)
            fault = amd_faults.Fault(error, None)
            if function.startswith('pci.'):
                faulty = driver()
                faulty._pci = amd_faults.FaultyPci(
                    faulty._pci, function[4:], fault)
            else:
                faulty = driver(amd_faults.FaultyAmdsmi(
                    host.data['amdsmi'], function, fault))
            devices = faulty.discover()
            self.assertEqual(8, len({d.controlpath_id.cpid_info
                                     for d in devices}), where)
            # report_data raises on any provider it cannot delete.
            self.report(host.hostname, devices)
            self.assertEqual(before, DriverFaultsTestCase.state(
                self, server), where)
            self.report(host.hostname, good)
            self.assertEqual(before, DriverFaultsTestCase.state(
                self, server), where)
            cases += 1
        self.assertEqual(15, cases)


for _error in ('AmdSmiLibraryException', 'OSError', 'UnicodeDecodeError',
               'Exception'):
    def _test(self, error=_error):
        self.run_matrix(error)
    _test.__name__ = 'test_%s' % _error
    setattr(TestAmdColdStartMatrix, _test.__name__, _test)
