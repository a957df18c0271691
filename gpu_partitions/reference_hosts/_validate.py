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
"""Validation of reference host files (format version 1).

Every error names the file and the JSON key path of the offending value,
so a hand-edited host can be fixed without reading this code.
"""

import re
import reprlib
import xml.etree.ElementTree as ElementTree

FORMAT_VERSION = 1

SYSFS_ADDRESS = re.compile(r'^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$')
NVML_BUS_ID = re.compile(r'^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$')
HEX_ID = re.compile(r'^0x[0-9a-fA-F]{1,16}$')
HOST_NAME = re.compile(r'^[a-z0-9][a-z0-9-]{0,62}$')
# A hostname as Cyborg and Placement name providers after it (RFC 1123).
HOSTNAME = re.compile(r'^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}'
                      r'[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}'
                      r'[A-Za-z0-9])?)*$')
# One directory entry a fixture value may name: materialize joins these
# into paths, so no separator, no "." or "..", nothing a shell would see.
NAME_COMPONENT = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}$')
MDEV_UUID = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                       r'[0-9a-f]{12}$')
MIG_PROFILE_NAME = re.compile(r'^MIG (\d+)g\.')
MIG_MODES = (0, 1)
PARTITION_MODES = ('SPX', 'DPX', 'TPX', 'QPX', 'CPX')
MEMORY_MODES = ('NPS1', 'NPS2', 'NPS4', 'NPS8')

# NVML's GPU instance profile indexes (NVML_GPU_INSTANCE_PROFILE_<n>_SLICE
# and their _REV1/_REV2/_GFX/_NO_ME/_ALL_ME variants, nvml.h) -> compute
# slices. The profile ids differ between GPU families, the indexes do not.
GPU_INSTANCE_PROFILE_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6,
                               7: 1, 8: 2, 9: 1, 10: 1, 11: 2, 12: 4,
                               13: 1, 14: 2, 15: 1, 16: 2}
# Compute instance profile index (= id) -> compute slices
# (NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE .. _6_SLICE).
COMPUTE_INSTANCE_PROFILE_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8,
                                   6: 6}
# NVML_GPU_VIRTUALIZATION_MODE_NONE .. _HOST_VSGA.
VIRTUALIZATION_MODES = (0, 1, 2, 3, 4)

UINT32_MAX = 2 ** 32 - 1
UINT64_MAX = 2 ** 64 - 1
# Longest free text (description, names) and longest file or XML text.
MAX_TEXT = 4096
MAX_CONTENT = 1024 * 1024

_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlevel = 2


def show(value):
    """A short repr of any JSON value, safe for huge or deep values."""
    return _SHOW.repr(value)


class ReferenceHostError(ValueError):
    """A reference host file is missing, unreadable or malformed."""

    def __init__(self, source, key_path, message):
        self.source = source
        self.key_path = key_path
        where = source if not key_path else '%s: %s' % (source, key_path)
        super().__init__('%s: %s' % (where, message))


def nvml_bus_id_to_address(bus_id):
    """``00000000:1B:00.0`` (NVML) -> ``0000:1b:00.0`` (sysfs)."""
    domain, bus, devfn = bus_id.split(':')
    return '%04x:%s:%s' % (int(domain, 16), bus.lower(), devfn.lower())


class _Checker:
    """Type, range and name checks; ``at`` is the last key path checked."""

    def __init__(self, source):
        self.source = source
        self.at = ''

    def fail(self, path, message):
        raise ReferenceHostError(self.source, path, message)

    def keys(self, value, path, required, optional=()):
        self.at = path
        if not isinstance(value, dict):
            self.fail(path, 'expected an object, got %s'
                      % type(value).__name__)
        missing = [key for key in required if key not in value]
        if missing:
            self.fail(path, 'missing key(s): %s' % ', '.join(missing))
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            shown = [key if len(key) <= 60 else key[:57] + '...'
                     for key in unknown[:10]]
            self.fail(path, 'unknown key(s): %s%s (allowed: %s)' % (
                ', '.join(shown), ', ...' if len(unknown) > 10 else '',
                ', '.join(sorted(set(required) | set(optional)))))

    def of_type(self, value, path, kind, nullable=False):
        self.at = path
        if value is None and nullable:
            return
        # bool is an int in Python, never a valid count or id here.
        if isinstance(value, bool) and kind is not bool:
            self.fail(path, 'expected %s, got a boolean' % kind.__name__)
        if not isinstance(value, kind):
            self.fail(path, 'expected %s%s, got %s' % (
                kind.__name__, ' or null' if nullable else '',
                type(value).__name__))

    def text(self, value, path, limit=MAX_TEXT, nullable=False):
        self.of_type(value, path, str, nullable)
        if value is None:
            return
        if len(value) > limit:
            self.fail(path, 'longer than %d characters (%d)'
                      % (limit, len(value)))
        try:
            value.encode('utf-8')
        except UnicodeEncodeError:
            # JSON can spell lone surrogates that no file can hold.
            self.fail(path, 'not valid Unicode text (a lone surrogate)')

    def matches(self, value, path, pattern, example):
        self.text(value, path)
        if not pattern.match(value):
            self.fail(path, '%s is not like %r' % (show(value), example))

    def name(self, value, path, nullable=False):
        """A value that becomes one path component on disk."""
        self.of_type(value, path, str, nullable)
        if value is not None and not NAME_COMPONENT.match(value):
            self.fail(path, '%s is not a plain file name (letters, digits '
                      'and _.:+-, at most 128, not starting with a dot)'
                      % show(value))

    def int_in(self, value, path, minimum, maximum):
        self.of_type(value, path, int)
        if not minimum <= value <= maximum:
            self.fail(path, 'must be between %d and %d, got %d'
                      % (minimum, maximum, value))

    def int_at_least(self, value, path, minimum, maximum=UINT32_MAX):
        self.int_in(value, path, minimum, maximum)

    def one_of(self, value, path, allowed):
        self.at = path
        if isinstance(value, bool) or not isinstance(
                value, (str, int, type(None))) or value not in allowed:
            self.fail(path, '%s is not one of %s' % (
                show(value), ', '.join(repr(item) for item in allowed)))

    def list_of(self, value, path, nullable=False):
        self.of_type(value, path, list, nullable)
        return [] if value is None else list(enumerate(value))

    def pair_of_ints(self, value, path, what, minimum=0):
        self.at = path
        if (not isinstance(value, list) or len(value) != 2 or
                not all(type(part) is int and minimum <= part <= UINT32_MAX
                        for part in value)):
            self.fail(path, 'expected %s (two integers >= %d), got %s'
                      % (what, minimum, show(value)))


def validate(data, source):
    """Raise :class:`ReferenceHostError` unless ``data`` is a valid host.

    Every value is checked for type and range before it is used, so
    malformed input gets an error naming the key; should a check still
    miss a shape, the error it causes is reported the same way, at the
    last key checked, never as a traceback.
    """
    check = _Checker(source)
    try:
        _validate(check, data)
    except ReferenceHostError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError,
            OverflowError, RecursionError) as error:
        check.fail(check.at, 'malformed value (%s: %s)'
                   % (type(error).__name__, show(str(error))))


def _validate(check, data):
    check.keys(data, '', ('format', 'name', 'description', 'hostname',
                          'nvml', 'pci_devices', 'libvirt_nodedevs',
                          'amdsmi'))
    check.of_type(data['format'], 'format', int)
    if data['format'] != FORMAT_VERSION:
        check.fail('format', 'unsupported version %s (this library reads '
                   'version %d)' % (show(data['format']), FORMAT_VERSION))
    check.matches(data['name'], 'name', HOST_NAME, 'hgx-h100')
    check.text(data['description'], 'description')
    check.matches(data['hostname'], 'hostname', HOSTNAME, 'hgx-h100-01')
    addresses = _check_pci_devices(check, data['pci_devices'])
    if data['nvml'] is not None:
        _check_nvml(check, data['nvml'], addresses)
    _check_nodedevs(check, data['libvirt_nodedevs'])
    if data['amdsmi'] is not None:
        _check_amdsmi(check, data['amdsmi'], addresses)
    _check_amd_partitions(check, data)


# -- pci_devices -------------------------------------------------------------

_PF_REQUIRED = ('address', 'vendor', 'device', 'class', 'numa_node')
_PF_OPTIONAL = ('subsystem_vendor', 'subsystem_device', 'local_cpulist',
                'driver', 'iommu_group', 'sriov_totalvfs', 'sriov_offset',
                'sriov_stride', 'sriov_vf_device', 'vf_defaults', 'virtfns',
                'files', 'mdevs')
_VF_OPTIONAL = ('iommu_group', 'driver', 'numa_node', 'files', 'mdevs',
                'missing')
_SRIOV_KEYS = ('sriov_totalvfs', 'sriov_offset', 'sriov_stride',
               'sriov_vf_device')


# Entries materialize writes in a device directory itself; a fixture's
# ``files`` must not replace them.
_GENERATED_ENTRIES = frozenset((
    'vendor', 'device', 'class', 'subsystem_vendor', 'subsystem_device',
    'numa_node', 'local_cpulist', 'driver', 'iommu_group', 'physfn',
    'sriov_numvfs', 'sriov_totalvfs', 'sriov_offset', 'sriov_stride',
    'sriov_vf_device'))
_VIRTFN_ENTRY = re.compile(r'^virtfn\d+$')


def _check_pci_devices(check, devices):
    """Check the PCI devices; return {address: 'pf'|'vf'|'missing-vf'}."""
    seen = {}
    mdev_uuids = set()

    def claim(address, path, kind):
        check.matches(address, path, SYSFS_ADDRESS, '0000:1b:00.0')
        if address in seen:
            check.fail(path, 'address %s is listed twice' % address)
        seen[address] = kind

    for index, device in check.list_of(devices, 'pci_devices'):
        path = 'pci_devices[%d]' % index
        check.keys(device, path, _PF_REQUIRED, _PF_OPTIONAL)
        claim(device['address'], path + '.address', 'pf')
        for key in ('vendor', 'device', 'class', 'subsystem_vendor',
                    'subsystem_device'):
            if key in device:
                check.matches(device[key], '%s.%s' % (path, key), HEX_ID,
                              '0x10de')
        _check_common(check, device, path)
        virtfns = device.get('virtfns')
        if virtfns is not None:
            missing = [key for key in _SRIOV_KEYS if key not in device]
            if missing:
                check.fail(path, 'has virtfns but lacks %s'
                           % ', '.join(missing))
        for key in ('sriov_totalvfs', 'sriov_offset', 'sriov_stride'):
            if key in device:
                # The PCIe SR-IOV capability holds 16-bit counts.
                check.int_at_least(device[key], '%s.%s' % (path, key), 0,
                                   0xffff)
        if 'sriov_vf_device' in device:
            check.matches(device['sriov_vf_device'],
                          path + '.sriov_vf_device', HEX_ID, '0x2330')
        vfs = check.list_of(virtfns, path + '.virtfns', nullable=True)
        if vfs and len(vfs) > device['sriov_totalvfs']:
            check.fail(path + '.virtfns', '%d VFs but sriov_totalvfs is %d'
                       % (len(vfs), device['sriov_totalvfs']))
        defaults = device.get('vf_defaults', {})
        check.keys(defaults, path + '.vf_defaults', (),
                   ('driver', 'class', 'files'))
        _check_common(check, defaults, path + '.vf_defaults')
        for vf_index, vf in vfs:
            vf_path = '%s.virtfns[%d]' % (path, vf_index)
            check.keys(vf, vf_path, ('address',), _VF_OPTIONAL)
            check.of_type(vf.get('missing', False), vf_path + '.missing',
                          bool)
            claim(vf['address'], vf_path + '.address',
                  'missing-vf' if vf.get('missing') else 'vf')
            _check_common(check, vf, vf_path)
            files = dict(defaults.get('files', {}))
            files.update(vf.get('files', {}))
            _check_mdevs(check, vf.get('mdevs', []), files,
                         vf_path + '.mdevs', mdev_uuids)
        _check_mdevs(check, device.get('mdevs', []),
                     device.get('files', {}), path + '.mdevs', mdev_uuids)
    return seen


def _check_common(check, device, path):
    if 'numa_node' in device:
        check.int_at_least(device['numa_node'], path + '.numa_node', -1,
                           1023)
    if 'iommu_group' in device:
        check.int_at_least(device['iommu_group'], path + '.iommu_group', 0,
                           2 ** 31 - 1)
    if 'driver' in device:
        # The driver's name is a directory under bus/pci/drivers.
        check.name(device['driver'], path + '.driver', nullable=True)
    if 'local_cpulist' in device:
        check.text(device['local_cpulist'], path + '.local_cpulist',
                   nullable=True)
    if 'class' in device:
        check.matches(device['class'], path + '.class', HEX_ID, '0x030200')
    files = device.get('files', {})
    check.of_type(files, path + '.files', dict)
    names = set(files)
    for name, content in files.items():
        file_path = '%s.files[%s]' % (path, show(name))
        if len(name) > MAX_TEXT:
            check.fail(file_path, 'name longer than %d characters'
                       % MAX_TEXT)
        parts = name.split('/')
        for part in parts:
            if not NAME_COMPONENT.match(part):
                check.fail(file_path, 'must be a relative path of plain '
                           'names (letters, digits and _.:+-, no "." or '
                           '"..", no empty part)')
        if parts[0] in _GENERATED_ENTRIES or _VIRTFN_ENTRY.match(parts[0]):
            check.fail(file_path, '%s is written from the device\'s own '
                       'keys' % parts[0])
        for end in range(1, len(parts)):
            if '/'.join(parts[:end]) in names:
                check.fail(file_path, 'is below %s, which is a file'
                           % '/'.join(parts[:end]))
        check.text(content, file_path, MAX_CONTENT)


def _check_mdevs(check, mdevs, files, path, host_uuids):
    for index, mdev in check.list_of(mdevs, path):
        mdev_path = '%s[%d]' % (path, index)
        check.keys(mdev, mdev_path, ('uuid', 'type'))
        # The uuid names a directory beside the device's own files.
        check.matches(mdev['uuid'], mdev_path + '.uuid', MDEV_UUID,
                      '54ea9c25-1f1c-53d6-bd03-7447ae9406af')
        if mdev['uuid'] in host_uuids:
            check.fail(mdev_path + '.uuid', 'duplicate uuid')
        host_uuids.add(mdev['uuid'])
        if any(name.split('/')[0] == mdev['uuid'] for name in files):
            check.fail(mdev_path + '.uuid', 'a file of the device has the '
                       'same name')
        check.name(mdev['type'], mdev_path + '.type')
        prefix = 'mdev_supported_types/%s/' % mdev['type']
        if not any(name.startswith(prefix) for name in files):
            check.fail(mdev_path + '.type', 'no %s files on this device'
                       % prefix.rstrip('/'))


# -- nvml --------------------------------------------------------------------

_DEVICE_REQUIRED = (
    'index', 'model', 'uuid', 'name', 'pci_bus_id', 'pci_device_id',
    'pci_subsystem_id', 'memory_total', 'memory_used', 'architecture',
    'cuda_capability', 'mig_mode', 'gpu_instances', 'virtualization_mode',
    'host_vgpu_mode', 'supported_vgpus', 'creatable_vgpus', 'active_vgpus',
    'nvlink')
_PROFILE_KEYS = ('index', 'id', 'name', 'slice_count', 'instance_count',
                 'memory_mb', 'multiprocessor_count', 'placements')
_VGPU_TYPE_KEYS = ('id', 'name', 'class', 'framebuffer_mb', 'max_instances',
                   'gpu_instance_profile_id')


def _check_nvml(check, nvml, addresses):
    check.keys(nvml, 'nvml', ('driver_version', 'models', 'devices',
                              'nvlink_cliques'))
    check.text(nvml['driver_version'], 'nvml.driver_version')
    check.of_type(nvml['models'], 'nvml.models', dict)
    for model, tables in nvml['models'].items():
        model_path = 'nvml.models[%s]' % show(model)
        check.text(model, model_path)
        _check_model(check, tables, model_path)
    vgpu_instance_ids = set()
    bus_ids = {}
    gpu_uuids = set()
    for index, device in check.list_of(nvml['devices'], 'nvml.devices'):
        path = 'nvml.devices[%d]' % index
        check.keys(device, path, _DEVICE_REQUIRED, ('lost',))
        check.of_type(device['index'], path + '.index', int)
        if device['index'] != index:
            check.fail(path + '.index', 'is %d but the entry is number %d'
                       % (device['index'], index))
        check.text(device['model'], path + '.model')
        model = nvml['models'].get(device['model'])
        if model is None:
            check.fail(path + '.model', '%s is not a key of nvml.models'
                       % show(device['model']))
        check.matches(device['pci_bus_id'], path + '.pci_bus_id',
                      NVML_BUS_ID, '00000000:1B:00.0')
        address = nvml_bus_id_to_address(device['pci_bus_id'])
        if addresses.get(address) != 'pf':
            check.fail(path + '.pci_bus_id', 'no pci_devices entry %s'
                       % address)
        if address in bus_ids:
            # Two GPUs on one bus would report one provider name twice.
            check.fail(path + '.pci_bus_id', 'device %d is on the same bus '
                       'id' % bus_ids[address])
        bus_ids[address] = index
        for key in ('pci_device_id', 'pci_subsystem_id'):
            check.matches(device[key], '%s.%s' % (path, key), HEX_ID,
                          '0x233010DE')
        for key in ('uuid', 'name'):
            check.text(device[key], '%s.%s' % (path, key))
        if device['uuid'] in gpu_uuids:
            check.fail(path + '.uuid', 'duplicate GPU uuid')
        gpu_uuids.add(device['uuid'])
        for key in ('memory_total', 'memory_used'):
            check.int_at_least(device[key], '%s.%s' % (path, key), 0,
                               UINT64_MAX)
        if device['memory_used'] > device['memory_total']:
            check.fail(path + '.memory_used', 'exceeds memory_total (%d > '
                       '%d)' % (device['memory_used'],
                                device['memory_total']))
        check.int_at_least(device['architecture'], path + '.architecture', 0)
        check.one_of(device['virtualization_mode'],
                     path + '.virtualization_mode', VIRTUALIZATION_MODES)
        check.of_type(device.get('lost', False), path + '.lost', bool)
        check.pair_of_ints(device['cuda_capability'],
                           path + '.cuda_capability', '[major, minor]')
        _check_mig(check, device, model, path)
        if device['host_vgpu_mode'] is not None:
            check.one_of(device['host_vgpu_mode'], path + '.host_vgpu_mode',
                         (0, 1))
        _check_vgpus(check, device, model, path, addresses,
                     vgpu_instance_ids)
        _check_nvlink(check, device['nvlink'], path + '.nvlink')
    _check_nvlink_cliques(check, nvml['nvlink_cliques'],
                          len(nvml['devices']))


def _check_nvlink_cliques(check, cliques, count):
    """Each entry is a set of devices that are all NVLink peers; a device
    may be in several (a partial mesh: ``[[0, 1], [1, 2]]`` for peers 0-1
    and 1-2 but not 0-2).
    """
    seen = {}
    for index, clique in check.list_of(cliques, 'nvml.nvlink_cliques'):
        path = 'nvml.nvlink_cliques[%d]' % index
        members = set()
        for gpu_index, gpu in check.list_of(clique, path):
            gpu_path = '%s[%d]' % (path, gpu_index)
            check.of_type(gpu, gpu_path, int)
            if not 0 <= gpu < count:
                check.fail(gpu_path, 'no device with index %d' % gpu)
            if gpu in members:
                check.fail(gpu_path, 'device %d is listed twice in this '
                           'clique' % gpu)
            members.add(gpu)
        if len(members) < 2:
            check.fail(path, 'a clique needs at least two devices (a GPU '
                       'without NVLink peers is in none)')
        key = frozenset(members)
        if key in seen:
            check.fail(path, 'lists the same devices as '
                       'nvml.nvlink_cliques[%d]' % seen[key])
        seen[key] = index


def _check_model(check, tables, path):
    check.keys(tables, path, ('gpu_instance_profiles', 'vgpu_types'))
    seen_index, seen_id = set(), set()
    for index, profile in check.list_of(tables['gpu_instance_profiles'],
                                        path + '.gpu_instance_profiles'):
        profile_path = '%s.gpu_instance_profiles[%d]' % (path, index)
        check.keys(profile, profile_path, _PROFILE_KEYS)
        for key in ('index', 'id', 'slice_count', 'instance_count',
                    'memory_mb', 'multiprocessor_count'):
            check.int_at_least(profile[key], '%s.%s' % (profile_path, key),
                               0)
        check.text(profile['name'], profile_path + '.name')
        for key, seen in (('index', seen_index), ('id', seen_id)):
            if profile[key] in seen:
                check.fail('%s.%s' % (profile_path, key), 'duplicate %d'
                           % profile[key])
            seen.add(profile[key])
        _check_profile_size(check, profile, profile_path)
    seen_types = set()
    for index, vgpu_type in check.list_of(tables['vgpu_types'],
                                          path + '.vgpu_types'):
        type_path = '%s.vgpu_types[%d]' % (path, index)
        check.keys(vgpu_type, type_path, _VGPU_TYPE_KEYS)
        for key in ('id', 'framebuffer_mb', 'max_instances'):
            check.int_at_least(vgpu_type[key], '%s.%s' % (type_path, key), 0)
        for key in ('name', 'class'):
            check.text(vgpu_type[key], '%s.%s' % (type_path, key))
        profile_id = vgpu_type['gpu_instance_profile_id']
        check.of_type(profile_id, type_path + '.gpu_instance_profile_id',
                      int, nullable=True)
        if profile_id is not None and profile_id not in seen_id:
            check.fail(type_path + '.gpu_instance_profile_id',
                       'no GPU instance profile with id %d' % profile_id)
        if vgpu_type['id'] in seen_types:
            check.fail(type_path + '.id', 'duplicate %d' % vgpu_type['id'])
        seen_types.add(vgpu_type['id'])


def _check_profile_size(check, profile, path):
    """A profile's slices agree with NVIDIA's tables and its name."""
    slices = GPU_INSTANCE_PROFILE_SLICES.get(profile['index'])
    if slices is None:
        check.fail(path + '.index', 'NVML has no GPU instance profile index '
                   '%d' % profile['index'])
    if profile['slice_count'] != slices:
        check.fail(path + '.slice_count', 'is %d but NVML profile index %d '
                   'has %d slice(s)' % (profile['slice_count'],
                                        profile['index'], slices))
    named = MIG_PROFILE_NAME.match(profile['name'])
    if named and int(named.group(1)) != slices:
        check.fail(path + '.name', '%s says %sg but the profile has %d '
                   'slice(s)' % (show(profile['name']), named.group(1),
                                 slices))
    sizes = set()
    for place_index, placement in check.list_of(profile['placements'],
                                                path + '.placements'):
        place_path = '%s.placements[%d]' % (path, place_index)
        check.pair_of_ints(placement, place_path, '[start, size]')
        if placement[1] < 1:
            check.fail(place_path, 'size must be at least 1')
        sizes.add(placement[1])
    if len(sizes) > 1:
        check.fail(path + '.placements', 'sizes differ (%s); one profile '
                   'has one size' % ', '.join(map(str, sorted(sizes))))


def _check_mig(check, device, model, path):
    mig_mode = device['mig_mode']
    if mig_mode is not None and (
            not isinstance(mig_mode, list) or len(mig_mode) != 2 or
            any(type(mode) is not int or mode not in MIG_MODES
                for mode in mig_mode)):
        check.fail(path + '.mig_mode', 'expected null or [current, pending] '
                   'with values 0/1')
    instances = check.list_of(device['gpu_instances'],
                              path + '.gpu_instances')
    if instances and (mig_mode is None or mig_mode[0] != 1):
        check.fail(path + '.gpu_instances', 'GPU instances need MIG '
                   'enabled (mig_mode [1, ...])')
    profiles = {profile['id']: profile
                for profile in model['gpu_instance_profiles']}
    used_slots = {}
    ids = set()
    for index, instance in instances:
        gi_path = '%s.gpu_instances[%d]' % (path, index)
        check.keys(instance, gi_path, ('id', 'profile_id', 'start', 'size',
                                       'compute_instances'))
        for key in ('id', 'profile_id', 'start', 'size'):
            check.int_at_least(instance[key], '%s.%s' % (gi_path, key), 0)
        if instance['id'] in ids:
            check.fail(gi_path + '.id', 'duplicate id %d' % instance['id'])
        ids.add(instance['id'])
        profile = profiles.get(instance['profile_id'])
        if profile is None:
            check.fail(gi_path + '.profile_id', 'no profile with id %d in '
                       'the model' % instance['profile_id'])
        placement = [instance['start'], instance['size']]
        if placement not in profile['placements']:
            check.fail(gi_path, 'placement %r is not one of profile %d '
                       '(%s) placements %s' % (
                           placement, profile['id'], show(profile['name']),
                           show(profile['placements'])))
        for slot in range(instance['start'],
                          instance['start'] + instance['size']):
            if slot in used_slots:
                check.fail(gi_path, 'overlaps GPU instance %d at memory '
                           'slot %d' % (used_slots[slot], slot))
            used_slots[slot] = instance['id']
        ci_ids = set()
        for ci_index, compute in check.list_of(
                instance['compute_instances'],
                gi_path + '.compute_instances'):
            ci_path = '%s.compute_instances[%d]' % (gi_path, ci_index)
            check.keys(compute, ci_path,
                       ('id', 'profile_id', 'start', 'size', 'uuid'))
            for key in ('id', 'profile_id', 'start', 'size'):
                check.int_at_least(compute[key], '%s.%s' % (ci_path, key), 0)
            if compute['id'] in ci_ids:
                check.fail(ci_path + '.id', 'duplicate id')
            ci_ids.add(compute['id'])
            slices = COMPUTE_INSTANCE_PROFILE_SLICES.get(
                compute['profile_id'])
            if slices != compute['size']:
                check.fail(ci_path + '.size', 'is %d but compute instance '
                           'profile %d has %s slice(s)' % (
                               compute['size'], compute['profile_id'],
                               slices if slices is not None else 'no'))
            if compute['start'] + compute['size'] > profile['slice_count']:
                check.fail(ci_path, 'does not fit the %d slices of its GPU '
                           'instance' % profile['slice_count'])
            check.text(compute['uuid'], ci_path + '.uuid')


def _check_vgpus(check, device, model, path, addresses, instance_ids):
    types = {vgpu_type['id']: vgpu_type
             for vgpu_type in model['vgpu_types']}
    for key in ('supported_vgpus', 'creatable_vgpus'):
        for index, type_id in check.list_of(device[key],
                                            '%s.%s' % (path, key)):
            type_path = '%s.%s[%d]' % (path, key, index)
            check.of_type(type_id, type_path, int)
            if type_id not in types:
                check.fail(type_path, 'no vGPU type %d in the model'
                           % type_id)
    if not set(device['creatable_vgpus']) <= set(device['supported_vgpus']):
        check.fail(path + '.creatable_vgpus', 'must be a subset of '
                   'supported_vgpus')
    gpu_instances = {instance['id']: instance
                     for instance in device['gpu_instances']}
    for index, active in check.list_of(device['active_vgpus'],
                                       path + '.active_vgpus'):
        active_path = '%s.active_vgpus[%d]' % (path, index)
        check.keys(active, active_path,
                   ('id', 'type_id', 'vf_pci_bus_id', 'uuid'),
                   ('gpu_instance_id', 'mdev_uuid'))
        check.int_at_least(active['id'], active_path + '.id', 1)
        if active['id'] in instance_ids:
            check.fail(active_path + '.id', 'vGPU instance id %d is used '
                       'twice on the host' % active['id'])
        instance_ids.add(active['id'])
        check.of_type(active['type_id'], active_path + '.type_id', int)
        if active['type_id'] not in device['supported_vgpus']:
            check.fail(active_path + '.type_id', 'not in supported_vgpus')
        check.matches(active['vf_pci_bus_id'], active_path + '.vf_pci_bus_id',
                      NVML_BUS_ID, '00000000:1B:00.4')
        address = nvml_bus_id_to_address(active['vf_pci_bus_id'])
        if address not in addresses:
            check.fail(active_path + '.vf_pci_bus_id', 'no pci_devices '
                       'entry %s' % address)
        check.text(active['uuid'], active_path + '.uuid')
        if 'mdev_uuid' in active:
            check.matches(active['mdev_uuid'], active_path + '.mdev_uuid',
                          MDEV_UUID, '54ea9c25-1f1c-53d6-bd03-7447ae9406af')
        _check_vgpu_instance(check, active, types[active['type_id']],
                             gpu_instances, active_path)


def _check_vgpu_instance(check, active, vgpu_type, gpu_instances, path):
    """A MIG-backed vGPU runs on an existing GPU instance of its profile."""
    profile_id = vgpu_type['gpu_instance_profile_id']
    if 'gpu_instance_id' not in active:
        if profile_id is not None:
            check.fail(path, 'vGPU type %d is MIG-backed but the vGPU has '
                       'no gpu_instance_id' % vgpu_type['id'])
        return
    check.int_at_least(active['gpu_instance_id'], path + '.gpu_instance_id',
                       0)
    instance = gpu_instances.get(active['gpu_instance_id'])
    if instance is None:
        check.fail(path + '.gpu_instance_id', 'the GPU has no GPU instance '
                   '%d' % active['gpu_instance_id'])
    if profile_id is None:
        check.fail(path + '.gpu_instance_id', 'vGPU type %d is time-sliced, '
                   'not on a GPU instance' % vgpu_type['id'])
    if instance['profile_id'] != profile_id:
        check.fail(path + '.gpu_instance_id', 'GPU instance %d has profile '
                   '%d but vGPU type %d needs profile %d' % (
                       instance['id'], instance['profile_id'],
                       vgpu_type['id'], profile_id))


def _check_nvlink(check, nvlink, path):
    if nvlink is None:
        return
    check.keys(nvlink, path, ('link_count', 'active_link_count',
                              'remote_device_type'))
    for key in nvlink:
        # NVML_NVLINK_MAX_LINKS is 18 on Hopper, more on later parts.
        check.int_at_least(nvlink[key], '%s.%s' % (path, key), 0, 255)
    if nvlink['active_link_count'] > nvlink['link_count']:
        check.fail(path + '.active_link_count', 'exceeds link_count')


# -- libvirt_nodedevs and amdsmi ---------------------------------------------

def _check_nodedevs(check, nodedevs):
    names = set()
    for index, text in check.list_of(nodedevs, 'libvirt_nodedevs',
                                     nullable=True):
        path = 'libvirt_nodedevs[%d]' % index
        check.text(text, path, MAX_CONTENT)
        try:
            element = ElementTree.fromstring(text)
        except ElementTree.ParseError as error:
            check.fail(path, 'not well-formed XML: %s' % error)
        if element.tag != 'device' or element.findtext('name') is None:
            check.fail(path, 'expected a <device> element with a <name>')
        name = element.findtext('name')
        if name == 'computer' or name in names:
            check.fail(path, 'device name %s is reserved or repeated'
                       % show(name))
        names.add(name)


def _check_amdsmi(check, amdsmi, addresses):
    check.keys(amdsmi, 'amdsmi', ('gpus', 'link_type'))
    check.one_of(amdsmi['link_type'], 'amdsmi.link_type', ('XGMI', 'PCIE'))
    bdfs = {}
    for index, gpu in check.list_of(amdsmi['gpus'], 'amdsmi.gpus'):
        path = 'amdsmi.gpus[%d]' % index
        check.keys(gpu, path, ('bdf', 'market_name', 'xgmi',
                               'compute_partition', 'memory_partition',
                               'memory_partition_caps', 'num_vf',
                               'vf_partitions'))
        check.matches(gpu['bdf'], path + '.bdf', SYSFS_ADDRESS,
                      '0000:05:00.0')
        if addresses.get(gpu['bdf']) != 'pf':
            check.fail(path + '.bdf', 'no pci_devices entry %s' % gpu['bdf'])
        if gpu['bdf'] in bdfs:
            check.fail(path + '.bdf', 'GPU %d has the same bdf'
                       % bdfs[gpu['bdf']])
        bdfs[gpu['bdf']] = index
        check.text(gpu['market_name'], path + '.market_name')
        _check_xgmi(check, gpu['xgmi'], path + '.xgmi')
        check.one_of(gpu['compute_partition'], path + '.compute_partition',
                     PARTITION_MODES)
        check.one_of(gpu['memory_partition'], path + '.memory_partition',
                     MEMORY_MODES)
        for cap_index, cap in check.list_of(
                gpu['memory_partition_caps'],
                path + '.memory_partition_caps'):
            check.one_of(cap, '%s.memory_partition_caps[%d]'
                         % (path, cap_index), MEMORY_MODES)
        check.keys(gpu['num_vf'], path + '.num_vf',
                   ('num_vf_enabled', 'num_vf_supported'))
        for key in ('num_vf_enabled', 'num_vf_supported'):
            check.int_at_least(gpu['num_vf'][key],
                               '%s.num_vf.%s' % (path, key), 0, 0xffff)
        if gpu['num_vf']['num_vf_enabled'] > gpu['num_vf'][
                'num_vf_supported']:
            check.fail(path + '.num_vf.num_vf_enabled',
                       'exceeds num_vf_supported')
        partitions = check.list_of(gpu['vf_partitions'],
                                   path + '.vf_partitions')
        if len(partitions) != gpu['num_vf']['num_vf_enabled']:
            check.fail(path + '.vf_partitions', '%d entries but '
                       'num_vf_enabled is %d' % (
                           len(partitions), gpu['num_vf']['num_vf_enabled']))
        vf_ids = set()
        for vf_index, partition in partitions:
            vf_path = '%s.vf_partitions[%d]' % (path, vf_index)
            check.keys(partition, vf_path, ('vf_id', 'bdf', 'fb'))
            check.int_at_least(partition['vf_id'], vf_path + '.vf_id', 0,
                               0xffff)
            if partition['vf_id'] in vf_ids:
                check.fail(vf_path + '.vf_id', 'duplicate %d'
                           % partition['vf_id'])
            vf_ids.add(partition['vf_id'])
            check.matches(partition['bdf'], vf_path + '.bdf', SYSFS_ADDRESS,
                          '0000:05:02.0')
            if partition['bdf'] not in addresses:
                check.fail(vf_path + '.bdf', 'no pci_devices entry %s'
                           % partition['bdf'])
            check.keys(partition['fb'], vf_path + '.fb',
                       ('fb_offset', 'fb_size'))
            for key in ('fb_offset', 'fb_size'):
                check.int_at_least(partition['fb'][key],
                                   '%s.fb.%s' % (vf_path, key), 0,
                                   UINT64_MAX)


def _check_amd_partitions(check, data):
    """Compute and memory modes and VF counts GIM supports per model
    (the AMD driver's table, from GIM's release notes), in the sysfs
    files of GIM PFs and in amdsmi's view.
    """
    # Here, not at the top: only hosts reach it, and it loads Cyborg.
    from cyborg_gpu_drivers import amd_mxgpu
    for index, device in enumerate(data['pci_devices']):
        files = device.get('files', {})
        known = amd_mxgpu.KNOWN_MODELS.get(
            device['device'].lower().removeprefix('0x'))
        if device['vendor'].lower() != '0x1002' or known is None or \
                device.get('driver') != amd_mxgpu.GIM_DRIVER:
            continue
        compute_file = next((name for name in amd_mxgpu.COMPUTE_FILES
                             if name in files), None)
        if compute_file is None:
            continue
        memory = next((amd_mxgpu.parse_memory_partition(files[name])
                       for name in amd_mxgpu.MEMORY_FILES if name in files),
                      None)
        error = amd_mxgpu.partition_mode_error(
            known[0], amd_mxgpu.parse_compute_partition(files[compute_file]),
            memory, len(device.get('virtfns') or ()))
        if error:
            check.fail('pci_devices[%d].files.%s' % (index, compute_file),
                       error)
    for index, gpu in enumerate((data['amdsmi'] or {}).get('gpus', ())):
        error = amd_mxgpu.partition_mode_error(
            gpu['market_name'], gpu['compute_partition'],
            gpu['memory_partition'], gpu['num_vf']['num_vf_enabled'])
        if error:
            check.fail('amdsmi.gpus[%d].compute_partition' % index, error)


def _check_xgmi(check, xgmi, path):
    check.keys(xgmi, path, ('xgmi_hive_id', 'xgmi_node_id', 'xgmi_lanes',
                            'index'))
    # amdsmi_get_xgmi_info gives 64-bit integers; a string here would make
    # the hive trait disappear without a word.
    for key in ('xgmi_hive_id', 'xgmi_node_id'):
        check.int_at_least(xgmi[key], '%s.%s' % (path, key), 0, UINT64_MAX)
    check.int_at_least(xgmi['xgmi_lanes'], path + '.xgmi_lanes', 0, 255)
    check.int_at_least(xgmi['index'], path + '.index', 0)
