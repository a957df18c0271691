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
"""Protocols, policies and outputs on a small synthetic trace."""

import json
import os
from unittest import mock

import fixtures
import testtools

from gpu_partitions.commands import simulate as simulate_command
from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import policies
from gpu_partitions.simulator import run
from gpu_partitions.simulator import trace
from nova_filters import gpu_filter
from nova_filters import gpu_weigher
from tests.unit import cli_output
from tests.unit.simulator import synthetic


def synthetic_inputs(test, count=120):
    directory = test.useFixture(fixtures.TempDir()).path
    nodes_path, pods_path = synthetic.write(directory, count=count)
    tasks = trace.read_tasks(pods_path)
    nodes = trace.read_nodes(nodes_path)
    return directory, fleet.build_from_nodes(nodes, tasks), tasks


class ArrivalsTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        _, self.fleet, self.tasks = synthetic_inputs(self)

    def test_every_policy_stays_above_the_bound(self):
        runner = run.Runner(self.fleet, self.tasks, seed=1)
        bound = runner.bound()
        self.assertEqual(10, len(bound))
        for name, policy in policies.POLICIES.items():
            outcome = runner.arrivals(policy)
            self.assertEqual(100, len(outcome.curve), name)
            self.assertEqual(100.0, outcome.curve[-1][0], name)
            self.assertGreater(outcome.placed, 0, name)
            self.assertGreaterEqual(outcome.final_unallocated + 1e-6,
                                    bound[-1][1], name)
            # The unallocated share never grows without departures.
            values = [y for _, y in outcome.curve]
            self.assertEqual(sorted(values, reverse=True), values, name)

    def test_same_seed_same_result(self):
        policy = policies.POLICIES['fgd']
        first = run.Runner(self.fleet, self.tasks, seed=4).arrivals(policy)
        again = run.Runner(self.fleet, self.tasks, seed=4).arrivals(policy)
        self.assertEqual(first.curve, again.curve)
        other = run.Runner(self.fleet, self.tasks, seed=5).arrivals(policy)
        self.assertNotEqual(first.curve, other.curve)

    def test_command_names_every_policy(self):
        self.assertEqual(tuple(policies.POLICIES),
                         simulate_command._policy_names())


class OurPluginsTest(testtools.TestCase):
    """ours-* run the real nova_filters classes, and pack and spread put
    the same tasks on different GPUs.
    """

    def setUp(self):
        super().setUp()
        self.fleet = fleet.parse_fleet_spec('a100-80gb-mig:all-1g:2:2')
        self.tasks = [trace.Task('t%d' % i, 1000, 1024, 1, 100)
                      for i in range(3)]

    def _gpus(self, name):
        runner = run.Runner(self.fleet, self.tasks, keep_decisions=True)
        scheduler, _ = runner._scheduler(policies.POLICIES[name])
        self.assertIsInstance(scheduler.filters[0],
                              gpu_filter.GpuPartitionFilter)
        self.assertIsInstance(scheduler.weighers[-1],
                              gpu_weigher.GpuPartitionWeigher)
        outcome = run.Outcome(name)
        state = run.FleetState(self.fleet)
        runner.keep_decisions = True
        for index, task in enumerate(self.tasks):
            self.assertTrue(runner._place(scheduler, outcome, state,
                                          'c%d' % index, task, index))
        return [[name for name, rc, _ in decision if rc.startswith('CUSTOM')]
                for _, decision in outcome.decisions]

    def test_pack_fills_one_gpu_spread_uses_all(self):
        packed = self._gpus('ours-pack')
        self.assertEqual(1, len({tuple(d) for d in packed}))
        spread = self._gpus('ours-spread')
        self.assertEqual(3, len({tuple(d) for d in spread}))


class ReplayTest(testtools.TestCase):

    def test_replay_releases_what_it_claimed(self):
        _, built, tasks = synthetic_inputs(self, count=80)
        runner = run.Runner(built, tasks, seed=0)
        for name in ('nova-default', 'ours-pack'):
            scheduler, placement = runner._scheduler(
                policies.POLICIES[name])
            runner._scheduler = mock.Mock(return_value=(scheduler,
                                                        placement))
            outcome = runner.replay(policies.POLICIES[name])
            del runner._scheduler
            self.assertEqual(80, outcome.placed + outcome.failed)
            self.assertEqual({}, placement.usages())
            last = outcome.over_time[-1]
            self.assertEqual(100.0, last['unallocated'])
            self.assertEqual(built.gpu_count, last['free_whole_gpus'])
            busiest = min(s['free_whole_gpus'] for s in outcome.over_time)
            self.assertLess(busiest, built.gpu_count)


class CommandTest(testtools.TestCase):

    def test_table_json_and_plots(self):
        directory, _, _ = synthetic_inputs(self, count=60)
        result = os.path.join(directory, 'result.json')
        prefix = os.path.join(directory, 'plot')
        code, text, _ = cli_output.run_cli([
            'simulate', '--trace-dir', directory, '--trace', 'synthetic',
            '--scale', '1', '--policies', 'nova-default,fgd,ours-pack',
            '--json', result, '--plots', prefix, '--no-progress',
            '--jobs', '2'])
        self.assertEqual(0, code)
        for name in ('nova-default', 'fgd', 'ours-pack', 'bound'):
            self.assertIn(name, text)
        with open(result) as stream:
            data = json.load(stream)
        self.assertEqual(['fgd', 'nova-default', 'ours-pack'],
                         sorted(data['policies']))
        self.assertEqual(100, len(data['policies']['fgd']['curve']))
        for suffix in ('-unallocated.png', '-free.png'):
            with open(prefix + suffix, 'rb') as stream:
                self.assertEqual(b'\x89PNG', stream.read(4))

    def test_packing_benchmark_prints_the_figures_and_keeps_each_run(self):
        directory, _, _ = synthetic_inputs(self, count=60)
        output = os.path.join(directory, 'out')
        self.useFixture(fixtures.EnvironmentVariable(
            trace.TRACE_DIR_ENV, directory))
        self.useFixture(fixtures.EnvironmentVariable(
            'GPU_PARTITIONS_SIM_SCALE', '1'))
        code, stdout, _ = cli_output.run_cli(
            ['benchmark', 'packing', '--quick', '--traces', 'synthetic',
             '--output', output])
        self.assertEqual(0, code)
        figures = json.loads(stdout.strip().splitlines()[-1])
        mine = figures['synthetic']
        for key in ('ratio_vs_best_packing', 'ratio_vs_fgd',
                    'gap_to_bound_points'):
            self.assertIn(key, mine)
        self.assertGreaterEqual(mine['gap_to_bound_points'], 0.0)
        with open(os.path.join(output, 'synthetic-seed0.json')) as stream:
            self.assertIn('ours-pack', json.load(stream)['policies'])
        with open(os.path.join(output, 'synthetic-seed0-unallocated.png'),
                  'rb') as stream:
            self.assertEqual(b'\x89PNG', stream.read(4))

    def test_replay_needs_times(self):
        directory = self.useFixture(fixtures.TempDir()).path
        nodes, _ = synthetic.write(directory)
        pods = os.path.join(directory, 'short.csv')
        with open(pods, 'w') as stream:
            stream.write(synthetic.pods_csv(timed=False))
        code, _, stderr = cli_output.run_cli(
            ['simulate', '--nodes', nodes, '--trace', pods, '--protocol',
             'replay', '--no-progress'])
        self.assertEqual(2, code)
        self.assertIn('no creation times', stderr)


class BoundTest(testtools.TestCase):

    def _fleet(self, cpu):
        host = fleet.make_host('h', fleet.KINDS['a100-80gb-mig'], cpu,
                               65536, [fleet.MIG_OFF, 'all-1g'])
        return fleet.Fleet(hosts=[host])

    def test_slices_limit_the_bound(self):
        tasks = [trace.Task('a', 1000, 1024, 1, 1000)] * 3 + [
            trace.Task('b', 1000, 1024, 1, 100)] * 2
        allocated = run.relaxed_allocation(self._fleet(96000), tasks)
        # One whole (MIG-off) GPU, and two 1g of the all-1g GPU.
        self.assertAlmostEqual(1 + 2 / 7, allocated)

    def test_cpu_limits_the_bound(self):
        tasks = [trace.Task('a', 2000, 1024, 1, 1000)]
        # Fractional: half the task fits in half the CPU.
        self.assertAlmostEqual(
            0.5, run.relaxed_allocation(self._fleet(1000), tasks))
        self.assertAlmostEqual(
            1.0, run.relaxed_allocation(self._fleet(2000), tasks))
