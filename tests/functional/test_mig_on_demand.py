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
"""On-demand MIG instances through the in-process cloud.

Real code on the path of a boot: Nova's API, conductor and scheduler (fake
virt driver), Placement, Cyborg's API and conductor (device profiles, ARQ
creation and bind, ``ExtARQ._allocate_attach_handle``), the agent RPC, and
Cyborg's ``AgentManager`` (``update_available_resource``,
``create_vgpu_mdev``, ``remove_vgpu_mdev``) with this package's bind hook
and MIG driver. Stood in for: NVML (the reference host's fake, which
refuses overlapping placements and more compute slices than the GPU has),
sysfs (the materialized host) and the kernel's mdev create/remove files
(``FakeMdevBus``: an mdev of a MIG-backed type needs a free GPU instance
of its profile).
"""

import collections
import time

import fixtures
import pynvml

from cyborg_gpu_drivers import nvidia_mig
from gpu_partitions.cloud import harness
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_mdev
import placement_traits as names
from tests.functional import base
from tests.unit.cyborg_gpu_drivers import hosts

GPU = '0000:01:00.0'
GPU_1 = '0000:41:00.0'
PROFILES = ('1g.10gb', '3g.40gb', '7g.80gb')
# NVML GPU instance profile id -> name on the A100 80GB.
PROFILE_NAMES = {19: '1g.10gb', 9: '3g.40gb', 0: '7g.80gb'}
SLICES = {'1g.10gb': 1, '3g.40gb': 3, '7g.80gb': 7}


class OnDemandTestCase(base.GpuCloudTestCase):

    #: ``[nvidia_mig] on_demand_profiles`` of the host.
    ALLOWED = ['A100 80GB PCIe=1g.10gb,3g.40gb,7g.80gb']
    #: NVML indexes of the GPUs switched to MIG.
    GPUS = (0,)

    def setUp(self):
        super().setUp()
        host = reference_hosts.ReferenceHost(hosts.a100_on_demand(self.GPUS),
                                             'pcie-a100 on demand')
        self.env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        self.hostname = self.env.hostname
        self.flags(mode='on_demand', on_demand_profiles=self.ALLOWED,
                   group='nvidia_mig')
        # The privileged functions read the sysfs root from the options.
        self.flags(sysfs_root=self.env.sysfs_root, group='gpu_partitions')
        self.bus = fake_mdev.FakeMdevBus(self.env)
        # What the privsep daemon runs, on the host's fake NVML.
        create, destroy = hosts.privileged_on(self.env.nvml)
        self.driver = nvidia_mig.NvidiaMigDriver(
            hostname=self.hostname, nvml=self.env.nvml,
            sysfs_root=self.env.sysfs_root, create_gpu_instance=create,
            destroy_gpu_instance=destroy)
        self.agent = self.start_cyborg_agent(self.hostname, [self.driver],
                                             self.bus)
        self.flavors = {}
        for profile in PROFILES:
            name = 'mig-%s' % profile.replace('.', '-')
            self.create_device_profile(name, [harness.device_profile_group(
                names.mig_resource_class(profile))])
            self.flavors[profile] = self.create_flavor(
                harness.accel_extra_specs(name))

    # --- views --------------------------------------------------------------

    def gpu_instances(self, address=GPU):
        """``[(profile, start, size, complete)]`` NVML shows on a GPU."""
        [gpu] = [gpu for gpu in self.env.nvml._gpus
                 if gpu.data['pci_bus_id'].lower().endswith(address[-12:])]
        return sorted((PROFILE_NAMES[gi.data['profile_id']],
                       gi.data['start'], gi.data['size'],
                       bool(gi.compute_instances))
                      for gi in gpu.gpu_instances)

    def mdevs(self):
        """``{parent: mdev type}`` on the GPU's VFs."""
        found = {}
        for call in self.bus.calls:
            for uuid, mdev_type in self.bus.mdevs(call[1]).items():
                found[call[1]] = mdev_type
        return found

    def used(self):
        """``{profile: units}`` Placement has allocated on the GPU."""
        totals = collections.Counter()
        for provider, usages in self.provider_usages().items():
            for profile in PROFILES:
                if provider == names.provider_name(self.hostname, GPU,
                                                   profile):
                    totals[profile] += usages.get(
                        names.mig_resource_class(profile), 0)
        return +totals

    def offered(self, address=GPU):
        """``{profile: total}`` of a GPU's providers in Placement."""
        found = {}
        for provider in self.providers():
            for profile in PROFILES:
                if provider.name == names.provider_name(self.hostname,
                                                        address, profile):
                    found[profile] = provider.inventories[
                        names.mig_resource_class(profile)]
        return found

    def boot_all(self, profiles):
        """Post one server per profile at once, then wait for them all."""
        posted = [self.api.post_server({'server': self._build_server(
            flavor_id=self.flavors[profile], networks='none')})
            for profile in profiles]
        deadline = time.monotonic() + harness.BOOT_TIMEOUT
        done = {}
        while len(done) < len(posted):
            for server in posted:
                if server['id'] in done:
                    continue
                server = self.api.get_server(server['id'])
                if server['status'] in ('ACTIVE', 'ERROR'):
                    done[server['id']] = server
            if time.monotonic() > deadline:
                self.fail('servers still building: %s' % sorted(
                    set(s['id'] for s in posted) - set(done)))
            time.sleep(0.05)
        return [done[server['id']] for server in posted]

    def assertHonest(self, active):
        """The GPU holds exactly one complete instance per server using
        it, none overlapping, within its 7 compute slices; each server's
        ARQ is bound to an mdev of its profile's type that exists.
        """
        instances = self.gpu_instances()
        self.assertTrue(all(complete for *_, complete in instances),
                        instances)
        slots = [slot for _, start, size, _ in instances
                 for slot in range(start, start + size)]
        self.assertEqual(len(slots), len(set(slots)), instances)
        self.assertLessEqual(sum(SLICES[p] for p, *_ in instances), 7)
        by_profile = collections.Counter(p for p, *_ in instances)
        self.assertEqual(by_profile, collections.Counter(
            profile for profile, _ in active))
        self.assertEqual(+by_profile, self.used())
        mdevs = self.mdevs()
        self.assertEqual(len(active), len(mdevs))
        for profile, server in active:
            [arq] = self.arqs(server)
            self.assertEqual(('Bound', 'MDEV'),
                             (arq['state'], arq['attach_handle_type']))
            parent = self.pci_address(arq['attach_handle_info'])
            self.assertEqual(arq['attach_handle_info']['asked_type'],
                             mdevs[parent])

    def assertLeftNothing(self, server):
        """A server that did not get a unit holds no ARQ and no unit."""
        self.assertEqual('ERROR', server['status'])
        self.assertEqual([], self.arqs(server))


class TestOnDemandBoots(OnDemandTestCase):

    def test_idle_gpu_offers_one_placeable_set(self):
        # With 1g, 3g and 7g alike: four 1g and one 3g; a 7g is not
        # offered beside them (it could not be placed with them).
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, self.offered())
        self.assertEqual([], self.gpu_instances())

    def test_sequence_never_overcommits_and_delete_frees_slots(self):
        active = []
        for profile in ('1g.10gb', '3g.40gb'):
            server = self.boot(self.flavors[profile])
            self.assertEqual('ACTIVE', server['status'], server.get('fault'))
            active.append((profile, server))
            self.agent_cycle(self.hostname)
            self.assertHonest(active)
        # The 1g went where the 3g could still go, the 3g to its slots.
        self.assertEqual([('1g.10gb', 3, 1, True), ('3g.40gb', 4, 4, True)],
                         self.gpu_instances())
        # A 7g cannot be placed beside them: never offered, never bound.
        refused = self.boot(self.flavors['7g.80gb'])
        self.assertLeftNothing(refused)
        self.assertIn('No valid host', refused['fault']['message'])
        self.assertEqual({}, self.allocations(refused))
        # Fill the GPU: three more 1g; a fifth 1g and a second 3g do not
        # fit.
        for _ in range(3):
            server = self.boot(self.flavors['1g.10gb'])
            self.assertEqual('ACTIVE', server['status'], server.get('fault'))
            active.append(('1g.10gb', server))
            self.agent_cycle(self.hostname)
        self.assertHonest(active)
        self.assertEqual(7, sum(SLICES[p] for p, *_ in self.gpu_instances()))
        for profile in ('1g.10gb', '3g.40gb'):
            self.assertLeftNothing(self.boot(self.flavors[profile]))
        # Deleting the 3g frees its four slots: its instance is destroyed
        # at once, and the next 3g is created in them.
        [(_, three)] = [item for item in active if item[0] == '3g.40gb']
        self.delete(three)
        active.remove(('3g.40gb', three))
        self.assertNotIn('3g.40gb', [p for p, *_ in self.gpu_instances()])
        self.agent_cycle(self.hostname)
        self.assertHonest(active)
        server = self.boot(self.flavors['3g.40gb'])
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        active.append(('3g.40gb', server))
        self.agent_cycle(self.hostname)
        self.assertHonest(active)
        # Deleting everything leaves an idle GPU with no instance and
        # the idle offer back.
        for _, server in active:
            self.delete(server)
        self.agent_cycle(self.hostname)
        self.assertEqual([], self.gpu_instances())
        self.assertEqual({}, self.mdevs())
        self.assertEqual({}, self.used())
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, self.offered())

    def test_concurrent_boots_never_overcommit(self):
        # Twice as many requests of each profile as the offer has, at
        # once: Placement admits the offer, which is placeable whatever
        # the order; the others fail scheduling and leave nothing.
        wanted = ['1g.10gb'] * 8 + ['3g.40gb'] * 2 + ['7g.80gb'] * 2
        servers = self.boot_all(wanted)
        active = [(profile, server) for profile, server
                  in zip(wanted, servers) if server['status'] == 'ACTIVE']
        self.assertEqual(collections.Counter({'1g.10gb': 4, '3g.40gb': 1}),
                         collections.Counter(p for p, _ in active))
        for profile, server in zip(wanted, servers):
            if server['status'] != 'ACTIVE':
                self.assertLeftNothing(server)
        self.agent_cycle(self.hostname)
        self.assertHonest(active)
        # Released together too: every instance goes.
        for _, server in active:
            self.delete(server)
        self.assertEqual([], self.gpu_instances())


class TestSpreadAcrossIdleGpus(OnDemandTestCase):

    # Both GPUs of the host on demand, 1g, 3g and 7g alike.
    GPUS = (0, 1)

    def test_idle_gpus_offer_different_sets_and_all_boots_land(self):
        # Alone, each would offer four 1g and one 3g and no 7g could
        # boot on the host; together the second idle GPU leads a 7g.
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, self.offered(GPU))
        self.assertEqual({'7g.80gb': 1}, self.offered(GPU_1))
        wanted = ['7g.80gb', '1g.10gb', '1g.10gb', '3g.40gb']
        servers = self.boot_all(wanted)
        for server in servers:
            self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        self.agent_cycle(self.hostname)
        self.assertEqual([('7g.80gb', 0, 8, True)],
                         self.gpu_instances(GPU_1))
        self.assertEqual(collections.Counter({'1g.10gb': 2, '3g.40gb': 1}),
                         collections.Counter(
                             p for p, *_ in self.gpu_instances(GPU)))
        # GPUs with guests keep their offers: no 1g joins the 7g GPU.
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, self.offered(GPU))
        self.assertEqual({'7g.80gb': 1}, self.offered(GPU_1))
        self.assertLeftNothing(self.boot(self.flavors['7g.80gb']))
        # The 7g goes: its GPU is idle again and offers the 7g again.
        self.delete(servers[0])
        self.assertEqual([], self.gpu_instances(GPU_1))
        self.agent_cycle(self.hostname)
        self.assertEqual({'7g.80gb': 1}, self.offered(GPU_1))
        server = self.boot(self.flavors['7g.80gb'])
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))

    def test_idle_instances_left_by_a_restart_are_cleared(self):
        server = self.boot(self.flavors['3g.40gb'])
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        # An instance a previous agent made and never destroyed (its
        # guest gone while the agent was down).
        self.driver._create_gpu_instance(GPU_1, 19, 6)
        self.agent_cycle(self.hostname)
        self.assertEqual([], self.gpu_instances(GPU_1))
        self.assertEqual([('3g.40gb', 4, 4, True)], self.gpu_instances(GPU))
        self.assertEqual({'7g.80gb': 1}, self.offered(GPU_1))


class TestWholeGpuOffer(OnDemandTestCase):

    # The operator says 7g requests are four times as common.
    ALLOWED = ['A100 80GB PCIe=1g.10gb,3g.40gb,7g.80gb:4']

    def test_weights_choose_the_idle_offer(self):
        self.assertEqual({'7g.80gb': 1}, self.offered())
        server = self.boot(self.flavors['7g.80gb'])
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        self.agent_cycle(self.hostname)
        self.assertHonest([('7g.80gb', server)])
        self.assertEqual([('7g.80gb', 0, 8, True)], self.gpu_instances())
        self.assertLeftNothing(self.boot(self.flavors['1g.10gb']))
        self.delete(server)
        self.assertEqual([], self.gpu_instances())


class TestFailedCreation(OnDemandTestCase):

    def break_compute_instances(self, times):
        """Make NVML refuse the next ``times`` compute instances."""
        fake = self.env.nvml
        real = fake.nvmlGpuInstanceCreateComputeInstance
        left = [times]

        def create(gpu_instance, profile_id):
            if left[0]:
                left[0] -= 1
                fake.calls['nvmlGpuInstanceCreateComputeInstance'] += 1
                raise pynvml.NVMLError_Unknown()
            return real(gpu_instance, profile_id)

        self.useFixture(fixtures.MonkeyPatch(
            'gpu_partitions.reference_hosts.fake_nvml.FakeNvml.'
            'nvmlGpuInstanceCreateComputeInstance',
            lambda self_, gpu_instance, profile_id: create(gpu_instance,
                                                           profile_id)))

    def test_failed_creation_rolls_back(self):
        self.break_compute_instances(1)
        server = self.boot(self.flavors['3g.40gb'])
        # Cyborg's bind fails and Nova's conductor does not reschedule:
        # the server goes to ERROR; Nova deletes its ARQ (which Cyborg can
        # do only because the agent takes the removal of the mdev that
        # was never made as done).
        self.assertLeftNothing(server)
        self.assertIn('Failed to bind accelerator requests',
                      self.stdlog.logger.output)
        # Nothing on the GPU: the GPU instance made before the compute
        # instance failed was destroyed, no mdev was created.
        self.assertEqual([], self.gpu_instances())
        self.assertEqual({}, self.mdevs())
        self.assertEqual(['remove'], [c[0] for c in self.bus.calls])
        # Stock Nova keeps the ERROR server's allocation until the server
        # is deleted (_cleanup_build_artifacts): the 3g unit stays held,
        # and the agent's offer keeps counting it.
        provider = names.provider_name(self.hostname, GPU, '3g.40gb')
        rc = names.mig_resource_class('3g.40gb')
        self.assertEqual({provider: {rc: 1}}, {
            name: res for name, res in self.allocations(server).items()
            if rc in res})
        self.agent_cycle(self.hostname)
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, self.offered())
        self.assertLeftNothing(self.boot(self.flavors['3g.40gb']))
        # Deleting it gives the unit back; the next 3g is created.
        self.delete(server)
        self.agent_cycle(self.hostname)
        ok = self.boot(self.flavors['3g.40gb'])
        self.assertEqual('ACTIVE', ok['status'], ok.get('fault'))
        self.agent_cycle(self.hostname)
        self.assertHonest([('3g.40gb', ok)])

    def test_failed_mdev_destroys_the_new_instance(self):
        real = self.bus.create
        failed = []

        def create(parent, mdev_type, uuid):
            if not failed:
                failed.append(parent)
                self.bus.calls.append(('create', parent, mdev_type, uuid))
                raise OSError(5, 'Input/output error')
            return real(parent, mdev_type, uuid)

        self.useFixture(fixtures.MonkeyPatch(
            'cyborg.accelerator.drivers.gpu.utils.create_mdev_privileged',
            create))
        server = self.boot(self.flavors['1g.10gb'])
        self.assertLeftNothing(server)
        self.assertEqual(1, len(failed))
        self.assertEqual([], self.gpu_instances())
        self.assertEqual({}, self.mdevs())
