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
"""Allocation candidates read against a GPU view, and views with more used.

An *allocation* is ``{provider_uuid: units}`` of GPU providers on one
host; :func:`gpu_allocation` reads one from a Placement allocation
candidate. Plain functions over :mod:`nova_filters.gpu_view` data.
"""

import dataclasses

import os_resource_classes as orc

from nova_filters import gpu_view
from nova_filters import passthrough


# What a malformed candidate or amount raises when read.
_UNREADABLE = (AttributeError, KeyError, TypeError, ValueError,
               OverflowError)


def gpu_units(host_states):
    """GPU units one candidate of the request takes (0: no GPU).

    Every candidate of a request takes the same amounts, so the first one
    that can be read tells.
    """
    configured = passthrough.configured_classes()
    for host in host_states:
        for candidate in getattr(host, 'allocation_candidates', None) or ():
            try:
                return sum(
                    int(amount)
                    for alloc in candidate['allocations'].values()
                    for rc, amount in alloc['resources'].items()
                    if passthrough.is_gpu_class(rc, configured))
            except _UNREADABLE:
                continue
    return 0


def host_resources(candidate):
    """``(VCPU, MEMORY_MB)`` an allocation candidate takes, (0, 0) when
    it cannot be read.
    """
    vcpus = memory_mb = 0
    try:
        for alloc in candidate['allocations'].values():
            resources = alloc['resources']
            vcpus += int(resources.get(orc.VCPU, 0))
            memory_mb += int(resources.get(orc.MEMORY_MB, 0))
    except _UNREADABLE:
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
    except _UNREADABLE:
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
    """A copy of ``host`` (a HostGpus) with ``allocation`` used."""
    gpus = {}
    for address, gpu in host.gpus.items():
        if any(allocation.get(p.uuid) for p in gpu.providers):
            gpu = gpu_view.physical_gpu(address, [
                dataclasses.replace(p, used=p.used + allocation[p.uuid])
                if allocation.get(p.uuid) else p for p in gpu.providers])
        gpus[address] = gpu
    return gpu_view.HostGpus(root=host.root, gpus=gpus,
                             free_vcpus=host.free_vcpus,
                             free_memory_mb=host.free_memory_mb)
