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
operator re-cables or re-partitions a host. :func:`topology_of` reads them
once per distinct trait list: the traits name a GPU by its PCI address,
not by its host, so a fleet of like hosts has a few dozen lists, and the
scheduler's hot loop looks a provider's traits up instead of parsing them.
The result depends on the traits alone, so it is never stale.

:class:`TopologyCache` remembers the GPU providers of each host seen in
Placement's answers. When Placement cannot be read,
:meth:`TopologyCache.view_of` rebuilds the hosts' topology from memory, so
required affinity can still be enforced.
"""

import threading
import time

from nova_filters import gpu_view
import placement_traits

# Distinct trait lists kept at most; past that the memo starts anew. No
# lock: two threads meeting a new list at once both read it, harmlessly.
_MAX_TOPOLOGIES = 65536
# trait key (see TRAIT_SEPARATOR) -> ProviderTopology
_TOPOLOGIES = {}
# A trait list's memo key is its names joined by this: one string to hash
# per provider, not one per name (a new string each answer). No trait name
# holds it (Placement allows A-Z, 0-9 and _), and a key is kept only for a
# list whose names do not hold it and trusted only for a list of as many
# names, so two different lists never share an entry.
TRAIT_SEPARATOR = '\n'


class ProviderTopology:
    """What a provider's traits say of where it sits: ``gpu``, the PCI
    address of its physical GPU (None when no trait names it),
    ``numa_node``, ``link_domain``, and ``on_demand_slices``, the compute
    slices of an on-demand MIG GPU (None for a fixed layout). ``traits``
    is the trait tuple it was read from.
    """

    __slots__ = ('traits', 'gpu', 'numa_node', 'link_domain',
                 'on_demand_slices')

    def __init__(self, traits):
        ordered = sorted(traits)
        self.traits = traits
        self.gpu = placement_traits.physical_gpu_of(ordered)
        self.numa_node = placement_traits.numa_node_of(ordered)
        self.link_domain = placement_traits.link_domain_of(ordered)
        self.on_demand_slices = placement_traits.mig_on_demand_slices(
            traits)


# The ProviderTopology of a trait key already read, else None: the
# parser's hot loop looks it up without a call of topology_of, and uses
# it only when its ``traits`` are as many as the list's.
known_topology = _TOPOLOGIES.get


def topology_of(traits):
    """The :class:`ProviderTopology` of a provider's trait list, read once
    per distinct list.
    """
    traits = tuple(traits)
    try:
        key = TRAIT_SEPARATOR.join(traits)
    except TypeError:
        # A name that is not a string: read, not kept.
        return ProviderTopology(traits)
    topology = _TOPOLOGIES.get(key)
    if topology is not None and len(topology.traits) == len(traits):
        return topology
    topology = ProviderTopology(traits)
    if key.count(TRAIT_SEPARATOR) == max(len(traits) - 1, 0):
        if len(_TOPOLOGIES) >= _MAX_TOPOLOGIES:
            _TOPOLOGIES.clear()
        _TOPOLOGIES[key] = topology
    return topology


# A host's providers are kept in one flat tuple, these many entries per
# provider: uuid, trait tuple (as topology_of keeps it), resource class,
# capacity, used. Strings, numbers and tuples of strings only: the garbage
# collector stops tracking such a tuple, so its full collections (a walk
# over everything tracked, several per request at 5,000 hosts) skip the
# hosts' lists, kept here and in each request's view.
HOSTED_FIELDS = 5


def gpu_providers(root, hosted, usage_known=True):
    """The :class:`~nova_filters.gpu_view.GpuProvider` of each provider
    of host ``root``'s flat tuple (see HOSTED_FIELDS); ``usage_known``
    False counts every unit free (the usage is not known).
    """
    providers = []
    for uuid, traits, rc, capacity, used in zip(
            *(hosted[i::HOSTED_FIELDS] for i in range(HOSTED_FIELDS))):
        if int(capacity) > 0:
            place = topology_of(traits)
            providers.append(gpu_view.GpuProvider(
                uuid=uuid, root=root, gpu=place.gpu or uuid,
                resource_class=rc, capacity=int(capacity),
                used=int(used) if usage_known else 0, traits=place.traits,
                numa_node=place.numa_node, link_domain=place.link_domain))
    return providers


class TopologyCache:
    """Thread-safe memory of the GPU providers of each host: ``{root:
    providers}``, each a flat tuple (see HOSTED_FIELDS), as
    :func:`nova_filters.provider_summaries.parse` lists them.

    Placement's answer holds the whole tree of each host in it, so a
    host's providers are replaced whenever it is seen; a host expires
    ``ttl`` seconds after it was last seen, and ``ttl`` 0 remembers
    nothing. ``ttl`` may be a function returning the number, so a
    configuration option is read when used.
    """

    def __init__(self, ttl, clock=time.monotonic):
        self._ttl_source = ttl
        self._clock = clock
        self._lock = threading.Lock()
        # root -> (expires_at, its providers)
        self._hosts = {}
        self._next_sweep = 0.0

    def remember(self, hosts):
        """Remember ``hosts`` (``{root: providers}``), seen now."""
        ttl = self._ttl
        if ttl <= 0:
            return
        now = self._clock()
        expires = now + ttl
        with self._lock:
            for root, providers in hosts.items():
                self._hosts[root] = (expires, providers)
            if now >= self._next_sweep:
                self._next_sweep = now + ttl
                for root in [root for root, (expires_at, _)
                             in self._hosts.items() if expires_at <= now]:
                    del self._hosts[root]

    def view_of(self, roots):
        """A view (``usage_known`` False) of the remembered providers of
        ``roots``.
        """
        now = self._clock()
        with self._lock:
            remembered = [(root, self._hosts.get(root)) for root in roots]
        providers = []
        for root, entry in remembered:
            if entry is not None and entry[0] > now:
                providers += gpu_providers(root, entry[1], usage_known=False)
        return gpu_view.build_view(providers, usage_known=False)

    @property
    def _ttl(self):
        source = self._ttl_source
        return source() if callable(source) else source
