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
"""Loading and validating reference host files."""

import copy
import json
import os

import fixtures
import testtools

from gpu_partitions import reference_hosts

SHIPPED = ('awkward', 'hgx-h100', 'hgx-h200', 'mi300x-cpx', 'mi300x-spx',
           'pcie-a100', 'pcie-l40s')


class TestLoad(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def write(self, data, name='broken.json'):
        path = os.path.join(self.tmp, name)
        with open(path, 'w') as stream:
            if isinstance(data, str):
                stream.write(data)
            else:
                json.dump(data, stream)
        return path

    def shipped_data(self, name):
        return copy.deepcopy(reference_hosts.load(name).data)

    def assertRefused(self, data, *fragments):
        path = self.write(data)
        error = self.assertRaises(reference_hosts.ReferenceHostError,
                                  reference_hosts.load_file, path)
        self.assertTrue(str(error).startswith('broken.json: '), str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        return error

    def test_names_lists_every_shipped_host(self):
        self.assertEqual(list(SHIPPED), reference_hosts.names())

    def test_every_host_loads_by_name(self):
        for name in SHIPPED:
            host = reference_hosts.load(name)
            self.assertEqual(name, host.name)
            self.assertTrue(host.hostname)
            self.assertTrue(host.description)
            self.assertEqual(1, host.data['format'])

    def test_every_host_loads_from_a_file_path(self):
        for name in SHIPPED:
            path = self.write(self.shipped_data(name), 'copy-of-%s.json'
                              % name)
            host = reference_hosts.load_file(path)
            self.assertEqual(name, host.name)
            self.assertEqual(path, host.source)
            self.assertEqual(reference_hosts.load(name).data, host.data)

    def test_unknown_name_lists_known_hosts(self):
        error = self.assertRaises(reference_hosts.ReferenceHostError,
                                  reference_hosts.load, 'dgx-b300')
        self.assertIn('dgx-b300', str(error))
        self.assertIn('hgx-h100', str(error))

    def test_missing_file(self):
        error = self.assertRaises(reference_hosts.ReferenceHostError,
                                  reference_hosts.load_file,
                                  os.path.join(self.tmp, 'nope.json'))
        self.assertIn('nope.json: cannot read', str(error))

    def test_not_json(self):
        self.assertRefused('{"format": 1,', 'not valid JSON')

    def test_missing_top_level_key(self):
        data = self.shipped_data('pcie-l40s')
        del data['hostname']
        self.assertRefused(data, 'missing key(s): hostname')

    def test_unknown_key_is_refused(self):
        data = self.shipped_data('pcie-l40s')
        data['pci_devices'][1]['numa'] = 0
        self.assertRefused(data, 'pci_devices[1]: unknown key(s): numa')

    def test_wrong_format_version(self):
        data = self.shipped_data('awkward')
        data['format'] = 2
        self.assertRefused(data, 'format: unsupported version 2')

    def test_bad_vf_address_names_the_key_path(self):
        data = self.shipped_data('hgx-h100')
        data['pci_devices'][4]['virtfns'][3]['address'] = '1b:00.7'
        self.assertRefused(data, 'pci_devices[4].virtfns[3].address',
                           "'1b:00.7' is not like")

    def test_nvml_bus_id_must_be_nvml_form(self):
        data = self.shipped_data('hgx-h100')
        data['nvml']['devices'][2]['pci_bus_id'] = '0000:52:00.0'
        self.assertRefused(data, 'nvml.devices[2].pci_bus_id')

    def test_nvml_device_needs_its_pci_device(self):
        data = self.shipped_data('pcie-l40s')
        data['nvml']['devices'][0]['pci_bus_id'] = '00000000:18:00.0'
        self.assertRefused(data, 'nvml.devices[0].pci_bus_id',
                           'no pci_devices entry 0000:18:00.0')

    def test_overlapping_gpu_instances(self):
        data = self.shipped_data('hgx-h100')
        # GPU 1 holds 3g.40gb at 0 and at 4; move the second onto the first.
        data['nvml']['devices'][1]['gpu_instances'][1]['start'] = 0
        self.assertRefused(data, 'nvml.devices[1].gpu_instances[1]',
                           'overlaps GPU instance')

    def test_placement_outside_the_profile_table(self):
        data = self.shipped_data('hgx-h100')
        # 4g.40gb may only start at 0.
        data['nvml']['devices'][2]['gpu_instances'][0].update(start=4)
        data['nvml']['devices'][2]['gpu_instances'][1].update(start=0)
        self.assertRefused(data, 'nvml.devices[2].gpu_instances[',
                           'is not one of')

    def test_mig_mode_values(self):
        data = self.shipped_data('awkward')
        data['nvml']['devices'][2]['mig_mode'] = [0, 2]
        self.assertRefused(data, 'nvml.devices[2].mig_mode')

    def test_gpu_instances_need_mig_enabled(self):
        data = self.shipped_data('awkward')
        data['nvml']['devices'][0]['mig_mode'] = [0, 1]
        self.assertRefused(data, 'nvml.devices[0].gpu_instances',
                           'need MIG enabled')

    def test_creatable_must_be_supported(self):
        data = self.shipped_data('pcie-l40s')
        device = data['nvml']['devices'][2]
        device['supported_vgpus'] = device['supported_vgpus'][1:]
        self.assertRefused(data, 'nvml.devices[2].creatable_vgpus')

    def test_clique_member_out_of_range(self):
        data = self.shipped_data('hgx-h200')
        data['nvml']['nvlink_cliques'][0].append(8)
        self.assertRefused(data, 'nvml.nvlink_cliques[0][8]',
                           'no device with index 8')

    def test_partial_mesh_lists_a_gpu_in_several_cliques(self):
        data = self.shipped_data('hgx-h200')
        data['nvml']['nvlink_cliques'] = [[0, 1], [1, 2], [4, 5, 6, 7]]
        host = reference_hosts.load_file(self.write(data))
        self.assertEqual([[0, 1], [1, 2], [4, 5, 6, 7]],
                         host.data['nvml']['nvlink_cliques'])

    def test_clique_needs_two_devices(self):
        data = self.shipped_data('hgx-h200')
        data['nvml']['nvlink_cliques'] = [[0, 1], [3]]
        self.assertRefused(data, 'nvml.nvlink_cliques[1]',
                           'at least two devices')

    def test_clique_lists_a_device_once(self):
        data = self.shipped_data('hgx-h200')
        data['nvml']['nvlink_cliques'] = [[0, 1, 0]]
        self.assertRefused(data, 'nvml.nvlink_cliques[0][2]',
                           'device 0 is listed twice')

    def test_clique_listed_twice(self):
        data = self.shipped_data('hgx-h200')
        data['nvml']['nvlink_cliques'] = [[0, 1], [2, 3], [1, 0]]
        self.assertRefused(data, 'nvml.nvlink_cliques[2]',
                           'same devices as nvml.nvlink_cliques[0]')

    def test_mdev_type_must_exist_on_its_parent(self):
        data = self.shipped_data('pcie-a100')
        vf = data['pci_devices'][0]['virtfns'][0]
        vf['mdevs'][0]['type'] = 'nvidia-999'
        self.assertRefused(data, 'pci_devices[0].virtfns[0].mdevs[0].type')

    def test_nodedev_must_be_xml(self):
        data = self.shipped_data('pcie-a100')
        data['libvirt_nodedevs'][3] = '<device><name>x</name>'
        self.assertRefused(data, 'libvirt_nodedevs[3]', 'not well-formed')

    def test_amdsmi_vf_count_matches(self):
        data = self.shipped_data('mi300x-cpx')
        del data['amdsmi']['gpus'][5]['vf_partitions'][7]
        self.assertRefused(data, 'amdsmi.gpus[5].vf_partitions',
                           'num_vf_enabled is 8')

    def test_amd_memory_mode_gim_does_not_support(self):
        data = self.shipped_data('mi300x-spx')
        data['amdsmi']['gpus'][2]['memory_partition'] = 'NPS2'
        self.assertRefused(data, 'amdsmi.gpus[2].compute_partition',
                           '1 VFs in SPX/NPS2 is not a partitioning GIM '
                           'supports on AMD Instinct MI300X')

    def test_amd_vf_count_gim_does_not_support(self):
        data = self.shipped_data('mi300x-spx')
        data['amdsmi'] = None
        pf = data['pci_devices'][0]
        pf['device'] = '0x75a3'
        pf['files']['spatial_partition_mode'] = 'TPX\n'
        pf['virtfns'] = [dict(pf['virtfns'][0], address='0000:05:02.%d' % n,
                              iommu_group=900 + n) for n in range(4)]
        self.assertRefused(data,
                           'pci_devices[0].files.spatial_partition_mode',
                           '4 VFs in TPX/NPS1 is not a partitioning GIM '
                           'supports on AMD Instinct MI355X')

    def test_load_checks_name_against_file_name(self):
        data = self.shipped_data('awkward')
        data['name'] = 'odd'
        path = self.write(data, 'awkward.json')
        # load_file accepts any file name ...
        self.assertEqual('odd', reference_hosts.load_file(path).name)
        # ... while a shipped host must be named after its file.
        self.useFixture(fixtures.MonkeyPatch(
            'gpu_partitions.reference_hosts.HOSTS_DIR', self.tmp))
        error = self.assertRaises(reference_hosts.ReferenceHostError,
                                  reference_hosts.load, 'awkward')
        self.assertIn("name: is 'odd' but the file is awkward.json",
                      str(error))


class TestHostConsistency(testtools.TestCase):
    """Facts the drivers rely on that the schema alone does not check."""

    def vf_files(self, pf):
        defaults = pf.get('vf_defaults', {}).get('files', {})
        for vf in pf['virtfns']:
            files = dict(defaults)
            files.update(vf.get('files', {}))
            yield vf, files

    def test_hgx_every_gpu_instance_is_held_by_one_vf(self):
        for name in ('hgx-h100', 'hgx-h200'):
            data = reference_hosts.load(name).data
            model = next(iter(data['nvml']['models'].values()))
            mig_type = {t['gpu_instance_profile_id']: t['id']
                        for t in model['vgpu_types']
                        if t['gpu_instance_profile_id'] is not None}
            pfs = {pf['address']: pf for pf in data['pci_devices']
                   if pf['device'] in ('0x2330', '0x2335')}
            self.assertEqual(8, len(pfs))
            for device in data['nvml']['devices']:
                bus = device['pci_bus_id']
                pf = pfs['0000:' + bus[9:].lower()]
                held = [int(files['nvidia/current_vgpu_type'])
                        for _vf, files in self.vf_files(pf)]
                wanted = sorted(mig_type[gi['profile_id']]
                                for gi in device['gpu_instances'])
                self.assertEqual(wanted, sorted(t for t in held if t))
                self.assertEqual(32 - len(wanted), held.count(0))

    def test_active_vgpus_sit_on_vfs_holding_their_type(self):
        for name in ('hgx-h200', 'pcie-l40s', 'awkward'):
            data = reference_hosts.load(name).data
            held = {}
            for pf in data['pci_devices']:
                for vf, files in self.vf_files(pf) if 'virtfns' in pf else ():
                    held[vf['address']] = files.get(
                        'nvidia/current_vgpu_type')
            actives = [active for device in data['nvml']['devices']
                       for active in device['active_vgpus']]
            self.assertTrue(actives, name)
            for active in actives:
                address = '0000:' + active['vf_pci_bus_id'][9:].lower()
                self.assertEqual('%d\n' % active['type_id'], held[address])

    def test_mi300x_vf_counts(self):
        for name, per_gpu, mode in (('mi300x-spx', 1, 'SPX\n'),
                                    ('mi300x-cpx', 8, 'CPX\n')):
            data = reference_hosts.load(name).data
            self.assertIsNone(data['nvml'])
            pfs = data['pci_devices']
            self.assertEqual(8, len(pfs))
            for pf in pfs:
                self.assertEqual(('0x1002', '0x74a1', 'gim'),
                                 (pf['vendor'], pf['device'], pf['driver']))
                self.assertEqual(per_gpu, len(pf['virtfns']))
                self.assertEqual(mode, pf['files']['spatial_partition_mode'])
            hives = {gpu['xgmi']['xgmi_hive_id']
                     for gpu in data['amdsmi']['gpus']}
            self.assertEqual(1, len(hives))
