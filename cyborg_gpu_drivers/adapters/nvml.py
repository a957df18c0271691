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
"""NVML through ``pynvml`` (nvidia-ml-py): the only module importing it.

:class:`Nvml` holds the ``pynvml`` module (the real one by default; tests
pass a reference host's fake) and caches what never changes while the
driver runs (MIG profile tables per GPU model, vGPU type facts).
``with nvml.session() as session:`` opens one ``nvmlInit``/
``nvmlShutdown`` pair; every method of :class:`Session` returns plain
Python values and raises only the exceptions defined here:

* :class:`NvmlUnavailable`: NVML cannot be initialised (no driver, no
  library, no permission);
* :class:`GpuLost`: the GPU fell off the bus (``NVMLError_GpuIsLost``);
* :class:`NotSupported`: the GPU lacks the feature asked about;
* :class:`NvmlError`: any other NVML error.

Sections: session and errors; identity and memory; MIG; NVLink; vGPU; MIG
layout changes (privileged).
"""

import ctypes
import dataclasses

from oslo_log import log as logging

import placement_traits

LOG = logging.getLogger(__name__)

# NVML answers this GPU instance profile id for time-sliced vGPU types;
# pynvml does not export NVML_INVALID_GPU_INSTANCE_PROFILE_ID.
INVALID_GPU_INSTANCE_PROFILE_ID = 0xFFFFFFFF

# A bound on garbage, not on hardware: the largest hosts have 16 GPUs.
# A count above it (2**32 - 1 from a C library gone wrong) would have
# every loop over the GPUs run for ever.
MAX_DEVICES = 1024

MIG_DISABLE = 0
MIG_ENABLE = 1


def instances_made(before, list_instances, profile_id, start):
    """The GPU instances at ``profile_id``/``start`` that a creation
    made: those ``list_instances()`` (NVML's listing, read only when
    needed) shows there that ``before`` did not hold, neither by id nor by
    placement, so that a garbled read never passes an old instance off as
    new; none when ``before`` already held that placement.
    """
    if any(gi.profile_id == profile_id and gi.start == start
           for gi in before):
        return []
    known = {gi.id for gi in before}
    return [gi for gi in list_instances()
            if gi.id not in known and gi.profile_id == profile_id and
            gi.start == start]


# --- session and errors ----------------------------------------------------

class NvmlError(Exception):
    """An NVML call failed; ``code`` is NVML's error value (or None)."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class NvmlUnavailable(NvmlError):
    """NVML could not be initialised on this host."""


class GpuLost(NvmlError):
    """The GPU fell off the bus; every call on it fails."""


class NotSupported(NvmlError):
    """The GPU does not have the feature asked about."""


@dataclasses.dataclass(frozen=True)
class Device:
    """One physical GPU NVML enumerates.

    ``address`` is the sysfs PCI address, None when the GPU is ``lost``
    (NVML then answers nothing about it). ``mig_mode`` is ``(current,
    pending)``, None when the GPU has no MIG.
    """
    index: int
    handle: object = dataclasses.field(repr=False, compare=False)
    address: str | None = None
    name: str | None = None
    uuid: str | None = None
    device_id: str | None = None
    memory_mib: int = 0
    architecture: int | None = None
    cuda_capability: tuple | None = None
    mig_mode: tuple | None = None
    lost: bool = False

    @property
    def mig_enabled(self):
        return self.mig_mode is not None and self.mig_mode[0] == MIG_ENABLE


@dataclasses.dataclass(frozen=True)
class GpuInstanceProfile:
    """A MIG GPU instance profile of a GPU model (``nvidia-smi mig -lgip``).

    ``name`` without NVML's ``MIG`` prefix (``3g.40gb``); ``placements``
    are ``(start, size)`` in memory-slot units.
    """
    id: int
    name: str
    slice_count: int
    instance_count: int
    memory_mib: int
    placements: tuple


@dataclasses.dataclass(frozen=True)
class GpuInstance:
    """An existing GPU instance.

    ``complete`` is False when it has no compute instance (created half-way,
    unusable).
    """
    id: int
    profile_id: int
    start: int
    size: int
    complete: bool


@dataclasses.dataclass(frozen=True)
class VgpuType:
    """A vGPU type; ``gpu_instance_profile_id`` None when time-sliced."""
    id: int
    name: str
    gpu_instance_profile_id: int | None

    @property
    def mig_backed(self):
        return self.gpu_instance_profile_id is not None


@dataclasses.dataclass(frozen=True)
class ActiveVgpu:
    """A running vGPU: its type and the VF (or mdev parent) it runs on."""
    type_id: int
    address: str | None
    gpu_instance_id: int | None


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def profile_name(nvml_name):
    """``MIG 3g.40gb`` (as NVML names a profile) gives ``3g.40gb``."""
    return _text(nvml_name).strip().removeprefix('MIG ').strip()


class Nvml:
    """The ``pynvml`` module plus what may be cached across scans."""

    def __init__(self, module=None):
        self._module = module
        # GPU model name -> profiles; vGPU type id -> VgpuType. Both are
        # fixed by the GPU model and the driver, not by the GPU's state.
        self.profiles_by_model = {}
        self.vgpu_types = {}

    @property
    def module(self):
        if self._module is None:
            import pynvml
            self._module = pynvml
        return self._module

    def session(self):
        return Session(self)


class Session:
    """One ``nvmlInit``/``nvmlShutdown`` pair; use as a context manager."""

    def __init__(self, nvml):
        self._nvml = nvml
        self._module = None

    def __enter__(self):
        try:
            module = self._nvml.module
        except ImportError as error:
            raise NvmlUnavailable('pynvml (nvidia-ml-py) is not installed: '
                                  '%s' % error)
        try:
            module.nvmlInit()
        except module.NVMLError as error:
            raise NvmlUnavailable('nvmlInit failed: %s' % error,
                                  getattr(error, 'value', None))
        except OSError as error:
            raise NvmlUnavailable('nvmlInit failed: %s' % error)
        self._module = module
        return self

    def __exit__(self, *exc_info):
        try:
            self._module.nvmlShutdown()
        except self._module.NVMLError as error:
            LOG.debug('nvmlShutdown failed: %s', error)
        return False

    def _call(self, name, *args, **kwargs):
        """Call ``pynvml.<name>`` and map its errors to ours."""
        module = self._module
        try:
            return getattr(module, name)(*args, **kwargs)
        except module.NVMLError_GpuIsLost as error:
            raise GpuLost('%s: GPU is lost' % name, error.value)
        except (module.NVMLError_NotSupported,
                module.NVMLError_FunctionNotFound) as error:
            raise NotSupported('%s: not supported' % name, error.value)
        except module.NVMLError as error:
            raise NvmlError('%s: %s' % (name, error),
                            getattr(error, 'value', None))

    # --- identity and memory ---------------------------------------------

    def driver_version(self):
        return _text(self._call('nvmlSystemGetDriverVersion'))

    def devices(self):
        """Every GPU, in NVML index order; a lost one has ``lost=True``."""
        return [self.device(index) for index in range(self.device_count())]

    def device_count(self):
        """How many GPUs NVML enumerates; a garbage answer (not an int,
        negative, or past :data:`MAX_DEVICES`) is an :class:`NvmlError`,
        never a bound of the loops over the GPUs.
        """
        count = self._call('nvmlDeviceGetCount')
        if type(count) is not int or not 0 <= count <= MAX_DEVICES:
            raise NvmlError('nvmlDeviceGetCount answered %s, not a count of '
                            'GPUs' % repr(count)[:80])
        return count

    def device(self, index):
        """The GPU at NVML index ``index``; ``lost=True`` when it is."""
        handle = self._call('nvmlDeviceGetHandleByIndex', index)
        try:
            return self._device(index, handle)
        except GpuLost:
            return Device(index=index, handle=handle, lost=True)

    def _device(self, index, handle):
        pci = self._call('nvmlDeviceGetPciInfo', handle)
        memory = self._call('nvmlDeviceGetMemoryInfo', handle)
        try:
            mig_mode = tuple(self._call('nvmlDeviceGetMigMode', handle))
        except NotSupported:
            mig_mode = None
        try:
            architecture = self._call('nvmlDeviceGetArchitecture', handle)
        except NotSupported:
            architecture = None
        try:
            cuda = tuple(self._call('nvmlDeviceGetCudaComputeCapability',
                                    handle))
        except NotSupported:
            cuda = None
        return Device(
            index=index, handle=handle,
            address=placement_traits.pci_address(_text(pci.busId)),
            name=_text(self._call('nvmlDeviceGetName', handle)),
            uuid=_text(self._call('nvmlDeviceGetUUID', handle)),
            device_id='%04x' % (pci.pciDeviceId >> 16),
            memory_mib=memory.total // 2 ** 20,
            architecture=architecture, cuda_capability=cuda,
            mig_mode=mig_mode)

    # --- MIG -------------------------------------------------------------

    def gpu_instance_profiles(self, device):
        """The MIG profiles of the device's model (cached per model)."""
        cached = self._nvml.profiles_by_model.get(device.name)
        if cached is not None:
            return cached
        module = self._module
        profiles = []
        for index in range(module.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = self._call('nvmlDeviceGetGpuInstanceProfileInfo',
                                  device.handle, index)
            except NotSupported:
                continue
            except NvmlError as error:
                if error.code != module.NVML_ERROR_INVALID_ARGUMENT:
                    raise
                continue
            profiles.append(GpuInstanceProfile(
                id=info.id,
                name=profile_name(info.name),
                slice_count=info.sliceCount,
                instance_count=info.instanceCount,
                memory_mib=info.memorySizeMB,
                placements=self._placements(device.handle, info.id)))
        profiles = tuple(sorted(profiles, key=lambda p: p.id))
        if profiles:
            # Never cache none: one GPU failing every profile read must
            # not leave the other GPUs of its model without profiles.
            self._nvml.profiles_by_model[device.name] = profiles
        return profiles

    def _placements(self, handle, profile_id):
        module = self._module
        count = ctypes.c_uint(0)
        self._call('nvmlDeviceGetGpuInstancePossiblePlacements', handle,
                   profile_id, None, ctypes.byref(count))
        buffer = (module.c_nvmlGpuInstancePlacement_t * count.value)()
        self._call('nvmlDeviceGetGpuInstancePossiblePlacements', handle,
                   profile_id, buffer, ctypes.byref(count))
        return tuple((p.start, p.size) for p in buffer[:count.value])

    def gpu_instances(self, device, profiles):
        """Existing GPU instances, sorted by start; see ``complete``."""
        module = self._module
        found = []
        for profile in profiles:
            buffer = (module.c_nvmlGpuInstance_t *
                      max(profile.instance_count, 1))()
            count = ctypes.c_uint(0)
            self._call('nvmlDeviceGetGpuInstances', device.handle,
                       profile.id, buffer, ctypes.byref(count))
            for gpu_instance in buffer[:count.value]:
                found.append(self._call('nvmlGpuInstanceGetInfo',
                                        gpu_instance))
        with_compute = self._gpu_instances_with_compute(
            device, {info.id for info in found})
        return sorted((GpuInstance(
            id=info.id, profile_id=info.profileId,
            start=info.placement.start, size=info.placement.size,
            complete=info.id in with_compute) for info in found),
            key=lambda gi: (gi.start, gi.id))

    def _gpu_instances_with_compute(self, device, wanted):
        """Which of the GPU instance ids ``wanted`` have a compute instance.

        A MIG device exists for each compute instance: walking them costs
        fewer calls than asking every GPU instance for each compute
        profile, and the walk stops once every instance is accounted for.
        """
        ids = set()
        if not wanted:
            return ids
        for index in range(self._call('nvmlDeviceGetMaxMigDeviceCount',
                                      device.handle)):
            try:
                mig = self._call('nvmlDeviceGetMigDeviceHandleByIndex',
                                 device.handle, index)
            except NvmlError as error:
                if error.code == self._module.NVML_ERROR_NOT_FOUND:
                    continue
                raise
            ids.add(self._call('nvmlDeviceGetGpuInstanceId', mig))
            if wanted <= ids:
                break
        return ids

    # --- NVLink ----------------------------------------------------------

    def has_nvlink(self, device):
        try:
            self._call('nvmlDeviceGetNvLinkState', device.handle, 0)
        except (NotSupported, GpuLost):
            return False
        except NvmlError:
            return False
        return True

    def nvlink_peers(self, first, second):
        """True when the two GPUs reach each other over NVLink.

        Works behind NVSwitch, where per-link remote info names the switch.
        """
        module = self._module
        try:
            status = self._call('nvmlDeviceGetP2PStatus', first.handle,
                                second.handle,
                                module.NVML_P2P_CAPS_INDEX_NVLINK)
        except (NotSupported, GpuLost):
            return False
        return status == module.NVML_P2P_STATUS_OK

    # --- vGPU ------------------------------------------------------------

    def supported_vgpu_types(self, device):
        """The vGPU types the GPU supports (type facts cached by id)."""
        try:
            type_ids = self._call('nvmlDeviceGetSupportedVgpus',
                                  device.handle)
        except NotSupported:
            return []
        return [self.vgpu_type(type_id) for type_id in type_ids]

    def vgpu_type(self, type_id):
        cached = self._nvml.vgpu_types.get(type_id)
        if cached is None:
            profile_id = self._call('nvmlVgpuTypeGetGpuInstanceProfileId',
                                    type_id)
            cached = VgpuType(
                id=type_id,
                name=_text(self._call('nvmlVgpuTypeGetName', type_id)),
                gpu_instance_profile_id=(
                    None if profile_id == INVALID_GPU_INSTANCE_PROFILE_ID
                    else profile_id))
            self._nvml.vgpu_types[type_id] = cached
        return cached

    def active_vgpus(self, device):
        """The vGPUs running on the GPU and the VFs they run on.

        None when NVML cannot say (not supported): unknown, which callers
        count as every unit in use, never as none.
        """
        try:
            instance_ids = self._call('nvmlDeviceGetActiveVgpus',
                                      device.handle)
        except NotSupported:
            return None
        active = []
        for instance in instance_ids:
            bus_id = _text(self._call('nvmlVgpuInstanceGetGpuPciId',
                                      instance))
            try:
                gpu_instance_id = self._call(
                    'nvmlVgpuInstanceGetGpuInstanceId', instance)
            except NotSupported:
                gpu_instance_id = None
            active.append(ActiveVgpu(
                type_id=self._call('nvmlVgpuInstanceGetType', instance),
                address=(placement_traits.pci_address(bus_id)
                         if bus_id else None),
                gpu_instance_id=gpu_instance_id))
        return active

    def vgpu_type_framebuffer_mib(self, type_id):
        """Framebuffer of a vGPU type in MiB."""
        return self._call('nvmlVgpuTypeGetFramebufferSize',
                          type_id) // 2 ** 20

    def vgpu_type_max_instances(self, device, type_id):
        """How many vGPUs of the type the GPU holds at most, None if NVML
        does not say.
        """
        try:
            return self._call('nvmlVgpuTypeGetMaxInstances', device.handle,
                              type_id)
        except NotSupported:
            return None

    def vgpu_mixed_size(self, device):
        """True when the GPU runs time-sliced vGPUs in mixed-size
        (heterogeneous) mode; False where NVML has no such mode.
        """
        try:
            return self._call('nvmlDeviceGetVgpuHeterogeneousMode',
                              device.handle) == 1
        except NotSupported:
            return False

    # --- MIG layout changes (run as root, from the privsep daemon) -------

    def _device_at(self, address):
        handle = self._call('nvmlDeviceGetHandleByPciBusId', address)
        return Device(index=-1, handle=handle, address=address,
                      name=_text(self._call('nvmlDeviceGetName', handle)))

    def active_vgpus_at(self, address):
        """:meth:`active_vgpus` of the GPU at ``address``."""
        return self.active_vgpus(self._device_at(address))

    def mig_state_at(self, address):
        """``(GPU instances, {MIG-backed vGPU type id: GPU instance
        profile id})`` of the GPU at ``address``.
        """
        device = self._device_at(address)
        instances = self.gpu_instances(device,
                                       self.gpu_instance_profiles(device))
        return instances, {t.id: t.gpu_instance_profile_id
                           for t in self.supported_vgpu_types(device)
                           if t.mig_backed}

    def check_layout(self, address, instances):
        """Refuse ``[(profile_id, start)]`` unless every profile id is one
        of the GPU's, every start one of its placements, and no two
        instances overlap; returns ``[(profile_id, start, size)]``.
        """
        profiles = {p.id: p for p in
                    self.gpu_instance_profiles(self._device_at(address))}
        checked, used = [], set()
        for profile_id, start in instances:
            profile = profiles.get(profile_id)
            if profile is None:
                raise ValueError('GPU %s has no MIG profile id %r; it has %s'
                                 % (address, profile_id, sorted(profiles)))
            size = dict(profile.placements).get(start)
            if size is None:
                raise ValueError('MIG profile %s cannot start at %r on GPU '
                                 '%s' % (profile.name, start, address))
            slots = set(range(start, start + size))
            if slots & used:
                raise ValueError('MIG layout overlaps at %s on GPU %s'
                                 % (sorted(slots & used), address))
            used |= slots
            checked.append((profile_id, start, size))
        slices = sum(profiles[profile_id].slice_count
                     for profile_id, _, _ in checked)
        whole = max(profile.slice_count for profile in profiles.values())
        if slices > whole:
            raise ValueError('MIG layout takes %d compute slices of the %d '
                             'of GPU %s' % (slices, whole, address))
        return checked

    def replace_gpu_instances(self, address, instances):
        """Destroy every GPU instance of an idle GPU, create ``instances``.

        ``instances`` is ``[(profile_id, start)]``, checked with
        :meth:`check_layout` before anything is destroyed; each new GPU
        instance gets one compute instance covering it. If a creation
        fails, whatever is raised, the new instances are destroyed and the
        old layout is created again before the error is raised. The caller
        has checked that nothing runs on the GPU.
        """
        wanted = self.check_layout(address, instances)
        device = self._device_at(address)
        profiles = self.gpu_instance_profiles(device)
        before = [(gi.profile_id, gi.start, gi.size) for gi in
                  self.gpu_instances(device, profiles)]
        self._destroy_all(device, profiles)
        try:
            self._create(device.handle, wanted)
        except BaseException:
            # Whatever stops it, a stop of the daemon included.
            self._destroy_all(device, profiles)
            self._create(device.handle, before)
            raise

    def create_gpu_instance(self, address, profile_id, start):
        """Create one GPU instance of ``profile_id`` at ``start`` beside
        those that exist, with one compute instance covering it; returns
        the new GPU instance's id.

        Checked with :meth:`check_layout` together with the existing
        instances first. The id is the one NVML then lists at that
        placement, complete, among the instances that were not there
        before (not an answer taken on trust). If anything fails from the
        creation call on, whatever is raised, also a creation that took
        effect and lost its answer or a garbage answer, the instance NVML
        lists there is destroyed again before the error is raised, so a
        failure leaves the GPU as it was.
        """
        device = self._device_at(address)
        profiles = self.gpu_instance_profiles(device)
        before = self.gpu_instances(device, profiles)
        [wanted] = self.check_layout(
            address, [(gi.profile_id, gi.start) for gi in before] +
            [(profile_id, start)])[-1:]
        placement = self._module.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = wanted[1], wanted[2]
        try:
            gpu_instance = self._call(
                'nvmlDeviceCreateGpuInstanceWithPlacement', device.handle,
                profile_id, ctypes.byref(placement))
            self._create_full_compute_instance(gpu_instance)
            made = [gi for gi in self._made(device, profiles, before,
                                            profile_id, start)
                    if gi.complete]
            if len(made) != 1:
                raise NvmlError('GPU %s: no complete GPU instance of profile '
                                'id %d at %d after its creation'
                                % (address, profile_id, start))
            return made[0].id
        except BaseException:
            # Whatever stops it, a stop of the daemon included.
            self._undo_create(device, profiles, before, profile_id, start)
            raise

    def _made(self, device, profiles, before, profile_id, start):
        return instances_made(
            before, lambda: self.gpu_instances(device, profiles),
            profile_id, start)

    def _undo_create(self, device, profiles, before, profile_id, start):
        """Destroy what NVML lists at the placement a failed creation
        asked for that was not there before; logged when that fails too
        (the clean-up pass and the scan see what is left).
        """
        try:
            for gi in self._made(device, profiles, before, profile_id,
                                 start):
                gpu_instance = self._call('nvmlDeviceGetGpuInstanceById',
                                          device.handle, gi.id)
                self._destroy_compute_instances(gpu_instance)
                self._call('nvmlGpuInstanceDestroy', gpu_instance)
        except Exception as error:
            LOG.error('GPU %s: the GPU instance made at %d could not be '
                      'destroyed after its creation failed: %s: %s',
                      device.address, start, type(error).__name__, error)

    def destroy_gpu_instance(self, address, gpu_instance_id):
        """Destroy one GPU instance and its compute instances."""
        device = self._device_at(address)
        gpu_instance = self._call('nvmlDeviceGetGpuInstanceById',
                                  device.handle, gpu_instance_id)
        self._destroy_compute_instances(gpu_instance)
        self._call('nvmlGpuInstanceDestroy', gpu_instance)

    def _destroy_all(self, device, profiles):
        for existing in self.gpu_instances(device, profiles):
            gpu_instance = self._call('nvmlDeviceGetGpuInstanceById',
                                      device.handle, existing.id)
            self._destroy_compute_instances(gpu_instance)
            self._call('nvmlGpuInstanceDestroy', gpu_instance)

    def _create(self, handle, instances):
        module = self._module
        for profile_id, start, size in instances:
            placement = module.c_nvmlGpuInstancePlacement_t()
            placement.start = start
            placement.size = size
            gpu_instance = self._call(
                'nvmlDeviceCreateGpuInstanceWithPlacement', handle,
                profile_id, ctypes.byref(placement))
            self._create_full_compute_instance(gpu_instance)

    def _compute_instance_profiles(self, gpu_instance):
        """The compute instance profiles this GPU instance supports."""
        module = self._module
        for ci_profile in range(module.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                yield self._call(
                    'nvmlGpuInstanceGetComputeInstanceProfileInfo',
                    gpu_instance, ci_profile,
                    module.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            except (NotSupported, NvmlError):
                continue

    def _destroy_compute_instances(self, gpu_instance):
        module = self._module
        for info in self._compute_instance_profiles(gpu_instance):
            buffer = (module.c_nvmlComputeInstance_t *
                      max(info.instanceCount, 1))()
            count = ctypes.c_uint(0)
            self._call('nvmlGpuInstanceGetComputeInstances', gpu_instance,
                       info.id, buffer, ctypes.byref(count))
            for compute in buffer[:count.value]:
                self._call('nvmlComputeInstanceDestroy', compute)

    def _create_full_compute_instance(self, gpu_instance):
        best = max(self._compute_instance_profiles(gpu_instance),
                   key=lambda info: info.sliceCount, default=None)
        if best is None:
            raise NotSupported('no compute instance profile fits')
        self._call('nvmlGpuInstanceCreateComputeInstance', gpu_instance,
                   best.id)
