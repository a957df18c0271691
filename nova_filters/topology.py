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
"""Where each GPU provider sits, read from its traits and remembered.

A provider's physical GPU, NUMA node and link domain change only when an
operator re-cables or re-partitions a host, so :class:`TopologyCache`
parses a provider's traits once and reuses the result while they stay the
same. When Placement cannot be read, :meth:`TopologyCache.view_of`
rebuilds the hosts' topology from memory, so required affinity can still
be enforced.
"""

import threading
import time

from nova_filters import gpu_view
import placement_traits


def parse_topology(uuid, traits):
    """``(gpu, numa_node, link_domain)`` of a provider from its traits."""
    traits = sorted(traits)
    return (placement_traits.physical_gpu_of(traits) or uuid,
            placement_traits.numa_node_of(traits),
            placement_traits.link_domain_of(traits))


class Place:
    """Where one provider sits: ``topology`` is ``(gpu, numa_node,
    link_domain)``; ``gpu_key`` names its GPU across the fleet (root and
    address), a ready-hashed dictionary key for the parser's hot loop;
    ``on_demand_slices`` the compute slices of an on-demand MIG GPU (None
    for a fixed layout), read from the traits once, not per request.
    """

    __slots__ = ('expires_at', 'traits', 'root', 'topology', 'gpu_key',
                 'on_demand_slices', 'capacities')

    def __init__(self, uuid, root, traits, capacities, expires_at):
        self.expires_at = expires_at
        self.traits = list(traits)
        self.root = root
        self.topology = parse_topology(uuid, traits)
        self.gpu_key = '%s/%s' % (root, self.topology[0])
        self.on_demand_slices = placement_traits.mig_on_demand_slices(traits)
        self.capacities = capacities


class TopologyCache:
    """Thread-safe memory of the :class:`Place` of each GPU provider and
    its capacities ``{resource class: capacity}``.

    Entries expire ``ttl`` seconds after they were last seen; ``ttl`` 0
    remembers nothing. ``ttl`` may be a function returning the number, so
    a configuration option is read when used.
    """

    def __init__(self, ttl, clock=time.monotonic):
        self._ttl_source = ttl
        self._clock = clock
        self._lock = threading.Lock()
        # uuid -> Place; read without the lock (one dict get is atomic).
        self.places = {}
        self._next_sweep = 0.0

    def expiry(self):
        """When entries seen now expire; None when nothing is kept."""
        ttl = self._ttl
        return self._clock() + ttl if ttl > 0 else None

    def place(self, uuid, root, traits, capacities, expires):
        """The :class:`Place` of a provider, parsed once per traits and
        root; ``expires`` comes from :meth:`expiry`, read once per batch.
        """
        place = self.places.get(uuid)
        if place is not None and place.traits == traits and (
                place.root == root):
            if expires is not None:
                place.expires_at = expires
            return place
        place = Place(uuid, root, traits, capacities, expires)
        if expires is not None and isinstance(capacities, dict):
            with self._lock:
                self.places[uuid] = place
        return place

    def sweep(self):
        """Forget expired entries (at most once per ``ttl``)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        with self._lock:
            self._next_sweep = now + self._ttl
            for uuid in [uuid for uuid, place in self.places.items()
                         if place.expires_at <= now]:
                del self.places[uuid]

    def view_of(self, roots):
        """A view (``usage_known`` False) of the remembered providers of
        ``roots``.
        """
        now = self._clock()
        with self._lock:
            places = [(uuid, place) for uuid, place in self.places.items()
                      if place.root in roots and place.expires_at > now]
        providers = []
        for uuid, place in places:
            gpu, numa, link = place.topology
            for rc, capacity in place.capacities.items():
                providers.append(gpu_view.GpuProvider(
                    uuid=uuid, root=place.root, gpu=gpu, resource_class=rc,
                    capacity=capacity, used=0,
                    traits=frozenset(place.traits), numa_node=numa,
                    link_domain=link))
        return gpu_view.build_view(providers, usage_known=False)

    @property
    def _ttl(self):
        source = self._ttl_source
        return source() if callable(source) else source
