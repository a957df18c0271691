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
"""The NVIDIA MIG driver over the reference hosts (fake NVML + sysfs)."""

import collections
import copy
import os
import shutil

import fixtures
from oslo_config import cfg
import testtools

from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import mig_layouts
from cyborg_gpu_drivers import nvidia_common
from cyborg_gpu_drivers import nvidia_mig
from cyborg_gpu_drivers import privsep
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml
import placement_traits as names
from tests.unit.cyborg_gpu_drivers import base
from tests.unit.cyborg_gpu_drivers import hosts

CONF = cfg.CONF


def host_data(name):
    """A private copy of a reference host's data, free to edit."""
    return copy.deepcopy(reference_hosts.load(name).data)


class DriverTestCase(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def env(self, data):
        host = reference_hosts.ReferenceHost(data, data['name'])
        return host.materialize(self.useFixture(fixtures.TempDir()).path)

    def driver(self, env, nvml=None, **kwargs):
        """The driver over ``env``'s sysfs and a fresh fake NVML."""
        if nvml is None:
            nvml = fake_nvml.FakeNvml(env.host.data['nvml'])
        elif isinstance(nvml, dict):
            nvml = fake_nvml.FakeNvml(nvml)
        return nvidia_mig.NvidiaMigDriver(
            hostname=env.hostname, nvml=nvml, sysfs_root=env.sysfs_root,
            **kwargs)

    @staticmethod
    def by_address(host_inventory):
        return {gpu.address: gpu for gpu in host_inventory.gpus}

    @staticmethod
    def expected_slices(data, device):
        """Profile -> (GPU instance count, VFs holding one of its types).

        Computed from the host file, the way its description states it.
        """
        model = data['nvml']['models'][device['model']]
        profile_name = {p['id']: p['name'].removeprefix('MIG ')
                        for p in model['gpu_instance_profiles']}
        type_profile = {t['id']: t['gpu_instance_profile_id']
                        for t in model['vgpu_types']}
        address = names.pci_address(device['pci_bus_id'])
        [pci] = [p for p in data['pci_devices'] if p['address'] == address]
        counts = collections.Counter(
            profile_name[gi['profile_id']]
            for gi in device['gpu_instances'] if gi['compute_instances'])
        holders = collections.defaultdict(list)
        for vf in pci.get('virtfns', ()):
            current = int(vf.get('files', {}).get(
                'nvidia/current_vgpu_type', '0'))
            if type_profile.get(current) is not None:
                holders[profile_name[type_profile[current]]].append(
                    vf['address'])
        return {profile: (counts[profile], sorted(holders[profile]))
                for profile in counts}


class HgxH100Test(DriverTestCase):

    def setUp(self):
        super().setUp()
        self.data = host_data('hgx-h100')
        self.env_ = hosts.shared_env('hgx-h100')
        self.inventory = self.driver(self.env_).collect()

    def test_every_mig_gpu_with_one_slice_per_profile(self):
        gpus = self.by_address(self.inventory)
        self.assertEqual(8, len(gpus))
        for device in self.data['nvml']['devices']:
            gpu = gpus[names.pci_address(device['pci_bus_id'])]
            expected = self.expected_slices(self.data, device)
            self.assertEqual(
                {profile: count for profile, (count, _) in expected.items()},
                {s.name: s.total for s in gpu.slices}, gpu.address)
            for slice_ in gpu.slices:
                self.assertEqual(expected[slice_.name][1],
                                 [h.address for h in slice_.handles])
                self.assertEqual(
                    {inventory.PCI}, {h.attach_type for h in slice_.handles})
                self.assertFalse(any(h.in_use for h in slice_.handles))
                self.assertEqual(names.mig_resource_class(slice_.name),
                                 slice_.resource_class)
                self.assertIn(names.mig_profile_trait(slice_.name),
                              slice_.traits)
        self.assertEqual(15, sum(len(g.slices) for g in gpus.values()))

    def test_a_scan_reads_each_vendor_once(self):
        driver = self.driver(self.env_)
        reads = self.vendor_reads()
        self.assertEqual(self.inventory, driver.collect())
        addresses = sysfs_adapter.Sysfs(self.env_.sysfs_root).addresses()
        self.assertEqual(dict.fromkeys(addresses, 1), reads)

    def test_topology_traits(self):
        gpus = self.by_address(self.inventory)
        for address, node in (('0000:1b:00.0', 0), ('0000:61:00.0', 0),
                              ('0000:9d:00.0', 1), ('0000:df:00.0', 1)):
            gpu = gpus[address]
            self.assertEqual(node, gpu.numa_node)
            self.assertIn(names.numa_node_trait(node), gpu.traits)
            # NVLink is a fact of the GPU, but MIG-backed vGPUs get no
            # P2P over it: no provider carries the clique trait.
            self.assertNotIn(names.nvlink_clique_trait(0), gpu.traits)
            for slice_ in gpu.slices:
                self.assertIsNone(names.link_domain_of(slice_.traits))
            self.assertIn(names.vendor_trait('10de'), gpu.traits)
            self.assertIn(names.model_trait('NVIDIA H100 80GB HBM3'),
                          gpu.traits)
            self.assertEqual('0', gpu.link_domain)

    def test_discover_names_and_is_deterministic(self):
        driver = self.driver(self.env_)
        first = driver.discover()
        second = driver.discover()
        self.assertEqual([d.obj_to_primitive() for d in first],
                         [d.obj_to_primitive() for d in second])
        deployables = [dep.name for dev in first
                       for dep in dev.deployable_list]
        self.assertIn('hgx-h100-01_0000_df_00_0_1g_10gb_me', deployables)
        self.assertEqual(15, len(deployables))
        self.assertFalse(any(dev.stub for dev in first))

    def test_reordered_nvml_indices_keep_every_name(self):
        data = copy.deepcopy(self.data)
        devices = data['nvml']['devices']
        order = [5, 2, 7, 0, 3, 6, 1, 4]
        old_to_new = {old: new for new, old in enumerate(order)}
        data['nvml']['devices'] = [dict(devices[old], index=new)
                                   for new, old in enumerate(order)]
        data['nvml']['nvlink_cliques'] = [
            sorted(old_to_new[i] for i in clique)
            for clique in data['nvml']['nvlink_cliques']]
        before = self.driver(self.env_).discover()
        after = self.driver(self.env_, nvml=data['nvml']).discover()
        self.assertEqual([d.obj_to_primitive() for d in before],
                         [d.obj_to_primitive() for d in after])


class HgxH200Test(DriverTestCase):

    def setUp(self):
        super().setUp()
        self.data = host_data('hgx-h200')

    def test_units_in_use_are_the_active_vgpus(self):
        inventory_ = self.driver(hosts.shared_env('hgx-h200')).collect()
        in_use = sorted(h.address for gpu in inventory_.gpus
                        for s in gpu.slices for h in s.handles if h.in_use)
        active = sorted(
            names.pci_address(vgpu['vf_pci_bus_id'])
            for device in self.data['nvml']['devices']
            for vgpu in device['active_vgpus'])
        self.assertEqual(8, len(active))
        self.assertEqual(active, in_use)

    def _lose(self, data, bus_id):
        for device in data['nvml']['devices']:
            if device['pci_bus_id'] == bus_id:
                device['lost'] = True

    def test_gpu_lost_while_running_keeps_only_units_in_use(self):
        driver = self.driver(hosts.shared_env('hgx-h200'))
        before = {dep.name: dep.num_accelerators
                  for dev in driver.discover()
                  for dep in dev.deployable_list}
        # The GPU at c3 falls off the bus: same driver, next scan.
        self._lose(self.data, '00000000:C3:00.0')
        driver._nvml = nvml_adapter.Nvml(
            fake_nvml.FakeNvml(self.data['nvml']))
        after_devices = driver.discover()
        after = {dep.name: dep.num_accelerators
                 for dev in after_devices for dep in dev.deployable_list}
        self.assertEqual(sorted(before), sorted(after))
        lost = 'hgx-h200-01_0000_c3_00_0_1g_18gb'
        self.assertEqual(7, before[lost])
        self.assertEqual(3, after[lost])
        self.assertEqual({k: v for k, v in before.items() if k != lost},
                         {k: v for k, v in after.items() if k != lost})
        self.assertFalse(any(dev.stub for dev in after_devices))
        self.assertIn('0000:c3:00.0 stopped answering', self.log.output)

    def test_gpu_lost_at_start_up_is_a_stub(self):
        self._lose(self.data, '00000000:C3:00.0')
        devices = self.driver(hosts.shared_env('hgx-h200'),
                              nvml=self.data['nvml']).discover()
        stubs = [dev for dev in devices if dev.stub]
        self.assertEqual(1, len(stubs))
        self.assertIn('"bus": "c3"', stubs[0].controlpath_id.cpid_info)
        self.assertEqual(8, len(devices))
        self.assertIn('reported as a stub', self.log.output)

    def test_not_supported_degrades_to_fewer_traits(self):
        env = hosts.shared_env('hgx-h200')

        class NoP2P(fake_nvml.FakeNvml):
            def nvmlDeviceGetP2PStatus(self, *args):
                self.calls['nvmlDeviceGetP2PStatus'] += 1
                raise fake_nvml.pynvml.NVMLError_NotSupported()

            def nvmlDeviceGetCudaComputeCapability(self, handle):
                raise fake_nvml.pynvml.NVMLError_NotSupported()

        inventory_ = self.driver(
            env, nvml=NoP2P(self.data['nvml'])).collect()
        self.assertEqual(8, len(inventory_.gpus))
        for gpu in inventory_.gpus:
            self.assertIsNone(gpu.link_domain)
            self.assertFalse(any(t.startswith(names.TRAIT_NVLINK_CLIQUE)
                                 for t in gpu.traits))
            self.assertIn(names.numa_node_trait(gpu.numa_node), gpu.traits)


class AwkwardTest(DriverTestCase):

    def setUp(self):
        super().setUp()
        self.driver_ = self.driver(hosts.shared_env('awkward'))

    def test_only_the_mig_gpu_is_reported(self):
        inventory_ = self.driver_.collect()
        stubs = [gpu for gpu in inventory_.gpus if gpu.stub]
        [gpu] = [gpu for gpu in inventory_.gpus if not gpu.stub]
        self.assertEqual('0000:01:00.0', gpu.address)
        self.assertIsNone(gpu.numa_node)
        self.assertFalse(any(t.startswith(names.TRAIT_NUMA_NODE)
                             for t in gpu.traits))
        self.assertIsNone(gpu.link_domain)
        # The half-created 1g.10gb instance is skipped; without VFs
        # nothing reaches a guest.
        self.assertEqual(['3g.40gb@0+4'], gpu.board_info['gpu_instances'])
        self.assertEqual([], gpu.slices)
        self.assertIn('GPU instance 11 (profile id 19 at 4) has no compute '
                      'instance (half-created)', self.log.output)
        # The lost GPU 1 was never read: a stub, whichever driver owns it.
        self.assertEqual([(True, '0000:02:00.0')],
                         [(g.stub, g.address) for g in stubs])

    def test_discover_never_raises_and_logs_a_problem_once(self):
        for _ in range(3):
            devices = self.driver_.discover()
            self.assertEqual([False, True], [d.stub for d in devices])
        self.assertEqual(1, self.log.output.count('half-created'))


class NvmlUnavailableTest(DriverTestCase):

    def test_start_up_stubs_the_nvidia_gpus_and_adds_nothing(self):
        env = hosts.shared_env('hgx-h100')
        driver = self.driver(env, nvml=fake_nvml.FakeNvml(None))
        for _ in range(2):
            devices = driver.discover()
            self.assertEqual(8, len(devices))
            self.assertTrue(all(dev.stub for dev in devices))
            self.assertEqual([], [dep for dev in devices
                                  for dep in dev.deployable_list])
        self.assertEqual(1, self.log.output.count('NVML Shared Library '
                                                  'Not Found'))

    def test_start_up_stubs_a_gpu_whose_vendor_cannot_be_read(self):
        # NVML down and GPU 0's vendor garbled at the agent's start: its
        # nvidia driver link still says it may hold guests.
        env = self.env(host_data('hgx-h100'))
        devices = os.path.join(env.sysfs_root, 'bus', 'pci', 'devices')
        [first, *_] = nvidia_common.nvidia_gpu_addresses(
            sysfs_adapter.Sysfs(env.sysfs_root))
        with open(os.path.join(devices, first, 'vendor'), 'wb') as f:
            f.write(b'\xff\n')
        self.assertEqual(8, len(self.driver(
            env, nvml=fake_nvml.FakeNvml(None)).discover()))
        # No longer bound to nvidia: nothing says it is NVIDIA's.
        link = os.path.join(devices, first, 'driver')
        target = os.readlink(link)
        os.unlink(link)
        self.assertEqual(7, len(self.driver(
            env, nvml=fake_nvml.FakeNvml(None)).discover()))
        # Bound, and its class read as another kind (an NVSwitch): left
        # to no GPU driver.
        os.symlink(target, link)
        self.assertEqual(8, len(self.driver(
            env, nvml=fake_nvml.FakeNvml(None)).discover()))
        with open(os.path.join(devices, first, 'class'), 'w') as f:
            f.write('0x068000\n')
        self.assertEqual(7, len(self.driver(
            env, nvml=fake_nvml.FakeNvml(None)).discover()))

    def test_host_without_nvidia_gpu_reports_nothing(self):
        env = hosts.shared_env('mi300x-spx')
        driver = self.driver(env)
        self.assertEqual([], driver.discover())
        self.assertIn('nvmlInit failed', self.log.output)

    def test_transient_failure_resends_last_good_as_stubs(self):
        driver = self.driver(hosts.shared_env('hgx-h100'))
        good = driver.discover()
        self.assertFalse(any(dev.stub for dev in good))
        driver._nvml = nvml_adapter.Nvml(fake_nvml.FakeNvml(None))
        again = driver.discover()
        self.assertEqual(len(good), len(again))
        self.assertTrue(all(dev.stub for dev in again))
        self.assertEqual(15, sum(len(dev.deployable_list) for dev in again))


class LayoutTest(DriverTestCase):

    def set_layouts(self, *values):
        self.conf.config(layout=list(values), group='nvidia_mig')

    def test_invalid_syntax_refused_at_start_up(self):
        self.set_layouts('0000:1b:00.0=all')
        env = hosts.shared_env('hgx-h100')
        error = self.assertRaises(mig_layouts.LayoutError, self.driver, env)
        self.assertIn('[nvidia_mig] layout', str(error))
        self.assertIn('all-<profile>', str(error))

    def test_profile_unknown_to_the_gpu_refused_at_start_up(self):
        self.set_layouts('NVIDIA H100 80GB HBM3=all-1g.18gb')
        env = hosts.shared_env('hgx-h100')
        error = self.assertRaises(mig_layouts.LayoutError, self.driver, env)
        self.assertIn('[nvidia_mig] layout', str(error))
        self.assertIn('allowed: 1g.10gb, 1g.10gb+me, 1g.20gb, 2g.20gb, '
                      '3g.40gb, 4g.40gb, 7g.80gb', str(error))

    def test_busy_gpu_is_left_alone(self):
        self.set_layouts('0000:43:00.0=all-1g.10gb')
        env = hosts.shared_env('hgx-h100')
        applied = []
        driver = self.driver(
            env, apply_layout=lambda *args: applied.append(args))
        driver.apply()
        gpu = self.by_address(driver.collect())['0000:43:00.0']
        self.assertEqual([], applied)
        self.assertEqual([('3g.40gb', 2)],
                         [(s.name, s.total) for s in gpu.slices])
        self.assertIn('not applying [nvidia_mig] layout all-1g.10gb because '
                      'VFs 0000:43:00.4, 0000:43:00.5 hold a vGPU type',
                      self.log.output)

    def test_layout_already_there_is_not_reapplied(self):
        self.set_layouts('0000:43:00.0=all-3g.40gb')
        applied = []
        self.driver(hosts.shared_env('hgx-h100'),
                    apply_layout=lambda *args: applied.append(args)).apply()
        self.assertEqual([], applied)

    def test_idle_gpu_gets_the_layout_and_its_vfs_the_types(self):
        # Only the GPU at df, made idle: a small tree to materialize.
        data = host_data('hgx-h100')
        [pci] = [p for p in data['pci_devices']
                 if p['address'] == '0000:df:00.0']
        [device] = [d for d in data['nvml']['devices']
                    if d['pci_bus_id'] == '00000000:DF:00.0']
        data['pci_devices'] = [pci]
        data['nvml']['devices'] = [dict(device, index=0)]
        data['nvml']['nvlink_cliques'] = []
        for vf in pci['virtfns']:
            vf.pop('files', None)
        pci['vf_defaults']['files']['nvidia/creatable_vgpu_types'] = (
            'ID    : vGPU Name\n1134 : NVIDIA H100XM-3-40C\n'
            '1130 : NVIDIA H100XM-1-10C\n')
        env = self.env(data)
        self.set_layouts('0000:df:00.0=3g.40gb:1,1g.10gb:4')

        def apply_layout(address, planned):
            # What the privsep daemon runs, on the host's fake NVML.
            with nvml_adapter.Nvml(env.nvml).session() as session:
                privsep.apply_mig_layout(session, address, planned)

        self.conf.config(group='gpu_partitions', sysfs_root=env.sysfs_root)
        failures = []

        def write_vgpu_type(address, type_id):
            # The first VF-type write fails once, after the layout.
            if not failures:
                failures.append(address)
                raise OSError(16, 'Device or resource busy')
            privsep.write_vgpu_type(address, type_id)

        driver = self.driver(env, nvml=env.nvml, apply_layout=apply_layout,
                             write_vgpu_type=write_vgpu_type)
        # Read only (the inventory check): nothing is applied.
        driver.read_only = True
        driver.discover()
        self.assertIn('3g.40gb@4+4', self.by_address(
            driver.collect())['0000:df:00.0'].board_info['gpu_instances'])
        self.assertIn('1g.10gb+me@0+1', self.by_address(
            driver.collect())['0000:df:00.0'].board_info['gpu_instances'])
        driver.read_only = False
        driver.discover()
        gpu = self.by_address(driver.collect())['0000:df:00.0']
        self.assertEqual(
            ['1g.10gb@0+1', '1g.10gb@1+1', '1g.10gb@2+1', '1g.10gb@3+1',
             '3g.40gb@4+4'], gpu.board_info['gpu_instances'])
        # The failed write left a GPU instance without a VF ...
        self.assertEqual(['0000:df:00.4'], failures)
        self.assertEqual(4, sum(s.total for s in gpu.slices))
        # ... which the next pass gives one, without a new layout.
        driver._apply_layout = self.fail
        driver.discover()
        gpu = self.by_address(driver.collect())['0000:df:00.0']
        self.assertEqual({'3g.40gb': 1, '1g.10gb': 4},
                         {s.name: s.total for s in gpu.slices})
        # Applied: the next pass writes nothing.
        driver._write_vgpu_type = self.fail
        driver.discover()
        self.assertEqual(5, sum(
            s.total for s in self.by_address(
                driver.collect())['0000:df:00.0'].slices))


class PlainLogicTest(testtools.TestCase):

    def test_cliques_are_numbered_by_lowest_address(self):
        Dev = collections.namedtuple('Dev', 'address')
        devices = [Dev('0000:c3:00.0'), Dev('0000:1b:00.0'),
                   Dev('0000:9d:00.0'), Dev('0000:43:00.0'),
                   Dev('0000:05:00.0')]
        pairs = {('0000:1b:00.0', '0000:9d:00.0'),
                 ('0000:43:00.0', '0000:c3:00.0')}
        asked = []

        def peers(a, b):
            asked.append((a.address, b.address))
            return (a.address, b.address) in pairs

        self.assertEqual({'0000:1b:00.0': 0, '0000:9d:00.0': 0,
                          '0000:43:00.0': 1, '0000:c3:00.0': 1},
                         nvidia_common.nvlink_cliques(devices, peers))
        self.assertEqual(len(set(asked)), len(asked))

    def test_vgpu_series(self):
        self.assertEqual('C', nvidia_mig.vgpu_series('NVIDIA H100XM-3-40C'))
        self.assertEqual('C', nvidia_mig.vgpu_series('NVIDIA H100-1-10CME'))
        self.assertEqual('Q', nvidia_mig.vgpu_series(
            'NVIDIA RTX Pro 6000 Blackwell DC-1-24Q'))

    def test_mdev_slices_one_handle_per_parent(self):
        profile = nvml_adapter.GpuInstanceProfile(
            19, '1g.10gb', 1, 7, 9728, ((0, 1),))
        complete = [nvml_adapter.GpuInstance(i, 19, i, 1, True)
                    for i in range(3)]
        parents = [
            nvidia_mig.MdevParent('0000:01:00.4', {'nvidia-700': 0},
                                  ('nvidia-700',)),
            nvidia_mig.MdevParent('0000:01:00.5', {'nvidia-700': 1}, ()),
            nvidia_mig.MdevParent('0000:01:00.6', {'nvidia-700': 1}, ()),
            nvidia_mig.MdevParent('0000:01:00.7', {'nvidia-700': 1}, ()),
        ]
        [slice_] = nvidia_mig.mdev_slices(
            [profile], complete, {19: [700]}, parents)
        self.assertEqual(3, slice_.total)
        self.assertEqual(
            [('0000:01:00.4', True), ('0000:01:00.5', False),
             ('0000:01:00.6', False)],
            [(h.address, h.in_use) for h in slice_.handles])
        self.assertEqual({inventory.MDEV}, {h.attach_type
                                            for h in slice_.handles})
        self.assertEqual('nvidia-700_0', slice_.handles[1].mark)
        self.assertEqual(['CUSTOM_GPU_FB_10GB', 'CUSTOM_GPU_MIG_BACKED',
                          'CUSTOM_GPU_MIG_PROFILE_1G_10GB'], slice_.traits)

    def test_mdev_parent_serving_one_profile_is_kept_for_it(self):
        big = nvml_adapter.GpuInstanceProfile(5, '4g.40gb', 4, 1, 39936,
                                              ((0, 4),))
        small = nvml_adapter.GpuInstanceProfile(19, '1g.10gb', 1, 7, 9728,
                                                ((4, 1),))
        complete = [nvml_adapter.GpuInstance(1, 5, 0, 4, True),
                    nvml_adapter.GpuInstance(2, 19, 4, 1, True)]
        parents = [
            nvidia_mig.MdevParent('0000:01:00.4',
                                  {'nvidia-700': 1, 'nvidia-702': 1}, ()),
            nvidia_mig.MdevParent('0000:01:00.5', {'nvidia-700': 1}, ()),
        ]
        slices = nvidia_mig.mdev_slices(
            [big, small], complete, {5: [700], 19: [702]}, parents)
        self.assertEqual(
            {'4g.40gb': ['0000:01:00.5'], '1g.10gb': ['0000:01:00.4']},
            {s.name: [h.address for h in s.handles] for s in slices})

    def test_framebuffer_trait_is_the_nominal_size(self):
        for name, memory_mib, trait in (
                ('1g.18gb', 16384, 'CUSTOM_GPU_FB_18GB'),
                ('7g.80gb', 80384, 'CUSTOM_GPU_FB_80GB'),
                ('1g.10gb+me', 9728, 'CUSTOM_GPU_FB_10GB'),
                ('odd', 9728, 'CUSTOM_GPU_FB_9GB')):
            profile = nvml_adapter.GpuInstanceProfile(
                1, name, 1, 1, memory_mib, ((0, 1),))
            self.assertEqual(trait,
                             nvidia_common.mig_framebuffer_trait(profile))

    def test_cliques_of_a_partial_mesh_are_true_cliques(self):
        # A 4-way bridge with the link between the first and the third
        # GPU down: 1-2, 2-3, 1-4, 2-4, 3-4 are peers, 1-3 are not.
        Dev = collections.namedtuple('Dev', 'address')
        gpus = ['0000:01:00.0', '0000:02:00.0', '0000:03:00.0',
                '0000:04:00.0', '0000:05:00.0', '0000:06:00.0']
        devices = [Dev(address) for address in reversed(gpus)]
        down = {(gpus[0], gpus[2])}
        pairs = {(a, b) for i, a in enumerate(gpus[:4])
                 for b in gpus[i + 1:4]} - down
        pairs.add((gpus[4], gpus[5]))
        asked = []

        def peers(a, b):
            asked.append(frozenset((a.address, b.address)))
            return (a.address, b.address) in pairs or \
                (b.address, a.address) in pairs

        cliques = nvidia_common.nvlink_cliques(devices, peers)
        # Maximal cliques {1,2,4} and {2,3,4}: the first in address order
        # wins, 3 is left alone, 5-6 are the next clique.
        self.assertEqual({gpus[0]: 0, gpus[1]: 0, gpus[3]: 0,
                          gpus[4]: 1, gpus[5]: 1}, cliques)
        self.assertEqual(15, len(asked))
        self.assertEqual(len(set(asked)), len(asked))
        for first in cliques:
            for second in cliques:
                if first < second and cliques[first] == cliques[second]:
                    self.assertIn((first, second), pairs)

    def test_chain_gives_one_pair_not_one_component(self):
        # Peers 1-2 and 2-3 but not 1-3: once one component, clique 0.
        Dev = collections.namedtuple('Dev', 'address')
        devices = [Dev('0000:01:00.0'), Dev('0000:02:00.0'),
                   Dev('0000:03:00.0')]
        chain = {('0000:01:00.0', '0000:02:00.0'),
                 ('0000:02:00.0', '0000:03:00.0')}
        self.assertEqual(
            {'0000:01:00.0': 0, '0000:02:00.0': 0},
            nvidia_common.nvlink_cliques(
                devices, lambda a, b: (a.address, b.address) in chain))


def a100_mig_over_mdev():
    """pcie-a100 with MIG on GPU 0 (01:00.0), as an Ampere host runs
    MIG-backed vGPU: GPU instances 4g.40gb, 2g.20gb and 1g.10gb, every VF an
    mdev parent whose MIG-backed types show one available instance while a
    GPU instance of the profile is free, and a guest on VF .4 holding an
    A100D-2-20C mdev on the 2g.20gb instance. Type names are NVIDIA's
    A100 80GB PCIe MIG-backed types; ids 700-702 are illustrative.
    """
    data = host_data('pcie-a100')
    types = {700: ('NVIDIA A100D-4-40C', 5, 40960),
             701: ('NVIDIA A100D-2-20C', 14, 20480),
             702: ('NVIDIA A100D-1-10C', 19, 10240)}
    hosts.add_a100_mig_types(data, types)
    device = data['nvml']['devices'][0]
    device['mig_mode'] = [1, 1]
    device['creatable_vgpus'] = [700, 702]
    device['gpu_instances'] = [
        {'id': gi, 'profile_id': profile, 'start': start, 'size': size,
         'compute_instances': [{'id': 0, 'profile_id': ci, 'start': 0,
                                'size': slices,
                                'uuid': 'MIG-a100-%d' % gi}]}
        for gi, profile, start, size, ci, slices in (
            (1, 5, 0, 4, 3, 4), (2, 14, 4, 2, 1, 2), (3, 19, 6, 1, 0, 1))]
    [active] = [vgpu for vgpu in device['active_vgpus']
                if vgpu['vf_pci_bus_id'].endswith('01:00.4')]
    active.update(type_id=701, gpu_instance_id=2)
    device['active_vgpus'] = [active]

    pf = data['pci_devices'][0]
    pf['vf_defaults']['files'] = hosts.mdev_type_files(types, {700: 1, 702: 1})
    for vf in pf['virtfns']:
        vf.pop('files', None)
        vf.pop('mdevs', None)
    pf['virtfns'][0]['files'] = hosts.mdev_type_files(types, {})
    pf['virtfns'][0]['mdevs'] = [{'uuid': active['mdev_uuid'],
                                  'type': 'nvidia-701'}]
    return data


class A100MigOverMdevTest(DriverTestCase):
    """Item 1 of issue 15, through the driver over a materialized host."""

    def setUp(self):
        super().setUp()
        self.env_ = self.env(a100_mig_over_mdev())
        self.driver_ = self.driver(self.env_)

    def test_every_vf_is_offered_by_one_provider_at_most(self):
        for _ in range(2):
            [gpu] = self.driver_.collect().gpus
        handles = {s.name: [(h.address, h.in_use, h.mdev_type)
                            for h in s.handles] for s in gpu.slices}
        self.assertEqual({
            '4g.40gb': [('0000:01:00.5', False, 'nvidia-700')],
            '2g.20gb': [('0000:01:00.4', True, 'nvidia-701')],
            '1g.10gb': [('0000:01:00.6', False, 'nvidia-702')]}, handles)
        addresses = [address for units in handles.values()
                     for address, _, _ in units]
        self.assertEqual(len(set(addresses)), len(addresses))
        # Through Cyborg's objects too: no attach handle in two
        # deployables.
        [device] = self.driver_.discover()
        infos = [handle.attach_info for deployable in device.deployable_list
                 for handle in deployable.attach_handle_list]
        self.assertEqual(3, len(infos))
        self.assertEqual(len(set(infos)), len(infos))

    def test_a_normal_scan_logs_nothing(self):
        for _ in range(3):
            self.driver_.discover()
        self.assertNotIn('vendor VFIO', self.log.output)
        self.assertNotIn('set up but only', self.log.output)
        self.assertEqual('', self.log.output)

    def test_guest_on_a_vf_takes_it_from_every_other_profile(self):
        data = a100_mig_over_mdev()
        # The free 1g.10gb instance gets a guest on VF .6: no VF offers
        # the 1g type any more, .6 is in use, the 4g keeps .5.
        pf = data['pci_devices'][0]
        pf['virtfns'][2]['files'] = {
            'mdev_supported_types/nvidia-%d/available_instances' % t: '0\n'
            for t in (700, 701, 702)}
        pf['virtfns'][2]['mdevs'] = [{
            'uuid': '0b7b6d3e-6a51-4d8e-9d6c-3f1c2a7e5b10',
            'type': 'nvidia-702'}]
        pf['vf_defaults']['files'][
            'mdev_supported_types/nvidia-702/available_instances'] = '0\n'
        device = data['nvml']['devices'][0]
        device['active_vgpus'].append({
            'id': 9, 'type_id': 702, 'vf_pci_bus_id': '00000000:01:00.6',
            'uuid': 'c0b8a3f2-2f0e-4c47-9a51-0d4b1e6f3a21',
            'gpu_instance_id': 3,
            'mdev_uuid': '0b7b6d3e-6a51-4d8e-9d6c-3f1c2a7e5b10'})
        [gpu] = self.driver(self.env(data)).collect().gpus
        self.assertEqual({
            '4g.40gb': [('0000:01:00.5', False)],
            '2g.20gb': [('0000:01:00.4', True)],
            '1g.10gb': [('0000:01:00.6', True)]},
            {s.name: [(h.address, h.in_use) for h in s.handles]
             for s in gpu.slices})

    def test_vf_vanished_on_an_mdev_gpu_is_unknown(self):
        env = self.env(a100_mig_over_mdev())
        driver = self.driver(env)
        driver.collect()
        shutil.rmtree(os.path.realpath(os.path.join(
            env.sysfs_root, 'bus', 'pci', 'devices', '0000:01:00.4')))
        [gpu] = driver.collect().gpus
        self.assertIn('0000:01:00.4', gpu.unknown_units)
        # Vanished at a cold start: a vGPU runs there (NVML) and no last
        # report holds its unit, so the GPU is a stub.
        data = a100_mig_over_mdev()
        data['pci_devices'][0]['virtfns'][0]['missing'] = True
        [gpu] = self.driver(self.env(data)).collect().gpus
        self.assertTrue(gpu.stub)


class PcieA100Test(DriverTestCase):

    def test_mig_disabled_gpus_are_left_to_the_vgpu_driver(self):
        driver = self.driver(hosts.shared_env('pcie-a100'))
        self.assertEqual([], driver.discover())
        # Its mdev parents are still read right (for the busy check).
        parents = driver._mdev_parents('0000:01:00.0')
        self.assertEqual(20, len(parents))
        self.assertEqual(('nvidia-476',), parents[0].created)
        self.assertEqual(0, parents[0].available['nvidia-476'])
        self.assertEqual(1, parents[2].available['nvidia-476'])
        self.assertEqual('mdevs exist on 0000:01:00.4, 0000:01:00.5',
                         nvidia_mig.is_busy([], [], parents))
