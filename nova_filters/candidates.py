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
"""One host's allocation candidates, read once against the request's view.

Nova claims ``host_state.allocation_candidates[0]`` of the chosen host, so
the order of that list chooses the GPU inside the host. This is the one
place that changes that list: :meth:`HostCandidates.prune` (the filter,
for a required affinity) and :meth:`HostCandidates.apply` (the order
:mod:`nova_filters.ranking` returns; the filter when it orders, the
weigher otherwise).
"""

from nova_filters import allocations as allocations_mod
from nova_filters import conf
from nova_filters import policy
from nova_filters import ranking


class HostCandidates:
    """``host_state``'s candidates as allocations on ``host`` (its
    HostGpus, with ``in_flight`` units of concurrent requests counted as
    used), and the policies that apply.
    """

    def __init__(self, host_state, spec_obj, view, in_flight=None):
        self.host_state = host_state
        self.view = view
        self.policy, self.link, self.numa = policy.for_host(
            host_state, spec_obj)
        self.max_nodes = policy.max_numa_nodes(spec_obj)
        host = view.host(host_state.uuid)
        if host is not None and in_flight:
            host = allocations_mod.host_with_allocation(host, in_flight)
        self.host = host
        self._allocations = None

    @property
    def known(self):
        """Whether the view knows the host and it has candidates."""
        return (self.host is not None
                and bool(self.host_state.allocation_candidates))

    @property
    def allocations(self):
        if self._allocations is None:
            self._allocations = [
                allocations_mod.gpu_allocation(self.view, candidate)
                for candidate in self.host_state.allocation_candidates]
        return self._allocations

    def prune(self):
        """Drop the candidates that break a ``required`` affinity; False
        when none is left.

        A required affinity is never assumed to hold: a candidate whose
        GPU units the view cannot all place on this host (the host or a
        provider missing from Placement's answer or unreadable, a
        candidate that cannot be read) is dropped too.
        """
        candidates = self.host_state.allocation_candidates
        if not candidates or not self.requires_affinity:
            return bool(candidates)
        # Every candidate of a request takes the same GPU units.
        units = allocations_mod.gpu_units([self.host_state])
        if units < 2:
            return True
        host = self.host
        if host is None:
            keep = []
        else:
            index = host.gpu_of_provider
            keep = [i for i, allocation in enumerate(self.allocations)
                    if sum(allocation.values()) == units
                    and all(uuid in index for uuid in allocation)
                    and ranking.required_fit(host, allocation, self.link,
                                             self.numa, self.max_nodes)]
        if len(keep) != len(candidates):
            self._reorder(keep)
        return bool(keep)

    @property
    def requires_affinity(self):
        """Whether a ``required`` affinity applies to this request."""
        return self.link == conf.REQUIRED or (
            self.numa == conf.REQUIRED and self.max_nodes is not None)

    def ranking(self, workloads):
        """The :class:`~nova_filters.ranking.Ranking` of the candidates,
        or None when there is nothing to rank (usage unknown, no GPU
        candidate the view knows).
        """
        if (not self.known or not self.view.usage_known
                or not any(self.allocations)):
            return None
        vcpus, memory_mb = allocations_mod.host_resources(
            self.host_state.allocation_candidates[0])
        return ranking.rank(
            self.host, self.allocations, self.policy, workloads,
            link=self.link, numa=self.numa, max_nodes=self.max_nodes,
            vcpus=vcpus, memory_mb=memory_mb)

    def apply(self, ranked):
        """Put the candidates in the order of ``ranked``."""
        self._reorder(ranked.order)

    def _reorder(self, indexes):
        allocations = self.allocations
        candidates = self.host_state.allocation_candidates
        candidates[:] = [candidates[i] for i in indexes]
        self._allocations = [allocations[i] for i in indexes]
