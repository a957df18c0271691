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
"""One scheduling decision, the way nova-scheduler makes it.

For each request: ask Placement for allocation candidates, give each
candidate host a ``nova.scheduler.host_manager.HostState`` with its
``allocation_candidates``, run the policy's filters through Nova's
``HostFilterHandler`` and its weighers through ``HostWeightHandler``,
and claim the first candidate of the best host (``host_subset_size`` 1).
The ``HostState`` objects are kept per host and updated after each claim
and release, as the resource tracker would.

What does not run: Nova's default filters (ComputeFilter,
ComputeCapabilitiesFilter, ImagePropertiesFilter, server-group filters)
judge service state, images and server groups, which the simulation keeps
constant; every host passes them.
"""

import logging
import uuid

from nova import objects
from nova.scheduler import filters as nova_filters_api
from nova.scheduler import weights as nova_weights

from gpu_partitions.simulator import host_state
from gpu_partitions.simulator import policies as policies_mod

objects.register_all()


class Scheduler:
    """Schedules tasks of one policy on one Placement (in-memory or
    real: anything with ``allocation_candidates(request)``, ``claim`` and
    ``release``).
    """

    def __init__(self, fleet, placement, policy, seed=0, workloads=(),
                 root_of=None):
        self.placement = placement
        self.policy = policy
        root_of = root_of or _default_root_of
        self.states = {}
        host_info = {}
        for host in fleet.hosts:
            root = root_of(host.name)
            # VCPU in thousandths of a core, as the trace gives them.
            self.states[root] = host_state.host_state(
                host.name, root, vcpus=host.cpu_milli,
                memory_mb=host.memory_mib)
            host_info[root] = (host.kind.name, host)
        self.context = policies_mod.RequestContext(host_info)
        self.filters, self.weighers = policy.build(
            self.context, seed, list(workloads))
        self.filter_handler = nova_filters_api.HostFilterHandler()
        self.weight_handler = nova_weights.HostWeightHandler()
        # Nova's handlers log every host list of every request at DEBUG;
        # over a replay of thousands of tasks that is noise that costs time.
        for name in ('nova.filters', 'nova.weights'):
            logging.getLogger(name).setLevel(logging.INFO)
        self._claims = {}

    def schedule(self, consumer, task, request):
        """Place ``task`` (asking ``request``); the claimed
        ``(root uuid, allocation request)`` or None (NoValidHost).
        """
        candidates, summaries = self.placement.allocation_candidates(
            request)
        if not candidates:
            return None
        by_root = {}
        for candidate in candidates:
            root = _root_of_candidate(candidate, summaries)
            by_root.setdefault(root, []).append(candidate)
        hosts = []
        for root, mine in by_root.items():
            state = self.states[root]
            state.allocation_candidates = list(mine)
            hosts.append(state)
        self.context.start(task, summaries)
        spec = _request_spec(task, dict(self.policy.extra_specs), consumer)
        hosts = self.filter_handler.get_filtered_objects(
            self.filters, hosts, spec)
        if not hosts:
            return None
        weighed = self.weight_handler.get_weighed_objects(
            self.weighers, hosts, spec)
        best = weighed[0].obj
        if not best.allocation_candidates:
            return None
        allocation = best.allocation_candidates[0]
        if not self.placement.claim(consumer, allocation):
            return None
        self._consume(best, task, +1)
        self._claims[consumer] = (best, task, allocation)
        return best.uuid, allocation

    def release(self, consumer):
        """Delete the consumer's allocation; the allocation request it
        had, or None.
        """
        claim = self._claims.pop(consumer, None)
        if claim is None:
            return None
        self.placement.release(consumer)
        self._consume(claim[0], claim[1], -1)
        return claim[2]

    @staticmethod
    def _consume(state, task, sign):
        state.vcpus_used += sign * task.cpu_milli
        state.free_ram_mb -= sign * task.memory_mib
        state.num_instances += sign


def _default_root_of(name):
    from gpu_partitions.simulator import placement
    return placement.provider_uuid(name)


def _root_of_candidate(candidate, summaries):
    for rp in candidate['allocations']:
        return summaries[rp]['root_provider_uuid']


def _request_spec(task, extra_specs, consumer):
    flavor = objects.Flavor(
        extra_specs=extra_specs, vcpus=max(1, task.cpu_milli // 1000),
        memory_mb=task.memory_mib, root_gb=0, ephemeral_gb=0, swap=0)
    spec = objects.RequestSpec(
        flavor=flavor, num_instances=1, scheduler_hints={},
        instance_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, str(consumer))),
        instance_group=None,
        numa_topology=None)
    spec.image = objects.ImageMeta.from_dict({'properties': {}})
    return spec
