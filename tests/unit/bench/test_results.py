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
"""Result files, the markdown report, plots and the per-slice comparison."""

import json
import os

import fixtures
import testtools

from gpu_partitions.bench import compare
from gpu_partitions.bench import metrics
from gpu_partitions.bench import results


def fake_run(concurrency, output_throughput, completed=10):
    summary = metrics.summarise([], 1.0)
    summary.update({'completed': completed,
                    'output_throughput': output_throughput,
                    'request_throughput': output_throughput / 100,
                    'p99_ttft_ms': 50.0 * concurrency,
                    'p99_tpot_ms': 10.0 + concurrency})
    return {'config': {'request_rate': 'inf',
                       'max_concurrency': concurrency, 'num_prompts': 100,
                       'percentiles': [90.0, 99.0]},
            'summary': summary, 'server': {'generation_tokens': 5.0},
            'first_errors': []}


def fake_result(label, gpu, throughputs):
    preflight = {'endpoint': {'base_url': 'http://g:8000', 'model': 'm'},
                 'gpu': gpu}
    runs = [fake_run(c, t) for c, t in throughputs]
    return results.build(preflight, runs, label)


MIG_3G = {'present': True, 'gpus': [{'name': 'NVIDIA A100D-3-40C',
                                     'memory_mib': 40960,
                                     'profile': 'A100D-3-40C',
                                     'compute_share': 3 / 7}]}
FULL = {'present': True, 'gpus': [{'name': 'NVIDIA A100-SXM4-80GB',
                                   'memory_mib': 81920, 'profile': None,
                                   'compute_share': 1.0}]}
TIME_SLICED = {'present': True, 'gpus': [{'name': 'NVIDIA A100D-20C',
                                          'memory_mib': 20480,
                                          'profile': 'A100D-20C',
                                          'compute_share': None}]}


class ResultFilesTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.directory = self.useFixture(fixtures.TempDir()).path

    def test_json_round_trip_keeps_definitions(self):
        result = fake_result('a', MIG_3G, [(1, 100.0)])
        path = os.path.join(self.directory, 'r.json')
        results.write_json(result, path)
        loaded = results.load(path)
        self.assertEqual(metrics.DEFINITIONS, loaded['definitions'])
        self.assertEqual(results.SCHEMA, loaded['schema'])

    def test_load_refuses_other_json(self):
        path = os.path.join(self.directory, 'x.json')
        with open(path, 'w') as stream:
            json.dump({'schema': 'other'}, stream)
        self.assertRaises(ValueError, results.load, path)

    def test_markdown_says_what_it_ran_on(self):
        text = results.markdown(fake_result('slice', MIG_3G,
                                            [(1, 100.0), (8, 600.0)]))
        self.assertIn('profile A100D-3-40C', text)
        self.assertIn('| concurrency | completed', text)
        self.assertIn('| 8 | TTFT |', text)
        self.assertIn('**tpot**', text)
        self.assertIn('generation_tokens 5.00', text)

    def test_plots_are_pngs(self):
        paths = results.plot(fake_result('s', FULL, [(1, 100.0),
                                                     (4, 300.0)]),
                             self.directory)
        self.assertEqual(['throughput.png', 'latency.png'],
                         [os.path.basename(p) for p in paths])
        for path in paths:
            with open(path, 'rb') as stream:
                self.assertEqual(b'\x89PNG', stream.read(4))


class CompareTest(testtools.TestCase):

    def test_normalised_per_memory_and_compute_share(self):
        table = compare.rows([
            ('3g', fake_result('3g', MIG_3G, [(1, 100.0), (8, 600.0)])),
            ('full', fake_result('full', FULL, [(8, 1400.0)]))])
        best = {row['label']: row for row in compare.best(table)}
        self.assertEqual(600.0, best['3g']['output_throughput'])
        self.assertAlmostEqual(15.0, best['3g']['output_throughput_per_gib'])
        self.assertAlmostEqual(1400.0, best['3g'][
            'output_throughput_per_compute_share'])
        self.assertAlmostEqual(17.5, best['full']['output_throughput_per_gib'])
        self.assertAlmostEqual(1400.0, best['full'][
            'output_throughput_per_compute_share'])
        self.assertEqual(400.0, best['3g']['ttft_ms_p99'])

    def test_overrides_fill_what_the_profile_does_not_say(self):
        labelled = [('ts', fake_result('ts', TIME_SLICED, [(4, 500.0)]))]
        row = compare.rows(labelled)[0]
        self.assertIsNone(row['output_throughput_per_compute_share'])
        row = compare.rows(labelled, share_overrides={'ts': 0.25})[0]
        self.assertEqual(2000.0, row['output_throughput_per_compute_share'])

    def test_markdown_and_plot(self):
        table = compare.rows([('a', fake_result('a', FULL, [(1, 10.0)]))])
        self.assertIn('output_throughput_per_gib', compare.markdown(table))
        directory = self.useFixture(fixtures.TempDir()).path
        path = compare.plot(table, os.path.join(directory, 'c.png'))
        self.assertGreater(os.path.getsize(path), 1000)
