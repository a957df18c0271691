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
"""Which allocations of one host honour required affinity, and their order.

Pure functions over a :class:`~nova_filters.gpu_view.HostGpus` and a list
of allocations (``{provider_uuid: units}``): no Nova, nothing changed in
place. :func:`required_fit` says whether an allocation honours a ``required``
link or NUMA affinity; :func:`rank` returns the order, best first, that
GpuPartitionFilter and GpuPartitionWeigher apply to a host's allocation
candidates (Nova claims the first). The packing simulator calls the same
functions.
"""

import dataclasses

from nova_filters import conf
from nova_filters import scoring


@dataclasses.dataclass(frozen=True)
class Ranking:
    """``order``: indexes of the allocations, best first; ``best``: the
    ``(rank, score)`` of the first (see
    :func:`nova_filters.scoring.rank_allocations`).
    """
    order: list
    best: tuple


def required_fit(host, allocation, link, numa, max_nodes):
    """Whether ``allocation`` honours the ``required`` ones among the
    ``link`` and ``numa`` policies.
    """
    if link == conf.REQUIRED and not scoring.link_fit(host, allocation):
        return False
    if numa == conf.REQUIRED and not scoring.numa_fit(
            host, allocation, max_nodes):
        return False
    return True


def rank(host, allocations, placement, workloads, link=conf.NONE,
         numa=conf.NONE, max_nodes=None, vcpus=0, memory_mb=0):
    """The :class:`Ranking` of ``allocations`` on ``host`` under policy
    ``placement`` (pack or spread), the preferred affinities first; ties
    keep their order.
    """
    ranks = scoring.rank_allocations(
        host, allocations, placement, workloads, link_policy=link,
        numa_policy=numa, max_numa_nodes=max_nodes, vcpus=vcpus,
        memory_mb=memory_mb)
    order = scoring.order(allocations, ranks)
    return Ranking(order=order, best=ranks[order[0]] if order else None)
