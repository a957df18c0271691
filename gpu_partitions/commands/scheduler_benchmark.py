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
"""``gpu-partitions benchmark scheduler``: cost of the GPU scheduler plugins.

Runs Nova's real ``SchedulerManager.select_destinations`` (request filters,
the ResourceRequest, the allocation-candidate bookkeeping, the filter and
weigher handlers, the claim loop) for one request, in three arms that take
turns on the same hosts, each in a process of its own as each would be
its own nova-scheduler:

* ``baseline``: Nova's default ``enabled_filters`` and ``all_weighers``;
* ``plugins``: the same plus ``GpuPartitionFilter`` (last) and
  ``GpuPartitionWeigher``, default options (the view reuses the
  scheduler's own allocation-candidates answer);
* ``plugins_extra_request``: the same with ``reuse_scheduler_query =
  False`` (the plugins ask Placement once more per request).

The hosts are HGX-style: 8 H100 GPUs, each with a ``3g.40gb + 2g.20gb +
2 x 1g.10gb`` MIG layout (three providers per GPU, 25 per host), built by
the simulator's fleet with the traits the MIG driver reports, two NUMA
nodes, some GPUs partly used. The request asks one
``1g.10gb`` slice, so every host has up to 8 candidates and, as Placement
is answered without a ``limit``, the scheduler sees every host.

What is *not* measured, in any arm: Placement's own time to compute an
answer, and the cell database reads that build HostState objects (HostStates
are built before the timer from the same data; the one DB read of the
request filters, the minimum compute version, is answered as current).
Placement is a stand-in that counts ``GET /allocation_candidates`` requests
and decodes, on each, the JSON text a real Placement would send for this
request, so each answer costs the scheduler its real decode time. The
extra request of ``plugins_extra_request`` therefore shows here as its
decode and as a count, not as Placement's server time. Each arm has its
own stand-in and its own heap: nothing the plugins keep (the captured
answers, the topology memory) is in the baseline's process, where it
would change what Python's garbage collector does in Nova's requests.

How it measures, so that a shared, loaded machine gives steady figures:
the time of a request is the CPU time of the thread that runs
``select_destinations`` (``time.thread_time``: the scheduling path only;
other processes change it far less than wall-clock time). Each round runs
every arm once, back to back, the arm that goes first taking turns, and
gives one ratio per arm over the baseline of the same round; the figure
printed is the median of those per-round ratios, with their range (the
spread). Round 0 of each size is the first request after the scheduler
started: its Placement requests are counted apart (the plugins must reuse
Nova's answer from the first request on) and its time, a warm-up, is not
counted. Wall-clock medians are printed too, for reference.

Python's full garbage collections are counted per request and arm, with
their CPU time: at 1,000 hosts one takes about 0.18 s, a third of Nova's
request, so whether a request trips one more of them moves its ratio far
more than the plugins' own work does, and is printed beside it. (When the
arms shared one process, the plugins' memory moved the collector's
schedule of Nova's arm too.) The ratio of the requests' CPU time less
the time in full collections (``ratio_<N>_hosts_without_full_gc``) is
printed beside the others: the work done, without the collector's
schedule. Young collections (generations 0 and 1) are timed too, and
each arm's CPU time outside the collector and the plugins is printed:
what the plugins cost Nova's own code.
"""

import gc
import json
import multiprocessing
import multiprocessing.connection
import statistics
import time
import uuid

GPUS_PER_HOST = 8
CELL_UUID = str(uuid.uuid5(uuid.NAMESPACE_DNS, 'bench-cell'))
# 3g.40gb + 2g.20gb + 2 x 1g.10gb, as (profile, memory slot start).
LAYOUT = (('3g.40gb', 4), ('2g.20gb', 0), ('1g.10gb', 2), ('1g.10gb', 3))
NOVA_DEFAULT_FILTERS = [
    'ComputeFilter', 'ComputeCapabilitiesFilter', 'ImagePropertiesFilter',
    'ServerGroupAntiAffinityFilter', 'ServerGroupAffinityFilter']
OUR_FILTER = 'nova_filters.gpu_filter.GpuPartitionFilter'
OUR_WEIGHER = 'nova_filters.gpu_weigher.GpuPartitionWeigher'
# Seconds an arm's process may take to answer one request.
REQUEST_TIMEOUT = 600


def build_fleet(num_hosts):
    """``(hosts, answer_json)``: host rows and Placement's answer text.

    The GPU providers are the simulator's (the drivers' provider specs of
    each host's inventory); the compute nodes are a busy cloud's.
    """
    from gpu_partitions.simulator import fleet
    from gpu_partitions.simulator import placement
    import placement_traits

    kind = fleet.KINDS['h100-80gb-mig']
    rc_1g = kind.resource_class('1g.10gb')
    summaries = {}
    allocation_requests = []
    hosts = []
    for h in range(num_hosts):
        name = 'hgx-%05d' % h
        root = placement.provider_uuid(name)
        hosts.append((name, root))
        summaries[root] = {
            'resources': {'VCPU': {'capacity': 224, 'used': 8},
                          'MEMORY_MB': {'capacity': 2 ** 21, 'used': 8192},
                          'DISK_GB': {'capacity': 7000, 'used': 40}},
            'traits': ['COMPUTE_ACCELERATORS', 'COMPUTE_NODE'],
            'parent_provider_uuid': None, 'root_provider_uuid': root}
        host = fleet.make_host(name, kind, 224000, 2 ** 21,
                               [LAYOUT] * GPUS_PER_HOST)
        index = {gpu.address: g for g, gpu in enumerate(host.gpus)}
        for provider in placement.fleet_providers(fleet.Fleet([host])):
            if provider.parent is None:
                continue
            [(rc, count)] = provider.inventories.items()
            g = index[placement_traits.physical_gpu_of(provider.traits)]
            used = (h + g) % (count + 1) if rc == rc_1g else 0
            summaries[provider.uuid] = {
                'resources': {rc: {'capacity': count, 'used': used}},
                'traits': sorted(provider.traits),
                'parent_provider_uuid': root, 'root_provider_uuid': root}
            if rc == rc_1g and used < count:
                allocation_requests.append({
                    'allocations': {
                        root: {'resources': {'VCPU': 4, 'MEMORY_MB': 4096,
                                             'DISK_GB': 20}},
                        provider.uuid: {'resources': {rc: 1}}},
                    'mappings': {'': [root], '1': [provider.uuid]}})
    answer = json.dumps({'allocation_requests': allocation_requests,
                         'provider_summaries': summaries})
    return hosts, answer


class CountingPlacement:
    """Stands in for Nova's report client: counts candidate queries and
    decodes the recorded answer each time, as the real client would.
    """

    def __init__(self, answer):
        self.answer = answer
        self.queries = 0

    def get_allocation_candidates(self, context, resources):
        self.queries += 1
        data = json.loads(self.answer)
        return (data['allocation_requests'], data['provider_summaries'],
                '1.36')

    def claim_resources(self, *args, **kwargs):
        return True


class _NullNotifier:
    """Notifications are off in both arms."""

    def info(self, *args, **kwargs):
        pass

    def is_enabled(self):
        return False


def _host_states(hosts):
    from gpu_partitions.simulator import host_state

    return [host_state.host_state(
        name, root, vcpus=224, memory_mb=2 ** 21, vcpus_used=8,
        memory_mb_used=8192, num_instances=1, cell_uuid=CELL_UUID)
        for name, root in hosts]


def _scheduler(host_states_for_request):
    from nova.scheduler import host_manager
    from nova.scheduler import manager

    class BenchHostManager(host_manager.HostManager):
        # No cell database: hosts come from the benchmark.
        def refresh_cells_caches(self):
            self.cells = {}
            self.enabled_cells = []

        def _init_aggregates(self):
            pass

    class BenchScheduler(manager.SchedulerManager):
        # placement_client is Nova's report_client_singleton(), which
        # measure() points at the stand-in.
        def __init__(self):
            self.host_manager = BenchHostManager()
            self.notifier = _NullNotifier()

        def _get_all_host_states(self, context, spec_obj, summaries):
            return iter(host_states_for_request())

    return BenchScheduler()


def _request_spec():
    from nova import objects
    import placement_traits

    flavor = objects.Flavor(
        id=1, flavorid='gpu.1g', name='gpu.1g', vcpus=4, memory_mb=4096,
        root_gb=20, ephemeral_gb=0, swap=0, disabled=False,
        is_public=True, rxtx_factor=1.0, vcpu_weight=0, description=None,
        extra_specs={'resources1:%s' % placement_traits.mig_resource_class(
            '1g.10gb'): '1'})
    return objects.RequestSpec(
        flavor=flavor, num_instances=1, image=objects.ImageMeta(
            properties=objects.ImageMetaProps()),
        instance_uuid=str(uuid.uuid4()), project_id='bench',
        user_id='bench', scheduler_hints={}, is_bfv=False,
        ignore_hosts=None, force_hosts=None, force_nodes=None,
        requested_destination=None, instance_group=None,
        numa_topology=None, pci_requests=objects.InstancePCIRequests(
            requests=[]), requested_resources=[], retry=None,
        availability_zone=None,
        security_groups=objects.SecurityGroupList(objects=[]),
        requested_networks=objects.NetworkRequestList(objects=[]),
        network_metadata=objects.NetworkMetadata(physnets=set(),
                                                 tunneled=False),
        request_level_params=objects.RequestLevelParams())


ARMS = ('baseline', 'plugins', 'plugins_extra_request')


def _time_plugins(scheduler, spent, collections):
    """Add the thread CPU time of the scheduler's GPU filter and weigher
    calls to ``spent[0]``, telling ``collections`` when they run.
    """
    manager = scheduler.host_manager
    for plugin, method in (
            [(f, 'filter_all') for f in manager.enabled_filters]
            + [(w, 'weigh_objects') for w in manager.weighers]):
        if type(plugin).__module__.startswith('nova_filters.'):
            def timed(*args, _call=getattr(plugin, method), **kwargs):
                start = time.thread_time()
                collections.in_plugins = True
                try:
                    return _call(*args, **kwargs)
                finally:
                    collections.in_plugins = False
                    spent[0] += time.thread_time() - start
            setattr(plugin, method, timed)


class Collections:
    """Counts Python's garbage collections and their thread CPU time while
    ``counting`` is true: full ones (generation 2) and young ones
    (generations 0 and 1) apart, and the time of those that ran inside
    the GPU plugins' calls (``in_plugins``), which the plugins' time holds.
    """

    def __init__(self):
        self.counting = False
        self.in_plugins = False
        self._start = None
        self.reset()

    def __call__(self, phase, info):
        if not self.counting:
            return
        if phase == 'start':
            self._start = time.thread_time()
        elif self._start is not None:
            seconds = time.thread_time() - self._start
            self._start = None
            if self.in_plugins:
                self.in_plugins_seconds += seconds
            if info['generation'] == 2:
                self.count += 1
                self.seconds += seconds
            else:
                self.young_count += 1
                self.young_seconds += seconds

    def reset(self):
        self.count = 0
        self.seconds = 0.0
        self.young_count = 0
        self.young_seconds = 0.0
        self.in_plugins_seconds = 0.0


def _configure(arm):
    from nova import conf as nova_conf

    from nova_filters import conf as our_conf

    conf = nova_conf.CONF
    filters = list(NOVA_DEFAULT_FILTERS)
    weights = ['nova.scheduler.weights.all_weighers']
    available = ['nova.scheduler.filters.all_filters']
    if arm != 'baseline':
        filters.append('GpuPartitionFilter')
        weights.append(OUR_WEIGHER)
        available.append(OUR_FILTER)
    conf.set_override('enabled_filters', filters, 'filter_scheduler')
    conf.set_override('weight_classes', weights, 'filter_scheduler')
    conf.set_override('available_filters', available, 'filter_scheduler')
    conf.set_override('track_instance_changes', False, 'filter_scheduler')
    conf.set_override('max_placement_results', 10 ** 6, 'scheduler')
    conf.set_override('reuse_scheduler_query', arm == 'plugins',
                      our_conf.GROUP.name)


def _arm_process(conn, arm, num_hosts):
    """One arm's nova-scheduler, in a process of its own: its heap, and
    so Python's garbage-collector schedule, holds only what this arm
    holds. Answers each ``'request'`` on ``conn`` with one request's
    figures, ends on ``None``.
    """
    from unittest import mock

    from nova import config
    from nova import context as nova_context
    from nova import objects
    from nova.objects import service as service_obj
    from nova import rpc
    from nova.scheduler.client import report

    config.parse_args([], configure_db=False, init_rpc=False)
    objects.register_all()
    hosts, answer = build_fleet(num_hosts)
    placement = CountingPlacement(answer)
    prepared = []
    spent = [0.0]
    collections = Collections()
    ctx = nova_context.get_admin_context()
    # The one cell-database read of the request filters (the minimum
    # nova-compute version, for owner_nova_filter) answered as current.
    with mock.patch.object(report, 'report_client_singleton',
                           return_value=placement), \
            mock.patch.object(service_obj, 'get_minimum_version_all_cells',
                              return_value=service_obj.SERVICE_VERSION), \
            mock.patch.object(rpc, 'NOTIFIER', _NullNotifier()):
        # Started as nova-scheduler starts: the plugins are loaded with
        # the report client that will answer the first request.
        _configure(arm)
        scheduler = _scheduler(prepared.pop)
        _time_plugins(scheduler, spent, collections)
        gc.callbacks.append(collections)
        while conn.recv() is not None:
            prepared.append(_host_states(hosts))
            spec = _request_spec()
            gc.collect()
            before = placement.queries
            spent[0] = 0.0
            collections.reset()
            collections.counting = True
            start = time.perf_counter()
            cpu_start = time.thread_time()
            selections = scheduler.select_destinations(
                ctx, spec_obj=spec, instance_uuids=[spec.instance_uuid],
                return_objects=True)
            if not selections or not selections[0]:
                raise RuntimeError('%s arm selected no host' % arm)
            # The request ends as Nova's RPC server ends it: what it held
            # is freed, in every arm.
            del spec, selections
            cpu = time.thread_time() - cpu_start
            elapsed = time.perf_counter() - start
            collections.counting = False
            conn.send({'cpu': cpu, 'seconds': elapsed, 'plugins': spent[0],
                       'queries': placement.queries - before,
                       'full_gc': collections.count,
                       'full_gc_seconds': collections.seconds,
                       'young_gc': collections.young_count,
                       'young_gc_seconds': collections.young_seconds,
                       'gc_seconds_in_plugins':
                       collections.in_plugins_seconds})


def measure(num_hosts, rounds):
    """Per arm: CPU and wall seconds per request (medians and each
    round's), and Placement requests, per request and on the first one.

    Each arm is its own process, as each would be its own nova-scheduler
    (a process shared by the arms shares one heap, and the plugins' memory
    then moves the collector's schedule of Nova's arm too). The arms take
    turns, one request at a time.
    """
    spawn = multiprocessing.get_context('spawn')
    arms = {}
    try:
        for arm in ARMS:
            mine, theirs = spawn.Pipe()
            process = spawn.Process(target=_arm_process,
                                    args=(theirs, arm, num_hosts),
                                    daemon=True)
            process.start()
            arms[arm] = (process, mine)
        rows = {arm: [] for arm in ARMS}
        first = {}
        for index in range(rounds + 1):
            # The arms take turns going first.
            shift = index % len(ARMS)
            for arm in ARMS[shift:] + ARMS[:shift]:
                process, conn = arms[arm]
                conn.send('request')
                # An arm's process that fails ends: say so at once rather
                # than wait out the timeout.
                ready = multiprocessing.connection.wait(
                    [conn, process.sentinel], REQUEST_TIMEOUT)
                try:
                    row = conn.recv() if conn in ready else None
                except EOFError:
                    row = None
                if row is None:
                    # Told by what woke the wait: a process that closed
                    # its end may take a while longer to exit.
                    process.join(10)
                    raise RuntimeError('%s arm gave no answer (%s)' % (
                        arm, 'its process ended, exit code %s'
                        % process.exitcode if ready
                        else 'none in %d s' % REQUEST_TIMEOUT))
                if index:
                    rows[arm].append(row)
                else:
                    first[arm] = row['queries']
    finally:
        for process, conn in arms.values():
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(10)
            if process.is_alive():
                process.terminate()
    return {arm: {
        'cpu_seconds': statistics.median(r['cpu'] for r in rows[arm]),
        'seconds': statistics.median(r['seconds'] for r in rows[arm]),
        'cpu_rounds': [r['cpu'] for r in rows[arm]],
        'rounds': [r['seconds'] for r in rows[arm]],
        'plugin_cpu_rounds': [r['plugins'] for r in rows[arm]],
        'full_gc_rounds': [r['full_gc'] for r in rows[arm]],
        'cpu_without_full_gc_rounds': [
            r['cpu'] - r['full_gc_seconds'] for r in rows[arm]],
        'full_gc_seconds': statistics.mean(
            r['full_gc_seconds'] for r in rows[arm]),
        'young_gc': statistics.mean(r['young_gc'] for r in rows[arm]),
        'young_gc_seconds': statistics.mean(
            r['young_gc_seconds'] for r in rows[arm]),
        # Collections inside the plugins' calls are in their time already.
        'cpu_outside_gc_and_plugins': statistics.mean(
            r['cpu'] - r['plugins'] - (
                r['full_gc_seconds'] + r['young_gc_seconds']
                - r['gc_seconds_in_plugins']) for r in rows[arm]),
        'placement_requests': sum(
            r['queries'] for r in rows[arm]) / rounds,
        'first_request_placement_requests': first[arm]}
        for arm in ARMS}


def round_ratios(ours, base, key='cpu_rounds'):
    """Per-round ratios of arm ``ours`` over arm ``base``, sorted."""
    return sorted(mine / theirs
                  for mine, theirs in zip(ours[key], base[key]))


def in_request_ratios(ours):
    """Per-round ratios of a request's CPU time over its time outside
    the GPU plugins, sorted: the plugins' cost measured inside one
    request, which load that varies from request to request cannot skew.
    """
    return sorted(total / (total - plugins) for total, plugins in zip(
        ours['cpu_rounds'], ours['plugin_cpu_rounds']))


def scheduler(args):
    """The ``scheduler`` target of ``gpu-partitions benchmark``."""
    rounds = 3 if args.quick else 7
    result = {}
    extra = {}
    for size in (1000, 5000):
        figures = measure(size, rounds)
        base = figures['baseline']
        print('%5d hosts x %d GPUs, %d rounds: Nova defaults %.3f s CPU '
              '(%.3f s wall) per request, %g Placement request(s), %d on '
              'the first' % (size, GPUS_PER_HOST, rounds,
                             base['cpu_seconds'], base['seconds'],
                             base['placement_requests'],
                             base['first_request_placement_requests']))
        print('      full garbage collections per request (mean CPU s per '
              'request in them): %s' % ', '.join(
                  '%s %s (%.3f)' % (arm, figures[arm]['full_gc_rounds'],
                                    figures[arm]['full_gc_seconds'])
                  for arm in ARMS))
        print('      young garbage collections per request (mean CPU s '
              'per request in them): %s' % ', '.join(
                  '%s %.1f (%.3f)' % (arm, figures[arm]['young_gc'],
                                      figures[arm]['young_gc_seconds'])
                  for arm in ARMS))
        print('      mean CPU s per request outside the collector and the '
              'plugins: %s' % ', '.join(
                  '%s %.3f' % (arm,
                               figures[arm]['cpu_outside_gc_and_plugins'])
                  for arm in ARMS))
        for arm in ARMS:
            result['full_gc_per_request_%d_hosts_%s' % (size, arm)] = (
                statistics.mean(figures[arm]['full_gc_rounds']))
            result['young_gc_seconds_per_request_%d_hosts_%s' % (
                size, arm)] = round(figures[arm]['young_gc_seconds'], 4)
        for arm, suffix in (('plugins', ''),
                            ('plugins_extra_request', '_extra_request')):
            ours = figures[arm]
            cpu_spread = round_ratios(ours, base)
            wall_spread = round_ratios(ours, base, 'rounds')
            inside = in_request_ratios(ours)
            without_gc = round_ratios(ours, base,
                                      'cpu_without_full_gc_rounds')
            ratio = statistics.median(cpu_spread)
            print('      %-22s %.3f s CPU per request: ratio %.3f (median '
                  'of the rounds, range %.3f-%.3f; inside the request '
                  '%.3f, %.3f-%.3f; without full garbage collections '
                  '%.3f, %.3f-%.3f; wall clock %.3f, %.3f-%.3f), %g '
                  'Placement request(s), %d on the first'
                  % (arm, ours['cpu_seconds'], ratio, cpu_spread[0],
                     cpu_spread[-1], statistics.median(inside), inside[0],
                     inside[-1], statistics.median(without_gc),
                     without_gc[0], without_gc[-1],
                     statistics.median(wall_spread),
                     wall_spread[0], wall_spread[-1],
                     ours['placement_requests'],
                     ours['first_request_placement_requests']))
            name = 'ratio_%d_hosts%s' % (size, suffix)
            result[name] = round(ratio, 3)
            result[name + '_per_round'] = [round(r, 3) for r in cpu_spread]
            result[name + '_in_request'] = round(
                statistics.median(inside), 3)
            result[name + '_in_request_per_round'] = [
                round(r, 3) for r in inside]
            result[name + '_without_full_gc'] = round(
                statistics.median(without_gc), 3)
            result[name + '_without_full_gc_per_round'] = [
                round(r, 3) for r in without_gc]
            result[name + '_wall'] = round(
                statistics.median(wall_spread), 3)
            result[name + '_wall_per_round'] = [
                round(r, 3) for r in wall_spread]
            extra.setdefault(arm, []).append(
                ours['placement_requests'] - base['placement_requests'])
            extra.setdefault(arm + '_first', []).append(
                ours['first_request_placement_requests']
                - base['first_request_placement_requests'])
    result['rounds'] = rounds
    result['extra_placement_requests_per_request'] = max(extra['plugins'])
    result['extra_placement_requests_first_request'] = max(
        extra['plugins_first'])
    result['extra_placement_requests_per_request_extra_request'] = max(
        extra['plugins_extra_request'])
    print(json.dumps(result))
    return 0
