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
"""The aggregates of :mod:`gpu_partitions.bench.metrics`, worked by hand."""

import math

import testtools

from gpu_partitions.bench import metrics


def _ok(start, ttft, itl, latency, prompt, output):
    return metrics.RequestResult(success=True, start_time=start, ttft=ttft,
                                 itl=list(itl), latency=latency,
                                 prompt_tokens=prompt, output_tokens=output,
                                 usage_reported=True)


def _three_and_a_failure():
    return [_ok(0.0, 0.1, [0.02, 0.03], 0.15, 10, 3),
            _ok(0.5, 0.2, [0.04], 0.24, 20, 2),
            _ok(1.2, 0.3, [], 0.3, 30, 1),
            metrics.RequestResult(error_kind='http_500', error='boom')]


class SummariseTest(testtools.TestCase):

    def assertFigures(self, summary, expected):
        for key, value in expected.items():
            self.assertAlmostEqual(value, summary[key], places=9, msg=key)

    def test_counts_and_throughputs(self):
        summary = metrics.summarise(_three_and_a_failure(), 2.0)
        self.assertEqual(3, summary['completed'])
        self.assertEqual(1, summary['failed'])
        self.assertEqual({'http_500': 1}, summary['errors'])
        self.assertEqual(60, summary['total_input_tokens'])
        self.assertEqual(6, summary['total_output_tokens'])
        self.assertFigures(summary, {'request_throughput': 1.5,
                                     'output_throughput': 3.0,
                                     'total_token_throughput': 33.0})
        self.assertIsNone(summary['request_goodput'])
        self.assertEqual(0, summary['requests_without_usage'])

    def test_latency_statistics_as_vllm(self):
        summary = metrics.summarise(_three_and_a_failure(), 2.0)
        self.assertFigures(summary, {
            # TTFT over requests: 100, 200, 300 ms.
            'mean_ttft_ms': 200.0, 'median_ttft_ms': 200.0,
            'std_ttft_ms': math.sqrt(20000 / 3),
            'p90_ttft_ms': 280.0, 'p99_ttft_ms': 298.0,
            # TPOT only where output > 1 token: 25, 40 ms.
            'mean_tpot_ms': 32.5, 'median_tpot_ms': 32.5,
            'std_tpot_ms': 7.5, 'p90_tpot_ms': 38.5, 'p99_tpot_ms': 39.85,
            # ITL pooled gaps: 20, 30, 40 ms.
            'mean_itl_ms': 30.0, 'median_itl_ms': 30.0,
            'std_itl_ms': math.sqrt(200 / 3), 'p90_itl_ms': 38.0,
            'p99_itl_ms': 39.8,
            # E2EL: 150, 240, 300 ms.
            'mean_e2el_ms': 230.0, 'median_e2el_ms': 240.0,
            'std_e2el_ms': math.sqrt(3800), 'p90_e2el_ms': 288.0,
            'p99_e2el_ms': 298.8,
        })

    def test_goodput_counts_requests_meeting_every_slo(self):
        results = _three_and_a_failure()
        both = metrics.summarise(results, 2.0,
                                 goodput={'ttft': 250, 'tpot': 30})
        # Only the first request has ttft <= 250 and tpot <= 30 ms.
        self.assertAlmostEqual(0.5, both['request_goodput'])
        one_token = metrics.summarise(results, 2.0,
                                      goodput={'tpot': 1, 'e2el': 300})
        # The one-token request has tpot 0 and e2el exactly 300: good.
        self.assertAlmostEqual(0.5, one_token['request_goodput'])

    def test_peaks(self):
        summary = metrics.summarise(_three_and_a_failure(), 2.0)
        # Chunks at .1 .12 .15 .7 .74 fall in second 0, 1.5 in second 1.
        self.assertEqual(5.0, summary['max_output_tokens_per_s'])
        self.assertEqual(1, summary['max_concurrent_requests'])
        touching = [_ok(0.0, 0.5, [], 1.0, 1, 1), _ok(1.0, 0.5, [], 1.0, 1, 1)]
        self.assertEqual(
            1, metrics.summarise(touching, 2.0)['max_concurrent_requests'])
        overlapping = [_ok(0.0, 0.5, [], 1.0, 1, 1),
                       _ok(0.5, 0.5, [], 1.5, 1, 1)]
        self.assertEqual(
            2, metrics.summarise(overlapping, 2.0)['max_concurrent_requests'])

    def test_all_failed_gives_zeros_not_errors(self):
        failed = [metrics.RequestResult(error_kind='timeout')] * 3
        summary = metrics.summarise(failed, 1.0)
        self.assertEqual(0, summary['completed'])
        self.assertEqual({'timeout': 3}, summary['errors'])
        self.assertEqual(0.0, summary['mean_ttft_ms'])
        self.assertEqual(0.0, summary['output_throughput'])

    def test_percentile_names(self):
        summary = metrics.summarise([_ok(0, 0.1, [], 0.1, 1, 1)], 1.0,
                                    percentiles=(50, 99.9))
        self.assertIn('p50_ttft_ms', summary)
        self.assertIn('p99.9_e2el_ms', summary)

    def test_every_result_key_is_defined(self):
        summary = metrics.summarise(_three_and_a_failure(), 2.0)
        for key in ('duration', 'request_throughput', 'request_goodput',
                    'output_throughput', 'total_token_throughput',
                    'max_output_tokens_per_s', 'max_concurrent_requests',
                    'failed', 'total_input_tokens', 'total_output_tokens'):
            self.assertIn(key, summary)
            self.assertIn(key, metrics.DEFINITIONS)
        for name in metrics.LATENCY_METRICS:
            self.assertIn(name, metrics.DEFINITIONS)


class GoodputParseTest(testtools.TestCase):

    def test_parses_milliseconds(self):
        self.assertEqual({'ttft': 500.0, 'e2el': 3000.0},
                         metrics.parse_goodput(['ttft:500', 'e2el:3000']))

    def test_refuses_unknown_key_naming_allowed(self):
        error = self.assertRaises(ValueError, metrics.parse_goodput,
                                  ['itl:5'])
        self.assertIn('itl:5', str(error))
        self.assertIn('ttft, tpot, e2el', str(error))

    def test_refuses_non_number(self):
        self.assertRaises(ValueError, metrics.parse_goodput, ['ttft:x'])
        self.assertRaises(ValueError, metrics.parse_goodput, ['ttft:-1'])
