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
"""The AMD MxGPU driver over the reference hosts and small data."""

import copy
import io
import os
import shutil
import sys
import tempfile
from unittest import mock

import fixtures
from oslo_config import cfg
import testtools

from cyborg_gpu_drivers.adapters import amdsmi as amdsmi_adapter
from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import amd_mxgpu
from cyborg_gpu_drivers import base as driver_base
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import report
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_amdsmi
import placement_traits
from tests.unit.cyborg_gpu_drivers import base

CONF = cfg.CONF
GIM_MEMORY_MODE = ('memory_partition_mode: NPS4\nnuma_count: 4\n'
                   'NUMA0 type=HBM start=0x0 end=0xbffffffff\n'
                   'NUMA1 type=HBM start=0xc00000000 end=0x17ffffffff\n')
PF = '0000:05:00.0'
HIVE = 7728127076612325457
HIVE_TRAIT = placement_traits.xgmi_hive_trait(HIVE)


def host_data(name):
    return copy.deepcopy(reference_hosts.load(name).data)


def one_cpx_gpu():
    """The first GPU of mi300x-cpx alone: 8 VFs, quick to materialize."""
    data = host_data('mi300x-cpx')
    data['pci_devices'] = data['pci_devices'][:1]
    data['amdsmi']['gpus'] = data['amdsmi']['gpus'][:1]
    return data


class ParseTest(testtools.TestCase):

    def test_gim_memory_partition_file(self):
        self.assertEqual('NPS4',
                         amd_mxgpu.parse_memory_partition(GIM_MEMORY_MODE))
        self.assertEqual('NPS1', amd_mxgpu.parse_memory_partition(
            'memory_partition_mode: NPS1\nnuma_count: 1\n'
            'NUMA0 type=HBM start=0x0 end=0x2fffffffff\n'))

    def test_amdgpu_memory_partition_file(self):
        self.assertEqual('NPS1', amd_mxgpu.parse_memory_partition('NPS1\n'))

    def test_memory_partition_garbage(self):
        for text in (None, '', 'NPS3\n', 'memory_partition_mode: huh\n',
                     'numa_count: 4\n'):
            self.assertIsNone(amd_mxgpu.parse_memory_partition(text), text)

    def test_compute_partition(self):
        self.assertEqual('CPX', amd_mxgpu.parse_compute_partition('CPX\n'))
        self.assertEqual('SPX', amd_mxgpu.parse_compute_partition('spx'))
        self.assertIsNone(amd_mxgpu.parse_compute_partition('XPX'))
        self.assertIsNone(amd_mxgpu.parse_compute_partition(None))

    def test_hive_id(self):
        self.assertEqual(HIVE, amd_mxgpu.parse_hive_id('%d\n' % HIVE))
        self.assertEqual(0x1f, amd_mxgpu.parse_hive_id('0x1f'))
        self.assertIsNone(amd_mxgpu.parse_hive_id('0'))
        self.assertIsNone(amd_mxgpu.parse_hive_id(None))

    def test_slice_name(self):
        self.assertEqual('MI300X-CPX', amd_mxgpu.slice_name(
            'AMD Instinct MI300X', 'CPX'))
        self.assertEqual('MI300X_HF-SPX', amd_mxgpu.slice_name(
            'AMD Instinct MI300X HF', 'SPX'))

    def test_models_option(self):
        self.assertEqual(
            {'75a3': ('AMD Instinct MI355X', 0)},
            amd_mxgpu.parse_models({'0x75A3': 'AMD Instinct MI355X'}))
        error = self.assertRaises(amd_mxgpu.AmdConfigError,
                                  amd_mxgpu.parse_models, {'mi355': 'x'})
        self.assertIn('[amd_mxgpu] models', str(error))
        self.assertIn('4 hex digits', str(error))
        error = self.assertRaises(amd_mxgpu.AmdConfigError,
                                  amd_mxgpu.parse_models, {'75a3': '...'})
        self.assertIn('[amd_mxgpu] models', str(error))


class VfHandlesTest(testtools.TestCase):
    """The per-VF rules, as plain data."""

    def setUp(self):
        super().setUp()
        self.notes = []

    def note(self, key, message):
        self.notes.append(message)

    def pf(self, *vfs):
        return amd_mxgpu.PfView(
            address=PF, device_id='74a1', numa_node=0,
            compute_partition='CPX', memory_partition='NPS4',
            xgmi_hive_id=HIVE, market_name=None, vfs=vfs)

    def test_vfio_vfs_offered_and_open_ones_in_use(self):
        handles = amd_mxgpu.vf_handles(self.pf(
            amd_mxgpu.VfView(0, '0000:05:02.0', True, 'vfio-pci', 0),
            amd_mxgpu.VfView(1, '0000:05:02.1', True, 'vfio-pci', 1)),
            {}, self.note)
        self.assertEqual(
            [inventory.AttachHandle(inventory.PCI, '0000:05:02.0'),
             inventory.AttachHandle(inventory.PCI, '0000:05:02.1',
                                    in_use=True)], handles)
        self.assertEqual([], self.notes)

    def test_idle_vf_not_on_vfio_not_offered(self):
        handles = amd_mxgpu.vf_handles(self.pf(
            amd_mxgpu.VfView(0, '0000:05:02.0', True, 'amdgpu', 0),
            amd_mxgpu.VfView(1, '0000:05:02.1', True, None, 0)),
            {}, self.note)
        self.assertEqual([], handles)
        self.assertEqual(
            ['VF 0000:05:02.0 (virtfn0 of 0000:05:00.0) is bound to amdgpu, '
             'not vfio-pci: not offered; bind it to vfio-pci to offer it',
             'VF 0000:05:02.1 (virtfn1 of 0000:05:00.0) is bound to no '
             'driver, not vfio-pci: not offered; bind it to vfio-pci to '
             'offer it'], self.notes)

    def test_open_vf_without_driver_counted_in_use(self):
        # No driver (or a dangling link, which the adapters read as none)
        # while open or unreadable: it may be a guest's behind a broken
        # link. A VF another driver holds is left out, open or not.
        handles = amd_mxgpu.vf_handles(self.pf(
            amd_mxgpu.VfView(0, '0000:05:02.0', True, 'amdgpu', 1),
            amd_mxgpu.VfView(1, '0000:05:02.1', True, None, None),
            amd_mxgpu.VfView(2, '0000:05:02.2', True, None, 2)),
            {}, self.note)
        self.assertEqual(
            [inventory.AttachHandle(inventory.PCI, address, in_use=True)
             for address in ('0000:05:02.1', '0000:05:02.2')], handles)
        self.assertEqual(3, len(self.notes))
        self.assertNotIn('counted in use', self.notes[0])
        for line in self.notes[1:]:
            self.assertIn('not offered (open, or its open count unreadable: '
                          'counted in use)', line)

    def test_vanished_vf_keeps_its_last_report(self):
        last = inventory.AttachHandle(inventory.PCI, '0000:05:02.1',
                                      in_use=True)
        handles = amd_mxgpu.vf_handles(self.pf(
            amd_mxgpu.VfView(1, '0000:05:02.1', False),
            amd_mxgpu.VfView(2, '0000:05:02.2', False)),
            {'0000:05:02.1': last}, self.note)
        self.assertEqual([last], handles)
        self.assertEqual(2, len(self.notes))
        self.assertIn('kept', self.notes[0])
        self.assertIn('not offered', self.notes[1])

    def test_gpu_without_usable_vf_has_no_provider(self):
        gpu = amd_mxgpu.build_gpu(self.pf(
            amd_mxgpu.VfView(0, '0000:05:02.0', True, 'amdgpu')),
            'AMD Instinct MI300X', 196608, {}, self.note)
        self.assertEqual([], gpu.slices)
        self.assertIn('no VF bound to vfio-pci', self.notes[-1])


class DriverTestCase(base.DriverTestCase):

    def setUp(self):
        super().setUp()

    def env(self, data):
        host = reference_hosts.ReferenceHost(data, data['name'])
        return host.materialize(self.useFixture(fixtures.TempDir()).path)

    def driver(self, env, amdsmi='host'):
        if amdsmi == 'host':
            amdsmi = fake_amdsmi.module_for(env.amdsmi)
        return amd_mxgpu.AmdMxgpuDriver(
            hostname=env.hostname, sysfs_root=env.sysfs_root, amdsmi=amdsmi)

    @staticmethod
    def by_address(host_inventory):
        return {gpu.address: gpu for gpu in host_inventory.gpus}

    @staticmethod
    def vf_dir(env, address):
        return os.path.realpath(os.path.join(
            env.sysfs_root, 'bus', 'pci', 'devices', address))

    def remove_vfs(self, env, numvfs=0):
        """What the kernel does when GIM lowers a PF's VFs to ``numvfs``:
        the VFs past it go, with their links.
        """
        pf_dir = self.vf_dir(env, PF)
        for name in os.listdir(pf_dir):
            if name.startswith('virtfn') and int(name[6:]) >= numvfs:
                vf = os.path.basename(os.readlink(os.path.join(pf_dir,
                                                               name)))
                os.unlink(os.path.join(pf_dir, name))
                os.unlink(os.path.join(env.sysfs_root, 'bus', 'pci',
                                       'devices', vf))
        with open(os.path.join(pf_dir, 'sriov_numvfs'), 'w') as f:
            f.write('%d\n' % numvfs)


class ReferenceHostTest(DriverTestCase):
    """Read-only scans of the full hosts, materialized once."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        directory = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, directory)
        cls.envs = {}
        for name in ('mi300x-spx', 'mi300x-cpx', 'awkward'):
            os.mkdir(os.path.join(directory, name))
            cls.envs[name] = reference_hosts.load(name).materialize(
                os.path.join(directory, name))

    def assertHost(self, name, partition, memory, vfs_per_gpu):
        env = self.envs[name]
        gpus = self.driver(env).collect().gpus
        self.assertEqual(8, len(gpus))
        resource_class = 'CUSTOM_GPU_VF_MI300X_%s' % partition
        for number, gpu in enumerate(sorted(gpus, key=lambda g: g.address)):
            numa = 0 if number < 4 else 1
            self.assertTrue(gpu.healthy)
            self.assertEqual('AMD Instinct MI300X', gpu.model)
            self.assertEqual('74a1', gpu.device_id)
            self.assertEqual(numa, gpu.numa_node)
            self.assertEqual('%x' % HIVE, gpu.link_domain)
            self.assertEqual(
                sorted(['CUSTOM_GPU_VENDOR_AMD', 'CUSTOM_GPU_MODEL_MI300X',
                        'CUSTOM_GPU_COMPUTE_PARTITION_' + partition,
                        'CUSTOM_GPU_MEMORY_PARTITION_' + memory,
                        'CUSTOM_GPU_NUMA_NODE_%d' % numa, HIVE_TRAIT]),
                sorted(gpu.traits))
            [slice_] = gpu.slices
            self.assertEqual('MI300X-' + partition, slice_.name)
            self.assertEqual(resource_class, slice_.resource_class)
            self.assertEqual(vfs_per_gpu, slice_.total)
            bus = gpu.address.split(':')[1]
            self.assertEqual(
                ['0000:%s:02.%d' % (bus, vf) for vf in range(vfs_per_gpu)],
                [handle.address for handle in slice_.handles])
            self.assertTrue(all(handle.attach_type == inventory.PCI
                                and not handle.in_use
                                for handle in slice_.handles))
        self.assertEqual([], self.log.output.splitlines())
        return env

    def test_mi300x_spx_one_vf_per_gpu(self):
        self.assertHost('mi300x-spx', 'SPX', 'NPS1', 1)

    def test_mi300x_cpx_eight_vfs_per_gpu(self):
        self.assertHost('mi300x-cpx', 'CPX', 'NPS4', 8)

    def test_report_shape_and_stable_names(self):
        env = self.envs['mi300x-cpx']
        devices = self.driver(env).discover()
        again = self.driver(env).discover()
        self.assertEqual(8, len(devices))
        first = devices[0]
        self.assertFalse(first.stub)
        self.assertEqual('1002', first.vendor)
        [deployable] = first.deployable_list
        self.assertEqual('mi300x-01_0000_05_00_0_MI300X-CPX',
                         deployable.name)
        self.assertEqual(8, deployable.num_accelerators)
        self.assertEqual('gpu_partitions_amd_mxgpu', deployable.driver_name)
        attributes = {a.key: a.value for a in deployable.attribute_list}
        self.assertEqual('CUSTOM_GPU_VF_MI300X_CPX', attributes['rc'])
        self.assertIn(placement_traits.physical_gpu_trait(PF),
                      attributes.values())
        self.assertEqual(
            [report.attach_info(inventory.AttachHandle(
                inventory.PCI, '0000:05:02.%d' % vf)) for vf in range(8)],
            [h.attach_info for h in deployable.attach_handle_list])
        # A restart (new driver instance) names everything the same.
        self.assertEqual(
            [(d.deployable_list[0].name, d.controlpath_id.cpid_info)
             for d in devices],
            [(d.deployable_list[0].name, d.controlpath_id.cpid_info)
             for d in again])

    def test_a_scan_reads_each_vendor_once(self):
        # One walk of sysfs per scan: the skeleton takes the scan's list.
        env = self.envs['mi300x-cpx']
        driver = self.driver(env)
        reads = self.vendor_reads()
        self.assertEqual(8, len(driver.collect().gpus))
        addresses = sysfs_adapter.Sysfs(env.sysfs_root).addresses()
        self.assertEqual(72, len(addresses))
        self.assertEqual(dict.fromkeys(addresses, 1), reads)

    def test_awkward_host_has_no_amd_gpu(self):
        env = self.envs['awkward']
        self.assertEqual([], self.driver(env).discover())
        self.assertEqual([], self.log.output.splitlines())

    def test_inventory_never_dips_for_open_vfs(self):
        env = self.env(one_cpx_gpu())
        with open(os.path.join(self.vf_dir(env, '0000:05:02.3'),
                               'enable'), 'w') as enable:
            enable.write('1\n')
        gpu = self.by_address(self.driver(env).collect())[PF]
        [slice_] = gpu.slices
        self.assertEqual(['0000:05:02.3'], [
            h.address for h in slice_.handles if h.in_use])
        self.assertEqual(8, slice_.total)


class AmdsmiTest(DriverTestCase):

    def test_without_amdsmi_modes_come_from_sysfs(self):
        env = self.env(one_cpx_gpu())
        gpu = self.by_address(self.driver(env, amdsmi=None).collect())[PF]
        self.assertIn('CUSTOM_GPU_COMPUTE_PARTITION_CPX', gpu.traits)
        self.assertIn('CUSTOM_GPU_MEMORY_PARTITION_NPS4', gpu.traits)
        # GIM has no sysfs file for the hive: no hive trait, no guess.
        self.assertNotIn(HIVE_TRAIT, gpu.traits)
        self.assertIsNone(gpu.link_domain)
        self.assertEqual(8, gpu.slices[0].total)

    def test_hive_from_sysfs_where_the_kernel_has_it(self):
        data = host_data('mi300x-spx')
        data['amdsmi'] = None
        for pf in data['pci_devices']:
            pf['files']['xgmi_hive_info/xgmi_hive_id'] = '%d\n' % HIVE
        env = self.env(data)
        gpus = self.driver(env).collect().gpus
        self.assertEqual(8, len([g for g in gpus if HIVE_TRAIT in g.traits]))

    def test_amdsmi_failing_to_start(self):
        env = self.env(one_cpx_gpu())
        amdsmi = fake_amdsmi.module_for(env.amdsmi)
        amdsmi.fail['amdsmi_init'] = 'AMDSMI_STATUS_DRIVER_NOT_LOADED'
        driver = self.driver(env, amdsmi=amdsmi)
        [gpu] = driver.collect().gpus
        self.assertEqual(8, gpu.slices[0].total)
        self.assertIn('CUSTOM_GPU_COMPUTE_PARTITION_CPX', gpu.traits)
        [line] = self.log.output.splitlines()
        self.assertIn('amdsmi is failing', line)
        self.assertIn('AMDSMI_STATUS_DRIVER_NOT_LOADED', line)
        # The same trouble on the next scan is not logged again at WARNING.
        driver.collect()
        self.assertEqual([line], self.log.output.splitlines())

    def test_one_failing_call_costs_only_its_value(self):
        env = self.env(one_cpx_gpu())
        amdsmi = fake_amdsmi.module_for(env.amdsmi)
        amdsmi.fail['amdsmi_get_gpu_compute_partition'] = 'busy'
        [gpu] = self.driver(env, amdsmi=amdsmi).collect().gpus
        self.assertIn(HIVE_TRAIT, gpu.traits)
        self.assertIn('CUSTOM_GPU_COMPUTE_PARTITION_CPX', gpu.traits)
        [line] = self.log.output.splitlines()
        self.assertIn('amdsmi failed amdsmi_get_gpu_compute_partition for '
                      'GPU 0000:05:00.0', line)

    def test_amdsmi_wins_over_sysfs(self):
        data = one_cpx_gpu()
        data['pci_devices'][0]['files']['spatial_partition_mode'] = 'SPX\n'
        env = self.env(data)
        gpu = self.by_address(self.driver(env).collect())[PF]
        self.assertEqual('CUSTOM_GPU_VF_MI300X_CPX',
                         gpu.slices[0].resource_class)

    def test_import_guard_swallows_keyerror_and_stdout(self):
        package = self.useFixture(fixtures.TempDir()).path
        os.mkdir(os.path.join(package, 'amdsmi'))
        with open(os.path.join(package, 'amdsmi', '__init__.py'), 'w') as f:
            # What ROCm's amdsmi does without libamd_smi.so.
            f.write("print('Unable to find libamd_smi.so')\n"
                    "raise KeyError('libamd_smi.so')\n")
        self.useFixture(fixtures.MonkeyPatch('sys.path',
                                             [package] + sys.path))
        self.addCleanup(sys.modules.pop, 'amdsmi', None)
        stdout = self.useFixture(fixtures.MonkeyPatch('sys.stdout',
                                                      io.StringIO())).new_value
        module, reason = amdsmi_adapter.import_amdsmi()
        self.assertIsNone(module)
        self.assertEqual("KeyError: 'libamd_smi.so'", reason)
        self.assertEqual('', stdout.getvalue())


class BadHardwareTest(DriverTestCase):

    def test_vf_not_on_vfio_is_not_offered(self):
        data = one_cpx_gpu()
        data['pci_devices'][0]['virtfns'][5]['driver'] = 'amdgpu'
        env = self.env(data)
        gpu = self.by_address(self.driver(env).collect())[PF]
        self.assertEqual(7, gpu.slices[0].total)
        self.assertNotIn('0000:05:02.5',
                         [h.address for h in gpu.slices[0].handles])
        [line] = self.log.output.splitlines()
        self.assertIn('VF 0000:05:02.5 (virtfn5 of 0000:05:00.0) is bound '
                      'to amdgpu, not vfio-pci: not offered', line)

    def test_open_vf_whose_driver_link_is_lost_stays_in_use(self):
        # Found by a probe: the busy VF's ``driver`` link deleted or
        # dangling left it out of the report (Cyborg then deletes its
        # record while a guest may hold it).
        for spoil in (os.unlink,
                      lambda link: (os.unlink(link),
                                    os.symlink('../no-such-driver', link))):
            env = self.env(one_cpx_gpu())
            vf_dir = self.vf_dir(env, '0000:05:02.5')
            with open(os.path.join(vf_dir, 'enable'), 'w') as enable:
                enable.write('1\n')
            spoil(os.path.join(vf_dir, 'driver'))
            gpu = self.by_address(self.driver(env).collect())[PF]
            self.assertEqual(8, gpu.slices[0].total)
            self.assertIn(
                inventory.AttachHandle(inventory.PCI, '0000:05:02.5',
                                       in_use=True), gpu.slices[0].handles)

    def test_vf_vanishing_mid_scan(self):
        # sriov_numvfs still says 8: the VF's state is unknown, and no
        # report since the agent started holds its unit, which Cyborg may
        # hold for a guest. Leaving it out would delete that record.
        data = one_cpx_gpu()
        data['pci_devices'][0]['virtfns'][2]['missing'] = True
        env = self.env(data)
        driver = self.driver(env)
        gpu = self.by_address(driver.collect())[PF]
        self.assertTrue(gpu.stub)
        self.assertIn('AMD GPU 0000:05:00.0: VFs 0000:05:02.2 cannot be '
                      'read', self.log.output)

    def test_reported_vf_vanishing_keeps_its_report(self):
        env = self.env(one_cpx_gpu())
        driver = self.driver(env)
        self.assertEqual(8, self.by_address(driver.collect())[PF]
                         .slices[0].total)
        # The VF goes between listing the PF's virtfn links and reading it.
        os.unlink(os.path.join(env.sysfs_root, 'bus', 'pci', 'devices',
                               '0000:05:02.4'))
        gpu = self.by_address(driver.collect())[PF]
        self.assertEqual(8, gpu.slices[0].total)
        self.assertIn('its last report is kept', self.log.output)
        # Its link gone too, sriov_numvfs still 8: still unknown.
        pf_dir = self.vf_dir(env, PF)
        os.unlink(os.path.join(pf_dir, 'virtfn4'))
        gpu = self.by_address(driver.collect())[PF]
        self.assertEqual(8, gpu.slices[0].total)
        self.assertIn('0000:05:02.4',
                      [h.address for h in gpu.slices[0].handles])
        # GIM lowers the PF to seven VFs. Seven VFs in CPX is no
        # partitioning GIM supports on an MI300X: a stub, and why.
        self.remove_vfs(env, 7)
        gpu = self.by_address(driver.collect())[PF]
        self.assertTrue(gpu.stub)
        self.assertIn('7 VFs in CPX/NPS4 is not a partitioning GIM '
                      'supports on AMD Instinct MI300X', self.log.output)

    def test_all_vfs_leaving_vfio_after_a_report_gives_a_stub(self):
        env = self.env(one_cpx_gpu())
        driver = self.driver(env)
        self.assertEqual(8, driver.discover()[0].deployable_list[0]
                         .num_accelerators)
        # GIM reloaded with no VF yet.
        self.remove_vfs(env)
        for scan in range(2):
            [device] = driver.discover()
            self.assertTrue(device.stub)
        self.assertIn('AMD GPU 0000:05:00.0: without a VF on vfio-pci after '
                      'offering some; reported as a stub', self.log.output)
        # A new agent never saw it offer: a device without provider.
        [device] = self.driver(env).discover()
        self.assertFalse(device.stub)
        self.assertEqual([], device.deployable_list)

    def test_gim_not_loaded_reports_stubs(self):
        data = host_data('mi300x-spx')
        for pf in data['pci_devices']:
            pf['driver'] = None
            del pf['virtfns']
        data['amdsmi'] = None
        env = self.env(data)
        devices = self.driver(env).discover()
        self.assertEqual(8, len(devices))
        self.assertTrue(all(d.stub and d.deployable_list == []
                            for d in devices))
        lines = self.log.output.splitlines()
        self.assertEqual(8, len(lines))
        self.assertIn('AMD GPU 0000:05:00.0: bound to no driver, not gim '
                      '(GIM not loaded or the GPU not given to it); '
                      'reported as a stub', lines[0])

    def test_unreadable_partition_mode_reports_a_stub(self):
        data = host_data('mi300x-spx')
        del data['pci_devices'][1]['files']['spatial_partition_mode']
        data['amdsmi'] = None
        env = self.env(data)
        devices = self.driver(env).discover()
        stubs = [d for d in devices if d.stub]
        self.assertEqual(1, len(stubs))
        self.assertEqual(7, len([d for d in devices if d.deployable_list]))
        self.assertIn('AMD GPU 0000:26:00.0: its compute partition mode '
                      'cannot be read', self.log.output)

    def test_unknown_device_named_by_option(self):
        data = host_data('mi300x-spx')
        data['pci_devices'][0]['device'] = '0x75a3'
        data['amdsmi'] = None
        env = self.env(data)
        self.conf.config(group='amd_mxgpu',
                         models={'75a3': 'AMD Instinct MI355X'})
        gpu = self.by_address(self.driver(env).collect())[PF]
        self.assertEqual('CUSTOM_GPU_VF_MI355X_SPX',
                         gpu.slices[0].resource_class)
        self.assertEqual([], self.log.output.splitlines())

    def test_scan_failure_never_raises(self):
        env = self.env(one_cpx_gpu())
        driver = self.driver(env)
        good = driver.discover()
        with mock.patch.object(driver._pci, 'devices_by_vendor',
                               side_effect=OSError('sysfs gone')):
            again = driver.discover()
        self.assertEqual(len(good), len(again))
        self.assertTrue(all(device.stub for device in again))

    def test_scan_failing_to_list_the_gpus_leaves_them_to_the_skeleton(self):
        # The scan's walk fails, the skeleton's own walk finds the GPU:
        # never reported, it is sent as a stub.
        env = self.env(one_cpx_gpu())
        driver = self.driver(env)
        listed = driver._pci.devices_by_vendor(amd_mxgpu.AMD_VENDOR_ID)
        with mock.patch.object(driver._pci, 'devices_by_vendor',
                               side_effect=[OSError('sysfs gone'), listed]):
            [gpu] = driver.collect().gpus
        self.assertTrue(gpu.stub)
        self.assertEqual(PF, gpu.address)


class BusyVfTestCase(DriverTestCase):
    """One CPX MI300X whose VF ``BUSY_VF`` runs a guest."""

    BUSY_VF = '0000:05:02.1'
    #: What an unreadable file can be: gone, not text, not a number or
    #: an id, or a read that fails (EISDIR).
    UNREADABLE = ('missing', b'\xff\xfe\n', b'zz%?\n', 'directory')

    def setUp(self):
        super().setUp()
        self.env_ = self.env(one_cpx_gpu())
        self.pf_dir = self.vf_dir(self.env_, PF)
        with open(os.path.join(self.vf_dir(self.env_, self.BUSY_VF),
                               'enable'), 'w') as f:
            f.write('1\n')

    def spoil(self, directory, name, how):
        """Make file ``name`` unreadable ``how`` (see UNREADABLE)."""
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        elif os.path.lexists(path):
            os.unlink(path)
        if how == 'directory':
            os.mkdir(path)
        elif how != 'missing':
            with open(path, 'wb') as f:
                f.write(how)


class UnidentifiedPfTest(BusyVfTestCase):
    """A PF whose ``vendor`` cannot be read when the agent starts is not
    listed as AMD's: it is reported, whole or as a stub, whenever anything
    else says it may be an AMD GPU.
    """

    def cold_report(self):
        return self.driver(self.env_, amdsmi=None).discover()

    def test_gim_pf_whose_vendor_cannot_be_read_is_reported_whole(self):
        for how in self.UNREADABLE:
            self.spoil(self.pf_dir, 'vendor', how)
            [device] = self.cold_report()
            self.assertFalse(device.stub, how)
            [deployable] = device.deployable_list
            self.assertEqual(8, deployable.num_accelerators)
            self.assertEqual(
                [report.attach_info(inventory.AttachHandle(
                    inventory.PCI, self.BUSY_VF))],
                [h.attach_info for h in deployable.attach_handle_list
                 if h.in_use])
        self.assertIn('PCI device 0000:05:00.0: its vendor cannot be read, '
                      'but bound to gim: counted as an AMD GPU',
                      self.log.output)

    def stub_by(self, reason):
        [device] = self.cold_report()
        self.assertTrue(device.stub, reason)
        self.assertIn('its vendor cannot be read, but %s' % reason,
                      self.log.output)
        return device

    def test_each_evidence_alone_keeps_the_pf_as_a_stub(self):
        # Not bound to gim (unbound, its link unreadable): a stub.
        self.spoil(self.pf_dir, 'vendor', b'\xff\n')
        self.spoil(self.pf_dir, 'driver', 'missing')
        self.stub_by('its subsystem_vendor is 0x1002')
        self.spoil(self.pf_dir, 'subsystem_vendor', b'0x1028\n')
        self.stub_by('its VF 0000:05:02.0 is of vendor 0x1002')
        self.remove_vfs(self.env_)
        self.stub_by("its device id is AMD Instinct MI300X's")
        self.spoil(self.pf_dir, 'class', b'0x020000\n')
        provider = placement_traits.provider_name(
            self.env_.hostname, PF, 'MI300X-CPX')
        self.gpu_providers[PF] = {provider: {
            'CUSTOM_GPU_VF_MI300X_CPX': (2, {'total': 8, 'reserved': 0})}}
        self.stub_by('Placement has its VF provider')

        def unreadable(driver, address):
            raise RuntimeError('Placement answered 503')

        self.patch(driver_base.GpuPartitionDriver, 'placement_gpu_providers',
                   unreadable)
        self.stub_by('Placement cannot say whether it was ours')

    def test_nothing_saying_amd_leaves_the_device_out(self):
        self.spoil(self.pf_dir, 'vendor', 'missing')
        self.spoil(self.pf_dir, 'driver', 'missing')
        self.spoil(self.pf_dir, 'subsystem_vendor', b'0x8086\n')
        self.spoil(self.pf_dir, 'class', b'0x020000\n')
        self.remove_vfs(self.env_)
        # A provider of another driver's class is not the AMD driver's.
        self.gpu_providers[PF] = {'other': {
            'CUSTOM_MIG_1G_10GB': (0, {'total': 1})}}
        self.assertEqual([], self.cold_report())
        self.assertNotIn('counted as an AMD GPU', self.log.output)


class ConfigTest(DriverTestCase):

    def test_udev_backend_without_pyudev_refused(self):
        self.conf.config(group='amd_mxgpu', pci_backend='udev')
        self.useFixture(fixtures.MockPatch(
            'cyborg_gpu_drivers.adapters.udev.import_pyudev',
            return_value=None))
        error = self.assertRaises(amd_mxgpu.AmdConfigError,
                                  amd_mxgpu.AmdMxgpuDriver, hostname='h')
        self.assertIn('[amd_mxgpu] pci_backend', str(error))
        self.assertIn('allowed: auto, udev (with pyudev), sysfs', str(error))

    def test_injected_root_reads_plain_sysfs(self):
        env = self.env(host_data('mi300x-spx'))
        driver = self.driver(env)
        self.assertIsInstance(driver._pci, sysfs_adapter.Sysfs)

    def test_bad_models_refused_at_start(self):
        self.conf.config(group='amd_mxgpu', models={'zz': 'MI355X'})
        error = self.assertRaises(amd_mxgpu.AmdConfigError,
                                  amd_mxgpu.AmdMxgpuDriver, hostname='h',
                                  sysfs_root='/nonexistent')
        self.assertIn('[amd_mxgpu] models', str(error))


class PartitionModesTest(DriverTestCase):
    """Modes and VF counts GIM does not support are refused, with why."""

    def test_documented_combinations(self):
        for model, compute, memory, vfs in (
                ('AMD Instinct MI300X', 'SPX', 'NPS1', 1),
                ('AMD Instinct MI300X', 'CPX', 'NPS4', 8),
                ('AMD Instinct MI325X', 'SPX', 'NPS1', 1),
                ('AMD Instinct MI355X', 'DPX', 'NPS2', 2),
                ('AMD Instinct MI355X', 'CPX', 'NPS2', 8),
                ('AMD Instinct MI300X', 'CPX', None, 8),
                ('AMD Instinct MI308X', 'QPX', 'NPS4', 4),
                ('AMD Instinct MI300X', 'SPX', 'NPS1', 0)):
            self.assertIsNone(amd_mxgpu.partition_mode_error(
                model, compute, memory, vfs), (model, compute, memory))

    def test_impossible_combinations(self):
        for model, compute, memory, vfs in (
                ('AMD Instinct MI300X', 'SPX', 'NPS2', 1),
                ('AMD Instinct MI300X', 'CPX', 'NPS1', 8),
                ('AMD Instinct MI300X', 'DPX', 'NPS1', 2),
                ('AMD Instinct MI355X', 'TPX', 'NPS1', 4),
                ('AMD Instinct MI355X', 'CPX', 'NPS4', 8),
                ('AMD Instinct MI325X', 'CPX', 'NPS4', 8)):
            error = amd_mxgpu.partition_mode_error(model, compute, memory,
                                                   vfs)
            self.assertIn('%d VFs in %s/%s is not a partitioning GIM '
                          'supports on %s' % (vfs, compute, memory, model),
                          error)

    def test_mi300x_in_nps2_is_not_offered(self):
        data = host_data('mi300x-spx')
        data['amdsmi']['gpus'][0]['memory_partition'] = 'NPS2'
        gpus = self.by_address(self.driver(self.env(data)).collect())
        self.assertTrue(gpus[PF].stub)
        self.assertEqual(7, len([g for g in gpus.values() if g.slices]))
        self.assertIn('AMD GPU 0000:05:00.0: 1 VFs in SPX/NPS2 is not a '
                      'partitioning GIM supports on AMD Instinct MI300X; '
                      'supported (VFs-compute-memory, GIM release notes): '
                      '1-SPX-NPS1, 8-CPX-NPS4 (read from amdsmi)',
                      self.log.output)


class ModelNamesTest(DriverTestCase):
    """Names come from the driver's table or amdsmi's market name, never
    from the bare device id; the option cannot rename either.
    """

    def unknown_id_host(self, device='0x75b9', market_name=None):
        data = host_data('mi300x-spx')
        for pf in data['pci_devices']:
            if pf['device'] == '0x74a1':
                pf['device'] = device
        if market_name is None:
            data['amdsmi'] = None
        else:
            for gpu in data['amdsmi']['gpus']:
                gpu['market_name'] = market_name
        return self.env(data)

    def test_unknown_id_named_after_the_market_name_logged_once(self):
        env = self.unknown_id_host(market_name='AMD Instinct MI355X')
        driver = self.driver(env)
        for _scan in range(2):
            gpus = self.by_address(driver.collect()).values()
        self.assertEqual({'CUSTOM_GPU_VF_MI355X_SPX'}, {
            g.slices[0].resource_class for g in gpus})
        self.assertTrue(all('CUSTOM_GPU_MODEL_MI355X' in g.traits
                            for g in gpus))
        self.assertNotIn('75B9', ' '.join(
            g.slices[0].resource_class for g in gpus))
        self.assertEqual(1, self.log.output.count('75b9'))

    def test_known_ids_mi325x_and_mi355x(self):
        for device, name in (('0x74a5', 'MI325X'), ('0x75a3', 'MI355X')):
            gpus = self.by_address(self.driver(self.unknown_id_host(
                device)).collect()).values()
            self.assertEqual({'CUSTOM_GPU_VF_%s_SPX' % name}, {
                g.slices[0].resource_class for g in gpus})

    def test_unnamed_id_not_offered_warned_once(self):
        driver = self.driver(self.unknown_id_host(), amdsmi=None)
        devices = driver.discover()
        devices = driver.discover()
        self.assertTrue(all(d.stub and not d.deployable_list
                            for d in devices))
        self.assertEqual(1, self.log.output.count(
            'PCI device id 75b9 is not a known AMD Instinct model'))
        self.assertIn('[amd_mxgpu] models', self.log.output)

    def test_option_never_renames_a_known_or_read_name(self):
        self.conf.config(group='amd_mxgpu', models={
            '74a1': 'AMD Instinct Renamed', '75b9': 'AMD Instinct Other'})
        spx = self.env(host_data('mi300x-spx'))
        gpus = self.by_address(self.driver(spx).collect()).values()
        self.assertEqual({'CUSTOM_GPU_VF_MI300X_SPX'}, {
            g.slices[0].resource_class for g in gpus})
        self.assertIn('[amd_mxgpu] models entry 74a1 ignored',
                      self.log.output)
        env = self.unknown_id_host(market_name='AMD Instinct MI355X')
        gpus = self.by_address(self.driver(env).collect()).values()
        self.assertEqual({'CUSTOM_GPU_VF_MI355X_SPX'}, {
            g.slices[0].resource_class for g in gpus})
        self.assertIn('amdsmi reads its market name', self.log.output)


class VfLinkTest(BusyVfTestCase):
    """A VF whose ``virtfnN`` link is missing, dangles or names a wrong
    device is still the PF's (``sriov_numvfs``, its ``physfn``): never
    left out, so Cyborg's conductor never deletes a guest's record.
    """

    TARGETS = (None, '../no-such-device', '../0000:05:02.3',
               '../0000:02:00.0')

    def relink(self, target):
        link = os.path.join(self.pf_dir, 'virtfn1')
        if os.path.lexists(link):
            os.unlink(link)
        if target is not None:
            os.symlink(target, os.path.join(self.pf_dir, 'virtfn1'))

    def busy(self, driver):
        gpu = self.by_address(driver.collect())[PF]
        self.assertFalse(gpu.stub)
        [slice_] = gpu.slices
        self.assertEqual(8, slice_.total)
        return [h.address for h in slice_.handles if h.in_use]

    def test_busy_vf_behind_a_bad_link_stays_in_use(self):
        good = os.readlink(os.path.join(self.pf_dir, 'virtfn1'))
        for target in self.TARGETS:
            warm = self.driver(self.env_, amdsmi=None)
            self.assertEqual([self.BUSY_VF], self.busy(warm))
            self.relink(target)
            self.assertEqual([self.BUSY_VF], self.busy(warm), target)
            cold = self.driver(self.env_, amdsmi=None)
            self.assertEqual([self.BUSY_VF], self.busy(cold), target)
            self.relink(good)

    def test_vf_gone_while_numvfs_counts_it_is_unknown(self):
        warm = self.driver(self.env_, amdsmi=None)
        self.assertEqual([self.BUSY_VF], self.busy(warm))
        os.unlink(os.path.join(self.env_.sysfs_root, 'bus', 'pci',
                               'devices', self.BUSY_VF))
        for target in self.TARGETS:
            self.relink(target)
            # Its last report stays: in use.
            self.assertEqual([self.BUSY_VF], self.busy(warm), target)
            # A new agent has no report of it: the GPU is a stub.
            [device] = self.driver(self.env_, amdsmi=None).discover()
            self.assertTrue(device.stub, target)
        self.assertIn('AMD GPU 0000:05:00.0: VFs 0000:05:02.1 cannot be '
                      'read', self.log.output)

    def test_unreadable_numvfs_makes_the_vf_count_unknown(self):
        warm = self.driver(self.env_, amdsmi=None)
        self.assertEqual([self.BUSY_VF], self.busy(warm))
        for how in self.UNREADABLE:
            self.spoil(self.pf_dir, 'sriov_numvfs', how)
            # Its last report, no longer offered but for what is in use.
            gpu = self.by_address(warm.collect())[PF]
            self.assertFalse(gpu.healthy, how)
            self.assertEqual([self.BUSY_VF],
                             [h.address for h in gpu.slices[0].handles
                              if h.in_use])
            [device] = self.driver(self.env_, amdsmi=None).discover()
            self.assertTrue(device.stub, how)
        self.assertIn('its sriov_numvfs cannot be read', self.log.output)
