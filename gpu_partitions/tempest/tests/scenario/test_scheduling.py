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
"""Boots through Nova's scheduler with the GPU plugins; the scenario logic
is shared with the in-process functional tests."""

from tempest import config
from tempest.lib import decorators

from gpu_partitions import scenarios
from gpu_partitions.tempest.tests import base

CONF = config.CONF


class GpuSchedulingTest(base.GpuPartitionsTest):

    @decorators.idempotent_id('0d7e5b1c-7a7f-4c1e-8b2a-3c5d9e0f1a01')
    def test_boot_each_kind_of_slice(self):
        for resource_class, (status, held) in (
                scenarios.boot_each_slice_kind(self.cloud).items()):
            self.assertEqual('ACTIVE', status, resource_class)
            self.assertEqual(1, len(held), resource_class)

    def _roomy_resource_class(self, units):
        gpus = {}
        for provider in self.gpu_providers:
            if provider.total >= units:
                gpus.setdefault(provider.resource_class, set()).add(
                    provider.gpu)
        for resource_class, found in sorted(gpus.items()):
            if len(found) >= 2:
                return resource_class
        self.skipTest('no slice kind with %d units on two GPUs' % units)

    @decorators.idempotent_id('0d7e5b1c-7a7f-4c1e-8b2a-3c5d9e0f1a02')
    def test_pack_and_spread_per_gpu(self):
        resource_class = self._roomy_resource_class(2)
        packed = scenarios.series_of_boots(self.cloud, resource_class, 2,
                                           'pack')
        self.assertEqual(1, len(set(packed)), packed)
        spread = scenarios.series_of_boots(self.cloud, resource_class, 2,
                                           'spread')
        self.assertEqual(2, len(set(spread)), spread)

    @decorators.idempotent_id('0d7e5b1c-7a7f-4c1e-8b2a-3c5d9e0f1a03')
    def test_multi_gpu_request_inside_one_clique(self):
        resource_class = self._roomy_resource_class(1)
        status, domains = scenarios.multi_gpu_request(
            self.cloud, resource_class, gpus=2, link_affinity='required')
        self.assertEqual('ACTIVE', status)
        self.assertEqual(1, len(set(domains)), domains)

    @decorators.idempotent_id('0d7e5b1c-7a7f-4c1e-8b2a-3c5d9e0f1a04')
    def test_invalid_extra_spec_is_refused(self):
        error = scenarios.invalid_extra_spec(self.cloud)
        self.assertIsNotNone(error)
        self.assertIn('gpu_partitions:policy', error)
