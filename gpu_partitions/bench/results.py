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
"""Result files: JSON (the record), a markdown report and PNG plots.

A result holds the pre-flight (endpoint, model, GPU, client), one entry
per run of a sweep, and the metric definitions, so that a file read years
later still says what its numbers mean and what they ran on.
"""

import datetime
import json
import math
import os

from gpu_partitions.bench import metrics
from gpu_partitions import plotting
from gpu_partitions.simulator import report

SCHEMA = 'gpu-partitions-bench/1'


def build(preflight, runs, label=None, metadata=None):
    return {
        'schema': SCHEMA,
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'label': label,
        'metadata': metadata or {},
        'preflight': preflight,
        'runs': runs,
        'definitions': metrics.DEFINITIONS,
    }


def write_json(result, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    text = json.dumps(result, indent=2, sort_keys=False) + '\n'
    report.atomic_write(path, lambda stream: stream.write(text.encode()))


# Far above a result of many sweeps, low enough that /dev/zero or a
# runaway file cannot exhaust memory.
MAX_RESULT_BYTES = 64 * 1024 * 1024


def load(path):
    """A result file; ValueError naming ``path`` when it is not one."""
    with open(path, 'rb') as stream:
        raw = stream.read(MAX_RESULT_BYTES + 1)
    if len(raw) > MAX_RESULT_BYTES:
        raise ValueError('%s: larger than %d bytes' % (path,
                                                       MAX_RESULT_BYTES))
    try:
        result = json.loads(raw.decode('utf-8'))
    except ValueError as error:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        raise ValueError('%s: not JSON: %s' % (path, error)) from None
    schema = result.get('schema') if isinstance(result, dict) else None
    if schema != SCHEMA:
        raise ValueError('%s: not a gpu-partitions bench result (schema %r)'
                         % (path, schema))
    return result


def load_point(run):
    """The swept setting of a run: ``('concurrency'|'rate', value)``."""
    config = run['config']
    rate = config['request_rate']
    if rate == 'inf' or (isinstance(rate, float) and math.isinf(rate)):
        return 'concurrency', config['max_concurrency'] or config[
            'num_prompts']
    return 'request rate', float(rate)


def gpu_line(preflight):
    gpu = (preflight or {}).get('gpu') or {}
    if not gpu.get('present'):
        return 'none visible (%s)' % gpu.get('reason', 'not probed')
    parts = []
    for device in gpu['gpus']:
        text = '%s, %s MiB' % (device.get('name'), device.get('memory_mib'))
        if device.get('profile'):
            text += ', profile %s' % device['profile']
        if device.get('licence_status'):
            text += ', licence: %s' % device['licence_status']
        parts.append(text)
    return '; '.join(parts)


def _fmt(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return '%.2f' % value
    return str(value)


def markdown(result):
    """A human-readable report of one result."""
    preflight = result.get('preflight') or {}
    endpoint = preflight.get('endpoint') or {}
    lines = ['# Inference benchmark: %s' % (result.get('label') or
                                            endpoint.get('model')), '',
             '- date: %s' % result['date'],
             '- endpoint: %s' % endpoint.get('base_url'),
             '- model: %s' % endpoint.get('model'),
             '- GPU: %s' % gpu_line(preflight)]
    for key, value in sorted((result.get('metadata') or {}).items()):
        lines.append('- %s: %s' % (key, value))
    runs = result['runs']
    if not runs:
        return '\n'.join(lines + ['', 'No runs.', ''])
    percentiles = runs[0]['config']['percentiles']
    pkeys = ['p%s' % metrics.percentile_key(p) for p in percentiles]
    lines += ['', '## Throughput', '',
              '| %s | completed | failed | req/s | goodput req/s | output '
              'tok/s | total tok/s | peak output tok/s |'
              % load_point(runs[0])[0],
              '|---|---|---|---|---|---|---|---|']
    for run in runs:
        s = run['summary']
        lines.append('| %s | %d | %d | %s | %s | %s | %s | %s |' % (
            _fmt(load_point(run)[1]), s['completed'], s['failed'],
            _fmt(s['request_throughput']), _fmt(s['request_goodput']),
            _fmt(s['output_throughput']),
            _fmt(s['total_token_throughput']),
            _fmt(s['max_output_tokens_per_s'])))
    without_usage = sum(run['summary'].get('requests_without_usage', 0)
                        for run in runs)
    if without_usage:
        lines += ['', '%d requests came without usage: their output '
                  'tokens are counted as non-empty chunks, prompt tokens '
                  'are unknown.' % without_usage]
    lines += ['', '## Latency (ms)', '',
              '| %s | metric | mean | median | std | %s |'
              % (load_point(runs[0])[0], ' | '.join(pkeys)),
              '|---|---|---|---|---|%s' % ('---|' * len(pkeys))]
    for run in runs:
        s = run['summary']
        for name in metrics.LATENCY_METRICS:
            cells = [_fmt(s['%s_%s_ms' % (stat, name)])
                     for stat in ['mean', 'median', 'std'] + pkeys]
            lines.append('| %s | %s | %s |' % (
                _fmt(load_point(run)[1]), name.upper(), ' | '.join(cells)))
    errors = [(load_point(run)[1], run['summary']['errors'])
              for run in runs if run['summary']['errors']]
    if errors:
        lines += ['', '## Errors', '']
        for point, counts in errors:
            lines.append('- %s: %s' % (_fmt(point), ', '.join(
                '%s %d' % item for item in sorted(counts.items()))))
    server = [(load_point(run)[1], run['server']) for run in runs
              if run.get('server')]
    if server:
        lines += ['', '## Server-side (Prometheus /metrics deltas)', '']
        for point, figures in server:
            lines.append('- %s: %s' % (_fmt(point), ', '.join(
                '%s %s' % (key, _fmt(value))
                for key, value in sorted(figures.items()))))
    lines += ['', '## Definitions', '']
    for key, text in result['definitions'].items():
        lines.append('- **%s**: %s' % (key, text))
    return '\n'.join(lines) + '\n'


def plot(result, directory):
    """Write the throughput and latency plots; returns their paths."""
    pyplot = plotting.pyplot()

    os.makedirs(directory, exist_ok=True)
    runs = result['runs']
    axis_name = load_point(runs[0])[0]
    points = [load_point(run)[1] for run in runs]
    title = result.get('label') or result['preflight']['endpoint'].get(
        'model')
    paths = []

    figure, left = pyplot.subplots(figsize=(7, 4.5))
    left.plot(points, [r['summary']['output_throughput'] for r in runs],
              'o-', color='tab:blue', label='output tok/s')
    totals = [r['summary']['total_token_throughput'] for r in runs]
    if None not in totals:
        left.plot(points, totals, 's--', color='tab:cyan',
                  label='total tok/s')
    left.set_xticks(points)
    left.set_xlabel(axis_name)
    left.set_ylabel('tokens/s')
    right = left.twinx()
    right.plot(points, [r['summary']['request_throughput'] for r in runs],
               '^:', color='tab:red', label='requests/s')
    right.set_ylabel('requests/s')
    handles = left.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    left.legend(handles[0] + more[0], handles[1] + more[1], loc='best')
    left.set_title('Throughput vs %s: %s' % (axis_name, title))
    left.grid(True, alpha=0.3)
    figure.tight_layout()
    path = os.path.join(directory, 'throughput.png')
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    paths.append(path)

    percentiles = runs[0]['config']['percentiles']
    stats = ['median'] + ['p%s' % metrics.percentile_key(p)
                          for p in percentiles]
    figure, axes = pyplot.subplots(1, 4, figsize=(14, 4))
    for axis, name in zip(axes, metrics.LATENCY_METRICS):
        for stat in stats:
            axis.plot(points, [r['summary']['%s_%s_ms' % (stat, name)]
                               for r in runs], 'o-', label=stat)
        axis.set_title(name.upper())
        axis.set_xticks(points)
        axis.set_xlabel(axis_name)
        axis.set_ylabel('ms')
        axis.grid(True, alpha=0.3)
        axis.legend(loc='best')
    figure.suptitle('Latency percentiles: %s' % title)
    figure.tight_layout()
    path = os.path.join(directory, 'latency.png')
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    paths.append(path)
    return paths
