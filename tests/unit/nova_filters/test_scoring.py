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
"""The GPU view and the pure scores, over an HGX H100 host."""

import testtools

from nova_filters import allocations
from nova_filters import provider_summaries
from nova_filters import scoring
from nova_filters import topology
import placement_traits
from tests.unit.nova_filters import fakes

MIG_1G = fakes.mig('1g.10gb')
MIG_3G = fakes.mig('3g.40gb')


def _view(placement):
    return provider_summaries.parse(placement.summaries)


class GpuViewTest(testtools.TestCase):

    def test_mig_units_weigh_their_compute_slices(self):
        placement = fakes.FakePlacement()
        root = placement.add_host('h', fakes.hgx_gpus('mixed'))
        address = fakes.gpu_address(0)
        placement.claim({'allocations': {
            placement.provider(root, address, MIG_3G):
                {'resources': {MIG_3G: 1}}}})
        gpu = _view(placement).host(root).gpus[address]
        # Layout 3g + 2g + 2 x 1g = 7 slices; the 3g takes 3 of them.
        self.assertAlmostEqual(3 / 7, gpu.used_share)
        self.assertEqual(3, len(gpu.providers))
        self.assertFalse(gpu.is_idle)

    def test_vf_units_are_one_over_capacity(self):
        placement = fakes.FakePlacement()
        rc = placement_traits.vf_resource_class('MI300X', 'CPX')
        root = placement.add_host('amd', [
            {'layout': (rc, 8), 'clique': None, 'numa': 0}])
        rp = placement.provider(root, fakes.gpu_address(0), rc)
        placement.claim({'allocations': {rp: {'resources': {rc: 2}}}})
        gpu = _view(placement).host(root).gpus[fakes.gpu_address(0)]
        self.assertAlmostEqual(0.25, gpu.used_share)

    def test_topology_read_from_traits(self):
        placement = fakes.FakePlacement()
        root = placement.add_host('h', fakes.hgx_gpus(
            cliques=(1, 1, 1, 1, 2, 2, 2, 2)))
        host = _view(placement).host(root)
        self.assertEqual(8, len(host.gpus))
        gpu = host.gpus[fakes.gpu_address(5)]
        self.assertEqual(1, gpu.numa_node)
        self.assertEqual(placement_traits.nvlink_clique_trait(2),
                         gpu.link_domain)
        self.assertEqual(2, len({g.link_domain for g in host.gpus.values()}))

    def test_odd_summaries_are_skipped(self):
        placement = fakes.FakePlacement()
        root = placement.add_host('h', fakes.hgx_gpus())
        summaries = dict(placement.summaries)
        summaries['junk'] = {'resources': {MIG_1G: {'capacity': 'x'}}}
        summaries['none'] = None
        view = provider_summaries.parse(summaries)
        self.assertEqual(8, len(view.host(root).gpus))
        self.assertNotIn('junk', view.providers)

    def test_candidate_to_allocation_and_back(self):
        placement = fakes.FakePlacement()
        root = placement.add_host('h', fakes.hgx_gpus())
        view = _view(placement)
        candidate = placement.candidates(root, [('', MIG_1G, 2)])[3]
        allocation = allocations.gpu_allocation(view, candidate)
        self.assertEqual([2], list(allocation.values()))
        after = allocations.with_allocation(view, allocation)
        (uuid,) = allocation
        self.assertEqual(2, after.providers[uuid].used)
        self.assertEqual(0, view.providers[uuid].used)

    def test_topology_cache_rebuilds_a_view_without_usage(self):
        placement = fakes.FakePlacement()
        root = placement.add_host('h', fakes.hgx_gpus())
        now = [0.0]
        cache = topology.TopologyCache(60, clock=lambda: now[0])
        provider_summaries.parse(placement.summaries, topology=cache)
        remembered = cache.view_of({root})
        self.assertFalse(remembered.usage_known)
        self.assertEqual(8, len(remembered.host(root).gpus))
        now[0] = 61.0
        self.assertEqual({}, cache.view_of({root}).hosts)

    def test_changed_traits_are_read_at_the_next_request(self):
        placement = fakes.FakePlacement()
        root = placement.add_host('h', fakes.hgx_gpus())
        address = fakes.gpu_address(0)
        self.assertEqual(0, _view(placement).host(root).gpus[
            address].numa_node)
        summary = placement.summaries[
            placement.provider(root, address, MIG_1G)]
        summary['traits'] = [
            placement_traits.numa_node_trait(1) if trait.startswith(
                placement_traits.TRAIT_NUMA_NODE) else trait
            for trait in summary['traits']]
        self.assertEqual(1, _view(placement).host(root).gpus[
            address].numa_node)
        # Equal trait lists share one reading.
        self.assertIs(topology.topology_of(list(summary['traits'])),
                      topology.topology_of(tuple(summary['traits'])))

    def test_trait_lists_that_join_alike_are_read_apart(self):
        # The memo's key joins the names; a name holding the separator
        # (which Placement does not allow) must not take another list's
        # reading.
        pci = placement_traits.TRAIT_PHYSICAL_GPU + '0000_10_00_0'
        numa = placement_traits.numa_node_trait(1)
        separator = topology.TRAIT_SEPARATOR
        one = topology.topology_of([numa, pci])
        joined = topology.topology_of([numa + separator + pci])
        self.assertEqual('0000:10:00.0', one.gpu)
        self.assertIsNone(joined.gpu)
        self.assertIs(one, topology.topology_of([numa, pci]))
        self.assertEqual((numa + separator + pci,), joined.traits)

        placement = fakes.FakePlacement()
        root = placement.add_host('h', fakes.hgx_gpus('mixed'))
        uuid = placement.provider(root, fakes.gpu_address(0), MIG_1G)
        _view(placement)
        # Its names joined into one: no longer on GPU 0, its own GPU.
        placement.summaries[uuid]['traits'] = [separator.join(
            placement.summaries[uuid]['traits'])]
        view = _view(placement)
        self.assertEqual(uuid, view.provider(uuid).gpu)
        self.assertEqual(9, len(view.host(root).gpus))

    def test_interleaved_hosts_give_the_same_view(self):
        # Placement need not list a host's providers together.
        placement = fakes.FakePlacement()
        roots = [placement.add_host(name, fakes.hgx_gpus())
                 for name in ('a', 'b')]
        grouped = _view(placement)
        summaries = list(placement.summaries.items())
        interleaved = provider_summaries.parse(
            dict(summaries[::2] + summaries[1::2]))
        for root in roots:
            self.assertEqual(grouped.fill(root), interleaved.fill(root))
            self.assertEqual(grouped.host(root).gpus,
                             interleaved.host(root).gpus)


class ScoringTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.placement = fakes.FakePlacement()

    def _host(self, **kwargs):
        root = self.placement.add_host('h', fakes.hgx_gpus(**kwargs))
        return root

    def _use(self, root, gpu_index, rc, units):
        rp = self.placement.provider(root, fakes.gpu_address(gpu_index), rc)
        self.placement.claim({'allocations': {rp: {'resources': {rc: units}}}})
        return rp

    def _scores(self, root, policy):
        view = _view(self.placement)
        host = view.host(root)
        workloads = scoring.default_workloads(view)
        result = {}
        for candidate in self.placement.candidates(root, [('', MIG_1G, 1)]):
            allocation = allocations.gpu_allocation(view, candidate)
            (gpu,) = scoring.gpus_of(host, allocation)
            result[gpu.address] = scoring.candidate_score(
                host, allocation, policy, workloads)
        return result

    def test_pack_prefers_the_gpu_already_in_use(self):
        root = self._host()
        self._use(root, 3, MIG_1G, 2)
        scores = self._scores(root, scoring.PACK)
        self.assertEqual(fakes.gpu_address(3), max(scores, key=scores.get))

    def test_pack_takes_the_fullest_gpu_that_fits(self):
        root = self._host()
        self._use(root, 1, MIG_1G, 2)
        self._use(root, 5, MIG_1G, 5)
        self._use(root, 6, MIG_1G, 7)  # full: not a candidate
        scores = self._scores(root, scoring.PACK)
        self.assertNotIn(fakes.gpu_address(6), scores)
        self.assertEqual(fakes.gpu_address(5), max(scores, key=scores.get))

    def test_spread_takes_the_emptiest_gpu(self):
        root = self._host()
        for index in range(7):
            self._use(root, index, MIG_1G, 1 + index % 3)
        scores = self._scores(root, scoring.SPREAD)
        self.assertEqual(fakes.gpu_address(7), max(scores, key=scores.get))

    def test_pack_keeps_an_intact_clique_whole(self):
        # Two cliques of four. GPU 0 is full, so clique 1 is already
        # broken: the next slice opens an idle GPU of clique 1, never one
        # of the intact clique 2.
        root = self._host(cliques=(1, 1, 1, 1, 2, 2, 2, 2))
        self._use(root, 0, MIG_1G, 7)
        scores = self._scores(root, scoring.PACK)
        best = max(scores, key=scores.get)
        self.assertIn(best, [fakes.gpu_address(i) for i in (1, 2, 3)])

    def test_fragmentation_counts_unusable_free_capacity(self):
        root = self._host()
        view = _view(self.placement)
        workloads = scoring.default_workloads(view)
        self.assertEqual(0.0, scoring.fragmentation(view.host(root),
                                                    workloads))
        self._use(root, 0, MIG_1G, 3)
        view = _view(self.placement)
        # GPU 0 has 4/7 free that a whole-GPU or whole-clique request can
        # no longer use; 1g requests still can.
        whole = sum(w.weight for w in workloads.workloads
                    if w.kind != scoring.SLICE)
        self.assertAlmostEqual(
            4 / 7 * whole + 7 * 1.0 * [w.weight for w in workloads.workloads
                                       if w.kind ==
                                       scoring.WHOLE_LINK_DOMAIN][0],
            scoring.fragmentation(view.host(root), workloads))

    def test_link_and_numa_fit(self):
        root = self._host(cliques=(1, 1, 1, 1, 2, 2, 2, 2))
        view = _view(self.placement)
        host = view.host(root)

        def allocation(*indexes):
            return {self.placement.provider(root, fakes.gpu_address(i),
                                            MIG_1G): 1 for i in indexes}

        self.assertTrue(scoring.link_fit(host, allocation(0, 1, 2, 3)))
        self.assertFalse(scoring.link_fit(host, allocation(3, 4)))
        self.assertTrue(scoring.link_fit(host, allocation(6)))
        self.assertTrue(scoring.numa_fit(host, allocation(0, 3), 1))
        self.assertFalse(scoring.numa_fit(host, allocation(3, 4), 1))
        self.assertTrue(scoring.numa_fit(host, allocation(3, 4), 2))
        self.assertTrue(scoring.numa_fit(host, allocation(3, 4), None))

    def test_gpu_without_link_domain_never_fits_a_multi_gpu_request(self):
        root = self._host(cliques=(None,) * 8)
        view = _view(self.placement)
        host = view.host(root)
        two = {self.placement.provider(root, fakes.gpu_address(i),
                                       MIG_1G): 1 for i in (0, 1)}
        self.assertFalse(scoring.link_fit(host, two))
        self.assertEqual(
            [scoring.SLICE, scoring.WHOLE_GPU],
            [w.kind for w in scoring.default_workloads(view).workloads])


def _workload(vcpus=0, gpus=1, rc=MIG_1G, units=1, weight=1.0):
    return scoring.Workload(kind=scoring.SLICE, weight=weight,
                            resource_class=rc, units=units, gpus=gpus,
                            vcpus=vcpus)


class HostResourcesTest(testtools.TestCase):
    """Fragmentation counts the compute node's CPU and memory."""

    def setUp(self):
        super().setUp()
        self.placement = fakes.FakePlacement()

    def _root(self, name, free_vcpus, **gpus):
        root = self.placement.add_host(name, fakes.hgx_gpus(**gpus))
        vcpu = self.placement.summaries[root]['resources']['VCPU']
        vcpu['used'] = vcpu['capacity'] - free_vcpus
        return root

    def test_view_reads_free_vcpu_and_memory_of_the_compute_node(self):
        root = self._root('h', 10)
        host = _view(self.placement).host(root)
        self.assertEqual(10, host.free_vcpus)
        self.assertEqual(2 ** 21, host.free_memory_mb)
        candidate = self.placement.candidates(root, [('', MIG_1G, 1)])[0]
        self.assertEqual((4, 4096), allocations.host_resources(candidate))
        self.assertEqual((0, 0), allocations.host_resources({'junk': 1}))

    def test_a_workload_the_cpu_cannot_hold_strands_every_free_gpu(self):
        root = self._root('h', 16)
        host = _view(self.placement).host(root)
        mix = scoring.WorkloadMix([_workload(vcpus=8)])
        # 16 VCPUs hold two more 8-VCPU 1g instances: 2/7 of a GPU is
        # usable, the rest of the 8 free GPUs is stranded by the CPU.
        self.assertAlmostEqual(8 - 2 / 7, scoring.fragmentation(host, mix))
        # Taking 9 VCPUs leaves 7: the 8-VCPU workload fits nowhere, so
        # all 8 free GPUs are stranded.
        self.assertAlmostEqual(8.0, scoring.fragmentation(host, mix,
                                                          vcpus=9))

    def test_requests_for_another_gpu_model_do_not_dilute_a_host(self):
        root = self._root('h', 16)
        host = _view(self.placement).host(root)
        other = placement_traits.vf_resource_class('MI300X', 'CPX')
        # 90% of the requests are for a model this all-1g host lacks;
        # the 1g ones alone say how much of it is stranded, in GPUs.
        mix = scoring.WorkloadMix([_workload(vcpus=8, weight=0.1),
                                   _workload(rc=other, weight=0.9)])
        self.assertAlmostEqual(8 - 2 / 7, scoring.fragmentation(host, mix))
        # Taking 9 VCPUs strands the 2/7 the 1g requests could still use,
        # at full weight, not at a tenth of it.
        self.assertAlmostEqual(2 / 7, scoring.fragmentation(
            host, mix, vcpus=9) - scoring.fragmentation(host, mix))
        # A host serving none of the requests counts every one.
        self.assertAlmostEqual(8.0, scoring.fragmentation(
            host, scoring.WorkloadMix([_workload(rc=other)])))

    def test_cpu_only_request_goes_where_cpu_exceeds_what_gpus_need(self):
        # The typical request is a 1g with 2 VCPUs; the 56 free 1g
        # instances of a host need 112 VCPUs. 'short' has 100: every VCPU
        # taken strands GPU share. 'spare' has 250: 16 VCPUs strand none.
        short = self._root('short', 100)
        spare = self._root('spare', 250)
        view = _view(self.placement)
        mix = scoring.WorkloadMix([_workload(vcpus=2)])
        rise = {}
        for root in (short, spare):
            host = view.host(root)
            rise[root] = (scoring.fragmentation(host, mix, vcpus=16)
                          - scoring.fragmentation(host, mix))
        self.assertAlmostEqual(0.0, rise[spare])
        # 8 instances fewer: 8/7 of a GPU more stranded.
        self.assertAlmostEqual(8 / 7, rise[short])

    def test_unit_share_of_a_mig_profile_and_of_a_vf(self):
        mixed = self.placement.add_host('mixed', fakes.hgx_gpus('mixed'))
        vf = placement_traits.vf_resource_class('MI300X', 'CPX')
        vfs = self.placement.add_host(
            'vfs', [{'layout': (vf, 8), 'clique': None, 'numa': 0}])
        view = _view(self.placement)
        address = fakes.gpu_address(0)
        # 3 compute slices of the 7 the mixed layout offers.
        self.assertAlmostEqual(3 / 7, scoring._unit_share(
            view.host(mixed).gpus[address], MIG_3G))
        self.assertAlmostEqual(1 / 8, scoring._unit_share(
            view.host(vfs).gpus[address], vf))

    def test_pack_puts_the_slice_where_cpu_is_left_for_the_typical_one(self):
        tight = self._root('tight', 10)
        roomy = self._root('roomy', 40)
        view = _view(self.placement)
        mix = scoring.WorkloadMix([_workload(vcpus=8)])
        scores = {}
        for root in (tight, roomy):
            host = view.host(root)
            candidate = self.placement.candidates(root, [('', MIG_1G, 1)])[0]
            scores[root] = scoring.candidate_score(
                host, allocations.gpu_allocation(view, candidate),
                scoring.PACK,
                mix, vcpus=4)
        self.assertGreater(scores[roomy], scores[tight])

    def _half_full(self, name, free_vcpus):
        # GPUs 0 to 3 full: half the host's GPU share in use.
        root = self._root(name, free_vcpus)
        for index in range(4):
            rp = self.placement.provider(root, fakes.gpu_address(index),
                                         MIG_1G)
            self.placement.claim({'allocations': {rp: {'resources': {
                MIG_1G: 7}}}})
        return root

    def _pack_host_weights(self, roots, mix, vcpus):
        view = _view(self.placement)
        weights = {}
        for root in roots:
            host = view.host(root)
            found = [allocations.gpu_allocation(view, candidate)
                     for candidate in self.placement.candidates(
                         root, [('', MIG_1G, 1)])]
            best = max(scoring.rank_allocations(
                host, found, scoring.PACK, mix, vcpus=vcpus))
            weights[root] = scoring.host_score(host, best, scoring.PACK)
        return weights

    def test_pack_strands_least_before_it_fills_the_fullest_host(self):
        # The 28 free 1g instances of 'tight' need the 56 VCPUs it has
        # left: a 1g request with 4 VCPUs strands 1/7 of a GPU there. The
        # idle host has CPU to spare and strands nothing: it wins, though
        # 'tight' is half full.
        tight = self._half_full('tight', 56)
        idle = self._root('idle', 256)
        mix = scoring.WorkloadMix([_workload(vcpus=2)])
        weights = self._pack_host_weights((tight, idle), mix, vcpus=4)
        self.assertGreater(weights[idle], weights[tight])
        # Where neither strands anything, the fuller host wins.
        roomy = self._half_full('roomy', 256)
        weights = self._pack_host_weights((roomy, idle), mix, vcpus=4)
        self.assertGreater(weights[roomy], weights[idle])

    def test_host_fullness_weighs_three_hundredths_of_a_gpu(self):
        root = self._half_full('h', 256)
        host = _view(self.placement).host(root)
        # A placement stranding 0.02 GPU more on this half-full host
        # (fullness 0.5) loses to one stranding none on an idle host
        # (weight 0); a preferred affinity honoured outweighs both.
        self.assertAlmostEqual(0.015, scoring.host_score(
            host, (0, 0.0), scoring.PACK))
        self.assertAlmostEqual(-0.005, scoring.host_score(
            host, (0, -0.02), scoring.PACK))
        self.assertAlmostEqual(10.015, scoring.host_score(
            host, (1, 0.0), scoring.PACK))

    def test_a_multi_gpu_workload_needs_enough_usable_gpus_in_a_clique(self):
        root = self._root('h', 256, cliques=(1, 1, 1, 1, 2, 2, 2, 2))
        mix = scoring.WorkloadMix([_workload(gpus=4, units=7)])
        self.assertEqual(0.0, scoring.fragmentation(
            _view(self.placement).host(root), mix))
        for index in (0, 4):
            rp = self.placement.provider(root, fakes.gpu_address(index),
                                         MIG_1G)
            self.placement.claim({'allocations': {rp: {'resources': {
                MIG_1G: 1}}}})
        # Each clique keeps 3 whole GPUs: a 4-GPU workload fits neither,
        # so the free share of all eight GPUs is stranded.
        self.assertAlmostEqual(
            6 + 2 * 6 / 7,
            scoring.fragmentation(_view(self.placement).host(root), mix))
