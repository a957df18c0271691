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
"""GpuPartitionFilter and GpuPartitionWeigher with Nova's FakeHostState
and weight handler over an HGX H100 host's candidate lists."""

import copy
import gc
import threading
from unittest import mock

import fixtures

import uuid
import weakref

from nova import objects
from nova.scheduler import filters as nova_filters_api
from nova.scheduler import weights as nova_weights
from nova import test

from nova_filters import allocations
from nova_filters import conf
from nova_filters import gpu_filter
from nova_filters import gpu_weigher
from nova_filters import provider_summaries
from nova_filters import request_view
from nova_filters import summary_source
from nova_filters import topology
from tests.unit.nova_filters import fakes

MIG_1G = fakes.mig('1g.10gb')
CLIQUES = (1, 1, 1, 1, 2, 2, 2, 2)


class PluginTestBase(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.placement = fakes.FakePlacement()
        self.views = request_view.RequestViews(query=self.placement.query)
        self.filter = gpu_filter.GpuPartitionFilter(views=self.views)
        self.weigher = gpu_weigher.GpuPartitionWeigher(views=self.views)

    def gpu_flags(self, **kw):
        self.flags(group='gpu_partitions_scheduler', **kw)

    def _use(self, root, gpu_index, units, rc=MIG_1G):
        rp = self.placement.provider(root, fakes.gpu_address(gpu_index), rc)
        self.placement.claim({'allocations': {rp: {'resources': {rc: units}}}})

    def _hosts(self, groups, names=('h1',), **gpus):
        roots = [self.placement.add_host(name, fakes.hgx_gpus(**gpus))
                 for name in names]
        return roots

    def _states(self, roots, groups, aggregates=None):
        return [fakes.host_state(
            'h%d' % (i + 1), root, self.placement.candidates(root, groups),
            aggregates=(aggregates or {}).get(i, ()))
            for i, root in enumerate(roots)]

    def _gpus_of_first(self, state):
        view = provider_summaries.parse(self.placement.summaries)
        allocation = allocations.gpu_allocation(
            view, state.allocation_candidates[0])
        host = view.host(state.uuid)
        return sorted(fakes.gpu_address_index(host.gpu_of_provider[u])
                      for u in allocation)

    def _weigh(self, states, spec):
        return nova_weights.HostWeightHandler().get_weighed_objects(
            [self.weigher], states, spec)


class FilterTest(PluginTestBase):

    def _four_gpu_request(self):
        return [(str(i), MIG_1G, 7) for i in range(4)]

    def test_required_keeps_only_candidates_inside_one_clique(self):
        self.gpu_flags(link_affinity='required')
        (root,) = self._hosts(None, cliques=CLIQUES)
        states = self._states([root], self._four_gpu_request())
        self.assertEqual(1680, len(states[0].allocation_candidates))
        passed = self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual(1, len(passed))
        # 4 GPUs out of one clique of 4, in any order of the 4 groups.
        self.assertEqual(2 * 24, len(passed[0].allocation_candidates))
        for candidate in passed[0].allocation_candidates:
            gpus = {fakes.gpu_address_index(self._address(root, rp))
                    for rp in candidate['allocations'] if rp != root}
            self.assertIn(gpus, ({0, 1, 2, 3}, {4, 5, 6, 7}))

    def _address(self, root, rp):
        view = provider_summaries.parse(self.placement.summaries)
        return view.host(root).gpu_of_provider[rp]

    def test_required_drops_a_host_without_a_fitting_clique(self):
        self.gpu_flags(link_affinity='required')
        (root,) = self._hosts(None, cliques=CLIQUES)
        self._use(root, 0, 7)  # clique 1 has 3 GPUs free, clique 2 has 4
        self._use(root, 4, 7)
        states = self._states([root], self._four_gpu_request())
        self.assertNotEqual([], states[0].allocation_candidates)
        self.assertEqual(
            [], self.filter.filter_all(states, fakes.request_spec()))

    def test_preferred_keeps_all_and_orders_clique_first(self):
        self.gpu_flags(link_affinity='preferred')
        (root,) = self._hosts(None, cliques=CLIQUES)
        self._use(root, 0, 7)
        states = self._states([root], self._four_gpu_request())
        count = len(states[0].allocation_candidates)
        passed = self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual(count, len(passed[0].allocation_candidates))
        self.assertEqual([4, 5, 6, 7], self._gpus_of_first(passed[0]))

    def test_flavor_extra_spec_overrides_config(self):
        self.gpu_flags(link_affinity='none')
        (root,) = self._hosts(None, cliques=CLIQUES)
        self._use(root, 0, 7)
        self._use(root, 4, 7)
        spec = fakes.request_spec(
            {'gpu_partitions:link_affinity': 'required'})
        states = self._states([root], self._four_gpu_request())
        self.assertEqual([], self.filter.filter_all(states, spec))

    def test_aggregate_metadata_overrides_config(self):
        self.gpu_flags(link_affinity='none')
        roots = self._hosts(None, names=('h1', 'h2'), cliques=CLIQUES)
        for root in roots:
            self._use(root, 0, 7)
            self._use(root, 4, 7)
        states = self._states(roots, self._four_gpu_request(), aggregates={
            1: [fakes.aggregate({'gpu_partitions_link_affinity':
                                 'required'})]})
        passed = self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual(['h1'], [h.host for h in passed])

    def test_numa_required_for_an_instance_with_one_numa_cell(self):
        self.gpu_flags(link_affinity='none', numa_affinity='required')
        (root,) = self._hosts(None, cliques=(None,) * 8)
        groups = [('1', MIG_1G, 7), ('2', MIG_1G, 7)]
        states = self._states([root], groups)
        passed = self.filter.filter_all(
            states, fakes.request_spec(numa_cells=1))
        for candidate in passed[0].allocation_candidates:
            gpus = {fakes.gpu_address_index(self._address(root, rp)) // 4
                    for rp in candidate['allocations'] if rp != root}
            self.assertEqual(1, len(gpus))
        # Without a NUMA topology every candidate stays.
        states = self._states([root], groups)
        passed = self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual(56, len(passed[0].allocation_candidates))

    def test_rebuild_passes_untouched(self):
        self.gpu_flags(link_affinity='required')
        (root,) = self._hosts(None)
        state = fakes.host_state('h1', root, [])
        spec = fakes.request_spec()
        spec.scheduler_hints = {'_nova_check_type': ['rebuild']}
        self.assertEqual([state], self.filter.filter_all([state], spec))
        self.assertEqual(0, self.placement.queries)

    def test_request_without_gpu_asks_placement_nothing(self):
        (root,) = self._hosts(None)
        state = fakes.host_state('h1', root, [
            {'allocations': {root: {'resources': {'VCPU': 1}}},
             'mappings': {'': [root]}}])
        self.assertEqual([state], self.filter.filter_all(
            [state], fakes.request_spec()))
        self.assertEqual([0.0], self.weigher.weigh_objects(
            [nova_weights.WeighedHost(state, 0.0)], fakes.request_spec()))
        self.assertEqual(0, self.placement.queries)

    def test_request_without_gpu_goes_where_it_strands_no_gpu(self):
        # h1's GPUs are idle but its CPU is nearly gone; h2 has the same
        # GPUs half used and CPU to spare; h3 has no GPU at all.
        views = request_view.RequestViews(query=self.placement.query,
                                          query_without_gpu=True)
        weigher = gpu_weigher.GpuPartitionWeigher(views=views)
        roots = self._hosts(None, names=('h1', 'h2'))
        for index in range(4):
            self._use(roots[1], index, 7)
        self.placement.summaries[roots[0]]['resources']['VCPU']['used'] = 250
        bare = self.placement.add_host('h3', [])
        gpu_spec = fakes.request_spec()
        for _ in range(30):
            # Typical requests: one 1g slice with 4 VCPUs.
            views.view_for(gpu_spec, self._states(roots, [('', MIG_1G, 1)]))
            gpu_spec = fakes.request_spec()

        def cpu_only(root, name):
            return fakes.host_state(name, root, [
                {'allocations': {root: {'resources': {'VCPU': 4}}},
                 'mappings': {'': [root]}}])

        states = [cpu_only(roots[0], 'h1'), cpu_only(roots[1], 'h2')]
        weights = weigher.weigh_objects(
            [nova_weights.WeighedHost(s, 0.0) for s in states],
            fakes.request_spec())
        # On h1 the 6 VCPUs left hold 1.5 typical 1g instances, 1.5/7 of
        # a GPU; the other idle GPU share is stranded by the CPU already.
        # 2 VCPUs left would hold none: the request strands that 1.5/7.
        self.assertAlmostEqual(-1.5 / 7, weights[0], places=3)
        self.assertGreater(weights[1], 0.0)
        states.append(cpu_only(bare, 'h3'))
        weighed = nova_weights.HostWeightHandler().get_weighed_objects(
            [weigher], states, fakes.request_spec())
        self.assertEqual(['h3', 'h2', 'h1'],
                         [w.obj.host for w in weighed])
        self.gpu_flags(weigh_requests_without_gpu=False)
        self.assertEqual([0.0, 0.0], weigher.weigh_objects(
            [nova_weights.WeighedHost(s, 0.0) for s in states[:2]],
            fakes.request_spec()))

    def test_single_host_candidates_are_ordered_by_the_filter(self):
        (root,) = self._hosts(None)
        self._use(root, 6, 3)
        states = self._states([root], [('', MIG_1G, 1)])
        self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual([6], self._gpus_of_first(states[0]))


class WeigherTest(PluginTestBase):

    def test_pack_picks_the_fuller_host_and_its_fullest_gpu(self):
        roots = self._hosts(None, names=('h1', 'h2', 'h3'))
        self._use(roots[1], 2, 3)
        self._use(roots[1], 5, 5)
        self._use(roots[2], 0, 1)
        states = self._states(roots, [('', MIG_1G, 1)])
        weighed = self._weigh(states, fakes.request_spec())
        self.assertEqual('h2', weighed[0].obj.host)
        self.assertEqual([5], self._gpus_of_first(weighed[0].obj))
        self.assertEqual(1, self.placement.queries)

    def test_spread_picks_the_emptier_host_and_its_emptiest_gpu(self):
        self.gpu_flags(policy='spread')
        roots = self._hosts(None, names=('h1', 'h2'))
        for index in range(8):
            self._use(roots[0], index, 1)
        for index in range(7):
            self._use(roots[1], index, 2)
        states = self._states(roots, [('', MIG_1G, 1)])
        weighed = self._weigh(states, fakes.request_spec())
        self.assertEqual('h1', weighed[0].obj.host)
        # All GPUs of h1 hold one slice; h2's idle GPU 7 is its best.
        self.assertEqual([7], self._gpus_of_first(states[1]))

    def test_flavor_policy_overrides_aggregate_and_config(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        self._use(roots[0], 0, 4)
        aggregates = {i: [fakes.aggregate({'gpu_partitions_policy': 'pack'})]
                      for i in range(2)}
        self.gpu_flags(policy='spread')
        states = self._states(roots, [('', MIG_1G, 1)], aggregates)
        self.assertEqual('h1', self._weigh(
            states, fakes.request_spec())[0].obj.host)
        states = self._states(roots, [('', MIG_1G, 1)], aggregates)
        spec = fakes.request_spec({'gpu_partitions:policy': 'spread'})
        self.assertEqual('h2', self._weigh(states, spec)[0].obj.host)

    def test_aggregate_weight_multiplier(self):
        (root,) = self._hosts(None)
        state = fakes.host_state('h1', root, [], aggregates=[
            fakes.aggregate({'gpu_partitions_weight_multiplier': '3.5'})])
        self.assertEqual(3.5, self.weigher.weight_multiplier(state))
        self.gpu_flags(weight_multiplier=2.0)
        self.assertEqual(2.0, self.weigher.weight_multiplier(
            fakes.host_state('h2', root, [])))

    def test_filter_and_weigher_share_one_placement_request(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        states = self._states(roots, [('', MIG_1G, 1)])
        spec = fakes.request_spec()
        passed = self.filter.filter_all(states, spec)
        self._weigh(passed, spec)
        self.assertEqual(1, self.placement.queries)
        # Another request asks again.
        self._weigh(self._states(roots, [('', MIG_1G, 1)]),
                    fakes.request_spec())
        self.assertEqual(2, self.placement.queries)

    def test_multi_create_accounts_claims_without_asking_again(self):
        (root,) = self._hosts(None)
        self._use(root, 2, 1)
        states = self._states([root], [('', MIG_1G, 1)])
        spec = fakes.request_spec()
        placed = []
        for index in range(7):
            spec.instance_uuid = str(uuid.uuid4())
            state = self.filter.filter_all(states, spec)[0]
            claimed = state.allocation_candidates[0]
            placed.append(self._gpus_of_first(state)[0])
            # What Nova does after a claim; the list is not refreshed.
            self.placement.claim(claimed)
            state.num_instances += 1
        # GPU 2 fills up (it had 1 of 7 used), then an idle GPU opens.
        self.assertEqual([2] * 6, placed[:6])
        self.assertNotEqual(2, placed[6])
        self.assertEqual(1, self.placement.queries)

    def test_placement_down_gives_neutral_weights_and_one_warning(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        views = request_view.RequestViews(
            query=mock.Mock(side_effect=RuntimeError('503')))
        weigher = gpu_weigher.GpuPartitionWeigher(views=views)
        flt = gpu_filter.GpuPartitionFilter(views=views)
        states = self._states(roots, [('', MIG_1G, 1)])
        before = [list(s.allocation_candidates) for s in states]
        spec = fakes.request_spec()
        with mock.patch.object(request_view.LOG, 'warning') as warning:
            passed = flt.filter_all(states, spec)
            weights = weigher.weigh_objects(
                [nova_weights.WeighedHost(s, 0.0) for s in passed], spec)
        self.assertEqual(1, warning.call_count)
        self.assertEqual([0.0, 0.0], weights)
        self.assertEqual(before, [s.allocation_candidates for s in states])

    def test_required_affinity_survives_placement_down(self):
        self.gpu_flags(link_affinity='required')
        (root,) = self._hosts(None, cliques=CLIQUES)
        self._use(root, 0, 7)
        self._use(root, 4, 7)
        cache = topology.TopologyCache(600)
        provider_summaries.parse(self.placement.summaries, topology=cache)
        views = request_view.RequestViews(
            query=mock.Mock(side_effect=RuntimeError('503')),
            topology=cache)
        flt = gpu_filter.GpuPartitionFilter(views=views)
        states = self._states([root], [(str(i), MIG_1G, 7)
                                       for i in range(4)])
        self.assertEqual([], flt.filter_all(states, fakes.request_spec()))

    def test_odd_candidates_do_not_break_scheduling(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        states = self._states(roots, [('', MIG_1G, 1)])
        states[0].allocation_candidates.append({'allocations': 'odd'})
        states[1].allocation_candidates.insert(0, {'no': 'allocations'})
        spec = fakes.request_spec()
        passed = self.filter.filter_all(states, spec)
        self.assertEqual(2, len(passed))
        self.assertEqual(2, len(self._weigh(passed, spec)))


class LoadingTest(test.NoDBTestCase):

    def test_nova_loads_the_plugins_by_their_documented_paths(self):
        self.assertEqual(
            [gpu_filter.GpuPartitionFilter],
            nova_filters_api.HostFilterHandler().get_matching_classes(
                ['nova_filters.gpu_filter.GpuPartitionFilter']))
        self.assertEqual(
            [gpu_weigher.GpuPartitionWeigher],
            nova_weights.HostWeightHandler().get_matching_classes(
                ['nova_filters.gpu_weigher.GpuPartitionWeigher']))

    def test_options_listed_for_the_sample(self):
        ((group, opts),) = conf.list_opts()
        self.assertEqual('gpu_partitions_scheduler', group.name)
        self.assertEqual(
            {'policy', 'link_affinity', 'numa_affinity', 'weight_multiplier',
             'reuse_scheduler_query', 'request_view_ttl',
             'topology_cache_ttl', 'workload_window', 'workload_classes',
             'weigh_requests_without_gpu', 'passthrough_resource_classes'},
            {opt.name for opt in opts})
        self.assertIsInstance(objects.RequestSpec(), objects.RequestSpec)


class InFlightTest(PluginTestBase):

    def test_concurrent_request_counts_what_the_other_is_about_to_claim(self):
        (root,) = self._hosts(None)
        self._use(root, 3, 6)  # one VF-backed 1g slice left on GPU 3
        first, second = fakes.request_spec(), fakes.request_spec()
        states_a = self._states([root], [('', MIG_1G, 1)])
        states_b = self._states([root], [('', MIG_1G, 1)])
        self.views.view_for(second, states_b)  # both read usage first
        self.filter.filter_all(states_a, first)
        self.assertEqual([3], self._gpus_of_first(states_a[0]))
        self.filter.filter_all(states_b, second)
        # GPU 3's last unit is taken by the first request: another GPU.
        self.assertNotEqual([3], self._gpus_of_first(states_b[0]))
        self.assertEqual(2, self.placement.queries)

    def test_a_claimed_reservation_is_not_counted_twice(self):
        (root,) = self._hosts(None)
        self._use(root, 3, 5)  # two 1g slices left on GPU 3
        first = fakes.request_spec()
        first_states = self._states([root], [('', MIG_1G, 1)])
        self.filter.filter_all(first_states, first)
        # Nova claims it, consumes the request on that HostState and
        # returns: its HostStates are freed.
        self.placement.claim(first_states[0].allocation_candidates[0])
        first_states[0].num_instances += 1
        del first_states
        # The next request reads Placement after that claim.
        states = self._states([root], [('', MIG_1G, 1)])
        self.filter.filter_all(states, fakes.request_spec())
        # GPU 3 has one slice left in Placement: the next request takes it.
        self.assertEqual([3], self._gpus_of_first(states[0]))

    def _claim_after_the_other_read(self, end):
        """The second request reads Placement, then the first one is
        scheduled onto GPU 3's last slice, claims it, and ``end``s (given
        its HostStates); then the second request is scheduled. The GPUs of
        the second request's first candidate.
        """
        (root,) = self._hosts(None)
        self._use(root, 3, 6)  # one VF-backed 1g slice left on GPU 3
        first, second = fakes.request_spec(), fakes.request_spec()
        states_b = self._states([root], [('', MIG_1G, 1)])
        self.views.view_for(second, states_b)
        states_a = self._states([root], [('', MIG_1G, 1)])
        self.filter.filter_all(states_a, first)
        self.assertEqual([3], self._gpus_of_first(states_a[0]))
        # Nova claims it and consumes the request on that HostState.
        self.placement.claim(states_a[0].allocation_candidates[0])
        states_a[0].num_instances += 1
        end(states_a)
        self.filter.filter_all(states_b, second)
        return self._gpus_of_first(states_b[0])

    def test_a_claim_after_the_answer_was_read_still_counts(self):
        # Placement's answer to the second request does not show the
        # first one's claim: counting it no more would give the second the
        # same slice, whose claim Placement refuses (NoValidHost on the
        # last host).
        self.assertNotEqual([3], self._claim_after_the_other_read(
            lambda states: None))

    def test_a_returned_request_still_counts_for_an_older_answer(self):
        # Its HostStates are freed when select_destinations returns.
        self.assertNotEqual([3], self._claim_after_the_other_read(
            lambda states: states.clear()))

    def test_a_claim_counts_for_an_older_answer_until_no_one_has_one(self):
        clock = mock.Mock(return_value=100.0)
        views = request_view.RequestViews(query=self.placement.query,
                                          clock=clock)
        flt = gpu_filter.GpuPartitionFilter(views=views)
        (root,) = self._hosts(None)
        self._use(root, 3, 6)  # one VF-backed 1g slice left on GPU 3
        second = fakes.request_spec()
        states_b = self._states([root], [('', MIG_1G, 1)])
        views.view_for(second, states_b)
        clock.return_value = 101.0
        states_a = self._states([root], [('', MIG_1G, 1)])
        flt.filter_all(states_a, fakes.request_spec())
        self.placement.claim(states_a[0].allocation_candidates[0])
        states_a.clear()  # claimed and returned
        # Long after IN_FLIGHT_SECONDS, another request comes and goes...
        clock.return_value = 110.0
        flt.filter_all(self._states([root], [('', MIG_1G, 1)]),
                       fakes.request_spec())
        # ...and the second request, whose answer is older than the
        # claim, still counts it.
        flt.filter_all(states_b, second)
        self.assertNotEqual([3], self._gpus_of_first(states_b[0]))
        # Once no request being scheduled read Placement before the claim,
        # it is forgotten: nothing is left to count.
        states_b.clear()
        flt.filter_all(self._states([root], [('', MIG_1G, 1)]),
                       fakes.request_spec())
        self.assertEqual({}, views.reservations._returned)

    def test_a_multi_create_claim_counts_for_an_older_answer(self):
        (root,) = self._hosts(None)
        self._use(root, 3, 6)  # GPU 3: one slice left
        self._use(root, 4, 5)  # GPU 4: two
        first, second = fakes.request_spec(), fakes.request_spec()
        states_b = self._states([root], [('', MIG_1G, 1)])
        self.views.view_for(second, states_b)
        states_a = self._states([root], [('', MIG_1G, 1)])
        placed = []
        for _ in range(2):
            first.instance_uuid = str(uuid.uuid4())
            state = self.filter.filter_all(states_a, first)[0]
            placed.append(self._gpus_of_first(state))
            self.placement.claim(state.allocation_candidates[0])
            state.num_instances += 1
        self.assertEqual([[3], [4]], placed)
        # Both claims came after the second request's answer: GPU 3 is
        # full, GPU 4 has one slice left.
        self.filter.filter_all(states_b, second)
        self.assertEqual([4], self._gpus_of_first(states_b[0]))

    def test_a_finished_request_no_longer_counts(self):
        (root,) = self._hosts(None)
        self._use(root, 3, 6)
        first = fakes.request_spec()
        self.filter.filter_all(self._states([root], [('', MIG_1G, 1)]),
                               first)
        # Its HostStates are gone: select_destinations returned without
        # claiming there.
        states = self._states([root], [('', MIG_1G, 1)])
        self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual([3], self._gpus_of_first(states[0]))

    def test_only_the_weighers_best_host_is_reserved(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        self._use(roots[0], 3, 6)
        self._use(roots[1], 5, 6)
        first = fakes.request_spec()
        first_states = self.filter.filter_all(
            self._states(roots, [('', MIG_1G, 1)]), first)
        self._weigh(first_states, first)
        second = fakes.request_spec()
        weighed = self._weigh(self._states(roots, [('', MIG_1G, 1)]),
                              second)
        by_host = {w.obj.host: self._gpus_of_first(w.obj) for w in weighed}
        # h1 was the first request's best host (first in the list on a
        # tie): its last unit on GPU 3 is taken; h2's GPU 5 is not.
        self.assertNotEqual([3], by_host['h1'])
        self.assertEqual([5], by_host['h2'])


class _BrokenReservations:
    """Reservations whose every method fails."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise RuntimeError('reservations.%s is broken' % name)
        return fail


class ReservationFaultTest(PluginTestBase):

    def _schedule(self, broken, roots, groups):
        """Filter and weigh one request on ``roots`` with views of its
        own; what Nova would see.
        """
        views = request_view.RequestViews(query=self.placement.query)
        if broken:
            views.reservations = _BrokenReservations()
        spec = fakes.request_spec()
        passed = gpu_filter.GpuPartitionFilter(views=views).filter_all(
            self._states(roots, groups), spec)
        weighed = nova_weights.HostWeightHandler().get_weighed_objects(
            [gpu_weigher.GpuPartitionWeigher(views=views)], passed, spec)
        return [(w.obj.host, w.weight, w.obj.allocation_candidates)
                for w in weighed]

    def test_a_fault_in_the_reservations_schedules_as_without_them(self):
        self.gpu_flags(link_affinity='required')
        roots = self._hosts(None, names=('h1', 'h2'), cliques=CLIQUES)
        self._use(roots[0], 0, 5)
        two_gpus = [('1', MIG_1G, 1), ('2', MIG_1G, 1)]
        # One host (the filter orders its candidates), then two (the
        # weigher does): same hosts, weights and order as with working
        # reservations and nothing in flight, and nothing raised.
        for hosts in (roots[:1], roots):
            expected = self._schedule(False, hosts, two_gpus)
            self.assertEqual(len(hosts), len(expected))
            self.assertEqual(expected,
                             self._schedule(True, hosts, two_gpus))


class CaptureTest(PluginTestBase):

    def test_the_schedulers_own_answer_is_reused(self):
        (root,) = self._hosts(None)
        self._use(root, 4, 2)
        placement = self.placement

        class Client:
            def get_allocation_candidates(self, context, resources):
                return [], placement.summaries, '1.36'

        client = Client()
        self.useFixture(fixtures.MockPatch(
            'nova.scheduler.client.report.report_client_singleton',
            return_value=client))
        views = request_view.RequestViews(query=placement.query,
                                          capture=True)
        self.assertTrue(summary_source.install_capture())
        self.assertTrue(summary_source.install_capture())  # wraps once
        # What Nova's select_destinations does before the filters.
        client.get_allocation_candidates(None, None)
        flt = gpu_filter.GpuPartitionFilter(views=views)
        states = self._states([root], [('', MIG_1G, 1)])
        flt.filter_all(states, fakes.request_spec())
        self.assertEqual(0, placement.queries)
        self.assertEqual([4], self._gpus_of_first(states[0]))
        # Nothing captured for the next request: one query of our own.
        flt.filter_all(self._states([root], [('', MIG_1G, 1)]),
                       fakes.request_spec())
        self.assertEqual(1, placement.queries)
        # Or when the option is off.
        self.gpu_flags(reuse_scheduler_query=False)
        client.get_allocation_candidates(None, None)
        flt.filter_all(self._states([root], [('', MIG_1G, 1)]),
                       fakes.request_spec())
        self.assertEqual(2, placement.queries)

    def test_the_first_request_after_start_reuses_nova_answer(self):
        (root,) = self._hosts(None)
        placement = self.placement

        class Client:
            def get_allocation_candidates(self, context, resources):
                return [], placement.summaries, '1.36'

        client = Client()
        self.useFixture(fixtures.MockPatch(
            'nova.scheduler.client.report.report_client_singleton',
            return_value=client))
        views = request_view.RequestViews(query=placement.query,
                                          capture=True)
        # Nova loads the plugins when the scheduler starts...
        flt = gpu_filter.GpuPartitionFilter(views=views)
        gpu_weigher.GpuPartitionWeigher(views=views)
        # ...then its first request queries Placement before the filters.
        client.get_allocation_candidates(None, None)
        flt.filter_all(self._states([root], [('', MIG_1G, 1)]),
                       fakes.request_spec())
        self.assertEqual(0, placement.queries)

    def test_a_claim_after_nova_asked_for_the_answer_still_counts(self):
        (root,) = self._hosts(None)
        self._use(root, 3, 6)  # one VF-backed 1g slice left on GPU 3
        placement = self.placement

        class Client:
            def get_allocation_candidates(self, context, resources):
                # Placement's usage as of the query.
                return [], copy.deepcopy(placement.summaries), '1.36'

        client = Client()
        self.useFixture(fixtures.MockPatch(
            'nova.scheduler.client.report.report_client_singleton',
            return_value=client))
        flt = gpu_filter.GpuPartitionFilter(views=request_view.RequestViews(
            query=placement.query, capture=True))
        asked, go, second = threading.Event(), threading.Event(), []

        def schedule_second():
            # Nova asks Placement for the second request, on its thread...
            client.get_allocation_candidates(None, None)
            states = self._states([root], [('', MIG_1G, 1)])
            asked.set()
            go.wait(30)
            # ...and runs the plugins after the first request claimed.
            flt.filter_all(states, fakes.request_spec())
            second.append(self._gpus_of_first(states[0]))

        thread = threading.Thread(target=schedule_second)
        thread.start()
        self.assertTrue(asked.wait(30))
        client.get_allocation_candidates(None, None)
        states = self._states([root], [('', MIG_1G, 1)])
        flt.filter_all(states, fakes.request_spec())
        self.assertEqual([3], self._gpus_of_first(states[0]))
        placement.claim(states[0].allocation_candidates[0])
        states[0].num_instances += 1
        del states  # the first request returned
        go.set()
        thread.join(30)
        self.assertEqual(0, placement.queries)
        self.assertEqual(1, len(second))
        self.assertNotEqual([3], second[0])


class ReleaseTest(PluginTestBase):

    def test_the_answer_is_released_when_the_request_is_gone(self):
        (root,) = self._hosts(None)
        states = self._states([root], [('', MIG_1G, 1)])
        spec = fakes.request_spec()
        self._weigh(states + self._states([root], [('', MIG_1G, 1)]),
                    spec)
        (state,) = self.views.states._states.values()
        view = weakref.ref(state.view)
        self.assertIsNotNone(view())
        del spec
        gc.collect()
        # Placement's answer is no longer held by the plugins, whose
        # reservations still count for a while.
        self.assertIsNone(state.view)
        self.assertIsNone(view())
        self.assertEqual(1, len(self.views.reservations._requests))
