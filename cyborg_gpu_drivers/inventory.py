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
"""What a host has, as plain data.

The drivers build a :class:`HostInventory` from their hardware adapters;
:mod:`cyborg_gpu_drivers.report` turns it into Cyborg driver objects; the
``gpu-partitions`` tools print it. Nothing here does I/O.
"""

import dataclasses

PCI = 'PCI'
MDEV = 'MDEV'


@dataclasses.dataclass(frozen=True)
class AttachHandle:
    """One unit a guest can be given: a VF (``PCI``) or an mdev (``MDEV``).

    ``address`` is the sysfs PCI address of the VF or of the mdev parent.
    ``mdev_type`` and ``mark`` are set for ``MDEV`` handles only: the mdev
    type to create (``nvidia-472``) and a mark unique on the parent.
    ``in_use`` says the hardware shows the unit busy (an active vGPU, an
    open VF), which must never be taken away from Placement.
    """
    attach_type: str
    address: str
    mdev_type: str | None = None
    mark: str | None = None
    in_use: bool = False


@dataclasses.dataclass
class Slice:
    """All units of one kind on one physical GPU: one Placement provider.

    ``name`` is the kind (MIG profile ``3g.40gb``, vGPU type ``L40S-4Q``,
    VF kind ``MI300X-CPX``); ``total`` how many units the provider offers.
    ``total`` is normally ``len(handles)``; an mdev parent may offer more
    units than handles listed when handles are created on demand.
    """
    name: str
    resource_class: str
    traits: list[str]
    handles: list[AttachHandle]
    total: int
    #: Units Placement has allocated on the provider, when asked (None:
    #: unknown). Set for unhealthy GPUs only.
    allocated: int | None = None

    @property
    def in_use(self):
        return sum(1 for handle in self.handles if handle.in_use)


@dataclasses.dataclass
class Gpu:
    """One physical GPU (a PCI physical function) and its slices.

    ``numa_node`` is None when unknown; ``link_domain`` is the id of the
    NVLink clique or xGMI hive the GPU belongs to, None when it has none.
    ``healthy`` False means the GPU must stop being offered (lost, fallen
    off the bus, failed ECC); its units in use are still reported.
    ``stub`` True means the GPU cannot be read now and is reported as a
    Cyborg stub: the conductor neither adds nor deletes anything for it, so
    what Cyborg and Placement hold for it stays until it reads again.
    ``unknown_units`` are the addresses (VFs, mdev parents) whose state
    the scan could not read: a unit the last report had in use there
    stays reported in use.
    """
    address: str
    vendor_id: str
    device_id: str
    model: str
    memory_mib: int
    numa_node: int | None = None
    link_domain: str | None = None
    healthy: bool = True
    stub: bool = False
    traits: list[str] = dataclasses.field(default_factory=list)
    slices: list[Slice] = dataclasses.field(default_factory=list)
    board_info: dict = dataclasses.field(default_factory=dict)
    unknown_units: frozenset = frozenset()


@dataclasses.dataclass
class HostInventory:
    hostname: str
    gpus: list[Gpu] = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)


def offered_total(gpu, slice_):
    """How many units of ``slice_`` Placement may offer.

    A healthy GPU offers all of them. An unhealthy one offers only what is
    in use or allocated in Placement, so nothing new lands on it while
    Placement keeps its allocations (a provider with allocations cannot be
    deleted: Cyborg's conductor would abort the host's report). When the
    allocations are unknown, the whole last total stays.
    """
    if gpu.healthy:
        return slice_.total
    if slice_.allocated is None:
        return slice_.total
    return max(slice_.in_use, slice_.allocated)


def keep_units_in_use(previous, current):
    """``current`` plus the in-use handles ``previous`` had on units
    ``current`` could not read (``current.unknown_units``).

    Unknown state counts as in use: a VF whose type became unreadable, or
    that vanished in the middle of a scan, keeps its guest's unit.
    """
    present = {(handle.attach_type, handle.address, handle.mark)
               for slice_ in current.slices for handle in slice_.handles}
    slices = {slice_.name: slice_ for slice_ in current.slices}
    kept = []
    for old in previous.slices:
        carried = [handle for handle in old.handles if handle.in_use and
                   handle.address in current.unknown_units and
                   (handle.attach_type, handle.address, handle.mark)
                   not in present]
        if not carried:
            continue
        new = slices.get(old.name)
        if new is None:
            new = dataclasses.replace(old, handles=[], total=0)
            kept.append(new)
        new.handles = sorted(new.handles + carried,
                             key=lambda h: (h.address, h.mark or ''))
        new.total += len(carried)
    return dataclasses.replace(current, slices=current.slices + kept)
