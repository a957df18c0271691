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
"""``gpu-partitions simulate``: replay a task trace on a simulated fleet
through Nova's real filter and weigher classes, per policy.
"""

import argparse
import os
import random

from gpu_partitions import cli

DEFAULT_SCALE = 0.1
# Arrivals beyond ten times the fleet's GPUs say nothing new: every
# policy has long stopped placing.
MAX_TARGET = 10
# run.MIN_TARGET; run imports Nova, which --help must not.
MIN_TARGET = 0.01
MAX_JOBS = max(1, os.cpu_count() or 1) * 4


def register(subparsers):
    parser = subparsers.add_parser(
        'simulate', help='replay a GPU task trace through the scheduler '
                         'policies on a simulated fleet',
        description='Build a fleet (from an openb node file or --fleet), '
                    'replay an openb pod file through Nova\'s filter and '
                    'weigher handlers over an in-memory Placement, once '
                    'per policy with the same seed, and print the '
                    'unallocated GPU share of each (and of the offline '
                    'bound). See doc/source/simulator.rst.')
    parser.add_argument('--trace', type=cli.nonempty, default='default',
                        help='openb pod file, or a name of the trace '
                             'directory (default, gpushare100, '
                             'multigpu50, ...); default: %(default)s')
    parser.add_argument('--trace-dir', type=cli.nonempty, default=None,
                        help='directory of the openb files (default '
                             '$GPU_PARTITIONS_TRACE_DIR or '
                             '../shared/traces/alibaba-openb-2023 beside '
                             'the repository)')
    parser.add_argument('--nodes', type=cli.nonempty, default=None,
                        help='openb node file (default: '
                             'openb_node_list_gpu_node.csv of the trace '
                             'directory)')
    parser.add_argument('--fleet', type=cli.nonempty, default=None,
                        help='instead of --nodes: KIND:LAYOUT:GPUS:HOSTS'
                             '[,...], e.g. a100-80gb-mig:mixed:8:10 (GPUS '
                             '1 to 16 per host, at most 5,000 hosts)')
    parser.add_argument('--scale', type=cli.number(float, above=0,
                                                   maximum=1),
                        default=DEFAULT_SCALE,
                        help='share of the node file\'s nodes to keep, '
                             'per (model, GPUs) group, and for replay of '
                             'the tasks (default %(default)s: minutes on '
                             '2 cores; 1 is the full 1,213 nodes, hours)')
    parser.add_argument('--protocol', choices=('arrivals', 'replay'),
                        default='arrivals',
                        help='arrivals: FGD\'s protocol (no departures); '
                             'replay: creation and deletion times')
    parser.add_argument('--target', type=cli.number(float,
                                                    minimum=MIN_TARGET,
                                                    maximum=MAX_TARGET),
                        default=1.0,
                        help='arrivals: stop when the arrived workload '
                             'reaches this share of the fleet\'s GPUs '
                             '({} to {}; the result has a mark per 1%%)'
                        .format(MIN_TARGET, MAX_TARGET))
    parser.add_argument('--speedup', type=cli.number(float, above=0),
                        default=1.0,
                        help='replay: divide the gaps between creations '
                             'by this factor, keeping lifetimes (the trace '
                             'alone runs at most 66 GPUs at once)')
    parser.add_argument('--policies', default=None, type=_policies,
                        help='comma-separated policies (default: all): '
                             '%s' % ', '.join(_policy_names()))
    parser.add_argument('--seed', type=cli.number(int, minimum=0,
                                                  maximum=2 ** 32 - 1),
                        default=0)
    parser.add_argument('--jobs', type=cli.number(int, minimum=1,
                                                  maximum=MAX_JOBS),
                        default=2,
                        help='policies run in parallel processes (1 to '
                             '%d)' % MAX_JOBS)
    parser.add_argument('--json',
                        type=cli.nonempty, default=None, metavar='PATH',
                        help='write the whole result as JSON')
    parser.add_argument('--plots',
                        type=cli.nonempty, default=None, metavar='PREFIX',
                        help='write PREFIX-unallocated.png and '
                             'PREFIX-free.png')
    parser.add_argument('--dynamic', action='store_true',
                        help='MIG instances and vGPU types made on demand '
                             'as claims land (the fleet\'s layouts are '
                             'ignored); see '
                             'doc/source/dynamic-partitioning.rst')
    parser.add_argument('--no-progress', action='store_true')
    parser.set_defaults(func=run)


def _policies(text):
    names = [name.strip() for name in text.split(',')]
    unknown = [name for name in names if name not in _policy_names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            'unknown policy %s; known: %s' % (
                ', '.join(repr(name) for name in unknown),
                ', '.join(_policy_names())))
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        # Results are keyed by policy: a second run would overwrite the
        # first.
        raise argparse.ArgumentTypeError('policy %s given twice' % ', '.join(
            repr(name) for name in twice))
    return ','.join(names)


def _policy_names():
    # The policy list needs Nova; --help must not import it.
    return ('nova-default', 'random', 'hami-binpack', 'hami-spread',
            'best-fit', 'gpu-packing', 'fgd', 'ours-pack', 'ours-spread',
            'ours-pack+nova')


def load_inputs(args):
    """Fleet, tasks, pod file path and what was set aside (a dict, see
    :class:`.fleet.SetAside`) of the command line; UsageError on bad
    input.
    """
    from gpu_partitions.cli import UsageError
    from gpu_partitions.simulator import fleet as fleet_mod
    from gpu_partitions.simulator import trace

    try:
        trace_path = trace.pod_file(args.trace, args.trace_dir)
        tasks = trace.read_tasks(trace_path)
        if args.fleet:
            fleet = fleet_mod.parse_fleet_spec(args.fleet)
            _, tasks, set_aside = fleet_mod.split_trace(tasks, fleet=fleet)
        else:
            node_path = args.nodes or trace.default_node_file(args.trace_dir)
            try:
                nodes, tasks, set_aside = fleet_mod.split_trace(
                    tasks, nodes=trace.read_nodes(node_path))
            except fleet_mod.LayoutError as error:
                raise UsageError('%s: %s' % (node_path, error))
            fleet = fleet_mod.build_from_nodes(
                nodes, tasks, scale=args.scale, seed=args.seed)
    except (trace.TraceError, fleet_mod.LayoutError) as error:
        raise UsageError(str(error))
    if args.protocol == 'replay':
        if args.scale < 1 and not args.fleet:
            # The replay keeps the trace's own load per GPU: the same
            # share of the tasks as of the nodes.
            rng = random.Random(args.seed)
            tasks = [task for task in tasks if rng.random() < args.scale]
        for task in tasks:
            if task.creation_time is None:
                set_aside['tasks'].add('no creation_time (not replayed)',
                                       task.line)
        if not any(task.creation_time is not None for task in tasks):
            raise UsageError('%s has no creation times to replay (set '
                             'aside: %s); use --protocol arrivals' % (
                                 trace_path, set_aside['tasks'].describe()))
    elif not any(task.num_gpu for task in tasks):
        raise UsageError('%s: no GPU task this fleet could hold (set aside: '
                         '%s)' % (trace_path,
                                  set_aside['tasks'].describe() or 'none'))
    return fleet, tasks, trace_path, {
        what: found.to_dict() for what, found in set_aside.items()}


def run(args):
    from gpu_partitions.cli import UsageError
    from gpu_partitions.simulator import report
    from gpu_partitions.simulator import run as run_mod

    fleet, tasks, trace_path, set_aside = load_inputs(args)
    names = (args.policies.split(',') if args.policies
             else list(_policy_names()))
    try:
        # Before the run: a path it could not write would lose it.
        for path in filter(None, (args.json, args.plots and
                                  args.plots + '-free.png')):
            report.check_writable(path)
    except ValueError as error:
        raise UsageError(str(error))
    try:
        result = run_mod.simulate(
            fleet, tasks, names, protocol=args.protocol, seed=args.seed,
            target=args.target, jobs=args.jobs,
            show_progress=not args.no_progress, trace_path=trace_path,
            scale=1.0 if args.fleet else args.scale,
            speedup=args.speedup, dynamic=args.dynamic,
            set_aside=set_aside)
    except ValueError as error:
        raise UsageError(str(error))
    print(report.table(result))
    try:
        if args.json:
            report.write_json(result, args.json)
        if args.plots:
            for path in report.write_plots(result, args.plots):
                print('wrote %s' % path)
    except OSError as error:
        raise UsageError('cannot write %s: %s' % (
            error.filename or args.json, error.strerror))
    return 0
