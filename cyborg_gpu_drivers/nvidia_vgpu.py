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
"""Cyborg driver for NVIDIA time-sliced vGPU: ``gpu_partitions_nvidia_vgpu``.

Reports every NVIDIA GPU with MIG disabled or unsupported that runs vGPU,
with one deployable (one Placement provider) per vGPU type on that GPU.
The host framework is told apart per GPU:

* vendor VFIO (vGPU 17 and later, Ada/Hopper/Blackwell): the GPU's VFs
  have ``nvidia/current_vgpu_type``; one ``PCI`` attach handle per VF that
  holds the type, in use when NVML runs a vGPU on it (every one when NVML
  cannot say). Declared types are given to free VFs through privsep by
  :meth:`NvidiaVgpuDriver.apply`, retried at every pass.
* mdev (pre-Ada, and Ampere in SR-IOV mode where every VF is an mdev
  parent): types, available instances and created mdevs from libvirt
  node devices; one ``MDEV`` attach handle per created or creatable
  instance, at most as many as NVML says the GPU holds of the type.

Without a declaration a GPU is reported with the types it already hosts
and nothing is changed on it. Every provider carries the GPU's NUMA node;
only a type that owns the whole framebuffer carries its NVLink clique,
the only vGPUs NVIDIA gives NVLink P2P. GPUs with MIG enabled belong to the MIG
driver and are never reported here.
"""

import time

from oslo_config import cfg
from oslo_log import log as logging

from cyborg_gpu_drivers.adapters import libvirt_nodedev
from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import base
from cyborg_gpu_drivers import conf  # noqa: F401  (registers the options)
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import nvidia_common
from cyborg_gpu_drivers import nvidia_vfio
from cyborg_gpu_drivers import privsep
from cyborg_gpu_drivers import providers
from cyborg_gpu_drivers import retype
from cyborg_gpu_drivers import vgpu_types
import placement_traits

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

NVIDIA_VENDOR_ID = nvidia_common.NVIDIA_VENDOR_ID
VENDOR_VFIO = 'vendor-vfio'
MDEV = 'mdev'


# --- plain logic ------------------------------------------------------------

def vf_handles(vfs, type_id, busy_addresses):
    """PCI handles of the VFs holding ``type_id``; in use when busy."""
    return [inventory.AttachHandle(inventory.PCI, vf.address,
                                   in_use=vf.address in busy_addresses)
            for vf in vfs if vf.current_type == type_id]


def mdev_handles(parents, mdevs_on, type_name, limit):
    """MDEV handles of one type over a GPU's mdev parents.

    Each created mdev of the type is a unit in use, each available
    instance a free one; marks are ``<mdev type>_<n>``, unique per parent
    as Cyborg's in-tree driver numbers them. Free units beyond ``limit``
    (NVML's maximum of the type per GPU) are not offered: on an SR-IOV
    GPU every VF reports an instance available until the GPU is full.
    """
    in_use, free = [], []
    for parent in sorted(parents, key=lambda p: p.address):
        mdev_type = next((t for t in parent.types
                          if vgpu_types.same_type(t.name, type_name)), None)
        if mdev_type is None:
            continue
        created = [m for m in mdevs_on(parent) if m.type_id == mdev_type.id]
        for number in range(len(created) + mdev_type.available_instances):
            (in_use if number < len(created) else free).append(
                inventory.AttachHandle(
                    inventory.MDEV, parent.address, mdev_type=mdev_type.id,
                    mark='%s_%d' % (mdev_type.id, number),
                    in_use=number < len(created)))
    return in_use + vgpu_types.capped(len(in_use), free, limit)


def hosted_mdev_types(parents, mdevs_on):
    """Names of the types of the mdevs created on a GPU's parents."""
    names = set()
    for parent in parents:
        by_id = {t.id: t.name for t in parent.types}
        for mdev in mdevs_on(parent):
            names.add(by_id.get(mdev.type_id, mdev.type_id))
    return sorted(names)


def mdev_type_number(type_id):
    """``nvidia-476`` gives 476 (NVML's id); None for other names."""
    prefix, _, number = str(type_id).rpartition('-')
    return int(number) if prefix == 'nvidia' and number.isdecimal() else None


# --- the driver --------------------------------------------------------------

class NvidiaVgpuDriver(nvidia_common.NvidiaScanMixin,
                       base.GpuPartitionDriver):
    """Reports time-sliced vGPU types of NVIDIA GPUs without MIG."""

    DRIVER_NAME = 'gpu_partitions_nvidia_vgpu'
    APPLIES = vgpu_types.OPTION

    def __init__(self, hostname=None, nvml=None, sysfs_root=None,
                 libvirt_uri=None, amdsmi=None, write_vgpu_type=None,
                 release_gpu=None, read_only=False, clock=time.monotonic):
        super().__init__(hostname, read_only=read_only)
        self._nvml = nvml_adapter.Nvml(nvml)
        self._sysfs = sysfs_adapter.Sysfs(
            sysfs_root or CONF.gpu_partitions.sysfs_root)
        self._nodedevs = libvirt_nodedev.NodeDevices(
            libvirt_uri or CONF.nvidia_vgpu.libvirt_uri)
        # Tests inject the writer; production goes through privsep.
        self._write_vgpu_type = (write_vgpu_type or
                                 privsep.privileged_write_vgpu_type)
        self._release_gpu = release_gpu or privsep.privileged_release_idle_gpu
        self._clock = clock
        self._follow_demand = (
            CONF.nvidia_vgpu.type_mode == 'follow_demand')
        if self._follow_demand:
            if CONF.nvidia_vgpu.vgpu_type:
                raise vgpu_types.DeclarationError(
                    '%s and type_mode = follow_demand exclude each other; '
                    'list the types in %s (the first is a new GPU\'s)'
                    % (vgpu_types.OPTION, vgpu_types.ALLOWED_OPTION))
            _check_thresholds()
            # The allowed types stand in for declarations: a GPU hosting
            # none gets the first, or the one demand chose.
            self._declarations = vgpu_types.parse_declarations(
                CONF.nvidia_vgpu.allowed_types, vgpu_types.ALLOWED_OPTION)
        else:
            self._declarations = vgpu_types.parse_declarations(
                CONF.nvidia_vgpu.vgpu_type)
        # GPU address -> the type it takes while it hosts none: demand's
        # choice, or what its provider in Placement showed at the first
        # scan after the agent started (_recovered_type).
        self._chosen = {}
        # GPU address -> when this agent changed it or, never changed,
        # first saw it: a change before a restart cannot be dated.
        self._held_since = {}
        self._mdev_scan = None
        if self._declarations:
            self._check_declarations()

    # --- start-up -------------------------------------------------------

    def _check_declarations(self):
        """Refuse declared types no matching GPU supports.

        Raises :class:`vgpu_types.DeclarationError` naming the option and
        the types the GPU supports. Skipped when NVML cannot be read now.
        """
        try:
            with self._nvml.session() as session:
                for device in session.devices():
                    if device.lost or device.mig_enabled:
                        continue
                    declaration = vgpu_types.declaration_for(
                        self._declarations, device.address, device.name)
                    if declaration is None:
                        continue
                    supported = [
                        t.name for t in session.supported_vgpu_types(device)
                        if not t.mig_backed]
                    for name in declaration.types:
                        if not any(vgpu_types.same_type(name, s)
                                   for s in supported):
                            raise vgpu_types.DeclarationError(
                                '%s: GPU %s (%s) does not support vGPU type '
                                '%r declared in %r; allowed: %s' % (
                                    vgpu_types.OPTION, device.address,
                                    device.name, name, declaration.text,
                                    ', '.join(placement_traits.
                                              vgpu_short_name(s)
                                              for s in supported)
                                    or 'none (vGPU not enabled)'))
        except nvml_adapter.NvmlError as error:
            LOG.warning('%s is set but NVML cannot be read now (%s); the '
                        'declared types are checked when they are applied',
                        vgpu_types.OPTION, error)

    # --- scan -------------------------------------------------------------

    def owns(self, device):
        return not device.mig_enabled

    def scan(self, session):
        # libvirt is asked once per scan, and only if a GPU without
        # vendor-VFIO VFs needs it.
        self._mdev_scan = _Lazy(self._scan_mdevs)
        return super().scan(session)

    def _scan_mdevs(self):
        try:
            return self._nodedevs.scan()
        except Exception as error:
            self.note('libvirt unavailable (%s); mdev GPUs are reported as '
                      'stubs, so Cyborg keeps what it holds for them'
                      % error, LOG.error)
            return None

    def _gpu(self, session, device, clique):
        address = device.address
        if self._follow_demand:
            self._held_since.setdefault(address, self._clock())
        mixed_size = session.vgpu_mixed_size(device)
        unknown = set()
        if self._has_vendor_vfio(address):
            framework = VENDOR_VFIO
            slices = self._vfio_slices(
                session, device,
                nvidia_vfio.list_vfs(self._sysfs, address, unknown,
                                     self.note),
                mixed_size, unknown, clique)
            if slices is self.STUB:
                return self.STUB
        else:
            scan = self._mdev_scan.get()
            if scan is None:
                return self.STUB
            parents = [p for p in scan.parents if p.physical_gpu == address]
            if not parents:
                self.note('GPU %s (%s) has neither vendor-VFIO VFs nor mdev '
                          'parents: it runs no vGPU; not reporting it'
                          % (address, device.name), LOG.info)
                return None
            framework = MDEV
            try:
                slices = self._mdev_slices(session, device, parents,
                                           scan.mdevs_on, mixed_size, clique)
            except TypeUnknown as error:
                self.note('%s; reported as a stub, so Cyborg keeps what it '
                          'holds for it' % error, LOG.error)
                return self.STUB
        if not slices and not unknown:
            self.note('GPU %s (%s) hosts no vGPU type and none of the '
                      'declared ones can be offered (%s); not reporting it'
                      % (address, device.name, vgpu_types.OPTION), LOG.info)
            return None
        numa_node = self._sysfs.numa_node(address)
        return inventory.Gpu(
            address=address, vendor_id=NVIDIA_VENDOR_ID,
            device_id=device.device_id, model=device.name,
            memory_mib=device.memory_mib, numa_node=numa_node,
            link_domain=None if clique is None else str(clique),
            traits=nvidia_common.gpu_traits(device, numa_node),
            slices=slices, unknown_units=frozenset(unknown),
            board_info={'uuid': device.uuid, 'vgpu_framework': framework,
                        'mixed_size': mixed_size})

    def _has_vendor_vfio(self, address):
        return nvidia_common.has_vendor_vfio_vfs(self._sysfs, address)

    def _type_facts(self, session, device, type_id, name=None):
        """Facts of a type from NVML; None (logged) if NVML does not know
        the id and no name is given.
        """
        try:
            vgpu_type = session.vgpu_type(type_id)
            name = vgpu_type.name
            framebuffer = session.vgpu_type_framebuffer_mib(type_id)
            limit = session.vgpu_type_max_instances(device, type_id)
        except nvml_adapter.GpuLost:
            raise
        except nvml_adapter.NvmlError as error:
            if name is None:
                self.note('GPU %s: vGPU type id %s is unknown to NVML (%s); '
                          'leaving its units out' % (device.address,
                                                     type_id, error))
                return None
            framebuffer = limit = None
        return nvidia_common.TypeFacts(vgpu_types.parse_type_name(name),
                                       framebuffer, limit)

    def _choice(self, device, hosted, mixed_size):
        declaration = vgpu_types.declaration_for(
            self._declarations, device.address, device.name)
        declared = declaration.types if declaration else ()
        if self._follow_demand and declared:
            # Demand's choice; else the type hosted stays, and a GPU
            # hosting none takes the one it offered before the agent
            # started (the first allowed for a new GPU).
            chosen = self._chosen.get(device.address)
            if chosen is None and not hosted:
                chosen = self._chosen[device.address] = \
                    self._recovered_type(device.address, declared)
            declared = (chosen,) if chosen else ()
        choice = vgpu_types.types_for_gpu(
            device.address, declared, hosted, mixed_size)
        for problem in choice.problems:
            self.note(problem)
        return choice.types

    def _recovered_type(self, address, allowed):
        """The allowed type a GPU hosting nothing offered before this
        agent started, from its providers in Placement; the first allowed
        for a GPU without any.

        Nothing read is trusted as is: a provider counts only if its name
        and its resource class are those of an allowed type. Several of
        them: the one with claims, else the one not held closed (a move
        the conductor had not finished). Raises :class:`TypeUnknown` when
        Placement cannot be read, or when a provider of another type has
        claims: the GPU is then reported as a stub (Cyborg keeps what it
        holds) and asked again at the next scan.
        """
        found = self.contained('Placement providers of GPU %s' % address,
                               self.placement_gpu_providers, address,
                               failed=self.FAILED)
        if found is self.FAILED:
            raise TypeUnknown('GPU %s hosts no vGPU type and the type it '
                              'offered before the agent started cannot be '
                              'read from Placement' % address)
        by_name = {placement_traits.provider_name(
            self.hostname, address,
            placement_traits.vgpu_short_name(name)).upper(): name
            for name in allowed}
        candidates, foreign = [], []
        for provider, classes in sorted(found.items()):
            name = by_name.get(provider.upper())
            if name is not None and list(classes) == [
                    placement_traits.vgpu_resource_class(name)]:
                (used, record), = classes.values()
                candidates.append((-used, record.get('reserved', 0) >=
                                   record['total'], name))
            else:
                foreign.append(provider)
                if any(used for used, _record in classes.values()):
                    raise TypeUnknown(
                        'GPU %s hosts no vGPU type; its provider %s in '
                        'Placement has claims but is not one of %s' % (
                            address, provider, vgpu_types.ALLOWED_OPTION))
        if foreign:
            self.note('GPU %s: its providers %s in Placement are not of '
                      'the types %s allows; they are not taken for the '
                      'type it offered before the agent started'
                      % (address, ', '.join(foreign),
                         vgpu_types.ALLOWED_OPTION))
        candidates.sort()
        first = vgpu_types.new_gpu_type(allowed)
        if len(candidates) > 1 and candidates[0][:2] == candidates[1][:2]:
            self.note('GPU %s: Placement has providers of %s for it; it '
                      'offers the first allowed type %s' % (
                          address, ', '.join(c[2] for c in candidates),
                          first))
            return first
        if not candidates:
            return first
        name = candidates[0][2]
        if not vgpu_types.same_type(name, first):
            LOG.info('%s: GPU %s hosts no vGPU type and offers %s again, '
                     'as its provider in Placement shows (not the first '
                     'allowed, %s: demand chose it before the agent '
                     'started)', self.DRIVER_NAME, address, name, first)
        return name

    # --- vendor VFIO --------------------------------------------------------

    def _vfio_slices(self, session, device, vfs, mixed_size, unknown,
                     clique):
        address = device.address
        busy = nvidia_common.active_vgpu_addresses(session, device)
        if self.unknown_may_run_guests(address, unknown, busy):
            return self.STUB
        if busy is None:
            # NVML cannot say which VFs run a guest: all that hold a type.
            busy = {vf.address for vf in vfs if vf.current_type}
        facts = self._held_types(session, device, vfs)
        for vf in vfs:
            if vf.current_type is None:
                self.note('VF %s of GPU %s: current_vgpu_type unreadable; '
                          'a unit it had in use stays reported'
                          % (vf.address, address))
            elif vf.current_type and vf.current_type not in facts and \
                    vf.address in busy:
                # A guest runs on a type NVML cannot describe now.
                if self.known_gpu(address) is None:
                    return self.STUB
                unknown.add(vf.address)
        slices = []
        for type_id, type_facts in sorted(facts.items()):
            if type_facts.name.mig_backed:
                # NVML says MIG is off, the VFs say otherwise: unknown,
                # and those VFs may run guests.
                self.note('GPU %s has MIG off but VFs hold the MIG-backed '
                          'type %s; reported as a stub'
                          % (address, type_facts.name.short))
                return self.STUB
            slices.append(nvidia_common.vgpu_slice(
                type_facts, vf_handles(vfs, type_id, busy), mixed_size,
                clique))
        if not slices and any(vf.current_type and vf.current_type
                              not in facts for vf in vfs):
            # Types held, none NVML can describe now: unknown, not empty.
            return self.STUB
        return slices

    def _held_types(self, session, device, vfs):
        """``{type id: nvidia_common.TypeFacts}`` of the types the VFs hold."""
        facts = {}
        for type_id in sorted({vf.current_type for vf in vfs
                               if vf.current_type}):
            found = self._type_facts(session, device, type_id)
            if found is not None:
                facts[type_id] = found
        return facts

    # --- types that follow demand ------------------------------------------

    def apply(self):
        try:
            if self._follow_demand:
                try:
                    self._follow()
                except Exception as error:
                    self.note('following demand (%s) failed: %s: %s; no '
                              'GPU changed type' % (
                                  vgpu_types.ALLOWED_OPTION,
                                  type(error).__name__, error), LOG.error)
        finally:
            # Also after a stop in the middle of a move (a cancellation
            # of the worker): VFs a release emptied get their type back
            # before the scan, or the GPU would leave the report while
            # its provider is open again.
            super().apply()

    def _follow(self):
        """Re-type at most one idle GPU of the last report, as
        :func:`retype.plan` decides over the host's use of each type.
        """
        options = CONF.gpu_partitions
        now = self._clock()
        move = retype.plan(
            [use for gpu in sorted(self._known.values(),
                                   key=lambda gpu: gpu.address)
             for use in self._uses(gpu)],
            now, options.follow_demand_high, options.follow_demand_low,
            options.follow_demand_hold_seconds)
        if move is None:
            return
        # Not in a bounded worker thread: a change given up half-way
        # would go on beside the next scan and report.
        try:
            self._retype(self._known[move.address], move, now)
        except Exception as error:
            # This GPU alone: it keeps its type and is tried again at a
            # later pass if demand still says so.
            self.note('GPU %s keeps vGPU type %s: moving it to %s failed: '
                      '%s: %s' % (move.address, move.old, move.new,
                                  type(error).__name__, error), LOG.error)

    def _uses(self, gpu):
        """:class:`retype.GpuUse` of each type a reported GPU offers.

        Only a healthy GPU read in full, hosting one type, in single-type
        mode and selected by allowed_types may move; every GPU counts in
        the host's use. Placement unreadable: the units count as in use.
        """
        declaration = vgpu_types.declaration_for(
            self._declarations, gpu.address, gpu.model)
        readable = gpu.healthy and not gpu.stub and not gpu.unknown_units
        movable = (declaration is not None and readable and
                   len(gpu.slices) == 1 and
                   not gpu.board_info.get('mixed_size'))
        return [vgpu_types.type_use(
            gpu.address, slice_.name,
            declaration.types if movable else (),
            inventory.offered_total(gpu, slice_),
            self._units_unavailable(gpu, slice_) if readable else None,
            self._held_since.get(gpu.address), gpu.link_domain)
            for slice_ in gpu.slices]

    def _units_unavailable(self, gpu, slice_):
        """Units Placement can no longer offer (used and reserved, which
        holds the units busy without an allocation), or busy in the
        hardware if more; None when Placement cannot be read.
        """
        name = providers.provider_name(self.hostname, gpu, slice_)
        found = self.contained('Placement inventory of %s' % name,
                               self.placement_inventory, name,
                               slice_.resource_class, failed=self.FAILED)
        if found is self.FAILED:
            return None
        if found is None:
            return slice_.in_use
        used, record = found
        return max(slice_.in_use,
                   min(record['total'], used + record.get('reserved', 0)))

    def _retype(self, gpu, move, now):
        """Move one idle GPU to ``move.new``: its provider held closed in
        Placement, then (vendor VFIO) every VF's type released by the
        privileged daemon, which checks that none is open; the free VFs
        take the new type in this pass's :meth:`_apply_gpu`. On mdev
        hosts the type is only what the driver offers.
        """
        slice_ = gpu.slices[0]
        with self.provider_held(
                providers.provider_name(self.hostname, gpu, slice_),
                slice_.resource_class):
            if gpu.board_info.get('vgpu_framework') == VENDOR_VFIO:
                self._release_gpu(gpu.address)
            self._chosen[gpu.address] = move.new
            self._held_since[gpu.address] = now
        LOG.info('%s: GPU %s re-typed from %s to %s: %s', self.DRIVER_NAME,
                 gpu.address, move.old, move.new, move.reason)

    # --- declared types -----------------------------------------------------

    def _apply_gpu(self, session, index):
        """Give declared types to the free VFs of a vendor-VFIO GPU, up
        to NVML's limit of the type.
        """
        device = session.device(index)
        if device.lost or device.mig_enabled or \
                not self._has_vendor_vfio(device.address):
            return
        busy = nvidia_common.active_vgpu_addresses(session, device)
        if busy is None:
            self.note('GPU %s: NVML cannot list its running vGPUs; not '
                      'assigning %s' % (device.address, vgpu_types.OPTION))
            return
        vfs = nvidia_vfio.list_vfs(self._sysfs, device.address,
                                   note=self.note)
        facts = self._held_types(session, device, vfs)
        declared = self._choice(device, [f.name.short for f in
                                         facts.values()],
                                session.vgpu_mixed_size(device))
        supported = {t.id: t for t in session.supported_vgpu_types(device)
                     if not t.mig_backed}
        for name in declared:
            vgpu_type = next((t for t in supported.values()
                              if vgpu_types.same_type(t.name, name)), None)
            if vgpu_type is None:
                self.note('GPU %s (%s) does not support the declared vGPU '
                          'type %s (%s)' % (device.address, device.name,
                                            name, vgpu_types.OPTION),
                          LOG.error)
                continue
            limit = session.vgpu_type_max_instances(device, vgpu_type.id)
            self._fill_vfs(device.address, vfs, vgpu_type.id, limit, busy)

    def _fill_vfs(self, address, vfs, type_id, limit, busy):
        """Assign ``type_id`` to free VFs until the GPU holds ``limit``."""
        holders = sum(1 for vf in vfs if vf.current_type == type_id)
        for vf in vfs:
            if limit is not None and holders >= limit:
                break
            if not vf.is_free or vf.address in busy:
                continue
            # Re-read: the VF's offer shrinks as its siblings take types.
            fresh = nvidia_vfio.read_vf(self._sysfs, vf.address, vf.index)
            if fresh is None or not fresh.is_free:
                continue
            if not fresh.offers(type_id):
                break
            try:
                nvidia_vfio.assign_type(self._sysfs, vf.address, type_id,
                                        in_use_addresses=busy,
                                        writer=self._write_vgpu_type)
            except (nvidia_vfio.VfioError,
                    privsep.InvalidPrivilegedRequest, OSError) as error:
                self.note('GPU %s: cannot assign vGPU type %d to VF %s: %s'
                          % (address, type_id, vf.address, error), LOG.error)
                continue
            holders += 1

    # --- mdev ---------------------------------------------------------------

    def _mdev_slices(self, session, device, parents, mdevs_on, mixed_size,
                     clique):
        hosted = hosted_mdev_types(parents, mdevs_on)
        wanted = list(hosted)
        for name in self._choice(
                device, [placement_traits.vgpu_short_name(n)
                         for n in hosted], mixed_size):
            if not any(vgpu_types.same_type(name, h) for h in wanted):
                wanted.append(name)
        slices = []
        for name in wanted:
            type_id = next((t.id for p in parents for t in p.types
                            if vgpu_types.same_type(t.name, name)), None)
            number = mdev_type_number(type_id)
            if type_id is None or number is None:
                # Also an mdev whose type its parent does not list: its
                # guest keeps running, but it cannot be reported.
                self.note('GPU %s: no mdev parent offers vGPU type %s; '
                          'leaving it out' % (device.address, name))
                continue
            facts = self._type_facts(session, device, number, name)
            if facts.name.mig_backed:
                continue
            handles = mdev_handles(parents, mdevs_on, name,
                                   facts.max_instances)
            if handles:
                slices.append(nvidia_common.vgpu_slice(
                    facts, handles, mixed_size, clique))
            else:
                self.note('GPU %s: vGPU type %s has no instance available'
                          % (device.address, facts.name.short), LOG.info)
        return slices


class TypeUnknown(Exception):
    """The type a GPU hosting nothing should offer cannot be told now."""


def _check_thresholds():
    options = CONF.gpu_partitions
    if not options.follow_demand_low < options.follow_demand_high:
        raise vgpu_types.DeclarationError(
            '[gpu_partitions] follow_demand_low (%s) must be below '
            'follow_demand_high (%s)' % (options.follow_demand_low,
                                         options.follow_demand_high))


class _Lazy:
    """A value computed on first use: libvirt is asked only when a GPU
    without vendor-VFIO VFs needs it.
    """

    _UNSET = object()

    def __init__(self, compute):
        self._compute = compute
        self._value = self._UNSET

    def get(self):
        if self._value is self._UNSET:
            self._value = self._compute()
        return self._value
