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
"""Fault rows 10-12 of the reliability matrix (scheduler plugins), through
Nova's real filter and weight handlers: a fault never drops a required
affinity, bad multipliers never reach the weights, captured Placement
answers stay bounded.
"""

import copy
import math
import os
import threading
import tracemalloc
from unittest import mock

import fixtures

from nova.scheduler import filters as nova_filters_api

from nova_filters import conf
from nova_filters import gpu_filter
from nova_filters import policy
from nova_filters import provider_summaries
from nova_filters import request_view
from nova_filters import summary_source
from tests.unit.nova_filters import fakes
from tests.unit.nova_filters import test_plugins

MIG_1G = test_plugins.MIG_1G
CLIQUES = test_plugins.CLIQUES
# One of each class of exception ordering code could raise.
FAULTS = (ValueError('odd'), KeyError('x'), TypeError('t'),
          ZeroDivisionError(), AttributeError('a'), IndexError(),
          RuntimeError('r'), RecursionError(), OverflowError(),
          MemoryError())


class FilterFailsClosedTest(test_plugins.PluginTestBase):
    """Row 10: ordering raises, required affinity still holds."""

    def _four_gpus(self):
        (root,) = self._hosts(None, cliques=CLIQUES)
        return root, [(str(i), MIG_1G, 7) for i in range(4)]

    def _run(self, root, groups, spec=None):
        states = self._states([root], groups)
        passed = nova_filters_api.HostFilterHandler().get_filtered_objects(
            [self.filter], states, spec or fakes.request_spec())
        return list(passed or [])

    def _spanning(self, root, state):
        spans = 0
        for candidate in state.allocation_candidates:
            gpus = {fakes.gpu_address_index(self._address(root, rp))
                    for rp in candidate['allocations'] if rp != root}
            if not gpus <= {0, 1, 2, 3} and not gpus <= {4, 5, 6, 7}:
                spans += 1
        return spans

    def _address(self, root, rp):
        return self.filter_view().host(root).gpu_of_provider[rp]

    def filter_view(self):
        return provider_summaries.parse(self.placement.summaries)

    def _failing_scoring(self, error):
        self.useFixture(fixtures.MockPatch(
            'nova_filters.scoring.rank_allocations', side_effect=error))

    def test_ordering_faults_still_prune_to_one_clique(self):
        self.gpu_flags(link_affinity='required')
        root, groups = self._four_gpus()
        for error in FAULTS:
            with fixtures.MockPatch('nova_filters.scoring.rank_allocations',
                                    side_effect=error):
                # One host left: the filter orders, and ordering raises.
                passed = self._run(root, groups)
            self.assertEqual(1, len(passed), error)
            self.assertEqual(48, len(passed[0].allocation_candidates))
            self.assertEqual(0, self._spanning(root, passed[0]), error)

    def test_host_fails_when_required_affinity_cannot_be_checked(self):
        self.gpu_flags(link_affinity='required')
        root, groups = self._four_gpus()
        for error in FAULTS:
            with fixtures.MockPatch('nova_filters.scoring.link_fit',
                                    side_effect=error):
                self.assertEqual([], self._run(root, groups), error)

    def test_required_numa_fails_closed_too(self):
        self.gpu_flags(numa_affinity='required', link_affinity='none')
        root, groups = self._four_gpus()
        with fixtures.MockPatch('nova_filters.scoring.numa_fit',
                                side_effect=RuntimeError('boom')):
            self.assertEqual([], self._run(
                root, groups, fakes.request_spec(numa_cells=1)))
            # Without a NUMA topology numa_affinity has nothing to require.
            self.assertEqual(1, len(self._run(root, groups)))

    def test_a_broken_view_fails_only_hosts_with_required_affinity(self):
        root, groups = self._four_gpus()
        self.useFixture(fixtures.MockPatchObject(
            self.views, 'view_for', side_effect=RuntimeError('boom')))
        self.gpu_flags(link_affinity='required')
        self.assertEqual([], self._run(root, groups))
        self.gpu_flags(link_affinity='preferred')
        passed = self._run(root, groups)
        self.assertEqual(1, len(passed))
        self.assertEqual(1680, len(passed[0].allocation_candidates))
        # One unit cannot span GPUs: nothing required, the host passes.
        self.gpu_flags(link_affinity='required')
        self.assertEqual(1, len(self._run(root, [('', MIG_1G, 1)])))

    def test_preferred_keeps_nova_order_when_ordering_raises(self):
        self.gpu_flags(link_affinity='preferred')
        root, groups = self._four_gpus()
        before = self._states([root], groups)[0].allocation_candidates
        self._failing_scoring(RuntimeError('boom'))
        passed = self._run(root, groups)
        self.assertEqual(before, passed[0].allocation_candidates)

    def test_unknown_policy_counts_as_required(self):
        root, groups = self._four_gpus()
        state = self._states([root], groups)[0]
        with fixtures.MockPatchObject(policy, 'resolve',
                                      side_effect=RuntimeError('boom')):
            self.assertTrue(gpu_filter.requires_affinity(
                state, fakes.request_spec()))


class UnknownTopologyFailsClosedTest(test_plugins.PluginTestBase):
    """A required affinity is never assumed: GPUs the view cannot place
    (host or provider missing from Placement's answer or unreadable) fail
    it; preferences keep every candidate.
    """

    FOUR_GPUS = [(str(i), MIG_1G, 7) for i in range(4)]

    def setUp(self):
        super().setUp()
        self.roots = self._hosts(None, names=('h1', 'h2'), cliques=CLIQUES)
        # The true topology, read before any provider is spoiled.
        self.true_view = provider_summaries.parse(
            copy.deepcopy(self.placement.summaries))

    def _spoil(self, change):
        """Apply ``change`` to three GPU providers of h1's summaries."""
        spoiled = [rp for rp, summary in self.placement.summaries.items()
                   if summary['root_provider_uuid'] == self.roots[0]
                   and rp != self.roots[0]][:3]
        for rp in spoiled:
            change(self.placement.summaries, rp)
        return spoiled

    def _in_one_clique(self, root, candidate):
        host = self.true_view.host(root)
        domains = {host.gpus[host.gpu_of_provider[rp]].link_domain
                   for rp in candidate['allocations'] if rp != root}
        return len(domains) == 1 and None not in domains

    def _filter(self, link_affinity, states=None):
        """Candidates per host before, hosts the filter passes."""
        self.gpu_flags(link_affinity=link_affinity)
        states = states or self._states(self.roots, self.FOUR_GPUS)
        counts = [len(state.allocation_candidates) for state in states]
        return counts, self.filter.filter_all(states, fakes.request_spec())

    def test_placement_down_without_remembered_topology(self):
        for error in FAULTS:
            views = request_view.RequestViews(
                query=mock.Mock(side_effect=error))
            self.filter = gpu_filter.GpuPartitionFilter(views=views)
            counts, passed = self._filter('required')
            self.assertEqual([], passed, error)
            # A preference is not enforced: every candidate stays.
            counts, passed = self._filter('preferred')
            self.assertEqual(counts, [len(state.allocation_candidates)
                                      for state in passed], error)
        # A single unit cannot span GPUs: nothing to enforce.
        self.gpu_flags(link_affinity='required')
        state = fakes.host_state('h1', self.roots[0], self.placement
                                 .candidates(self.roots[0],
                                             [('', MIG_1G, 1)]))
        self.assertEqual([state], self.filter.filter_all(
            [state], fakes.request_spec()))

    def test_spoiled_gpu_providers(self):
        changes = {
            'used None': lambda s, rp: s[rp]['resources'][MIG_1G].update(
                used=None),
            'capacity text': lambda s, rp: s[rp]['resources'][
                MIG_1G].update(capacity='7'),
            'no resources': lambda s, rp: s[rp].pop('resources'),
            'summary None': lambda s, rp: s.update({rp: None}),
            'missing': lambda s, rp: s.pop(rp),
            'no root': lambda s, rp: s[rp].pop('root_provider_uuid'),
            'own root': lambda s, rp: s[rp].update(root_provider_uuid=rp),
            'other root': lambda s, rp: s[rp].update(
                root_provider_uuid=self.roots[1]),
            'traits not names': lambda s, rp: s[rp].update(traits=[1, 2]),
            # A second GPU class listed first: the view reads one class
            # per provider, so the 1g units are not seen.
            'two classes': lambda s, rp: s[rp].update(resources=dict(
                [(fakes.mig('2g.20gb'), {'capacity': 1, 'used': 0})]
                + list(s[rp]['resources'].items()))),
        }
        original = copy.deepcopy(self.placement.summaries)
        for label, change in changes.items():
            self.placement.summaries = copy.deepcopy(original)
            # Candidates as Placement made them, summaries spoiled after.
            states = self._states(self.roots, self.FOUR_GPUS)
            self._spoil(change)
            counts, passed = self._filter('required', states)
            self.assertEqual({'h1', 'h2'}, {s.host for s in passed}, label)
            for state in passed:
                self.assertNotEqual([], state.allocation_candidates)
                for candidate in state.allocation_candidates:
                    self.assertTrue(
                        self._in_one_clique(state.uuid, candidate), label)
            # Only candidates on h1's spoiled GPUs went.
            self.assertEqual(48, len(passed[1].allocation_candidates))
            self.assertLess(len(passed[0].allocation_candidates), 48, label)

    def test_unreadable_candidates_fail_required_affinity(self):
        self.gpu_flags(link_affinity='required')
        states = self._states(self.roots, self.FOUR_GPUS)
        states[0].allocation_candidates.insert(0, {'allocations': 'odd'})
        states[0].allocation_candidates.insert(
            0, {'allocations': {self.roots[0]: {'resources': {
                MIG_1G: float('inf')}}}})
        passed = self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual(48, len(passed[0].allocation_candidates))
        for candidate in passed[0].allocation_candidates:
            self.assertTrue(self._in_one_clique(self.roots[0], candidate))


class OddAmountsTest(test_plugins.PluginTestBase):
    """Capacities and usages that are not whole numbers in Placement's
    range: the provider is skipped, the rest of the answer is used.
    """

    ODD = (None, '7', [1], True, 1.5, -1, 10 ** 400, 2 ** 63,
           float('inf'), float('nan'), -float('inf'))

    def test_one_odd_provider_spoils_nothing_else(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        self._use(roots[1], 5, 3)
        odd_rp = self.placement.provider(roots[0], fakes.gpu_address(2),
                                         MIG_1G)
        original = copy.deepcopy(self.placement.summaries)
        for field in ('capacity', 'used'):
            for value in self.ODD:
                label = '%s=%r' % (field, value)
                summaries = copy.deepcopy(original)
                summaries[odd_rp]['resources'][MIG_1G][field] = value
                view = provider_summaries.parse(summaries)
                self.assertTrue(view.usage_known, label)
                host = view.host(roots[0])
                self.assertIsNone(host.provider(odd_rp), label)
                self.assertEqual(7, len(host.gpus), label)
                for root in roots:
                    self.assertTrue(0.0 <= view.fill(root) <= 1.0, label)
                self.assertAlmostEqual(3 / 56, view.fill(roots[1]))
        # A whole float is a whole number.
        summaries = copy.deepcopy(original)
        summaries[odd_rp]['resources'][MIG_1G].update(capacity=7.0,
                                                      used=2.0)
        provider = provider_summaries.parse(summaries).host(
            roots[0]).provider(odd_rp)
        self.assertEqual((7, 2), (provider.capacity, provider.used))

    def test_odd_compute_node_amounts_leave_the_gpus_readable(self):
        (root,) = self._hosts(None)
        for value in (float('inf'), float('nan'), None, 'x'):
            summaries = copy.deepcopy(self.placement.summaries)
            summaries[root]['resources']['VCPU']['capacity'] = value
            host = provider_summaries.parse(summaries).host(root)
            self.assertEqual(8, len(host.gpus), value)
            self.assertIsNone(host.free_vcpus, value)
            self.assertEqual(2 ** 21, host.free_memory_mb, value)

    def test_weights_stay_known_and_finite(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        self._use(roots[1], 5, 3)
        states = self._states(roots, [('', MIG_1G, 1)])
        odd_rp = self.placement.provider(roots[0], fakes.gpu_address(2),
                                         MIG_1G)
        self.placement.summaries[odd_rp]['resources'][MIG_1G][
            'used'] = 10 ** 400
        weighed = self._weigh(states, fakes.request_spec())
        # Usage was read for the request: h2, the fuller, is chosen, not
        # a neutral tie kept in Nova's order.
        self.assertEqual('h2', weighed[0].obj.host)
        self.assertTrue(all(math.isfinite(w.weight) for w in weighed))


class MultiplierTest(test_plugins.PluginTestBase):
    """Row 11: options and aggregate metadata that would poison weights."""

    BAD = ('nan', 'NaN', 'inf', '-inf', '1e309', '-1e309', '1e10', 'x', '')

    def test_option_rejects_non_finite_and_huge_values(self):
        opt_type = conf.weight_multiplier_type()
        for value in self.BAD:
            self.assertRaises(ValueError, opt_type, value)
        for value in (float('nan'), float('inf'), 1e309):
            self.assertRaises(ValueError, opt_type, value)
        self.assertEqual(-2.5, opt_type('-2.5'))
        self.assertEqual(1e9, opt_type('1e9'))

    def test_config_file_value_is_refused_with_a_clear_error(self):
        for value in ('nan', 'inf', '1e309'):
            self.flags(group='gpu_partitions_scheduler',
                       weight_multiplier=1.0)
            self.assertRaises(
                ValueError, conf.CONF.set_override, 'weight_multiplier',
                value, 'gpu_partitions_scheduler')

    def test_bounded_integers(self):
        for name, too_big in (('workload_window', 10 ** 6),
                              ('workload_classes', 10 ** 4),
                              ('request_view_ttl', 10 ** 6),
                              ('topology_cache_ttl', 10 ** 7)):
            self.assertRaises(ValueError, conf.CONF.set_override, name,
                              too_big, 'gpu_partitions_scheduler')
        self.flags(group='gpu_partitions_scheduler',
                   workload_window=conf.MAX_WORKLOAD_WINDOW)

    def test_bad_aggregate_multipliers_never_reach_the_weights(self):
        roots = self._hosts(None, names=('h1', 'h2'))
        self._use(roots[0], 0, 3)
        spec = fakes.request_spec()
        for value in self.BAD:
            states = self._states(roots, [('', MIG_1G, 1)], aggregates={
                0: [fakes.aggregate(
                    {'gpu_partitions_weight_multiplier': value})]})
            self.assertEqual(1.0, self.weigher.weight_multiplier(states[0]))
            weighed = self._weigh(states, spec)
            for host in weighed:
                self.assertTrue(math.isfinite(host.weight), value)
        # A valid value among bad ones is used (the smallest valid).
        state = fakes.host_state('h1', roots[0], [], aggregates=[
            fakes.aggregate({'gpu_partitions_weight_multiplier': 'nan'}),
            fakes.aggregate({'gpu_partitions_weight_multiplier': '4'},
                            name='b')])
        self.assertEqual(4.0, self.weigher.weight_multiplier(state))


class CaptureBoundTest(test_plugins.PluginTestBase):
    """Row 12: answers nobody takes do not accumulate."""

    def test_unconsumed_answers_stay_bounded(self):
        summaries = {'rp%d' % i: {'resources': {}, 'traits': ['T'] * 50}
                     for i in range(200)}

        def answer(*args, **kwargs):
            # A new answer each time, as Placement's decoded JSON is.
            return [], dict(summaries), '1.36'

        wrapped = summary_source._capturing(answer)

        def capture_many():
            tracemalloc.start()
            wrapped()
            first, _ = tracemalloc.get_traced_memory()
            for _ in range(2000):
                wrapped()
            last, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            results.append((len(summary_source._captured.answers),
                            last - first))

        results = []
        worker = threading.Thread(target=capture_many)
        worker.start()
        worker.join()
        kept, growth = results[0]
        self.assertEqual(summary_source.MAX_CAPTURED, kept)
        # Two answers of ~10 KiB each at most, not 2,000.
        self.assertLess(growth, 64 * 1024)

    def test_stale_answers_are_not_used(self):
        clock = fixtures.MockPatch('time.monotonic', return_value=100.0)
        self.useFixture(clock)
        summary_source._capturing(lambda: ([], {'a': {}}, '1.36'))()
        clock.mock.return_value = 100.0 + summary_source.CAPTURE_SECONDS + 1
        self.assertIsNone(summary_source.take_captured_summaries())
        self.assertIsNone(summary_source.take_captured_summaries())

    def test_the_age_counts_from_when_the_answer_was_asked_for(self):
        clock = fixtures.MockPatch('time.monotonic', return_value=100.0)
        self.useFixture(clock)

        def answer():
            clock.mock.return_value = 102.0  # Placement answers 2 s later
            return [], {'a': {}}, '1.36'

        summary_source._capturing(answer)()
        clock.mock.return_value = 103.0
        self.assertEqual(({'a': {}}, 3.0),
                         summary_source.take_captured_summaries({'a'}))

    def test_answers_not_taken_yet_on_any_thread_are_seen(self):
        clock = fixtures.MockPatch('time.monotonic', return_value=100.0)
        self.useFixture(clock)
        asked, take, taken = (threading.Event(), threading.Event(),
                              threading.Event())
        self.addCleanup(summary_source.take_captured_summaries)
        self.addCleanup(take.set)

        def other_thread():
            summary_source._capturing(lambda: ([], {'b': {}}, '1.36'))()
            asked.set()
            take.wait(30)
            summary_source.take_captured_summaries()
            taken.set()
            take.wait(30)

        worker = threading.Thread(target=other_thread)
        worker.start()
        self.assertTrue(asked.wait(30))
        clock.mock.return_value = 102.0
        summary_source._capturing(lambda: ([], {'a': {}}, '1.36'))()
        clock.mock.return_value = 105.0
        self.assertEqual(5.0, summary_source.unread_age())
        take.set()
        self.assertTrue(taken.wait(30))
        self.assertEqual(3.0, summary_source.unread_age())
        worker.join(30)
        summary_source.take_captured_summaries()
        self.assertIsNone(summary_source.unread_age())

    def test_newest_answer_alone_when_it_has_every_host(self):
        older = {'a': {'old': True}, 'b': {}}
        newer = {'a': {'old': False}}
        for summaries in (older, newer):
            summary_source._capturing(lambda s=summaries: ([], s, '1.36'))()
        self.assertIs(newer,
                      summary_source.take_captured_summaries({'a'})[0])
        for summaries in (older, newer):
            summary_source._capturing(lambda s=summaries: ([], s, '1.36'))()
        # A host only the older answer has: merged, the newer one wins.
        self.assertEqual(
            {'a': {'old': False}, 'b': {}},
            summary_source.take_captured_summaries({'a', 'b'})[0])


class BadNovaConfTest(test_plugins.PluginTestBase):
    """A bad value of ours in nova.conf, which oslo.config reads only when
    the plugins ask: the weigher steps aside, the filter fails only the
    hosts whose required affinity it cannot check; neither raises.
    """

    def test_each_bad_value(self):
        roots = self._hosts(None, names=('h1', 'h2'), cliques=CLIQUES)
        tmp = self.useFixture(fixtures.TempDir()).path
        for option, value in (('weight_multiplier', 'nan'),
                              ('weight_multiplier', '1e309'),
                              ('policy', 'packed'),
                              ('link_affinity', 'Required')):
            path = os.path.join(tmp, 'nova.conf')
            with open(path, 'w') as stream:
                stream.write('[gpu_partitions_scheduler]\n%s = %s\n'
                             % (option, value))
            conf.CONF([], project='nova', default_config_files=[path])
            self.assertRaises(ValueError, getattr,
                              conf.CONF.gpu_partitions_scheduler, option)
            spec = fakes.request_spec()
            one = self._states(roots, [('', MIG_1G, 1)])
            weighed = self._weigh(one, spec)
            self.assertEqual([0.0, 0.0], [h.weight for h in weighed], option)
            self.assertEqual(2, len(self.filter.filter_all(one, spec)))
            four = self._states(roots, [(str(i), MIG_1G, 7)
                                        for i in range(4)])
            passed = self.filter.filter_all(four, spec)
            if option != 'link_affinity':
                self.assertEqual(2, len(passed), value)
            else:
                # The affinity cannot be told: unknown counts as required
                # and cannot be checked, so multi-GPU requests fail.
                self.assertEqual([], passed, value)
