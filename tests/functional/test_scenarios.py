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
"""The shared scenarios (also run by the tempest plugin) in-process.

The real drivers report a reference host through Cyborg's real conductor
into the real Placement; Nova's real scheduler runs our filter and
weigher; the scenarios of :mod:`gpu_partitions.scenarios` drive it.
"""

import copy

import fixtures

from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts
from gpu_partitions import scenarios
from tests.functional import base
from tests.functional import test_scheduler_gpu


class TestSharedScenarios(base.GpuCloudTestCase):

    ENABLED_FILTERS = test_scheduler_gpu.SchedulerTestBase.ENABLED_FILTERS
    EXTRA_FILTERS = test_scheduler_gpu.SchedulerTestBase.EXTRA_FILTERS
    WEIGHT_CLASSES = test_scheduler_gpu.SchedulerTestBase.WEIGHT_CLASSES

    def add_reference_host(self, name):
        host = reference_hosts.load(name)
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        self.add_gpu_host(host.hostname, fixture_drivers.discover_all(env))

    def busiest_resource_class(self, minimum_per_gpu):
        """A GPU resource class with enough units on at least two GPUs.

        With ``minimum_per_gpu`` of 2 or more, pack and spread must differ.
        """
        totals = {}
        for provider in scenarios.gpu_providers(self):
            if provider.total >= minimum_per_gpu:
                totals.setdefault(provider.resource_class, set()).add(
                    provider.gpu)
        candidates = sorted(rc for rc, gpus in totals.items()
                            if len(gpus) >= 2)
        self.assertNotEqual([], candidates)
        return candidates[0]

    def test_boot_each_slice_kind(self):
        # A host with no guest running: a unit a guest holds is reported
        # (Placement holds its allocation in a real cloud), but this fresh
        # Placement has no allocation for it.
        self.add_reference_host('hgx-h100')
        offered = {p.resource_class for p in scenarios.gpu_providers(self)}
        outcome = scenarios.boot_each_slice_kind(self)
        self.assertEqual(offered, set(outcome))
        for resource_class, (status, held) in outcome.items():
            self.assertEqual('ACTIVE', status, resource_class)
            self.assertEqual(1, len(held), resource_class)

    def test_pack_and_spread(self):
        self.add_reference_host('mi300x-cpx')
        resource_class = self.busiest_resource_class(minimum_per_gpu=2)
        packed = scenarios.series_of_boots(self, resource_class, 2, 'pack')
        self.assertEqual(1, len(set(packed)), packed)
        spread = scenarios.series_of_boots(self, resource_class, 2,
                                           'spread')
        self.assertEqual(2, len(set(spread)), spread)

    def test_eight_vf_request_inside_one_hive(self):
        # Two groups of four CPX VFs: eight VFs on two MI300X GPUs.
        self.add_reference_host('mi300x-cpx')
        resource_class = self.busiest_resource_class(minimum_per_gpu=4)
        status, domains = scenarios.multi_gpu_request(
            self, resource_class, gpus=2, link_affinity='required',
            per_gpu=4)
        self.assertEqual('ACTIVE', status)
        self.assertEqual(2, len(domains))
        self.assertEqual(1, len(set(domains)), domains)
        self.assertTrue(domains[0].startswith('CUSTOM_GPU_XGMI_HIVE_'))

    def test_link_affinity_keeps_gpus_of_one_hive_where_hives_split(self):
        # mi300x-spx (one whole-GPU VF per MI300X) with its GPUs in two
        # xGMI hives, interleaved in PCI order (illustrative: the shipped
        # host has one hive). AMD's GIM gives MxGPU VFs xGMI between the
        # GPUs of a hive, so here link affinity decides something.
        data = copy.deepcopy(reference_hosts.load('mi300x-spx').data)
        for number, gpu in enumerate(data['amdsmi']['gpus']):
            gpu['xgmi']['xgmi_hive_id'] += number % 2
        host = reference_hosts.ReferenceHost(data, 'mi300x-spx')
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        self.add_gpu_host(host.hostname, fixture_drivers.discover_all(env))
        resource_class = self.busiest_resource_class(minimum_per_gpu=1)
        self.assertEqual(2, len({p.link_domain
                                 for p in scenarios.gpu_providers(self)}))
        status, domains = scenarios.multi_gpu_request(
            self, resource_class, gpus=2, link_affinity='required')
        self.assertEqual('ACTIVE', status)
        self.assertEqual(2, len(domains))
        self.assertEqual(1, len(set(domains)), domains)

    def test_link_affinity_required_refuses_mig_slices(self):
        # MIG gives no GPU-to-GPU P2P: no MIG provider carries a link
        # trait, so two slices on two GPUs with links required find none.
        self.add_reference_host('hgx-h100')
        resource_class = self.busiest_resource_class(minimum_per_gpu=1)
        status, domains = scenarios.multi_gpu_request(
            self, resource_class, gpus=2, link_affinity='required')
        self.assertNotEqual('ACTIVE', status)
        status, domains = scenarios.multi_gpu_request(
            self, resource_class, gpus=2, link_affinity='preferred')
        self.assertEqual('ACTIVE', status)
        self.assertEqual([None, None], domains)

    def test_invalid_extra_spec_is_refused(self):
        error = scenarios.invalid_extra_spec(self)
        self.assertIsNotNone(error)
        self.assertIn('gpu_partitions:policy', error)
        self.assertIn('pack, spread', error)
