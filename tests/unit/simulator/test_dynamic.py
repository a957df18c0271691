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
"""On-demand partitioning in the simulator: MIG geometry, the on-demand
Placement, FGD's metric, the operator-static fleets and the free-layout
bound.
"""

import collections
from concurrent import futures
import json
from unittest import mock

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cyborg_gpu_drivers import mig_geometry as geometry
from gpu_partitions.simulator import benchmark
from gpu_partitions.simulator import dynamic
from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import policies
from gpu_partitions.simulator import run
from gpu_partitions.simulator import trace
from nova_filters import provider_summaries
import placement_traits
from tests.unit import cli_output
from tests.unit.simulator import test_simulation

ONE_G, TWO_G, THREE_G, FOUR_G, SEVEN_G = fleet.MIG_GEOMETRY
TABLE = fleet.MIG_TABLE


class GeometryTest(testtools.TestCase):

    def test_an_idle_gpu_takes_each_profile_at_its_documented_starts(self):
        self.assertEqual([7, 3, 2, 1, 1], [
            geometry.capacity(TABLE, [], p) for p in fleet.MIG_GEOMETRY])

    def test_slices_alone_do_not_decide(self):
        # 7 compute slices, but 3g takes 4 of the 8 memory slots.
        self.assertFalse(geometry.placeable(
            TABLE, [], [THREE_G, THREE_G, ONE_G]))
        self.assertTrue(geometry.placeable(TABLE, [], [FOUR_G, THREE_G]))

    def test_per_profile_offers_race(self):
        # Model 1 of the design: each of 3g and 2g has one free start,
        # and both starts are slot 4; two concurrent claims would pass
        # Placement and not fit.
        made = [(ONE_G, 0), (ONE_G, 2)]
        self.assertEqual(1, geometry.capacity(TABLE, made, THREE_G))
        self.assertEqual(1, geometry.capacity(TABLE, made, TWO_G))
        self.assertFalse(geometry.placeable(TABLE, made, [THREE_G, TWO_G]))

    def test_small_instances_keep_slot_zero_free(self):
        self.assertEqual(6, geometry.choose_start(TABLE, [], ONE_G, {}))
        self.assertEqual(4, geometry.choose_start(TABLE, [], TWO_G, {}))
        made = []
        for _ in range(3):
            made.append((ONE_G, geometry.choose_start(TABLE, made, ONE_G,
                                                      {})))
        # Three 1g leave room for a 4g, which needs slots 0-3.
        self.assertEqual(1, geometry.capacity(TABLE, made, FOUR_G))

    def test_the_score_follows_demand(self):
        # Only 2g wanted: a 1g goes where it spoils no 2g start (6).
        self.assertEqual(6, geometry.choose_start(
            TABLE, [], ONE_G, {TWO_G: 1.0}))
        self.assertLess(
            geometry.fragmentation(TABLE, [(ONE_G, 6)], {FOUR_G: 1.0}),
            geometry.fragmentation(TABLE, [(ONE_G, 0)], {FOUR_G: 1.0}))

    def test_a_lone_4g_strands_its_three_slices_for_large_requests(self):
        # What the 10% runs end with on the MIG kinds (simulator.rst):
        # after a 4g at slot 0 only 3g, 2g and 1g can use the rest.
        lone = [(FOUR_G, 0)]
        self.assertEqual(0.0, geometry.fragmentation(
            TABLE, lone, {THREE_G: 1.0}))
        self.assertEqual(3.0, geometry.fragmentation(
            TABLE, lone, {FOUR_G: 1.0}))
        # Half 4g (3 slices lost), half 2g (one fits, 1 slice lost).
        self.assertEqual(2.0, geometry.fragmentation(
            TABLE, lone, {FOUR_G: 1.0, TWO_G: 1.0}))
        # A 3g request for that GPU goes to slot 4 and leaves nothing.
        self.assertEqual(4, geometry.choose_start(
            TABLE, lone, THREE_G, {FOUR_G: 1.0}))
        self.assertEqual(0.0, geometry.fragmentation(
            TABLE, lone + [(THREE_G, 4)], {FOUR_G: 1.0}))

    def test_no_start_when_full(self):
        self.assertIsNone(geometry.choose_start(
            TABLE, [(SEVEN_G, 0)], ONE_G, {}))


def _check_gpus(test, placement):
    for key, made in placement.instances().items():
        kinds = {name for name, _ in made}
        if all(start is not None for _, start in made):
            # Raises on an overlap or a start the geometry forbids.
            fleet.check_mig_layout(made)
        else:
            test.assertEqual(1, len(kinds), key)


class OnDemandPlacementTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        _, self.fleet, self.tasks = test_simulation.synthetic_inputs(self)

    def _runner(self):
        return run.Runner(self.fleet, self.tasks, seed=2,
                          placement_factory=dynamic.placement_factory(
                              self.fleet, self.tasks))

    def test_arrivals_never_overcommit_and_stay_above_the_bound(self):
        runner = self._runner()
        free = runner.bound(allocation=dynamic.free_layout_requested)
        fixed = runner.bound(allocation=run.relaxed_requested)
        self.assertLessEqual(free[-1][1], fixed[-1][1] + 1e-6)
        for name in ('ours-pack', 'hami-binpack', 'nova-default'):
            outcome = runner.arrivals(policies.POLICIES[name])
            self.assertGreater(outcome.placed, 0)
            _check_gpus(self, runner._last_placement)
            self.assertGreaterEqual(
                outcome.curve_requested[-1][1] + 1e-6, free[-1][1], name)
            # A request is never larger than its slice.
            self.assertGreaterEqual(outcome.curve_requested[-1][1] + 1e-6,
                                    outcome.curve[-1][1], name)

    def test_mig_gpus_offer_what_the_mig_driver_offers(self):
        placement = dynamic.OnDemandPlacement(self.fleet)
        host = max((h for h in placement.fleet.hosts
                    if h.kind.mode == fleet.MIG),
                   key=lambda h: sum(g.layout == fleet.ON_DEMAND
                                     for g in h.gpus))
        gpus = [g.address for g in host.gpus if g.layout == fleet.ON_DEMAND]
        self.assertGreater(len(gpus), 4)
        table = TABLE
        providers = {p.name: p for p in placement.providers.values()}

        def provider(address, profile):
            return providers[placement_traits.provider_name(
                host.name, address, profile)]

        def offered(address):
            """The GPU's inventories: units in use and free."""
            totals = {profile: next(iter(provider(
                address, profile).inventories.values()))
                for profile in table}
            return {profile: units for profile, units in totals.items()
                    if units}

        def claim(consumer, address, profile):
            rp = provider(address, profile)
            rc = next(iter(rp.inventories))
            return placement.claim(consumer, {'allocations': {
                rp.uuid: {'resources': {rc: 1}}}})

        def idle(addresses):
            return {a: (table, dynamic.ALLOWED, None) for a in addresses}

        # An idle host: the driver's spread, every profile offered.
        before = {a: offered(a) for a in gpus}
        self.assertEqual(geometry.spread(idle(gpus), {}), before)
        self.assertEqual(set(table), set().union(*before.values()))

        # A claim: its instance where the driver's prepare_unit puts it,
        # then the driver's offer on that GPU, the others spread again.
        busy = next(a for a in gpus if before[a].get(FOUR_G))
        self.assertTrue(claim('a', busy, FOUR_G))
        made = placement.instances()[(host.name, busy)]
        rest = collections.Counter(before[busy])
        rest[FOUR_G] -= 1
        self.assertEqual([(FOUR_G, geometry.choose_start(
            table, [], FOUR_G, None, keep=list((+rest).elements())))], made)
        self.assertEqual(geometry.offer(
            table, made, {FOUR_G: 1}, dynamic.ALLOWED, None, before[busy]),
            offered(busy))
        self.assertTrue(geometry.placeable(table, made, list(
            (collections.Counter(offered(busy))
             - collections.Counter({FOUR_G: 1})).elements())))
        others = [a for a in gpus if a != busy]
        covered = {p for p, n in offered(busy).items()
                   if n > (p == FOUR_G)}
        self.assertEqual(geometry.spread(
            idle(others), {a: before[a] for a in others}, covered),
            {a: offered(a) for a in others})
        self.assertFalse(claim('b', busy, SEVEN_G))

        # A release: the GPU is idle again and the host covers every
        # profile; a 7g lands on the GPU offering it, at slot 0.
        placement.release('a')
        self.assertEqual({}, placement.instances())
        now = {a: offered(a) for a in gpus}
        self.assertEqual(set(table), set().union(*now.values()))
        whole = next(a for a in gpus if now[a].get(SEVEN_G))
        self.assertTrue(claim('c', whole, SEVEN_G))
        self.assertEqual([(SEVEN_G, 0)], placement.instances()[
            (host.name, whole)])
        # Nothing else fits beside it.
        self.assertEqual({SEVEN_G: 1}, offered(whole))

    def test_vgpu_types_change_only_on_idle_gpus_one_per_pass(self):
        runner = self._runner()
        passes = []
        real_pass = dynamic.OnDemandPlacement._agent_pass

        def spy(placement, host):
            before = placement.vgpu_types()
            busy = {key for key, made in placement.instances().items()
                    if made}
            move = real_pass(placement, host)
            after = placement.vgpu_types()
            changed = {key for key in before if before[key] != after[key]}
            passes.append((placement._clock, host, changed, busy))
            return move

        self.useFixture(fixtures.MockPatchObject(
            dynamic.OnDemandPlacement, '_agent_pass', spy))
        outcome = runner.arrivals(policies.POLICIES['ours-pack'])
        self.assertGreater(outcome.placed, 0)
        moved = [changed for _, _, changed, _ in passes if changed]
        # The warm start and the arrivals both move GPUs.
        self.assertTrue(any(clock > 0 for clock, _, changed, _ in passes
                            if changed))
        self.assertTrue(moved)
        for clock, host, changed, busy in passes:
            self.assertLessEqual(len(changed), 1)
            self.assertTrue(all(key[0] == host for key in changed))
            self.assertFalse(changed & busy, clock)
        # One pass per host per pass interval.
        times = [(clock, host) for clock, host, _, _ in passes if clock > 0]
        self.assertEqual(len(times), len(set(times)))


class VgpuFollowDemandTest(testtools.TestCase):
    """On-demand vGPU GPUs offer one type each and move as the vGPU
    driver's ``type_mode = follow_demand`` moves them: an idle GPU, one
    per agent pass, a pass per host after each claim or release.
    """

    KIND = fleet.KINDS['t4-vgpu']
    # T4-2Q first: the most GPU share of the typical requests.
    WEIGHTS = {'t4-vgpu': {'T4-2Q': 40, 'T4-16Q': 1}}
    TYPES = [name for name, _ in KIND.vgpu_types]

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(cfg.CONF))
        self.placement = self._placement()

    def _placement(self):
        hosts = [fleet.make_host(name, self.KIND, 64000, 2 ** 20,
                                 ['T4-16Q'] * gpus)
                 for name, gpus in (('t4-a', 8), ('t4-b', 2))]
        placement = dynamic.OnDemandPlacement(fleet.Fleet(hosts),
                                              self.WEIGHTS)
        self.by_name = {p.name: p for p in placement.providers.values()}
        return placement

    def types(self, host='t4-a'):
        return [name for (on, _), name in sorted(
            self.placement.vgpu_types().items()) if on == host]

    def claim(self, consumer, index, name, host='t4-a'):
        rp = self._provider(host, index, name)
        return self.placement.claim(consumer, {'allocations': {
            rp.uuid: {'resources': {next(iter(rp.inventories)): 1}}}})

    def _provider(self, host, index, name):
        return self.by_name[placement_traits.provider_name(
            host, fleet.gpu_address(index), name)]

    def offered(self, index):
        return [next(iter(self._provider('t4-a', index, name)
                          .inventories.values())) for name in self.TYPES]

    def test_the_policy_sees_each_gpus_nvlink_clique(self):
        kind = fleet.KINDS['v100-32gb-vgpu']
        host = fleet.make_host('v100', kind, 64000, 2 ** 20,
                               ['V100DX-32Q'] * 8)
        seen = []
        real_plan = dynamic.retype.plan

        def spy(gpus, *args):
            seen.append([gpu.link_domain for gpu in gpus])
            return real_plan(gpus, *args)

        with mock.patch.object(dynamic.retype, 'plan', spy):
            placement = dynamic.OnDemandPlacement(fleet.Fleet([host]))
        self.assertTrue(seen)
        # Two cliques of 4 (the hybrid cube-mesh halves), in PCI order.
        for domains in seen:
            self.assertEqual(['0'] * 4 + ['1'] * 4, domains)
        # The warm start covers no smaller type with a GPU of a whole
        # clique: both cliques keep the whole type for 4-GPU guests.
        self.assertEqual(['V100DX-32Q'] * 8,
                         list(placement.vgpu_types().values()))

    def test_a_pass_interval_is_cyborgs_periodic_interval(self):
        from cyborg.conf import default

        (interval,) = [opt.default for opt in default.service_opts
                       if opt.name == 'periodic_interval']
        self.assertEqual(interval, dynamic.AGENT_PASS_SECONDS)

    def test_allowed_types_follow_the_requests_share(self):
        self.assertEqual(('T4-16Q', 'T4-8Q', 'T4-4Q', 'T4-2Q'),
                         dynamic.allowed_types(self.KIND))
        self.assertEqual(('T4-2Q', 'T4-16Q', 'T4-8Q', 'T4-4Q'),
                         dynamic.allowed_types(self.KIND,
                                               self.WEIGHTS['t4-vgpu']))

    def test_each_gpu_offers_one_type_from_the_first_allowed(self):
        # Every GPU took T4-2Q; the idle host's passes then covered each
        # other allowed type once, one GPU per pass, while T4-2Q kept an
        # idle GPU to give.
        self.assertEqual(['T4-16Q', 'T4-8Q', 'T4-4Q'] + ['T4-2Q'] * 5,
                         self.types())
        self.assertEqual(['T4-16Q', 'T4-2Q'], self.types('t4-b'))
        # TYPES: T4-2Q, T4-4Q, T4-8Q, T4-16Q.
        self.assertEqual([0, 0, 0, 1], self.offered(0))
        self.assertEqual([8, 0, 0, 0], self.offered(7))
        self.assertFalse(self.claim('x', 7, 'T4-4Q'))

    def test_demand_moves_one_idle_gpu_per_pass(self):
        # T4-16Q in full use wants a GPU: the first idle GPU whose type
        # stays at or below low without it gives one, T4-8Q's.
        self.assertTrue(self.claim('a', 0, 'T4-16Q'))
        self.assertEqual(['T4-16Q', 'T4-16Q', 'T4-4Q'] + ['T4-2Q'] * 5,
                         self.types())
        # No GPU offers T4-8Q now: covering it is the next pass's move,
        # after the next event, even one on another host.
        self.assertTrue(self.claim('b', 1, 'T4-2Q', host='t4-b'))
        expected = ['T4-16Q', 'T4-16Q', 'T4-4Q', 'T4-8Q'] + ['T4-2Q'] * 4
        self.assertEqual(expected, self.types())
        self.assertTrue(self.claim('c', 4, 'T4-2Q'))
        self.assertEqual(expected, self.types())

    def test_a_busy_gpu_never_changes_type(self):
        # As above, but GPU 1 (T4-8Q) holds a guest: GPU 2 gives.
        self.assertTrue(self.claim('x', 1, 'T4-8Q'))
        self.assertTrue(self.claim('a', 0, 'T4-16Q'))
        self.assertEqual(['T4-16Q', 'T4-8Q', 'T4-16Q', 'T4-2Q'],
                         self.types()[:4])
        self.assertTrue(self.claim('b', 1, 'T4-2Q', host='t4-b'))
        self.assertEqual(['T4-16Q', 'T4-8Q', 'T4-16Q', 'T4-4Q'],
                         self.types()[:4])
        # Released, GPU 1 is idle again and keeps its type: every type
        # is offered and none is in demand.
        self.placement.release('x')
        self.assertEqual(['T4-16Q', 'T4-8Q', 'T4-16Q', 'T4-4Q'],
                         self.types()[:4])

    def _fill_four_q(self):
        """GPU 0 takes a T4-16Q guest (GPU 1 moves to T4-16Q, then GPU 3
        to T4-8Q); then T4-4Q's only GPU fills up.
        """
        self.assertTrue(self.claim('a', 0, 'T4-16Q'))
        self.assertTrue(self.claim('b', 1, 'T4-2Q', host='t4-b'))
        for number in range(4):
            self.assertTrue(self.claim('q%d' % number, 2, 'T4-4Q'))
        return self.types()

    def test_a_moved_gpu_is_held_for_hold_seconds_of_passes(self):
        # Ten passes of 60 s: GPU 3 moved four events ago and is held,
        # so T4-4Q's new GPU comes from T4-2Q.
        self.assertEqual(['T4-16Q', 'T4-16Q', 'T4-4Q', 'T4-8Q', 'T4-4Q']
                         + ['T4-2Q'] * 3, self._fill_four_q())

    def test_without_a_hold_the_last_moved_gpu_may_move_again(self):
        self.conf.config(group='gpu_partitions',
                         follow_demand_hold_seconds=0)
        self.placement = self._placement()
        self.assertEqual(['T4-16Q', 'T4-16Q', 'T4-4Q', 'T4-4Q']
                         + ['T4-2Q'] * 4, self._fill_four_q())


class MigOffTest(testtools.TestCase):
    """Whole GPUs of the MIG kinds: MIG off, the full-size time-sliced
    type with the NVLink clique; the MIG driver cannot switch MIG mode,
    so an on-demand fleet keeps them.
    """

    def _host(self, layouts):
        return fleet.make_host('hgx-1', fleet.KINDS['a100-80gb-mig'],
                               96000, 2 ** 20, layouts)

    def test_multi_gpu_tasks_take_mig_off_gpus_of_one_clique(self):
        four = trace.Task('t', 8000, 8192, num_gpu=4, gpu_milli=1000)
        for layouts, placed in (([fleet.MIG_OFF] * 4 + ['all-1g'] * 4, 1),
                                (['whole'] * 8, 0)):
            runner = run.Runner(fleet.Fleet([self._host(layouts)]), [four],
                                seed=0)
            for name in ('ours-pack', 'nova-default'):
                outcome = runner.arrivals(policies.POLICIES[name])
                # Two tasks arrive (8 GPUs asked); four MIG-off GPUs hold
                # one; 7g instances carry no clique and hold none.
                self.assertEqual((placed, 2 - placed),
                                 (outcome.placed, outcome.failed), layouts)

    def test_an_on_demand_fleet_keeps_its_mig_off_gpus(self):
        oracle = fleet.Fleet([self._host([fleet.MIG_OFF] * 2
                                         + ['4g-3g'] * 6)])
        placement = dynamic.OnDemandPlacement(oracle)
        layouts = [g.layout for g in placement.fleet.hosts[0].gpus]
        self.assertEqual([fleet.MIG_OFF] * 2 + [fleet.ON_DEMAND] * 6,
                         layouts)
        gpu = placement.fleet.hosts[0].gpus[0]
        (rp,) = [p for p in placement.providers.values()
                 if p.name == placement_traits.provider_name(
                     'hgx-1', gpu.address, 'A100DX-80C')]
        self.assertIn(placement_traits.nvlink_clique_trait(0), rp.traits)
        self.assertNotIn(placement_traits.mig_on_demand_trait(7), rp.traits)
        rc = 'CUSTOM_VGPU_A100DX_80C'
        self.assertTrue(placement.claim('a', {'allocations': {
            rp.uuid: {'resources': {rc: 1}}}}))
        self.assertEqual(0, rp.free(rc))
        self.assertEqual({}, placement.instances())
        placement.release('a')
        self.assertEqual(1, rp.free(rc))


class FleetsAndBoundTest(testtools.TestCase):

    def test_operator_fleets_keep_hosts_and_ignore_the_trace(self):
        _, oracle, _ = test_simulation.synthetic_inputs(self)
        fleets = dynamic.operator_static_fleets(oracle)
        self.assertEqual({'whole', 'even-mix'}, set(fleets))
        for other in fleets.values():
            self.assertEqual([(h.name, len(h.gpus)) for h in oracle.hosts],
                             [(h.name, len(h.gpus)) for h in other.hosts])
        self.assertTrue(all(
            g.layout == fleet.layout_names(h.kind)[0]
            for h in fleets['whole'].hosts for g in h.gpus))
        # Unpartitioned MIG GPUs are MIG off.
        self.assertEqual({fleet.MIG_OFF}, {
            g.layout for h in fleets['whole'].hosts for g in h.gpus
            if h.kind.mode == fleet.MIG})
        mig_layouts = collections.Counter(
            h.gpus[0].layout for h in fleets['even-mix'].hosts
            if h.kind.mode == fleet.MIG)
        self.assertGreater(len(mig_layouts), 1)

    def test_free_layout_bound_counts_memory_slots(self):
        host = fleet.make_host('h', fleet.KINDS['a100-80gb-mig'], 96000,
                               65536, ['whole'])
        one = fleet.Fleet(hosts=[host])
        # Two 3g (0.4 GPU each) and a 1g (0.1) are 7 slices but 9
        # memory slots: the program keeps 8 slots, 0.1 GPU per slot for
        # both, so 0.8 of the 0.9 requested.
        tasks = [trace.Task('a', 1000, 1024, 1, 400)] * 2 + [
            trace.Task('b', 1000, 1024, 1, 100)]
        self.assertAlmostEqual(0.8, dynamic.free_layout_requested(
            one, tasks))

    def test_free_layout_bound_gives_a_whole_gpu_to_mig_off(self):
        host = fleet.make_host('h', fleet.KINDS['a100-80gb-mig'], 96000,
                               65536, ['all-1g', 'all-1g'])
        two = fleet.Fleet(hosts=[host])
        # A whole GPU (MIG off) and a 7g (0.6) each take a whole GPU:
        # of two whole GPUs and a 0.6, two GPUs' worth at most.
        tasks = [trace.Task('a', 1000, 1024, 1, 1000)] * 2 + [
            trace.Task('b', 1000, 1024, 1, 600)]
        self.assertAlmostEqual(2.0, dynamic.free_layout_requested(
            two, tasks))


def _in_process(max_workers, mp_context, initializer, initargs):
    return futures.ThreadPoolExecutor(max_workers=1, initializer=initializer,
                                      initargs=initargs)


class BenchmarkTest(testtools.TestCase):

    def test_dynamic_benchmark_ends_with_the_issues_json(self):
        directory, _, _ = test_simulation.synthetic_inputs(self, count=60)
        self.useFixture(fixtures.EnvironmentVariable(
            trace.TRACE_DIR_ENV, directory))
        self.useFixture(fixtures.EnvironmentVariable(
            'GPU_PARTITIONS_SIM_SCALE', '1'))
        self.useFixture(fixtures.EnvironmentVariable(
            'GPU_PARTITIONS_SIM_SEEDS', '2'))
        # Runs in threads of this process: a worker process per run
        # would import Nova again, eight times over.
        self.useFixture(fixtures.MockPatch(
            'concurrent.futures.ProcessPoolExecutor', _in_process))
        # One policy of each family the figures need.
        self.useFixture(fixtures.MockPatchObject(
            benchmark, 'POLICIES',
            ('nova-default', 'hami-binpack', 'fgd', 'ours-pack')))
        self.useFixture(fixtures.MockPatchObject(
            benchmark, 'OPERATOR_POLICIES', ('ours-pack',)))
        code, stdout, _ = cli_output.run_cli(
            ['benchmark', 'packing', '--dynamic', '--traces', 'synthetic'])
        self.assertEqual(0, code)
        mine = json.loads(stdout.strip().splitlines()[-1])[
            'synthetic']
        for key in ('metric', 'seeds', 'ours_dynamic', 'nova_default',
                    'best_packing', 'fgd', 'best_static',
                    'best_static_policy', 'operator_static_best',
                    'free_layout_bound', 'ratio_vs_best_static',
                    'ratio_ci95', 'gap_to_free_layout_bound_points'):
            self.assertIn(key, mine)
        self.assertEqual(2, mine['seeds'])
        low, high = mine['ratio_ci95']
        self.assertLessEqual(low, mine['ratio_vs_best_static'])
        self.assertLessEqual(mine['ratio_vs_best_static'], high)
        self.assertGreaterEqual(mine['gap_to_free_layout_bound_points'],
                                -1e-6)
        self.assertLessEqual(mine['best_static'], mine['nova_default'])
        # Each operator layout is reported; the best takes the better
        # one at each seed, so it is no worse than either on average.
        self.assertEqual({'whole', 'even-mix'},
                         set(mine['operator_static']))
        for value in mine['operator_static'].values():
            self.assertLessEqual(mine['operator_static_best'],
                                 value + 1e-9)


class OnDemandViewTest(testtools.TestCase):

    def test_a_unit_weighs_its_slices_against_the_gpus(self):
        trait = placement_traits.mig_on_demand_trait(7)
        summaries = {}
        for index, (profile, capacity, used) in enumerate((
                (THREE_G, 2, 1), (ONE_G, 4, 0), (SEVEN_G, 0, 0))):
            summaries['rp-%d' % index] = {
                'resources': {placement_traits.mig_resource_class(
                    profile): {'capacity': capacity, 'used': used}},
                'traits': [trait, placement_traits.physical_gpu_trait(
                    '0000:10:00.0')],
                'root_provider_uuid': 'root'}
        view = provider_summaries.parse(summaries)
        # The fill of an unbuilt host, then the built host.
        self.assertAlmostEqual(3 / 7, view.fill('root'))
        gpu = view.host('root').gpus['0000:10:00.0']
        self.assertAlmostEqual(3 / 7, gpu.used_share)
