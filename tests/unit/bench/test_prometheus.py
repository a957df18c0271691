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
"""Server-side figures from Prometheus text with vLLM's names."""

import testtools

from gpu_partitions.bench import prometheus

BEFORE = '''# HELP vllm:generation_tokens_total Number of generation tokens.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 1000.0
vllm:request_success_total{finished_reason="length",model_name="m"} 3.0
vllm:request_success_total{finished_reason="stop",model_name="m"} 1.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 2.0
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 1.0
vllm:num_requests_waiting{model_name="m"} 0.0
vllm:kv_cache_usage_perc{model_name="m"} NaN
'''
AFTER = '''vllm:generation_tokens_total{engine="0",model_name="m"} 1380.0
vllm:prompt_tokens_total{engine="0",model_name="m"} 11240.0
vllm:request_success_total{finished_reason="length",model_name="m"} 12.0
vllm:request_success_total{finished_reason="stop",model_name="m"} 2.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 3.0
vllm:time_to_first_token_seconds_count{model_name="m"} 14.0
vllm:num_requests_waiting{model_name="m"} 2.0
vllm:kv_cache_usage_perc{model_name="m"} 0.25
'''


class PrometheusTest(testtools.TestCase):

    def test_parse_sums_label_sets_and_skips_nan(self):
        parsed = prometheus.parse(BEFORE)
        self.assertEqual(4.0, parsed['vllm:request_success_total'])
        self.assertNotIn('vllm:kv_cache_usage_perc', parsed)
        self.assertEqual(100.0, parsed['vllm:generation_tokens_total'])

    def test_deltas(self):
        figures = prometheus.deltas(prometheus.parse(BEFORE),
                                    prometheus.parse(AFTER), 10.0)
        self.assertEqual(1280.0, figures['generation_tokens'])
        self.assertEqual(10240.0, figures['prompt_tokens'])
        self.assertEqual(10.0, figures['request_success'])
        self.assertEqual(128.0, figures['generation_throughput'])
        # (3.0 - 2.0) s over (14 - 4) requests.
        self.assertAlmostEqual(100.0, figures['mean_ttft_ms'])
        self.assertNotIn('mean_itl_ms', figures)

    def test_server_without_vllm_names_gives_nothing(self):
        other = prometheus.parse('http_requests_total 5\nfoo{a="b"} 1\n')
        self.assertEqual({}, prometheus.deltas(other, other, 1.0))
        self.assertEqual({}, prometheus.gauge_peaks([other]))

    def test_gauge_peaks(self):
        peaks = prometheus.gauge_peaks([prometheus.parse(BEFORE),
                                        prometheus.parse(AFTER)])
        self.assertEqual({'peak_num_requests_waiting': 2.0,
                          'peak_kv_cache_usage_perc': 0.25}, peaks)

    def test_garbage_lines_ignored(self):
        self.assertEqual({'a': 1.0},
                         prometheus.parse('a 1\nb notanumber\n{\n\n'))
