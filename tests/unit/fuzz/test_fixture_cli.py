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
"""Hostile fixture files through ``gpu-partitions inventory --fixture-file``.

Each case is a file on disk given to the real command: refused ones must
exit 2 with one ``error:`` line on stderr and nothing on stdout, never a
traceback; the MIG GPU without VFs is accepted but must not pass as a
healthy host with "0 GPUs" and exit 0.
"""

import json
import os

import fixtures
import testtools

from gpu_partitions import reference_hosts
from tests.unit import cli_output
from tests.unit.fuzz import outcomes
from tests.unit.fuzz import test_reference_hosts as fuzz_hosts

TRAVERSAL = fuzz_hosts.TRAVERSAL


def _host(name):
    return json.loads(json.dumps(reference_hosts.load(name).data))


def _set(name, path, value):
    def mutate():
        data = _host(name)
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data
    return mutate


def _with(name, change):
    def mutate():
        data = _host(name)
        change(data)
        return data
    return mutate


def _two_gpus_one_bus(data):
    devices = data['nvml']['devices']
    devices[1]['pci_bus_id'] = devices[0]['pci_bus_id']


def _profile(data, field, value):
    model = next(iter(data['nvml']['models'].values()))
    model['gpu_instance_profiles'][0][field] = value


def _no_gpu_instance(data):
    data['nvml']['devices'][0]['active_vgpus'][0]['gpu_instance_id'] = 42


def _no_gpu_instance_id(data):
    del data['nvml']['devices'][0]['active_vgpus'][0]['gpu_instance_id']


def _file(index, name, content='x\n'):
    def change(data):
        data['pci_devices'][index].setdefault('files', {})[name] = content
    return change


def _mdev_uuid_twice(data):
    vfs = data['pci_devices'][0]['virtfns']
    vfs[1]['mdevs'][0]['uuid'] = vfs[0]['mdevs'][0]['uuid']


def _ci_size(data):
    instance = data['nvml']['devices'][0]['gpu_instances'][0]
    instance['compute_instances'][0]['size'] = 1


def _amd_bdf_twice(data):
    gpus = data['amdsmi']['gpus']
    gpus[1]['bdf'] = gpus[0]['bdf']


# (what, fixture builder) refused with a clear error.
REFUSED = [
    ('driver traversal', _set('hgx-h100', ('pci_devices', 0, 'driver'),
                              TRAVERSAL)),
    ('driver with a slash', _set('hgx-h100', ('pci_devices', 0, 'driver'),
                                 'nvidia/../../x')),
    ('driver dot-dot', _set('hgx-h100', ('pci_devices', 0, 'driver'),
                            '..')),
    ('mdev uuid traversal', _set(
        'pcie-a100', ('pci_devices', 0, 'virtfns', 0, 'mdevs', 0, 'uuid'),
        TRAVERSAL)),
    ('mdev uuid absolute', _set(
        'pcie-a100', ('pci_devices', 0, 'virtfns', 0, 'mdevs', 0, 'uuid'),
        '/etc/cron.d/x')),
    ('mdev type traversal', _set(
        'pcie-a100', ('pci_devices', 0, 'virtfns', 0, 'mdevs', 0, 'type'),
        '../../../../../tmp')),
    ('mdev uuid twice on the host', _with('pcie-a100', _mdev_uuid_twice)),
    ('file name traversal', _with('mi300x-spx', _file(0, '../../x'))),
    ('file name absolute', _with('mi300x-spx', _file(0, '/tmp/x'))),
    ('file name with ..', _with('mi300x-spx', _file(0, 'a/../../../x'))),
    ('file name empty part', _with('mi300x-spx', _file(0, 'a//b'))),
    ('file name NUL', _with('mi300x-spx', _file(0, 'a\x00b'))),
    ('file replaces the driver link', _with('mi300x-spx',
                                            _file(0, 'driver'))),
    ('file below the driver link', _with('mi300x-spx',
                                         _file(0, 'driver/new_id'))),
    ('file replaces a virtfn link', _with('mi300x-spx',
                                          _file(0, 'virtfn0/x'))),
    ('file below a file', _with('mi300x-spx', _file(
        0, 'spatial_partition_mode/x'))),
    ('file content lone surrogate', _with('mi300x-spx', _file(
        0, 'extra', '\udc80'))),
    ('memory_used above memory_total', _set(
        'hgx-h100', ('nvml', 'devices', 0, 'memory_used'), 85520809985)),
    ('two GPUs on one bus id', _with('hgx-h100', _two_gpus_one_bus)),
    ('profile slices disagree with NVML', _with(
        'hgx-h100', lambda data: _profile(data, 'slice_count', 2))),
    ('profile name disagrees with its size', _with(
        'hgx-h100', lambda data: _profile(data, 'name', 'MIG 7g.10gb'))),
    ('profile placements of two sizes', _with(
        'hgx-h100', lambda data: _profile(data, 'placements',
                                          [[0, 1], [1, 2]]))),
    ('unknown NVML profile index', _with(
        'hgx-h100', lambda data: _profile(data, 'index', 99))),
    ('compute instance size disagrees with its profile', _with(
        'hgx-h100', _ci_size)),
    ('active vGPU on a missing GPU instance', _with(
        'hgx-h200', _no_gpu_instance)),
    ('MIG-backed vGPU without a GPU instance', _with(
        'hgx-h200', _no_gpu_instance_id)),
    ('xgmi_hive_id as a string', _set(
        'mi300x-cpx', ('amdsmi', 'gpus', 0, 'xgmi', 'xgmi_hive_id'),
        '7728127076612325457')),
    ('xgmi_hive_id negative', _set(
        'mi300x-cpx', ('amdsmi', 'gpus', 0, 'xgmi', 'xgmi_hive_id'), -1)),
    ('xgmi_hive_id above 64 bits', _set(
        'mi300x-cpx', ('amdsmi', 'gpus', 0, 'xgmi', 'xgmi_hive_id'),
        2 ** 64)),
    ('two AMD GPUs on one bdf', _with('mi300x-cpx', _amd_bdf_twice)),
    ('hostname with a slash', _set('awkward', ('hostname',), 'a/b')),
    ('hostname with XML', _set('awkward', ('hostname',), '<x>')),
    ('description lone surrogate', _set('awkward', ('description',),
                                        '\ud800')),
    ('unhashable model', _set('awkward', ('nvml', 'devices', 0, 'model'),
                              ['x'])),
    ('unhashable profile id', _set(
        'awkward', ('nvml', 'devices', 0, 'gpu_instances', 0,
                    'profile_id'), {'x': 1})),
    ('unhashable bdf', _set('mi300x-spx', ('amdsmi', 'gpus', 0, 'bdf'),
                            [1])),
    ('string index', _set('awkward', ('nvml', 'devices', 0, 'index'),
                          '0')),
]

# Raw file contents refused before validation.
RAW = [
    ('deeply nested array', b'[' * 200000 + b']' * 200000),
    ('deeply nested object', b'{"a":' * 100000 + b'1' + b'}' * 100000),
    ('not UTF-8', b'{"format": 1, "name": "\xff\xfe"}'),
    ('empty', b''),
    ('not JSON', b'format: 1\n'),
    ('NaN literal', b'NaN'),
    ('a JSON list', b'[]'),
    ('huge integer', b'{"format": ' + b'9' * 5000 + b'}'),
    ('larger than the limit', b' ' * (reference_hosts.MAX_FILE_BYTES + 1)),
]


def _mig_without_vfs(data):
    """hgx-h100 with SR-IOV off: MIG on, GPU instances, no VF at all."""
    for device in data['pci_devices']:
        for key in ('virtfns', 'vf_defaults') + tuple(
                fuzz_hosts.OPTIONAL & {'sriov_totalvfs', 'sriov_offset',
                                       'sriov_stride', 'sriov_vf_device'}):
            device.pop(key, None)


class FixtureFileCliTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.outcomes = outcomes.Outcomes('inventory --fixture-file')

    def write(self, content, name='hostile.json'):
        path = os.path.join(self.tmp, name)
        with open(path, 'wb') as stream:
            stream.write(content)
        return path

    def inventory(self, path, *extra):
        return cli_output.run_cli(['inventory', '--fixture-file', path] +
                                  list(extra))

    def expect_refusal(self, what, path):
        try:
            code, out, err = self.inventory(path)
        except Exception as error:  # noqa: B902 counted, then asserted
            self.outcomes.traceback('%s: %s: %.200s' % (
                what, type(error).__name__, error))
            return
        lines = err.strip().splitlines()
        if code == 0:
            self.outcomes.accepted(what)
        elif code != 2 or out or len(lines) != 1 or \
                os.path.basename(path) not in lines[0]:
            self.outcomes.traceback('%s: exit %d, stderr %r' % (
                what, code, err[:300]))
        else:
            self.outcomes.clear(lines[0])

    def test_hostile_fixtures_are_refused_in_one_line(self):
        for what, build in REFUSED:
            data = build()
            # ensure_ascii keeps lone surrogates as \u escapes, as a
            # hand-written file would have them.
            path = self.write(json.dumps(data).encode())
            self.expect_refusal(what, path)
        for what, content in RAW:
            self.expect_refusal(what, self.write(content))
        self.expect_refusal('a directory', self.tmp)
        self.expect_refusal('no such file',
                            os.path.join(self.tmp, 'hostile.json.missing'))
        self.outcomes.check(self, len(REFUSED) + len(RAW) + 2)

    def test_nothing_written_outside_the_temporary_directory(self):
        escaped = os.path.join('/tmp', fuzz_hosts.ESCAPE)
        for what, build in REFUSED[:7]:
            self.inventory(self.write(json.dumps(build()).encode()))
            self.assertFalse(os.path.lexists(escaped), what)

    def test_mig_gpu_without_vfs_is_not_a_silent_success(self):
        data = _host('hgx-h100')
        _mig_without_vfs(data)
        code, out, err = self.inventory(self.write(json.dumps(data).encode()))
        self.assertIn('hgx-h100-01: 0 GPUs, 0 providers', out)
        self.assertEqual(1, code)
        self.assertIn('8 of 8 GPUs report no provider', err)

    def test_some_silent_gpus_are_named_but_not_an_error(self):
        code, out, err = self.inventory(os.path.join(
            reference_hosts.HOSTS_DIR, 'awkward.json'))
        self.assertEqual(0, code)
        self.assertIn('2 of 3 GPUs report no provider (0000:01:00.0, '
                      '0000:02:00.0)', err)
