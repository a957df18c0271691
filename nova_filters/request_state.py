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
"""What the plugins keep about one scheduling request while Nova runs it.

Nova gives filters and weighers no request context, only the
``RequestSpec`` object, on the same thread. The first of our plugins that
runs for a request keeps a :class:`RequestState` (its GPU view and
workload mix), keyed on that object, for the other plugin and for the
next instances of a multi-create.

In a multi-create, Nova claims ``allocation_candidates[0]`` of the chosen
host after each instance and calls the plugins again with the same
``RequestSpec`` (and a new ``instance_uuid``). The host whose
``num_instances`` went up was claimed, so the candidate we put first on it
is added to the view (:meth:`RequestState.account_claims`) instead of
asking Placement again.
"""

import threading
import weakref

from nova_filters import allocations

# States kept at most: about the requests one scheduler serves at once. A
# state holds the request's provider summaries: this bounds the memory even
# if RequestSpecs linger until garbage collection.
MAX_REQUESTS = 64


def instance_uuid(spec_obj):
    try:
        return spec_obj.instance_uuid
    except (AttributeError, NotImplementedError, ValueError):
        return None


def release_when_gone(holder):
    """A weakref callback that drops ``holder.view`` when the request's
    RequestSpec is gone: the view holds Placement's whole answer (hundreds
    of thousands of objects at 5,000 hosts), freed then, not when the next
    request cleans up. It takes no lock, so a garbage collection anywhere
    may run it.
    """
    holder_ref = weakref.ref(holder)

    def release(_):
        held = holder_ref()
        if held is not None:
            held.view = None
    return release


class RequestState:
    """One request's GPU view, workload mix and multi-create bookkeeping."""

    def __init__(self, spec_obj, host_states, view, expires_at):
        self.spec_ref = weakref.ref(spec_obj, release_when_gone(self))
        self.instance_uuid = instance_uuid(spec_obj)
        self.view = view
        self.expires_at = expires_at
        self.workloads = None
        self.num_instances = {host.uuid: host.num_instances
                              for host in host_states}
        # root -> the candidate a plugin put first on that host.
        self.first_candidate = {}

    def is_next_instance(self, spec_obj):
        return self.instance_uuid != instance_uuid(spec_obj)

    def account_claims(self, spec_obj, host_states):
        """Add to the view what Nova claimed for the previous instances
        of a multi-create.
        """
        view = self.view
        for host in host_states:
            before = self.num_instances.get(host.uuid, host.num_instances)
            if host.num_instances > before:
                claimed = self.first_candidate.get(host.uuid)
                if claimed is not None:
                    view = allocations.with_allocation(
                        view, allocations.gpu_allocation(view, claimed))
            self.num_instances[host.uuid] = host.num_instances
        self.view = view
        self.instance_uuid = instance_uuid(spec_obj)


class RequestStates:
    """Thread-safe :class:`RequestState` per live ``RequestSpec``, each
    dropped when it expires or its RequestSpec is gone.
    """

    def __init__(self, clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._states = {}

    def get(self, spec_obj):
        now = self._clock()
        with self._lock:
            for key in [key for key, state in self._states.items()
                        if state.expires_at <= now
                        or state.spec_ref() is None]:
                del self._states[key]
            state = self._states.get(id(spec_obj))
        if state is not None and state.spec_ref() is spec_obj:
            return state
        return None

    def add(self, spec_obj, host_states, view, ttl):
        state = RequestState(spec_obj, host_states, view,
                             self._clock() + ttl)
        with self._lock:
            self._states[id(spec_obj)] = state
            if len(self._states) > MAX_REQUESTS:
                oldest = min(self._states,
                             key=lambda key: self._states[key].expires_at)
                del self._states[oldest]
        return state
