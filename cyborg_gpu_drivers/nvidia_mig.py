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
  guest, see the operator guide). An Ampere VF holds one mdev, so each VF
  is offered by one profile's provider at most.

The GPU's traits name its vendor, model, NUMA node (sysfs ``numa_node``)
and CUDA capability where os-traits has a name for it; each provider adds
its MIG profile and nominal framebuffer. No NVLink clique trait: MIG-backed
vGPUs get no GPU-to-GPU P2P (NVIDIA vGPU for Compute, "Peer-To-Peer (P2P)
CUDA Transfers"), so link affinity has nothing to offer them. GPUs NVML
cannot read are handled one by one by the scan skeleton of
:mod:`cyborg_gpu_drivers.base`. Declared layouts
(``[nvidia_mig] layout``) are applied by :meth:`NvidiaMigDriver.apply`, a
step of its own, retried at every pass until the GPU has them.

With ``[nvidia_mig] mode = on_demand`` an mdev GPU is offered as a set of
profiles that can all be placed together (:func:`mig_geometry.offer`,
computed from the instances that exist and the units Placement has
allocated), and :meth:`NvidiaMigDriver.prepare_unit` creates the GPU
instance a unit needs when Cyborg binds it, at the start the
fragmentation score picks; :meth:`NvidiaMigDriver.release_unit` destroys
it when the unit is released. Cyborg's agent calls neither:
:mod:`cyborg_gpu_drivers.agent` is the agent that does.
"""

import collections
import contextlib
import dataclasses
import threading

from oslo_config import cfg
from oslo_log import log as logging

from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import base
from cyborg_gpu_drivers import conf  # noqa: F401  (registers the options)
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import mig_geometry
from cyborg_gpu_drivers import mig_layouts
from cyborg_gpu_drivers import nvidia_common
from cyborg_gpu_drivers import nvidia_vfio
from cyborg_gpu_drivers import privsep
import placement_traits

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

NVIDIA_VENDOR_ID = nvidia_common.NVIDIA_VENDOR_ID
MDEV_TYPES_DIR = 'mdev_supported_types'


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

    A VF is in use when NVML runs a vGPU on it; every VF holding a type
    is when NVML cannot say (``in_use_addresses`` None). Profiles whose
    GPU instances no VF holds reach no guest and are logged, not offered.
    """
    if in_use_addresses is None:
        in_use_addresses = {vf.address for vf in vfs if vf.current_type}
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
            slices.append(nvidia_common.mig_slice(profile, handles))
        elif instances:
            note('GPU %s: %d GPU instances of %s reach no guest: no VF '
                 'holds a MIG-backed vGPU type of that profile'
                 % (address, instances, profile.name))
    return slices


def mdev_slices(profiles, complete_instances, types_by_profile, parents):
    """Slices of an mdev GPU (Ampere): one MDEV handle per parent.

    A parent (VF) holds one mdev, so the parents are shared out once for
    all profiles: a parent with a created mdev of a profile's type is a
    unit in use of that profile; a free parent goes to one profile only,
    and each profile gets at most one free parent per complete GPU
    instance not yet taken. Profiles whose types the fewest free parents
    can create choose first, taking the parents that serve the fewest
    profiles, so a parent able to serve several is kept for the others.
    Every free VF offering every type until the GPU instances are used is
    the normal state of such a GPU, not a problem.
    """
    names = {profile.id: ['nvidia-%d' % type_id for type_id in
                          types_by_profile.get(profile.id, ())]
             for profile in profiles}
    in_use = {profile.id: [] for profile in profiles}
    free_parents = []
    for parent in sorted(parents, key=lambda p: p.address):
        if not parent.created:
            free_parents.append(parent)
            continue
        for profile in profiles:
            created = [t for t in parent.created if t in names[profile.id]]
            if created:
                in_use[profile.id].append(inventory.AttachHandle(
                    inventory.MDEV, parent.address, mdev_type=created[0],
                    mark='%s_0' % created[0], in_use=True))
                break

    def usable(parent, profile):
        return next((t for t in names[profile.id]
                     if parent.available.get(t)), None)

    serves = {parent.address: sum(1 for profile in profiles
                                  if usable(parent, profile))
              for parent in free_parents}
    room = {profile.id: max(sum(1 for gi in complete_instances
                                if gi.profile_id == profile.id) -
                            len(in_use[profile.id]), 0)
            for profile in profiles}
    taken = set()
    free = {profile.id: [] for profile in profiles}
    for profile in sorted(profiles, key=lambda p: (
            sum(1 for parent in free_parents if usable(parent, p)), p.id)):
        candidates = sorted(
            (parent for parent in free_parents
             if parent.address not in taken and usable(parent, profile)),
            key=lambda parent: (serves[parent.address], parent.address))
        for parent in candidates[:room[profile.id]]:
            taken.add(parent.address)
            mdev_type = usable(parent, profile)
            free[profile.id].append(inventory.AttachHandle(
                inventory.MDEV, parent.address, mdev_type=mdev_type,
                mark='%s_0' % mdev_type))
    slices = []
    for profile in profiles:
        handles = in_use[profile.id] + free[profile.id]
        if handles:
            slices.append(nvidia_common.mig_slice(profile, sorted(
                handles, key=lambda h: h.address)))
    return slices


def is_busy(active_vgpus, vfs, parents, unknown=()):
    """Why a GPU must be left alone, or None when nothing runs on it.

    ``active_vgpus`` None (NVML cannot say) or VFs of ``unknown`` state
    count as busy.
    """
    if active_vgpus is None:
        return 'NVML cannot list the vGPUs running on it'
    if unknown:
        return 'the state of VFs %s cannot be read' % ', '.join(
            sorted(unknown))
    if active_vgpus:
        return '%d vGPUs are running on it' % len(active_vgpus)
    held = [vf.address for vf in vfs if not vf.is_free]
    if held:
        return 'VFs %s hold a vGPU type' % ', '.join(held)
    created = [parent.address for parent in parents if parent.created]
    if created:
        return 'mdevs exist on %s' % ', '.join(created)
    return None


def placed_instances(address, profiles, gpu_instances):
    """``[(profile name, start)]`` of a GPU's instances, as
    :mod:`mig_geometry` places them.

    Raises :class:`nvml_adapter.NvmlError` for an instance of a profile id
    none of the GPU's profiles has: its slots cannot be placed, and an
    offer or a start chosen beside it would take them.
    """
    names = {profile.id: profile.name for profile in profiles}
    strange = [gi for gi in gpu_instances if gi.profile_id not in names]
    if strange:
        raise nvml_adapter.NvmlError(
            'GPU %s: NVML lists %s, but none of the GPU\'s profiles; its '
            'free slots are unknown' % (address, ', '.join(
                'GPU instance %d of profile id %d' % (gi.id, gi.profile_id)
                for gi in strange)))
    return [(names[gi.profile_id], gi.start) for gi in gpu_instances]


def _units_text(units):
    return ', '.join('%d x %s' % (count, profile)
                     for profile, count in sorted(units.items())) or 'nothing'


# --- the driver -------------------------------------------------------------

class NvidiaMigDriver(nvidia_common.NvidiaScanMixin,
                      base.GpuPartitionDriver):
    """Reports MIG-backed vGPU slices of NVIDIA GPUs with MIG enabled."""

    DRIVER_NAME = 'gpu_partitions_nvidia_mig'
    APPLIES = mig_layouts.OPTION

    def __init__(self, hostname=None, nvml=None, sysfs_root=None,
                 libvirt_uri=None, amdsmi=None, apply_layout=None,
                 write_vgpu_type=None, read_only=False,
                 create_gpu_instance=None, destroy_gpu_instance=None):
        super().__init__(hostname, read_only=read_only)
        self._nvml = nvml_adapter.Nvml(nvml)
        self._sysfs = sysfs_adapter.Sysfs(
            sysfs_root or CONF.gpu_partitions.sysfs_root)
        # Tests inject the writers; production goes through privsep.
        self._apply_layout = (apply_layout or
                              privsep.privileged_apply_mig_layout)
        self._write_vgpu_type = (write_vgpu_type or
                                 privsep.privileged_write_vgpu_type)
        self._create_gpu_instance = (
            create_gpu_instance or privsep.privileged_create_gpu_instance)
        self._destroy_gpu_instance = (
            destroy_gpu_instance or privsep.privileged_destroy_gpu_instance)
        self._series = CONF.nvidia_mig.vgpu_series
        self._declarations = mig_layouts.parse_declarations(
            CONF.nvidia_mig.layout)
        self._on_demand = CONF.nvidia_mig.mode == 'on_demand'
        self._allowed = mig_layouts.parse_on_demand(
            CONF.nvidia_mig.on_demand_profiles)
        self._keep_warm = CONF.nvidia_mig.idle_instances == 'keep_warm'
        if self._on_demand and self._declarations:
            raise mig_layouts.LayoutError(
                '%s and [nvidia_mig] mode = on_demand exclude each other: '
                'an on-demand GPU\'s instances follow the guests' %
                mig_layouts.OPTION)
        # GPU address -> ({profile: units} last offered, its table and
        # weights), for the bind hook; parent address -> GPU instance id
        # made for the unit bound there.
        self._offers = {}
        self._made = {}
        # For the host plan, per scan: GPU address -> (table, weights,
        # slices of an offer) of the idle on-demand GPUs, and -> profiles
        # the other on-demand GPUs offer free units of.
        self._idle = {}
        self._covering = {}
        # One bind or release at a time per GPU (see hold_unit); taken
        # again by prepare_unit, abort_unit and release_unit inside it.
        self._gpu_locks = {}
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

    # --- scan -------------------------------------------------------------

    def owns(self, device):
        return device.mig_enabled

    def _gpu(self, session, device, clique):
        address = device.address
        profiles = session.gpu_instance_profiles(device)
        if not profiles:
            # A GPU with MIG on always has profiles: NVML is failing.
            raise nvml_adapter.NvmlError('MIG is on but NVML lists no GPU '
                                         'instance profile')
        supported = session.supported_vgpu_types(device)
        if not supported:
            # The same: a MIG GPU under the vGPU manager has MIG-backed
            # types, so none listed (NotSupported included) is unknown.
            raise nvml_adapter.NvmlError('MIG is on but NVML lists no vGPU '
                                         'type')
        types_by_profile = mig_types_by_profile(supported, self._series)
        instances = session.gpu_instances(device, profiles)
        busy = nvidia_common.active_vgpu_addresses(session, device)
        unknown = set()
        complete = []
        for gpu_instance in instances:
            if gpu_instance.complete:
                complete.append(gpu_instance)
            else:
                self.note('GPU %s: GPU instance %d (profile id %d at %d) '
                          'has no compute instance (half-created); '
                          'skipping it' % (address, gpu_instance.id,
                                           gpu_instance.profile_id,
                                           gpu_instance.start))
        if self._has_vendor_vfio(address):
            if self._on_demand:
                self.note('GPU %s has vendor-VFIO VFs: Cyborg binds their '
                          'PCI units without calling the agent, so its MIG '
                          'instances stay static in on_demand mode' % address)
            vfs = nvidia_vfio.list_vfs(self._sysfs, address, unknown,
                                       self.note)
            listed = {vgpu_type.id for vgpu_type in supported}
            for vf in vfs:
                # A guest on a type NVML does not list for the GPU (a
                # garbled current_vgpu_type): its unit is unknown, not gone.
                if vf.current_type and vf.current_type not in listed and (
                        busy is None or vf.address in busy):
                    self.note('VF %s of GPU %s holds vGPU type %s, which '
                              'NVML does not list for the GPU, and may run '
                              'a guest: its unit is unknown'
                              % (vf.address, address, vf.current_type))
                    unknown.add(vf.address)
            slices = vf_slices(address, profiles, complete,
                               types_by_profile, vfs, busy, self.note)
        else:
            # An mdev GPU: its VFs are mdev parents, not vendor VFIO, so
            # they are not listed as VFs (which would report each one as
            # lacking the interface). A VF that vanished is unknown.
            unknown.update(vf for _, vf in self._sysfs.virtfns(address)
                           if not self._sysfs.exists(vf))
            parents = self._mdev_parents(address)
            if self._on_demand:
                slices = self._on_demand_slices(
                    device, profiles, instances, types_by_profile, parents,
                    quiet=busy == set() and not unknown)
            else:
                slices = mdev_slices(profiles, complete, types_by_profile,
                                     parents)
            if not parents and not unknown and complete:
                self.note('GPU %s has MIG on but neither vendor-VFIO VFs '
                          'nor mdev parents: its GPU instances reach no '
                          'guest (enable SR-IOV with sriov-manage)'
                          % address)
        if self.unknown_may_run_guests(address, unknown, busy):
            return self.STUB
        numa_node = self._sysfs.numa_node(address)
        names = {profile.id: profile.name for profile in profiles}
        return inventory.Gpu(
            address=address, vendor_id=NVIDIA_VENDOR_ID,
            device_id=device.device_id, model=device.name,
            memory_mib=device.memory_mib, numa_node=numa_node,
            link_domain=None if clique is None else str(clique),
            traits=nvidia_common.gpu_traits(device, numa_node),
            slices=slices, unknown_units=frozenset(unknown),
            board_info={
                'uuid': device.uuid,
                'gpu_instances': [
                    '%s@%d+%d' % (names.get(gi.profile_id, gi.profile_id),
                                  gi.start, gi.size) for gi in complete]})

    def _has_vendor_vfio(self, address):
        return nvidia_common.has_vendor_vfio_vfs(self._sysfs, address)

    def _mdev_parents(self, address):
        """mdev parents of a GPU: its VFs with mdev types, else the PF.

        Their mdevs are read strictly (:func:`sysfs_adapter.mdevs_in`): an
        mdev whose type cannot be read raises ``OSError``, so the GPU is
        unknown, never a parent taken as free.
        """
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
            created = tuple(mdev_type for _uuid, mdev_type in sorted(
                self._sysfs.mdevs(candidate).items()))
            parents.append(MdevParent(candidate, available, created))
        return parents

    # --- on demand ----------------------------------------------------------

    def _allowed_weights(self, device, profiles, types_by_profile):
        """``{profile name: weight}`` an on-demand GPU may be split into:
        the declared ones that have a MIG-backed type, else all of those.
        """
        with_type = {profile.name for profile in profiles
                     if types_by_profile.get(profile.id)}
        declared = mig_layouts.declaration_for(self._allowed, device.address,
                                               device.name)
        if declared is None:
            return dict.fromkeys(sorted(with_type), 1.0)
        unknown = sorted(set(declared) - with_type)
        if unknown:
            self.note('GPU %s (%s): %s names %s, which it has no MIG-backed '
                      'vGPU type for; offering only %s' % (
                          device.address, device.name,
                          mig_layouts.ON_DEMAND_OPTION, ', '.join(unknown),
                          ', '.join(sorted(set(declared) & with_type))
                          or 'nothing new'), LOG.error)
        return {name: weight for name, weight in declared.items()
                if name in with_type}

    def _claimed(self, address, names):
        """``{profile: units Placement has allocated}``; None if unknown."""
        claimed = {}
        for name in names:
            units = self.contained(
                'Placement usages of %s %s' % (address, name),
                self.allocated_units,
                placement_traits.provider_name(self.hostname, address, name),
                placement_traits.mig_resource_class(name))
            if units is None:
                return None
            claimed[name] = units
        return claimed

    def scan(self, session):
        """The scan of the skeleton, then the offers of the idle
        on-demand GPUs spread across them (:meth:`_spread`).
        """
        self._idle = {}
        self._covering = {}
        found = super().scan(session)
        if self._idle:
            self._spread(found)
        return found

    def _spread(self, found):
        """Give each idle on-demand GPU its part of the host plan of
        :func:`mig_geometry.spread`; a GPU whose slices cannot be built
        for it keeps its own offer (logged), the others go on.
        """
        # Only GPUs read whole in this scan (a read that outlasted its
        # bound may still note one later).
        idle = {address: facts for address, facts in self._idle.items()
                if isinstance(found.get(address), inventory.Gpu)}
        covered = set().union(*(
            names for address, names in self._covering.items()
            if isinstance(found.get(address), inventory.Gpu)))
        plan = mig_geometry.spread(
            {address: (table, weights, weights)
             for address, (table, weights, _) in idle.items()},
            {address: self._offers[address][0] for address in idle},
            covered)
        for address, units in sorted(plan.items()):
            table, weights, build = idle[address]
            if units == self._offers[address][0]:
                continue
            try:
                slices = build(units)
            except Exception as error:
                self.note('GPU %s: its part of the host plan (%s) cannot '
                          'be offered (%s: %s); it keeps its own offer' % (
                              address, _units_text(units),
                              type(error).__name__, error), LOG.error)
                continue
            found[address] = dataclasses.replace(found[address],
                                                 slices=slices)
            self._offers[address] = (units, table, weights)
            LOG.info('GPU %s is idle: it offers %s, its part of the '
                     'profiles spread across the idle GPUs of the host',
                     address, _units_text(units))

    def _on_demand_slices(self, device, profiles, gpu_instances,
                          types_by_profile, parents, quiet):
        """Slices of an on-demand mdev GPU: the offer of
        :func:`mig_geometry.offer`, one MDEV handle per unit.

        A parent with an mdev of a profile's type is a unit in use of it;
        each other unit gets a free parent of its own that lists a type of
        its profile. The last offer is kept as far as it still fits. When
        Placement cannot be read, the last offer stays (nothing new), or
        only what exists on a first read. Every GPU instance holds its
        slots, a half-created one too. A GPU that is idle (``quiet``: no
        vGPU running and every VF readable; no instance, no mdev and
        nothing claimed) is noted for :meth:`_spread`.
        """
        address = device.address
        table = {p.name: (p.slice_count, p.placements) for p in profiles}
        types = {profile.name: ['nvidia-%d' % type_id for type_id in
                                types_by_profile.get(profile.id, ())]
                 for profile in profiles}
        weights = self._allowed_weights(device, profiles, types_by_profile)
        instances = placed_instances(address, profiles, gpu_instances)
        in_use = collections.defaultdict(list)
        free_parents = []
        for parent in parents:
            name = next((n for n, ts in types.items()
                         if set(parent.created) & set(ts)), None)
            if name is None and parent.created:
                quiet = False
                continue
            if name is None:
                free_parents.append(parent)
                continue
            mdev_type = next(t for t in types[name] if t in parent.created)
            in_use[name].append(inventory.AttachHandle(
                inventory.MDEV, parent.address, mdev_type=mdev_type,
                mark='%s_0' % mdev_type, in_use=True))
        claimed = self._claimed(address, sorted(
            set(weights) | {name for name, _ in instances} | set(in_use)))
        last = self._offers.get(address)
        if claimed is None:
            units = dict(last[0]) if last else collections.Counter(
                name for name, _ in instances)
        else:
            for name, handles in in_use.items():
                claimed[name] = max(claimed.get(name, 0), len(handles))
            units = mig_geometry.offer(table, instances, claimed, weights,
                                       weights, last and last[0])
        self._offers[address] = (units, table, weights)

        def build(units):
            return self._offer_slices(address, profiles, table, types,
                                      in_use, list(free_parents), units)

        if quiet and claimed is not None and not gpu_instances and \
                not in_use and not any(claimed.values()):
            self._idle[address] = (table, weights, build)
        elif claimed is not None:
            self._covering[address] = {
                name for name, count in units.items()
                if count > claimed.get(name, 0)}
        return build(units)

    def _offer_slices(self, address, profiles, table, types, in_use,
                      free_parents, units):
        """The slices offering ``units``: the units in use, then a free
        parent of its own for each other unit.
        """
        slices = []
        for profile in profiles:
            handles = list(in_use.get(profile.name, ()))
            for parent in list(free_parents):
                if len(handles) >= units.get(profile.name, 0):
                    break
                mdev_type = next((t for t in types[profile.name]
                                  if t in parent.available), None)
                if mdev_type is None:
                    continue
                free_parents.remove(parent)
                handles.append(inventory.AttachHandle(
                    inventory.MDEV, parent.address, mdev_type=mdev_type,
                    mark='%s_0' % mdev_type))
            if len(handles) < units.get(profile.name, 0):
                self.note('GPU %s: %d units of %s planned but only %d mdev '
                          'parents can take them' % (
                              address, units[profile.name], profile.name,
                              len(handles)))
            if handles:
                slice_ = nvidia_common.mig_slice(profile, sorted(
                    handles, key=lambda h: h.address))
                # The scheduler weighs a unit against the GPU's slices,
                # not against the sum of what the offer holds now.
                slice_.traits = sorted(slice_.traits + [
                    placement_traits.mig_on_demand_trait(
                        mig_geometry.total_slices(table))])
                slices.append(slice_)
        return slices

    def _gpu_of_parent(self, parent_address):
        """The PF of an mdev parent (a VF, or the GPU itself)."""
        return self._sysfs.physfn(parent_address) or parent_address

    def _gpu_lock(self, gpu_address):
        # setdefault is atomic: two first binds on a GPU share one lock.
        return self._gpu_locks.setdefault(gpu_address, threading.RLock())

    @contextlib.contextmanager
    def hold_unit(self, parent_address):
        """Hold the GPU of an mdev parent for a whole bind or release:
        the agent's hook runs :meth:`prepare_unit`, Cyborg's mdev write
        and :meth:`abort_unit` (or Cyborg's mdev removal and
        :meth:`release_unit`) inside it. Between an instance's creation
        and its mdev, another bind would take the new instance as idle
        and a release or the clean-up pass would destroy it.
        """
        with self._gpu_lock(self._gpu_of_parent(parent_address)):
            yield

    @contextlib.contextmanager
    def _unit(self, parent_address, mdev_type):
        """Hold the GPU of an mdev parent (one bind or release at a time
        per GPU) and give ``(GPU address, profile, profiles, GPU
        instances, mdev parents, types by profile id)`` for the mdev type,
        or None when the GPU is not one this driver makes instances on.
        """
        gpu_address = self._gpu_of_parent(parent_address)
        with self._gpu_lock(gpu_address), self._nvml.session() as session:
            yield self._unit_state(session, gpu_address, mdev_type)

    def _unit_state(self, session, gpu_address, mdev_type):
        device = next((d for d in session.devices()
                       if d.address == gpu_address), None)
        if not self._on_demand or device is None or not device.mig_enabled \
                or self._has_vendor_vfio(gpu_address):
            return None
        profiles = session.gpu_instance_profiles(device)
        types = mig_types_by_profile(session.supported_vgpu_types(device),
                                     self._series)
        profile = next((p for p in profiles
                        if mdev_type in ['nvidia-%d' % t
                                         for t in types.get(p.id, ())]),
                       None)
        if profile is None:
            return None
        return (gpu_address, profile, profiles,
                session.gpu_instances(device, profiles),
                self._mdev_parents(gpu_address), types)

    @staticmethod
    def _mdevs_of(profile, types, parents):
        names = {'nvidia-%d' % t for t in types.get(profile.id, ())}
        return sum(1 for parent in parents
                   for created in parent.created if created in names)

    def prepare_unit(self, parent_address, mdev_type):
        """Make the GPU instance a unit bound on ``parent_address`` needs,
        before the mdev of ``mdev_type`` is created there.

        Returns None when the parent is not on an on-demand GPU of this
        driver (the agent then goes on as Cyborg's does), else a token
        for :meth:`abort_unit`. An idle instance of the profile is used
        when there is one (``keep_warm``); otherwise one is created at the
        free start the fragmentation score picks among those that keep the
        rest of the GPU's offer placeable. Raises when none is free: the
        bind fails and Cyborg marks the ARQ BindFailed.
        """
        with self._unit(parent_address, mdev_type) as state:
            if state is None:
                return None
            gpu_address, profile, profiles, gpu_instances, parents, types = \
                state
            same = [gi for gi in gpu_instances
                    if gi.profile_id == profile.id and gi.complete]
            if len(same) > self._mdevs_of(profile, types, parents):
                LOG.info('GPU %s: %s bound on %s uses an idle %s instance',
                         gpu_address, mdev_type, parent_address,
                         profile.name)
                return (gpu_address, parent_address, None)
            instances = placed_instances(gpu_address, profiles,
                                         gpu_instances)
            units, table, weights = self._offers.get(gpu_address) or (
                {}, {p.name: (p.slice_count, p.placements)
                     for p in profiles}, {})
            rest = collections.Counter(units)
            rest.subtract(collections.Counter(name for name, _ in instances))
            rest[profile.name] -= 1
            start = mig_geometry.choose_start(
                table, instances, profile.name, weights,
                keep=list((+rest).elements()))
            if start is None:
                raise mig_layouts.LayoutError(
                    'GPU %s: no free placement for a %s instance beside %s'
                    % (gpu_address, profile.name, ', '.join(
                        '%s@%d' % item for item in instances) or 'nothing'))
            try:
                gpu_instance_id = self._created(
                    gpu_address, profile, start, gpu_instances,
                    self._create_gpu_instance(gpu_address, profile.id,
                                              start))
            except BaseException:
                # Whatever stopped it, the daemon may have made the
                # instance before its answer was lost.
                self._undo_created(gpu_address, profile, start,
                                   gpu_instances)
                raise
            self._made[parent_address] = (gpu_address, gpu_instance_id)
            LOG.info('GPU %s: created %s GPU instance %d at %d for %s on %s',
                     gpu_address, profile.name, gpu_instance_id, start,
                     mdev_type, parent_address)
            return (gpu_address, parent_address, gpu_instance_id)

    def _new_instances(self, gpu_address, profile, start, before):
        """The instances NVML lists at ``profile``/``start`` that were
        not there ``before`` (:func:`~cyborg_gpu_drivers.adapters.nvml.
        instances_made`).
        """
        def listed():
            with self._nvml.session() as session:
                device = next((d for d in session.devices()
                               if d.address == gpu_address), None)
                if device is None:
                    raise mig_layouts.LayoutError(
                        'GPU %s: NVML no longer lists it' % gpu_address)
                return session.gpu_instances(
                    device, session.gpu_instance_profiles(device))

        return nvml_adapter.instances_made(before, listed, profile.id, start)

    def _created(self, gpu_address, profile, start, before, answer):
        """The id of the instance the daemon made, as NVML lists it;
        raises unless its answer is that id, of a complete instance.
        """
        made = self._new_instances(gpu_address, profile, start, before)
        if len(made) != 1 or not made[0].complete or \
                type(answer) is not int or answer != made[0].id:
            raise mig_layouts.LayoutError(
                'GPU %s: the %s instance at %d cannot be confirmed: the '
                'privileged daemon answered %s, NVML lists %s' % (
                    gpu_address, profile.name, start,
                    privsep.shown(answer),
                    ', '.join('id %d%s' % (gi.id, '' if gi.complete
                                           else ' (half-created)')
                              for gi in made) or 'none there'))
        return answer

    def _undo_created(self, gpu_address, profile, start, before):
        try:
            for gi in self._new_instances(gpu_address, profile, start,
                                          before):
                self._destroy_gpu_instance(gpu_address, gi.id)
                LOG.info('GPU %s: destroyed %s GPU instance %d: its '
                         'creation failed', gpu_address, profile.name,
                         gi.id)
        except Exception:
            # Left to the clean-up pass; the scan counts it as taken.
            LOG.exception('GPU %s: undoing a failed creation of a %s '
                          'instance at %d failed', gpu_address,
                          profile.name, start)

    def abort_unit(self, token):
        """Undo :meth:`prepare_unit` after the mdev could not be made."""
        gpu_address, parent_address, gpu_instance_id = token
        if gpu_instance_id is None:
            return
        with self._gpu_lock(gpu_address):
            self._made.pop(parent_address, None)
            self._destroy_gpu_instance(gpu_address, gpu_instance_id)
            LOG.info('GPU %s: destroyed GPU instance %d: the mdev on %s '
                     'could not be created', gpu_address, gpu_instance_id,
                     parent_address)

    def release_unit(self, parent_address, mdev_type):
        """After the mdev on ``parent_address`` is removed: destroy the
        GPU instance made for it (``destroy``), or keep it idle
        (``keep_warm``). Returns True when the parent is this driver's.

        The instance made for the unit is destroyed; after an agent
        restart (that record is lost) idle instances of the profile are
        destroyed only once no mdev of the profile is left, since which
        instance an mdev sits on cannot be told before its guest runs.
        """
        with self._unit(parent_address, mdev_type) as state:
            if state is None:
                return False
            gpu_address, profile, _, gpu_instances, parents, types = state
            made = self._made.pop(parent_address, None)
            if self._keep_warm:
                return True
            same = [gi.id for gi in gpu_instances
                    if gi.profile_id == profile.id]
            if made is not None and made[1] in same:
                idle = [made[1]]
            elif not self._mdevs_of(profile, types, parents):
                idle = same
            else:
                LOG.warning('GPU %s: which %s instance the mdev on %s used '
                            'is unknown; the idle one is kept',
                            gpu_address, profile.name, parent_address)
                idle = []
            for gpu_instance_id in idle:
                self._destroy_gpu_instance(gpu_address, gpu_instance_id)
                LOG.info('GPU %s: destroyed idle %s GPU instance %d',
                         gpu_address, profile.name, gpu_instance_id)
            return True

    # --- idle instances -----------------------------------------------------

    def apply(self):
        """Declared layouts, or in ``on_demand`` mode with ``destroy``
        the clean-up of idle GPU instances (:meth:`_clear_idle`), each
        GPU contained on its own.
        """
        super().apply()
        if not self._on_demand or self._keep_warm:
            return
        with self._nvml.session() as session:
            for index in range(session.device_count()):
                self.contained('clearing idle MIG instances of GPU index %d'
                               % index, self._clear_idle, session, index)

    def _clear_idle(self, session, index):
        """Destroy the GPU instances of an on-demand GPU that no guest can
        hold: of a profile no mdev on the GPU has and beyond the units
        Placement has allocated for it, on no running vGPU.

        Releasing a unit destroys the instance made for it; this finds
        those left when that failed or the record was lost (an agent
        restart). Any doubt keeps the whole GPU as it is: NVML cannot
        list its vGPUs or name one's instance, a VF cannot be read, an
        mdev of a type no profile has, Placement cannot be read, or a
        bind or release holds the GPU now. The mdevs are read again
        before each destruction; the privileged step checks the running
        vGPUs again.
        """
        device = session.device(index)
        address = device.address
        # Only a GPU whose instances reach guests through mdevs: one
        # without mdev parents (vendor VFIO, or its VFs unreadable) could
        # have instances in use that no mdev shows.
        if device.lost or not device.mig_enabled or \
                self._has_vendor_vfio(address) or \
                not self._mdev_parents(address):
            return
        lock = self._gpu_lock(address)
        if not lock.acquire(blocking=False):
            return
        try:
            profiles = session.gpu_instance_profiles(device)
            gpu_instances = session.gpu_instances(device, profiles)
            if not gpu_instances:
                return
            types = mig_types_by_profile(
                session.supported_vgpu_types(device), self._series)
            why = self._why_not_clear(session, device, types)
            if why:
                LOG.debug('GPU %s: idle GPU instances are kept: %s',
                          address, why)
                return
            running = {vgpu.gpu_instance_id
                       for vgpu in session.active_vgpus(device)}
            for profile in profiles:
                same = [gi for gi in gpu_instances
                        if gi.profile_id == profile.id and
                        gi.id not in running]
                if not same or self._has_mdev_of(address, profile, types):
                    continue
                claimed = self._claimed(address, [profile.name])
                if claimed is None:
                    return
                # Newest first; the oldest serve the claims not bound yet.
                for gpu_instance in sorted(same, key=lambda gi: -gi.id)[
                        :len(same) - claimed[profile.name]]:
                    if self._has_mdev_of(address, profile, types):
                        break
                    self._destroy_gpu_instance(address, gpu_instance.id)
                    LOG.info('GPU %s: destroyed idle %s GPU instance %d '
                             '(no mdev of its profile, nothing claimed for '
                             'it)', address, profile.name, gpu_instance.id)
        finally:
            lock.release()

    def _why_not_clear(self, session, device, types):
        """Why no instance of the GPU may be destroyed now, or None."""
        address = device.address
        active = session.active_vgpus(device)
        if active is None:
            return 'NVML cannot list the vGPUs running on it'
        if any(vgpu.gpu_instance_id is None for vgpu in active):
            return 'NVML cannot name the instance of a running vGPU'
        vanished = [vf for _, vf in self._sysfs.virtfns(address)
                    if not self._sysfs.exists(vf)]
        if vanished:
            return 'VFs %s cannot be read' % ', '.join(sorted(vanished))
        known = {'nvidia-%d' % t for ids in types.values() for t in ids}
        strange = sorted(set(self._mdev_types(address)) - known)
        if strange:
            return 'mdevs of types no MIG profile has exist (%s)' % (
                ', '.join(strange))
        return None

    def _mdev_types(self, address):
        """Types of the mdevs on every mdev parent a GPU may have (its VFs,
        else itself); raises OSError when one cannot be read.
        """
        candidates = [vf for _, vf in self._sysfs.virtfns(address)] or \
            [address]
        return [mdev_type for candidate in candidates
                for mdev_type in self._sysfs.mdevs(candidate).values()]

    def _has_mdev_of(self, address, profile, types):
        names = {'nvidia-%d' % t for t in types.get(profile.id, ())}
        return bool(names.intersection(self._mdev_types(address)))

    # --- declared layouts -------------------------------------------------

    def _apply_gpu(self, session, index):
        """Give an idle GPU its declared layout, and each complete GPU
        instance a VF holding a MIG-backed type of its profile.

        What is already there is left as it is, so a step that failed (a
        VF-type write after the layout was applied) is done at the next
        pass.
        """
        device = session.device(index)
        layout = self._layout_for(device)
        if layout is None or not device.mig_enabled:
            return
        where = '%s (%s)' % (device.address, device.name)
        profiles = session.gpu_instance_profiles(device)
        types_by_profile = mig_types_by_profile(
            session.supported_vgpu_types(device), self._series)
        try:
            planned = mig_layouts.plan(layout, profiles, where=where)
        except mig_layouts.LayoutError as error:
            self.note('%s; leaving the GPU as it is' % error, LOG.error)
            return
        complete = [gi for gi in session.gpu_instances(device, profiles)
                    if gi.complete]
        if not mig_layouts.matches(planned, complete):
            unknown = set()
            vfs = (nvidia_vfio.list_vfs(self._sysfs, device.address,
                                        unknown, self.note)
                   if self._has_vendor_vfio(device.address) else [])
            busy = is_busy(session.active_vgpus(device), vfs,
                           self._mdev_parents(device.address), unknown)
            if busy:
                self.note('GPU %s: not applying %s %s because %s; reporting '
                          'what exists' % (where, mig_layouts.OPTION,
                                           layout.text, busy))
                return
            self._apply_layout(device.address, planned)
            LOG.info('GPU %s: applied MIG layout %s', where, layout.text)
        self._assign_vf_types(device.address, [p for p, _ in planned],
                              types_by_profile,
                              nvidia_common.active_vgpu_addresses(
                                  session, device))

    def _assign_vf_types(self, address, planned_profiles, types_by_profile,
                         busy):
        """Give free VFs MIG-backed types until each planned GPU instance
        has one VF holding a type of its profile.
        """
        if busy is None or not self._has_vendor_vfio(address):
            # An mdev GPU takes its type when Cyborg creates the mdev.
            return
        vfs = nvidia_vfio.list_vfs(self._sysfs, address, note=self.note)
        free = [vf for vf in vfs if vf.is_free and vf.address not in busy]
        wanted = {}
        for profile_id in planned_profiles:
            wanted[profile_id] = wanted.get(profile_id, 0) + 1
        for profile_id, count in sorted(wanted.items()):
            type_ids = types_by_profile.get(profile_id, ())
            holders = sum(1 for vf in vfs if vf.current_type in type_ids)
            for _ in range(count - holders):
                # Re-read: a VF's offer shrinks as its siblings take types.
                fresh = [nvidia_vfio.read_vf(self._sysfs, vf.address,
                                             vf.index) for vf in free]
                vf, type_id = next(
                    ((vf, t) for vf in fresh if vf is not None
                     for t in type_ids if vf.offers(t)), (None, None))
                if vf is None:
                    self.note('GPU %s: no free VF can take a MIG-backed '
                              'vGPU type of profile id %d'
                              % (address, profile_id))
                    break
                free = [f for f in free if f.address != vf.address]
                try:
                    nvidia_vfio.assign_type(self._sysfs, vf.address, type_id,
                                            in_use_addresses=busy,
                                            writer=self._write_vgpu_type)
                except Exception as error:
                    # Retried at the next pass: the layout stays.
                    self.note('GPU %s: cannot give VF %s vGPU type %d (%s); '
                              'retried at the next pass'
                              % (address, vf.address, type_id, error),
                              LOG.error)
