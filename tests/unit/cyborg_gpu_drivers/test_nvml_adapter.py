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
"""The NVML adapter over the reference hosts' fake pynvml."""

import copy

import pynvml
import testtools

from cyborg_gpu_drivers.adapters import nvml
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml


def adapter(name):
    fake = reference_hosts.load(name).fake_nvml()
    return fake, nvml.Nvml(fake)


class NvmlAdapterTest(testtools.TestCase):

    def test_devices_in_sysfs_form(self):
        _fake, adapter_ = adapter('hgx-h100')
        with adapter_.session() as session:
            devices = session.devices()
        self.assertEqual(8, len(devices))
        first = devices[0]
        self.assertEqual('0000:1b:00.0', first.address)
        self.assertEqual('2330', first.device_id)
        self.assertEqual((1, 1), first.mig_mode)
        self.assertTrue(first.mig_enabled)
        self.assertEqual((9, 0), first.cuda_capability)
        self.assertEqual(81559, first.memory_mib)

    def test_any_pci_domain(self):
        section = copy.deepcopy(reference_hosts.load('awkward').data['nvml'])
        section['devices'][0]['pci_bus_id'] = '00000001:04:00.0'
        section['devices'][2]['pci_bus_id'] = '00010000:E1:00.0'
        with nvml.Nvml(fake_nvml.FakeNvml(section)).session() as session:
            devices = session.devices()
        self.assertEqual(['0001:04:00.0', None, '10000:e1:00.0'],
                         [device.address for device in devices])

    def test_init_failure_is_unavailable(self):
        adapter_ = nvml.Nvml(reference_hosts.load('mi300x-spx').fake_nvml())
        error = self.assertRaises(nvml.NvmlUnavailable,
                                  adapter_.session().__enter__)
        self.assertEqual(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, error.code)

    def test_a_garbage_gpu_count_is_an_error_not_a_loop_bound(self):
        # Before, 2**32 - 1 had every loop over the GPUs (the scan, the
        # idle clean-up) run for ever, one failing read per index.
        for garbage in (2 ** 32 - 1, nvml.MAX_DEVICES + 1, -1, None, '2',
                        True, 2.0):
            fake, adapter_ = adapter('awkward')
            fake.nvmlDeviceGetCount = lambda garbage=garbage: garbage
            with adapter_.session() as session:
                error = self.assertRaises(nvml.NvmlError,
                                          session.device_count)
                self.assertIn('not a count of GPUs', str(error))
                self.assertRaises(nvml.NvmlError, session.devices)

    def test_lost_gpu_and_not_supported(self):
        _fake, adapter_ = adapter('awkward')
        with adapter_.session() as session:
            mig, lost, plain = session.devices()
            self.assertTrue(lost.lost)
            self.assertIsNone(lost.address)
            self.assertRaises(nvml.GpuLost, session.active_vgpus, lost)
            self.assertFalse(plain.mig_enabled)
            self.assertFalse(session.has_nvlink(plain))
            self.assertFalse(session.nvlink_peers(mig, plain))
            [active] = session.active_vgpus(plain)
            self.assertEqual('0000:03:00.4', active.address)
            self.assertIsNone(active.gpu_instance_id)

    def test_gpu_instances_and_half_created_ones(self):
        _fake, adapter_ = adapter('awkward')
        with adapter_.session() as session:
            device = session.devices()[0]
            profiles = session.gpu_instance_profiles(device)
            self.assertEqual(
                ['7g.80gb', '4g.40gb', '3g.40gb', '2g.20gb', '1g.20gb',
                 '1g.10gb', '1g.10gb+me'], [p.name for p in profiles])
            self.assertEqual(((0, 4), (4, 4)), profiles[2].placements)
            self.assertEqual(
                [nvml.GpuInstance(1, 9, 0, 4, True),
                 nvml.GpuInstance(11, 19, 4, 1, False)],
                session.gpu_instances(device, profiles))

    def test_static_tables_are_cached_across_sessions(self):
        fake, adapter_ = adapter('hgx-h200')
        for _ in range(2):
            fake.reset_calls()
            with adapter_.session() as session:
                for device in session.devices():
                    session.gpu_instance_profiles(device)
                    session.supported_vgpu_types(device)
            calls = fake.calls
        self.assertEqual(0, calls['nvmlDeviceGetGpuInstanceProfileInfo'])
        self.assertEqual(0, calls['nvmlVgpuTypeGetName'])
        self.assertEqual(8, calls['nvmlDeviceGetSupportedVgpus'])

    def test_mig_backed_types(self):
        _fake, adapter_ = adapter('hgx-h200')
        with adapter_.session() as session:
            device = session.devices()[0]
            types = {t.id: t for t in session.supported_vgpu_types(device)}
        self.assertEqual(9, types[1419].gpu_instance_profile_id)
        self.assertTrue(types[1419].mig_backed)
        self.assertFalse(types[1428].mig_backed)

    def test_replace_gpu_instances(self):
        fake, adapter_ = adapter('hgx-h100')
        with adapter_.session() as session:
            session.replace_gpu_instances('0000:43:00.0',
                                          [(5, 0), (14, 4), (19, 6)])
            device = session.devices()[1]
            found = session.gpu_instances(
                device, session.gpu_instance_profiles(device))
        self.assertEqual([(5, 0, 4), (14, 4, 2), (19, 6, 1)],
                         [(gi.profile_id, gi.start, gi.size)
                          for gi in found])
        self.assertTrue(all(gi.complete for gi in found))
        self.assertEqual(2, fake.calls['nvmlGpuInstanceDestroy'])
