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
"""The typical workloads of a scheduler: the GPU requests it saw lately.

Fragmentation (:mod:`nova_filters.scoring`) is measured against the
requests the cloud really gets, as FGD measures it against the task
distribution of its cluster. Each GPU request the plugins see is reduced
to a *shape*: the GPU resource class and units it takes on each GPU, the
number of GPUs, and the VCPU and MEMORY_MB it takes from the compute
node. The last ``[gpu_partitions_scheduler] workload_window`` shapes are
kept; the ``workload_classes`` most frequent, weighted by how often they
came, are the mix. Until :data:`MIN_SAMPLES` requests were seen (or with
a window of 0) the mix is :func:`nova_filters.scoring.default_workloads`.
"""

import collections
import threading

from nova_filters import allocations
from nova_filters import conf
from nova_filters import scoring

# Requests seen before the learned mix replaces the default one.
MIN_SAMPLES = 20


def shape_of(view, candidate):
    """``(resource class, units per GPU, GPUs, VCPU, MEMORY_MB)`` of an
    allocation candidate; None when it takes no GPU or different amounts
    on different GPUs (not a typical shape).
    """
    allocation = allocations.gpu_allocation(view, candidate)
    amounts = set()
    for uuid, units in allocation.items():
        provider = view.provider(uuid)
        amounts.add((provider.resource_class, units))
    if len(amounts) != 1:
        return None
    (resource_class, units), = amounts
    vcpus, memory_mb = allocations.host_resources(candidate)
    return (resource_class, units, len(allocation), vcpus, memory_mb)


def first_candidate(host_states):
    for host in host_states:
        candidates = getattr(host, 'allocation_candidates', None)
        if candidates:
            return candidates[0]
    return None


class RequestHistory:
    """Thread-safe window of the shapes of recent GPU requests.

    Shapes are grouped by their GPU part (resource class, units, GPUs);
    a group's VCPU and memory are the means of its members, as FGD sums
    up the tasks of a class. ``window`` and ``classes`` are numbers or
    functions returning them (the options, read when used).
    """

    def __init__(self, window=None, classes=None):
        self._window = window or (
            lambda: conf.CONF.gpu_partitions_scheduler.workload_window)
        self._classes = classes or (
            lambda: conf.CONF.gpu_partitions_scheduler.workload_classes)
        self._lock = threading.Lock()
        self._shapes = collections.deque()
        # (rc, units, GPUs) -> [requests, VCPU sum, MEMORY_MB sum]
        self._groups = {}

    def record(self, view, host_states):
        """Remember the shape of the request whose candidates these are."""
        candidate = first_candidate(host_states)
        shape = None if candidate is None else shape_of(view, candidate)
        if shape is None:
            return
        window = _value(self._window)
        with self._lock:
            self._shapes.append(shape)
            self._count(shape, +1)
            while len(self._shapes) > window:
                self._count(self._shapes.popleft(), -1)

    def _count(self, shape, sign):
        key, vcpus, memory_mb = shape[:3], shape[3], shape[4]
        group = self._groups.setdefault(key, [0, 0, 0])
        group[0] += sign
        group[1] += sign * vcpus
        group[2] += sign * memory_mb
        if not group[0]:
            del self._groups[key]

    def mix(self, view):
        """A :class:`~nova_filters.scoring.WorkloadMix` of the most
        frequent recent groups, or the default mix of ``view``.
        """
        with self._lock:
            if len(self._shapes) < MIN_SAMPLES:
                top = None
            else:
                # Most frequent first; equal counts keep the order they
                # were first seen in, so the mix does not depend on hashing.
                top = sorted(self._groups.items(),
                             key=lambda item: -item[1][0])[
                    :_value(self._classes)]
                top = [(key, tuple(group)) for key, group in top]
        if not top:
            return scoring.default_workloads(view)
        total = sum(count for _, (count, _, _) in top)
        return scoring.WorkloadMix(
            scoring.Workload(
                kind=scoring.SLICE, weight=count / total,
                resource_class=rc, units=units, gpus=gpus,
                vcpus=vcpus // count, memory_mb=memory_mb // count)
            for (rc, units, gpus), (count, vcpus, memory_mb) in top)


def _value(source):
    return source() if callable(source) else source
