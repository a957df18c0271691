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
"""The GPUs of the candidate hosts of one scheduling request, as plain data.

This module imports nothing from Nova: the scheduler plugins build a view
from Placement's provider summaries (:func:`from_provider_summaries`), the
packing simulator builds one from its in-memory fleet (construct
:class:`GpuProvider` objects and call :func:`build_view`), and both hand it
to the same functions of :mod:`nova_filters.scoring`.

Shape::

    GpuView
      .hosts[root_uuid] -> HostGpus        one compute node
          .gpus[address] -> PhysicalGpu    one physical GPU (PCI function)
              .providers -> (GpuProvider)  one per slice kind on that GPU
      .providers[uuid] -> GpuProvider

A :class:`GpuProvider` is one Placement provider of GPU slices (a MIG
profile, a vGPU type or a VF kind on one physical GPU). Several providers
can share a physical GPU (one per MIG profile of its layout), so the
fullness of a GPU sums over its providers, each unit weighted by its
``unit_share``: the fraction of the physical GPU one unit takes.

* MIG units weigh their compute slices (``3g.40gb`` weighs 3) relative to
  the sum over the GPU's whole MIG layout, so one 3g instance of a
  ``3g.40gb:1,1g.10gb:4`` layout fills 3/7 of the GPU.
* Other units (vGPU types, VFs) are 1/capacity of their provider: a GPU
  offering 8 VFs is full when 8 are used.

An *allocation* is a mapping ``{provider_uuid: units}``; a Placement
allocation candidate gives one through :func:`gpu_allocation`.
"""

import dataclasses
import functools
import re
import threading
import time

import os_resource_classes as orc

import placement_traits

_MIG_SLICES = re.compile(r'^%s(\d+)G_' % placement_traits.RC_MIG)
_GPU_PREFIXES = (placement_traits.RC_MIG, placement_traits.RC_VGPU,
                 placement_traits.RC_GPU_VF)
_VCPU = orc.VCPU
_MEMORY_MB = orc.MEMORY_MB


# The scheduler builds tens of thousands of these per request, so they are
# slotted, not frozen (frozen dataclasses are several times slower to
# create). Treat them as read-only and derive changed copies with
# dataclasses.replace or the helpers below.
@dataclasses.dataclass(slots=True)
class GpuProvider:
    """One Placement provider of GPU slices.

    ``gpu`` is the PCI address of the physical GPU (from the
    ``CUSTOM_GPU_PCI_*`` trait); a provider without that trait is its own
    GPU, named by its uuid. ``link_domain`` is the NVLink clique or xGMI
    hive trait, ``numa_node`` the host NUMA node, both None when unknown.
    ``traits`` are the provider's trait names, as given.
    """
    uuid: str
    root: str
    gpu: str
    resource_class: str
    capacity: int
    used: int
    traits: tuple | list | frozenset = ()
    numa_node: int | None = None
    link_domain: str | None = None
    unit_share: float = 0.0

    @property
    def free(self):
        return max(0, self.capacity - self.used)


@dataclasses.dataclass(slots=True)
class PhysicalGpu:
    """One physical GPU and its providers; build it with
    :func:`physical_gpu`, which derives the other fields.

    ``used_share`` is the fraction of the GPU in use, 0.0 (idle) to 1.0.
    """
    address: str
    providers: tuple
    used_share: float = 0.0
    is_idle: bool = True
    numa_node: int | None = None
    link_domain: str | None = None

    @property
    def free_share(self):
        return 1.0 - self.used_share


def idle_domains(gpus):
    """Link domains of two or more of ``gpus`` that are all idle."""
    members = {}
    for gpu in gpus:
        if gpu.link_domain is not None:
            members.setdefault(gpu.link_domain, []).append(gpu.is_idle)
    return frozenset(domain for domain, idle in members.items()
                     if len(idle) > 1 and all(idle))


def physical_gpu(address, providers):
    providers = tuple(providers)
    return PhysicalGpu(
        address=address, providers=providers,
        used_share=min(1.0, sum(p.used * p.unit_share for p in providers)),
        is_idle=all(p.used == 0 for p in providers),
        numa_node=_first(p.numa_node for p in providers),
        link_domain=_first(p.link_domain for p in providers))


@dataclasses.dataclass(eq=False)
class HostGpus:
    """The GPUs of one compute node (root provider ``root``), by address,
    and the node's free VCPU and MEMORY_MB (None when unknown).
    """
    root: str
    gpus: dict
    free_vcpus: int | None = None
    free_memory_mb: int | None = None

    @property
    def used_share(self):
        """Mean fullness of the host's GPUs, 0.0 to 1.0."""
        if not self.gpus:
            return 0.0
        return sum(g.used_share for g in self.gpus.values()) / len(self.gpus)

    @functools.cached_property
    def gpu_of_provider(self):
        """``{provider_uuid: gpu address}``."""
        return {provider.uuid: gpu.address for gpu in self.gpus.values()
                for provider in gpu.providers}

    def provider(self, uuid):
        address = self.gpu_of_provider.get(uuid)
        if address is None:
            return None
        for provider in self.gpus[address].providers:
            if provider.uuid == uuid:
                return provider
        return None


class GpuView:
    """GPU providers of a set of hosts.

    Build one with :func:`build_view` (from :class:`GpuProvider` objects)
    or :func:`from_provider_summaries`, which only indexes the summaries:
    a host's :class:`HostGpus` is built the first time :meth:`host` asks
    for it, and :meth:`fill` gives a host's fullness without building it,
    so weighing thousands of hosts stays cheap. Views are not changed
    once built; :func:`with_allocation` returns a new one.

    ``usage_known`` is False for a view rebuilt from remembered topology
    when Placement could not be read: traits and tree shape are right,
    capacity and used are not, so only affinity may be judged on it.
    ``resource_classes`` and ``linked`` (some GPU has a link domain)
    summarise the view for :func:`nova_filters.scoring.default_workloads`.
    """

    def __init__(self, hosts=None, usage_known=True,
                 resource_classes=frozenset(), linked=False,
                 summaries=None, records=None, fills=None, topology=None,
                 host_free=None):
        self._built = dict(hosts or {})
        self._root_of = {uuid: root for root, host in self._built.items()
                         for uuid in host.gpu_of_provider}
        # Lazy part: root -> [provider uuid] of Placement's summaries.
        self._summaries = summaries or {}
        self._records = records or {}
        self._fills = fills or {}
        # root -> (free VCPU, free MEMORY_MB) of the compute node.
        self._host_free = host_free or {}
        self._topology = topology
        self.usage_known = usage_known
        self.resource_classes = resource_classes
        self.linked = linked

    def host(self, root):
        """The :class:`HostGpus` of compute node ``root``, or None."""
        host = self._built.get(root)
        if host is None:
            uuids = self._records.get(root)
            if uuids is None:
                return None
            host = _host_of(root, self._providers_of(root, uuids),
                            self._host_free.get(root))
            self._built[root] = host
            for uuid in uuids:
                self._root_of[uuid] = root
        return host

    def provider(self, uuid):
        root = self._root_of.get(uuid)
        if root is None:
            summary = self._summaries.get(uuid)
            if summary is None:
                return None
            root = summary.get('root_provider_uuid') or uuid
        host = self.host(root)
        return None if host is None else host.provider(uuid)

    def fill(self, root):
        """:attr:`HostGpus.used_share` of ``root`` (built or not); None
        for an unknown host.
        """
        host = self._built.get(root)
        if host is not None:
            return host.used_share
        return self._fills.get(root)

    @property
    def hosts(self):
        """Every host, built."""
        return {root: self.host(root)
                for root in set(self._built) | set(self._records)}

    @property
    def providers(self):
        """``{uuid: GpuProvider}`` of every host, built."""
        return {provider.uuid: provider for host in self.hosts.values()
                for gpu in host.gpus.values() for provider in gpu.providers}

    def replaced(self, hosts):
        """A view like this one with ``hosts`` ({root: HostGpus})
        replaced.
        """
        built = dict(self._built)
        built.update(hosts)
        view = GpuView(
            hosts=built, usage_known=self.usage_known,
            resource_classes=self.resource_classes, linked=self.linked,
            summaries=self._summaries, fills=self._fills,
            topology=self._topology, host_free=self._host_free,
            records={root: uuids for root, uuids in self._records.items()
                     if root not in built})
        return view

    def _providers_of(self, root, uuids):
        providers = []
        for uuid in uuids:
            providers.extend(_providers_from_summary(
                uuid, root, self._summaries[uuid], self._topology, None))
        return providers


EMPTY_VIEW = GpuView()


def parse_topology(uuid, traits):
    """``(gpu, numa_node, link_domain)`` of a provider from its traits."""
    traits = sorted(traits)
    return (placement_traits.physical_gpu_of(traits) or uuid,
            placement_traits.numa_node_of(traits),
            placement_traits.link_domain_of(traits))


class TopologyCache:
    """Thread-safe memory of what rarely changes: the traits of each GPU
    provider, the GPU and tree it sits in, and its capacity.

    Parsing traits is skipped for providers seen before with the same
    traits, and :meth:`view_of` rebuilds the topology of hosts when
    Placement cannot be read. Entries expire ``ttl`` seconds after they
    were last seen; ``ttl`` 0 remembers nothing. ``ttl`` may be a function
    returning the number, so a configuration option is read when used.
    """

    def __init__(self, ttl, clock=time.monotonic):
        self._ttl_source = ttl
        self._clock = clock
        self._lock = threading.Lock()
        # uuid -> [expires_at, traits list, root, topology, {rc: capacity}]
        self._entries = {}
        self._next_sweep = 0.0

    def expiry(self):
        """When entries seen now expire; None when nothing is kept."""
        ttl = self._ttl
        return self._clock() + ttl if ttl > 0 else None

    def cached(self, uuid, root, traits, expires):
        """The remembered topology of these traits, or None."""
        entry = self._entries.get(uuid)
        if entry is not None and entry[1] == traits and entry[2] == root:
            if expires is not None:
                entry[0] = expires
            return entry[3]
        return None

    def topology(self, uuid, root, traits, capacities, expires):
        """``(gpu, numa_node, link_domain)``, parsed once per traits.

        ``capacities`` ({resource class: capacity}) is kept for
        :meth:`view_of` when the provider is first seen or its traits
        change; ``expires`` comes from :meth:`expiry`, read once per batch.
        """
        entry = self._entries.get(uuid)
        if entry is not None and entry[1] == traits and entry[2] == root:
            if expires is not None:
                entry[0] = expires
            return entry[3]
        topology = parse_topology(uuid, traits)
        if expires is not None and isinstance(capacities, dict):
            with self._lock:
                self._entries[uuid] = [expires, list(traits), root,
                                       topology, capacities]
        return topology

    def sweep(self):
        """Forget expired entries (at most once per ``ttl``)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        with self._lock:
            self._next_sweep = now + self._ttl
            for uuid in [uuid for uuid, entry in self._entries.items()
                         if entry[0] <= now]:
                del self._entries[uuid]

    def view_of(self, roots):
        """A view (``usage_known`` False) of the remembered providers of
        ``roots``.
        """
        now = self._clock()
        with self._lock:
            entries = [(uuid, list(entry)) for uuid, entry
                       in self._entries.items()
                       if entry[2] in roots and entry[0] > now]
        providers = []
        for uuid, (_, traits, root, (gpu, numa, link), capacities) in entries:
            for rc, capacity in capacities.items():
                providers.append(GpuProvider(
                    uuid=uuid, root=root, gpu=gpu, resource_class=rc,
                    capacity=capacity, used=0, traits=frozenset(traits),
                    numa_node=numa, link_domain=link))
        return build_view(providers, usage_known=False)

    @property
    def _ttl(self):
        source = self._ttl_source
        return source() if callable(source) else source


def provider_from_traits(uuid, root, resource_class, capacity, used, traits):
    """A :class:`GpuProvider` whose topology is read from its traits."""
    gpu, numa, link = parse_topology(uuid, traits)
    return GpuProvider(
        uuid=uuid, root=root, gpu=gpu, resource_class=resource_class,
        capacity=int(capacity), used=int(used), traits=frozenset(traits),
        numa_node=numa, link_domain=link)


def build_view(providers, usage_known=True):
    """A :class:`GpuView` of ``providers``; their ``unit_share`` is set
    (the given objects are updated).
    """
    by_root = {}
    for provider in providers:
        by_root.setdefault(provider.root, []).append(provider)
    providers = [p for members in by_root.values() for p in members]
    return GpuView(
        hosts={root: _host_of(root, members)
               for root, members in by_root.items()},
        usage_known=usage_known,
        resource_classes=frozenset(p.resource_class for p in providers),
        linked=any(p.link_domain is not None for p in providers))


def _by_gpu(providers):
    by_gpu = {}
    for provider in providers:
        by_gpu.setdefault(provider.gpu, []).append(provider)
    return by_gpu


def _host_of(root, providers, free=None):
    gpus = {}
    by_gpu = _by_gpu(providers)
    for address in sorted(by_gpu):
        members = by_gpu[address]
        _set_unit_shares(members)
        gpus[address] = physical_gpu(address, members)
    free_vcpus, free_memory_mb = free or (None, None)
    return HostGpus(root=root, gpus=gpus, free_vcpus=free_vcpus,
                    free_memory_mb=free_memory_mb)


def _providers_from_summary(uuid, root, summary, topology, expires):
    resources = summary['resources']
    gpu_classes = [rc for rc in resources if rc.startswith(_GPU_PREFIXES)]
    if not gpu_classes:
        return []
    traits = summary.get('traits') or []
    capacities = {rc: int(resources[rc]['capacity']) for rc in gpu_classes}
    if topology is not None:
        gpu, numa, link = topology.topology(uuid, root, traits, capacities,
                                            expires)
    else:
        gpu, numa, link = parse_topology(uuid, traits)
    return [GpuProvider(uuid, root, gpu, rc, capacities[rc],
                        int(resources[rc]['used']), traits, numa, link)
            for rc in gpu_classes if capacities[rc] > 0]


def _topology_of(uuid, root, summary, traits, topology, expires):
    if topology is None:
        return parse_topology(uuid, traits)
    capacities = {rc: amounts['capacity']
                  for rc, amounts in summary['resources'].items()
                  if rc.startswith(_GPU_PREFIXES)}
    return topology.topology(uuid, root, traits, capacities, expires)


def from_provider_summaries(summaries, roots=None, topology=None):
    """A view of the GPU providers in Placement's ``provider_summaries``.

    ``summaries`` is the dict of ``GET /allocation_candidates`` at
    microversion 1.29 or later (resources with capacity and used, traits,
    root provider); the view keeps it and must not see it changed.
    ``roots`` limits the view to those compute nodes. ``topology``, a
    :class:`TopologyCache`, avoids re-reading traits that did not change
    and remembers them. Anything that is not a well-formed GPU provider is
    skipped. Hosts are built lazily (see :class:`GpuView`).
    """
    expires = topology.expiry() if topology is not None else None
    records = {}
    host_free = {}
    # root -> gpu -> [MIG slices used, MIG slices offered, other share]
    usage = {}
    classes = set()
    linked = False
    # The hot loop of a request: tens of thousands of providers, so no
    # objects are made per provider here (see GpuView.host for those).
    for uuid, summary in summaries.items():
        try:
            root = summary.get('root_provider_uuid') or uuid
            if roots is not None and root not in roots:
                continue
            resources = summary['resources']
            if _VCPU in resources:
                host_free[root] = _free_of(resources)
            gpu_usage = None
            for rc, amounts in resources.items():
                if not rc.startswith(_GPU_PREFIXES):
                    continue
                capacity = amounts['capacity']
                if capacity <= 0:
                    continue
                if gpu_usage is None:
                    traits = summary.get('traits') or []
                    known = (topology.cached(uuid, root, traits, expires)
                             if topology is not None else None)
                    if known is None:
                        known = _topology_of(uuid, root, summary, traits,
                                             topology, expires)
                    gpu, _, link = known
                    gpu_usage = usage.setdefault(root, {}).setdefault(
                        gpu, [0, 0, 0.0])
                    records.setdefault(root, []).append(uuid)
                    linked = linked or link is not None
                used = amounts['used']
                slices = mig_slices(rc)
                if slices:
                    gpu_usage[0] += slices * used
                    on_demand = placement_traits.mig_on_demand_slices(
                        summary.get('traits') or ())
                    gpu_usage[1] = on_demand or (gpu_usage[1]
                                                 + slices * capacity)
                else:
                    gpu_usage[2] += used / capacity
                classes.add(rc)
        except (AttributeError, KeyError, TypeError, ValueError,
                ZeroDivisionError):
            continue
    if topology is not None:
        topology.sweep()
    fills = {}
    for root, gpus in usage.items():
        shares = [min(1.0, (used / offered if offered else 0.0) + other)
                  for used, offered, other in gpus.values()]
        fills[root] = sum(shares) / len(shares)
    return GpuView(summaries=summaries, records=records, fills=fills,
                   topology=topology, resource_classes=frozenset(classes),
                   linked=linked, host_free=host_free)


def _free_of(resources):
    """``(free VCPU, free MEMORY_MB)`` of a compute node's summary."""
    free = []
    for rc in (_VCPU, _MEMORY_MB):
        amounts = resources.get(rc)
        free.append(None if amounts is None
                    else int(amounts['capacity']) - int(amounts['used']))
    return tuple(free)


def host_resources(candidate):
    """``(VCPU, MEMORY_MB)`` an allocation candidate takes, (0, 0) when
    it cannot be read.
    """
    vcpus = memory_mb = 0
    try:
        for alloc in candidate['allocations'].values():
            resources = alloc['resources']
            vcpus += int(resources.get(_VCPU, 0))
            memory_mb += int(resources.get(_MEMORY_MB, 0))
    except (AttributeError, KeyError, TypeError, ValueError):
        return 0, 0
    return vcpus, memory_mb


def gpu_allocation(view, candidate):
    """``{provider_uuid: units}`` of the GPU part of an allocation candidate.

    Providers the view does not know (the compute node's VCPU, a NIC) are
    left out, so an empty dict means the candidate takes no GPU the view
    knows of.
    """
    allocation = {}
    try:
        for uuid, alloc in candidate['allocations'].items():
            provider = view.provider(uuid)
            if provider is None:
                continue
            units = alloc['resources'].get(provider.resource_class, 0)
            if units:
                allocation[uuid] = allocation.get(uuid, 0) + int(units)
    except (AttributeError, KeyError, TypeError, ValueError):
        return {}
    return allocation


def with_allocation(view, allocation):
    """A copy of ``view`` where ``allocation`` is in use."""
    by_root = {}
    for uuid, units in allocation.items():
        provider = view.provider(uuid)
        if provider is not None:
            by_root.setdefault(provider.root, {})[uuid] = units
    if not by_root:
        return view
    return view.replaced({
        root: host_with_allocation(view.host(root), part)
        for root, part in by_root.items()})


def host_with_allocation(host, allocation):
    """A copy of ``host`` (a :class:`HostGpus`) with ``allocation`` used."""
    providers = {}
    for gpu in host.gpus.values():
        for provider in gpu.providers:
            units = allocation.get(provider.uuid, 0)
            providers[provider.uuid] = (
                dataclasses.replace(provider, used=provider.used + units)
                if units else provider)
    return _rebuilt_host(host, providers)


def _rebuilt_host(host, providers):
    gpus = {}
    for address, gpu in host.gpus.items():
        new = tuple(providers[p.uuid] for p in gpu.providers)
        gpus[address] = (gpu if all(a is b for a, b in zip(new, gpu.providers))
                         else physical_gpu(address, new))
    return HostGpus(root=host.root, gpus=gpus, free_vcpus=host.free_vcpus,
                    free_memory_mb=host.free_memory_mb)


@functools.lru_cache(maxsize=4096)
def mig_slices(resource_class):
    """Compute slices of a MIG resource class (3 for ``..._3G_40GB``)."""
    match = _MIG_SLICES.match(resource_class)
    return int(match.group(1)) if match else None


def _set_unit_shares(members):
    # An on-demand MIG GPU offers every profile: its units weigh their
    # slices against the GPU's, not against the offers' sum.
    mig_total = (placement_traits.mig_on_demand_slices(members[0].traits)
                 if members else None)
    if mig_total is None:
        mig_total = sum((mig_slices(p.resource_class) or 0) * p.capacity
                        for p in members)
    for provider in members:
        slices = mig_slices(provider.resource_class)
        if slices and mig_total:
            provider.unit_share = slices / mig_total
        else:
            provider.unit_share = (1.0 / provider.capacity
                                   if provider.capacity else 0.0)


def _first(values):
    for value in values:
        if value is not None:
            return value
    return None
