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
"""``gpu-partitions inventory --record``: each shipped host, materialised
(fake pynvml, sysfs tree, fake amdsmi, libvirt's test driver), recorded
and loaded again gives the same report through the real drivers and the
same sysfs tree; the recording changes nothing and survives faults.
"""

import contextlib
import copy
import io
import json
import os
import re
import sys
import tempfile
from unittest import mock

import fixtures
import testtools

from cyborg_gpu_drivers.adapters import read_only
from gpu_partitions import cli
from gpu_partitions.commands import inventory
from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import _validate
from gpu_partitions.reference_hosts import fake_amdsmi
from gpu_partitions.reference_hosts import record
from tests.unit.cyborg_gpu_drivers import faults


def forget_unrecordable(name, data):
    """Drop from a host's data what --record cannot read back (the
    reference-hosts documentation lists it): a lost GPU's identity and
    tables (NVML answers nothing about it), the MIG profile table of a
    model none of whose GPUs has MIG enabled (NVML answers NotSupported),
    AMD SMI's memory partition capabilities (no call of the fake AMD SMI
    returns them).
    """
    nvml = data['nvml']
    if nvml is not None:
        for device in nvml['devices']:
            if device.get('lost'):
                # Kept as a placeholder; only its place can be checked.
                for key in list(device):
                    if key not in ('index', 'pci_bus_id', 'lost'):
                        del device[key]
        for model, tables in nvml['models'].items():
            if not any(device.get('model') == model and device['mig_mode']
                       and device['mig_mode'][0] == 1
                       for device in nvml['devices']):
                tables['gpu_instance_profiles'] = []
    for gpu in (data['amdsmi'] or {}).get('gpus', ()):
        del gpu['memory_partition_caps']


def record_env(env, **kwargs):
    return record.record(
        nvml_module=kwargs.pop('nvml', env.nvml), sysfs_root=env.sysfs_root,
        libvirt_uri=env.libvirt_uri,
        amdsmi_module=kwargs.pop('amdsmi',
                                 fake_amdsmi.module_for(env.amdsmi)),
        hostname=env.hostname, **kwargs)


def report(env):
    """The inventory's providers of the real drivers over ``env``."""
    return inventory.providers(fixture_drivers.discover_all(
        env, read_only=True))


def tree(root):
    """``{relative path: content or '-> target'}`` of a sysfs tree."""
    found = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = os.path.join(directory, name)
            key = os.path.relpath(path, root)
            if os.path.islink(path):
                found[key] = '-> ' + os.readlink(path)
            elif os.path.isfile(path):
                with open(path) as stream:
                    found[key] = stream.read()
    return found


def snapshot(root):
    """Every entry with its content and modification time."""
    state = {}
    for key, content in tree(root).items():
        state[key] = (content, os.lstat(os.path.join(root, key)).st_mtime_ns)
    return state


def nvml_view(section):
    """The NVML section as the drivers see it: model keys are labels,
    tables and GPU instances unordered.
    """
    section = copy.deepcopy(section)
    models = section.pop('models')
    for device in section['devices']:
        tables = models.get(device.pop('model', None))
        if tables is not None:
            device['tables'] = json.dumps({
                'profiles': sorted(tables['gpu_instance_profiles'],
                                   key=lambda p: p['index']),
                'types': sorted(tables['vgpu_types'],
                                key=lambda t: t['id'])}, sort_keys=True)
        device.get('gpu_instances', []).sort(key=lambda gi: gi['id'])
    return section


class RoundTripTest(testtools.TestCase):
    """Every shipped host through --record and back."""

    def _materialize(self, host):
        return host.materialize(self.useFixture(fixtures.TempDir()).path)

    def _round_trip(self, name, redact=False):
        original = reference_hosts.load(name)
        env = self._materialize(original)
        document, notes = record_env(env, redact=redact)
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'recorded.json')
        with open(path, 'w') as stream:
            json.dump(document, stream)
        recorded = reference_hosts.load_file(path)  # validates
        return original, env, recorded, self._materialize(recorded), notes

    def test_every_host_gives_the_same_report_tree_and_views(self):
        for name in reference_hosts.names():
            original, env, recorded, again, notes = self._round_trip(name)
            self.assertEqual(report(env), report(again), name)
            self.assertEqual(tree(env.sysfs_root), tree(again.sysfs_root),
                             name)
            before = copy.deepcopy(original.data)
            after = copy.deepcopy(recorded.data)
            for data in (before, after):
                forget_unrecordable(name, data)
            if before['nvml'] is None:
                self.assertIsNone(after['nvml'], name)
            else:
                self.assertEqual(nvml_view(before['nvml']),
                                 nvml_view(after['nvml']), name)
            self.assertEqual(before['amdsmi'], after['amdsmi'], name)
            self.assertEqual(before['libvirt_nodedevs'] is None,
                             after['libvirt_nodedevs'] is None, name)
            if name == 'awkward':
                self.assertIn('GPU 1 is lost', '; '.join(notes))

    def test_a_partial_nvlink_mesh_is_recorded_exactly(self):
        # Peers 0-1, 1-2, 0-2 (a triangle) and 2-3, not 0-3 or 1-3: the
        # recording lists the maximal cliques, keeping exactly these pairs.
        data = copy.deepcopy(reference_hosts.load('hgx-h200').data)
        data['nvml']['nvlink_cliques'] = [[0, 1, 2], [2, 3], [5, 6]]
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'partial.json')
        with open(path, 'w') as stream:
            json.dump(data, stream)
        env = self._materialize(reference_hosts.load_file(path))
        document, notes = record_env(env)
        self.assertEqual([[0, 1, 2], [2, 3], [5, 6]],
                         document['nvml']['nvlink_cliques'])
        self.assertEqual([[0, 1, 2], [2, 3]],
                         record._maximal_cliques(
                             {0: {1, 2}, 1: {0, 2}, 2: {0, 1, 3}, 3: {2}}))

    def test_redacted_recording_gives_the_same_report(self):
        original, env, recorded, again, _notes = self._round_trip(
            'pcie-a100', redact=True)
        self.assertEqual('recorded-host', recorded.hostname)
        text = json.dumps(recorded.data)
        uuids = set(re.findall(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-'
                               r'[0-9a-f]{4}-[0-9a-f]{12}',
                               json.dumps(original.data)))
        self.assertTrue(uuids)
        for value in uuids:
            self.assertNotIn(value, text)
            self.assertNotIn(value.replace('-', '_'), text)
        self.assertNotIn(original.hostname, text)
        renamed = [dict(entry, name=entry['name'].replace(
            original.hostname, 'recorded-host')) for entry in report(env)]
        self.assertEqual(renamed, report(again))

    def test_the_command_records_a_fixture(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'host.json')
        err = io.StringIO()
        with contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(['inventory', '--fixture', 'pcie-l40s',
                             '--record', path])
        self.assertEqual(0, code, err.getvalue())
        self.assertIn('4 NVIDIA GPUs (NVML)', err.getvalue())
        self.assertIn('identifiers redacted', err.getvalue())
        self.assertEqual('recorded-host', reference_hosts.load_file(
            path).hostname)

    def test_an_unwritable_file_is_a_usage_error(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(['inventory', '--fixture', 'awkward',
                             '--record', '/nonexistent/dir/host.json'])
        self.assertEqual(2, code)
        self.assertIn('cannot write /nonexistent/dir/host.json',
                      err.getvalue())


class ReadOnlyTest(testtools.TestCase):
    """Recording never changes a device, and cannot."""

    def test_only_reads_are_called_and_nothing_changes(self):
        for name in ('hgx-h200', 'pcie-a100', 'mi300x-cpx', 'awkward'):
            host = reference_hosts.load(name)
            env = host.materialize(self.useFixture(fixtures.TempDir()).path)
            amdsmi = fake_amdsmi.module_for(env.amdsmi)
            before = snapshot(env.sysfs_root)
            nvml_before = copy.deepcopy(host.data['nvml'])
            refused = AssertionError('privsep')
            with mock.patch('cyborg_gpu_drivers.privsep.vgpu_type_pctxt.'
                            'start', side_effect=refused), \
                    mock.patch('cyborg_gpu_drivers.privsep.mig_layout_pctxt.'
                               'start', side_effect=refused):
                record_env(env, amdsmi=amdsmi)
            self.assertLessEqual(set(env.nvml.calls),
                                 set(record.NVML_READERS), name)
            if amdsmi is not None:
                self.assertLessEqual(set(amdsmi.calls),
                                     set(record.AMDSMI_READERS), name)
                self.assertIn('amdsmi_get_num_vf', amdsmi.calls)
            else:
                self.assertGreater(env.nvml.total_calls, 0)
            self.assertEqual(before, snapshot(env.sysfs_root), name)
            self.assertEqual(nvml_before, host.data['nvml'], name)

    def test_writes_are_refused_by_the_views(self):
        nvml = read_only.ReadOnlyModule(
            reference_hosts.load('hgx-h100').fake_nvml(), 'nvml',
            record.NVML_READERS)
        for name in ('nvmlDeviceSetMigMode',
                     'nvmlDeviceCreateGpuInstanceWithPlacement',
                     'nvmlGpuInstanceCreateComputeInstance',
                     'nvmlGpuInstanceDestroy', 'nvmlComputeInstanceDestroy',
                     'nvmlDeviceSetVgpuHeterogeneousMode'):
            self.assertRaises(read_only.MutationRefused, getattr, nvml,
                              name)
        # Constants, structures and errors still pass.
        self.assertEqual(0, nvml.NVML_SUCCESS)
        self.assertTrue(issubclass(nvml.NVMLError_NotSupported,
                                   nvml.NVMLError))
        smi = read_only.ReadOnlyModule(fake_amdsmi.FakeAmdsmi({}), 'amdsmi',
                                       record.AMDSMI_READERS)
        for name in ('amdsmi_set_gpu_compute_partition',
                     'amdsmi_set_gpu_memory_partition',
                     'amdsmi_set_num_vf'):
            self.assertRaises(read_only.MutationRefused, getattr, smi, name)
        sysfs = read_only.ReadOnlySysfs(tempfile.gettempdir())
        self.assertRaises(read_only.MutationRefused, sysfs.write,
                          '0000:1b:00.4', 'nvidia/current_vgpu_type', 1016)

    def test_the_readers_list_only_reads(self):
        for name in record.NVML_READERS:
            self.assertTrue(name in ('nvmlInit', 'nvmlShutdown') or
                            re.match(r'^nvml[A-Za-z]*Get', name), name)
        for name in record.AMDSMI_READERS:
            self.assertTrue(name in ('amdsmi_init', 'amdsmi_shut_down') or
                            name.startswith('amdsmi_get_'), name)


class FaultTest(testtools.TestCase):
    """A failing GPU is a note in the file, never a traceback."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.directory = tempfile.mkdtemp(prefix='record-faults-')
        cls.host = reference_hosts.load('awkward')
        cls.env = cls.host.materialize(cls.directory)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.directory, True)
        super().tearDownClass()

    def test_every_read_failing_on_one_gpu(self):
        injected = 0
        for gpu_index in (0, 2):  # a MIG GPU, a vGPU GPU with a guest
            for function in record.NVML_READERS:
                for error_name, error in faults.ERRORS.items():
                    nvml = faults.FaultyNvml(self.host.data['nvml'],
                                             function, error, gpu_index)
                    where = '%s %s on GPU %d' % (function, error_name,
                                                 gpu_index)
                    document, notes = record_env(self.env, nvml=nvml)
                    _validate.validate(document, where)
                    injected += nvml.injected
                    if not nvml.injected or error_name == 'NotSupported':
                        continue
                    self.assertTrue(notes, where)
                    self.assertIn('Notes: ', document['description'])
                    self.assertEqual(3, len(document['nvml']['devices']),
                                     where)
        self.assertGreater(injected, 300)

    def test_host_wide_nvml_failure_keeps_the_rest(self):
        nvml = faults.FaultyNvml(self.host.data['nvml'],
                                 'nvmlDeviceGetCount',
                                 faults.ERRORS['Unknown'])
        document, notes = record_env(self.env, nvml=nvml)
        _validate.validate(document, 'count fails')
        self.assertIsNone(document['nvml'])
        self.assertEqual(3, len(document['pci_devices']))
        self.assertIn('NVML not recorded', notes[-1])

    def test_absent_libraries_are_skipped_with_a_note(self):
        env = reference_hosts.load('pcie-a100').materialize(
            self.useFixture(fixtures.TempDir()).path)

        def no_pynvml():
            raise ImportError('No module named pynvml')

        with mock.patch.object(record, '_import_pynvml', no_pynvml), \
                mock.patch.dict(sys.modules, {'libvirt': None}):
            document, notes = record.record(
                sysfs_root=env.sysfs_root, libvirt_uri=env.libvirt_uri,
                hostname='h')
        _validate.validate(document, 'no libraries')
        self.assertIsNone(document['nvml'])
        self.assertIsNone(document['libvirt_nodedevs'])
        self.assertEqual(2, len(document['pci_devices']))
        text = '; '.join(notes)
        self.assertIn('NVML not recorded: pynvml (nvidia-ml-py) is not '
                      'installed', text)
        self.assertIn('libvirt not recorded: libvirt-python is not '
                      'installed', text)

    def test_absent_amdsmi_is_skipped_with_a_note(self):
        env = reference_hosts.load('mi300x-spx').materialize(
            self.useFixture(fixtures.TempDir()).path)
        with mock.patch('cyborg_gpu_drivers.adapters.amdsmi.import_amdsmi',
                        return_value=(None, 'KeyError: libamd_smi.so')):
            document, notes = record_env(env, amdsmi=None)
        _validate.validate(document, 'no amdsmi')
        self.assertIsNone(document['amdsmi'])
        self.assertIn('AMD SMI not recorded: amdsmi cannot be imported '
                      '(KeyError: libamd_smi.so)', notes)
        # The AMD driver still reads partitions from the recorded sysfs.
        self.assertEqual(8, len(document['pci_devices']))

    def test_a_failing_amd_gpu_is_left_to_sysfs(self):
        env = reference_hosts.load('mi300x-cpx').materialize(
            self.useFixture(fixtures.TempDir()).path)
        amdsmi = fake_amdsmi.module_for(env.amdsmi)
        original = amdsmi.amdsmi_get_num_vf

        def num_vf(handle):
            if handle._gpu['bdf'] == env.amdsmi['gpus'][3]['bdf']:
                raise fake_amdsmi.AmdSmiLibraryException('busy')
            return original(handle)

        amdsmi.amdsmi_get_num_vf = num_vf
        document, notes = record_env(env, amdsmi=amdsmi)
        _validate.validate(document, 'one AMD GPU fails')
        self.assertEqual(7, len(document['amdsmi']['gpus']))
        self.assertTrue(any('AmdSmiLibraryException: busy' in note
                            for note in notes))
