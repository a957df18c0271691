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
"""``gpu-partitions benchmark NAME``: the project's own measurements.

Each target is one entry of :data:`TARGETS`: a name, a help line and the
dotted path of a ``run(args)`` function that prints its figures and ends
with one JSON object on the last line.  Add a target with one line.
"""

import importlib

from gpu_partitions import cli

# name -> (help, 'module:function'); the function takes the parsed args.
TARGETS = {
    'discover': ('NVML calls and CPU time of one MIG driver discover() and '
                 'steady-state Placement writes, on the largest host',
                 'gpu_partitions.commands.discover_benchmark:discover'),
    'guest-image': ('the reference guest image built, booted under QEMU '
                    '(KVM or TCG) and benchmarked in-VM against the same '
                    'llama.cpp server on the host',
                    'gpu_partitions.commands.guest_image_benchmark:'
                    'guest_image'),
    'harness': ('the bench load generator\'s own ceiling against a '
                'zero-delay stub, beside guidellm\'s',
                'gpu_partitions.commands.benchmark:harness'),
    'packing': ('unallocated GPU share (FGD\'s metric) of our best '
                'policy against Nova\'s defaults, the packing baselines, '
                'FGD and the bounds on the Alibaba trace; --dynamic adds '
                'on-demand layouts',
                'gpu_partitions.simulator.benchmark:packing'),
    'scheduler': ('scheduling time per request with the GPU plugins over Nova\'s defaults, 1,000 and 5,000 hosts', 'gpu_partitions.commands.scheduler_benchmark:scheduler'),  # noqa: E501
}


def register(subparsers):
    parser = subparsers.add_parser(
        'benchmark', help='measure the project\'s own components',
        description='Measure a component; the last line printed is one '
                    'JSON object. Targets: ' + ', '.join(
                        '%s (%s)' % (name, text)
                        for name, (text, _) in TARGETS.items()))
    parser.add_argument('target', choices=sorted(TARGETS))
    parser.add_argument('--quick', action='store_true',
                        help='smaller runs (seconds, not minutes)')
    parser.add_argument('--full', action='store_true',
                        help='packing: the whole node list and the whole '
                             'traces, one seed (about two hours on 2 '
                             'cores)')
    parser.add_argument('--traces', type=cli.nonempty, default=None,
                        help='packing: comma-separated pod lists (default: '
                             'default,gpushare100,multigpu50)')
    parser.add_argument('--dynamic', action='store_true',
                        help='packing: add our policy with on-demand '
                             'layouts, the baselines on an operator-static '
                             'fleet and the free-layout bound')
    parser.add_argument('--output',
                        type=cli.nonempty, default=None, metavar='DIR',

                        help='packing: write each run\'s JSON and PNG plots '
                             'into DIR')
    parser.add_argument('--guidellm', type=cli.nonempty, default=None,
                        help='harness: guidellm executable (default '
                             '$GUIDELLM or guidellm on PATH; none: skip)')
    parser.set_defaults(func=run)


def run(args):
    module_name, _, function = TARGETS[args.target][1].partition(':')
    return getattr(importlib.import_module(module_name), function)(args)


def harness(args):
    import json

    from gpu_partitions.bench import ceiling

    if args.guidellm == 'none':
        args.guidellm = False
    try:
        # Checked before our own generator runs for minutes.
        ceiling.find_guidellm(args.guidellm)
    except ValueError as error:
        raise cli.UsageError(str(error))
    if args.quick:
        summary = ceiling.run(num_prompts=400, concurrency=32,
                              long_len=128, guidellm=args.guidellm,
                              repeats=1)
    else:
        summary = ceiling.run(guidellm=args.guidellm)
    print(json.dumps(summary['workloads'], indent=2))
    print(json.dumps({key: summary[key] for key in (
        'chunks_per_s', 'requests_per_s', 'other_generator',
        'ratio_vs_other', 'ratio_vs_other_requests', 'concurrency',
        'repeats', 'load_average_before')}))
    return 0
