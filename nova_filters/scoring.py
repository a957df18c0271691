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
:func:`nova_filters.gpu_view.gpu_allocation`).

Fragmentation
-------------
Following the idea of FGD (Weng et al., "Beware of Fragmentation",
USENIX ATC 2023), a host's fragmentation is the GPU capacity that typical
requests can no longer use:

    fragmentation(host) = sum over workloads w of weight(w) *
                          sum over GPUs g where w does not fit of free(g)

``free(g)`` is the free share of GPU ``g`` (0..1, see ``unit_share``).
The typical workloads (:func:`default_workloads`) are one unit of every
GPU resource class in the view, a whole idle GPU (for the largest MIG
profile, a full-GPU VF or a re-layout) and, where GPUs are linked, a whole
idle NVLink clique or xGMI hive. Packing picks the placement that raises
fragmentation least, then the fullest GPU: a request lands on a GPU that
is already in use rather than on an idle one, and on an idle GPU of a
clique that is already broken rather than on one of an intact clique.

MIG layouts are fixed by the operator (the MIG driver reports the GPU
instances that exist), so geometry shows here only as which existing
instances are taken; keeping idle GPUs idle keeps them free for a new
layout or a 7g instance.

Affinity
--------
An allocation on several physical GPUs fits a link domain when all of them
carry the same NVLink clique or xGMI hive trait; it fits NUMA when its GPUs
sit on no more host NUMA nodes than the instance has NUMA cells.
"""

import dataclasses

from nova_filters import gpu_view

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


@dataclasses.dataclass(frozen=True)
class Workload:
    """A typical request: ``units`` of ``resource_class`` (kind
    ``slice``), a whole idle GPU or a whole idle link domain.
    """
    kind: str
    weight: float
    resource_class: str | None = None
    units: int = 1


def default_workloads(view):
    """Equally weighted typical requests for the hosts of ``view``."""
    kinds = [(SLICE, rc) for rc in sorted(view.resource_classes)]
    kinds.append((WHOLE_GPU, None))
    if view.linked:
        kinds.append((WHOLE_LINK_DOMAIN, None))
    weight = 1.0 / len(kinds)
    return tuple(Workload(kind=kind, weight=weight, resource_class=rc)
                 for kind, rc in kinds)


def fits(workload, host, gpu):
    """Whether ``workload`` could still be placed on ``gpu`` of ``host``."""
    return _fits(workload, gpu, gpu.link_domain in host.idle_domains)


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


def _gpu_fragmentation(gpu, workloads, domain_idle):
    free = 1.0 - gpu.used_share
    if free <= 0.0:
        return 0.0
    return free * sum(w.weight for w in workloads
                      if not _fits(w, gpu, domain_idle))


def gpu_fragmentation(host, gpu, workloads):
    """Free share of ``gpu`` times the weight of workloads that cannot use
    it.
    """
    return _gpu_fragmentation(gpu, workloads,
                              gpu.link_domain in host.idle_domains)


def fragmentation(host, workloads):
    """GPU capacity of ``host`` (in GPUs) that ``workloads`` cannot use."""
    return sum(gpu_fragmentation(host, gpu, workloads)
               for gpu in host.gpus.values())


def fragmentation_rise(host, allocation, workloads, _before=None):
    """``fragmentation(host with allocation) - fragmentation(host)``.

    Computed on the GPUs the allocation can change only: those it touches
    and, when it breaks an idle link domain, the domain's other GPUs.
    ``_before`` caches per-GPU fragmentation of ``host`` across calls.
    """
    touched = gpus_of(host, allocation)
    return _rise(host, touched, _after(touched, allocation), workloads,
                 {} if _before is None else _before)


def _after(touched, allocation):
    after = {}
    for gpu in touched:
        providers = [
            dataclasses.replace(p, used=p.used + allocation[p.uuid])
            if p.uuid in allocation else p for p in gpu.providers]
        after[gpu.address] = gpu_view.physical_gpu(gpu.address, providers)
    return after


def _rise(host, touched, after, workloads, before_cache):
    rise = 0.0
    broken = set()
    idle_domains = host.idle_domains
    for gpu in touched:
        before = before_cache.get(gpu.address)
        if before is None:
            before = _gpu_fragmentation(gpu, workloads,
                                        gpu.link_domain in idle_domains)
            before_cache[gpu.address] = before
        new = after[gpu.address]
        still_idle = (gpu.link_domain in idle_domains and new.is_idle)
        rise += _gpu_fragmentation(new, workloads, still_idle) - before
        if gpu.link_domain in idle_domains and not new.is_idle:
            broken.add(gpu.link_domain)
    if broken:
        domain_weight = sum(w.weight for w in workloads
                            if w.kind == WHOLE_LINK_DOMAIN)
        domains = host.link_domains()
        for domain in broken:
            for mate in domains[domain]:
                if mate.address not in after:
                    rise += domain_weight * (1.0 - mate.used_share)
    return rise


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


def candidate_score(host, allocation, policy, workloads, _before=None):
    """How good it is to put ``allocation`` on ``host`` (higher better).

    ``pack``: minus the rise in fragmentation, then the fullest GPU.
    ``spread``: minus the fullness of the touched GPUs once placed.
    """
    touched = gpus_of(host, allocation)
    return _score(host, allocation, touched, policy, workloads,
                  {} if _before is None else _before)


def _score(host, allocation, touched, policy, workloads, before_cache):
    if not touched:
        return 0.0
    after = _after(touched, allocation)
    if policy == SPREAD:
        return -sum(g.used_share for g in after.values()) / len(after)
    before_fill = sum(g.used_share for g in touched) / len(touched)
    rise = _rise(host, touched, after, workloads, before_cache)
    return -rise + _FULLNESS_TIE_BREAK * before_fill


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
                     max_numa_nodes=None):
    """``(rank, score)`` per allocation, best sortable by ``max``.

    The rank counts honoured affinities (see :func:`affinity_rank`); the
    score is :func:`candidate_score`.
    """
    before_cache = {}
    ranks = []
    for allocation in allocations:
        touched = gpus_of(host, allocation)
        ranks.append((
            _affinity_rank(host, allocation, touched, link_policy,
                           numa_policy, max_numa_nodes),
            _score(host, allocation, touched, policy, workloads,
                   before_cache)))
    return ranks


def order(allocations, ranks):
    """Indexes of ``allocations`` best first; ties keep their order."""
    return sorted(range(len(allocations)), key=lambda i: ranks[i],
                  reverse=True)


def host_score(host, best_rank, policy):
    """Weight of a host whose best allocation has ``best_rank``.

    ``pack``: the best placement score (least fragmentation) plus the
    host's fullness, so the fullest host that fits well wins. ``spread``:
    minus the host's fullness, the placement score only breaking ties, so
    the emptiest host wins.
    """
    rank, score = best_rank
    fill = host.used_share
    if policy == SPREAD:
        base = -fill + _FULLNESS_TIE_BREAK * score
    else:
        base = score + fill
    return AFFINITY_BONUS * rank + base
