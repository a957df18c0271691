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

This module imports nothing from Nova and reads nothing: the scheduler
plugins get a view from Placement's provider summaries
(:func:`nova_filters.provider_summaries.parse`), the packing simulator
builds one from its own providers (:func:`build_view`), and both hand it
to the same functions of :mod:`nova_filters.scoring`.

Shape::

    GpuView
      .host(root_uuid) -> HostGpus         one compute node
          .gpus[address] -> PhysicalGpu    one physical GPU (PCI function)
              .providers -> (GpuProvider)  one per slice kind on that GPU

A :class:`GpuProvider` is one Placement provider of GPU slices (a MIG
profile, a vGPU type or a VF kind on one physical GPU). Several providers
can share a physical GPU (one per MIG profile of its layout); how full a
GPU is comes from :func:`used_share`, the one place that rule lives:

* MIG units weigh their compute slices (``3g.40gb`` weighs 3) relative to
  the slices of the GPU's whole MIG layout, so one 3g instance of a
  ``3g.40gb:1,1g.10gb:4`` layout fills 3/7 of the GPU;
* other units (vGPU types, VFs) are 1/capacity of their provider: a GPU
  offering 8 VFs is full when 8 are used.
"""

import dataclasses
import functools
import re

import placement_traits

_MIG_SLICES = re.compile(r'^%s(\d+)G_' % placement_traits.RC_MIG)


# The scheduler builds thousands of these per request, so they are
# slotted, not frozen (frozen dataclasses are several times slower to
# create). Treat them as read-only and derive changed copies with
# dataclasses.replace or nova_filters.allocations.
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

    @property
    def free(self):
        return max(0, self.capacity - self.used)


@functools.lru_cache(maxsize=4096)
def mig_slices(resource_class):
    """Compute slices of a MIG resource class (3 for ``..._3G_40GB``)."""
    match = _MIG_SLICES.match(resource_class)
    return int(match.group(1)) if match else None


def used_share(mig_used, mig_offered, other_share):
    """Fraction of one physical GPU in use, 0.0 to 1.0: its used MIG
    compute slices over those its layout offers, plus the shares of its
    other units (one vGPU of 8 is 1/8).
    """
    return min(1.0, (mig_used / mig_offered if mig_offered else 0.0)
               + other_share)


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


def physical_gpu(address, providers):
    providers = tuple(providers)
    mig_used = mig_offered = 0
    other = 0.0
    for provider in providers:
        slices = mig_slices(provider.resource_class)
        if slices:
            mig_used += slices * provider.used
            mig_offered += slices * provider.capacity
        elif provider.capacity:
            other += provider.used / provider.capacity
    if providers:
        mig_offered = placement_traits.mig_on_demand_slices(
            providers[0].traits) or mig_offered
    return PhysicalGpu(
        address=address, providers=providers,
        used_share=used_share(mig_used, mig_offered, other),
        is_idle=all(p.used == 0 for p in providers),
        numa_node=_first(p.numa_node for p in providers),
        link_domain=_first(p.link_domain for p in providers))


def idle_domains(gpus):
    """Link domains of two or more of ``gpus`` that are all idle."""
    members = {}
    for gpu in gpus:
        if gpu.link_domain is not None:
            members.setdefault(gpu.link_domain, []).append(gpu.is_idle)
    return frozenset(domain for domain, idle in members.items()
                     if len(idle) > 1 and all(idle))


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


def host_gpus(root, providers, free=None):
    """The :class:`HostGpus` of ``providers`` (all of compute node
    ``root``); ``free`` is its ``(free VCPU, free MEMORY_MB)``.
    """
    by_gpu = {}
    for provider in providers:
        by_gpu.setdefault(provider.gpu, []).append(provider)
    free_vcpus, free_memory_mb = free or (None, None)
    return HostGpus(root=root,
                    gpus={address: physical_gpu(address, by_gpu[address])
                          for address in sorted(by_gpu)},
                    free_vcpus=free_vcpus, free_memory_mb=free_memory_mb)


class GpuView:
    """The GPUs of a set of hosts.

    Hosts are given built (``hosts``: ``{root: HostGpus}``) or by a
    ``source`` that builds them when first asked: an object with
    ``root_of(uuid)`` (the compute node of a GPU provider, or the node
    itself; None when unknown) and ``host(root)`` (a HostGpus or None),
    and ``fills`` (``{root: used_share}``) so that
    weighing thousands of hosts does not build them (see
    :mod:`nova_filters.provider_summaries`). A view is not changed once
    built, except for that memo; :func:`nova_filters.allocations
    .with_allocation` returns a new one.

    ``usage_known`` is False for a view rebuilt from remembered topology
    when Placement could not be read: traits and tree shape are right,
    capacity and used are not, so only affinity may be judged on it.
    ``resource_classes`` and ``linked`` (some GPU has a link domain)
    summarise the view for :func:`nova_filters.scoring.default_workloads`.
    """

    def __init__(self, hosts=None, usage_known=True,
                 resource_classes=frozenset(), linked=False, source=None,
                 fills=None):
        self._built = dict(hosts or {})
        self._root_of = {uuid: root for root, host in self._built.items()
                         for uuid in host.gpu_of_provider}
        self._source = source
        self._fills = fills or {}
        self.usage_known = usage_known
        self.resource_classes = resource_classes
        self.linked = linked

    def host(self, root):
        """The :class:`HostGpus` of compute node ``root``, or None."""
        host = self._built.get(root)
        if host is None and self._source is not None:
            host = self._source.host(root)
            if host is not None:
                self._built[root] = host
                for uuid in host.gpu_of_provider:
                    self._root_of[uuid] = root
        return host

    def provider(self, uuid):
        root = self._root_of.get(uuid)
        if root is None and self._source is not None:
            root = self._source.root_of(uuid)
        host = None if root is None else self.host(root)
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
        roots = set(self._built)
        if self._source is not None:
            roots.update(self._source.roots())
        hosts = {root: self.host(root) for root in roots}
        return {root: host for root, host in hosts.items()
                if host is not None}

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
        return GpuView(hosts=built, usage_known=self.usage_known,
                       resource_classes=self.resource_classes,
                       linked=self.linked, source=self._source,
                       fills=self._fills)


EMPTY_VIEW = GpuView()


def build_view(providers, usage_known=True):
    """A :class:`GpuView` of ``providers`` (:class:`GpuProvider`)."""
    by_root = {}
    for provider in providers:
        by_root.setdefault(provider.root, []).append(provider)
    providers = [p for members in by_root.values() for p in members]
    return GpuView(
        hosts={root: host_gpus(root, members)
               for root, members in by_root.items()},
        usage_known=usage_known,
        resource_classes=frozenset(p.resource_class for p in providers),
        linked=any(p.link_domain is not None for p in providers))


def _first(values):
    for value in values:
        if value is not None:
            return value
    return None
