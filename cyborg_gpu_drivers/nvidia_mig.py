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
"""Cyborg driver for NVIDIA MIG: ``gpu_partitions_nvidia_mig``.

Reports every NVIDIA GPU with MIG enabled as one Cyborg device, with one
deployable (one Placement provider) per MIG profile that reaches guests
through a MIG-backed vGPU type:

* on Hopper and Blackwell, through SR-IOV VFs of NVIDIA's vendor VFIO
  interface: one ``PCI`` attach handle per VF whose ``current_vgpu_type``
  is a MIG-backed type of that profile;
* on Ampere, through mdev: one ``MDEV`` attach handle per VF (mdev parent)
  that holds or can create such a type (when Cyborg binds such a request
  its agent creates the mdev and Nova 34's libvirt driver gives it to the
  guest, see the operator guide).

The GPU's traits name its vendor, model, NUMA node (sysfs ``numa_node``),
NVLink clique (NVML peer status, numbered by lowest PCI address) and CUDA
capability where os-traits has a name for it; each provider adds its MIG
profile. GPUs NVML cannot read are handled one by one, see
:meth:`NvidiaMigDriver._unreadable`.
"""

import dataclasses

from oslo_config import cfg
from oslo_log import log as logging

from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import base
from cyborg_gpu_drivers import conf  # noqa: F401  (registers the options)
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import mig_layouts
from cyborg_gpu_drivers import nvidia_vfio
from cyborg_gpu_drivers import privsep
import placement_traits

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

NVIDIA_VENDOR_ID = '10de'
# PCI classes of NVIDIA GPUs: VGA controller and 3D controller.
GPU_CLASSES = ('0x0300', '0x0302')
MDEV_TYPES_DIR = 'mdev_supported_types'


def nvidia_gpu_addresses(sysfs):
    """PCI addresses of the NVIDIA GPUs (PFs) the nvidia driver holds."""
    return [address for address in sysfs.devices_of_vendor(NVIDIA_VENDOR_ID)
            if (sysfs.read(address, 'class') or '').startswith(GPU_CLASSES)
            and sysfs.driver(address) == 'nvidia']


def stub_gpu(sysfs, address):
    """A GPU NVML cannot read now, sent as a Cyborg stub.

    Cyborg's conductor leaves what it holds for a stub as it is.
    """
    device_id = sysfs.device_id(address) or ''
    return inventory.Gpu(address=address, vendor_id=NVIDIA_VENDOR_ID,
                         device_id=device_id, model='NVIDIA %s' % device_id,
                         memory_mib=0, healthy=False, stub=True)


@dataclasses.dataclass(frozen=True)
class MdevParent:
    """An mdev parent (a VF on Ampere).

    ``available`` maps each mdev type to the instances it can create now;
    ``created`` lists the types of the mdevs that exist on it.
    """
    address: str
    available: dict
    created: tuple


# --- plain logic ------------------------------------------------------------

def nvlink_cliques(devices, are_peers):
    """``{address: clique id}`` for GPUs with at least one NVLink peer.

    Cliques are the connected components of ``are_peers(a, b)``; ids are
    ``0, 1, ...`` in the order of each clique's lowest PCI address, so they
    do not depend on NVML's enumeration order. ``are_peers`` is asked only
    for pairs not already joined.
    """
    ordered = sorted(devices, key=lambda device: device.address)
    parent = {device.address: device.address for device in ordered}

    def root(address):
        while parent[address] != address:
            address = parent[address]
        return address

    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            if root(first.address) != root(second.address) and \
                    are_peers(first, second):
                parent[root(second.address)] = root(first.address)
    members = {}
    for device in ordered:
        members.setdefault(root(device.address), []).append(device.address)
    cliques = {}
    groups = sorted((group for group in members.values() if len(group) > 1),
                    key=lambda group: group[0])
    for number, group in enumerate(groups):
        for address in group:
            cliques[address] = number
    return cliques


def mig_types_by_profile(vgpu_types, series=None):
    """``{GPU instance profile id: [type ids]}`` of the MIG-backed types.

    With ``series``, the types of that series (``C`` in ``H100XM-3-40C``
    or ``H100XM-1-10CME``) come first.
    """
    found = {}
    for vgpu_type in vgpu_types:
        if vgpu_type.mig_backed:
            found.setdefault(vgpu_type.gpu_instance_profile_id, []).append(
                vgpu_type)
    return {
        profile_id: [t.id for t in sorted(
            types, key=lambda t: (vgpu_series(t.name) != series, t.id))]
        for profile_id, types in found.items()}


def vgpu_series(type_name):
    """``NVIDIA H100XM-3-40C`` gives ``C``; ``...-1-10CME`` gives ``C``."""
    tail = placement_traits.vgpu_short_name(type_name).rpartition('-')[2]
    letters = tail.lstrip('0123456789')
    return letters[:1].upper() or None


def mig_slice(profile, handles):
    return inventory.Slice(
        name=profile.name,
        resource_class=placement_traits.mig_resource_class(profile.name),
        traits=sorted({placement_traits.mig_profile_trait(profile.name),
                       placement_traits.TRAIT_MIG_BACKED,
                       placement_traits.framebuffer_trait(
                           profile.memory_mib)}),
        handles=handles, total=len(handles))


def _limit(address, profile, in_use, free, instances, note):
    """Offer no more units than complete GPU instances back them.

    Units in use are always kept: Placement must never lose them.
    """
    room = max(instances - len(in_use), 0)
    if len(free) > room:
        note('GPU %s: %d units of %s are set up but only %d complete GPU '
             'instances back them; offering %d'
             % (address, len(in_use) + len(free), profile.name, instances,
                len(in_use) + room))
    return free[:room]


def vf_slices(address, profiles, complete_instances, types_by_profile, vfs,
              in_use_addresses, note=LOG.warning):
    """Slices of a vendor-VFIO GPU: one PCI handle per VF holding a type.

    A VF is in use when NVML runs a vGPU on it. Profiles whose GPU
    instances no VF holds reach no guest and are logged, not offered.
    """
    slices = []
    for profile in profiles:
        type_ids = set(types_by_profile.get(profile.id, ()))
        instances = sum(1 for gi in complete_instances
                        if gi.profile_id == profile.id)
        holders = [vf for vf in vfs if vf.current_type in type_ids]
        in_use = [vf for vf in holders if vf.address in in_use_addresses]
        free = _limit(address, profile, in_use,
                      [vf for vf in holders
                       if vf.address not in in_use_addresses], instances,
                      note)
        handles = sorted(
            (inventory.AttachHandle(inventory.PCI, vf.address,
                                    in_use=vf in in_use)
             for vf in in_use + free), key=lambda h: h.address)
        if handles:
            slices.append(mig_slice(profile, handles))
        elif instances:
            note('GPU %s: %d GPU instances of %s reach no guest: no VF '
                 'holds a MIG-backed vGPU type of that profile'
                 % (address, instances, profile.name))
    return slices


def mdev_slices(address, profiles, complete_instances, types_by_profile,
                parents, note=LOG.warning):
    """Slices of an mdev GPU (Ampere): one MDEV handle per parent.

    A parent with a created mdev of the profile's type is a unit in use;
    parents that can create one are free units, at most one per complete
    GPU instance not yet taken.
    """
    slices = []
    for profile in profiles:
        type_names = ['nvidia-%d' % type_id
                      for type_id in types_by_profile.get(profile.id, ())]
        instances = sum(1 for gi in complete_instances
                        if gi.profile_id == profile.id)
        in_use, free = [], []
        for parent in parents:
            created = [t for t in parent.created if t in type_names]
            if created:
                in_use.append(inventory.AttachHandle(
                    inventory.MDEV, parent.address, mdev_type=created[0],
                    mark='%s_0' % created[0], in_use=True))
                continue
            usable = [t for t in type_names if parent.available.get(t)]
            if usable:
                free.append(inventory.AttachHandle(
                    inventory.MDEV, parent.address, mdev_type=usable[0],
                    mark='%s_0' % usable[0]))
        handles = in_use + _limit(address, profile, in_use, free, instances,
                                  note)
        if handles:
            slices.append(mig_slice(profile, sorted(
                handles, key=lambda h: h.address)))
    return slices


def gpu_traits(device, numa_node, clique):
    traits = {placement_traits.vendor_trait(NVIDIA_VENDOR_ID),
              placement_traits.model_trait(device.name)}
    for trait in (placement_traits.numa_node_trait(numa_node),
                  placement_traits.nvlink_clique_trait(clique)
                  if clique is not None else None,
                  placement_traits.cuda_capability_trait(
                      *device.cuda_capability)
                  if device.cuda_capability else None):
        if trait:
            traits.add(trait)
    return sorted(traits)


def is_busy(active_vgpus, vfs, parents):
    """Why a GPU must be left alone, or None when nothing runs on it."""
    if active_vgpus:
        return '%d vGPUs are running on it' % len(active_vgpus)
    held = [vf.address for vf in vfs if not vf.is_free]
    if held:
        return 'VFs %s hold a vGPU type' % ', '.join(held)
    created = [parent.address for parent in parents if parent.created]
    if created:
        return 'mdevs exist on %s' % ', '.join(created)
    return None


# --- the driver -------------------------------------------------------------

class NvidiaMigDriver(base.GpuPartitionDriver):
    """Reports MIG-backed vGPU slices of NVIDIA GPUs with MIG enabled."""

    DRIVER_NAME = 'gpu_partitions_nvidia_mig'

    def __init__(self, hostname=None, nvml=None, sysfs_root=None,
                 libvirt_uri=None, amdsmi=None, apply_layout=None,
                 write_vgpu_type=None):
        super().__init__(hostname)
        self._nvml = nvml_adapter.Nvml(nvml)
        self._sysfs = sysfs_adapter.Sysfs(
            sysfs_root or CONF.gpu_partitions.sysfs_root)
        # Tests inject the writers; production goes through privsep.
        self._apply_layout = (apply_layout or
                              privsep.privileged_apply_mig_layout)
        self._write_vgpu_type = (write_vgpu_type or
                                 privsep.privileged_write_vgpu_type)
        self._series = CONF.nvidia_mig.vgpu_series
        self._declarations = mig_layouts.parse_declarations(
            CONF.nvidia_mig.layout)
        self._layouts_pending = bool(self._declarations)
        # address -> the Gpu last reported, to keep a GPU that stops
        # answering reported with what it had in use.
        self._known = {}
        self._stubs = set()
        self._problems_before = self._problems_now = set()
        self._last_nvml_error = None
        if self._declarations:
            self._check_layouts()

    # --- start-up -------------------------------------------------------

    def _check_layouts(self):
        """Refuse layouts that cannot be built on this host's GPUs.

        Raises :class:`mig_layouts.LayoutError` naming the option and the
        allowed profiles. Skipped (checked again at apply time) when NVML
        cannot be read now.
        """
        try:
            with self._nvml.session() as session:
                for device in session.devices():
                    layout = self._layout_for(device)
                    if layout is not None and device.mig_enabled:
                        mig_layouts.plan(
                            layout, session.gpu_instance_profiles(device),
                            where='%s (%s)' % (device.address, device.name))
        except nvml_adapter.NvmlError as error:
            LOG.warning('%s is set but NVML cannot be read now (%s); the '
                        'layouts are checked when they are applied',
                        mig_layouts.OPTION, error)

    def _layout_for(self, device):
        if device.lost:
            return None
        return mig_layouts.declaration_for(self._declarations,
                                           device.address, device.name)

    # --- discover ---------------------------------------------------------

    def collect(self):
        self._stubs = set()
        self._problems_now = set()
        try:
            with self._nvml.session() as session:
                gpus = self._collect(session)
            self._last_nvml_error = None
        except nvml_adapter.NvmlUnavailable as error:
            gpus = self._nvml_unavailable(error)
        finally:
            self._problems_before = self._problems_now
        self._known = {gpu.address: gpu for gpu in gpus
                       if gpu.address not in self._stubs}
        return inventory.HostInventory(hostname=self.hostname, gpus=gpus)

    def _note(self, message, log=LOG.warning):
        """Log a problem once while it lasts, not at every scan."""
        self._problems_now.add(message)
        if message not in self._problems_before:
            log(message)

    def _nvml_unavailable(self, error):
        if str(error) != self._last_nvml_error:
            LOG.error('NVIDIA MIG driver: NVML unavailable (%s); reporting '
                      'no MIG GPU', error)
            self._last_nvml_error = str(error)
        if self._known:
            # A host that had GPUs a minute ago: a transient failure. The
            # base re-sends the last good report as stubs.
            raise error
        # At start-up: GPUs the nvidia driver holds may have providers
        # (and guests) from before; keep them untouched, add nothing.
        return [self._stub(address)
                for address in nvidia_gpu_addresses(self._sysfs)]

    def _stub(self, address):
        self._stubs.add(address)
        return stub_gpu(self._sysfs, address)

    def _collect(self, session):
        devices = session.devices()
        readable = [device for device in devices if not device.lost]
        cliques = nvlink_cliques(
            [device for device in readable if session.has_nvlink(device)],
            session.nvlink_peers)
        gpus = []
        for device in sorted(readable, key=lambda d: d.address):
            if not device.mig_enabled:
                continue
            try:
                gpus.append(self._gpu(session, device,
                                      cliques.get(device.address)))
            except nvml_adapter.NvmlError as error:
                gpu = self._unreadable(session, device.address, error)
                if gpu is not None:
                    gpus.append(gpu)
        if len(readable) < len(devices):
            # NVML names no address for a lost GPU: it is the nvidia-held
            # GPU sysfs shows and NVML does not.
            seen = {device.address for device in readable}
            for address in nvidia_gpu_addresses(self._sysfs):
                if address not in seen:
                    gpu = self._unreadable(session, address,
                                           'the GPU is lost')
                    if gpu is not None:
                        gpus.append(gpu)
        self._layouts_pending = False
        return gpus

    def _unreadable(self, session, address, reason):
        """A GPU NVML cannot read (lost, fallen off the bus, erroring).

        Reported at the last scan: reported again as unhealthy with what
        it had, so only its units in use stay in Placement. Not known (the
        agent restarted) but its VFs or mdevs hold MIG-backed vGPU types:
        a stub, so Cyborg keeps what it holds for it. Otherwise it is not
        a MIG GPU and is left to the other drivers.
        """
        known = self._known.get(address)
        if known is not None:
            self._note('GPU %s stopped answering NVML (%s): no longer '
                       'offered; its units in use stay reported'
                       % (address, reason), LOG.error)
            return dataclasses.replace(known, healthy=False)
        if self._holds_mig_types(session, address):
            self._note('GPU %s does not answer NVML (%s) and holds '
                       'MIG-backed vGPU types: reported as a stub so '
                       'Cyborg keeps what it holds for it; disable the '
                       'device in Cyborg to stop new guests landing on it'
                       % (address, reason), LOG.error)
            return self._stub(address)
        self._note('GPU %s does not answer NVML (%s) and shows no MIG-backed '
                   'vGPU type; not reporting it' % (address, reason))
        return None

    def _holds_mig_types(self, session, address):
        type_ids = {vf.current_type
                    for vf in nvidia_vfio.list_vfs(self._sysfs, address)
                    if vf.current_type}
        for parent in self._mdev_parents(address):
            for name in parent.created + tuple(parent.available):
                if name.startswith('nvidia-') and name[7:].isdigit():
                    type_ids.add(int(name[7:]))
        for type_id in type_ids:
            try:
                if session.vgpu_type(type_id).mig_backed:
                    return True
            except nvml_adapter.NvmlError:
                continue
        return False

    def _gpu(self, session, device, clique):
        address = device.address
        profiles = session.gpu_instance_profiles(device)
        types_by_profile = mig_types_by_profile(
            session.supported_vgpu_types(device), self._series)
        instances = session.gpu_instances(device, profiles)
        active = session.active_vgpus(device)
        vfs = nvidia_vfio.list_vfs(self._sysfs, address)
        parents = self._mdev_parents(address)
        if self._layouts_pending:
            if self._apply_declared_layout(session, device, profiles,
                                           instances, types_by_profile,
                                           active, vfs, parents):
                instances = session.gpu_instances(device, profiles)
                vfs = nvidia_vfio.list_vfs(self._sysfs, address)
        complete = []
        for gpu_instance in instances:
            if gpu_instance.complete:
                complete.append(gpu_instance)
            else:
                self._note('GPU %s: GPU instance %d (profile id %d at %d) '
                           'has no compute instance (half-created); '
                           'skipping it' % (address, gpu_instance.id,
                                            gpu_instance.profile_id,
                                            gpu_instance.start))
        if vfs:
            slices = vf_slices(address, profiles, complete,
                               types_by_profile, vfs,
                               {vgpu.address for vgpu in active}, self._note)
        elif parents:
            slices = mdev_slices(address, profiles, complete,
                                 types_by_profile, parents, self._note)
        else:
            slices = []
            if complete:
                self._note('GPU %s has MIG on but neither vendor-VFIO VFs '
                           'nor mdev parents: its GPU instances reach no '
                           'guest (enable SR-IOV with sriov-manage)'
                           % address)
        numa_node = self._sysfs.numa_node(address)
        names = {profile.id: profile.name for profile in profiles}
        return inventory.Gpu(
            address=address, vendor_id=NVIDIA_VENDOR_ID,
            device_id=device.device_id, model=device.name,
            memory_mib=device.memory_mib, numa_node=numa_node,
            link_domain=None if clique is None else str(clique),
            traits=gpu_traits(device, numa_node, clique),
            slices=slices,
            board_info={
                'uuid': device.uuid,
                'gpu_instances': [
                    '%s@%d+%d' % (names.get(gi.profile_id, gi.profile_id),
                                  gi.start, gi.size) for gi in complete]})

    def _mdev_parents(self, address):
        """mdev parents of a GPU: its VFs with mdev types, else the PF."""
        candidates = [vf for _, vf in self._sysfs.virtfns(address)] or \
            [address]
        parents = []
        for candidate in candidates:
            types = self._sysfs.list_names(candidate, MDEV_TYPES_DIR)
            if not types:
                continue
            available = {
                name: self._sysfs.read_int(candidate, MDEV_TYPES_DIR + '/' +
                                           name + '/available_instances')
                or 0 for name in types}
            created = tuple(
                self._sysfs.link_name(candidate, entry + '/mdev_type')
                for entry in self._sysfs.list_names(candidate)
                if self._sysfs.link_name(candidate, entry + '/mdev_type'))
            parents.append(MdevParent(candidate, available, created))
        return parents

    # --- declared layouts -------------------------------------------------

    def _apply_declared_layout(self, session, device, profiles, instances,
                               types_by_profile, active, vfs, parents):
        """Apply the layout declared for an idle GPU; True if it changed."""
        layout = self._layout_for(device)
        if layout is None:
            return False
        where = '%s (%s)' % (device.address, device.name)
        try:
            planned = mig_layouts.plan(layout, profiles, where=where)
        except mig_layouts.LayoutError as error:
            LOG.error('%s; leaving the GPU as it is', error)
            return False
        if mig_layouts.matches(planned,
                               [gi for gi in instances if gi.complete]):
            LOG.info('GPU %s already has the layout %s', where, layout.text)
            return False
        busy = is_busy(active, vfs, parents)
        if busy:
            LOG.warning('GPU %s: not applying %s %s because %s; reporting '
                        'what exists', where, mig_layouts.OPTION,
                        layout.text, busy)
            return False
        try:
            self._apply_layout(device.address, planned)
        except Exception as error:
            LOG.error('GPU %s: applying %s failed: %s', where, layout.text,
                      error)
            return False
        LOG.info('GPU %s: applied MIG layout %s', where, layout.text)
        self._assign_vf_types(device.address, planned, types_by_profile)
        return True

    def _assign_vf_types(self, address, planned, types_by_profile):
        """Give one free VF per new GPU instance its MIG-backed type."""
        free = [vf for vf in nvidia_vfio.list_vfs(self._sysfs, address)
                if vf.is_free]
        for profile_id, _start in planned:
            type_ids = types_by_profile.get(profile_id, ())
            if not type_ids:
                continue
            for vf in list(free):
                wanted = next((t for t in type_ids if vf.offers(t)), None)
                if wanted is None:
                    continue
                try:
                    nvidia_vfio.assign_type(self._sysfs, vf.address, wanted,
                                            writer=self._write_vgpu_type)
                except nvidia_vfio.VfioError as error:
                    LOG.warning('GPU %s: %s', address, error)
                    continue
                free.remove(vf)
                break
            else:
                LOG.warning('GPU %s: no free VF can take a MIG-backed vGPU '
                            'type of profile id %d', address, profile_id)
