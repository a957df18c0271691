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
"""``gpu-partitions benchmark scheduler`` on a small fleet."""

import gc

from nova import test

from gpu_partitions.commands import scheduler_benchmark


class SchedulerBenchmarkTest(test.NoDBTestCase):

    def test_counts_placement_requests_of_each_arm(self):
        figures = scheduler_benchmark.measure(30, rounds=1)
        self.assertEqual(set(scheduler_benchmark.ARMS), set(figures))
        # Nova's own query; the plugins reuse it or ask once more.
        self.assertEqual(1, figures['baseline']['placement_requests'])
        self.assertEqual(1, figures['plugins']['placement_requests'])
        self.assertEqual(
            2, figures['plugins_extra_request']['placement_requests'])
        for arm in figures.values():
            self.assertGreater(arm['cpu_seconds'], 0)
            self.assertGreater(arm['seconds'], 0)
        # The GPU plugins' own time is told apart inside each request.
        self.assertEqual([0.0], figures['baseline']['plugin_cpu_rounds'])
        self.assertGreater(figures['plugins']['plugin_cpu_rounds'][0], 0)
        self.assertGreater(
            scheduler_benchmark.in_request_ratios(figures['plugins'])[0], 1)
        # Full garbage collections are counted per counted round, and
        # their time is told apart from the request's.
        for arm in figures.values():
            self.assertEqual(1, len(arm['full_gc_rounds']))
            self.assertGreaterEqual(arm['full_gc_rounds'][0], 0)
            self.assertGreater(arm['cpu_without_full_gc_rounds'][0], 0)
            self.assertLessEqual(arm['cpu_without_full_gc_rounds'][0],
                                 arm['cpu_rounds'][0])
            # What is left outside the collector and the plugins is
            # Nova's own work, less than the request's.
            self.assertGreater(arm['cpu_outside_gc_and_plugins'], 0)
            self.assertLess(arm['cpu_outside_gc_and_plugins'],
                            arm['cpu_seconds'])

    def test_collections_are_counted_while_counting(self):
        collections = scheduler_benchmark.Collections()
        gc.callbacks.append(collections)
        try:
            gc.collect()
            self.assertEqual(0, collections.count)
            collections.counting = True
            gc.collect(1)
            gc.collect(0)
            collections.in_plugins = True
            gc.collect()
            collections.in_plugins = False
            collections.counting = False
            gc.collect()
            gc.collect(0)
        finally:
            gc.callbacks.remove(collections)
        # Full and young collections apart, only while counting (a
        # young one may also start on its own while counting).
        self.assertEqual(1, collections.count)
        self.assertGreaterEqual(collections.young_count, 2)
        self.assertGreaterEqual(collections.seconds, 0.0)
        self.assertGreaterEqual(collections.young_seconds, 0.0)
        # The full one ran inside the plugins: part of their time, no more
        # than all the collections took.
        self.assertLessEqual(collections.in_plugins_seconds,
                             collections.seconds + collections.young_seconds)

    def test_the_first_request_after_start_reuses_novas_answer(self):
        # Round 0 is each arm's first request after its scheduler (and
        # the plugins) started: Nova's real select_destinations.
        figures = scheduler_benchmark.measure(30, rounds=1)
        self.assertEqual(
            1, figures['baseline']['first_request_placement_requests'])
        self.assertEqual(
            1, figures['plugins']['first_request_placement_requests'])
        self.assertEqual(2, figures['plugins_extra_request'][
            'first_request_placement_requests'])

    def test_an_arm_whose_process_fails_is_named(self):
        # No hosts: every arm's first request selects none and its
        # process ends; the benchmark says which, not a bare EOFError.
        self.assertRaisesRegex(
            RuntimeError, 'arm gave no answer .its process ended',
            scheduler_benchmark.measure, 0, 1)
