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
"""GpuPartitionWeigher: pack or spread GPU slices across and inside hosts.

Enable it in nova.conf::

    [filter_scheduler]
    weight_classes = nova.scheduler.weights.all_weighers,
        nova_filters.gpu_weigher.GpuPartitionWeigher

Each host is weighed by the best placement of the request on it
(:func:`nova_filters.scoring.host_score`). ``pack`` prefers the host where
the request strands the least GPU share (the rise in fragmentation, in
GPUs: free GPU capacity the typical requests can no longer use, by its
slices or by the host's CPU and memory left), and among hosts within
0.03 GPU of that, the fullest: GPU share stranded is lost for good,
while fullness only keeps idle hosts idle for large requests. ``spread``
prefers the emptiest host. The host's ``allocation_candidates`` are
reordered so that the candidate Nova claims is that best placement: the
fullest GPU that fits (pack) or the emptiest (spread). A request without
GPU, under ``pack``, prefers the host whose GPUs its CPU and memory strand
least, then the one with the fullest GPUs; otherwise hosts and requests
without GPU get weight 0.

The multiplier is ``[gpu_partitions_scheduler] weight_multiplier``,
overridable by the aggregate metadata key
``gpu_partitions_weight_multiplier``.
"""

import heapq

from oslo_log import log as logging

from nova.scheduler import weights

from nova_filters import allocations
from nova_filters import candidates as candidates_mod
from nova_filters import conf
from nova_filters import policy
from nova_filters import request_view
from nova_filters import scoring

LOG = logging.getLogger(__name__)

# Hosts whose candidates are scored in full for a single-GPU request.
FULLY_SCORED_HOSTS = 10
# Requests without GPU: between hosts that strand as much GPU capacity,
# the one with the fullest GPUs.
_FULLER_GPUS_TIE_BREAK = 0.1
# Puts the other hosts below any fully scored one (host_score is at least
# -AFFINITY_BONUS - 2).
_BELOW_SCORED = 4 * scoring.AFFINITY_BONUS


class GpuPartitionWeigher(weights.BaseHostWeigher):

    def __init__(self, views=None):
        self._views = views or request_view.VIEWS
        self._views.start()
        # The option, read once per request by weigh_objects: Nova then
        # asks weight_multiplier of every host (thousands).
        self._default_multiplier = None

    def weight_multiplier(self, host_state):
        return policy.weight_multiplier(host_state,
                                        self._default_multiplier)

    def _weigh_object(self, host_state, weight_properties):
        # Weights need the whole request's view: see weigh_objects.
        return 0.0

    def weigh_objects(self, weighed_obj_list, weight_properties):
        hosts = [weighed.obj for weighed in weighed_obj_list]
        try:
            self._default_multiplier = (
                conf.CONF.gpu_partitions_scheduler.weight_multiplier)
        except ValueError:
            # A bad value in nova.conf (oslo.config reads it only now)
            # must not fail every request: this weigher steps aside.
            LOG.exception('GpuPartitionWeigher: [gpu_partitions_scheduler] '
                          'weight_multiplier cannot be read; the weigher '
                          'does nothing until it is fixed.')
            self._default_multiplier = 0.0
            return [0.0] * len(hosts)
        spec_obj = weight_properties
        try:
            view = self._views.view_for(spec_obj, hosts)
        except Exception:
            LOG.exception('GpuPartitionWeigher: no GPU view; neutral '
                          'weights.')
            view = None
        if view is None or not view.usage_known:
            return [0.0] * len(hosts)
        try:
            return self._weigh_all(hosts, spec_obj, view)
        except Exception:
            LOG.exception('GpuPartitionWeigher: neutral weights.')
            return [0.0] * len(hosts)

    def _weigh_all(self, hosts, spec_obj, view):
        units = allocations.gpu_units(hosts)
        workloads = self._views.workloads(spec_obj, view)
        placement_of = policy.resolver(policy.POLICY, spec_obj)
        if not units:
            return [self._weigh_without_gpu(host, placement_of(host), view,
                                            workloads)
                    for host in hosts]
        # Every host gets a cheap weight from its fullness; the best
        # FULLY_SCORED_HOSTS of them (all hosts for a request that can
        # span GPUs, where affinity decides) are scored in full and get
        # their candidates ordered. Nova claims on the first host, or on
        # the next ones when a claim fails.
        # One pass over the hosts (thousands): index of each host the view
        # knows -> its multiplier.
        rough = []
        multipliers = {}
        fill_of = view.fill
        weight_multiplier = policy.weight_multiplier
        default_multiplier = self._default_multiplier
        for i, host in enumerate(hosts):
            fill = fill_of(host.uuid)
            if fill is None:
                rough.append(None)
                continue
            rough.append(fill if placement_of(host) == scoring.PACK
                         else -fill)
            multipliers[i] = weight_multiplier(host, default_multiplier)
        known = list(multipliers)
        if units < 2:
            # As sorted(..., reverse=True)[:FULLY_SCORED_HOSTS], ties in
            # host order, without sorting thousands of hosts.
            known = heapq.nlargest(FULLY_SCORED_HOSTS, known,
                                   key=lambda i: rough[i] * multipliers[i])
        weights = [0.0 if value is None else value - _BELOW_SCORED
                   for value in rough]
        for i in known:
            weights[i] = self._weigh(hosts[i], spec_obj, view, workloads)
        if known:
            best = max(known, key=lambda i: weights[i] * multipliers[i])
            self._views.note_best_host(spec_obj, hosts[best].uuid)
        return weights

    def _weigh(self, host_state, spec_obj, view, workloads):
        try:
            mine = candidates_mod.HostCandidates(
                host_state, spec_obj, view,
                in_flight=self._views.in_flight(
                    spec_obj, view.host(host_state.uuid)))
            ranked = mine.ranking(workloads)
        except Exception:
            LOG.exception('GpuPartitionWeigher could not weigh host %s; '
                          'neutral weight.', host_state.host)
            return 0.0
        if ranked is None:
            return 0.0
        mine.apply(ranked)
        self._views.note_first(spec_obj, host_state)
        return scoring.host_score(mine.host, ranked.best, mine.policy)

    @staticmethod
    def _weigh_without_gpu(host_state, placement, view, workloads):
        # Minus the GPU capacity the request's CPU and memory strand. Most
        # hosts strand nothing for the typical workloads now; of those,
        # the one whose GPUs are fullest has least GPU capacity to strand
        # later, and a host without GPUs counts as full.
        if (not host_state.allocation_candidates
                or placement != scoring.PACK):
            return 0.0
        host = view.host(host_state.uuid)
        if host is None:
            return _FULLER_GPUS_TIE_BREAK
        vcpus, memory_mb = allocations.host_resources(
            host_state.allocation_candidates[0])
        return -(workloads.fragmentation(host, vcpus=vcpus,
                                         memory_mb=memory_mb)
                 - workloads.fragmentation(host)) + (
                     _FULLER_GPUS_TIE_BREAK * host.used_share)
