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

from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers import base as driver_base
from cyborg_gpu_drivers import mig_layouts
from gpu_partitions.reference_hosts import fake_mdev
import placement_traits as names
from tests.unit.cyborg_gpu_drivers import hosts
from tests.unit.cyborg_gpu_drivers import test_nvidia_mig

GPU = '0000:01:00.0'
ALLOWED = 'A100 80GB PCIe=1g.10gb,3g.40gb,7g.80gb'


class OnDemandDriverTest(test_nvidia_mig.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.env_ = self.env(hosts.a100_on_demand())
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
