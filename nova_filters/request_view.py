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
"""The GPU view of one scheduling request, shared by filter and weigher.

The pieces, in the order a request meets them:

1. :mod:`nova_filters.summary_source`: the provider summaries (Nova's own
   answer, or one extra query), chosen when the plugins load;
2. :mod:`nova_filters.provider_summaries`: the GPU view, built once per
   request as plain data;
3. :mod:`nova_filters.request_state`: the view and workload mix kept for
   the other plugin and the next instances of a multi-create;
4. :mod:`nova_filters.reservations`: what concurrent requests are about
   to claim.

:class:`RequestViews` ties them together for the filter and the weigher.

A request without GPU gets a view only from the scheduler's own answer
(``weigh_requests_without_gpu``; the weigher then weighs the GPU capacity
its CPU and memory would strand), never from an extra Placement request.

When Placement cannot be read or answers oddly, one warning is logged for
the request and the view is rebuilt from the remembered topology, with
``usage_known`` False: the filter still enforces affinity, the weigher
gives neutral weights.
"""

import time

from oslo_log import log as logging

from nova_filters import allocations
from nova_filters import conf
from nova_filters import provider_summaries
from nova_filters import request_state
from nova_filters import reservations
from nova_filters import summary_source
from nova_filters import topology as topology_mod
from nova_filters import workload_mix

LOG = logging.getLogger(__name__)


class RequestViews:
    """Per-request GPU views (see module doc).

    ``query`` is the function asking Placement, replaceable in tests and
    the simulator; ``capture`` lets the view reuse the scheduler's own
    answer; ``query_without_gpu`` lets requests without GPU use ``query``
    (only where it is free).
    """

    def __init__(self, query=summary_source.query_provider_summaries,
                 topology=None, clock=time.monotonic, capture=False,
                 history=None, query_without_gpu=False):
        self._clock = clock
        self.source = summary_source.SummarySource(
            query=query, capture=capture,
            query_without_gpu=query_without_gpu)
        self.history = history or workload_mix.RequestHistory()
        self.states = request_state.RequestStates(clock)
        self.reservations = reservations.Reservations(
            clock, unread_age=(summary_source.unread_age if capture
                               else lambda: None))
        self.topology = topology or topology_mod.TopologyCache(
            lambda: conf.CONF.gpu_partitions_scheduler.topology_cache_ttl,
            clock=clock)

    def start(self):
        """Called when Nova loads a plugin: see SummarySource.start."""
        self.source.start()

    def view_for(self, spec_obj, host_states):
        """The request's view, or None when it takes no GPU."""
        host_states = list(host_states)
        state = self.states.get(spec_obj)
        if state is None:
            if allocations.gpu_units(host_states):
                state = self._build(spec_obj, host_states)
                self.history.record(state.view, host_states)
            elif (conf.CONF.gpu_partitions_scheduler
                    .weigh_requests_without_gpu):
                state = self._build_without_gpu(spec_obj, host_states)
            else:
                return None
        elif state.is_next_instance(spec_obj):
            state.account_claims(spec_obj, host_states)
        return state.view

    def workloads(self, spec_obj, view):
        """The request's :class:`~nova_filters.scoring.WorkloadMix` (one
        per request, shared by the filter and the weigher).
        """
        state = self.states.get(spec_obj)
        if state is None:
            return self.history.mix(view)
        if state.workloads is None:
            state.workloads = self.history.mix(view)
        return state.workloads

    def note_first(self, spec_obj, host_state):
        """Remember the candidate a plugin put first on ``host_state``:
        the one Nova claims for the next instance, and a reservation.
        """
        state = self.states.get(spec_obj)
        if state is not None and host_state.allocation_candidates:
            state.first_candidate[host_state.uuid] = (
                host_state.allocation_candidates[0])
            self._reserving(self.reservations.reserve, spec_obj, host_state)

    def note_best_host(self, spec_obj, root):
        """The weigher's best host: see Reservations.keep_only."""
        self._reserving(self.reservations.keep_only, spec_obj, root)

    def in_flight(self, spec_obj, host):
        """``{provider_uuid: units}`` other requests are about to claim
        on ``host`` (a HostGpus): see :mod:`nova_filters.reservations`.
        """
        return self._reserving(self.reservations.pending, spec_obj, host,
                               default={})

    @staticmethod
    def _reserving(method, *args, default=None):
        # Reservations only steer requests apart: whatever fails in them,
        # the request is scheduled as if there were none.
        try:
            return method(*args)
        except Exception:
            LOG.exception('GPU partition scheduling: in-flight reservations '
                          'failed; this request does without them.')
            return default

    def _build_without_gpu(self, spec_obj, host_states):
        # Quietly neutral when the answer is not at hand: most requests of
        # a cloud take no GPU, and they must not cost a Placement query.
        roots = {host.uuid for host in host_states}
        view = None
        try:
            summaries, _ = self.source.summaries(spec_obj, host_states, roots,
                                                 wants_gpu=False)
            if summaries is not None:
                view = provider_summaries.parse(summaries, roots=roots,
                                                topology=self.topology)
        except Exception as error:
            LOG.debug('GPU partition scheduling: no GPU usage for a '
                      'request without GPU (%s).', error)
        return self._keep(spec_obj, host_states, view)

    def _build(self, spec_obj, host_states):
        roots = {host.uuid for host in host_states}
        # Taken before asking: a claim seen after this may be missing from
        # the answer, so it keeps counting for this request (reservations);
        # a captured answer was asked for ``age`` seconds earlier.
        read_at = self._clock()
        self._reserving(self.reservations.read, spec_obj, read_at)
        try:
            summaries, age = self.source.summaries(spec_obj, host_states,
                                                   roots)
            if age:
                read_at -= age
                self._reserving(self.reservations.read, spec_obj, read_at)
            view = provider_summaries.parse(summaries, roots=roots,
                                            topology=self.topology)
        except Exception as error:
            # Never break scheduling: neutral weights, affinity from the
            # remembered topology, and one warning for this request.
            LOG.warning('GPU partition scheduling: cannot read GPU usage '
                        'from Placement (%s); GPU weights are neutral for '
                        'this request.', error)
            view = self.topology.view_of(roots)
        return self._keep(spec_obj, host_states, view)

    def _keep(self, spec_obj, host_states, view):
        return self.states.add(
            spec_obj, host_states, view,
            conf.CONF.gpu_partitions_scheduler.request_view_ttl)


# One per scheduler process, shared by the filter and the weigher.
VIEWS = RequestViews(capture=True)
