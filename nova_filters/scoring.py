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
"""Pack, spread, fragmentation and affinity scores over a GPU view.

Pure functions over :mod:`nova_filters.gpu_view` data: no I/O, no Nova.
The scheduler weigher and filter call them with a view built from
Placement, the packing simulator with a view of its in-memory fleet.
Higher scores are better everywhere.

An *allocation* is ``{provider_uuid: units}`` on one host (see
:func:`nova_filters.allocations.gpu_allocation`).

Fragmentation
-------------
Following FGD (Weng et al., "Beware of Fragmentation", USENIX ATC 2023),
a host's fragmentation is the GPU capacity that typical requests can no
longer use:

    fragmentation(host) = sum over workloads w the host serves of
        weight(w) / served weight * (
            free(host)                   if w cannot run on the host,
            free(host) - usable(w)       otherwise)

    usable(w) = min(sum of free(g) over GPUs g that w can use,
                    room(w) * share(w))

``free(g)`` is the free share of GPU ``g`` (0..1, see ``unit_share``).
A host *serves* the workloads whose resource class one of its GPUs offers
(and those asking for an idle GPU or link domain); their weights are
scaled to sum to 1 (all workloads count where it serves none). FGD weighs
the cluster's whole mix on every node; with several GPU models a
request for another model never lands on the host, and counting it
would scale a minority model's fragmentation down by its small share of
the mix, below the fullness tie-break.
A workload cannot run on a host when the host's free VCPU or memory
(read from the compute node's provider) is below what it asks, or, for a
workload spanning several GPUs, when no link domain has that many GPUs it
can use. ``room(w)`` is how many more instances of ``w`` the host's free
VCPU and memory hold and ``share(w)`` the GPU share one takes: a host
whose CPU or memory runs out before its GPUs strands the GPU share
beyond it, so a request (with or without GPU) that takes CPU from such a
host raises its fragmentation, and one that takes CPU from a host with
CPU to spare does not. FGD's measure asks only whether one more
instance fits. The typical workloads are a :class:`WorkloadMix`: the requests
the scheduler saw recently (:mod:`nova_filters.workload_mix`), or, before
it saw any, :func:`default_workloads`. Packing picks the placement that
raises fragmentation least, then the fullest host and GPU (a host's
fullness weighs 0.03 GPU, see :func:`host_score`): a request
lands where its CPU and memory strand the least GPU capacity, on a GPU
already in use rather than on an idle one, and on an idle GPU of a broken
clique rather than one of an intact clique.

Workloads weigh by how often they come, as in FGD. Weighing them by the
GPU share they ask for instead (frequency times one instance's share, so
an 8-GPU workload that no longer fits counts 8 GPUs) was measured on
2026-12-07 (``simulate --dynamic``, ours-pack, 10% of the nodes, seeds
0 to 9, ``PYTHONHASHSEED=0``, on a loaded machine; paired differences,
points): multigpu50 0.00 [-0.11, 0.11], default +0.25 [0.07, 0.43]
(worse), gpushare100 -0.02 [-0.08, 0.04]; so it was not kept. On
multigpu50 the multi-GPU requests fail because the MIG-off GPUs are
full, not fragmented (``doc/source/simulator.rst``, *Where multigpu50
loses on demand*).

MIG geometry is not scored here: with ``[nvidia_mig] mode = static``
the MIG driver reports the instances that exist, so geometry shows only
as which of them are taken; with ``mode = on_demand`` the driver offers
only profiles that stay placeable (:mod:`cyborg_gpu_drivers.mig_geometry`).
Keeping idle GPUs idle keeps them free for a new layout or a 7g instance.

Affinity
--------
An allocation on several physical GPUs fits a link domain when all of them
carry the same NVLink clique or xGMI hive trait; it fits NUMA when its GPUs
sit on no more host NUMA nodes than the instance has NUMA cells.
"""

import dataclasses

from nova_filters import gpu_view
import placement_traits

PACK = 'pack'
SPREAD = 'spread'

SLICE = 'slice'
WHOLE_GPU = 'whole_gpu'
WHOLE_LINK_DOMAIN = 'whole_link_domain'

# Host weights put affinity before pack/spread: a host that can honour a
# preferred clique or NUMA node beats any host that cannot.
AFFINITY_BONUS = 10.0
# Among placements that fragment equally, the fullest (pack) GPU wins.
_FULLNESS_TIE_BREAK = 0.01
# Pack: weight of a host's fullness (0 to 1) beside the rise in its
# fragmentation (in GPUs). Fullness decides only between hosts whose
# placements strand GPU share within 0.03 GPU of each other. At 1, a
# placement that stranded half a GPU on a half-full host beat one that
# stranded none on an emptier host: the fullest hosts ran out of CPU or
# memory while GPUs were free (doc/source/simulator.rst, CPU-heavy traces).
_HOST_FULLNESS = 0.03


@dataclasses.dataclass(frozen=True)
class Workload:
    """A typical request and its share ``weight`` of the mix.

    Kind ``slice``: ``units`` of ``resource_class`` on each of ``gpus``
    distinct GPUs (one link domain when ``gpus`` > 1); kind ``whole_gpu``:
    an idle GPU; kind ``whole_link_domain``: an idle clique or hive.
    ``vcpus`` and ``memory_mb`` are what it takes from the compute node.
    """
    kind: str
    weight: float
    resource_class: str | None = None
    units: int = 1
    gpus: int = 1
    vcpus: int = 0
    memory_mb: int = 0


class WorkloadMix:
    """Typical workloads, and a memo of which of them each GPU state fits.

    One mix serves one scheduling request: the memo is keyed on a GPU's
    free units, so identical GPUs across hosts are judged once.
    """

    def __init__(self, workloads):
        self.workloads = tuple(workloads)
        self._bits = tuple((1 << i, w) for i, w in enumerate(self.workloads))
        self._masks = {}
        self._served = {}

    def gpu_mask(self, gpu, domain_idle):
        """Bit ``i`` set when workload ``i`` can use ``gpu`` (one of its
        GPUs, for a workload spanning several).
        """
        key = (tuple((p.resource_class, p.capacity - p.used)
                     for p in gpu.providers), gpu.is_idle, domain_idle)
        mask = self._masks.get(key)
        if mask is None:
            mask = 0
            for bit, workload in self._bits:
                if _fits(workload, gpu, domain_idle):
                    mask |= bit
            self._masks[key] = mask
        return mask

    def fragmentation(self, host, gpus=None, vcpus=0, memory_mb=0):
        """GPU capacity of ``host`` (in GPUs) that the workloads cannot
        use, once ``vcpus`` and ``memory_mb`` more are taken; ``gpus``
        replaces the host's GPUs (a placement being judged).
        """
        gpus = list(host.gpus.values()) if gpus is None else gpus
        idle_domains = gpu_view.idle_domains(gpus)
        masks = [(gpu, self.gpu_mask(gpu, gpu.link_domain in idle_domains))
                 for gpu in gpus]
        # Free share per fit mask: few distinct masks per host, so the
        # loop below is short.
        by_mask = {}
        for gpu, mask in masks:
            free = 1.0 - gpu.used_share
            if free > 0.0:
                by_mask[mask] = by_mask.get(mask, 0.0) + free
        total = sum(by_mask.values())
        if total <= 0.0:
            return 0.0
        free_vcpus = (None if host.free_vcpus is None
                      else host.free_vcpus - vcpus)
        free_memory = (None if host.free_memory_mb is None
                       else host.free_memory_mb - memory_mb)
        served = self._served_bits(gpus)
        result = 0.0
        weights = 0.0
        for bit, workload in self._bits:
            if not served & bit:
                continue
            weights += workload.weight
            room = _instances_room(workload, free_vcpus, free_memory)
            if room == 0 or (workload.gpus > 1 and not _domain_has(
                    masks, bit, workload.gpus)):
                result += workload.weight * total
                continue
            usable = sum(free for mask, free in by_mask.items()
                         if mask & bit)
            if room is not None and usable > 0.0:
                # Where the host's CPU or memory runs out before its GPUs,
                # the GPU share beyond ``room`` more instances is stranded
                # too, not only what no single instance fits into.
                usable = min(usable, room * self._share(workload, bit,
                                                        masks))
            result += workload.weight * (total - usable)
        return result / weights if weights else result

    def _served_bits(self, gpus):
        """Bits of the workloads the host serves (see the module's
        docstring): a resource class of its GPUs, whatever is free now, or
        an idle GPU or link domain; all of them when it serves none.
        """
        classes = frozenset(p.resource_class for gpu in gpus
                            for p in gpu.providers)
        served = self._served.get(classes)
        if served is None:
            served = 0
            for bit, workload in self._bits:
                if (workload.kind != SLICE
                        or workload.resource_class in classes):
                    served |= bit
            served = served or sum(bit for bit, _ in self._bits)
            self._served[classes] = served
        return served

    def _share(self, workload, bit, masks):
        """GPU share one instance of ``workload`` takes on the first of
        ``masks``' GPUs it fits (all GPUs of a host are one model).
        """
        for gpu, mask in masks:
            if mask & bit:
                return workload.gpus * workload.units * _unit_share(
                    gpu, workload.resource_class)
        return 0.0


def default_workloads(view):
    """Equally weighted typical requests for the hosts of ``view``, for
    a scheduler that has seen no request yet: one unit of every GPU
    resource class, an idle GPU and, where GPUs are linked, an idle link
    domain.
    """
    kinds = [(SLICE, rc) for rc in sorted(view.resource_classes)]
    kinds.append((WHOLE_GPU, None))
    if view.linked:
        kinds.append((WHOLE_LINK_DOMAIN, None))
    weight = 1.0 / len(kinds)
    return WorkloadMix(Workload(kind=kind, weight=weight, resource_class=rc)
                       for kind, rc in kinds)


def _instances_room(workload, free_vcpus, free_memory):
    """How many more instances of ``workload`` the host's free VCPU and
    memory hold, 0 when not one; None when neither limits it (unknown, or
    the workload asks for none). Not rounded down beyond that: a fraction
    says how close the host is to holding one more, so that each VCPU
    taken from a host whose CPU runs out first counts.
    """
    room = None
    for free, asked in ((free_vcpus, workload.vcpus),
                        (free_memory, workload.memory_mb)):
        if free is not None and asked > 0:
            fit = free / asked
            room = fit if room is None else min(room, fit)
    return room if room is None or room >= 1 else 0


def _unit_share(gpu, resource_class):
    """GPU share of one unit of ``resource_class`` on ``gpu``, by the rule
    of :func:`nova_filters.gpu_view.used_share` (MIG: its compute slices
    over those the GPU offers; else one unit of its provider's capacity).
    """
    slices = gpu_view.mig_slices(resource_class) if resource_class else None
    if slices:
        offered = placement_traits.mig_on_demand_slices(
            gpu.providers[0].traits) or sum(
                (gpu_view.mig_slices(p.resource_class) or 0) * p.capacity
                for p in gpu.providers)
        return slices / offered if offered else 0.0
    if resource_class is None:
        return 1.0
    for provider in gpu.providers:
        if provider.resource_class == resource_class and provider.capacity:
            return 1.0 / provider.capacity
    return 0.0


def _fits(workload, gpu, domain_idle):
    if workload.kind == SLICE:
        return any(p.resource_class == workload.resource_class
                   and p.capacity - p.used >= workload.units
                   for p in gpu.providers)
    if workload.kind == WHOLE_GPU:
        return gpu.is_idle
    if workload.kind == WHOLE_LINK_DOMAIN:
        return domain_idle
    return False


def _domain_has(masks, bit, count):
    """Whether some link domain has ``count`` GPUs the workload of
    ``bit`` can use (``masks``: ``[(gpu, fit mask)]``).
    """
    per_domain = {}
    for gpu, mask in masks:
        if gpu.link_domain is not None and mask & bit:
            per_domain[gpu.link_domain] = per_domain.get(
                gpu.link_domain, 0) + 1
            if per_domain[gpu.link_domain] >= count:
                return True
    return False


def fragmentation(host, workloads, vcpus=0, memory_mb=0):
    """GPU capacity of ``host`` (in GPUs) that ``workloads`` (a
    :class:`WorkloadMix`) cannot use.
    """
    return workloads.fragmentation(host, vcpus=vcpus, memory_mb=memory_mb)


def _after(touched, allocation):
    after = {}
    for gpu in touched:
        providers = [
            dataclasses.replace(p, used=p.used + allocation[p.uuid])
            if p.uuid in allocation else p for p in gpu.providers]
        after[gpu.address] = gpu_view.physical_gpu(gpu.address, providers)
    return after


def gpus_of(host, allocation):
    """The physical GPUs of ``host`` that ``allocation`` touches."""
    index = host.gpu_of_provider
    addresses = {index[uuid] for uuid in allocation if uuid in index}
    return [host.gpus[address] for address in sorted(addresses)]


def spans_gpus(host, allocation):
    return len(gpus_of(host, allocation)) > 1


def link_fit(host, allocation):
    """True when the allocation's GPUs share one clique or hive (or it
    touches at most one GPU).
    """
    return _link_fit(gpus_of(host, allocation))


def _link_fit(touched):
    if len(touched) <= 1:
        return True
    domains = {gpu.link_domain for gpu in touched}
    return len(domains) == 1 and None not in domains


def numa_fit(host, allocation, max_nodes):
    """True when the allocation's GPUs sit on at most ``max_nodes`` NUMA
    nodes; ``max_nodes`` None (no NUMA topology) always fits. GPUs of
    unknown NUMA node count as fitting.
    """
    return _numa_fit(gpus_of(host, allocation), max_nodes)


def _numa_fit(touched, max_nodes):
    if max_nodes is None or len(touched) <= 1:
        return True
    nodes = {gpu.numa_node for gpu in touched if gpu.numa_node is not None}
    return len(nodes) <= max_nodes


def candidate_score(host, allocation, policy, workloads, vcpus=0,
                    memory_mb=0):
    """How good it is to put ``allocation`` on ``host`` (higher better),
    with ``vcpus`` and ``memory_mb`` taken from the compute node too.

    ``pack``: minus the rise in fragmentation, then the fullest GPU.
    ``spread``: minus the fullness of the touched GPUs once placed.
    """
    return _score(host, allocation, gpus_of(host, allocation), policy,
                  workloads, [None], vcpus, memory_mb)


def _score(host, allocation, touched, policy, workloads, before, vcpus,
           memory_mb):
    # ``before`` holds the host's fragmentation across the candidates of
    # one host.
    after = _after(touched, allocation)
    if policy == SPREAD:
        if not after:
            return 0.0
        return -sum(g.used_share for g in after.values()) / len(after)
    if before[0] is None:
        before[0] = workloads.fragmentation(host)
    gpus = [after.get(address, gpu) for address, gpu in host.gpus.items()]
    rise = workloads.fragmentation(host, gpus, vcpus, memory_mb) - before[0]
    fill = (sum(g.used_share for g in touched) / len(touched)
            if touched else 0.0)
    return -rise + _FULLNESS_TIE_BREAK * fill


def has_room(host, allocation):
    """Whether every provider of ``allocation`` still has the units free
    (False once earlier instances of a multi-create took them).
    """
    for uuid, units in allocation.items():
        provider = host.provider(uuid)
        if provider is not None and provider.capacity - provider.used < units:
            return False
    return True


def affinity_rank(host, allocation, link_policy, numa_policy, max_nodes):
    """0 to 2: how many preferred affinities the allocation honours; -1
    when the view says it no longer has room.
    """
    return _affinity_rank(host, allocation, gpus_of(host, allocation),
                          link_policy, numa_policy, max_nodes)


def _affinity_rank(host, allocation, touched, link_policy, numa_policy,
                   max_nodes):
    if not has_room(host, allocation):
        return -1
    rank = 0
    if link_policy != 'none' and _link_fit(touched):
        rank += 1
    if numa_policy != 'none' and _numa_fit(touched, max_nodes):
        rank += 1
    return rank


def rank_allocations(host, allocations, policy, workloads,
                     link_policy='none', numa_policy='none',
                     max_numa_nodes=None, vcpus=0, memory_mb=0):
    """``(rank, score)`` per allocation, best sortable by ``max``.

    The rank counts honoured affinities (see :func:`affinity_rank`); the
    score is :func:`candidate_score`.
    """
    before = [None]
    ranks = []
    for allocation in allocations:
        touched = gpus_of(host, allocation)
        ranks.append((
            _affinity_rank(host, allocation, touched, link_policy,
                           numa_policy, max_numa_nodes),
            _score(host, allocation, touched, policy, workloads, before,
                   vcpus, memory_mb)))
    return ranks


def order(allocations, ranks):
    """Indexes of ``allocations`` best first; ties keep their order."""
    return sorted(range(len(allocations)), key=lambda i: ranks[i],
                  reverse=True)


def host_score(host, best_rank, policy):
    """Weight of a host whose best allocation has ``best_rank``.

    ``pack``: the best placement score (least rise in fragmentation, in
    GPUs) plus 0.03 times the host's fullness, so of the hosts where the
    request strands least GPU share, the fullest wins; stranding 0.03 GPU
    more outweighs a whole host's fullness. ``spread``: minus the
    host's fullness, the placement score only breaking ties, so the
    emptiest host wins.
    """
    rank, score = best_rank
    fill = host.used_share
    if policy == SPREAD:
        base = -fill + _FULLNESS_TIE_BREAK * score
    else:
        base = score + _HOST_FULLNESS * fill
    return AFFINITY_BONUS * rank + base
