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
"""GPU units that concurrent requests are about to claim.

Concurrent requests read the same usage from Placement and would all pick
the same GPU; only one claim of its last unit succeeds, and Nova does not
try a host's other candidates. Each request reserves the candidate it put
first on a host (and, once weighed, only on its best host); the others
count those units as used, which steers them to another GPU.

A reservation ends when Nova has claimed it (it then consumes the request
on the HostState we ordered, whose ``num_instances`` goes up, and
Placement's usage shows the claim), when that HostState or the request is
gone (the request returned), or IN_FLIGHT_SECONDS after it was made.
"""

import threading
import weakref

from nova_filters import allocations
from nova_filters import request_state

# How long a request's first candidates count as about to be claimed by it.
# Nova claims right after the weighers, in the same call.
IN_FLIGHT_SECONDS = 5.0


class _Reservation:
    def __init__(self, spec_obj, view):
        self.spec_ref = weakref.ref(
            spec_obj, request_state.release_when_gone(self))
        self.view = view
        self.noted_at = float('-inf')
        # root -> (candidate, weakref to the HostState, its num_instances)
        self.hosts = {}


class Reservations:
    """Thread-safe reservations of the requests being scheduled."""

    def __init__(self, clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._requests = {}

    def reserve(self, spec_obj, view, host_state):
        """Reserve the candidate the plugins put first on ``host_state``
        for the request (whose GPU view is ``view``).
        """
        candidate = host_state.allocation_candidates[0]
        now = self._clock()
        with self._lock:
            self._drop_ended(now)
            mine = self._requests.get(id(spec_obj))
            if mine is None or mine.spec_ref() is not spec_obj:
                mine = self._requests[id(spec_obj)] = _Reservation(
                    spec_obj, view)
            mine.view = view
            mine.hosts[host_state.uuid] = (
                candidate, weakref.ref(host_state), host_state.num_instances)
            mine.noted_at = now

    def keep_only(self, spec_obj, root):
        """The request will claim on ``root`` only (the weigher's best
        host), as far as other requests need to know.
        """
        with self._lock:
            mine = self._requests.get(id(spec_obj))
            if (mine is not None and mine.spec_ref() is spec_obj
                    and root in mine.hosts):
                mine.hosts = {root: mine.hosts[root]}

    def pending(self, spec_obj, host):
        """``{provider_uuid: units}`` that other requests are about to
        claim on ``host`` (a HostGpus).
        """
        if host is None:
            return {}
        horizon = self._clock() - IN_FLIGHT_SECONDS
        with self._lock:
            others = [(request.view, request.hosts[host.root])
                      for key, request in self._requests.items()
                      if key != id(spec_obj) and request.noted_at > horizon
                      and request.spec_ref() is not None
                      and host.root in request.hosts]
        pending = {}
        for view, (candidate, state_ref, num_instances) in others:
            state = state_ref()
            if state is None or state.num_instances > num_instances:
                continue
            for uuid, units in allocations.gpu_allocation(
                    view, candidate).items():
                if host.provider(uuid) is not None:
                    pending[uuid] = pending.get(uuid, 0) + units
        return pending

    def _drop_ended(self, now):
        horizon = now - IN_FLIGHT_SECONDS
        for key in [key for key, request in self._requests.items()
                    if request.noted_at <= horizon
                    or request.spec_ref() is None]:
            del self._requests[key]
