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
"""GPU units that concurrent requests are about to claim, or claimed after
another request read Placement.

Concurrent requests read the same usage from Placement and would all pick
the same GPU; only one claim of its last unit succeeds, and Nova does not
try a host's other candidates. Each request reserves the candidate it put
first on a host (and, once weighed, only on its best host); the others
count those units as used, which steers them to another GPU.

A reservation *ends* when Nova has claimed it (it then consumes the request
on the HostState we ordered, whose ``num_instances`` goes up) or when that
HostState or the request is gone (the request returned). Placement's usage
shows a claim only in answers read after it, so an ended reservation still
counts for a request whose answer was read (:meth:`Reservations.read`)
before the end was seen. An end seen late only makes such a request count
a claimed unit twice, which changes its order and never fails a host; a
claim forgotten early lets two requests pick the same unit, and one of
them fails. So an ended reservation is forgotten only once no request that
could count it (one still being scheduled, or an answer Nova asked for that
the plugins have not read yet) read Placement before it ended; one still in
flight, IN_FLIGHT_SECONDS after the request last reserved.
"""

import threading
import weakref

from nova_filters import allocations

# How long a request's first candidates count as about to be claimed by it.
# Nova claims right after the weighers, in the same call.
IN_FLIGHT_SECONDS = 5.0


class _Ref(weakref.ref):
    """A weak reference that notes in ``ended_at`` when its object was
    freed (a reading of ``clock``); None while it lives.
    """
    __slots__ = ('clock', 'ended_at')


def _freed(ref):
    # Runs wherever the object is freed, a garbage collection included:
    # no lock, one attribute.
    if ref.ended_at is None:
        ref.ended_at = ref.clock()


def _ref(obj, clock):
    ref = _Ref(obj, _freed)
    ref.clock = clock
    ref.ended_at = None
    return ref


class _Request:
    def __init__(self, spec_obj, clock, now):
        self.spec_ref = _ref(spec_obj, clock)
        self.read_at = None  # None: unknown, every reservation counts
        self.noted_at = now
        # root -> (candidate, _Ref to its HostState, its num_instances)
        self.hosts = {}
        # root -> [such entries] that ended while the request went on (a
        # multi-create's earlier instances).
        self.ended = {}


class Reservations:
    """Thread-safe reservations of the requests being scheduled.

    ``unread_age``: the seconds since the oldest answer that Nova asked
    for and the plugins have not read yet was asked for (None: none).
    """

    def __init__(self, clock, unread_age=lambda: None):
        self._clock = clock
        self._unread_age = unread_age
        self._lock = threading.Lock()
        self._requests = {}
        # root -> [(end, candidate)] of requests that returned.
        self._returned = {}

    def read(self, spec_obj, read_at):
        """The request's view shows Placement's usage as of ``read_at``
        (a reading of the clock).
        """
        now = self._clock()
        with self._lock:
            mine = self._mine(spec_obj, now)
            mine.read_at = read_at

    def reserve(self, spec_obj, host_state):
        """Reserve the candidate the plugins put first on ``host_state``
        for the request.
        """
        candidate = host_state.allocation_candidates[0]
        now = self._clock()
        with self._lock:
            mine = self._mine(spec_obj, now)
            old = mine.hosts.get(host_state.uuid)
            if old is not None:
                self._retire(mine, host_state.uuid, old, now)
            mine.hosts[host_state.uuid] = (
                candidate, _ref(host_state, self._clock),
                host_state.num_instances)
            mine.noted_at = now

    def keep_only(self, spec_obj, root):
        """The request will claim on ``root`` only (the weigher's best
        host), as far as other requests need to know.
        """
        now = self._clock()
        with self._lock:
            mine = self._live(spec_obj)
            if mine is None or root not in mine.hosts:
                return
            for other, entry in mine.hosts.items():
                if other != root:
                    self._retire(mine, other, entry, now)
            mine.hosts = {root: mine.hosts[root]}

    def pending(self, spec_obj, host):
        """``{provider_uuid: units}`` that other requests are about to
        claim, or claimed after this request read Placement, on ``host``
        (a HostGpus).
        """
        if host is None:
            return {}
        now = self._clock()
        horizon = now - IN_FLIGHT_SECONDS
        root = host.root
        with self._lock:
            mine = self._live(spec_obj)
            read_at = None if mine is None else mine.read_at
            found = [candidate
                     for end, candidate in self._returned.get(root, ())
                     if read_at is None or read_at < end]
            for request in self._requests.values():
                if request is mine:
                    continue
                entry = request.hosts.get(root)
                entries = request.ended.get(root, ())
                if entry is not None:
                    entries = [entry, *entries]
                for entry in entries:
                    end = self._end(request, entry, now)
                    if (request.noted_at > horizon if end is None
                            else read_at is None or read_at < end):
                        found.append(entry[0])
        pending = {}
        for candidate in found:
            # Read against this request's host: the other's view may be
            # freed already.
            for uuid, units in allocations.gpu_allocation(
                    host, candidate).items():
                pending[uuid] = pending.get(uuid, 0) + units
        return pending

    @staticmethod
    def _end(request, entry, now):
        """When ``entry`` was seen to end; None while it is in flight."""
        _, state_ref, num_instances = entry
        if state_ref.ended_at is None:
            state = state_ref()
            if state is None or state.num_instances > num_instances:
                state_ref.ended_at = now  # claimed: seen only now
        ends = [end for end in (state_ref.ended_at,
                                request.spec_ref.ended_at)
                if end is not None]
        return min(ends) if ends else None

    def _retire(self, mine, root, entry, now):
        # A replaced or dropped entry that has ended (Nova claimed it) is
        # kept: requests that read Placement before need it.
        if self._end(mine, entry, now) is not None:
            mine.ended.setdefault(root, []).append(entry)

    def _live(self, spec_obj):
        mine = self._requests.get(id(spec_obj))
        if mine is not None and mine.spec_ref() is spec_obj:
            return mine
        return None

    def _mine(self, spec_obj, now):
        mine = self._live(spec_obj)
        if mine is None:
            self._forget(now)  # once per request
            mine = self._requests[id(spec_obj)] = _Request(
                spec_obj, self._clock, now)
        return mine

    def _forget(self, now):
        # A request no longer being scheduled leaves only ended
        # reservations, each kept while an answer read before its end may
        # still be counted against: one not read yet, or one a request
        # still being scheduled read.
        reads = [request.read_at for request in self._requests.values()
                 if request.read_at is not None and _scheduling(request)]
        unread = self._unread_age()
        if unread is not None:
            reads.append(now - unread)
        oldest = min(reads, default=None)
        for key, request in list(self._requests.items()):
            if _scheduling(request):
                continue
            del self._requests[key]
            entries = [*request.hosts.items()] + [
                (root, entry) for root, ended in request.ended.items()
                for entry in ended]
            for root, entry in entries:
                end = self._end(request, entry, now)
                self._returned.setdefault(root, []).append(
                    (now if end is None else end, entry[0]))
        for root, returned in list(self._returned.items()):
            kept = [(end, candidate) for end, candidate in returned
                    if oldest is not None and oldest < end]
            if kept:
                self._returned[root] = kept
            else:
                del self._returned[root]


def _scheduling(request):
    """Whether the request may still count reservations: its RequestSpec
    lives, and so does a HostState it reserved on, if any.
    """
    if request.spec_ref() is None:
        return False
    entries = request.hosts.values()
    return not entries or any(state_ref() is not None
                              for _, state_ref, _ in entries)
