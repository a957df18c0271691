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
"""``gpu-partitions bench`` and ``gpu-partitions benchmark`` commands."""

import io
import json
import os
from unittest import mock

import fixtures
import testtools

from gpu_partitions.bench import ceiling
from gpu_partitions.bench import stub
from gpu_partitions import cli
from gpu_partitions.commands import benchmark
from tests.unit.bench import fakes
from tests.unit.cli_output import run_cli


class BenchRunTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.directory = self.useFixture(fixtures.TempDir()).path

    def run_bench(self, url, name, *extra):
        path = os.path.join(self.directory, name + '.json')
        code, out, err = run_cli([
            'bench', '--base-url', url, '--num-prompts', '6',
            '--random-input-len', '8', '--random-output-len', '3',
            '--no-gpu-probe', '--result-file', path, '--label', name,
            *extra])
        return code, out, err, path

    def test_concurrency_sweep_writes_json_report_and_plots(self):
        script = stub.Script(ttft=0.002, itl=0.001, output_tokens=None)
        with fakes.stub_in_thread([script]) as server:
            code, out, err, path = self.run_bench(
                server.base_url, 'sweep', '--max-concurrency', '1', '3',
                '--backend', 'openai-chat', '--goodput', 'ttft:1000')
        self.assertEqual(0, code, err)
        self.assertIn('Serving Benchmark Result', out)
        with open(path) as stream:
            result = json.load(stream)
        self.assertEqual([1, 3], [r['config']['max_concurrency']
                                  for r in result['runs']])
        # Each point its own prompts: no prefix-cache carry-over.
        self.assertEqual([0, 1], [r['config']['seed']
                                  for r in result['runs']])
        for run in result['runs']:
            self.assertEqual((6, 0, 18), (
                run['summary']['completed'], run['summary']['failed'],
                run['summary']['total_output_tokens']))
            self.assertEqual('/v1/chat/completions',
                             run['config']['endpoint'])
            self.assertAlmostEqual(run['summary']['request_throughput'],
                                   run['summary']['request_goodput'])
        self.assertEqual('stub-model',
                         result['preflight']['endpoint']['model'])
        self.assertIn('tpot', result['definitions'])
        stem = path[:-len('.json')]
        self.assertTrue(os.path.exists(stem + '.md'))
        self.assertTrue(os.path.exists(
            os.path.join(stem + '-plots', 'throughput.png')))

    def test_compare_two_results(self):
        with fakes.stub_in_thread([stub.Script(output_tokens=None)]) as srv:
            paths = [self.run_bench(srv.base_url, name, '--no-plots')[3]
                     for name in ('one', 'two')]
        code, out, err = run_cli(['bench', 'compare', *paths,
                                  '--memory-gib', 'one=10', 'two=40',
                                  '--compute-share', 'one=0.25',
                                  '--output-dir', self.directory])
        self.assertEqual(0, code, err)
        self.assertIn('| one |', out)
        with open(os.path.join(self.directory, 'compare.json')) as stream:
            rows = json.load(stream)
        one = [r for r in rows if r['label'] == 'one'][0]
        self.assertAlmostEqual(one['output_throughput'] / 10,
                               one['output_throughput_per_gib'])
        self.assertAlmostEqual(one['output_throughput'] / 0.25,
                               one['output_throughput_per_compute_share'])

    def test_endpoint_down_is_a_usage_error(self):
        code, out, err, _ = self.run_bench('http://127.0.0.1:9', 'down')
        self.assertEqual(2, code)
        self.assertIn('not ready', err)

    def test_bad_flags_are_refused_with_the_flag_named(self):
        with fakes.stub_in_thread([stub.Script()]) as server:
            code, _, err, _ = self.run_bench(server.base_url, 'x',
                                             '--goodput', 'itl:3')
            self.assertEqual(2, code)
            self.assertIn('itl:3', err)
            code, _, err, _ = self.run_bench(
                server.base_url, 'y', '--request-rate', '1', '2',
                '--max-concurrency', '1', '2')
            self.assertEqual(2, code)
            self.assertIn('not both', err)
        with mock.patch('sys.stderr', io.StringIO()):
            exit_ = self.assertRaises(SystemExit, run_cli, ['bench', 'x.json'])
        self.assertEqual(2, exit_.code)
        code, _, err = run_cli(['bench', 'compare', '/nonexistent.json'])
        self.assertEqual(2, code)

    def test_failures_give_exit_code_one(self):
        with fakes.stub_in_thread([stub.Script(fault='http_500')]) as srv:
            code, out, err, path = self.run_bench(srv.base_url, 'fail',
                                                  '--no-plots')
        self.assertEqual(1, code)
        self.assertIn("{'http_500': 6}", out)


class BenchmarkCommandTest(testtools.TestCase):

    def test_registry_names_harness(self):
        self.assertIn('harness', benchmark.TARGETS)
        args = cli.build_parser().parse_args(['benchmark', 'harness'])
        self.assertEqual('harness', args.target)

    def test_ceiling_against_a_stub_process(self):
        summary = ceiling.run(num_prompts=40, concurrency=4, long_len=16,
                              guidellm=False, pin=False, repeats=2,
                              log=lambda *a: None)
        self.assertEqual(2, len(summary['workloads']['short'][
            'harness_tries']))
        self.assertIsNone(summary['other_generator'])
        self.assertIsNone(summary['ratio_vs_other'])
        short = summary['workloads']['short']['harness']
        self.assertEqual((40, 0), (short['completed'], short['failed']))
        self.assertGreater(summary['requests_per_s'], 0)
        long_ = summary['workloads']['long']['harness']
        self.assertAlmostEqual(long_['requests_per_s'] * 16,
                               long_['chunks_per_s'], delta=0.5 * 16)
