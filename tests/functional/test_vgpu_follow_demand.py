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
"""Time-sliced vGPU types following demand, in the in-process cloud.

The real vGPU driver over ``pcie-l40s`` (vendor VFIO: sysfs tree + fake
pynvml; the privileged functions run without privsep on the tree) ->
Cyborg's real conductor ``report_data`` -> the real Placement (the
driver's own inventory reads and its ``reserved`` writes go there too) ->
Nova's real scheduler and Cyborg's ARQ binding.

``pcie-l40s``: GPU 17 hosts L40S-12Q with 2 of 4 VFs running guests
that hold no allocation (Placement reserves them), GPU 31 L40S-8Q (idle),
GPU b1 nothing (idle), GPU ca L40S-24C (1 guest). ``pcie-a100`` (mdev,
libvirt's test driver): GPU 01 runs two A100D-20C, GPU 41 is idle.

A new driver over the same host and the same Placement is a restarted
agent. The agent's clock is the test's: each pass comes a hold
(``follow_demand_hold_seconds``) after the last.
"""

import copy
import os

import fixtures

from cyborg_gpu_drivers import nvidia_vgpu
from cyborg_gpu_drivers import privsep
from gpu_partitions.cloud import harness
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml
import placement_traits as names
from tests.functional import base
from tests.unit.cyborg_gpu_drivers import hosts

TYPE_12Q = 1506
HOLD = 600


class SwitchableNvml:
    """The pynvml the driver holds; a test swaps the fake behind it
    between agent passes (the fake lists the vGPUs of its data as built).
    """

    def __init__(self, fake):
        self.fake = fake

    def __getattr__(self, name):
        return getattr(self.fake, name)


class FollowDemandTestCase(base.GpuCloudTestCase):
    """One reference host (``HOST``) whose vGPU driver follows demand
    within ``ALLOWED``; :meth:`start_agent` builds the driver.
    """

    HOST = None
    ALLOWED = ()

    def setUp(self):
        super().setUp()
        self.flags(group='nvidia_vgpu', type_mode='follow_demand',
                   allowed_types=list(self.ALLOWED))
        self.host = reference_hosts.load(self.HOST)
        self.env = self.host.materialize(
            self.useFixture(fixtures.TempDir()).path)
        self.flags(group='gpu_partitions', sysfs_root=self.env.sysfs_root)
        self.now = 0.0

    def name(self, bus, vgpu_type):
        return names.provider_name(self.host.hostname, '0000:%s:00.0' % bus,
                                   vgpu_type)

    def agent_pass(self):
        self.now += HOLD
        return self.report(self.host.hostname, self.driver.discover())

    def assertRestartChangesNothing(self):
        """A restarted agent's passes write no provider to Placement:
        Cyborg's conductor deletes and makes none.
        """
        before = self.providers()
        self.driver = self.start_agent()
        for _ in range(2):
            writes = self.agent_pass()
            self.assertEqual([], [w for w in writes
                                  if w.method in ('DELETE', 'POST')], writes)
            self.assertEqual(before, self.providers())


class TestVgpuFollowDemand(FollowDemandTestCase):

    HOST = 'pcie-l40s'
    ALLOWED = ('NVIDIA L40S=L40S-8Q,L40S-12Q',)

    def setUp(self):
        super().setUp()
        self.offers = hosts.VfOffers(self.env.sysfs_root)
        self.writes = []
        self.released = []
        self.nvml_data = copy.deepcopy(self.host.data['nvml'])
        self.nvml = SwitchableNvml(fake_nvml.FakeNvml(self.nvml_data))
        self.driver = self.start_agent()

    def start_agent(self):
        return nvidia_vgpu.NvidiaVgpuDriver(
            hostname=self.host.hostname, nvml=self.nvml,
            sysfs_root=self.env.sysfs_root, libvirt_uri=self.env.libvirt_uri,
            write_vgpu_type=self.write, release_gpu=self.release,
            clock=lambda: self.now)

    def write(self, address, type_id):
        self.writes.append((address, type_id))
        privsep.write_vgpu_type(address, type_id)
        self.offers.refresh(self.offers.pf_of(address))

    def release(self, pf_address):
        self.released.append(pf_address)
        privsep.release_idle_gpu(pf_address)
        self.offers.refresh(pf_address)

    def run_guest(self, server, type_id):
        """What the host shows once the guest of ``server`` runs: its VF
        open (vfio-pci) and its vGPU active in NVML.
        """
        [arq] = self.arqs(server)
        vf = self.pci_address(arq['attach_handle_info'])
        with open(os.path.join(self.env.sysfs_root, 'bus', 'pci', 'devices',
                               vf, 'enable'), 'w') as enable:
            enable.write('1\n')
        device = next(d for d in self.nvml_data['devices']
                      if d['pci_bus_id'].split(':')[1].lower() ==
                      vf.split(':')[1])
        number = 100 + sum(len(d['active_vgpus'])
                           for d in self.nvml_data['devices'])
        device['active_vgpus'].append({
            'id': number, 'type_id': type_id,
            'vf_pci_bus_id': '0000' + vf.upper(),
            'uuid': '00000000-0000-0000-0000-%012d' % number})
        self.nvml.fake = fake_nvml.FakeNvml(self.nvml_data)

    def inventory(self, bus, vgpu_type):
        provider = self.provider(self.name(bus, vgpu_type))
        return self.placement_get('/resource_providers/%s/inventories'
                                  % provider.uuid)['inventories'][
            names.vgpu_resource_class(vgpu_type)]

    def move_gpu_31_to_12q(self):
        """Fill GPU 17's L40S-12Q; the next pass moves idle GPU 31 to
        it. Returns the flavor of L40S-12Q and its resource class.
        """
        self.add_gpu_host(self.host.hostname, self.driver.discover())
        self.agent_pass()
        # GPU b1 took the first allowed type; the two guests on GPU 17
        # without allocations are reserved.
        self.assertEqual(6, self.inventory('b1', 'L40S-8Q')['total'])
        self.assertEqual((4, 2), tuple(self.inventory('17', 'L40S-12Q')[k]
                                       for k in ('total', 'reserved')))
        self.assertEqual([], self.released)
        # Every unit of GPU ca is busy without an allocation: reserved
        # equals total (a capacity of 0, which Placement refuses before
        # microversion 1.26).
        ca = self.inventory('ca', 'L40S-24C')
        self.assertEqual(ca['total'], ca['reserved'])

        rc = names.vgpu_resource_class('L40S-12Q')
        self.create_device_profile('l40s-12q', [
            harness.device_profile_group(rc)])
        flavor = self.create_flavor(harness.accel_extra_specs('l40s-12q'))
        servers = [self.boot(flavor) for _ in range(2)]
        for server in servers:
            self.assertLandedOn(server, self.host.hostname,
                                self.name('17', 'L40S-12Q'), rc)
            self.run_guest(server, TYPE_12Q)
        # GPU 17 is full; a third 12Q finds no host yet.
        self.assertEqual('ERROR', self.boot(flavor)['status'])

        # The next agent pass: 12Q is 100% unavailable, 8Q idle; GPU 31
        # (lowest address of the idle 8Q GPUs) moves to 12Q.
        self.agent_pass()
        self.assertEqual(['0000:31:00.0'], self.released)
        self.assertNotIn(self.name('31', 'L40S-8Q'),
                         [p.name for p in self.providers()])
        self.assertEqual(4, self.inventory('31', 'L40S-12Q')['total'])
        return flavor, rc

    def test_an_idle_gpu_is_retyped_for_demand_a_busy_one_never(self):
        flavor, rc = self.move_gpu_31_to_12q()
        server = self.boot(flavor)
        self.assertLandedOn(server, self.host.hostname,
                            self.name('31', 'L40S-12Q'), rc)

        # Steady: more passes change nothing; the GPUs with guests (17,
        # ca) were never written; b1 keeps 8Q.
        for _ in range(2):
            self.agent_pass()
        self.assertEqual(['0000:31:00.0'], self.released)
        self.assertEqual(set(), {address[:7] for address, _ in self.writes}
                         & {'0000:17', '0000:ca'})
        self.assertEqual(6, self.inventory('b1', 'L40S-8Q')['total'])
        self.assertEqual(4, self.inventory('17', 'L40S-12Q')['total'])

    def test_a_restarted_agent_keeps_what_demand_chose(self):
        flavor, rc = self.move_gpu_31_to_12q()
        self.assertRestartChangesNothing()
        self.assertEqual(['0000:31:00.0'], self.released)
        server = self.boot(flavor)
        self.assertLandedOn(server, self.host.hostname,
                            self.name('31', 'L40S-12Q'), rc)


class TestVgpuFollowDemandMdev(FollowDemandTestCase):
    """On mdev GPUs the type demand chose is only what the driver offers;
    a restarted agent reads it back from Placement.
    """

    HOST = 'pcie-a100'
    ALLOWED = ('0000:41:00.0=A100D-10C,A100D-20C',)

    def setUp(self):
        super().setUp()
        self.driver = self.start_agent()

    def start_agent(self):
        return nvidia_vgpu.NvidiaVgpuDriver(
            hostname=self.host.hostname,
            nvml=fake_nvml.FakeNvml(self.host.data['nvml']),
            sysfs_root=self.env.sysfs_root, libvirt_uri=self.env.libvirt_uri,
            release_gpu=self.fail, clock=lambda: self.now)

    def test_a_restart_keeps_the_type_demand_chose(self):
        self.add_gpu_host(self.host.hostname, self.driver.discover())
        self.agent_pass()
        rc = names.vgpu_resource_class('A100D-20C')
        flavor = self.create_flavor(harness.gpu_extra_specs(rc))
        # Two claims beside GPU 01's two guests fill its A100D-20C.
        for _ in range(2):
            self.assertLandedOn(self.boot(flavor), self.host.hostname,
                                self.name('01', 'A100D-20C'), rc)
        self.agent_pass()
        names_now = [p.name for p in self.providers()]
        self.assertIn(self.name('41', 'A100D-20C'), names_now)
        self.assertNotIn(self.name('41', 'A100D-10C'), names_now)
        self.assertRestartChangesNothing()
        # The GPU demand chose takes claims after the restart. GPU 01 is
        # full: its two guests without an allocation stay reserved beside
        # the two claims whose guests have not started, also after the
        # restart (what the last agent reserved is kept), so all three
        # boots land on GPU 41.
        landed = []
        for _ in range(3):
            server = self.boot(flavor)
            self.assertEqual('ACTIVE', server['status'], server.get('fault'))
            landed.extend(name for name, used in self.allocations(
                server).items() if rc in used)
        self.assertEqual([self.name('41', 'A100D-20C')] * 3, landed)
