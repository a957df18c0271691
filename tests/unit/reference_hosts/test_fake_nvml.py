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
"""The fake pynvml answers as pynvml does, from reference host data."""

import ctypes
from ctypes import byref
from ctypes import c_uint

import pynvml
import testtools

from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml

ID_3G_40GB = 9
ID_1G_10GB = 19
ID_2G_20GB = 14


def started(name):
    nvml = reference_hosts.load(name).fake_nvml()
    nvml.nvmlInit()
    return nvml


class TestLifecycle(testtools.TestCase):

    def test_calls_before_init_raise_uninitialized(self):
        nvml = reference_hosts.load('hgx-h100').fake_nvml()
        self.assertRaises(pynvml.NVMLError_Uninitialized,
                          nvml.nvmlDeviceGetCount)
        nvml.nvmlInit()
        self.assertEqual(8, nvml.nvmlDeviceGetCount())
        nvml.nvmlShutdown()
        self.assertRaises(pynvml.NVMLError_Uninitialized,
                          nvml.nvmlDeviceGetCount)

    def test_host_without_nvidia_driver(self):
        nvml = reference_hosts.load('mi300x-spx').fake_nvml()
        error = self.assertRaises(pynvml.NVMLError, nvml.nvmlInit)
        self.assertIsInstance(error, pynvml.NVMLError_LibraryNotFound)
        self.assertEqual(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, error.value)
        self.assertRaises(pynvml.NVMLError_Uninitialized,
                          nvml.nvmlDeviceGetCount)

    def test_module_surface(self):
        nvml = started('pcie-l40s')
        # Constants, structures and exceptions are pynvml's own.
        self.assertIs(pynvml.NVMLError_GpuIsLost, nvml.NVMLError_GpuIsLost)
        self.assertIs(pynvml.c_nvmlGpuInstancePlacement_t,
                      nvml.c_nvmlGpuInstancePlacement_t)
        self.assertEqual(36, nvml.NVML_NVLINK_MAX_LINKS)
        # A real pynvml function the fake lacks answers NotSupported ...
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        self.assertRaises(pynvml.NVMLError_NotSupported,
                          nvml.nvmlDeviceGetNumaNodeId, handle)
        # ... and a name pynvml does not have does not exist.
        self.assertRaises(AttributeError, getattr, nvml,
                          'nvmlDeviceGetEverything')

    def test_calls_are_counted(self):
        nvml = started('pcie-l40s')
        self.assertEqual({'nvmlInit': 1}, dict(nvml.calls))
        nvml.reset_calls()
        for index in range(nvml.nvmlDeviceGetCount()):
            nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index))
        self.assertEqual(1, nvml.calls['nvmlDeviceGetCount'])
        self.assertEqual(4, nvml.calls['nvmlDeviceGetHandleByIndex'])
        self.assertEqual(4, nvml.calls['nvmlDeviceGetName'])
        self.assertEqual(9, nvml.total_calls)
        # Looking a function up is not calling it.
        self.assertTrue(callable(nvml.nvmlDeviceGetNvLinkState))
        self.assertEqual(9, nvml.total_calls)


class TestIdentity(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.nvml = started('hgx-h100')

    def test_pci_info_like_pynvml(self):
        handle = self.nvml.nvmlDeviceGetHandleByIndex(4)
        self.assertIsInstance(handle, pynvml.c_nvmlDevice_t)
        pci = self.nvml.nvmlDeviceGetPciInfo(handle)
        self.assertIsInstance(pci, pynvml.nvmlPciInfo_t)
        # pynvml's _PrintableStructure decodes the c_char fields on read.
        self.assertEqual('00000000:9D:00.0', pci.busId)
        self.assertEqual('0000:9D:00.0', pci.busIdLegacy)
        # Underneath, the field holds the bytes the C library wrote.
        self.assertEqual(b'00000000:9D:00.0',
                         ctypes.Structure.__getattribute__(pci, 'busId'))
        self.assertEqual((0, 0x9d, 0), (pci.domain, pci.bus, pci.device))
        self.assertEqual(0x233010DE, pci.pciDeviceId)
        self.assertEqual('NVIDIA H100 80GB HBM3',
                         self.nvml.nvmlDeviceGetName(handle))
        self.assertEqual(85520809984,
                         self.nvml.nvmlDeviceGetMemoryInfo(handle).total)
        self.assertEqual(pynvml.NVML_DEVICE_ARCH_HOPPER,
                         self.nvml.nvmlDeviceGetArchitecture(handle))
        self.assertEqual((9, 0),
                         self.nvml.nvmlDeviceGetCudaComputeCapability(handle))

    def test_handle_by_pci_bus_id_accepts_nvml_forms(self):
        uuid = self.nvml.nvmlDeviceGetUUID(
            self.nvml.nvmlDeviceGetHandleByIndex(5))
        for bus_id in ('00000000:C3:00.0', '0000:c3:00.0', b'0000:C3:00.0',
                       'c3:00.0'):
            handle = self.nvml.nvmlDeviceGetHandleByPciBusId(bus_id)
            self.assertEqual(uuid, self.nvml.nvmlDeviceGetUUID(handle))
        self.assertRaises(pynvml.NVMLError_NotFound,
                          self.nvml.nvmlDeviceGetHandleByPciBusId,
                          '0000:c4:00.0')
        self.assertRaises(pynvml.NVMLError_InvalidArgument,
                          self.nvml.nvmlDeviceGetHandleByIndex, 8)

    def test_handle_by_uuid(self):
        handle = self.nvml.nvmlDeviceGetHandleByIndex(2)
        uuid = self.nvml.nvmlDeviceGetUUID(handle)
        self.assertTrue(uuid.startswith('GPU-'))
        self.assertEqual(
            '00000000:52:00.0',
            self.nvml.nvmlDeviceGetPciInfo(
                self.nvml.nvmlDeviceGetHandleByUUID(uuid)).busId)

    def test_foreign_handle_is_refused(self):
        other = started('hgx-h200')
        self.assertRaises(pynvml.NVMLError_InvalidArgument,
                          self.nvml.nvmlDeviceGetName,
                          ctypes.cast(ctypes.c_void_p(0xdead0),
                                      pynvml.c_nvmlDevice_t))
        self.assertIsInstance(
            other.nvmlDeviceGetName(other.nvmlDeviceGetHandleByIndex(0)),
            str)


class TestMig(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.nvml = started('hgx-h100')
        self.gpu = self.nvml.nvmlDeviceGetHandleByIndex(1)  # 3g + 3g

    def test_profile_info_by_index(self):
        info = self.nvml.nvmlDeviceGetGpuInstanceProfileInfo(
            self.gpu, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
        self.assertEqual(ID_3G_40GB, info.id)
        self.assertEqual('MIG 3g.40gb', info.name)
        self.assertEqual((3, 2, 40448, 60),
                         (info.sliceCount, info.instanceCount,
                          info.memorySizeMB, info.multiprocessorCount))
        info = self.nvml.nvmlDeviceGetGpuInstanceProfileInfo(
            self.gpu, pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2)
        self.assertEqual((15, 'MIG 1g.20gb'), (info.id, info.name))
        self.assertRaises(pynvml.NVMLError_NotSupported,
                          self.nvml.nvmlDeviceGetGpuInstanceProfileInfo,
                          self.gpu, pynvml.NVML_GPU_INSTANCE_PROFILE_8_SLICE)

    def test_possible_placements_buffer_semantics(self):
        count = c_uint(0)
        self.assertEqual(pynvml.NVML_SUCCESS,
                         self.nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
                             self.gpu, ID_1G_10GB, None, byref(count)))
        self.assertEqual(7, count.value)
        short = (pynvml.c_nvmlGpuInstancePlacement_t * 2)()
        small = c_uint(2)
        self.assertRaises(pynvml.NVMLError_InsufficientSize,
                          self.nvml.nvmlDeviceGetGpuInstancePossiblePlacements,
                          self.gpu, ID_1G_10GB, short, byref(small))
        self.assertEqual(7, small.value)
        placements = (pynvml.c_nvmlGpuInstancePlacement_t * count.value)()
        self.nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
            self.gpu, ID_3G_40GB, placements, byref(count))
        self.assertEqual(2, count.value)
        self.assertEqual([(0, 4), (4, 4)],
                         [(p.start, p.size)
                          for p in placements[:count.value]])
        self.assertRaises(pynvml.NVMLError_InvalidArgument,
                          self.nvml.nvmlDeviceGetGpuInstancePossiblePlacements,
                          self.gpu, 4, None, byref(count))

    def test_gpu_instances_fill_the_caller_buffer(self):
        instances = (pynvml.c_nvmlGpuInstance_t * 2)()
        count = c_uint(0)
        self.nvml.nvmlDeviceGetGpuInstances(self.gpu, ID_3G_40GB, instances,
                                            byref(count))
        self.assertEqual(2, count.value)
        infos = [self.nvml.nvmlGpuInstanceGetInfo(gi)
                 for gi in instances[:count.value]]
        self.assertEqual([(1, ID_3G_40GB, 0, 4), (2, ID_3G_40GB, 4, 4)],
                         [(i.id, i.profileId, i.placement.start,
                           i.placement.size) for i in infos])
        self.assertEqual(
            self.nvml.nvmlDeviceGetUUID(self.gpu),
            self.nvml.nvmlDeviceGetUUID(infos[0].device))
        self.assertRaises(pynvml.NVMLError_InvalidArgument,
                          self.nvml.nvmlDeviceGetGpuInstances,
                          self.gpu, ID_3G_40GB, None, byref(count))
        self.nvml.nvmlDeviceGetGpuInstances(
            self.gpu, ID_1G_10GB, (pynvml.c_nvmlGpuInstance_t * 7)(),
            byref(count))
        self.assertEqual(0, count.value)

    def test_compute_instances_and_mig_devices(self):
        gpu_instance = self.nvml.nvmlDeviceGetGpuInstanceById(self.gpu, 2)
        info = self.nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
            gpu_instance, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
            pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
        self.assertEqual((2, 3, 1), (info.id, info.sliceCount,
                                     info.instanceCount))
        computes = (pynvml.c_nvmlComputeInstance_t * info.instanceCount)()
        count = c_uint()
        self.nvml.nvmlGpuInstanceGetComputeInstances(
            gpu_instance, info.id, computes, byref(count))
        self.assertEqual(1, count.value)
        self.assertEqual(2, self.nvml.nvmlComputeInstanceGetInfo(
            computes[0]).profileId)
        self.assertEqual(7, self.nvml.nvmlDeviceGetMaxMigDeviceCount(
            self.gpu))
        mig = self.nvml.nvmlDeviceGetMigDeviceHandleByIndex(self.gpu, 1)
        self.assertTrue(self.nvml.nvmlDeviceGetUUID(mig).startswith('MIG-'))
        self.assertEqual(2, self.nvml.nvmlDeviceGetGpuInstanceId(mig))
        self.assertEqual(0, self.nvml.nvmlDeviceGetComputeInstanceId(mig))
        self.assertEqual('NVIDIA H100 80GB HBM3 MIG 3g.40gb',
                         self.nvml.nvmlDeviceGetName(mig))
        self.assertEqual(1, self.nvml.nvmlDeviceIsMigDeviceHandle(mig).value)
        self.assertEqual(0, self.nvml.nvmlDeviceIsMigDeviceHandle(
            self.gpu).value)
        self.assertRaises(pynvml.NVMLError_NotFound,
                          self.nvml.nvmlDeviceGetMigDeviceHandleByIndex,
                          self.gpu, 2)

    def test_remaining_capacity(self):
        # GPU 1: both halves taken by 3g.40gb; one compute slice is left
        # but no memory slot.
        remaining = self.nvml.nvmlDeviceGetGpuInstanceRemainingCapacity
        for profile_id in (ID_3G_40GB, ID_1G_10GB, 0):
            self.assertEqual(0, remaining(self.gpu, profile_id))

    def test_mig_not_supported_on_l40s(self):
        nvml = started('pcie-l40s')
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        self.assertRaises(pynvml.NVMLError_NotSupported,
                          nvml.nvmlDeviceGetMigMode, handle)
        self.assertRaises(pynvml.NVMLError_NotSupported,
                          nvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, 0)

    def test_mig_disabled_on_a100(self):
        nvml = started('pcie-a100')
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        self.assertEqual([0, 0], nvml.nvmlDeviceGetMigMode(handle))
        self.assertEqual(0, nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        self.assertRaises(pynvml.NVMLError_NotSupported,
                          nvml.nvmlDeviceGetGpuInstanceRemainingCapacity,
                          handle, ID_1G_10GB)


class TestAwkward(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.nvml = started('awkward')

    def test_lost_gpu(self):
        self.assertEqual(3, self.nvml.nvmlDeviceGetCount())
        handle = self.nvml.nvmlDeviceGetHandleByIndex(1)
        for call in (self.nvml.nvmlDeviceGetName,
                     self.nvml.nvmlDeviceGetUUID,
                     self.nvml.nvmlDeviceGetPciInfo,
                     self.nvml.nvmlDeviceGetMemoryInfo,
                     self.nvml.nvmlDeviceGetMigMode,
                     self.nvml.nvmlDeviceGetSupportedVgpus):
            error = self.assertRaises(pynvml.NVMLError, call, handle)
            self.assertIsInstance(error, pynvml.NVMLError_GpuIsLost)
            self.assertEqual(pynvml.NVML_ERROR_GPU_IS_LOST, error.value)
        # The handle can still be looked up; using it fails.
        by_bus_id = self.nvml.nvmlDeviceGetHandleByPciBusId('0000:02:00.0')
        self.assertRaises(pynvml.NVMLError_GpuIsLost,
                          self.nvml.nvmlDeviceGetUUID, by_bus_id)
        self.assertEqual('NVIDIA H100 PCIe', self.nvml.nvmlDeviceGetName(
            self.nvml.nvmlDeviceGetHandleByIndex(2)))

    def test_half_created_gpu_instance(self):
        gpu = self.nvml.nvmlDeviceGetHandleByIndex(0)
        instances = (pynvml.c_nvmlGpuInstance_t * 7)()
        count = c_uint()
        self.nvml.nvmlDeviceGetGpuInstances(gpu, ID_1G_10GB, instances,
                                            byref(count))
        self.assertEqual(1, count.value)
        half = instances[0]
        self.assertEqual(11, self.nvml.nvmlGpuInstanceGetInfo(half).id)
        computes = (pynvml.c_nvmlComputeInstance_t * 1)()
        self.nvml.nvmlGpuInstanceGetComputeInstances(
            half, pynvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE, computes,
            byref(count))
        self.assertEqual(0, count.value)
        # Only the complete 3g.40gb instance is a MIG device.
        found = []
        for index in range(self.nvml.nvmlDeviceGetMaxMigDeviceCount(gpu)):
            try:
                mig = self.nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu,
                                                                    index)
            except pynvml.NVMLError_NotFound:
                continue
            found.append(self.nvml.nvmlDeviceGetGpuInstanceId(mig))
        self.assertEqual([1], found)
        # 3g at 0 and 1g at 4 leave memory slots 5 and 6 for 1g.10gb.
        remaining = self.nvml.nvmlDeviceGetGpuInstanceRemainingCapacity
        self.assertEqual(2, remaining(gpu, ID_1G_10GB))
        self.assertEqual(0, remaining(gpu, ID_2G_20GB))


class TestNvLink(testtools.TestCase):

    def test_hgx_one_clique_behind_switches(self):
        nvml = started('hgx-h200')
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(8)]
        self.assertEqual(
            18, sum(nvml.nvmlDeviceGetNvLinkState(handles[3], link)
                    for link in range(18)))
        self.assertEqual(pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH,
                         nvml.nvmlDeviceGetNvLinkRemoteDeviceType(
                             handles[3], 17))
        self.assertRaises(pynvml.NVMLError_InvalidArgument,
                          nvml.nvmlDeviceGetNvLinkState, handles[3], 18)
        self.assertEqual(pynvml.NVML_P2P_STATUS_OK,
                         nvml.nvmlDeviceGetP2PStatus(
                             handles[0], handles[7],
                             pynvml.NVML_P2P_CAPS_INDEX_NVLINK))

    def test_l40s_has_no_nvlink(self):
        nvml = started('pcie-l40s')
        first = nvml.nvmlDeviceGetHandleByIndex(0)
        second = nvml.nvmlDeviceGetHandleByIndex(1)
        for link in (0, 1):
            self.assertRaises(pynvml.NVMLError_NotSupported,
                              nvml.nvmlDeviceGetNvLinkState, first, link)
        self.assertRaises(pynvml.NVMLError_NotSupported,
                          nvml.nvmlDeviceGetNvLinkRemoteDeviceType, first, 0)
        self.assertEqual(pynvml.NVML_P2P_STATUS_NOT_SUPPORTED,
                         nvml.nvmlDeviceGetP2PStatus(
                             first, second,
                             pynvml.NVML_P2P_CAPS_INDEX_NVLINK))


class TestVgpu(testtools.TestCase):

    def test_l40s_time_sliced_types(self):
        nvml = started('pcie-l40s')
        handle = nvml.nvmlDeviceGetHandleByIndex(1)
        self.assertEqual(pynvml.NVML_GPU_VIRTUALIZATION_MODE_HOST_VGPU,
                         nvml.nvmlDeviceGetVirtualizationMode(handle))
        self.assertEqual(pynvml.NVML_HOST_VGPU_MODE_SRIOV,
                         nvml.nvmlDeviceGetHostVgpuMode(handle))
        names = [nvml.nvmlVgpuTypeGetName(type_id)
                 for type_id in nvml.nvmlDeviceGetSupportedVgpus(handle)]
        self.assertIn('NVIDIA L40S-1Q', names)
        self.assertIn('NVIDIA L40S-48Q', names)
        self.assertIn('NVIDIA L40S-2B', names)
        self.assertIn('NVIDIA L40S-24C', names)
        self.assertIn('NVIDIA L40S-4A', names)
        creatable = nvml.nvmlDeviceGetCreatableVgpus(handle)
        self.assertEqual(['NVIDIA L40S-8Q'],
                         [nvml.nvmlVgpuTypeGetName(t) for t in creatable])
        type_id = creatable[0]
        self.assertEqual('Quadro', nvml.nvmlVgpuTypeGetClass(type_id))
        self.assertEqual(8 * 2 ** 30,
                         nvml.nvmlVgpuTypeGetFramebufferSize(type_id))
        self.assertEqual(6, nvml.nvmlVgpuTypeGetMaxInstances(handle,
                                                             type_id))
        self.assertEqual(fake_nvml.INVALID_GPU_INSTANCE_PROFILE_ID,
                         nvml.nvmlVgpuTypeGetGpuInstanceProfileId(type_id))

    def test_h200_active_mig_backed_vgpus(self):
        nvml = started('hgx-h200')
        handle = nvml.nvmlDeviceGetHandleByIndex(5)
        active = nvml.nvmlDeviceGetActiveVgpus(handle)
        self.assertEqual(3, len(active))
        first = active[0]
        type_id = nvml.nvmlVgpuInstanceGetType(first)
        self.assertEqual(1414, type_id)
        self.assertEqual('NVIDIA H200X-1-18C',
                         nvml.nvmlVgpuTypeGetName(type_id))
        self.assertEqual(ID_1G_10GB,
                         nvml.nvmlVgpuTypeGetGpuInstanceProfileId(type_id))
        self.assertEqual('00000000:C3:00.4',
                         nvml.nvmlVgpuInstanceGetGpuPciId(first))
        self.assertEqual(7, nvml.nvmlVgpuInstanceGetGpuInstanceId(first))
        self.assertEqual(36, len(nvml.nvmlVgpuInstanceGetUUID(first)))
        self.assertRaises(pynvml.NVMLError_InvalidArgument,
                          nvml.nvmlVgpuInstanceGetType, 999)

    def test_a100_mdev_vgpus(self):
        nvml = started('pcie-a100')
        active = nvml.nvmlDeviceGetActiveVgpus(
            nvml.nvmlDeviceGetHandleByIndex(0))
        self.assertEqual(['00000000:01:00.4', '00000000:01:00.5'],
                         [nvml.nvmlVgpuInstanceGetGpuPciId(v)
                          for v in active])
        data = reference_hosts.load('pcie-a100').data
        mdevs = [vf['mdevs'][0]['uuid']
                 for vf in data['pci_devices'][0]['virtfns'][:2]]
        self.assertEqual(mdevs, [nvml.nvmlVgpuInstanceGetMdevUUID(v)
                                 for v in active])
