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
"""A reduced Alibaba trace, cut at test time from the real files.

The files are read from ``../shared/traces/alibaba-openb-2023`` beside
the repository (or ``$GPU_PARTITIONS_TRACE_DIR``); nothing of them is
kept in the repository. Without them the test is skipped.
"""

import os

import testtools

from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import policies
from gpu_partitions.simulator import run
from gpu_partitions.simulator import trace

TRACES = ('default', 'gpushare100', 'multigpu50')


class ReducedTraceTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if not os.path.exists(trace.default_node_file()):
            self.skipTest('no openb trace at %s' % trace.trace_dir())

    def test_whole_files_parse_and_a_reduced_run_stays_above_the_bound(self):
        nodes = trace.read_nodes(trace.default_node_file())
        self.assertEqual(1213, len(nodes))
        self.assertEqual(6212, sum(n.gpus for n in nodes))
        for name in TRACES:
            tasks = trace.read_tasks(trace.pod_file(name))
            self.assertGreater(len(tasks), 8000, name)
            # Every row of our traces can be placed: nothing set aside.
            _, kept, set_aside = fleet.split_trace(tasks, nodes=nodes)
            self.assertEqual(tasks, kept, name)
            self.assertEqual(0, set_aside['tasks'].total, name)
            self.assertEqual(0, set_aside['nodes'].total, name)
            # The reduced trace: the first 1,500 tasks, on 1.5% of the
            # nodes of each (model, GPUs) group.
            reduced = tasks[:1500]
            built = fleet.build_from_nodes(nodes, reduced, scale=0.015,
                                           seed=0)
            runner = run.Runner(built, reduced, seed=0)
            bound = runner.bound()[-1][1]
            for policy in ('nova-default', 'fgd', 'ours-pack'):
                outcome = runner.arrivals(policies.POLICIES[policy])
                self.assertGreaterEqual(outcome.final_unallocated + 1e-6,
                                        bound, (name, policy))
                self.assertGreater(outcome.placed, 100, (name, policy))
