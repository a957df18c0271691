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
"""The compared policies: Nova's default, ours, and the baselines.

Every policy is a list of Nova filter objects and a list of Nova weigher
objects, run by Nova's own ``HostFilterHandler`` and ``HostWeightHandler``
(:mod:`gpu_partitions.simulator.scheduler`). Ours are the real
``nova_filters`` classes. The baselines are written here as Nova plugins
from their published definitions:

* ``random``: a random host, a random candidate on it.
* ``hami-binpack`` / ``hami-spread``: HAMi's node score
  ``10 * (used/count + usedcores/totalcores + usedmem/totalmem)`` summed
  over the host's GPUs (highest host for binpack, lowest for spread) and
  its GPU score ``10 * ((req+used)/count + (core+usedcores)/totalcore +
  (mem+usedmem)/totalmem)`` to choose the GPU (fullest / emptiest).
* ``best-fit`` (FGD paper baseline): the host minimising
  ``sum_i (free_i - req_i) / max_i`` over CPU, memory and GPU, the
  fullest GPU on it.
* ``gpu-packing`` (FGD paper baseline): a GPU already in use, else a free
  GPU on a host already in use, else a GPU of an idle host.
* ``fgd``: the fragmentation gradient of Weng et al. (ATC'23): the
  placement that least increases the host's fragmentation
  ``F_n(M) = sum_m p_m F_n(m)`` over the trace's typical tasks ``M``.

Nova runs no weigher when one host is left, and claims the first
candidate of the chosen host, so every policy orders the candidates in a
filter (as our GpuPartitionFilter does) and weighs hosts in a weigher.
Multi-GPU requests must share an NVLink clique under every policy:
policies without our filter get :class:`CliqueFilter`.
"""

import collections
import dataclasses
import random

from nova.scheduler import filters as nova_filters_api
from nova.scheduler import weights as nova_weights

from nova_filters import allocations
from nova_filters import gpu_filter
from nova_filters import gpu_weigher
from nova_filters import provider_summaries
from nova_filters import request_view
from nova_filters import scoring
from nova_filters import topology as topology_mod


class RequestContext:
    """What the simulator knows about the request being scheduled: the
    Placement answer and the task. The baseline plugins read the GPU view
    built from the same provider summaries as ours.
    """

    # Simulated seconds between two requests: longer than any expiry of
    # our plugins' per-request state, since requests run one at a time.
    REQUEST_INTERVAL = 10000.0
    # A simulated provider's traits never change: its place (GPU, NUMA
    # node, link domain) is read from them once per run, not once per
    # request that shows it.
    TOPOLOGY_TTL = float('inf')

    def __init__(self, host_info):
        self.host_info = host_info    # root uuid -> (kind, FleetHost)
        self.summaries = {}
        self.task = None
        self.scores = {}
        self._view = None
        self.now = 0.0
        self.topology = topology_mod.TopologyCache(self.TOPOLOGY_TTL,
                                                   clock=self.clock)

    def start(self, task, summaries):
        self.task = task
        self.summaries = summaries
        self.scores = {}
        self._view = None
        self.now += self.REQUEST_INTERVAL

    def clock(self):
        """The plugins' clock: simulated time, so that no request of the
        past counts as in flight and no result depends on the wall
        clock.
        """
        return self.now

    @property
    def view(self):
        if self._view is None:
            self._view = provider_summaries.parse(
                self.summaries, topology=self.topology)
        return self._view

    def query(self, spec_obj, host_states):
        """Stands in for our plugins' one extra Placement request: the
        same request gets the same answer.
        """
        return self.summaries


class CliqueFilter(nova_filters_api.BaseHostFilter):
    """Keep only candidates whose GPUs share one NVLink clique."""

    def __init__(self, context):
        self.context = context

    def filter_all(self, filter_obj_list, spec_obj):
        hosts = list(filter_obj_list)
        if self.context.task is None or self.context.task.num_gpu < 2:
            return hosts
        view = self.context.view
        kept = []
        for host_state in hosts:
            host = view.host(host_state.uuid)
            candidates = [
                c for c in host_state.allocation_candidates
                if host is not None and scoring.link_fit(
                    host, allocations.gpu_allocation(view, c))]
            host_state.allocation_candidates[:] = candidates
            if candidates:
                kept.append(host_state)
        return kept


class _Ordering(nova_filters_api.BaseHostFilter):
    """Orders each host's candidates best first and remembers the best
    score for :class:`_ScoreWeigher`; never drops a host.
    """

    def __init__(self, context):
        self.context = context

    def filter_all(self, filter_obj_list, spec_obj):
        hosts = list(filter_obj_list)
        view = self.context.view
        for host_state in hosts:
            host = view.host(host_state.uuid)
            candidates = host_state.allocation_candidates
            scores = [self.score(host_state, host,
                                 allocations.gpu_allocation(view, c))
                      for c in candidates]
            best_first = sorted(range(len(candidates)),
                                key=lambda i: scores[i], reverse=True)
            candidates[:] = [candidates[i] for i in best_first]
            self.context.scores[host_state.uuid] = (
                scores[best_first[0]] if scores else 0.0)
        return hosts

    def score(self, host_state, host, allocation):
        raise NotImplementedError()


class _ScoreWeigher(nova_weights.BaseHostWeigher):
    """Host weight = the best candidate score its ordering filter
    found.
    """

    def __init__(self, context):
        self.context = context

    def _weigh_object(self, host_state, weight_properties):
        return self.context.scores.get(host_state.uuid, 0.0)


def _touched(host, allocation):
    return scoring.gpus_of(host, allocation) if host is not None else []


def _free_cpu(host_state):
    return host_state.vcpus_total - host_state.vcpus_used


# --- random -------------------------------------------------------------

class RandomOrdering(_Ordering):

    def __init__(self, context, seed):
        super().__init__(context)
        self.rng = random.Random(seed)

    def score(self, host_state, host, allocation):
        return self.rng.random()


# --- HAMi ---------------------------------------------------------------

def _hami_gpu_terms(gpu, extra_units=0, extra_share=0.0):
    count = sum(p.capacity for p in gpu.providers) or 1
    used = sum(p.used for p in gpu.providers) + extra_units
    share = gpu.used_share + extra_share
    # Slots, cores and memory: a slice takes the same share of each.
    return used / count + 2 * share


class HamiOrdering(_Ordering):
    """GPU score of HAMi's gpu policy; binpack the fullest card."""

    def __init__(self, context, binpack):
        super().__init__(context)
        self.sign = 1.0 if binpack else -1.0

    def score(self, host_state, host, allocation):
        touched = _touched(host, allocation)
        if not touched:
            return 0.0
        after = allocations.host_with_allocation(host, allocation)
        scores = []
        for gpu in touched:
            units = sum(allocation.get(p.uuid, 0) for p in gpu.providers)
            scores.append(10 * _hami_gpu_terms(
                gpu, units, after.gpus[gpu.address].used_share
                - gpu.used_share))
        return self.sign * sum(scores) / len(scores)


class HamiNodeWeigher(_ScoreWeigher):
    """HAMi's node score: binpack the fullest node, spread the emptiest."""

    def __init__(self, context, binpack):
        super().__init__(context)
        self.sign = 1.0 if binpack else -1.0

    def _weigh_object(self, host_state, weight_properties):
        host = self.context.view.host(host_state.uuid)
        if host is None or not host.gpus:
            return 0.0
        gpus = list(host.gpus.values())
        count = sum(p.capacity for g in gpus for p in g.providers) or 1
        used = sum(p.used for g in gpus for p in g.providers)
        share = sum(g.used_share for g in gpus) / len(gpus)
        return self.sign * 10 * (used / count + 2 * share)


# --- FGD paper baselines ------------------------------------------------

class BestFitOrdering(_Ordering):
    """``sum_i (free_i - req_i) / max_i`` over CPU, memory and GPU of the
    host, lower better; the fullest touched GPU breaks ties.
    """

    def score(self, host_state, host, allocation):
        task = self.context.task
        cpu = (_free_cpu(host_state) - task.cpu_milli) / max(
            1, host_state.vcpus_total)
        memory = (host_state.free_ram_mb - task.memory_mib) / max(
            1, host_state.total_usable_ram_mb)
        gpu = 0.0
        fill = 0.0
        if host is not None and host.gpus:
            after = allocations.host_with_allocation(host, allocation)
            gpu = sum(g.free_share for g in after.gpus.values()) / len(
                after.gpus)
            touched = _touched(after, allocation)
            if touched:
                fill = sum(g.used_share for g in touched) / len(touched)
        return -(cpu + memory + gpu) + 1e-3 * fill


class GpuPackingOrdering(_Ordering):
    """Tiers: GPU in use > free GPU of a used host > GPU of an idle
    host.
    """

    def score(self, host_state, host, allocation):
        touched = _touched(host, allocation)
        if not touched:
            return 0.0
        if all(not g.is_idle for g in touched):
            tier = 3
        elif any(not g.is_idle for g in host.gpus.values()):
            tier = 2
        else:
            tier = 1
        fill = sum(g.used_share for g in touched) / len(touched)
        return tier + 0.1 * fill


# --- FGD ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TypicalTask:
    """One class of the target workload M: ``popularity`` p_m, its
    CPU and memory, and the resource class it takes per kind.
    """
    popularity: float
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    resource_class_by_kind: tuple   # ((kind name, rc), ...)


def typical_tasks(tasks, kinds, classes=16):
    """The ``classes`` most popular (num_gpu, gpu_milli) classes of the
    trace, with their mean CPU and memory; popularity sums to 1.
    """
    from gpu_partitions.simulator import fleet as fleet_mod
    groups = collections.defaultdict(list)
    for task in tasks:
        groups[(task.num_gpu, task.gpu_milli)].append(task)
    top = sorted(groups.items(), key=lambda item: -len(item[1]))[:classes]
    total = sum(len(members) for _, members in top)
    result = []
    for (num_gpu, milli), members in top:
        by_kind = []
        for name in kinds:
            kind = fleet_mod.KINDS[name]
            if num_gpu == 1:
                by_kind.append((name, kind.resource_class(
                    kind.slice_for(milli))))
            elif num_gpu > 1:
                by_kind.append((name, kind.resource_class(
                    kind.whole_slice)))
        result.append(TypicalTask(
            popularity=len(members) / total,
            cpu_milli=sum(t.cpu_milli for t in members) // len(members),
            memory_mib=sum(t.memory_mib for t in members) // len(members),
            num_gpu=num_gpu, resource_class_by_kind=tuple(by_kind)))
    return result


def _gpu_fits(gpu, rc):
    return any(p.resource_class == rc and p.free >= 1 for p in gpu.providers)


def host_fragmentation(host, kind_name, free_cpu, free_memory, workloads):
    """F_n(M) of the FGD paper, in GPUs: for each typical task, all the
    free GPU share of the host if the task cannot run there (CPU, memory,
    no GPU that fits), else the free share of GPUs it cannot use.
    """
    gpus = list(host.gpus.values()) if host is not None else []
    free = [g.free_share for g in gpus]
    total_free = sum(free)
    if total_free <= 0:
        return 0.0
    # Typical tasks share a few resource classes: which GPUs fit one is
    # read once per call.
    fits_of = {}
    result = 0.0
    for task in workloads:
        rc = dict(task.resource_class_by_kind).get(kind_name)
        if task.cpu_milli > free_cpu or task.memory_mib > free_memory:
            result += task.popularity * total_free
            continue
        if task.num_gpu == 0:
            continue
        fits = fits_of.get(rc)
        if fits is None:
            fits = fits_of[rc] = [rc is not None and _gpu_fits(g, rc)
                                  for g in gpus]
        if task.num_gpu > 1:
            per_clique = collections.Counter(
                g.link_domain for g, ok in zip(gpus, fits)
                if ok and g.link_domain is not None)
            if not per_clique or max(per_clique.values()) < task.num_gpu:
                result += task.popularity * total_free
                continue
        elif not any(fits):
            result += task.popularity * total_free
            continue
        result += task.popularity * sum(
            f for f, ok in zip(free, fits) if not ok)
    return result


class FgdOrdering(_Ordering):
    """Minimise the growth of the host's fragmentation (score = minus
    the growth).
    """

    def __init__(self, context, workloads):
        super().__init__(context)
        self.workloads = workloads
        self._before = {}

    def filter_all(self, filter_obj_list, spec_obj):
        self._before = {}
        return super().filter_all(filter_obj_list, spec_obj)

    def score(self, host_state, host, allocation):
        kind_name = self.context.host_info[host_state.uuid][0]
        task = self.context.task
        free_cpu = _free_cpu(host_state)
        free_memory = host_state.free_ram_mb
        if host_state.uuid not in self._before:
            self._before[host_state.uuid] = host_fragmentation(
                host, kind_name, free_cpu, free_memory, self.workloads)
        after = (allocations.host_with_allocation(host, allocation)
                 if host is not None else None)
        growth = host_fragmentation(
            after, kind_name, free_cpu - task.cpu_milli,
            free_memory - task.memory_mib,
            self.workloads) - self._before[host_state.uuid]
        return -growth


# --- Nova default -------------------------------------------------------

def nova_default_weighers():
    handler = nova_weights.HostWeightHandler()
    return [cls() for cls in handler.get_matching_classes(
        ['nova.scheduler.weights.all_weighers'])]


# --- registry -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Policy:
    """``build(context, seed, workloads)`` returns (filters, weighers);
    ``extra_specs`` go into the flavor of every request.
    """
    name: str
    family: str      # 'nova', 'baseline', 'packing', 'fgd' or 'ours'
    description: str
    build: object
    extra_specs: tuple = ()


def _ordered(ordering, weigher=_ScoreWeigher):
    def build(context, seed, workloads):
        return ([CliqueFilter(context), ordering(context)],
                [weigher(context)])
    return build


def _nova(context, seed, workloads):
    return [CliqueFilter(context)], nova_default_weighers()


def _random(context, seed, workloads):
    return ([CliqueFilter(context), RandomOrdering(context, seed)],
            [_ScoreWeigher(context)])


def _hami(binpack):
    def build(context, seed, workloads):
        return ([CliqueFilter(context), HamiOrdering(context, binpack)],
                [HamiNodeWeigher(context, binpack)])
    return build


def _fgd(context, seed, workloads):
    return ([CliqueFilter(context), FgdOrdering(context, workloads)],
            [_ScoreWeigher(context)])


def _ours(with_nova):
    def build(context, seed, workloads):
        views = request_view.RequestViews(query=context.query,
                                          clock=context.clock,
                                          topology=context.topology,
                                          query_without_gpu=True)
        weighers = [gpu_weigher.GpuPartitionWeigher(views=views)]
        if with_nova:
            weighers = nova_default_weighers() + weighers
        return [gpu_filter.GpuPartitionFilter(
            views=views, weigher_runs=True)], weighers
    return build


_OURS_SPECS = (('gpu_partitions:link_affinity', 'required'),)

POLICIES = {p.name: p for p in (
    Policy('nova-default', 'nova',
           "Nova's default weighers (all_weighers, default multipliers), "
           "Placement's candidate order inside a host", _nova),
    Policy('random', 'baseline', 'random host, random candidate', _random),
    Policy('hami-binpack', 'packing',
           'HAMi node binpack + GPU binpack scores', _hami(True)),
    Policy('hami-spread', 'baseline',
           'HAMi node spread + GPU spread scores', _hami(False)),
    Policy('best-fit', 'packing', 'FGD paper best-fit baseline',
           _ordered(BestFitOrdering)),
    Policy('gpu-packing', 'packing', 'FGD paper GPU-packing baseline',
           _ordered(GpuPackingOrdering)),
    Policy('fgd', 'fgd', 'fragmentation gradient descent (ATC\'23)', _fgd),
    Policy('ours-pack', 'ours',
           'GpuPartitionFilter + GpuPartitionWeigher, policy pack',
           _ours(False),
           _OURS_SPECS + (('gpu_partitions:policy', 'pack'),)),
    Policy('ours-spread', 'ours',
           'GpuPartitionFilter + GpuPartitionWeigher, policy spread',
           _ours(False),
           _OURS_SPECS + (('gpu_partitions:policy', 'spread'),)),
    Policy('ours-pack+nova', 'ours',
           "ours-pack beside Nova's default weighers (multipliers 1.0)",
           _ours(True),
           _OURS_SPECS + (('gpu_partitions:policy', 'pack'),)),
)}
DEFAULT_POLICIES = tuple(POLICIES)
