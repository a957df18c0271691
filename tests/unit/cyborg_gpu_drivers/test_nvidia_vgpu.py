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
"""The NVIDIA vGPU driver over the reference hosts.

Vendor VFIO on ``pcie-l40s`` (sysfs tree + fake NVML), mdev on
``pcie-a100`` (libvirt's real test driver over the host's node devices).
"""

import copy

import fixtures
from oslo_config import cfg
import testtools

from cyborg_gpu_drivers.adapters import libvirt_nodedev
from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import nvidia_common
from cyborg_gpu_drivers import nvidia_vfio
from cyborg_gpu_drivers import nvidia_vgpu
from cyborg_gpu_drivers import privsep
from cyborg_gpu_drivers import vgpu_types
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml
import placement_traits as names
from tests.unit.cyborg_gpu_drivers import base
from tests.unit.cyborg_gpu_drivers import hosts

CONF = cfg.CONF

L40S = ('0000:17:00.0', '0000:31:00.0', '0000:b1:00.0', '0000:ca:00.0')
A100 = ('0000:01:00.0', '0000:41:00.0')


def host_data(name):
    return copy.deepcopy(reference_hosts.load(name).data)


class SliceLogicTest(testtools.TestCase):
    """The plain functions, over small data."""

    def test_type_with_spaces_and_no_nvml_facts(self):
        facts = nvidia_common.TypeFacts(
            vgpu_types.parse_type_name(
                'NVIDIA RTX Pro 6000 Blackwell DC-24Q'), None, None)
        handles = [inventory.AttachHandle(inventory.PCI, '0000:02:00.5'),
                   inventory.AttachHandle(inventory.PCI, '0000:02:00.4')]
        slice_ = nvidia_common.vgpu_slice(facts, handles, mixed_size=True)
        self.assertEqual(('DC-24Q', 'CUSTOM_VGPU_DC_24Q', 2),
                         (slice_.name, slice_.resource_class, slice_.total))
        self.assertEqual(['CUSTOM_GPU_FB_24GB', 'CUSTOM_GPU_VGPU_MIXED_SIZE',
                          'CUSTOM_GPU_VGPU_SERIES_Q'], slice_.traits)
        self.assertEqual(['0000:02:00.4', '0000:02:00.5'],
                         [h.address for h in slice_.handles])

    def test_unknown_name_gets_no_series_or_size_trait(self):
        facts = nvidia_common.TypeFacts(
            vgpu_types.parse_type_name('nvidia-999'), None, None)
        slice_ = nvidia_common.vgpu_slice(facts, [], mixed_size=False)
        self.assertEqual(('CUSTOM_VGPU_NVIDIA_999', []),
                         (slice_.resource_class, slice_.traits))

    def test_pf_parent_marks_stay_the_same_as_mdevs_are_created(self):
        def parent(available):
            return libvirt_nodedev.MdevParent(
                name='pci_0000_3b_00_0', address='0000:3b:00.0',
                phys_function=None, numa_node=0,
                types=(libvirt_nodedev.MdevType(
                    'nvidia-222', 'GRID T4-1B', 'vfio-pci', available),))

        created = [libvirt_nodedev.Mdev('mdev_a', 'a', 'nvidia-222',
                                        'pci_0000_3b_00_0')]
        before = nvidia_vgpu.mdev_handles([parent(16)], lambda p: [],
                                          'T4-1B', 16)
        after = nvidia_vgpu.mdev_handles([parent(15)], lambda p: created,
                                         'T4-1B', 16)
        self.assertEqual(['nvidia-222_%d' % n for n in range(16)],
                         [h.mark for h in before])
        self.assertEqual([h.mark for h in before], [h.mark for h in after])
        self.assertEqual([True] + [False] * 15, [h.in_use for h in after])

    def test_mdev_handles_never_drop_units_in_use_below_the_limit(self):
        parents = [libvirt_nodedev.MdevParent(
            name='pci_0000_01_00_%d' % fn, address='0000:01:00.%d' % fn,
            phys_function='0000:01:00.0', numa_node=None,
            types=(libvirt_nodedev.MdevType(
                'nvidia-476', 'NVIDIA A100D-20C', 'vfio-pci', 0),))
            for fn in (4, 5, 6)]
        mdevs = {p.name: [libvirt_nodedev.Mdev('m', None, 'nvidia-476',
                                               p.name)] for p in parents}
        handles = nvidia_vgpu.mdev_handles(
            parents, lambda p: mdevs[p.name], 'A100D-20C', 2)
        self.assertEqual(3, sum(h.in_use for h in handles))

    def test_mdev_type_number(self):
        self.assertEqual(476, nvidia_vgpu.mdev_type_number('nvidia-476'))
        self.assertIsNone(nvidia_vgpu.mdev_type_number('i915-GVTg_V5_4'))
        self.assertIsNone(nvidia_vgpu.mdev_type_number(None))


class DriverTestCase(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.writes = []

    def env(self, name, data=None):
        """A private copy of a host, for tests that write to it; the
        privileged writes go to its tree.
        """
        host = reference_hosts.ReferenceHost(data or host_data(name), name)
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        self.conf.config(group='gpu_partitions', sysfs_root=env.sysfs_root)
        return env

    def write(self, address, type_id):
        """The privileged write without privsep, on the fake tree."""
        self.writes.append((address, type_id))
        privsep.write_vgpu_type(address, type_id)

    def driver(self, env, nvml=None, libvirt_uri=None):
        if isinstance(nvml, dict):
            nvml = fake_nvml.FakeNvml(nvml)
        return nvidia_vgpu.NvidiaVgpuDriver(
            hostname=env.hostname,
            nvml=nvml or fake_nvml.FakeNvml(env.host.data['nvml']),
            sysfs_root=env.sysfs_root,
            libvirt_uri=libvirt_uri or env.libvirt_uri,
            write_vgpu_type=self.write)

    def slices(self, host_inventory):
        """``{(GPU address, type): (total, in use, [handle addresses])}``.
        """
        return {(gpu.address, s.name): (inventory.offered_total(gpu, s),
                                        s.in_use,
                                        [h.address for h in s.handles])
                for gpu in host_inventory.gpus for s in gpu.slices}

    def log_lines(self, text):
        return [line for line in self.log.output.splitlines()
                if text in line]


class VendorVfioTest(DriverTestCase):

    def test_reports_the_types_the_gpus_host(self):
        env = hosts.shared_env('pcie-l40s')
        found = self.slices(self.driver(env).collect())
        self.assertEqual({
            (L40S[0], 'L40S-12Q'): (4, 2, ['0000:17:00.4', '0000:17:00.5',
                                           '0000:17:00.6', '0000:17:00.7']),
            (L40S[1], 'L40S-8Q'): (2, 0, ['0000:31:00.4', '0000:31:00.5']),
            (L40S[3], 'L40S-24C'): (1, 1, ['0000:ca:00.4']),
        }, found)
        # The untouched GPU hosts nothing and nothing is declared.
        self.assertEqual(1, len(self.log_lines(
            'GPU 0000:b1:00.0 (NVIDIA L40S) hosts no vGPU type')))
        self.assertEqual([], self.writes)

    def test_traits_and_handles(self):
        env = hosts.shared_env('pcie-l40s')
        gpu = self.driver(env).collect().gpus[-1]
        self.assertEqual((L40S[3], 'NVIDIA L40S', 1),
                         (gpu.address, gpu.model, gpu.numa_node))
        self.assertIn('CUSTOM_GPU_NUMA_NODE_1', gpu.traits)
        self.assertIn('CUSTOM_GPU_MODEL_L40S', gpu.traits)
        self.assertIn('CUSTOM_GPU_VENDOR_NVIDIA', gpu.traits)
        self.assertEqual('vendor-vfio', gpu.board_info['vgpu_framework'])
        slice_ = gpu.slices[0]
        self.assertEqual('CUSTOM_VGPU_L40S_24C', slice_.resource_class)
        self.assertEqual(['CUSTOM_GPU_FB_24GB', 'CUSTOM_GPU_VGPU_SERIES_C'],
                         slice_.traits)
        self.assertEqual([inventory.AttachHandle(
            inventory.PCI, '0000:ca:00.4', in_use=True)], slice_.handles)

    def test_nvlink_clique_trait_only_on_a_whole_framebuffer_type(self):
        # GPUs 0-2 NVLink peers; GPU 2 (b1:00.0) gets L40S-48C, one per
        # GPU: the only vGPU NVIDIA gives NVLink P2P. GPU 0's L40S-12Q
        # (4 per GPU) and GPU 1's L40S-8Q (6 per GPU) get none; all keep
        # their NUMA node.
        data = host_data('pcie-l40s')
        for device in data['nvml']['devices'][:3]:
            device['nvlink'] = {'link_count': 4, 'active_link_count': 4,
                                'remote_device_type': 0}
        data['nvml']['nvlink_cliques'] = [[0, 1, 2]]
        [pf] = [p for p in data['pci_devices'] if p['address'] == L40S[2]]
        pf['virtfns'][0]['files'] = {'nvidia/current_vgpu_type': '1536\n'}
        env = self.env('pcie-l40s', data)
        gpus = {gpu.address: gpu
                for gpu in self.driver(env).collect().gpus}
        self.assertEqual(
            {L40S[0]: '0', L40S[1]: '0', L40S[2]: '0', L40S[3]: None},
            {address: gpu.link_domain for address, gpu in gpus.items()})
        links = {(address, slice_.name):
                 names.link_domain_of(slice_.traits)
                 for address, gpu in gpus.items() for slice_ in gpu.slices}
        self.assertEqual({(L40S[0], 'L40S-12Q'): None,
                          (L40S[1], 'L40S-8Q'): None,
                          (L40S[2], 'L40S-48C'): 'CUSTOM_GPU_NVLINK_CLIQUE_0',
                          (L40S[3], 'L40S-24C'): None}, links)
        for gpu in gpus.values():
            self.assertIsNone(names.link_domain_of(gpu.traits))
            self.assertIsNotNone(names.numa_node_of(gpu.traits))

    def test_partial_nvlink_mesh_gives_true_cliques(self):
        # Peers 0-1 and 1-2 but not 0-2 (a bridge link down): 0 and 1
        # form clique 0, GPU 2 is in none, though all three are linked.
        data = host_data('pcie-l40s')
        for device in data['nvml']['devices'][:3]:
            device['nvlink'] = {'link_count': 4, 'active_link_count': 4,
                                'remote_device_type': 0}
        data['nvml']['nvlink_cliques'] = [[0, 1], [1, 2]]
        for pf in data['pci_devices'][:3]:
            pf['virtfns'][-1]['files'] = {
                'nvidia/current_vgpu_type': '1536\n'}
        env = self.env('pcie-l40s', data)
        gpus = self.driver(env).collect().gpus
        self.assertEqual(
            {L40S[0]: '0', L40S[1]: '0', L40S[2]: None, L40S[3]: None},
            {gpu.address: gpu.link_domain for gpu in gpus})
        self.assertEqual(
            {L40S[0]: 'CUSTOM_GPU_NVLINK_CLIQUE_0',
             L40S[1]: 'CUSTOM_GPU_NVLINK_CLIQUE_0', L40S[2]: None},
            {gpu.address: names.link_domain_of(slice_.traits)
             for gpu in gpus for slice_ in gpu.slices
             if slice_.name == 'L40S-48C'})

    def test_framebuffer_trait_is_the_nominal_size_of_the_name(self):
        # NVML's figure would round down; the type table's size is used.
        data = host_data('pcie-l40s')
        for vgpu_type in data['nvml']['models']['L40S']['vgpu_types']:
            vgpu_type['framebuffer_mb'] -= 512
        gpus = self.driver(hosts.shared_env('pcie-l40s'),
                           nvml=data['nvml']).collect().gpus
        self.assertEqual(
            {'L40S-12Q': 'CUSTOM_GPU_FB_12GB', 'L40S-8Q': 'CUSTOM_GPU_FB_8GB',
             'L40S-24C': 'CUSTOM_GPU_FB_24GB'},
            {slice_.name: [t for t in slice_.traits
                           if t.startswith('CUSTOM_GPU_FB_')][0]
             for gpu in gpus for slice_ in gpu.slices})

    def test_declared_type_fills_free_vfs_of_an_idle_gpu_only(self):
        self.conf.config(group='nvidia_vgpu',
                         vgpu_type=['NVIDIA L40S=L40S-4Q'])
        env = self.env('pcie-l40s')
        driver = self.driver(env)
        driver.apply()
        found = self.slices(driver.collect())
        # NVML: at most 12 L40S-4Q per GPU.
        total, in_use, addresses = found[(L40S[2], 'L40S-4Q')]
        self.assertEqual((12, 0), (total, in_use))
        self.assertEqual(addresses, [a for a, t in self.writes])
        self.assertEqual({1503}, {t for a, t in self.writes})
        sysfs = sysfs_adapter.Sysfs(env.sysfs_root)
        self.assertEqual(1503, nvidia_vfio.read_current_type(
            sysfs, addresses[0]))
        # GPUs hosting another type keep it; each conflict logged once.
        for address, hosted in ((L40S[0], 'L40S-12Q'), (L40S[1], 'L40S-8Q'),
                                (L40S[3], 'L40S-24C')):
            self.assertIn((address, hosted), found)
            self.assertEqual(1, len(self.log_lines(
                'GPU %s hosts vGPU type %s' % (address, hosted))))
        self.assertEqual(1506, nvidia_vfio.read_current_type(
            sysfs, '0000:17:00.4'))
        # Idempotent: the next pass writes nothing and logs nothing new.
        lines = len(self.log.output.splitlines())
        driver.apply()
        self.assertEqual(found, self.slices(driver.collect()))
        self.assertEqual(12, len(self.writes))
        self.assertEqual(lines, len(self.log.output.splitlines()))

    def test_two_types_without_mixed_size_mode_use_the_first(self):
        self.conf.config(group='nvidia_vgpu',
                         vgpu_type=['0000:b1:00.0=L40S-24Q,L40S-8Q'])
        env = self.env('pcie-l40s')
        driver = self.driver(env)
        driver.apply()
        found = self.slices(driver.collect())
        self.assertEqual(2, found[(L40S[2], 'L40S-24Q')][0])
        self.assertNotIn((L40S[2], 'L40S-8Q'), found)
        self.assertEqual(1, len(self.log_lines('not in mixed-size mode')))

    def test_a_vf_in_use_is_never_written(self):
        data = host_data('pcie-l40s')
        # GPU 3's free VFs offer L40S-24C; pretend a guest runs on a free
        # VF (an open VF whose type NVML still shows).
        data['nvml']['devices'][3]['active_vgpus'].append(
            {'id': 9, 'type_id': 1535, 'vf_pci_bus_id': '00000000:CA:00.5',
             'uuid': '00000000-0000-0000-0000-000000000009'})
        self.conf.config(group='nvidia_vgpu',
                         vgpu_type=['0000:ca:00.0=L40S-24C'])
        env = self.env('pcie-l40s', data)
        driver = self.driver(env)
        driver.apply()
        found = self.slices(driver.collect())
        self.assertNotIn('0000:ca:00.5', [a for a, t in self.writes])
        self.assertEqual([('0000:ca:00.6', 1535)], self.writes)
        self.assertEqual((2, 1, ['0000:ca:00.4', '0000:ca:00.6']),
                         found[(L40S[3], 'L40S-24C')])

    def test_unknown_type_id_on_a_vf_is_left_out(self):
        data = host_data('pcie-l40s')
        vf = data['pci_devices'][1]['virtfns'][1]
        vf['files']['nvidia/current_vgpu_type'] = '4242\n'
        env = self.env('pcie-l40s', data)
        found = self.slices(self.driver(env).collect())
        self.assertEqual((1, 0, ['0000:31:00.4']), found[(L40S[1], 'L40S-8Q')])
        self.assertEqual(1, len(self.log_lines(
            'vGPU type id 4242 is unknown')))
        self.assertIn((L40S[0], 'L40S-12Q'), found)

    def test_type_name_with_spaces(self):
        data = host_data('pcie-l40s')
        for vgpu_type in data['nvml']['models']['L40S']['vgpu_types']:
            if vgpu_type['id'] == 1506:
                vgpu_type['name'] = 'NVIDIA RTX  Pro 6000 Blackwell DC-12Q'
        env = hosts.shared_env('pcie-l40s')
        gpu = self.driver(env, nvml=data['nvml']).collect().gpus[0]
        self.assertEqual(('DC-12Q', 'CUSTOM_VGPU_DC_12Q'),
                         (gpu.slices[0].name, gpu.slices[0].resource_class))

    def test_names_and_handles_stable_across_restarts(self):
        env = hosts.shared_env('pcie-l40s')
        first = self.driver(env).discover()
        second = self.driver(env).discover()
        self.assertEqual(
            [[(d.name, d.num_accelerators,
               [h.attach_info for h in d.attach_handle_list])
              for d in device.deployable_list] for device in first],
            [[(d.name, d.num_accelerators,
               [h.attach_info for h in d.attach_handle_list])
              for d in device.deployable_list] for device in second])
        self.assertEqual('l40s-01_0000_17_00_0_L40S-12Q',
                         first[0].deployable_list[0].name)


class MdevTest(DriverTestCase):

    def test_a100_reports_the_hosted_type_within_nvml_limit(self):
        env = hosts.shared_env('pcie-a100')
        host_inventory = self.driver(env).collect()
        found = self.slices(host_inventory)
        # A100D-20C: 4 per GPU; 2 run, 2 more can be created although
        # every other VF says one instance is available.
        self.assertEqual({(A100[0], 'A100D-20C'): (
            4, 2, ['0000:01:00.4', '0000:01:00.5', '0000:01:00.6',
                   '0000:01:00.7'])}, found)
        slice_ = host_inventory.gpus[0].slices[0]
        self.assertEqual(
            [('nvidia-476', 'nvidia-476_0', True)] * 2 +
            [('nvidia-476', 'nvidia-476_0', False)] * 2,
            [(h.mdev_type, h.mark, h.in_use) for h in slice_.handles])
        self.assertEqual({inventory.MDEV},
                         {h.attach_type for h in slice_.handles})
        self.assertEqual('mdev', host_inventory.gpus[0].board_info[
            'vgpu_framework'])
        self.assertIn('CUSTOM_GPU_NUMA_NODE_0', host_inventory.gpus[0].traits)

    def test_declared_type_offers_available_instances(self):
        self.conf.config(group='nvidia_vgpu',
                         vgpu_type=['0000:41:00.0=NVIDIA A100D-10C'])
        env = hosts.shared_env('pcie-a100')
        found = self.slices(self.driver(env).collect())
        total, in_use, addresses = found[(A100[1], 'A100D-10C')]
        self.assertEqual((8, 0, 8), (total, in_use, len(set(addresses))))
        # mdevs are created on demand: nothing is written.
        self.assertEqual([], self.writes)

    def test_libvirt_unreachable_keeps_known_gpus_as_stubs(self):
        env = hosts.shared_env('pcie-a100')
        driver = self.driver(env)
        good = driver.discover()
        self.assertEqual(1, len(good))
        driver._nodedevs.uri = 'test:///nonexistent/node.xml'
        again = driver.discover()
        # Every mdev GPU is a stub: the one reported with its last report,
        # the other (never reported) bare.
        self.assertEqual([True, True], [device.stub for device in again])
        self.assertEqual(good[0].deployable_list[0].name,
                         again[0].deployable_list[0].name)
        # Still unreachable at the next scan: still the same stubs, and
        # still one log line.
        third = driver.discover()
        self.assertEqual(
            [(True, [good[0].deployable_list[0].name]), (True, [])],
            [(d.stub, [dep.name for dep in d.deployable_list])
             for d in third])
        self.assertEqual(1, len(self.log_lines('libvirt unavailable')))

    def test_libvirt_unreachable_at_start_stubs_the_mdev_gpus(self):
        # Cold start: the GPUs may hold guests from before the restart;
        # stubs keep what Cyborg holds for them.
        env = hosts.shared_env('pcie-a100')
        driver = self.driver(env, libvirt_uri='test:///nonexistent/node.xml')
        self.assertEqual([(True, [])] * 2,
                         [(d.stub, d.deployable_list)
                          for d in driver.discover()])
        self.assertEqual(1, len(self.log_lines('libvirt unavailable')))


class HostTest(DriverTestCase):

    def test_mig_gpus_are_left_to_the_mig_driver(self):
        nvml = fake_nvml.FakeNvml(reference_hosts.load('hgx-h100').data[
            'nvml'])
        driver = nvidia_vgpu.NvidiaVgpuDriver(
            hostname='hgx', nvml=nvml,
            sysfs_root=self.useFixture(fixtures.TempDir()).path)
        self.assertEqual([], driver.collect().gpus)

    def test_awkward_host(self):
        env = hosts.shared_env('awkward')
        found = self.slices(self.driver(env).collect())
        # MIG-on GPU 0 is the MIG driver's, lost GPU 1 holds nothing,
        # GPU 2 keeps its running vGPU despite a vanished VF.
        self.assertEqual({('0000:03:00.0', 'H100-20C'): (
            1, 1, ['0000:03:00.4'])}, found)
        # The lost GPU 1, never read since the start: a stub.
        self.assertEqual(['0000:02:00.0'], [
            gpu.address for gpu in self.driver(env).collect().gpus
            if gpu.stub])

    def test_gpu_lost_after_a_report_keeps_only_units_in_use(self):
        env = hosts.shared_env('pcie-l40s')
        driver = self.driver(env)
        driver.collect()
        data = host_data('pcie-l40s')
        data['nvml']['devices'][0]['lost'] = True
        driver._nvml = type(driver._nvml)(fake_nvml.FakeNvml(data['nvml']))
        devices = driver.discover()
        self.assertEqual(
            [2, 2, 1],
            [device.deployable_list[0].num_accelerators
             for device in devices])
        self.assertEqual(1, len(self.log_lines('stopped answering')))

    def test_nvml_unavailable(self):
        env = hosts.shared_env('pcie-l40s')
        broken = fake_nvml.FakeNvml(None)
        driver = self.driver(env, nvml=broken)
        # At start-up every GPU the nvidia driver holds is a stub: Cyborg
        # keeps what it holds for them and adds nothing.
        at_start = driver.discover()
        self.assertEqual([(True, [])] * 4,
                         [(d.stub, d.deployable_list) for d in at_start])
        working = self.driver(env)
        good = working.discover()
        working._nvml = type(working._nvml)(broken)
        stubs = working.discover()
        self.assertEqual([d.deployable_list[0].name for d in good],
                         [d.deployable_list[0].name for d in stubs
                          if d.deployable_list])
        self.assertTrue(all(d.stub for d in stubs))


class ConfigTest(DriverTestCase):

    def test_unsupported_declared_type_refused_at_start(self):
        self.conf.config(group='nvidia_vgpu', vgpu_type=['L40S=L40S-7Q'])
        env = hosts.shared_env('pcie-l40s')
        error = self.assertRaises(vgpu_types.DeclarationError,
                                  self.driver, env)
        self.assertIn('nvidia_vgpu.vgpu_type', str(error))
        self.assertIn("'L40S-7Q'", str(error))
        self.assertIn('allowed: L40S-1Q, L40S-2Q', str(error))

    def test_malformed_declaration_refused_at_start(self):
        self.conf.config(group='nvidia_vgpu', vgpu_type=['L40S-8Q'])
        env = hosts.shared_env('pcie-l40s')
        error = self.assertRaises(vgpu_types.DeclarationError,
                                  self.driver, env)
        self.assertIn('nvidia_vgpu.vgpu_type', str(error))
