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
"""What the NVIDIA MIG and vGPU drivers share: GPUs sysfs shows, NVLink
cliques, GPU traits, the slices (providers) they report and the NVML scan
both drivers run per GPU.

The drivers never import each other; both import this module, and so does
the simulator's fleet (:mod:`gpu_partitions.simulator.fleet`), which
builds its hosts' inventories with the same slice and trait builders.
Nothing here imports Cyborg.
"""

import dataclasses

from oslo_log import log as logging

from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import nvidia_vfio
from cyborg_gpu_drivers import vgpu_types
import placement_traits

LOG = logging.getLogger(__name__)

NVIDIA_VENDOR_ID = '10de'
# PCI classes of NVIDIA GPUs: VGA controller and 3D controller.
GPU_CLASSES = ('0x0300', '0x0302')


def nvidia_gpu_addresses(sysfs):
    """PCI addresses of the NVIDIA GPUs (PFs) the nvidia driver holds.

    A PF whose ``vendor`` cannot be read counts when bound to ``nvidia``
    unless its class shows it is no GPU (an NVSwitch): it may hold guests,
    and a class that cannot be read is unknown, not another device's.
    """
    devices = sysfs.devices_by_vendor(NVIDIA_VENDOR_ID)
    found = [address for address in devices.of_vendor
             if (sysfs.read(address, 'class') or '').startswith(GPU_CLASSES)
             and sysfs.driver(address) == 'nvidia']
    for address in devices.unidentified:
        device_class = sysfs.read(address, 'class')
        if sysfs.driver(address) == 'nvidia' and (
                device_class is None
                or device_class.startswith(GPU_CLASSES)):
            found.append(address)
    return sorted(found)


def has_vendor_vfio_vfs(sysfs, address):
    """True when a VF of the GPU has NVIDIA's vendor VFIO interface.

    Asked before listing the VFs, so that the VFs of an mdev GPU (Ampere,
    pre-Ada) are not each reported as lacking that interface.
    """
    return any(nvidia_vfio.has_vendor_vfio(sysfs, vf)
               for _, vf in sysfs.virtfns(address))


def stub_gpu(sysfs, address):
    """A GPU NVML cannot read now, sent as a Cyborg stub.

    Cyborg's conductor leaves what it holds for a stub as it is.
    """
    device_id = sysfs.device_id(address) or ''
    return inventory.Gpu(address=address, vendor_id=NVIDIA_VENDOR_ID,
                         device_id=device_id, model='NVIDIA %s' % device_id,
                         memory_mib=0, healthy=False, stub=True)


def nvlink_cliques(devices, are_peers):
    """``{address: clique id}``: NVLink cliques, each GPU in at most one.

    Every pair of GPUs of one clique is an NVLink P2P pair
    (``are_peers(a, b)``, asked once per pair): a provider carries one
    clique trait, and two GPUs with the same trait must reach each other.
    Where the links form a partial mesh (peers 1-2 and 2-3 but not 1-3: a
    4-way bridge with a failed link), maximal cliques overlap, so the GPUs
    are partitioned: the largest clique of GPUs not yet numbered is taken
    first, and among equally large ones the one whose sorted PCI addresses
    come first; this repeats until no two GPUs left are peers. A GPU in
    several maximal cliques thus joins the largest (1-2 above; 3 gets no
    clique). Ids are ``0, 1, ...`` in the order of each clique's lowest PCI
    address, so they do not depend on NVML's enumeration order.
    """
    ordered = sorted(devices, key=lambda device: device.address)
    peers = {device.address: set() for device in ordered}
    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            if are_peers(first, second):
                peers[first.address].add(second.address)
                peers[second.address].add(first.address)
    left = [device.address for device in ordered]
    groups = []
    while True:
        clique = largest_clique(left, peers)
        if len(clique) < 2:
            break
        groups.append(clique)
        left = [address for address in left if address not in clique]
    cliques = {}
    for number, group in enumerate(sorted(groups)):
        for address in group:
            cliques[address] = number
    return cliques


def largest_clique(nodes, adjacent):
    """The largest set of ``nodes`` all adjacent to each other, as a
    tuple in the order of ``nodes``; the first in that order among equally
    large ones.

    A depth-first search visits the cliques in lexicographic order and
    keeps only a strictly larger one, cutting branches that cannot grow
    past the best found (a host has at most a few dozen GPUs).
    """
    best = ()

    def grow(clique, candidates):
        nonlocal best
        if len(clique) > len(best):
            best = clique
        for i, node in enumerate(candidates):
            if len(clique) + len(candidates) - i <= len(best):
                return
            grow(clique + (node,), [other for other in candidates[i + 1:]
                                    if other in adjacent[node]])

    grow((), list(nodes))
    return best


def gpu_traits(device, numa_node):
    """Traits every provider of the GPU carries: vendor, model, NUMA node
    and CUDA capability. The NVLink clique is not one of them: it belongs
    only to slices that get P2P (see :func:`link_traits`).
    """
    traits = {placement_traits.vendor_trait(NVIDIA_VENDOR_ID),
              placement_traits.model_trait(device.name)}
    for trait in (placement_traits.numa_node_trait(numa_node),
                  placement_traits.cuda_capability_trait(
                      *device.cuda_capability)
                  if device.cuda_capability else None):
        if trait:
            traits.add(trait)
    return sorted(traits)


def link_traits(clique):
    """The NVLink clique trait of a slice that gets NVLink P2P.

    NVIDIA gives P2P to whole GPUs and to time-sliced vGPUs that own the
    whole framebuffer, never to MIG-backed vGPUs (NVIDIA AI Enterprise,
    vGPU for Compute, "Peer-To-Peer (P2P) CUDA Transfers"), so only those
    slices carry it; ``[]`` for a GPU without clique.
    """
    if clique is None:
        return []
    return [placement_traits.nvlink_clique_trait(clique)]

# --- slices, as both drivers and the simulator build them -----------------


@dataclasses.dataclass(frozen=True)
class TypeFacts:
    """A vGPU type as the driver reports it."""
    name: vgpu_types.TypeName
    framebuffer_mib: int | None
    max_instances: int | None


def mig_slice(profile, handles):
    return inventory.Slice(
        name=profile.name,
        resource_class=placement_traits.mig_resource_class(profile.name),
        traits=sorted({placement_traits.mig_profile_trait(profile.name),
                       placement_traits.TRAIT_MIG_BACKED,
                       mig_framebuffer_trait(profile)}),
        handles=handles, total=len(handles))


def mig_framebuffer_trait(profile):
    """The nominal size of NVIDIA's profile table (``1g.10gb``: 10 GB),
    as vGPU type names give theirs; NVML's figure (9,728 MiB there on an
    A100 80GB) only for a name without one.
    """
    nominal = placement_traits.mig_profile_framebuffer_gb(profile.name)
    if nominal is None:
        return placement_traits.framebuffer_trait(profile.memory_mib)
    return placement_traits.nominal_framebuffer_trait(nominal)


def vgpu_slice(facts, handles, mixed_size, clique=None):
    """One provider: a vGPU type on one physical GPU.

    The framebuffer trait is the nominal size the type's name gives
    (``A100DX-80C``: 80 GB), as NVIDIA's type tables list it; NVML's
    figure only for a name without one. The GPU's NVLink ``clique``
    becomes a trait only for a type that owns the whole framebuffer (one
    instance per GPU): NVIDIA gives NVLink P2P to no other vGPU.
    """
    name = facts.name
    traits = set()
    if name.series:
        traits.add(placement_traits.vgpu_series_trait(name.series))
    if name.framebuffer_gb is not None:
        traits.add(placement_traits.nominal_framebuffer_trait(
            name.framebuffer_gb))
    elif facts.framebuffer_mib is not None:
        traits.add(placement_traits.framebuffer_trait(facts.framebuffer_mib))
    if mixed_size:
        traits.add(placement_traits.TRAIT_VGPU_HETEROGENEOUS)
    if owns_whole_gpu(facts):
        traits.update(link_traits(clique))
    handles = sorted(handles, key=lambda h: (h.address, h.mark or ''))
    return inventory.Slice(
        name=name.short,
        resource_class=placement_traits.vgpu_resource_class(name.full),
        traits=sorted(traits), handles=handles, total=len(handles))


def owns_whole_gpu(facts):
    """True for a time-sliced type of which one instance fills the GPU.

    Unknown (NVML cannot give the type's maximum) is False: link affinity
    never counts on P2P it cannot show.
    """
    return not facts.name.mig_backed and facts.max_instances == 1


class NvidiaScanMixin:
    """The NVML side of the base's scan skeleton, for both NVIDIA drivers.

    A driver sets ``self._nvml`` (an ``adapters.nvml.Nvml``) and
    ``self._sysfs`` and implements ``_gpu(session, device, clique)``
    (None for a GPU that is not its own), ``owns(device)`` and
    ``_apply_gpu(session, index)``.
    """

    def bound_gpus(self):
        return nvidia_gpu_addresses(self._sysfs)

    def unknown_may_run_guests(self, address, unknown, busy):
        """True (noted) when GPU ``address``, not reported since the agent
        started, has VFs whose state cannot be read (``unknown``) and NVML
        runs a vGPU on one of them, or cannot say (``busy`` None).

        The base keeps such a unit in use from the last report; with none,
        a report leaving the unit out would have Cyborg's conductor
        delete an attach handle a guest may hold. The GPU is then sent as
        a stub (``self.STUB``) until it reads whole or is reported once.
        """
        if not unknown or self.known_gpu(address) is not None:
            return False
        running = sorted(unknown if busy is None else unknown & busy)
        if not running:
            return False
        self.note('GPU %s: VFs %s run a vGPU or may (NVML) but their state '
                  'cannot be read, and no report since the agent started '
                  'holds their units; reported as a stub so Cyborg keeps '
                  'what it holds for it' % (address, ', '.join(running)),
                  LOG.error)
        return True

    def stub_gpu(self, address):
        return stub_gpu(self._sysfs, address)

    def open_session(self):
        return self._nvml.session()

    def scan(self, session):
        """``{address: Gpu or None}``; each GPU read on its own.

        A GPU whose identity NVML cannot give is not in the result: the
        base reports it from sysfs (stub) or from its last report.
        """
        count = self.bounded('nvmlDeviceGetCount', session.device_count)
        devices = []
        for index in range(count):
            device = self.contained('GPU index %d' % index,
                                    session.device, index)
            if device is not None and not device.lost:
                devices.append(device)
        mine = [device for device in devices if self.owns(device)]
        cliques = self.contained(
            'NVLink cliques', self._cliques, session, devices)
        found = {device.address: None for device in devices
                 if not self.owns(device)}
        for device in mine:
            clique = (cliques.get(device.address) if cliques is not None
                      else self.known_link_domain(device.address))
            gpu = self.contained(device.address, self._gpu, session, device,
                                 clique, failed=self.FAILED)
            if gpu is not self.FAILED:
                found[device.address] = gpu
        return found

    def apply(self):
        """``_apply_gpu(session, index)`` for every GPU, each contained
        and bounded like a scan; nothing without declarations
        (``self._declarations`` of the option ``APPLIES``).
        """
        if not self._declarations:
            return
        with self._nvml.session() as session:
            for index in range(session.device_count()):
                self.contained('applying %s to GPU index %d'
                               % (self.APPLIES, index),
                               self._apply_gpu, session, index)

    def _cliques(self, session, devices):
        # Over every GPU with NVLink, whichever driver owns it, so both
        # drivers number one clique alike. A GPU or a pair NVML
        # cannot answer for counts as unlinked: it costs that GPU its
        # clique trait, never the other GPUs theirs.
        linked = [device for device in devices if self.contained(
            '%s NVLink' % device.address, session.has_nvlink, device,
            failed=False)]
        return nvlink_cliques(linked, lambda first, second: self.contained(
            'NVLink between %s and %s' % (first.address, second.address),
            session.nvlink_peers, first, second, failed=False))

    def known_link_domain(self, address):
        known = self.known_gpu(address)
        if known is None or known.link_domain is None:
            return None
        return int(known.link_domain)


def active_vgpu_addresses(session, device):
    """Addresses of the VFs running a vGPU, None when NVML cannot say."""
    active = session.active_vgpus(device)
    if active is None:
        return None
    return {vgpu.address for vgpu in active}
