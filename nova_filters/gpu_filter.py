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
"""GpuPartitionFilter: NVLink/xGMI and NUMA affinity of GPU requests.

Enable it in nova.conf::

    [filter_scheduler]
    available_filters = nova.scheduler.filters.all_filters
    available_filters = nova_filters.gpu_filter.GpuPartitionFilter
    enabled_filters = ...,GpuPartitionFilter

For a request whose candidate spans several physical GPUs (several request
groups, or several units), ``link_affinity=required`` keeps only the
candidates whose GPUs share one NVLink clique or xGMI hive, and
``numa_affinity=required`` (instances with a NUMA topology) those whose GPUs
sit on no more host NUMA nodes than the instance has cells. A host with no
candidate left fails. ``preferred`` keeps every candidate and only orders
them; ``none`` ignores the topology.

It also orders the candidates (pack or spread, see
:mod:`nova_filters.ranking`) when the weigher will not: when a single host
is left (Nova then runs no weigher) or GpuPartitionWeigher is not enabled.
List it last in ``enabled_filters``, so no later filter leaves a single
host unordered. Rebuilds (no allocation candidates) pass untouched.
"""

from oslo_log import log as logging

import nova.conf
from nova.scheduler import filters
from nova.scheduler import utils as scheduler_utils

from nova_filters import allocations
from nova_filters import candidates as candidates_mod
from nova_filters import conf
from nova_filters import policy
from nova_filters import request_view

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)


def weigher_enabled():
    """Whether GpuPartitionWeigher is among Nova's weight classes."""
    return any(path.endswith('GpuPartitionWeigher')
               for path in CONF.filter_scheduler.weight_classes)


class GpuPartitionFilter(filters.BaseHostFilter):
    """Keep GPU candidates that honour required link and NUMA affinity."""

    RUN_ON_REBUILD = False

    def __init__(self, views=None, weigher_runs=None):
        self._views = views or request_view.VIEWS
        self._views.start()
        # None: read Nova's weight_classes (see weigher_enabled).
        self._weigher_runs = weigher_runs

    def filter_all(self, filter_obj_list, spec_obj):
        hosts = list(filter_obj_list)
        if scheduler_utils.request_is_rebuild(spec_obj):
            return hosts
        try:
            return self._filter(hosts, spec_obj)
        except Exception:
            # Never break scheduling, never drop a required constraint:
            # hosts whose required affinity cannot be checked fail.
            LOG.exception('GpuPartitionFilter could not judge this request; '
                          'hosts with a required GPU affinity fail, the '
                          'others pass.')
            return [host for host in hosts
                    if not requires_affinity(host, spec_obj)]

    def host_passes(self, host_state, spec_obj):
        # Nova calls filter_all; this serves callers of the per-host API.
        return bool(self.filter_all([host_state], spec_obj))

    def _filter(self, hosts, spec_obj):
        units = allocations.gpu_units(hosts)
        if not units:
            return hosts
        # Built here even when the weigher does the rest: the answer Nova
        # just received is taken while it is fresh (see summary_source).
        view = self._views.view_for(spec_obj, hosts)
        if view is None:
            return hosts
        # Ordering is the weigher's job, except when it will not run:
        # Nova weighs only when two hosts or more are left.
        weigher_runs = (weigher_enabled() if self._weigher_runs is None
                        else self._weigher_runs)
        reorder = len(hosts) == 1 or not weigher_runs
        if not reorder and units < 2:
            # One GPU unit cannot span GPUs: no affinity to enforce.
            return hosts
        workloads = self._views.workloads(spec_obj, view)
        return [host for host in hosts
                if self._keep(host, spec_obj, view, workloads, reorder)]

    def _keep(self, host_state, spec_obj, view, workloads, reorder):
        if not host_state.allocation_candidates:
            return True
        try:
            mine = candidates_mod.HostCandidates(
                host_state, spec_obj, view,
                in_flight=self._views.in_flight(
                    spec_obj, view.host(host_state.uuid)) if reorder
                else None)
            if not mine.prune():
                LOG.debug('GpuPartitionFilter: no candidate of host %s '
                          'honours the required GPU affinity.',
                          host_state.host)
                return False
            ranked = mine.ranking(workloads) if reorder else None
        except Exception:
            return self._keep_unordered(host_state, spec_obj, view)
        if ranked is not None:
            mine.apply(ranked)
            self._views.note_first(spec_obj, host_state)
        return True

    def _keep_unordered(self, host_state, spec_obj, view):
        """After ordering failed: prune only, or fail the host when even
        that fails and it has a required affinity.
        """
        if not requires_affinity(host_state, spec_obj):
            LOG.exception('GpuPartitionFilter could not order the GPU '
                          'candidates of host %s; Nova\'s order is kept.',
                          host_state.host)
            return True
        try:
            kept = candidates_mod.HostCandidates(
                host_state, spec_obj, view).prune()
        except Exception:
            LOG.exception('GpuPartitionFilter could not check the required '
                          'GPU affinity of host %s; the host fails.',
                          host_state.host)
            return False
        LOG.exception('GpuPartitionFilter could not order the GPU '
                      'candidates of host %s; they are only pruned.',
                      host_state.host)
        return kept


def requires_affinity(host_state, spec_obj):
    """Whether a required link or NUMA affinity applies to the request on
    this host: its candidates span GPUs and a policy says ``required``.
    True when that cannot be told (unknown counts as required).
    """
    try:
        if allocations.gpu_units([host_state]) < 2:
            return False
        # Only the affinities: an unreadable pack/spread policy loses a
        # preference, never a host.
        link = policy.resolve(policy.LINK_AFFINITY, host_state, spec_obj)
        numa = policy.resolve(policy.NUMA_AFFINITY, host_state, spec_obj)
        return link == conf.REQUIRED or (
            numa == conf.REQUIRED
            and policy.max_numa_nodes(spec_obj) is not None)
    except Exception:
        return True
