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
"""The MIG driver in on_demand mode, over a materialized host."""

import os
import threading
from unittest import mock

from cyborg.agent import manager as cyborg_manager
import greenlet
import pynvml

from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers import agent
from cyborg_gpu_drivers import base as driver_base
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import mig_layouts
from cyborg_gpu_drivers import nvidia_mig
from gpu_partitions.reference_hosts import fake_mdev
import placement_traits as names
from tests.unit.cyborg_gpu_drivers import faults
from tests.unit.cyborg_gpu_drivers import hosts
from tests.unit.cyborg_gpu_drivers import test_nvidia_mig

GPU = '0000:01:00.0'
GPU_1 = '0000:41:00.0'
ALLOWED = 'A100 80GB PCIe=1g.10gb,3g.40gb,7g.80gb'


class OnDemandCase(test_nvidia_mig.DriverTestCase):
    """pcie-a100 with GPU 0 on demand (``gpus``: NVML indexes)."""

    gpus = (0,)

    def setUp(self):
        super().setUp()
        self.env_ = self.env(hosts.a100_on_demand(self.gpus))
        self.conf.config(group='nvidia_mig', mode='on_demand',
                         on_demand_profiles=[ALLOWED])
        self.conf.config(group='gpu_partitions',
                         sysfs_root=self.env_.sysfs_root)
        self.bus = fake_mdev.FakeMdevBus(self.env_)

    def on_demand_driver(self):
        create, destroy = hosts.privileged_on(self.env_.nvml)
        return self.driver(self.env_, nvml=self.env_.nvml,
                           create_gpu_instance=create,
                           destroy_gpu_instance=destroy)

    def gpu_instances(self):
        with nvml_adapter.Nvml(self.env_.nvml).session() as session:
            device = session.device(0)
            return [(gi.profile_id, gi.start) for gi in session.gpu_instances(
                device, session.gpu_instance_profiles(device))]

    def slices(self, driver):
        [gpu] = driver.collect().gpus
        return {s.name: (s.total, [h.address for h in s.handles])
                for s in gpu.slices}


class OnDemandDriverTest(OnDemandCase):

    def test_idle_offer_one_vf_per_unit(self):
        slices = self.slices(self.on_demand_driver())
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1},
                         {name: total for name, (total, _) in slices.items()})
        vfs = [vf for _, handles in slices.values() for vf in handles]
        self.assertEqual(5, len(set(vfs)))
        self.assertEqual([], self.gpu_instances())
        [gpu] = self.on_demand_driver().collect().gpus
        for slice_ in gpu.slices:
            self.assertIn(names.mig_on_demand_trait(7), slice_.traits)

    def test_a_parent_whose_mdev_type_cannot_be_read_is_never_free(self):
        # An mdev whose type link cannot be read (here not a link):
        # the parent may hold a guest, so it is no free unit.
        driver = self.on_demand_driver()
        offered = [vf for _, handles in self.slices(driver).values()
                   for vf in handles]
        parent = offered[0]
        mdev = os.path.join(self.env_.sysfs_root, 'bus', 'pci', 'devices',
                            parent, 'c0ffee00-0000-4000-8000-000000000001')
        os.makedirs(mdev)
        with open(os.path.join(mdev, 'mdev_type'), 'w') as mdev_type:
            mdev_type.write('nvidia-700\n')
        # Read before: no longer offered; never read: a stub.
        [gpu] = driver.collect().gpus
        self.assertFalse(gpu.healthy)
        self.assertEqual([0] * len(gpu.slices), [
            inventory.offered_total(gpu, slice_) - slice_.in_use
            for slice_ in gpu.slices])
        [gpu] = self.on_demand_driver().collect().gpus
        self.assertTrue(gpu.stub)
        self.assertIn('%s cannot be read: OSError' % GPU,
                      self.log.output)

    def test_an_instance_of_a_profile_nvml_does_not_list_holds_the_gpu(
            self):
        # NVML lists a GPU instance whose profile id is none of the GPU's
        # profiles: its slots cannot be placed, so nothing is offered
        # beside it (the offer would plan units where it sits).
        driver = self.on_demand_driver()
        self.assertNotEqual({}, self.slices(driver))
        real = nvml_adapter.Session.gpu_instances

        def with_strange(session, device, profiles):
            found = real(session, device, profiles)
            if device.address == GPU:
                found.append(nvml_adapter.GpuInstance(
                    id=99, profile_id=77, start=0, size=8, complete=True))
            return found

        self.patch(nvml_adapter.Session, 'gpu_instances', with_strange)
        for driver in (driver, self.on_demand_driver()):
            [gpu] = driver.collect().gpus
            self.assertEqual([0] * len(gpu.slices), [
                inventory.offered_total(gpu, slice_) - slice_.in_use
                for slice_ in gpu.slices])
        self.assertIn('GPU instance 99 of profile id 77', self.log.output)

    def test_claims_read_from_placement_shape_the_offer(self):
        # Two 3g claimed in Placement, none bound yet: the offer keeps
        # both and nothing else fits.
        self.allocations[names.provider_name(
            self.env_.hostname, GPU, '3g.40gb')] = 2
        self.assertEqual({'3g.40gb': 2}, {
            name: total for name, (total, _)
            in self.slices(self.on_demand_driver()).items()})

    def test_placement_unreadable_keeps_the_last_offer(self):
        driver = self.on_demand_driver()
        first = self.slices(driver)

        def fails(*args):
            raise RuntimeError('Placement answered 503')

        self.patch(driver_base.GpuPartitionDriver, 'allocated_units', fails)
        self.assertEqual(first, self.slices(driver))
        # A fresh agent that never read Placement offers nothing new.
        self.assertEqual({}, self.slices(self.on_demand_driver()))
        self.assertIn('Placement usages of', self.log.output)

    def test_bind_creates_where_the_offer_stays_placeable(self):
        driver = self.on_demand_driver()
        self.slices(driver)
        token = driver.prepare_unit('0000:01:00.4', 'nvidia-700')
        # 1g (profile id 19) at slot 3: the promised 3g keeps 4-7.
        self.assertEqual([(19, 3)], self.gpu_instances())
        self.bus.create('0000:01:00.4', 'nvidia-700', 'u1')
        token = driver.prepare_unit('0000:01:00.5', 'nvidia-701')
        self.assertEqual([(19, 3), (9, 4)], self.gpu_instances())
        driver.abort_unit(token)
        self.assertEqual([(19, 3)], self.gpu_instances())
        # Release: the mdev goes, then its instance.
        self.bus.remove('0000:01:00.4', 'nvidia-700', 'u1')
        self.assertTrue(driver.release_unit('0000:01:00.4', 'nvidia-700'))
        self.assertEqual([], self.gpu_instances())

    def test_no_free_placement_fails_the_bind(self):
        driver = self.on_demand_driver()
        self.slices(driver)
        driver.prepare_unit('0000:01:00.4', 'nvidia-702')
        self.bus.create('0000:01:00.4', 'nvidia-702', 'u1')
        self.assertRaises(mig_layouts.LayoutError, driver.prepare_unit,
                          '0000:01:00.5', 'nvidia-700')
        self.assertEqual([(0, 0)], self.gpu_instances())

    def test_a_daemon_answer_lost_or_garbage_leaves_the_gpu_as_it_was(
            self):
        # The privileged daemon made the instance and then its answer was
        # lost (the daemon stopped, the channel broke) or came back as
        # garbage: the bind fails and NVML's new instance is destroyed.
        # Before, it stayed with no bind holding it, or its garbage id
        # was recorded for the release.
        def lost(error):
            def answer(made):
                raise error
            return answer

        answers = {'OSError': lost(OSError(5, 'I/O error')),
                   'EOFError': lost(EOFError('daemon gone')),
                   'KeyboardInterrupt': lost(KeyboardInterrupt()),
                   'None': lambda made: None, 'text': str,
                   'bool': lambda made: True, 'float': float,
                   'another id': lambda made: made + 1}
        for name, answer in sorted(answers.items()):
            self.setUp_gpu()
            driver = self.on_demand_driver()
            create = driver._create_gpu_instance
            driver._create_gpu_instance = lambda *args: answer(
                create(*args))
            self.slices(driver)
            try:
                driver.prepare_unit('0000:01:00.4', 'nvidia-700')
            except BaseException:
                pass
            else:
                self.fail('%s: the bind went on' % name)
            self.assertEqual([], self.gpu_instances(), name)
            self.assertEqual({}, driver._made, name)
            # The next bind makes its instance.
            driver._create_gpu_instance = create
            driver.prepare_unit('0000:01:00.4', 'nvidia-700')
            self.assertEqual([(19, 3)], self.gpu_instances(), name)

    def setUp_gpu(self):
        """NVML afresh (no instance) for each case of a loop; the cases
        make no mdev.
        """
        self.env_.nvml = self.env_.host.fake_nvml()
        self.bus = fake_mdev.FakeMdevBus(self.env_)

    def test_keep_warm_reuses_the_idle_instance(self):
        self.conf.config(group='nvidia_mig', idle_instances='keep_warm')
        driver = self.on_demand_driver()
        self.slices(driver)
        driver.prepare_unit('0000:01:00.4', 'nvidia-701')
        self.assertTrue(driver.release_unit('0000:01:00.4', 'nvidia-701'))
        self.assertEqual([(9, 4)], self.gpu_instances())
        calls = self.env_.nvml.calls[
            'nvmlDeviceCreateGpuInstanceWithPlacement']
        driver.prepare_unit('0000:01:00.6', 'nvidia-701')
        self.assertEqual(calls, self.env_.nvml.calls[
            'nvmlDeviceCreateGpuInstanceWithPlacement'])
        self.assertEqual([(9, 4)], self.gpu_instances())

    def test_static_mode_leaves_binds_to_cyborg(self):
        self.conf.config(group='nvidia_mig', mode='static')
        driver = self.on_demand_driver()
        self.assertIsNone(driver.prepare_unit('0000:01:00.4', 'nvidia-700'))
        self.assertFalse(driver.release_unit('0000:01:00.4', 'nvidia-700'))
        self.assertEqual([], self.gpu_instances())

    def test_unknown_profile_is_logged_and_left_out(self):
        self.conf.config(group='nvidia_mig', on_demand_profiles=[
            'A100 80GB PCIe=3g.40gb,5g.50gb'])
        self.assertEqual({'3g.40gb': 2}, {
            name: total for name, (total, _)
            in self.slices(self.on_demand_driver()).items()})
        self.assertIn('5g.50gb', self.log.output)

    def test_bad_options_are_refused_naming_the_option(self):
        for value in ('A100=1g.10gb:0', 'A100=1g.10gb:x',
                      'A100=1g.10gb,1g.10gb', 'A100=', 'A100=1g.10gb:inf'):
            error = self.assertRaises(mig_layouts.LayoutError,
                                      mig_layouts.parse_on_demand, [value])
            self.assertIn('on_demand_profiles', str(error))
        self.conf.config(group='nvidia_mig', layout=['A100=all-1g.10gb'])
        error = self.assertRaises(mig_layouts.LayoutError,
                                  self.on_demand_driver)
        self.assertIn('exclude each other', str(error))


class AgentBindHookTest(OnDemandCase):
    """The agent's ``create_vgpu_mdev`` undoes the GPU instance it made
    when the mdev is not created, whatever stopped it.
    """

    #: What can stop Cyborg's mdev creation: an error, or a stop of the
    #: agent in the middle of the bind.
    STOPS = dict(faults.ABORTS, OSError=lambda: OSError(5, 'I/O error'),
                 GreenletExit=greenlet.GreenletExit)

    def bind(self, driver, stop):
        """Bind a 1g unit on VF .4 while Cyborg's mdev creation raises
        ``stop``; returns what it raised and the GPU instances it saw.
        """
        seen = []

        def create(manager, context, pci_addr, asked_type, ah_uuid):
            seen.extend(self.gpu_instances())
            raise stop

        self.patch(cyborg_manager.AgentManager, 'create_vgpu_mdev', create)
        manager = agent.GpuPartitionsAgentManager.__new__(
            agent.GpuPartitionsAgentManager)
        manager._rt = mock.Mock(acc_drivers=[driver])
        try:
            manager.create_vgpu_mdev(None, '0000:01:00.4', 'nvidia-700',
                                     'c0ffee00-0000-4000-8000-000000000001')
        except BaseException as raised:
            return raised, seen
        self.fail('create_vgpu_mdev returned although the mdev failed')

    def test_every_stop_destroys_the_new_instance_and_propagates(self):
        for name, make in sorted(self.STOPS.items()):
            driver = self.on_demand_driver()
            self.slices(driver)
            stop = make()
            raised, seen = self.bind(driver, stop)
            self.assertIs(stop, raised, name)
            # Made before the mdev, gone after: nothing left for the
            # clean-up pass.
            self.assertEqual([(19, 3)], seen, name)
            self.assertEqual([], self.gpu_instances(), name)
            self.assertEqual({}, driver._made, name)


class AgentHoldsTheGpuTest(OnDemandCase):
    """A bind runs whole: nothing else on its GPU comes between the new
    instance and its mdev. Before, the GPU was held for the instance's
    creation only: a second bind took the new instance as idle (and
    made no instance of its own), an unbind of a unit never bound
    destroyed it, and the first bind failed on a GPU with room.
    """

    def run_beside(self, other):
        """Bind a 1g on VF .4 whose mdev creation waits until ``other``
        (a call on the agent) has started; returns both outcomes.
        """
        driver = self.on_demand_driver()
        self.slices(driver)
        reached, go = threading.Event(), threading.Event()
        bus = self.bus

        def create(manager, context, pci_addr, asked_type, ah_uuid):
            if pci_addr == '0000:01:00.4':
                reached.set()
                go.wait(10)
            return bus.create(pci_addr, asked_type, ah_uuid)

        def remove(manager, context, pci_addr, asked_type, ah_uuid):
            return bus.remove(pci_addr, asked_type, ah_uuid)

        self.patch(cyborg_manager.AgentManager, 'create_vgpu_mdev', create)
        self.patch(cyborg_manager.AgentManager, 'remove_vgpu_mdev', remove)
        manager = agent.GpuPartitionsAgentManager.__new__(
            agent.GpuPartitionsAgentManager)
        manager._rt = mock.Mock(acc_drivers=[driver])
        outcomes = {}

        def run(name, function, *args):
            try:
                outcomes[name] = function(*args)
            except Exception as error:
                outcomes[name] = error

        first = threading.Thread(target=run, args=(
            'first', manager.create_vgpu_mdev, None, '0000:01:00.4',
            'nvidia-700', 'c0ffee00-0000-4000-8000-000000000001'))
        first.start()
        self.assertTrue(reached.wait(10))
        second = threading.Thread(target=run, args=(
            ('second', getattr(manager, other[0])) + other[1:]))
        second.start()
        # The second call waits for the first bind, or (before) ran
        # inside it; either way the first bind then goes on.
        second.join(0.5)
        go.set()
        first.join(10)
        second.join(10)
        return outcomes

    def test_a_second_bind_makes_its_own_instance(self):
        outcomes = self.run_beside((
            'create_vgpu_mdev', None, '0000:01:00.5', 'nvidia-700',
            'c0ffee00-0000-4000-8000-000000000002'))
        self.assertEqual({'first': 'c0ffee00-0000-4000-8000-000000000001',
                          'second': 'c0ffee00-0000-4000-8000-000000000002'},
                         outcomes)
        made = self.gpu_instances()
        self.assertEqual([19, 19], [profile for profile, _ in made])
        self.assertEqual(2, len({start for _, start in made}))

    def test_an_unbind_of_a_unit_never_bound_leaves_the_bind_alone(self):
        # A failed bind's request deleted: Cyborg removes an mdev that
        # was never made, and the release finds no mdev of the profile.
        outcomes = self.run_beside((
            'remove_vgpu_mdev', None, '0000:01:00.6', 'nvidia-700',
            'c0ffee00-0000-4000-8000-000000000003'))
        self.assertEqual({'first': 'c0ffee00-0000-4000-8000-000000000001',
                          'second': None}, outcomes)
        self.assertEqual([19], [profile for profile, _ in
                                self.gpu_instances()])
        self.assertEqual({'c0ffee00-0000-4000-8000-000000000001':
                          'nvidia-700'}, self.bus.mdevs('0000:01:00.4'))


class SpreadAcrossIdleGpusTest(OnDemandCase):
    """Both GPUs of pcie-a100 on demand: the host plan of their offers."""

    gpus = (0, 1)

    def offers(self, driver):
        return {gpu.address: {s.name: s.total for s in gpu.slices}
                for gpu in driver.collect().gpus}

    def test_idle_gpus_offer_different_sets_and_stay(self):
        driver = self.on_demand_driver()
        spread = {GPU: {'1g.10gb': 4, '3g.40gb': 1},
                  GPU_1: {'7g.80gb': 1}}
        self.assertEqual(spread, self.offers(driver))
        # Nothing changed: the same offers, pass after pass, and a new
        # agent (a restart) plans the same.
        self.assertEqual(spread, self.offers(driver))
        self.assertEqual(spread, self.offers(self.on_demand_driver()))

    def test_a_claimed_gpu_keeps_its_offer_and_leaves_the_plan(self):
        driver = self.on_demand_driver()
        self.offers(driver)
        # The 7g of GPU 1 is claimed: GPU 1 keeps it; GPU 0, now the only
        # idle GPU, keeps its set (it is the only one that covers 1g/3g).
        self.allocations[names.provider_name(
            self.env_.hostname, GPU_1, '7g.80gb')] = 1
        expected = {GPU: {'1g.10gb': 4, '3g.40gb': 1},
                    GPU_1: {'7g.80gb': 1}}
        self.assertEqual(expected, self.offers(driver))
        # A 1g claimed on GPU 0 too: neither GPU is idle; neither moves.
        self.allocations[names.provider_name(
            self.env_.hostname, GPU, '1g.10gb')] = 1
        self.assertEqual(expected, self.offers(driver))
        # The 7g is released: GPU 1 is idle again and keeps its 7g.
        self.allocations[names.provider_name(
            self.env_.hostname, GPU_1, '7g.80gb')] = 0
        self.assertEqual(expected, self.offers(driver))

    def test_gpu_with_an_instance_keeps_its_offer(self):
        driver = self.on_demand_driver()
        before = self.offers(driver)
        # A 3g bound on GPU 0: its instance and mdev stay as they are, its
        # offer too, and GPU 1 (idle) keeps its 7g rather than lead the
        # 3g GPU 0 no longer has free.
        driver.prepare_unit('0000:01:00.4', 'nvidia-701')
        self.bus.create('0000:01:00.4', 'nvidia-701', 'u1')
        self.allocations[names.provider_name(
            self.env_.hostname, GPU, '3g.40gb')] = 1
        made = self.gpu_instances()
        self.assertEqual(before, self.offers(driver))
        self.assertEqual(before, self.offers(driver))
        self.assertEqual(made, self.gpu_instances())
        self.assertEqual([(9, 4)], made)

    def test_a_claim_on_the_7g_gpu_moves_the_7g_to_the_idle_one(self):
        driver = self.on_demand_driver()
        self.offers(driver)
        # A 1g claimed on GPU 1 (as if offered there before): GPU 1's
        # offer is its own from now on, and GPU 0 takes over the 7g: the
        # idle GPU covers what the busy one no longer can.
        self.allocations[names.provider_name(
            self.env_.hostname, GPU_1, '1g.10gb')] = 1
        offers = self.offers(driver)
        self.assertEqual({'7g.80gb': 1}, offers[GPU])
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, offers[GPU_1])
        self.assertIn('its part of the profiles spread', self.log.output)

    def test_a_gpu_whose_vgpus_cannot_be_listed_is_not_idle(self):
        nvml = self.env_.nvml
        real = nvml.nvmlDeviceGetActiveVgpus

        def not_supported(handle):
            if faults.gpu_of(nvml, handle) is nvml._gpus[1]:
                raise pynvml.NVMLError_NotSupported()
            return real(handle)

        self.patch(nvml, 'nvmlDeviceGetActiveVgpus', not_supported)
        # GPU 1 may hold a guest: it is not planned and keeps its own
        # offer, which covers 1g and 3g; GPU 0, the only idle GPU, leads
        # the 7g.
        offers = self.offers(self.on_demand_driver())
        self.assertEqual({'7g.80gb': 1}, offers[GPU])
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, offers[GPU_1])

    def test_a_failed_build_keeps_that_gpus_own_offer(self):
        driver = self.on_demand_driver()
        real = driver._offer_slices

        def fails_for_gpu_1(address, *args):
            if address == GPU_1 and args[-1] != {'1g.10gb': 4,
                                                 '3g.40gb': 1}:
                raise KeyError('broken')
            return real(address, *args)

        self.patch(driver, '_offer_slices', fails_for_gpu_1)
        offers = self.offers(driver)
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, offers[GPU_1])
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, offers[GPU])
        self.assertIn('keeps its own offer', self.log.output)


class IdleInstanceCleanUpTest(OnDemandCase):
    """The agent pass destroys idle instances left after a restart."""

    gpus = (0, 1)

    def make(self, nvml, *instances):
        """Create ``(GPU address, profile id, start)`` instances the way
        a bind does, as a previous agent would have left them.
        """
        create, _ = hosts.privileged_on(nvml)
        for address, profile_id, start in instances:
            create(address, profile_id, start)

    def on(self, nvml):
        create, destroy = hosts.privileged_on(nvml)
        return self.driver(self.env_, nvml=nvml,
                           create_gpu_instance=create,
                           destroy_gpu_instance=destroy)

    def left(self, nvml=None):
        """``{GPU address: [(profile id, start)]}`` NVML shows."""
        found = {}
        with nvml_adapter.Nvml(nvml or self.env_.nvml).session() as session:
            for index in range(session.device_count()):
                device = session.device(index)
                found[device.address] = [
                    (gi.profile_id, gi.start) for gi in session.gpu_instances(
                        device, session.gpu_instance_profiles(device))]
        return found

    def test_idle_instances_are_destroyed_after_a_restart(self):
        before = self.on_demand_driver()
        self.slices_of_both(before)
        before.prepare_unit('0000:01:00.4', 'nvidia-701')
        self.bus.create('0000:01:00.4', 'nvidia-701', 'u1')
        before.prepare_unit('0000:41:00.4', 'nvidia-700')
        self.bus.create('0000:41:00.4', 'nvidia-700', 'u2')
        # The agent restarts; the guest on GPU 1 goes meanwhile.
        self.bus.remove('0000:41:00.4', 'nvidia-700', 'u2')
        after = self.on_demand_driver()
        after.discover()
        # GPU 0's 3g may hold its guest; GPU 1's idle 1g is gone and its
        # slots are offered again.
        self.assertEqual({GPU: [(9, 4)], GPU_1: []}, self.left())
        self.assertIn('destroyed idle 1g.10gb GPU instance', self.log.output)
        # The next pass changes nothing.
        after.discover()
        self.assertEqual({GPU: [(9, 4)], GPU_1: []}, self.left())

    def slices_of_both(self, driver):
        return {gpu.address: gpu.slices for gpu in driver.collect().gpus}

    def test_half_created_and_every_idle_instance_of_a_profile_go(self):
        self.make(self.env_.nvml, (GPU, 19, 6), (GPU, 19, 5), (GPU_1, 0, 0))
        # A half-created one (its compute instance failed) too.
        [gpu] = [g for g in self.env_.nvml._gpus
                 if g.data['pci_bus_id'].lower().endswith('41:00.0')]
        for gpu_instance in gpu.gpu_instances:
            gpu_instance.compute_instances.clear()
        self.on_demand_driver().apply()
        self.assertEqual({GPU: [], GPU_1: []}, self.left())

    def test_keep_warm_keeps_them(self):
        self.conf.config(group='nvidia_mig', idle_instances='keep_warm')
        self.make(self.env_.nvml, (GPU, 19, 6))
        self.on_demand_driver().apply()
        self.assertEqual({GPU: [(19, 6)], GPU_1: []}, self.left())

    def test_static_mode_never_destroys(self):
        self.conf.config(group='nvidia_mig', mode='static')
        self.make(self.env_.nvml, (GPU, 19, 6))
        self.on_demand_driver().apply()
        self.assertEqual({GPU: [(19, 6)], GPU_1: []}, self.left())

    def test_an_mdev_of_the_profile_keeps_all_its_instances(self):
        # Which instance the mdev's guest will use cannot be told: both
        # 1g stay; the 3g, of a profile no mdev has, goes.
        self.make(self.env_.nvml, (GPU, 19, 6), (GPU, 19, 5), (GPU, 9, 0))
        self.bus.create('0000:01:00.4', 'nvidia-700', 'u1')
        self.on_demand_driver().apply()
        self.assertEqual({GPU: [(19, 5), (19, 6)], GPU_1: []}, self.left())

    def test_claims_not_bound_yet_keep_instances(self):
        self.make(self.env_.nvml, (GPU, 19, 6), (GPU, 19, 5), (GPU, 19, 4))
        self.allocations[names.provider_name(
            self.env_.hostname, GPU, '1g.10gb')] = 2
        self.on_demand_driver().apply()
        # The newest goes; two stay for the two claims.
        self.assertEqual(2, len(self.left()[GPU]))

    def test_an_mdev_of_an_unknown_type_keeps_the_gpu(self):
        self.make(self.env_.nvml, (GPU, 19, 6))
        hosts.add_mdev(self.env_.sysfs_root, '0000:01:00.5', 'nvidia-476')
        self.on_demand_driver().apply()
        self.assertEqual({GPU: [(19, 6)], GPU_1: []}, self.left())

    def test_an_unreadable_mdev_parent_keeps_the_gpu(self):
        self.make(self.env_.nvml, (GPU, 19, 6), (GPU_1, 19, 6))
        real = os.listdir
        parent = os.path.join('devices', '0000:01:00.7')

        def unreadable(path='.'):
            if str(path).endswith(parent):
                raise PermissionError(13, 'Permission denied', path)
            return real(path)

        self.patch(os, 'listdir', unreadable)
        self.on_demand_driver().apply()
        self.assertEqual({GPU: [(19, 6)], GPU_1: []}, self.left())
        self.assertIn('GPU index 0 cannot be read: PermissionError',
                      self.log.output)

    def test_a_failed_placement_read_keeps_that_gpu(self):
        self.make(self.env_.nvml, (GPU, 19, 6), (GPU_1, 19, 6))

        def fails_for_gpu_0(driver, name, resource_class):
            if name == names.provider_name(self.env_.hostname, GPU,
                                           '1g.10gb'):
                raise RuntimeError('Placement answered 503')
            return 0

        self.patch(driver_base.GpuPartitionDriver, 'allocated_units',
                   fails_for_gpu_0)
        self.on_demand_driver().apply()
        self.assertEqual({GPU: [(19, 6)], GPU_1: []}, self.left())
        self.assertIn('Placement usages of %s 1g.10gb cannot be read' % GPU,
                      self.log.output)

    def test_an_mdev_made_after_the_first_read_keeps_the_instance(self):
        self.make(self.env_.nvml, (GPU, 19, 6))
        driver = self.on_demand_driver()
        real = driver._claimed

        def mdev_appears(address, names_):
            # Between the mdev read and the destruction, a guest's mdev
            # is made on the idle instance.
            self.bus.create('0000:01:00.4', 'nvidia-700', 'late')
            return real(address, names_)

        self.patch(driver, '_claimed', mdev_appears)
        driver.apply()
        self.assertEqual({GPU: [(19, 6)], GPU_1: []}, self.left())

    def test_a_running_vgpu_whose_instance_nvml_cannot_name(self):
        self.make(self.env_.nvml, (GPU, 19, 6))
        [gpu] = [g for g in self.env_.nvml._gpus
                 if g.data['pci_bus_id'].lower().endswith('01:00.0')]
        gpu.data['active_vgpus'] = [{'vgpu_type': 700,
                                     'pci_bus_id': '00000000:01:00.4'}]
        self.on_demand_driver().apply()
        self.assertEqual([(19, 6)], self.left()[GPU])

    def test_a_bind_in_progress_keeps_the_gpu(self):
        self.make(self.env_.nvml, (GPU, 19, 6))
        driver = self.on_demand_driver()
        with driver.hold_unit('0000:01:00.4'):
            driver.apply()
        self.assertEqual([(19, 6)], self.left()[GPU])

    def test_nvml_errors_of_every_kind_stay_on_their_gpu(self):
        """Whatever NVML function the clean-up calls about GPU 0 fails,
        with whatever error: GPU 1 is cleared, GPU 0's 1g (an mdev of its
        profile exists) is never destroyed, and when the fault stops GPU
        0's clean-up (logged for GPU 0) before a destruction began, its
        idle 3g stays too.
        """
        section = self.env_.host.data['nvml']
        instances = ((GPU, 19, 6), (GPU, 9, 0), (GPU_1, 19, 6))
        hosts.add_mdev(self.env_.sysfs_root, '0000:01:00.4', 'nvidia-700')

        def clean_up(nvml):
            self.make(nvml._fake, *instances)
            self.on(nvml).apply()

        calls, _ = faults.gpu_calls(section, clean_up, 0)
        destroying = {'nvmlDeviceGetGpuInstanceById',
                      'nvmlGpuInstanceGetComputeInstances',
                      'nvmlComputeInstanceDestroy', 'nvmlGpuInstanceDestroy'}
        self.assertTrue(destroying <= set(calls), calls)
        stopped = 0
        for function in calls:
            for error_name, error in faults.ERRORS.items():
                nvml = faults.FaultyNvml(section, function, error, 0)
                self.make(nvml._fake, *instances)
                logged = len(self.log.output)
                self.on(nvml).apply()
                left = self.left(nvml._fake)
                where = (function, error_name)
                self.assertEqual([], left[GPU_1], where)
                self.assertIn((19, 6), left[GPU], where)
                if 'GPU index 0 cannot be read' in self.log.output[logged:]:
                    stopped += 1
                    if function not in destroying:
                        self.assertIn((9, 0), left[GPU], where)
        # Most faults stop the GPU's clean-up (NotSupported of an
        # optional read does not).
        self.assertGreater(stopped, len(calls) * 6)


class VendorVfioStaysStaticTest(test_nvidia_mig.DriverTestCase):

    def test_hopper_gpus_keep_their_instances(self):
        env = self.env(test_nvidia_mig.host_data('hgx-h100'))
        static = {gpu.address: [(s.name, s.total) for s in gpu.slices]
                  for gpu in self.driver(env).collect().gpus}
        self.conf.config(group='nvidia_mig', mode='on_demand')
        on_demand = {gpu.address: [(s.name, s.total) for s in gpu.slices]
                     for gpu in self.driver(env).collect().gpus}
        self.assertEqual(static, on_demand)
        self.assertIn('stay static in on_demand mode', self.log.output)

    def test_hopper_instances_are_never_cleared(self):
        # Its instances reach guests through vendor-VFIO VFs, which no
        # mdev shows: even when the VFs' interface cannot be told (read
        # as not vendor VFIO), they have no mdev parent and are left.
        env = self.env(test_nvidia_mig.host_data('hgx-h100'))
        self.conf.config(group='nvidia_mig', mode='on_demand')
        destroyed = []
        for vendor_vfio in (True, False):
            self.patch(nvidia_mig.nvidia_common, 'has_vendor_vfio_vfs',
                       lambda sysfs, address, answer=vendor_vfio: answer)
            self.driver(env, destroy_gpu_instance=lambda *args:
                        destroyed.append(args)).apply()
        self.assertEqual([], destroyed)
        self.assertTrue(any(
            device['gpu_instances'] for device in
            test_nvidia_mig.host_data('hgx-h100')['nvml']['devices']))
