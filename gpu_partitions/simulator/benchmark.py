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
"""``gpu-partitions benchmark packing``.

For the default, gpushare100 and multigpu50 traces (FGD's arrivals
protocol up to 100% arrived workload, same fleet and seeds for every
policy): our best policy's unallocated GPU share divided by the best
packing baseline's (best-fit, HAMi binpack, GPU packing) and by the
FGD-style policy's, and our gap to the offline bound in percentage
points. Each figure is the mean over the seeds. The last line is one JSON
object, per trace.

Sizes: default 10% of the trace's nodes and 3 seeds (minutes on 2
cores), ``--quick`` 3% and 1 seed (seconds), ``--full`` every node and 1
seed (hours). ``--traces`` picks the pod lists, ``--output DIR`` keeps
each run's JSON and plots. The environment overrides the sizes:
``GPU_PARTITIONS_SIM_SCALE`` (share of the nodes),
``GPU_PARTITIONS_SIM_SEEDS``, and ``GPU_PARTITIONS_TRACE_DIR`` names the
openb files' directory.
"""

import json
import os
import statistics

TRACES = ('default', 'gpushare100', 'multigpu50')
# The families the figures compare (see figures()); ``simulate`` runs the
# others too.
POLICIES = ('hami-binpack', 'best-fit', 'gpu-packing', 'fgd', 'ours-pack',
            'ours-pack+nova')


def figures(result):
    """Unallocated % at the end of each family's best member, and the
    bound.
    """
    best = {}
    for name, outcome in result['policies'].items():
        family = outcome['family']
        value = outcome['unallocated_at_end']
        if family not in best or value < best[family][1]:
            best[family] = (name, value)
    return {
        'ours': best['ours'], 'packing': best['packing'],
        'fgd': best['fgd'], 'bound': result['bound'][-1][1]}


def _ratio(numerator, denominator):
    if denominator <= 0:
        return None if numerator > 0 else 1.0
    return round(numerator / denominator, 3)


def packing(args):
    from gpu_partitions.simulator import fleet as fleet_mod
    from gpu_partitions.simulator import run as run_mod
    from gpu_partitions.simulator import trace

    from gpu_partitions.simulator import report

    full = getattr(args, 'full', False)
    scale = float(os.environ.get(
        'GPU_PARTITIONS_SIM_SCALE',
        1.0 if full else 0.03 if args.quick else 0.1))
    seeds = int(os.environ.get('GPU_PARTITIONS_SIM_SEEDS',
                               1 if args.quick or full else 3))
    traces = (getattr(args, 'traces', None) or ','.join(TRACES)).split(',')
    output = getattr(args, 'output', None)
    if output:
        os.makedirs(output, exist_ok=True)
    nodes = trace.read_nodes(trace.default_node_file(),
                             fleet_mod.TRACE_MODELS)
    summary = {}
    for name in traces:
        path = trace.pod_file(name)
        tasks = trace.read_tasks(path, fleet_mod.TRACE_MODELS)
        per_seed = []
        for seed in range(seeds):
            fleet = fleet_mod.build_from_nodes(nodes, tasks, scale=scale,
                                               seed=seed)
            result = run_mod.simulate(
                fleet, tasks, list(POLICIES), seed=seed, jobs=2,
                show_progress=True, trace_path=path, scale=scale)
            if output:
                prefix = os.path.join(output, '%s-seed%d' % (name, seed))
                report.write_json(result, prefix + '.json')
                report.write_plots(result, prefix)
            found = figures(result)
            per_seed.append(found)
            print('%s seed %d (%d GPUs): ours %s %.2f%%, best packing %s '
                  '%.2f%%, fgd %.2f%%, bound %.2f%%' % (
                      name, seed, fleet.gpu_count, found['ours'][0],
                      found['ours'][1], found['packing'][0],
                      found['packing'][1], found['fgd'][1], found['bound']),
                  flush=True)
        ours = statistics.mean(f['ours'][1] for f in per_seed)
        best_packing = statistics.mean(f['packing'][1] for f in per_seed)
        fgd = statistics.mean(f['fgd'][1] for f in per_seed)
        bound = statistics.mean(f['bound'] for f in per_seed)
        summary[name] = {
            'ratio_vs_best_packing': _ratio(ours, best_packing),
            'ratio_vs_fgd': _ratio(ours, fgd),
            'gap_to_bound_points': round(ours - bound, 3),
            'unallocated_percent': {
                'ours': round(ours, 3), 'best_packing': round(
                    best_packing, 3), 'fgd': round(fgd, 3),
                'bound': round(bound, 3)},
            'ours_policy': sorted({f['ours'][0] for f in per_seed}),
            'scale': scale, 'seeds': seeds}
    print(json.dumps(summary, sort_keys=True))
    return 0
