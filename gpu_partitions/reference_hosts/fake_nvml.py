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
"""A fake ``pynvml`` module answering from a reference host's NVML view.

Faked at the module boundary: code under test receives a :class:`FakeNvml`
where it would use the ``pynvml`` module and calls the same functions with
the same arguments. Constants, structure classes and exceptions are the
real ones from ``nvidia-ml-py``; handles are ctypes pointers as in
``pynvml``; list-filling calls fill caller-allocated ctypes arrays. See
``doc/source/reference-hosts.rst`` for the supported calls.
"""

import collections
import ctypes
import functools
import inspect

import pynvml

from gpu_partitions.reference_hosts import _validate

# Time-sliced vGPU types answer this for their GPU instance profile id;
# pynvml does not export NVML_INVALID_GPU_INSTANCE_PROFILE_ID.
INVALID_GPU_INSTANCE_PROFILE_ID = 0xFFFFFFFF

# pynvml functions that never touch the library: passed through as is.
_PURE_HELPERS = frozenset(('nvmlExceptionClass', 'nvmlStructToFriendlyObject',
                           'nvmlFriendlyObjectToStruct'))

# Compute instance profile index -> compute slices; the profile id equals
# the index.
_CI_PROFILE_SLICES = _validate.COMPUTE_INSTANCE_PROFILE_SLICES


def _api(method):
    """Count the call and refuse it before nvmlInit, as pynvml does."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self.calls[method.__name__] += 1
        if method.__name__ not in ('nvmlInit', 'nvmlInitWithFlags'):
            self._require_init()
        return method(self, *args, **kwargs)
    wrapper.fake_nvml_api = True
    return wrapper


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


def _counter(count_ref):
    """The c_uint behind a ``byref(count)`` or ``pointer(count)``."""
    target = getattr(count_ref, '_obj', None)
    if target is None and isinstance(count_ref, ctypes._Pointer):
        target = count_ref.contents
    if not isinstance(target, ctypes.c_uint):
        # A c_uint passed by value would be garbage for the C library.
        raise pynvml.NVMLError_InvalidArgument()
    return target


def _array(buffer_ref):
    """The ctypes array behind a buffer argument (array or byref(array))."""
    target = getattr(buffer_ref, '_obj', buffer_ref)
    if not isinstance(target, ctypes.Array):
        raise pynvml.NVMLError_InvalidArgument()
    return target


class _Gpu:
    def __init__(self, data, model):
        self.data = data
        self.model = model
        self.profiles_by_index = {
            profile['index']: profile
            for profile in model['gpu_instance_profiles']}
        self.profiles_by_id = {
            profile['id']: profile
            for profile in model['gpu_instance_profiles']}
        self.gpu_instances = []
        self.mig_devices = []

    @property
    def mig_enabled(self):
        mode = self.data['mig_mode']
        return mode is not None and mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE


class _GpuInstance:
    def __init__(self, gpu, data):
        self.gpu = gpu
        self.data = data
        self.profile = gpu.profiles_by_id[data['profile_id']]
        self.compute_instances = []


class _ComputeInstance:
    def __init__(self, gpu_instance, data):
        self.gpu_instance = gpu_instance
        self.gpu = gpu_instance.gpu
        self.data = data


class _MigDevice:
    def __init__(self, compute_instance):
        self.compute_instance = compute_instance
        self.gpu_instance = compute_instance.gpu_instance
        self.gpu = self.gpu_instance.gpu


class FakeNvml:
    """Stands in for the ``pynvml`` module on one reference host.

    ``section`` is the host's ``nvml`` section; None fakes a host without
    the NVIDIA driver (``nvmlInit`` raises ``NVMLError_LibraryNotFound``).
    ``calls`` counts the NVML functions called, by name.
    """

    def __init__(self, section):
        self.calls = collections.Counter()
        self._section = section
        self._init_count = 0
        self._entities = {}
        self._gpus = []
        self._vgpu_types = {}
        self._vgpu_instances = {}
        if section is not None:
            self._build(section)

    # -- bookkeeping ---------------------------------------------------------

    @property
    def total_calls(self):
        return sum(self.calls.values())

    def reset_calls(self):
        self.calls.clear()

    def __getattr__(self, name):
        # Only reached for names this class does not define.
        value = getattr(pynvml, name)
        if (name.startswith('nvml') and inspect.isfunction(value) and
                name not in _PURE_HELPERS):
            return functools.partial(self._unsupported, name)
        return value

    def _unsupported(self, name, *args, **kwargs):
        self.calls[name] += 1
        self._require_init()
        raise pynvml.NVMLError_NotSupported()

    def _require_init(self):
        if self._init_count == 0:
            raise pynvml.NVMLError_Uninitialized()

    def _register(self, entity):
        # Handles are ctypes pointers to fake, never dereferenced addresses.
        entity.address = 0x1000 + 0x10 * len(self._entities)
        self._entities[entity.address] = entity

    def _handle(self, entity, pointer_type=pynvml.c_nvmlDevice_t):
        return ctypes.cast(ctypes.c_void_p(entity.address), pointer_type)

    def _entity(self, handle, *kinds):
        if not isinstance(handle, ctypes._Pointer):
            raise pynvml.NVMLError_InvalidArgument()
        entity = self._entities.get(ctypes.cast(handle,
                                                ctypes.c_void_p).value)
        if not isinstance(entity, kinds):
            raise pynvml.NVMLError_InvalidArgument()
        gpu = entity if isinstance(entity, _Gpu) else entity.gpu
        if gpu.data.get('lost'):
            raise pynvml.NVMLError_GpuIsLost()
        return entity

    def _gpu(self, handle):
        return self._entity(handle, _Gpu)

    def _build(self, section):
        for model in section['models'].values():
            for vgpu_type in model['vgpu_types']:
                self._vgpu_types.setdefault(vgpu_type['id'], vgpu_type)
        # Device index -> the numbers of the cliques it is listed in (a
        # partial mesh lists a GPU in several).
        self._cliques_of = {}
        for number, clique in enumerate(section['nvlink_cliques']):
            for index in clique:
                self._cliques_of.setdefault(index, set()).add(number)
        for data in section['devices']:
            gpu = _Gpu(data, section['models'][data['model']])
            self._register(gpu)
            self._gpus.append(gpu)
            for gi_data in sorted(data['gpu_instances'],
                                  key=lambda gi: gi['id']):
                gpu_instance = _GpuInstance(gpu, gi_data)
                self._register(gpu_instance)
                gpu.gpu_instances.append(gpu_instance)
                for ci_data in sorted(gi_data['compute_instances'],
                                      key=lambda ci: ci['id']):
                    compute = _ComputeInstance(gpu_instance, ci_data)
                    self._register(compute)
                    gpu_instance.compute_instances.append(compute)
                    mig_device = _MigDevice(compute)
                    self._register(mig_device)
                    gpu.mig_devices.append(mig_device)
            for active in data['active_vgpus']:
                self._vgpu_instances[active['id']] = (gpu, active)

    # -- initialisation and system -------------------------------------------

    @_api
    def nvmlInit(self):
        self._start()

    @_api
    def nvmlInitWithFlags(self, flags):
        self._start()

    def _start(self):
        if self._section is None:
            raise pynvml.NVMLError_LibraryNotFound()
        self._init_count += 1

    @_api
    def nvmlShutdown(self):
        self._init_count -= 1

    @_api
    def nvmlSystemGetDriverVersion(self):
        return self._section['driver_version']

    @_api
    def nvmlSystemGetNVMLVersion(self):
        return '13.' + self._section['driver_version']

    # -- enumeration and identity --------------------------------------------

    @_api
    def nvmlDeviceGetCount(self):
        return len(self._gpus)

    @_api
    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self._gpus):
            raise pynvml.NVMLError_InvalidArgument()
        return self._handle(self._gpus[index])

    @_api
    def nvmlDeviceGetHandleByPciBusId(self, pci_bus_id):
        wanted = _parse_bus_id(_decode(pci_bus_id))
        for gpu in self._gpus:
            if _parse_bus_id(gpu.data['pci_bus_id']) == wanted:
                return self._handle(gpu)
        raise pynvml.NVMLError_NotFound()

    @_api
    def nvmlDeviceGetHandleByUUID(self, uuid):
        uuid = _decode(uuid)
        for gpu in self._gpus:
            if gpu.data['uuid'] == uuid:
                return self._handle(gpu)
            for mig_device in gpu.mig_devices:
                if mig_device.compute_instance.data['uuid'] == uuid:
                    return self._handle(mig_device)
        raise pynvml.NVMLError_NotFound()

    @_api
    def nvmlDeviceGetName(self, handle):
        entity = self._entity(handle, _Gpu, _MigDevice)
        if isinstance(entity, _MigDevice):
            return '%s %s' % (entity.gpu.data['name'],
                              _mig_device_profile_name(entity))
        return entity.data['name']

    @_api
    def nvmlDeviceGetUUID(self, handle):
        entity = self._entity(handle, _Gpu, _MigDevice)
        if isinstance(entity, _MigDevice):
            return entity.compute_instance.data['uuid']
        return entity.data['uuid']

    @_api
    def nvmlDeviceGetPciInfo(self, handle):
        entity = self._entity(handle, _Gpu, _MigDevice)
        data = (entity if isinstance(entity, _Gpu) else entity.gpu).data
        domain, bus, device, _function = _parse_bus_id(data['pci_bus_id'])
        info = pynvml.nvmlPciInfo_t()
        info.busId = data['pci_bus_id'].encode()
        info.busIdLegacy = data['pci_bus_id'][4:].encode()
        info.domain = domain
        info.bus = bus
        info.device = device
        info.pciDeviceId = int(data['pci_device_id'], 16)
        info.pciSubSystemId = int(data['pci_subsystem_id'], 16)
        return info

    nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo

    @_api
    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        entity = self._entity(handle, _Gpu, _MigDevice)
        if isinstance(entity, _MigDevice):
            total = entity.gpu_instance.profile['memory_mb'] * 2 ** 20
            used = 0
        else:
            total = entity.data['memory_total']
            used = entity.data['memory_used']
        if version:
            memory = pynvml.c_nvmlMemory_v2_t()
            memory.version = version
            memory.reserved = 0
        else:
            memory = pynvml.c_nvmlMemory_t()
        memory.total = total
        memory.used = used
        memory.free = total - used
        return memory

    @_api
    def nvmlDeviceGetArchitecture(self, handle):
        return self._gpu(handle).data['architecture']

    @_api
    def nvmlDeviceGetCudaComputeCapability(self, handle):
        major, minor = self._gpu(handle).data['cuda_capability']
        return (major, minor)

    # -- MIG -----------------------------------------------------------------

    @_api
    def nvmlDeviceGetMigMode(self, handle):
        mode = self._gpu(handle).data['mig_mode']
        if mode is None:
            raise pynvml.NVMLError_NotSupported()
        return list(mode)

    def _mig_gpu(self, handle):
        gpu = self._gpu(handle)
        if not gpu.mig_enabled:
            raise pynvml.NVMLError_NotSupported()
        return gpu

    def _profile(self, gpu, profile_id):
        profile = gpu.profiles_by_id.get(profile_id)
        if profile is None:
            raise pynvml.NVMLError_InvalidArgument()
        return profile

    @_api
    def nvmlDeviceGetGpuInstanceProfileInfo(self, device, profile,
                                            version=2):
        gpu = self._mig_gpu(device)
        if not 0 <= profile < pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise pynvml.NVMLError_InvalidArgument()
        data = gpu.profiles_by_index.get(profile)
        if data is None:
            raise pynvml.NVMLError_NotSupported()
        if version == 2:
            info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
            info.name = data['name'].encode()
        elif version == 1:
            info = pynvml.c_nvmlGpuInstanceProfileInfo_t()
        else:
            raise pynvml.NVMLError_FunctionNotFound()
        info.id = data['id']
        info.sliceCount = data['slice_count']
        info.instanceCount = data['instance_count']
        info.multiprocessorCount = data['multiprocessor_count']
        info.memorySizeMB = data['memory_mb']
        return info

    nvmlDeviceGetGpuInstanceProfileInfoV = nvmlDeviceGetGpuInstanceProfileInfo

    @_api
    def nvmlDeviceGetGpuInstancePossiblePlacements(self, device, profileId,
                                                   placementsRef, countRef):
        gpu = self._mig_gpu(device)
        placements = self._profile(gpu, profileId)['placements']
        count = _counter(countRef)
        if placementsRef is None:
            count.value = len(placements)
            return pynvml.NVML_SUCCESS
        buffer = _array(placementsRef)
        if count.value < len(placements) or len(buffer) < len(placements):
            count.value = len(placements)
            raise pynvml.NVMLError_InsufficientSize()
        for slot, (start, size) in enumerate(placements):
            buffer[slot].start = start
            buffer[slot].size = size
        count.value = len(placements)
        return pynvml.NVML_SUCCESS

    @_api
    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, device, profileId):
        gpu = self._mig_gpu(device)
        return _remaining_capacity(gpu, self._profile(gpu, profileId))

    @_api
    def nvmlDeviceGetGpuInstances(self, device, profileId, gpuInstancesRef,
                                  countRef):
        gpu = self._mig_gpu(device)
        profile = self._profile(gpu, profileId)
        count = _counter(countRef)
        if gpuInstancesRef is None:
            raise pynvml.NVMLError_InvalidArgument()
        buffer = _array(gpuInstancesRef)
        # NVML writes up to instanceCount entries without checking: a
        # smaller buffer is a caller bug, refused here.
        if len(buffer) < profile['instance_count']:
            raise pynvml.NVMLError_InsufficientSize()
        matching = [gi for gi in gpu.gpu_instances
                    if gi.data['profile_id'] == profileId]
        for slot, gpu_instance in enumerate(matching):
            buffer[slot] = self._handle(gpu_instance,
                                        pynvml.c_nvmlGpuInstance_t)
        count.value = len(matching)
        return pynvml.NVML_SUCCESS

    @_api
    def nvmlDeviceGetGpuInstanceById(self, device, gpuInstanceId):
        gpu = self._mig_gpu(device)
        for gpu_instance in gpu.gpu_instances:
            if gpu_instance.data['id'] == gpuInstanceId:
                return self._handle(gpu_instance, pynvml.c_nvmlGpuInstance_t)
        raise pynvml.NVMLError_NotFound()

    # MIG layout changes (root only on a real host; no permission check).

    @_api
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, device, profileId,
                                                 placement):
        gpu = self._mig_gpu(device)
        profile = self._profile(gpu, profileId)
        placement = getattr(placement, '_obj', placement)
        wanted = [placement.start, placement.size]
        if wanted not in [list(p) for p in profile['placements']]:
            raise pynvml.NVMLError_InvalidArgument()
        slots = set(range(placement.start,
                          placement.start + placement.size))
        for existing in gpu.gpu_instances:
            data = existing.data
            if slots & set(range(data['start'],
                                 data['start'] + data['size'])):
                raise pynvml.NVMLError_InsufficientResources()
        # Compute slices and the profile's instance limit bound it too
        # (nvmlDeviceGetGpuInstanceRemainingCapacity says the same).
        if _remaining_capacity(gpu, profile) < 1:
            raise pynvml.NVMLError_InsufficientResources()
        used = {existing.data['id'] for existing in gpu.gpu_instances}
        gi_id = min(set(range(len(used) + 1)) - used)
        gpu_instance = _GpuInstance(gpu, {
            'id': gi_id, 'profile_id': profileId, 'start': placement.start,
            'size': placement.size, 'compute_instances': []})
        self._register(gpu_instance)
        gpu.gpu_instances.append(gpu_instance)
        return self._handle(gpu_instance, pynvml.c_nvmlGpuInstance_t)

    @_api
    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance, profileId):
        gpu_instance = self._entity(gpuInstance, _GpuInstance)
        slices = _CI_PROFILE_SLICES.get(profileId)
        if slices is None or slices > gpu_instance.profile['slice_count']:
            raise pynvml.NVMLError_NotSupported()
        used = {ci.data['id'] for ci in gpu_instance.compute_instances}
        compute = _ComputeInstance(gpu_instance, {
            'id': min(set(range(len(used) + 1)) - used),
            'profile_id': profileId, 'start': 0, 'size': slices,
            'uuid': 'MIG-fake-%x-%d-%d' % (
                0xffff & id(gpu_instance.gpu), gpu_instance.data['id'],
                len(used))})
        self._register(compute)
        gpu_instance.compute_instances.append(compute)
        mig_device = _MigDevice(compute)
        self._register(mig_device)
        gpu_instance.gpu.mig_devices.append(mig_device)
        return self._handle(compute, pynvml.c_nvmlComputeInstance_t)

    @_api
    def nvmlComputeInstanceDestroy(self, computeInstance):
        compute = self._entity(computeInstance, _ComputeInstance)
        compute.gpu_instance.compute_instances.remove(compute)
        compute.gpu.mig_devices = [
            mig for mig in compute.gpu.mig_devices
            if mig.compute_instance is not compute]
        return pynvml.NVML_SUCCESS

    @_api
    def nvmlGpuInstanceDestroy(self, gpuInstance):
        gpu_instance = self._entity(gpuInstance, _GpuInstance)
        if gpu_instance.compute_instances:
            raise pynvml.NVMLError_InUse()
        gpu_instance.gpu.gpu_instances.remove(gpu_instance)
        return pynvml.NVML_SUCCESS

    @_api
    def nvmlGpuInstanceGetInfo(self, gpuInstance):
        gpu_instance = self._entity(gpuInstance, _GpuInstance)
        info = pynvml.c_nvmlGpuInstanceInfo_t()
        info.device = self._handle(gpu_instance.gpu)
        info.id = gpu_instance.data['id']
        info.profileId = gpu_instance.data['profile_id']
        info.placement.start = gpu_instance.data['start']
        info.placement.size = gpu_instance.data['size']
        return info

    @_api
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, device, profile,
                                                     engProfile, version=2):
        gpu_instance = self._entity(device, _GpuInstance)
        gi_slices = gpu_instance.profile['slice_count']
        slices = _CI_PROFILE_SLICES.get(profile)
        if (engProfile != pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                or slices is None or slices > gi_slices):
            raise pynvml.NVMLError_NotSupported()
        if version == 2:
            info = pynvml.c_nvmlComputeInstanceProfileInfo_v2_t()
            gi_name = gpu_instance.profile['name'].removeprefix('MIG ')
            info.name = ('MIG ' + gi_name if slices == gi_slices else
                         'MIG %dc.%s' % (slices, gi_name)).encode()
        elif version == 1:
            info = pynvml.c_nvmlComputeInstanceProfileInfo_t()
        else:
            raise pynvml.NVMLError_FunctionNotFound()
        info.id = profile
        info.sliceCount = slices
        info.instanceCount = gi_slices // slices
        info.multiprocessorCount = (
            gpu_instance.profile['multiprocessor_count'] * slices //
            gi_slices)
        return info

    nvmlGpuInstanceGetComputeInstanceProfileInfoV = (
        nvmlGpuInstanceGetComputeInstanceProfileInfo)

    @_api
    def nvmlGpuInstanceGetComputeInstances(self, gpuInstance, profileId,
                                           computeInstancesRef, countRef):
        gpu_instance = self._entity(gpuInstance, _GpuInstance)
        count = _counter(countRef)
        if computeInstancesRef is None:
            raise pynvml.NVMLError_InvalidArgument()
        buffer = _array(computeInstancesRef)
        matching = [ci for ci in gpu_instance.compute_instances
                    if ci.data['profile_id'] == profileId]
        if len(buffer) < len(matching):
            raise pynvml.NVMLError_InsufficientSize()
        for slot, compute in enumerate(matching):
            buffer[slot] = self._handle(compute,
                                        pynvml.c_nvmlComputeInstance_t)
        count.value = len(matching)
        return pynvml.NVML_SUCCESS

    @_api
    def nvmlComputeInstanceGetInfo(self, computeInstance):
        compute = self._entity(computeInstance, _ComputeInstance)
        info = pynvml.c_nvmlComputeInstanceInfo_t()
        info.device = self._handle(compute.gpu_instance.gpu)
        info.gpuInstance = self._handle(compute.gpu_instance,
                                        pynvml.c_nvmlGpuInstance_t)
        info.id = compute.data['id']
        info.profileId = compute.data['profile_id']
        info.placement.start = compute.data['start']
        info.placement.size = compute.data['size']
        return info

    nvmlComputeInstanceGetInfo_v2 = nvmlComputeInstanceGetInfo

    @_api
    def nvmlDeviceGetMaxMigDeviceCount(self, device):
        gpu = self._gpu(device)
        if gpu.data['mig_mode'] is None:
            raise pynvml.NVMLError_NotSupported()
        if not gpu.mig_enabled:
            return 0
        return max(profile['slice_count']
                   for profile in gpu.model['gpu_instance_profiles'])

    @_api
    def nvmlDeviceGetMigDeviceHandleByIndex(self, device, index):
        gpu = self._mig_gpu(device)
        limit = max(profile['slice_count']
                    for profile in gpu.model['gpu_instance_profiles'])
        if not 0 <= index < limit:
            raise pynvml.NVMLError_InvalidArgument()
        if index >= len(gpu.mig_devices):
            raise pynvml.NVMLError_NotFound()
        return self._handle(gpu.mig_devices[index])

    @_api
    def nvmlDeviceIsMigDeviceHandle(self, device):
        # pynvml returns the c_uint itself, not an int: keep the quirk.
        entity = self._entity(device, _Gpu, _MigDevice)
        return ctypes.c_uint(int(isinstance(entity, _MigDevice)))

    @_api
    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice):
        return self._handle(self._mig_device(migDevice).gpu)

    def _mig_device(self, handle):
        entity = self._entity(handle, _Gpu, _MigDevice)
        if not isinstance(entity, _MigDevice):
            raise pynvml.NVMLError_NotSupported()
        return entity

    @_api
    def nvmlDeviceGetGpuInstanceId(self, device):
        return self._mig_device(device).gpu_instance.data['id']

    @_api
    def nvmlDeviceGetComputeInstanceId(self, device):
        return self._mig_device(device).compute_instance.data['id']

    @_api
    def nvmlDeviceGetAttributes(self, device):
        mig_device = self._mig_device(device)
        profile = mig_device.gpu_instance.profile
        compute = mig_device.compute_instance.data
        attributes = pynvml.c_nvmlDeviceAttributes()
        attributes.multiprocessorCount = (
            profile['multiprocessor_count'] * compute['size'] //
            profile['slice_count'])
        attributes.gpuInstanceSliceCount = profile['slice_count']
        attributes.computeInstanceSliceCount = compute['size']
        attributes.memorySizeMB = profile['memory_mb']
        return attributes

    nvmlDeviceGetAttributes_v2 = nvmlDeviceGetAttributes

    # -- NVLink and P2P ------------------------------------------------------

    def _nvlink(self, handle, link):
        nvlink = self._gpu(handle).data['nvlink']
        if nvlink is None:
            raise pynvml.NVMLError_NotSupported()
        if not 0 <= link < nvlink['link_count']:
            raise pynvml.NVMLError_InvalidArgument()
        return nvlink

    @_api
    def nvmlDeviceGetNvLinkState(self, device, link):
        nvlink = self._nvlink(device, link)
        return int(link < nvlink['active_link_count'])

    @_api
    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle, link):
        return self._nvlink(handle, link)['remote_device_type']

    @_api
    def nvmlDeviceGetP2PStatus(self, device1, device2, p2pIndex):
        first, second = self._gpu(device1), self._gpu(device2)
        if self._cliques_of.get(first.data['index'], set()) & \
                self._cliques_of.get(second.data['index'], set()):
            return pynvml.NVML_P2P_STATUS_OK
        return pynvml.NVML_P2P_STATUS_NOT_SUPPORTED

    # -- vGPU ----------------------------------------------------------------

    @_api
    def nvmlDeviceGetVirtualizationMode(self, handle):
        return self._gpu(handle).data['virtualization_mode']

    @_api
    def nvmlDeviceGetHostVgpuMode(self, handle):
        mode = self._gpu(handle).data['host_vgpu_mode']
        if mode is None:
            raise pynvml.NVMLError_NotSupported()
        return mode

    @_api
    def nvmlDeviceGetSupportedVgpus(self, handle):
        return list(self._gpu(handle).data['supported_vgpus'])

    @_api
    def nvmlDeviceGetCreatableVgpus(self, handle):
        return list(self._gpu(handle).data['creatable_vgpus'])

    def _vgpu_type(self, type_id):
        vgpu_type = self._vgpu_types.get(type_id)
        if vgpu_type is None:
            raise pynvml.NVMLError_InvalidArgument()
        return vgpu_type

    @_api
    def nvmlVgpuTypeGetName(self, vgpuTypeId):
        return self._vgpu_type(vgpuTypeId)['name']

    @_api
    def nvmlVgpuTypeGetClass(self, vgpuTypeId):
        return self._vgpu_type(vgpuTypeId)['class']

    @_api
    def nvmlVgpuTypeGetFramebufferSize(self, vgpuTypeId):
        return self._vgpu_type(vgpuTypeId)['framebuffer_mb'] * 2 ** 20

    @_api
    def nvmlVgpuTypeGetMaxInstances(self, handle, vgpuTypeId):
        gpu = self._gpu(handle)
        if vgpuTypeId not in gpu.data['supported_vgpus']:
            raise pynvml.NVMLError_InvalidArgument()
        return self._vgpu_type(vgpuTypeId)['max_instances']

    @_api
    def nvmlVgpuTypeGetGpuInstanceProfileId(self, vgpuTypeId):
        profile_id = self._vgpu_type(vgpuTypeId)['gpu_instance_profile_id']
        if profile_id is None:
            return INVALID_GPU_INSTANCE_PROFILE_ID
        return profile_id

    @_api
    def nvmlDeviceGetActiveVgpus(self, handle):
        return [active['id']
                for active in self._gpu(handle).data['active_vgpus']]

    def _vgpu_instance(self, vgpu_instance):
        found = self._vgpu_instances.get(vgpu_instance)
        if found is None:
            raise pynvml.NVMLError_InvalidArgument()
        gpu, active = found
        if gpu.data.get('lost'):
            raise pynvml.NVMLError_GpuIsLost()
        return active

    @_api
    def nvmlVgpuInstanceGetType(self, vgpuInstance):
        return self._vgpu_instance(vgpuInstance)['type_id']

    @_api
    def nvmlVgpuInstanceGetUUID(self, vgpuInstance):
        return self._vgpu_instance(vgpuInstance)['uuid']

    @_api
    def nvmlVgpuInstanceGetGpuPciId(self, vgpuInstance):
        return self._vgpu_instance(vgpuInstance)['vf_pci_bus_id']

    @_api
    def nvmlVgpuInstanceGetGpuInstanceId(self, vgpuInstance):
        active = self._vgpu_instance(vgpuInstance)
        if 'gpu_instance_id' not in active:
            raise pynvml.NVMLError_NotSupported()
        return active['gpu_instance_id']

    @_api
    def nvmlVgpuInstanceGetMdevUUID(self, vgpuInstance):
        active = self._vgpu_instance(vgpuInstance)
        if 'mdev_uuid' not in active:
            raise pynvml.NVMLError_NotSupported()
        return active['mdev_uuid']


def _parse_bus_id(text):
    """(domain, bus, device, function) from any form NVML accepts."""
    try:
        parts = text.strip().split(':')
        if len(parts) == 3:
            domain, bus, rest = parts
        elif len(parts) == 2:
            domain, (bus, rest) = '0', parts
        else:
            raise ValueError(text)
        device, _dot, function = rest.partition('.')
        return (int(domain, 16), int(bus, 16), int(device, 16),
                int(function or '0', 16))
    except ValueError:
        raise pynvml.NVMLError_InvalidArgument() from None


def _mig_device_profile_name(mig_device):
    gi_name = mig_device.gpu_instance.profile['name']
    slices = mig_device.compute_instance.data['size']
    if slices == mig_device.gpu_instance.profile['slice_count']:
        return gi_name
    return 'MIG %dc.%s' % (slices, gi_name.removeprefix('MIG '))


def _remaining_capacity(gpu, profile):
    """How many more instances of ``profile`` fit next to the existing ones.

    Placements of one profile are aligned and equal-sized, so taking free
    placements in order is optimal; compute slices and the profile's
    instance count also bound the answer.
    """
    used_slots = set()
    used_slices = 0
    same_profile = 0
    for gpu_instance in gpu.gpu_instances:
        data = gpu_instance.data
        used_slots.update(range(data['start'], data['start'] + data['size']))
        used_slices += gpu_instance.profile['slice_count']
        same_profile += data['profile_id'] == profile['id']
    free_placements = 0
    for start, size in profile['placements']:
        slots = set(range(start, start + size))
        if not slots & used_slots:
            used_slots |= slots
            free_placements += 1
    total_slices = max(item['slice_count']
                       for item in gpu.model['gpu_instance_profiles'])
    return max(0, min(free_placements,
                      (total_slices - used_slices) // profile['slice_count'],
                      profile['instance_count'] - same_profile))
