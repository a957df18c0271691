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

Nova drops Placement's provider summaries before filters and weighers run,
and gives them no request context. The first of our plugins that runs for a
request builds a :class:`~nova_filters.gpu_view.GpuView` from provider
summaries and keeps it here, keyed on the ``RequestSpec`` object; the filter
and the weigher of that request, which Nova calls on the same thread, share
it. The summaries come from:

1. the scheduler's own answer (option ``reuse_scheduler_query``, default
   on): :func:`install_capture` wraps the ``get_allocation_candidates``
   method of Nova's process-wide report client so each answer's summaries
   are kept on the calling thread, where Nova runs the filters and weighers
   right after. No extra Placement request, no second JSON decode. This
   relies on Nova's report client, not on a documented plugin API, so
   anything unexpected falls back to
2. one extra ``GET /allocation_candidates`` for the same request
   (restricted to the host's tree when one host is left), whatever the
   number of hosts.

In a multi-create, Nova claims ``allocation_candidates[0]`` of the chosen
host after each instance and calls the plugins again with the same
``RequestSpec`` (and a new ``instance_uuid``). The host whose
``num_instances`` went up was claimed, so the candidate we put first on it
is added to the view instead of asking Placement again.

A request without GPU gets a view only from the scheduler's own answer
(``weigh_requests_without_gpu``; the weigher then weighs the GPU capacity
its CPU and memory would strand), never from an extra Placement request.

When Placement cannot be read or answers oddly, one warning is logged for
the request and the view is rebuilt from the remembered topology, with
``usage_known`` False: the filter still enforces affinity, the weigher
gives neutral weights.
"""

import collections
import functools
import threading
import time
import weakref

from oslo_log import log as logging

from nova_filters import conf
from nova_filters import gpu_view
from nova_filters import workload_mix
import placement_traits

LOG = logging.getLogger(__name__)


class PlacementReadError(Exception):
    """Placement gave no usable provider summaries."""


# An answer the scheduler fetched more than this long ago on the same
# thread belongs to an earlier request.
CAPTURE_SECONDS = 10.0
# Answers kept per thread: Nova's select_destinations asks Placement at
# most twice per request (the PCPU query and its VCPU fallback). Older
# answers are dropped when a new one comes, whether or not a plugin took
# them, so what nobody consumes stays bounded by design.
MAX_CAPTURED = 2

_captured = threading.local()
_install_lock = threading.Lock()


def _capturing(get_allocation_candidates):
    """Wrap the report client's method to keep the provider summaries of
    the last MAX_CAPTURED answers on the calling thread.
    """
    @functools.wraps(get_allocation_candidates)
    def wrapper(*args, **kwargs):
        answer = get_allocation_candidates(*args, **kwargs)
        try:
            if answer and isinstance(answer[1], dict):
                answers = getattr(_captured, 'answers', None)
                if answers is None:
                    answers = _captured.answers = collections.deque(
                        maxlen=MAX_CAPTURED)
                answers.append((time.monotonic(), answer[1]))
        except Exception:  # never let our bookkeeping fail Nova's query
            pass
        return answer
    wrapper.gpu_partitions_capture = True
    return wrapper


def install_capture():
    """Keep the summaries of the scheduler's own allocation-candidate
    queries (``reuse_scheduler_query``).

    Nova's scheduler asks Placement through the process-wide report client
    and runs filters and weighers on the same thread right after; wrapping
    that client's ``get_allocation_candidates`` lets the view reuse the
    answer instead of asking again. Returns False when the client cannot
    be had (the plugins then ask Placement themselves).
    """
    from nova.scheduler.client import report
    try:
        client = report.report_client_singleton()
    except Exception as error:
        LOG.debug('GPU partition scheduling: no report client to reuse '
                  '(%s); asking Placement once per request.', error)
        return False
    with _install_lock:
        current = client.get_allocation_candidates
        if not getattr(current, 'gpu_partitions_capture', False):
            client.get_allocation_candidates = _capturing(current)
    return True


def take_captured_summaries():
    """The provider summaries captured on this thread in the last
    CAPTURE_SECONDS, merged (newest wins), and forgotten; None when there
    are none.
    """
    answers = getattr(_captured, 'answers', None)
    if not answers:
        return None
    horizon = time.monotonic() - CAPTURE_SECONDS
    recent = [summaries for at, summaries in answers if at > horizon]
    answers.clear()
    if not recent:
        return None
    merged = {}
    for summaries in recent:
        merged.update(summaries)
    return merged


def query_provider_summaries(spec_obj, host_states):
    """Provider summaries of the request's allocation candidates: the one
    extra Placement request.
    """
    # Imported here: only nova-scheduler needs these, and the simulator
    # imports the rest of the package without them.
    from nova import context as nova_context
    from nova.scheduler.client import report
    from nova.scheduler import utils as scheduler_utils

    resources = scheduler_utils.ResourceRequest.from_request_spec(
        spec_obj, enable_pinning_translate=True)
    if len(host_states) == 1:
        root_group = resources.get_request_group(None)
        if root_group.resources and not root_group.in_tree:
            root_group.in_tree = host_states[0].uuid
    client = report.report_client_singleton()
    answer = client.get_allocation_candidates(
        nova_context.get_admin_context(), resources)
    if not answer or answer[1] is None:
        raise PlacementReadError('no answer to GET /allocation_candidates')
    if not isinstance(answer[1], dict):
        raise PlacementReadError('provider_summaries is not an object')
    return answer[1]


def gpu_units(host_states):
    """GPU units one candidate of the request takes (0: no GPU).

    Every candidate of a request takes the same amounts, so the first one
    found tells.
    """
    for host in host_states:
        for candidate in getattr(host, 'allocation_candidates', None) or ():
            try:
                return sum(
                    int(amount)
                    for alloc in candidate['allocations'].values()
                    for rc, amount in alloc['resources'].items()
                    if placement_traits.is_gpu_resource_class(rc))
            except (AttributeError, KeyError, TypeError, ValueError):
                continue
    return 0


def wants_gpu(host_states):
    """Whether the request's candidates take a GPU resource class."""
    return gpu_units(host_states) > 0


# Views kept at most: about the requests one scheduler serves at once.
MAX_REQUESTS = 64
# How long a request's first candidates count as about to be claimed by it.
# Nova claims right after the weighers, in the same call.
IN_FLIGHT_SECONDS = 5.0


class _Entry:
    def __init__(self, spec_obj, view, expires_at):
        self.spec_ref = weakref.ref(spec_obj)
        self.instance_uuid = _instance_uuid(spec_obj)
        self.view = view
        self.expires_at = expires_at
        self.num_instances = {}
        self.first_candidate = {}
        self.reserved = {}
        self.noted_at = float('-inf')
        self.workloads = None


class RequestViews:
    """Thread-safe per-request views with expiry (see module doc).

    ``query`` is the function asking Placement, replaceable in tests.
    ``capture`` lets the view reuse the scheduler's own answer when the
    ``reuse_scheduler_query`` option allows (see :func:`install_capture`).
    """

    def __init__(self, query=query_provider_summaries, topology=None,
                 clock=time.monotonic, capture=False, history=None,
                 query_without_gpu=False):
        self._query = query
        self._capture = capture
        # Requests without GPU only use the scheduler's own answer unless
        # the query is free (the simulator's).
        self._query_without_gpu = query_without_gpu
        self.history = history or workload_mix.RequestHistory()
        self._clock = clock
        self._lock = threading.Lock()
        self._started = False
        self._entries = {}
        self.topology = topology or gpu_view.TopologyCache(
            lambda: conf.CONF.gpu_partitions_scheduler.topology_cache_ttl,
            clock=clock)

    def start(self):
        """Choose where GPU usage comes from when Nova loads a plugin (at
        scheduler start, before its first query), and log it once.

        Installing the capture then, not at the first request, lets the
        first request reuse Nova's own answer too.
        """
        captured = (self._capture and conf.CONF.gpu_partitions_scheduler
                    .reuse_scheduler_query and install_capture())
        with self._lock:
            first, self._started = not self._started, True
        if not first or not self._capture:
            # Logged once per scheduler; the simulator's views (no
            # capture) always use their own query.
            return
        if captured:
            LOG.info('GPU partition scheduling: reading GPU usage from the '
                     'scheduler\'s own allocation-candidate answers.')
        else:
            LOG.info('GPU partition scheduling: asking Placement once more '
                     'per GPU request for GPU usage '
                     '(reuse_scheduler_query off or no report client).')

    def view_for(self, spec_obj, host_states):
        """The request's view, or None when it takes no GPU."""
        host_states = list(host_states)
        entry = self._entry(spec_obj)
        if entry is None:
            if wants_gpu(host_states):
                entry = self._build(spec_obj, host_states)
                self.history.record(entry.view, host_states)
            elif (conf.CONF.gpu_partitions_scheduler
                    .weigh_requests_without_gpu):
                entry = self._build_without_gpu(spec_obj, host_states)
            else:
                return None
        elif entry.instance_uuid != _instance_uuid(spec_obj):
            self._account_claims(entry, spec_obj, host_states)
        return entry.view

    def workloads(self, spec_obj, view):
        """The request's :class:`~nova_filters.scoring.WorkloadMix` (one
        per request, shared by the filter and the weigher).
        """
        entry = self._entry(spec_obj)
        if entry is None:
            return self.history.mix(view)
        if entry.workloads is None:
            entry.workloads = self.history.mix(view)
        return entry.workloads

    def note_first(self, spec_obj, host_state):
        """Remember the candidate a plugin put first on ``host_state``."""
        entry = self._entry(spec_obj)
        if entry is not None and host_state.allocation_candidates:
            candidate = host_state.allocation_candidates[0]
            entry.first_candidate[host_state.uuid] = candidate
            entry.reserved[host_state.uuid] = (
                candidate, weakref.ref(host_state), host_state.num_instances)
            entry.noted_at = self._clock()

    def note_best_host(self, spec_obj, root):
        """The weigher's best host: the only one this request will claim
        on, as far as concurrent requests need to know.
        """
        entry = self._entry(spec_obj)
        if entry is not None and root in entry.reserved:
            entry.reserved = {root: entry.reserved[root]}

    def in_flight(self, spec_obj, host):
        """``{provider_uuid: units}`` that other requests, still being
        scheduled, are about to claim on ``host`` (a HostGpus).

        Concurrent requests read the same usage from Placement and would
        all pick the same GPU; only one claim of its last unit succeeds and
        Nova does not try a host's other candidates. Counting what the
        others are about to claim steers this request to another GPU.

        A reservation ends when Nova has claimed it (it then consumes the
        request on the HostState we ordered, whose ``num_instances`` goes
        up, and Placement's usage shows the claim), when that HostState is
        gone (the other request returned), or IN_FLIGHT_SECONDS after it
        was made.
        """
        if host is None:
            return {}
        horizon = self._clock() - IN_FLIGHT_SECONDS
        with self._lock:
            others = [(entry.view, entry.reserved[host.root])
                      for key, entry in self._entries.items()
                      if key != id(spec_obj) and entry.noted_at > horizon
                      and host.root in entry.reserved]
        pending = {}
        for view, (candidate, state_ref, num_instances) in others:
            state = state_ref()
            if state is None or state.num_instances > num_instances:
                continue
            for uuid, units in gpu_view.gpu_allocation(
                    view, candidate).items():
                if host.provider(uuid) is not None:
                    pending[uuid] = pending.get(uuid, 0) + units
        return pending

    def _entry(self, spec_obj):
        now = self._clock()
        with self._lock:
            for key in [key for key, entry in self._entries.items()
                        if entry.expires_at <= now
                        or entry.spec_ref() is None]:
                del self._entries[key]
            entry = self._entries.get(id(spec_obj))
        if entry is not None and entry.spec_ref() is spec_obj:
            return entry
        return None

    def _captured(self, roots):
        if (self._capture and conf.CONF.gpu_partitions_scheduler
                .reuse_scheduler_query and install_capture()):
            summaries = take_captured_summaries()
            if summaries is not None and not roots.isdisjoint(summaries):
                return summaries
        return None

    def _build_without_gpu(self, spec_obj, host_states):
        # Quietly neutral when the answer is not at hand: most requests of
        # a cloud take no GPU, and they must not cost a Placement query.
        roots = {host.uuid for host in host_states}
        view = None
        try:
            summaries = self._captured(roots)
            if summaries is None and self._query_without_gpu:
                summaries = self._query(spec_obj, host_states)
            if summaries is not None:
                view = gpu_view.from_provider_summaries(
                    summaries, roots=roots, topology=self.topology)
        except Exception as error:
            LOG.debug('GPU partition scheduling: no GPU usage for a '
                      'request without GPU (%s).', error)
        return self._keep(spec_obj, host_states, view)

    def _build(self, spec_obj, host_states):
        roots = {host.uuid for host in host_states}
        try:
            summaries = self._captured(roots)
            if summaries is None:
                summaries = self._query(spec_obj, host_states)
            view = gpu_view.from_provider_summaries(
                summaries, roots=roots, topology=self.topology)
        except Exception as error:
            # Never break scheduling: neutral weights, affinity from the
            # remembered topology, and one warning for this request.
            LOG.warning('GPU partition scheduling: cannot read GPU usage '
                        'from Placement (%s); GPU weights are neutral for '
                        'this request.', error)
            view = self.topology.view_of(roots)
        return self._keep(spec_obj, host_states, view)

    def _keep(self, spec_obj, host_states, view):
        ttl = conf.CONF.gpu_partitions_scheduler.request_view_ttl
        entry = _Entry(spec_obj, view, self._clock() + ttl)
        entry.num_instances = {host.uuid: host.num_instances
                               for host in host_states}
        with self._lock:
            self._entries[id(spec_obj)] = entry
            if len(self._entries) > MAX_REQUESTS:
                # A view holds the request's provider summaries: bound the
                # memory even if RequestSpecs linger until garbage
                # collection.
                oldest = min(self._entries,
                             key=lambda key: self._entries[key].expires_at)
                del self._entries[oldest]
        return entry

    def _account_claims(self, entry, spec_obj, host_states):
        view = entry.view
        for host in host_states:
            before = entry.num_instances.get(host.uuid, host.num_instances)
            if host.num_instances > before:
                claimed = entry.first_candidate.get(host.uuid)
                if claimed is not None:
                    view = gpu_view.with_allocation(
                        view, gpu_view.gpu_allocation(view, claimed))
            entry.num_instances[host.uuid] = host.num_instances
        entry.view = view
        entry.instance_uuid = _instance_uuid(spec_obj)


def _instance_uuid(spec_obj):
    try:
        return spec_obj.instance_uuid
    except (AttributeError, NotImplementedError, ValueError):
        return None


# One per scheduler process, shared by the filter and the weigher.
VIEWS = RequestViews(capture=True)
