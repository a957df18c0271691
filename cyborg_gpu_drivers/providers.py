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
"""The Placement providers a :class:`~.inventory.HostInventory` becomes.

One provider per slice kind of each physical GPU, a child of the host's
compute node provider. :mod:`cyborg_gpu_drivers.report` turns these specs
into Cyborg deployables (Cyborg's conductor then writes them to
Placement); the simulator's Placement and tests write them directly, so
every consumer sees the same names, inventories and traits. Plain data,
no I/O.
"""

import dataclasses

from cyborg_gpu_drivers import inventory
import placement_traits


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    """One resource provider as Placement holds it.

    ``parent`` is the name of the compute node provider (the host);
    ``reserved`` the units the hardware shows in use, which a Placement
    holding no allocation for them must reserve (the agent reserves only
    those held by guests Cyborg did not bind, see
    ``base.GpuPartitionDriver._reserve_busy_units``). ``traits`` are
    sorted.
    """
    name: str
    parent: str
    resource_class: str
    total: int
    reserved: int
    traits: tuple


def provider_name(hostname, gpu, slice_):
    return placement_traits.provider_name(hostname, gpu.address, slice_.name)


def provider_traits(gpu, slice_):
    """Traits of one provider, sorted: the GPU's own plus the slice's."""
    traits = {placement_traits.OWNER_CYBORG,
              placement_traits.physical_gpu_trait(gpu.address)}
    traits.update(gpu.traits)
    traits.update(slice_.traits)
    return tuple(sorted(traits))


def offered_slices(gpu):
    """The slices that become providers: those with something to offer.

    Placement refuses an inventory of 0, so a slice with nothing to offer
    (a lost GPU with nothing in use or allocated, a profile with no usable
    VF) has no provider; Cyborg's conductor deletes the provider it had,
    which Placement allows because nothing is allocated on it.
    """
    return [slice_ for slice_ in gpu.slices
            if inventory.offered_total(gpu, slice_) > 0]


def provider_spec(hostname, gpu, slice_):
    total = inventory.offered_total(gpu, slice_)
    return ProviderSpec(
        name=provider_name(hostname, gpu, slice_), parent=hostname,
        resource_class=slice_.resource_class, total=total,
        reserved=min(slice_.in_use, total),
        traits=provider_traits(gpu, slice_))


def provider_specs(host_inventory):
    """The providers of a host, in PCI address and slice order."""
    return [provider_spec(host_inventory.hostname, gpu, slice_)
            for gpu in sorted(host_inventory.gpus, key=lambda g: g.address)
            for slice_ in offered_slices(gpu)]
