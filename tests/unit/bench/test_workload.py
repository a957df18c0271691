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
"""Seeded prompts and arrival times."""

import math
import statistics

import testtools

from gpu_partitions.bench import workload


class PromptsTest(testtools.TestCase):

    def test_same_seed_same_prompts(self):
        first = workload.make_prompts(5, 32, 8, seed=3)
        self.assertEqual(first, workload.make_prompts(5, 32, 8, seed=3))
        self.assertNotEqual(first, workload.make_prompts(5, 32, 8, seed=4))

    def test_lengths_in_words(self):
        for prompt in workload.make_prompts(4, 32, 8):
            self.assertEqual(32, len(prompt.text.split()))
            self.assertEqual((32, 8), (prompt.input_len, prompt.output_len))

    def test_prompts_start_differently(self):
        prompts = workload.make_prompts(20, 16, 4)
        self.assertEqual(20, len({p.text.split()[0] for p in prompts}))

    def test_range_ratio_bounds(self):
        prompts = workload.make_prompts(200, 100, 10, range_ratio=0.5)
        inputs = [p.input_len for p in prompts]
        self.assertGreaterEqual(min(inputs), 50)
        self.assertLessEqual(max(inputs), 150)
        self.assertGreater(len(set(inputs)), 20)

    def test_refuses_nonsense(self):
        self.assertRaises(ValueError, workload.make_prompts, 0, 1, 1)
        self.assertRaises(ValueError, workload.make_prompts, 1, 1, 1,
                          range_ratio=1.0)


class ArrivalsTest(testtools.TestCase):

    def test_infinite_rate_sends_all_at_once(self):
        self.assertEqual([0.0] * 4, workload.arrival_offsets(4, math.inf))

    def test_infinite_burstiness_spaces_evenly(self):
        self.assertEqual([0.5, 1.0, 1.5, 2.0],
                         workload.arrival_offsets(4, 2.0, math.inf))

    def test_last_request_at_n_over_rate_whatever_the_seed(self):
        for seed in range(5):
            offsets = workload.arrival_offsets(100, 4.0, 1.0, seed)
            self.assertAlmostEqual(25.0, offsets[-1])
            self.assertEqual(sorted(offsets), offsets)

    def test_seeded(self):
        self.assertEqual(workload.arrival_offsets(10, 3.0, 0.5, 7),
                         workload.arrival_offsets(10, 3.0, 0.5, 7))

    def test_burstiness_changes_spread(self):
        def variation(burstiness):
            offsets = workload.arrival_offsets(4000, 10.0, burstiness, 1)
            gaps = [b - a for a, b in zip([0.0] + offsets, offsets)]
            return statistics.pstdev(gaps) / statistics.mean(gaps)
        # Poisson gaps have a coefficient of variation of 1; a gamma of
        # shape k has 1 / sqrt(k).
        self.assertAlmostEqual(1.0, variation(1.0), delta=0.05)
        self.assertAlmostEqual(2.0, variation(0.25), delta=0.15)
        self.assertAlmostEqual(0.5, variation(4.0), delta=0.05)

    def test_refuses_nonsense(self):
        self.assertRaises(ValueError, workload.arrival_offsets, 3, 0)
        self.assertRaises(ValueError, workload.arrival_offsets, 3, 1.0, 0)
