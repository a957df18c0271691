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
"""Providers, traits and device profiles as the drivers report them."""

from tempest.lib import decorators

from gpu_partitions.tempest.tests import base
import placement_traits


class GpuProvidersTest(base.GpuPartitionsTest):

    @decorators.idempotent_id('6a0f3c1e-2f4b-4b7e-9d55-0e2c8a1b7f01')
    def test_providers_are_children_of_compute_nodes(self):
        by_uuid = {p.uuid: p for p in self.cloud.providers()}
        for provider in self.gpu_providers:
            parent = by_uuid[provider.uuid].parent_uuid
            self.assertIsNotNone(parent, provider.name)
            self.assertIsNone(by_uuid[parent].parent_uuid, provider.name)

    @decorators.idempotent_id('6a0f3c1e-2f4b-4b7e-9d55-0e2c8a1b7f02')
    def test_every_provider_names_its_physical_gpu(self):
        for provider in self.gpu_providers:
            self.assertIsNotNone(provider.gpu, provider.name)
            self.assertGreater(provider.total, 0, provider.name)

    @decorators.idempotent_id('6a0f3c1e-2f4b-4b7e-9d55-0e2c8a1b7f03')
    def test_traits_are_valid_placement_names(self):
        for provider in self.cloud.providers():
            if placement_traits.OWNER_CYBORG in provider.traits:
                for trait in provider.traits:
                    self.assertTrue(placement_traits.is_valid_trait(trait),
                                    trait)

    @decorators.idempotent_id('6a0f3c1e-2f4b-4b7e-9d55-0e2c8a1b7f04')
    def test_device_profile_for_each_resource_class(self):
        for resource_class in {p.resource_class
                               for p in self.gpu_providers}:
            profile = self.cloud.create_device_profile(
                'tempest-%s' % resource_class.lower().replace('_', '-'),
                [{'resources:%s' % resource_class: '1'}])
            self.assertIsNotNone(profile)
