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
"""Fuzzing reference host files: every field of every shipped host.

Each field (one representative per key path and host, list positions
folded) gets wrong types, unhashable and deeply nested values, out-of-
range numbers, NaN, huge strings, path traversal, deletion and an
unknown sibling. A mutated host must be refused with
:class:`ReferenceHostError` or, for an allow-listed reason, accepted and
then materialize inside its directory and nowhere else.
"""

import json
import os
import tempfile
import uuid

import fixtures
import testtools

from gpu_partitions import reference_hosts
from tests.unit.fuzz import outcomes

ESCAPE = 'fuzz-escape-' + uuid.uuid4().hex
# From any depth of a temporary directory this lands in /tmp.
TRAVERSAL = '../' * 24 + 'tmp/' + ESCAPE
HUGE_STRING = 'A' * (2 * 1024 * 1024 + 1)

# Keys whose value may be null, booleans, keys that may be left out, and
# free text that never reaches a path (so traversal text is just text).
NULLABLE = {'driver', 'local_cpulist', 'mig_mode', 'host_vgpu_mode',
            'nvlink', 'virtfns', 'libvirt_nodedevs', 'nvml', 'amdsmi',
            'gpu_instance_profile_id'}
BOOLEAN = {'missing', 'lost'}
OPTIONAL = {'subsystem_vendor', 'subsystem_device', 'local_cpulist',
            'driver', 'iommu_group', 'vf_defaults', 'files', 'mdevs',
            'missing', 'lost', 'numa_node', 'class', 'gpu_instance_id',
            'mdev_uuid', 'virtfns', 'sriov_totalvfs', 'sriov_offset',
            'sriov_stride', 'sriov_vf_device'}
# NVML's vGPU class ('Compute', 'Quadro') is text; a PCI class is hex
# and refused by its pattern before this list is consulted.
FREE_TEXT = {'description', 'market_name', 'driver_version', 'uuid',
             'local_cpulist', '<content>', '<model>', 'name', 'class'}
# Only these parts of a host reach the disk when it is materialized.
ON_DISK = ('pci_devices', 'hostname', 'libvirt_nodedevs')


def _deep(depth=20000):
    value = []
    for _ in range(depth):
        value = [value]
    return value


# Built once: making and freeing 20,000 nested lists is slow.
DEEP = _deep()


def mutations(value):
    """(kind, mutated value) pairs for one field."""
    found = [('null', None),
             ('bool', (not value) if isinstance(value, bool) else True),
             ('unhashable', [[1]] if isinstance(value, dict)
              else {'fuzz': [1]}),
             ('deep', DEEP),
             ('nan', float('nan')),
             ('traversal', TRAVERSAL),
             ('huge_string', HUGE_STRING)]
    if isinstance(value, str):
        found.append(('type', 12345))
    elif isinstance(value, bool):
        found.append(('type', 'true'))
    elif isinstance(value, int):
        found += [('type', str(value)), ('negative', -2),
                  ('huge_int', 2 ** 64)]
    elif isinstance(value, list):
        found.append(('type', {'fuzz': 1}))
    elif isinstance(value, dict):
        found.append(('type', ['fuzz']))
    return [(kind, mutated) for kind, mutated in found
            if type(mutated) is not type(value) or mutated != value]


def _schema_key(path):
    parts = []
    for parent, key in zip((None,) + path, path):
        if isinstance(key, int):
            parts.append('*')
        elif parent == 'files':
            parts.append('<file>')
        elif parent == 'models':
            parts.append('<model>')
        else:
            parts.append(key)
    return tuple(parts)


def fields(data):
    """(path, parent, key) of one representative of every key path."""
    seen = set()
    stack = [((), None, None, data)]
    found = []
    while stack:
        path, parent, key, value = stack.pop()
        schema = _schema_key(path)
        if path and schema not in seen:
            seen.add(schema)
            found.append((path, parent, key))
        if isinstance(value, dict):
            children = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        for child_key, child in children:
            stack.append((path + (child_key,), value, child_key, child))
    return found


def why_accepted(path, kind):
    """The reason a mutation of ``path`` may be accepted, else None."""
    last = _schema_key(path)[-1]
    if kind == 'delete' and last == '<file>':
        return 'a device may lack any sysfs file'
    if last == '<file>':
        last = '<content>'
    if kind == 'null' and last in NULLABLE:
        return 'nullable field'
    if kind == 'bool' and last in BOOLEAN:
        return 'boolean field'
    if kind == 'delete' and last in OPTIONAL:
        return 'optional key'
    if kind == 'traversal' and last in FREE_TEXT:
        return 'free text that never becomes a path'
    if kind == 'negative' and last == 'numa_node':
        return 'numa_node -1 (no NUMA information) is valid; -2 is not'
    return None


def disk_part(path):
    """Which part of a host a mutation at ``path`` changes on disk."""
    if path[0] == 'pci_devices':
        return path[1] if len(path) > 1 else -1
    return -1 if path[0] in ON_DISK else None


class HostFuzzer:
    """Mutates hosts in place (restoring each field) and counts."""

    def __init__(self, root):
        self.outcomes = outcomes.Outcomes('reference host files')
        self.root = root

    def try_data(self, data, what, reason, on_disk=-1):
        try:
            reference_hosts._validate.validate(data, 'fuzz.json')
        except reference_hosts.ReferenceHostError as error:
            if not str(error).startswith('fuzz.json'):
                self.outcomes.traceback('%s: error does not name the file: '
                                        '%s' % (what, error))
                return
            self.outcomes.clear(str(error))
            return
        except Exception as error:  # noqa: B902 counted, then asserted
            self.outcomes.traceback('%s: %s: %.200s' % (
                what, type(error).__name__, error))
            return
        self.use(data, what, reason, on_disk)

    def use(self, data, what, reason, on_disk):
        """Build what the tests build from an accepted host: its fake
        NVML, and its sysfs tree and libvirt XML when the mutation is in
        a part that reaches the disk (``on_disk`` the index of the mutated
        PCI device, -1 for the host's other parts, None for none).
        """
        directory = tempfile.mkdtemp(dir=self.root)
        host = reference_hosts.ReferenceHost(data, 'fuzz.json')
        try:
            host.fake_nvml()
            if on_disk is not None:
                # Devices are written independently: the mutated one
                # alone shows what the mutation does on disk.
                trimmed = dict(data, pci_devices=[
                    data['pci_devices'][on_disk]] if on_disk >= 0 else [])
                reference_hosts.ReferenceHost(
                    trimmed, 'fuzz.json').materialize(directory)
        except reference_hosts.ReferenceHostError as error:
            self.outcomes.clear(str(error))
            return
        except Exception as error:  # noqa: B902 counted, then asserted
            self.outcomes.traceback('%s: materialize: %s: %.200s' % (
                what, type(error).__name__, error))
            return
        finally:
            escaped = os.path.join('/tmp', ESCAPE)
            if os.path.lexists(escaped):
                os.remove(escaped)
                self.outcomes.traceback('%s: wrote %s' % (what, escaped))
        self.outcomes.accepted(what, reason)

    def fuzz_fields(self, data, name):
        for path, parent, key in fields(data):
            original = parent[key]
            what = '%s %s' % (name, '.'.join(map(str, path)))
            for kind, mutated in mutations(original):
                parent[key] = mutated
                try:
                    self.try_data(data, '%s %s' % (what, kind),
                                  why_accepted(path, kind),
                                  disk_part(path))
                finally:
                    parent[key] = original
            if isinstance(parent, dict):
                del parent[key]
                try:
                    self.try_data(data, what + ' delete',
                                  why_accepted(path, 'delete'),
                                  disk_part(path))
                finally:
                    parent[key] = original
            if isinstance(original, dict) and _schema_key(path)[-1] not in (
                    'files', 'models'):
                original['fuzz_extra'] = 1
                try:
                    self.try_data(data, what + ' extra key', None,
                                  disk_part(path))
                finally:
                    del original['fuzz_extra']


class ShippedHostsFuzzTest(testtools.TestCase):
    """One test per host, so that test workers share them out."""

    def fuzz(self, name):
        fuzzer = HostFuzzer(self.useFixture(fixtures.TempDir()).path)
        data = json.loads(json.dumps(reference_hosts.load(name).data))
        fuzzer.fuzz_fields(data, name)
        # Every field gets at least eight mutations.
        fuzzer.outcomes.check(self, minimum_tried=8 * len(fields(data)))
        return fuzzer.outcomes

    def test_awkward(self):
        self.fuzz('awkward')

    def test_hgx_h100(self):
        self.fuzz('hgx-h100')

    def test_hgx_h200(self):
        self.fuzz('hgx-h200')

    def test_mi300x_cpx(self):
        self.fuzz('mi300x-cpx')

    def test_mi300x_spx(self):
        self.fuzz('mi300x-spx')

    def test_pcie_a100(self):
        self.fuzz('pcie-a100')

    def test_pcie_l40s(self):
        self.fuzz('pcie-l40s')

    def test_every_shipped_host_is_fuzzed(self):
        tested = sorted(name[len('test_'):].replace('_', '-')
                        for name in dir(self) if name.startswith('test_')
                        and name != 'test_every_shipped_host_is_fuzzed')
        self.assertEqual(reference_hosts.names(), tested)
