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
"""Server-side figures from a Prometheus ``/metrics`` text, vLLM names.

Counters and histogram sums/counts are read before and after a run and
their differences reported; gauges are sampled during the run and their
peaks reported.  Series are summed over labels (one model per server).
A server without these names (llama.cpp, a stub) simply yields nothing.
"""

import math

# Counters: result key -> vLLM metric name.
COUNTERS = {
    'prompt_tokens': 'vllm:prompt_tokens_total',
    'generation_tokens': 'vllm:generation_tokens_total',
    'request_success': 'vllm:request_success_total',
    'num_preemptions': 'vllm:num_preemptions_total',
    'prefix_cache_queries': 'vllm:prefix_cache_queries_total',
    'prefix_cache_hits': 'vllm:prefix_cache_hits_total',
}
# Histograms: result key -> vLLM metric name (seconds); the mean over the
# run is delta(_sum) / delta(_count).
HISTOGRAMS = {
    'ttft': 'vllm:time_to_first_token_seconds',
    'itl': 'vllm:inter_token_latency_seconds',
    'e2el': 'vllm:e2e_request_latency_seconds',
    'queue_time': 'vllm:request_queue_time_seconds',
    'prefill_time': 'vllm:request_prefill_time_seconds',
    'decode_time': 'vllm:request_decode_time_seconds',
}
GAUGES = {
    'num_requests_running': 'vllm:num_requests_running',
    'num_requests_waiting': 'vllm:num_requests_waiting',
    'kv_cache_usage_perc': 'vllm:kv_cache_usage_perc',
}


def parse(text):
    """``{metric name: value summed over label sets}`` of an exposition."""
    totals = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if '{' in line:
            name, _, rest = line.partition('{')
            _, _, rest = rest.rpartition('}')
        else:
            name, _, rest = line.partition(' ')
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        totals[name.strip()] = totals.get(name.strip(), 0.0) + value
    return totals


def deltas(before, after, duration):
    """Server-side figures of one run from two :func:`parse` results.

    :returns: a dict, empty when the server has none of vLLM's names.
    """
    figures = {}
    for key, name in COUNTERS.items():
        if name in before and name in after:
            figures[key] = after[name] - before[name]
    if 'generation_tokens' in figures and duration > 0:
        figures['generation_throughput'] = (
            figures['generation_tokens'] / duration)
    for key, name in HISTOGRAMS.items():
        total, count = name + '_sum', name + '_count'
        if all(n in before and n in after for n in (total, count)):
            observations = after[count] - before[count]
            if observations > 0:
                figures['mean_%s_ms' % key] = (
                    (after[total] - before[total]) / observations * 1000)
    return figures


def gauge_peaks(samples):
    """``{'peak_<gauge>': max}`` over parsed samples taken during a run."""
    peaks = {}
    for key, name in GAUGES.items():
        values = [sample[name] for sample in samples if name in sample]
        if values:
            peaks['peak_' + key] = max(values)
    return peaks
