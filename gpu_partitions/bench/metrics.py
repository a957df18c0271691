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
"""Per-request records and the aggregate metrics of ``vllm bench serve``.

The formulas are those of vLLM's ``calculate_metrics``
(vllm/benchmarks/serve.py) so that numbers are comparable with vLLM's own
tool: percentiles by linear interpolation (``numpy.percentile``), standard
deviation over the population (``numpy.std``), failed requests excluded
from every latency statistic and counted apart.  :data:`DEFINITIONS` is
written into every result file next to the numbers.
"""

import collections
import dataclasses

import numpy

# Keys of the latency metrics, in the order reports list them.
LATENCY_METRICS = ('ttft', 'tpot', 'itl', 'e2el')
DEFAULT_PERCENTILES = (90.0, 99.0)
SLO_KEYS = ('ttft', 'tpot', 'e2el')

DEFINITIONS = {
    'ttft': 'Time to first token: from just before the HTTP request is '
            'sent to the arrival of the first streamed chunk whose '
            '"choices" is not empty (its text may be empty, e.g. the '
            'chat role chunk). Statistics over successful requests.',
    'tpot': 'Time per output token, per request: (e2el - ttft) / '
            '(output_tokens - 1), only for requests with more than one '
            'output token; statistics over those requests.',
    'itl': 'Inter-token latency: every gap between two consecutive '
           'streamed chunks with non-empty "choices" of one request, '
           'pooled over all successful requests (one chunk is taken as '
           'one token; use tpot when a server sends several tokens per '
           'chunk).',
    'e2el': 'End-to-end latency: from just before the request is sent '
            'to the last chunk with non-empty "choices" (the usage chunk '
            'and [DONE] excluded).',
    'duration': 'Wall time from the first request sent to the last '
                'request finished (seconds).',
    'request_throughput': 'completed / duration (requests/s).',
    'request_goodput': 'Completed requests meeting every given SLO '
                       '(ttft, tpot, e2el in ms; a request with one '
                       'output token has tpot 0) / duration; null when no '
                       'SLO is given.',
    'output_throughput': 'Sum of output tokens of completed requests / '
                         'duration (tokens/s).',
    'total_token_throughput': '(Sum of prompt tokens + sum of output '
                              'tokens) of completed requests / duration.',
    'total_input_tokens': 'Sum of usage.prompt_tokens of completed '
                          'requests; null (and total_token_throughput '
                          'null) when a server sent no usage for some.',
    'total_output_tokens': 'Sum of usage.completion_tokens of completed '
                           'requests; where a server sent no usage, the '
                           'number of non-empty chunks (counted in '
                           'requests_without_usage).',
    'max_output_tokens_per_s': 'Most output tokens whose chunk arrived '
                               'within one 1-second bucket counted from '
                               'the first request start (one per chunk).',
    'max_concurrent_requests': 'Peak number of successful requests in '
                               'flight at once (half-open intervals '
                               '[start, start + e2el)).',
    'percentiles': 'Linear interpolation between closest ranks '
                   '(numpy.percentile); std is the population standard '
                   'deviation; all latencies in milliseconds.',
    'failed': 'Requests that got no usable stream: HTTP status other '
              'than 200, connection error, timeout, a stall (no data line '
              'for --stall-timeout seconds), a malformed chunk or '
              'oversized line, or a stream ending before "data: [DONE]"; '
              'counted by kind in errors and excluded from all other '
              'figures.',
}


@dataclasses.dataclass
class RequestResult:
    """What one streamed request measured, times in seconds.

    ``start_time`` is on the load generator's clock; ``ttft``, ``itl`` and
    ``latency`` are durations.
    """

    success: bool = False
    error_kind: str = ''
    error: str = ''
    start_time: float = 0.0
    client_queue_time: float = 0.0
    ttft: float = 0.0
    itl: list = dataclasses.field(default_factory=list)
    latency: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    usage_reported: bool = False
    chunks: int = 0


def percentile_key(percentile):
    """``99`` -> ``'99'``, ``99.9`` -> ``'99.9'`` as vLLM names them."""
    if float(percentile).is_integer():
        return str(int(percentile))
    return str(percentile)


def _stats(values, name, percentiles):
    """mean/median/std/pXX in ms; zeros when there are no values (vLLM)."""
    data = values or [0.0]
    stats = {
        'mean_%s_ms' % name: float(numpy.mean(data)) * 1000,
        'median_%s_ms' % name: float(numpy.median(data)) * 1000,
        'std_%s_ms' % name: float(numpy.std(data)) * 1000,
    }
    for percentile in percentiles:
        stats['p%s_%s_ms' % (percentile_key(percentile), name)] = (
            float(numpy.percentile(data, percentile)) * 1000)
    return stats


def _peaks(successful):
    """Peak 1-second output chunk count and peak concurrency (vLLM)."""
    if not successful:
        return 0.0, 0
    first_start = min(r.start_time for r in successful)
    last_end = max(r.start_time + r.latency for r in successful)
    buckets = numpy.zeros(int(numpy.ceil(last_end - first_start)) + 1)
    events = []
    for result in successful:
        token_time = result.start_time + result.ttft
        times = [token_time]
        for gap in result.itl:
            token_time += gap
            times.append(token_time)
        for when in times:
            bucket = int(when - first_start)
            if 0 <= bucket < len(buckets):
                buckets[bucket] += 1
        events.append((result.start_time, 1))
        events.append((result.start_time + result.latency, -1))
    # A request ending exactly when another starts does not overlap it.
    events.sort()
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return float(numpy.max(buckets)), peak


def parse_goodput(items):
    """``['ttft:500', 'e2el:3000']`` -> ``{'ttft': 500.0, ...}`` (ms).

    :raises ValueError: naming the bad item and the allowed keys.
    """
    slos = {}
    for item in items or ():
        key, sep, value = item.partition(':')
        if not sep or key not in SLO_KEYS:
            raise ValueError('goodput SLO %r: expected KEY:MS with KEY one '
                             'of %s' % (item, ', '.join(SLO_KEYS)))
        try:
            slos[key] = float(value)
        except ValueError:
            raise ValueError('goodput SLO %r: %r is not a number of '
                             'milliseconds' % (item, value)) from None
        if not 0 <= slos[key] < float('inf'):
            raise ValueError('goodput SLO %r: must be a finite number, not '
                             'negative' % item)
    return slos


def summarise(results, duration, percentiles=DEFAULT_PERCENTILES,
              goodput=None):
    """Aggregate :class:`RequestResult` records as ``vllm bench serve``.

    :param duration: wall time of the whole run in seconds.
    :param goodput: ``{'ttft'|'tpot'|'e2el': ms}`` SLOs, or None.
    :returns: a dict with vLLM's result keys plus ``errors`` (count per
        kind) and ``requests_without_usage``.
    """
    successful = [r for r in results if r.success]
    ttfts, tpots, all_tpots, itls, e2els = [], [], [], [], []
    total_input = total_output = 0
    for result in successful:
        total_input += result.prompt_tokens
        total_output += result.output_tokens
        tpot = 0.0
        if result.output_tokens > 1:
            tpot = ((result.latency - result.ttft) /
                    (result.output_tokens - 1))
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls.extend(result.itl)
        ttfts.append(result.ttft)
        e2els.append(result.latency)

    good = None
    if goodput:
        per_metric = {'ttft': ttfts, 'tpot': all_tpots, 'e2el': e2els}
        good = 0
        for index in range(len(successful)):
            if all(per_metric[key][index] <= slo_ms / 1000
                   for key, slo_ms in goodput.items()):
                good += 1

    def per_second(count):
        # A run that took no measurable time has no rate (all failed fast).
        return count / duration if duration > 0 else 0.0

    errors = collections.Counter(r.error_kind for r in results
                                 if not r.success)
    without_usage = sum(1 for r in successful if not r.usage_reported)
    # Prompt tokens are only known from usage: no guessing without it.
    total_tokens = (None if without_usage
                    else per_second(total_input + total_output))
    peak_tokens, peak_concurrency = _peaks(successful)
    summary = {
        'duration': duration,
        'completed': len(successful),
        'failed': len(results) - len(successful),
        'errors': dict(sorted(errors.items())),
        'requests_without_usage': without_usage,
        'total_input_tokens': None if without_usage else total_input,
        'total_output_tokens': total_output,
        'request_throughput': per_second(len(successful)),
        'request_goodput': None if good is None else per_second(good),
        'output_throughput': per_second(total_output),
        'total_token_throughput': total_tokens,
        'max_output_tokens_per_s': peak_tokens,
        'max_concurrent_requests': peak_concurrency,
    }
    for name, values in (('ttft', ttfts), ('tpot', tpots), ('itl', itls),
                         ('e2el', e2els)):
        summary.update(_stats(values, name, percentiles))
    return summary
