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
"""The two protocols, the offline bound and the measurements.

*Arrivals* (FGD's protocol): tasks drawn from the trace with replacement
(seeded) arrive until the GPUs they ask for reach ``target`` times the
fleet's GPUs; nothing departs; a task that fits nowhere is dropped. Two
measures of the unallocated GPU share, both against the arrived workload
(in % of the fleet's GPUs): ``curve`` counts the slices allocated (a
0.3-GPU task on a 3g instance takes 3/7), ``curve_requested`` counts what
the placed tasks asked for (0.3): FGD's metric (Weng et al., ATC'23:
the cluster's GPU capacity less the GPU requests of the scheduled tasks),
where round-up waste counts as unallocated. *Replay*: the trace's own
creation and deletion times. Every policy sees the same tasks in the
same order and tries the same kinds in the same order (a task that
names no GPU model tries the kinds in a seeded order weighted by their
GPUs, like a user trying one flavor after another).

The *bound* is a relaxation no online policy can beat: the arrived tasks
spread over the fleet's slices by a linear program that keeps how many
slices of each kind the fleet has and the CPU and memory of each kind
(summed over its hosts), and ignores host boundaries, cliques, arrival
order and integrality. It maximises the allocated GPU share in either
measure (:func:`relaxed_requested` for FGD's); the free-layout bound,
which lets every GPU take any layout, is
:func:`gpu_partitions.simulator.dynamic.free_layout_requested`.
"""

import collections
import dataclasses
import random
import sys
import time

from gpu_partitions.simulator import fleet as fleet_mod
from gpu_partitions.simulator import placement as placement_mod
from gpu_partitions.simulator import policies as policies_mod
from gpu_partitions.simulator import scheduler as scheduler_mod
import placement_traits

ARRIVALS = 'arrivals'
REPLAY = 'replay'
LARGE_SHARE = 3 / 7 - 1e-9   # 3g and larger MIG slices, 1/2 and 1 vGPU


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total, stream=None, enabled=True):
        self.total = max(1, total)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._shown = -1
        self._start = time.monotonic()
        self.label = ''

    def step(self, count=1):
        self.done += count
        percent = int(100 * self.done / self.total)
        if self.enabled and percent != self._shown:
            self._shown = percent
            bar = '#' * (percent // 4)
            self.stream.write('\r%-16s [%-25s] %3d%% %5.0fs' % (
                self.label[:16], bar, percent,
                time.monotonic() - self._start))
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write('\n')
            self.stream.flush()


@dataclasses.dataclass
class Outcome:
    policy: str
    curve: list = dataclasses.field(default_factory=list)
    curve_requested: list = dataclasses.field(default_factory=list)
    over_time: list = dataclasses.field(default_factory=list)
    placed: int = 0
    failed: int = 0
    failed_gpu_tasks: int = 0
    decisions: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_unallocated(self):
        return self.curve[-1][1] if self.curve else None

    def to_dict(self):
        return {'curve': self.curve, 'over_time': self.over_time,
                'curve_requested': self.curve_requested,
                'unallocated_requested_at_end': (
                    self.curve_requested[-1][1] if self.curve_requested
                    else None),
                'placed': self.placed, 'failed': self.failed,
                'failed_gpu_tasks': self.failed_gpu_tasks,
                'unallocated_at_end': self.final_unallocated,
                'seconds': round(self.seconds, 2)}


def slice_providers(fleet):
    """``(provider uuid, share of one unit, (host, GPU), units)`` of
    each slice provider of a fleet with fixed layouts.
    """
    for host in fleet.hosts:
        for gpu in host.gpus:
            for slice_set in gpu.slices:
                rp = placement_mod.provider_uuid(
                    placement_traits.provider_name(
                        host.name, gpu.address, slice_set.name))
                yield (rp, slice_set.share, (host.name, gpu.address),
                       slice_set.count)


class FleetState:
    """Shares of the fleet in use, from the claims written, and the GPU
    share the placed tasks requested (FGD's metric).
    """

    def __init__(self, fleet, providers=None):
        self.gpus = fleet.gpu_count
        self.share = {}
        self.gpu_of = {}
        self.large = {}
        for rp, share, gpu, count in (providers
                                      or slice_providers(fleet)):
            self.share[rp] = share
            self.gpu_of[rp] = gpu
            if share >= LARGE_SHARE:
                self.large[rp] = count
        self.allocated = 0.0
        self.requested = 0.0
        self.gpu_used = collections.Counter()
        self.large_used = collections.Counter()

    def apply(self, allocation, sign):
        for rp, alloc in allocation['allocations'].items():
            if rp not in self.share:
                continue
            units = sum(alloc['resources'].values())
            self.allocated += sign * units * self.share[rp]
            self.gpu_used[self.gpu_of[rp]] += sign * units
            if rp in self.large:
                self.large_used[rp] += sign * units

    @property
    def unallocated(self):
        return max(0.0, 1.0 - self.allocated / self.gpus)

    @property
    def unallocated_requested(self):
        return max(0.0, 1.0 - self.requested / self.gpus)

    def free_whole_gpus(self):
        return self.gpus - sum(1 for n in self.gpu_used.values() if n > 0)

    def free_large_slices(self):
        return sum(count - self.large_used[rp]
                   for rp, count in self.large.items())


def kind_order(task, kind_gpus, rng):
    """Kinds to try for ``task``, weighted by their GPUs, seeded."""
    allowed = fleet_mod.kinds_for(task, sorted(kind_gpus))
    order = []
    while allowed:
        weights = [kind_gpus[k] for k in allowed]
        pick = rng.choices(allowed, weights=weights)[0]
        order.append(pick)
        allowed.remove(pick)
    return order


def requests_for(task, kind_gpus, seed, index):
    """The resource requests ``task`` tries, in order."""
    root = tuple((rc, amount) for rc, amount in (
        ('VCPU', task.cpu_milli), ('MEMORY_MB', task.memory_mib))
        if amount > 0)
    if task.num_gpu == 0:
        return [placement_mod.ResourceRequest(root=root)]
    rng = random.Random('%s/%d' % (seed, index))
    return [placement_mod.ResourceRequest(
        root=root,
        groups=tuple(fleet_mod.gpu_groups(task, fleet_mod.KINDS[name])))
        for name in kind_order(task, kind_gpus, rng)]


def arrival_sequence(tasks, gpus, target, seed):
    """Tasks drawn with replacement until their GPUs reach ``target`` x
    ``gpus``.
    """
    rng = random.Random(seed)
    sequence = []
    asked = 0.0
    if not any(t.gpu_share for t in tasks):
        raise ValueError('the trace has no GPU task')
    while asked < target * gpus - 1e-9:
        task = rng.choice(tasks)
        sequence.append(task)
        asked += task.gpu_share
    return sequence


class Runner:
    """Runs policies over one fleet and task list with one seed."""

    def __init__(self, fleet, tasks, seed=0, placement_factory=None,
                 progress=None, keep_decisions=False):
        self.fleet = fleet
        self.tasks = tasks
        self.seed = seed
        self.kind_gpus = fleet.kinds()
        self.placement_factory = (placement_factory
                                  or placement_mod.InMemoryPlacement
                                  .from_fleet)
        self.workloads = policies_mod.typical_tasks(
            tasks, sorted(self.kind_gpus))
        self.progress = progress
        self.keep_decisions = keep_decisions

    def _scheduler(self, policy):
        placement = self.placement_factory(self.fleet)
        self._last_placement = placement
        return scheduler_mod.Scheduler(
            self.fleet, placement, policy, seed=self.seed,
            workloads=self.workloads,
            root_of=getattr(placement, 'root_of', None)), placement

    def _place(self, scheduler, outcome, state, consumer, task, index):
        for request in requests_for(task, self.kind_gpus, self.seed, index):
            placed = scheduler.schedule(consumer, task, request)
            if placed is not None:
                state.apply(placed[1], +1)
                state.requested += task.gpu_share
                outcome.placed += 1
                if self.keep_decisions:
                    outcome.decisions.append((consumer, _decision(
                        scheduler.placement, placed[1])))
                return True
        outcome.failed += 1
        if task.num_gpu:
            outcome.failed_gpu_tasks += 1
        if self.keep_decisions:
            outcome.decisions.append((consumer, None))
        return False

    def arrivals(self, policy, target=1.0, steps=100):
        sequence = arrival_sequence(self.tasks, self.fleet.gpu_count,
                                    target, self.seed)
        scheduler, placement = self._scheduler(policy)
        outcome = Outcome(policy.name)
        state = self._state(placement)
        started = time.monotonic()
        asked = 0.0
        next_mark = 1
        for index, task in enumerate(sequence):
            asked += task.gpu_share
            self._place(scheduler, outcome, state, 'task-%d' % index, task,
                        index)
            arrived = asked / self.fleet.gpu_count
            while next_mark <= steps * target and (
                    arrived >= next_mark / steps - 1e-9
                    or index == len(sequence) - 1):
                outcome.curve.append([round(100.0 * next_mark / steps, 3),
                                      round(100 * state.unallocated, 3)])
                outcome.curve_requested.append([
                    round(100.0 * next_mark / steps, 3),
                    round(100 * state.unallocated_requested, 3)])
                outcome.over_time.append(self._sample(index, state, outcome))
                next_mark += 1
            if self.progress is not None:
                self.progress.step()
        outcome.seconds = time.monotonic() - started
        return outcome

    def replay(self, policy, samples=200, speedup=1.0):
        """The trace's own times; ``speedup`` divides the gaps between
        creations and keeps each task's lifetime (the openb trace alone
        never fills its cluster: 66 GPUs at most run at once).
        """
        events = []
        for index, task in enumerate(self.tasks):
            if task.creation_time is None:
                continue
            start = task.creation_time / speedup
            events.append((start, 1, index))
            if task.deletion_time is not None:
                events.append((start + task.deletion_time
                               - task.creation_time, 0, index))
        if not events:
            raise ValueError('the trace has no creation times to replay')
        events.sort()
        scheduler, placement = self._scheduler(policy)
        outcome = Outcome(policy.name)
        state = self._state(placement)
        started = time.monotonic()
        every = max(1, len(events) // samples)
        asked = 0.0
        for number, (moment, is_creation, index) in enumerate(events):
            task = self.tasks[index]
            consumer = 'task-%d' % index
            if is_creation:
                asked += task.gpu_share
                self._place(scheduler, outcome, state, consumer, task, index)
                if self.progress is not None:
                    self.progress.step()
            else:
                allocation = scheduler.release(consumer)
                if allocation is not None:
                    state.apply(allocation, -1)
                    state.requested -= task.gpu_share
            if number % every == 0 or number == len(events) - 1:
                sample = self._sample(number, state, outcome)
                sample['time'] = moment
                outcome.over_time.append(sample)
        outcome.curve.append([round(100 * asked / self.fleet.gpu_count, 3),
                              round(100 * state.unallocated, 3)])
        outcome.curve_requested.append([
            round(100 * asked / self.fleet.gpu_count, 3),
            round(100 * state.unallocated_requested, 3)])
        outcome.seconds = time.monotonic() - started
        return outcome

    def _state(self, placement):
        """A :class:`FleetState` over ``placement``'s slice providers
        (those of the fleet's layouts unless the placement says).
        """
        providers = getattr(placement, 'slice_providers', None)
        return FleetState(self.fleet, providers() if providers else None)

    @staticmethod
    def _sample(index, state, outcome):
        return {'event': index,
                'unallocated': round(100 * state.unallocated, 3),
                'unallocated_requested': round(
                    100 * state.unallocated_requested, 3),

                'free_whole_gpus': state.free_whole_gpus(),
                'free_large_slices': state.free_large_slices(),
                'failed': outcome.failed}

    def bound(self, target=1.0, steps=10, allocation=None):
        """``[[arrived %, lowest unallocated %], ...]`` of the relaxation
        at every ``100/steps`` % of arrived workload; ``allocation(fleet,
        tasks)`` is the relaxation (default: the slices of the fleet's
        layouts, slice metric).
        """
        allocation = allocation or relaxed_allocation
        sequence = arrival_sequence(self.tasks, self.fleet.gpu_count,
                                    target, self.seed)
        curve = []
        asked = 0.0
        marks = [target * 100 * (i + 1) / steps for i in range(steps)]
        prefix = []
        for task in sequence:
            asked += task.gpu_share
            prefix.append(task)
            while marks and (100 * asked / self.fleet.gpu_count
                             >= marks[0] - 1e-9 or len(prefix)
                             == len(sequence)):
                allocated = allocation(self.fleet, prefix)
                curve.append([round(marks.pop(0), 3),
                              round(100 * max(0.0, 1 - allocated
                                              / self.fleet.gpu_count), 3)])
        return curve


def _decision(placement, allocation):
    names = placement.names
    return sorted((names[rp], rc, amount)
                  for rp, alloc in allocation['allocations'].items()
                  for rc, amount in alloc['resources'].items())


def relaxed_requested(fleet, tasks):
    """:func:`relaxed_allocation` counting the GPU share the tasks
    request (FGD's metric) instead of the slices they take.
    """
    return relaxed_allocation(fleet, tasks, requested=True)


def relaxed_allocation(fleet, tasks, requested=False):
    """Most GPUs (a float) the tasks can take when only the slice counts,
    CPU and memory of each kind matter (summed over its hosts): a linear
    program over task classes and slice pools. ``requested``: count a
    task's requested share, not the share of the slices it takes.
    """
    from scipy import optimize

    pools = collections.Counter()       # (kind, slice, share) -> units
    cpu = collections.Counter()
    memory = collections.Counter()
    for host in fleet.hosts:
        cpu[host.kind.name] += host.cpu_milli
        memory[host.kind.name] += host.memory_mib
        for gpu in host.gpus:
            for slice_set in gpu.slices:
                pools[(host.kind.name, slice_set.name,
                       round(slice_set.share, 9))] += slice_set.count
    classes = collections.Counter(
        (t.num_gpu, t.gpu_milli, t.gpu_spec, t.cpu_milli, t.memory_mib)
        for t in tasks if t.num_gpu)
    kinds = sorted(cpu)
    ordered = sorted(classes)
    pool_keys = sorted(pools)
    variables = []   # (class index, pool key, units per task, share)
    for c, (num_gpu, milli, spec, _, _) in enumerate(ordered):
        probe = _probe_task(num_gpu, milli, spec)
        for kind_name in fleet_mod.kinds_for(probe, kinds):
            kind = fleet_mod.KINDS[kind_name]
            wanted = (kind.slice_for(milli) if num_gpu == 1
                      else kind.whole_slice)
            for key in pool_keys:
                if key[0] == kind_name and key[1] == wanted:
                    gain = (milli / 1000.0 if num_gpu == 1 else num_gpu) \
                        if requested else key[2] * num_gpu
                    variables.append((c, key, num_gpu, gain))
    if not variables:
        return 0.0
    # Rows: one per class (tasks of it), per pool (units), per kind (CPU
    # and memory).
    row_of_pool = {key: len(ordered) + i for i, key in enumerate(pool_keys)}
    row_of_cpu = {k: len(ordered) + len(pool_keys) + 2 * i
                  for i, k in enumerate(kinds)}
    limits = ([classes[key] for key in ordered]
              + [pools[key] for key in pool_keys])
    for kind_name in kinds:
        limits += [cpu[kind_name], memory[kind_name]]
    rows, columns, values = [], [], []
    for j, (c, key, units, _) in enumerate(variables):
        _, _, _, task_cpu, task_memory = ordered[c]
        for row, value in ((c, 1.0), (row_of_pool[key], float(units)),
                           (row_of_cpu[key[0]], float(task_cpu)),
                           (row_of_cpu[key[0]] + 1, float(task_memory))):
            rows.append(row)
            columns.append(j)
            values.append(value)
    from scipy import sparse
    matrix = sparse.csr_matrix((values, (rows, columns)),
                               shape=(len(limits), len(variables)))
    result = optimize.linprog(
        c=[-share for _, _, _, share in variables], A_ub=matrix,
        b_ub=limits, bounds=(0, None), method='highs')
    if not result.success:
        raise RuntimeError('bound: %s' % result.message)
    return -result.fun


def _probe_task(num_gpu, milli, spec):
    from gpu_partitions.simulator import trace
    return trace.Task(name='probe', cpu_milli=0, memory_mib=0,
                      num_gpu=num_gpu, gpu_milli=milli, gpu_spec=spec)


# --- one call for the command and the benchmark -----------------------------

_SHARED = {}
HASH_SEED = 0
# The arrivals curve's resolution (Runner.arrivals' steps).
MIN_TARGET = 0.01


def _init_worker(counter, parent):
    import os
    import signal
    import threading

    _SHARED['counter'] = counter
    # A parent ended by a signal never shuts its pool down, and its
    # workers would compute on for nobody: each ends once it is orphaned.
    # (Not a pool run in the parent's own process, as tests run it.)
    if os.getpid() != parent:
        threading.Thread(target=_exit_when_orphaned, args=(parent,),
                         daemon=True).start()
        # Ctrl-C reaches the whole process group: a worker ends quietly
        # (it started with SIGINT ignored, see Workers.submit) and the
        # parent alone says it was interrupted, not one stack per worker.
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def _exit_when_orphaned(parent, interval=1.0):
    import os
    import time

    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


class _CounterProgress:
    """Counts steps into a shared counter (a worker's progress)."""

    def __init__(self, counter):
        self.counter = counter
        self._pending = 0

    def step(self, count=1):
        self._pending += count
        if self._pending >= 20:
            with self.counter.get_lock():
                self.counter.value += self._pending
            self._pending = 0


def _run_one(fleet, tasks, seed, protocol, policy_name, target, speedup,
             dynamic=False):
    counter = _SHARED.get('counter')
    progress = _CounterProgress(counter) if counter is not None else None
    factory = None
    if dynamic:
        from gpu_partitions.simulator import dynamic as dynamic_mod
        factory = dynamic_mod.placement_factory(fleet, tasks)
    runner = Runner(fleet, tasks, seed=seed, progress=progress,
                    placement_factory=factory)
    policy = policies_mod.POLICIES[policy_name]
    if protocol == ARRIVALS:
        outcome = runner.arrivals(policy, target=target)
    else:
        outcome = runner.replay(policy, speedup=speedup)
    data = outcome.to_dict()
    data['family'] = policy.family
    return policy_name, data


class Workers:
    """Worker processes for :func:`simulate`, kept over several calls so
    that each imports Nova once (seconds of CPU per process), not once
    per call. A context manager; ``jobs`` processes at most.

    Fresh interpreters with a fixed hash seed: the scoring functions
    iterate over sets of strings while summing floats, so ties among
    equal placements otherwise depend on the process's hash seed. A
    worker whose parent is gone (killed) ends within a second.
    """

    def __init__(self, jobs=1):
        import concurrent.futures
        import multiprocessing
        import os

        context = multiprocessing.get_context('spawn')
        self.counter = context.Value('l', 0)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=max(1, jobs), mp_context=context,
            initializer=_init_worker, initargs=(self.counter, os.getpid()))

    def submit(self, *args):
        """``self.pool.submit(*args)``; a process it starts gets the
        fixed hash seed.
        """
        import os
        import signal
        import threading

        saved = os.environ.get('PYTHONHASHSEED')
        os.environ['PYTHONHASHSEED'] = str(HASH_SEED)
        # A process started now inherits SIGINT ignored, so that Ctrl-C
        # while it imports gives no stack; its initializer restores it.
        main = threading.current_thread() is threading.main_thread()
        if main:
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return self.pool.submit(*args)
        finally:
            if main:
                signal.signal(signal.SIGINT, interrupt)
            if saved is None:
                del os.environ['PYTHONHASHSEED']
            else:
                os.environ['PYTHONHASHSEED'] = saved

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.pool.shutdown()


def simulate(fleet, tasks, policy_names, protocol=ARRIVALS, seed=0,
             target=1.0, jobs=1, show_progress=True, trace_path='',
             scale=1.0, speedup=1.0, dynamic=False, workers=None,
             set_aside=None):
    """Run every policy (in ``jobs`` processes, or on ``workers``, a
    :class:`Workers`) and the bounds; a dict ready for
    :mod:`gpu_partitions.simulator.report`. ``dynamic``: MIG instances
    and vGPU types created on demand
    (:mod:`gpu_partitions.simulator.dynamic`), the fleet's layouts
    ignored. ``set_aside``: the trace's rows left out of ``fleet`` and
    ``tasks`` (``{'nodes': ..., 'tasks': ...}`` of
    :meth:`.fleet.SetAside.to_dict`), reported with the result.
    """
    import concurrent.futures

    unknown = [n for n in policy_names if n not in policies_mod.POLICIES]
    if unknown:
        raise ValueError('unknown policies: %s; known: %s' % (
            ', '.join(unknown), ', '.join(policies_mod.POLICIES)))
    if protocol == ARRIVALS and not target >= MIN_TARGET:
        # The curve has a mark per 1% of the fleet: below the first, a
        # run would have no result to report.
        raise ValueError('target %r: at least %s of the fleet\'s GPUs'
                         % (target, MIN_TARGET))
    if protocol == ARRIVALS:
        steps = len(arrival_sequence(tasks, fleet.gpu_count, target, seed))
    else:
        steps = sum(1 for t in tasks if t.creation_time is not None)
    progress = Progress(steps * len(policy_names), enabled=show_progress)
    progress.label = protocol
    owned = workers is None
    if owned:
        workers = Workers(jobs)
    counter = workers.counter
    counted = counter.value
    outcomes = {}
    try:
        futures = [workers.submit(_run_one, fleet, tasks, seed, protocol,
                                  name, target, speedup, dynamic)
                   for name in policy_names]
        # The bounds (linear programs, in this process) while they run.
        bounds = (_bounds(fleet, tasks, seed, target)
                  if protocol == ARRIVALS else {})
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.5)
            progress.step(counter.value - counted - progress.done)
        for future in futures:
            name, data = future.result()
            outcomes[name] = data
    finally:
        if owned:
            workers.pool.shutdown()
    progress.step(progress.total - progress.done)
    progress.close()
    result = {
        'protocol': protocol, 'trace': trace_path, 'seed': seed,
        'scale': scale, 'target': target, 'speedup': speedup,
        'fleet': fleet.summary(), 'dynamic': dynamic,
        'policies': outcomes,
        'arrived_at_end': (round(100 * target, 3) if protocol == ARRIVALS
                           else max(o['curve'][-1][0]
                                    for o in outcomes.values())),
    }
    if set_aside is not None:
        result['set_aside'] = set_aside
    result.update(bounds)
    return result


def _bounds(fleet, tasks, seed, target):
    from gpu_partitions.simulator import dynamic as dynamic_mod
    runner = Runner(fleet, tasks, seed=seed)
    return {'bound': runner.bound(target),
            'bound_requested': runner.bound(
                target, allocation=relaxed_requested),
            'free_layout_bound': runner.bound(
                target, allocation=dynamic_mod.free_layout_requested)}
