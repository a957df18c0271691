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
"""Order and prune the allocation candidates of one host.

Nova claims ``host_state.allocation_candidates[0]`` of the chosen host, so
the order of that list chooses the GPU inside the host. The filter and the
weigher both call :func:`arrange`: the filter because it always runs (Nova
skips weighers when one host is left), the weigher because it runs last.
"""

import dataclasses

from nova_filters import conf
from nova_filters import gpu_view
from nova_filters import policy
from nova_filters import scoring


@dataclasses.dataclass(frozen=True)
class Arranged:
    """What :func:`arrange` found for a host.

    ``best`` is the ``(rank, score)`` of the first candidate (None when no
    candidate takes a GPU the view knows); ``policy`` the pack/spread
    policy that applied; ``host`` the host's GPUs.
    """
    best: tuple | None
    policy: str
    host: gpu_view.HostGpus | None


def policies(host_state, spec_obj):
    return (policy.resolve(policy.POLICY, host_state, spec_obj),
            policy.resolve(policy.LINK_AFFINITY, host_state, spec_obj),
            policy.resolve(policy.NUMA_AFFINITY, host_state, spec_obj))


def arrange(host_state, spec_obj, view, workloads, prune, reorder=True,
            in_flight=None):
    """Reorder ``host_state.allocation_candidates`` best first.

    With ``prune``, candidates breaking a ``required`` affinity are
    removed first. With ``reorder``, and when the view knows usage, the
    rest are sorted best first. ``in_flight`` (``{provider_uuid: units}``)
    is counted as used: what concurrent requests are about to claim on
    this host.
    """
    placement, link, numa = policies(host_state, spec_obj)
    host = view.host(host_state.uuid)
    candidates = host_state.allocation_candidates
    if host is None or not candidates:
        return Arranged(best=None, policy=placement, host=host)
    prune = prune and conf.REQUIRED in (link, numa)
    if not prune and not reorder:
        return Arranged(best=None, policy=placement, host=host)
    if in_flight:
        host = gpu_view.host_with_allocation(host, in_flight)
    max_nodes = policy.max_numa_nodes(spec_obj)
    allocations = [gpu_view.gpu_allocation(view, c) for c in candidates]
    if prune:
        keep = [i for i, allocation in enumerate(allocations)
                if _required_fit(host, allocation, link, numa, max_nodes)]
        if len(keep) != len(candidates):
            candidates[:] = [candidates[i] for i in keep]
            allocations = [allocations[i] for i in keep]
        if not candidates:
            return Arranged(best=None, policy=placement, host=host)
    if not reorder or not view.usage_known or not any(allocations):
        return Arranged(best=None, policy=placement, host=host)
    vcpus, memory_mb = gpu_view.host_resources(candidates[0])
    ranks = scoring.rank_allocations(
        host, allocations, placement, workloads, link_policy=link,
        numa_policy=numa, max_numa_nodes=max_nodes, vcpus=vcpus,
        memory_mb=memory_mb)
    best_first = scoring.order(allocations, ranks)
    candidates[:] = [candidates[i] for i in best_first]
    return Arranged(best=ranks[best_first[0]], policy=placement, host=host)


def _required_fit(host, allocation, link, numa, max_nodes):
    if link == conf.REQUIRED and not scoring.link_fit(host, allocation):
        return False
    if numa == conf.REQUIRED and not scoring.numa_fit(
            host, allocation, max_nodes):
        return False
    return True
