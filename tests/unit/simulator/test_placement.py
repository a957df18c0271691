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
"""The in-memory Placement: providers, candidates, claims."""

import testtools

from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import placement
import placement_traits

MIG_1G = 'CUSTOM_MIG_1G_10GB'
MIG_7G = 'CUSTOM_MIG_7G_80GB'


class InMemoryPlacementTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        # Host 0: GPUs all-1g, whole, whole, 2g-x3-1g; host 1: 2 T4-8Q.
        self.fleet = fleet.Fleet(hosts=[
            fleet.make_host('h0', fleet.KINDS['a100-80gb-mig'], 96000,
                            65536, ['all-1g', 'whole', 'whole',
                                    '2g-x3-1g']),
            fleet.make_host('h1', fleet.KINDS['t4-vgpu'], 8000, 65536,
                            ['T4-8Q', 'T4-8Q'])])
        self.placement = placement.InMemoryPlacement.from_fleet(self.fleet)

    def _request(self, groups, cpu=1000, memory=1024):
        return placement.ResourceRequest(
            root=(('VCPU', cpu), ('MEMORY_MB', memory)),
            groups=tuple(groups))

    def _gpus(self, candidate):
        return sorted(self.placement.names[rp]
                      for rp in candidate['allocations']
                      if self.placement.providers[rp].parent)

    def test_providers_carry_the_drivers_traits(self):
        provider = next(p for p in self.placement.providers.values()
                        if p.name == 'h0_0000_18_00_0_7g_80gb')
        self.assertEqual({MIG_7G: 1}, provider.inventories)
        self.assertIn(placement_traits.physical_gpu_trait('0000:18:00.0'),
                      provider.traits)
        self.assertIn(placement_traits.OWNER_CYBORG, provider.traits)
        self.assertIn(placement_traits.vendor_trait('10de'), provider.traits)
        self.assertIn(placement_traits.TRAIT_MIG_BACKED, provider.traits)
        self.assertIn(placement_traits.nominal_framebuffer_trait(80),
                      provider.traits)
        # MIG-backed vGPUs get no NVLink P2P: no clique trait, as the MIG
        # driver reports them.
        self.assertIsNone(placement_traits.link_domain_of(provider.traits))

    def test_one_candidate_per_provider_that_fits(self):
        candidates, summaries = self.placement.allocation_candidates(
            self._request([(MIG_1G, 1)]))
        self.assertEqual([['h0_0000_10_00_0_1g_10gb'],
                          ['h0_0000_28_00_0_1g_10gb']],
                         [self._gpus(c) for c in candidates])
        root = placement.provider_uuid('h0')
        self.assertEqual({'VCPU': 1000, 'MEMORY_MB': 1024},
                         candidates[0]['allocations'][root]['resources'])
        self.assertEqual([root], candidates[0]['mappings'][''])
        self.assertEqual(6, len(summaries))   # h0's tree only
        self.assertEqual(
            {'capacity': 7, 'used': 0},
            summaries[placement.provider_uuid('h0_0000_10_00_0_1g_10gb')][
                'resources'][MIG_1G])

    def test_identical_groups_give_combinations(self):
        candidates, _ = self.placement.allocation_candidates(
            self._request([(MIG_7G, 1)] * 2))
        self.assertEqual(1, len(candidates))
        self.assertEqual(['', '1', '2'], sorted(candidates[0]['mappings']))
        self.assertEqual([], self.placement.allocation_candidates(
            self._request([(MIG_7G, 1)] * 3))[0])

    def test_root_resources_limit_hosts(self):
        request = self._request([('CUSTOM_VGPU_T4_8Q', 1)], cpu=9000)
        self.assertEqual([], self.placement.allocation_candidates(
            request)[0])

    def test_claim_and_release(self):
        request = self._request([(MIG_7G, 1)])
        candidates, _ = self.placement.allocation_candidates(request)
        self.assertEqual(2, len(candidates))
        self.assertTrue(self.placement.claim('a', candidates[0]))
        self.assertFalse(self.placement.claim('b', candidates[0]))
        after, summaries = self.placement.allocation_candidates(request)
        self.assertEqual([self._gpus(candidates[1])],
                         [self._gpus(c) for c in after])
        rp = placement.provider_uuid('h0_0000_18_00_0_7g_80gb')
        self.assertEqual(1, summaries[rp]['resources'][MIG_7G]['used'])
        self.assertEqual({'h0': {'VCPU': 1000, 'MEMORY_MB': 1024},
                          'h0_0000_18_00_0_7g_80gb': {MIG_7G: 1}},
                         self.placement.usages())
        self.placement.release('a')
        self.assertEqual({}, self.placement.usages())

    def test_cpu_only_request_lists_every_host(self):
        candidates, summaries = self.placement.allocation_candidates(
            placement.ResourceRequest(root=(('VCPU', 1000),)))
        self.assertEqual(2, len(candidates))
        # Every provider of both trees, in name order, the order the real
        # Placement's answer is given in (ordered_summaries).
        self.assertEqual(len(self.placement.providers), len(summaries))
        self.assertEqual(
            list(placement.ordered_summaries(summaries,
                                             self.placement.names)),
            list(summaries))
        self.assertEqual({}, self.placement.allocation_candidates(
            placement.ResourceRequest(root=(('VCPU', 10 ** 6),)))[1])

    def test_different_groups_take_distinct_providers(self):
        candidates, _ = self.placement.allocation_candidates(
            self._request([(MIG_7G, 1), (MIG_1G, 2)]))
        # The 1g provider of 0000:28 (2g-x3-1g) holds one unit, not two.
        self.assertEqual(
            [['h0_0000_10_00_0_1g_10gb', 'h0_0000_18_00_0_7g_80gb'],
             ['h0_0000_10_00_0_1g_10gb', 'h0_0000_20_00_0_7g_80gb']],
            [self._gpus(c) for c in candidates])
        self.assertEqual(
            {'resources': {MIG_1G: 2}},
            candidates[0]['allocations'][placement.provider_uuid(
                'h0_0000_10_00_0_1g_10gb')])
        self.assertEqual(['', '1', '2'], sorted(candidates[0]['mappings']))

    def test_candidates_stop_at_the_limit_in_normalised_order(self):
        request = self._request([(MIG_1G, 1)])
        every, _ = self.placement.allocation_candidates(request, limit=0)
        for limit in (1, 2, 3):
            some, _ = self.placement.allocation_candidates(request, limit)
            self.assertEqual(placement.normalise(every, self.placement.names,
                                                 limit), some)
        pairs, _ = self.placement.allocation_candidates(
            self._request([(MIG_1G, 1)] * 2), limit=1)
        self.assertEqual([['h0_0000_10_00_0_1g_10gb',
                           'h0_0000_28_00_0_1g_10gb']],
                         [self._gpus(c) for c in pairs])

    def test_normalise_drops_permutations(self):
        names = {'r': 'host', 'a': 'host_a', 'b': 'host_b'}
        first = {'allocations': {'a': {'resources': {MIG_7G: 1}},
                                 'b': {'resources': {MIG_7G: 1}}},
                 'mappings': {'1': ['a'], '2': ['b']}}
        second = {'allocations': {'b': {'resources': {MIG_7G: 1}},
                                  'a': {'resources': {MIG_7G: 1}}},
                  'mappings': {'1': ['b'], '2': ['a']}}
        self.assertEqual([first], placement.normalise([first, second],
                                                      names))

    def test_query_string(self):
        request = self._request([(MIG_7G, 1)] * 2)
        self.assertEqual(
            'resources=VCPU:1000,MEMORY_MB:1024&resources1=%s:1&'
            'resources2=%s:1&group_policy=isolate' % (MIG_7G, MIG_7G),
            request.query())
