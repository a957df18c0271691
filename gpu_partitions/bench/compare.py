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
"""Lay several results side by side, normalised per slice.

A slice is worth what it serves per unit of the GPU it takes: output
tokens/s per GiB of GPU memory (decode is memory-bandwidth bound) and per
compute share (the fraction of the full GPU's compute slices, 1.0 for a
whole GPU).  Both come from the pre-flight of each result; operators can
override them for profiles whose name does not say (time-sliced vGPU).
"""

from gpu_partitions.bench import results as results_mod
from gpu_partitions import plotting


def slice_of(result, memory_gib=None, compute_share=None):
    """``(name, memory_gib, compute_share)`` of the GPU a result ran on."""
    gpu = result['preflight'].get('gpu') or {}
    devices = gpu.get('gpus') or [{}]
    device = devices[0]
    name = device.get('profile') or device.get('name') or 'unknown'
    if memory_gib is None and device.get('memory_mib'):
        memory_gib = sum(d.get('memory_mib') or 0 for d in devices) / 1024
    if compute_share is None:
        compute_share = device.get('compute_share')
        if compute_share is not None and len(devices) > 1:
            compute_share *= len(devices)
    return name, memory_gib, compute_share


def _per(value, unit):
    return value / unit if unit else None


def rows(labelled, memory_overrides=None, share_overrides=None):
    """One row per run of each ``(label, result)``, plus its best run."""
    memory_overrides = memory_overrides or {}
    share_overrides = share_overrides or {}
    table = []
    for label, result in labelled:
        name, memory, share = slice_of(result, memory_overrides.get(label),
                                       share_overrides.get(label))
        for run in result['runs']:
            summary = run['summary']
            axis, point = results_mod.load_point(run)
            output = summary['output_throughput']
            percentile = run['config']['percentiles'][-1]
            pkey = results_mod.metrics.percentile_key(percentile)
            table.append({
                'label': label, 'slice': name, 'memory_gib': memory,
                'compute_share': share, 'axis': axis, 'point': point,
                'completed': summary['completed'],
                'failed': summary['failed'],
                'request_throughput': summary['request_throughput'],
                'output_throughput': output,
                'output_throughput_per_gib': _per(output, memory),
                'output_throughput_per_compute_share': _per(output, share),
                'ttft_ms_p' + pkey: summary['p%s_ttft_ms' % pkey],
                'tpot_ms_p' + pkey: summary['p%s_tpot_ms' % pkey],
            })
    return table


def best(table):
    """Per label, the row with the highest output throughput."""
    chosen = {}
    for row in table:
        current = chosen.get(row['label'])
        if current is None or (row['output_throughput'] >
                               current['output_throughput']):
            chosen[row['label']] = row
    return list(chosen.values())


def markdown(table):
    if not table:
        return 'No results.\n'
    keys = [key for key in table[0] if key != 'axis']
    lines = ['| %s |' % ' | '.join(keys), '|%s' % ('---|' * len(keys))]
    for row in table:
        lines.append('| %s |' % ' | '.join(
            results_mod._fmt(row[key]) for key in keys))
    return '\n'.join(lines) + '\n'


def plot(table, path):
    """Bar chart of each label's best output tokens/s, raw and per slice."""
    pyplot = plotting.pyplot()

    rows_ = best(table)
    labels = [row['label'] for row in rows_]
    series = (('output tok/s', 'output_throughput'),
              ('per GiB', 'output_throughput_per_gib'),
              ('per compute share', 'output_throughput_per_compute_share'))
    figure, axes = pyplot.subplots(1, 3, figsize=(13, 4))
    for axis, (title, key) in zip(axes, series):
        values = [row[key] or 0 for row in rows_]
        axis.bar(labels, values, color='tab:blue')
        if all(row[key] is None for row in rows_):
            axis.text(0.5, 0.5, 'not known (give --memory-gib or '
                      '--compute-share)', ha='center', va='center',
                      transform=axis.transAxes, fontsize=9)
        axis.set_title(title)
        axis.tick_params(axis='x', rotation=30)
        axis.grid(True, axis='y', alpha=0.3)
    figure.suptitle('Best output throughput per slice')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
