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
"""One pass over the whole path.

Driver objects -> Cyborg's conductor -> Placement -> Nova's scheduler -> a
server holding a GPU slice.
"""

import json

import fixtures

from cyborg_gpu_drivers import report
from gpu_partitions.cloud import harness
from gpu_partitions.cloud import samples
from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts
import placement_traits
from tests.functional import base


class TestSmoke(base.GpuCloudTestCase):

    def test_reported_slice_is_scheduled(self):
        host = samples.h100_mig_host()
        [gpu] = host.gpus
        small, large = gpu.slices

        writes = self.add_inventory(host, samples.DRIVER_NAME)
        self.assertNotEqual([], writes)

        compute_node = self.provider(host.hostname)
        for slice_ in (small, large):
            name = placement_traits.provider_name(
                host.hostname, gpu.address, slice_.name)
            provider = self.provider(name)
            self.assertEqual(compute_node.uuid, provider.parent_uuid)
            self.assertStableUuid(provider)
            self.assertEqual({slice_.resource_class: slice_.total},
                             provider.inventories)
            for trait in (placement_traits.OWNER_CYBORG,
                          placement_traits.physical_gpu_trait(gpu.address),
                          placement_traits.model_trait(gpu.model),
                          placement_traits.mig_profile_trait(slice_.name)):
                self.assertIn(trait, provider.traits)

        # The agent's next cycle reports the same devices: nothing to
        # write. Nova's resource tracker leaves the children it did not
        # create alone.
        providers = self.providers()
        same_devices = report.to_driver_devices(samples.h100_mig_host(),
                                                samples.DRIVER_NAME)
        self.assertEqual([], self.report(host.hostname, same_devices))
        self.run_periodics()
        self.assertEqual(providers, self.providers())

        # Nova's Cyborg flow: a device profile for the small slice.
        small_name = placement_traits.provider_name(
            host.hostname, gpu.address, small.name)
        self.create_device_profile('mig-small', [
            harness.device_profile_group(
                small.resource_class,
                required_traits=[
                    placement_traits.mig_profile_trait(small.name),
                    placement_traits.model_trait(gpu.model)])])
        server = self.boot(self.create_flavor(
            harness.accel_extra_specs('mig-small')))
        self.assertLandedOn(server, host.hostname, small_name,
                            small.resource_class)
        [arq] = self.arqs(server)
        self.assertEqual('Bound', arq['state'])
        self.assertEqual(self.provider(small_name).uuid,
                         arq['device_rp_uuid'])
        self.assertEqual('PCI', arq['attach_handle_type'])
        self.assertIn(self.pci_address(arq['attach_handle_info']),
                      [handle.address for handle in small.handles])

        # Plain flavor extra specs: the large slice.
        large_name = placement_traits.provider_name(
            host.hostname, gpu.address, large.name)
        server = self.boot(self.create_flavor(harness.gpu_extra_specs(
            large.resource_class,
            required_traits=[placement_traits.mig_profile_trait(large.name)]
        )))
        self.assertLandedOn(server, host.hostname, large_name,
                            large.resource_class)
        self.assertEqual([], self.arqs(server))

        usages = self.provider_usages()
        self.assertEqual({small.resource_class: 1}, usages[small_name])
        self.assertEqual({large.resource_class: 1}, usages[large_name])


class TestSmokeFromReferenceHost(base.GpuCloudTestCase):

    def test_reference_host_through_the_real_drivers(self):
        host = reference_hosts.load('hgx-h100')
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        devices = fixture_drivers.discover_all(env)
        self.add_gpu_host(host.hostname, devices)

        # Every deployable the drivers reported is a provider under the
        # compute node with its resource class, total and traits.
        compute_node = self.provider(host.hostname)
        deployables = {d.name: d for device in devices
                       for d in device.deployable_list}
        self.assertEqual(15, len(deployables))
        for name, deployable in deployables.items():
            attributes = {a.key: a.value for a in deployable.attribute_list}
            provider = self.provider(name)
            self.assertEqual(compute_node.uuid, provider.parent_uuid)
            self.assertStableUuid(provider)
            self.assertEqual({attributes['rc']: deployable.num_accelerators},
                             provider.inventories)
            self.assertEqual(
                sorted(v for k, v in attributes.items()
                       if k.startswith('trait')), provider.traits)

        # The whole GPU slice through Nova's Cyborg flow.
        resource_class = placement_traits.mig_resource_class('7g.80gb')
        [(name, deployable)] = [
            (name, d) for name, d in deployables.items()
            if {a.value for a in d.attribute_list} & {resource_class}]
        self.create_device_profile('whole-h100', [
            harness.device_profile_group(resource_class)])
        server = self.boot(self.create_flavor(
            harness.accel_extra_specs('whole-h100')))
        self.assertLandedOn(server, host.hostname, name, resource_class)
        [arq] = self.arqs(server)
        self.assertEqual('Bound', arq['state'])
        self.assertEqual('PCI', arq['attach_handle_type'])
        self.assertIn(arq['attach_handle_info'],
                      [json.loads(h.attach_info)
                       for h in deployable.attach_handle_list])
