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
import xml.etree.ElementTree as ElementTree

FORMAT_VERSION = 1

SYSFS_ADDRESS = re.compile(r'^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$')
NVML_BUS_ID = re.compile(r'^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$')
HEX_ID = re.compile(r'^0x[0-9a-fA-F]+$')
HOST_NAME = re.compile(r'^[a-z0-9][a-z0-9-]*$')
MIG_MODES = (0, 1)
PARTITION_MODES = ('SPX', 'DPX', 'TPX', 'QPX', 'CPX')
MEMORY_MODES = ('NPS1', 'NPS2', 'NPS4', 'NPS8')


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

    def __init__(self, source):
        self.source = source

    def fail(self, path, message):
        raise ReferenceHostError(self.source, path, message)

    def keys(self, value, path, required, optional=()):
        if not isinstance(value, dict):
            self.fail(path, 'expected an object')
        missing = [key for key in required if key not in value]
        if missing:
            self.fail(path, 'missing key(s): %s' % ', '.join(missing))
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            self.fail(path, 'unknown key(s): %s (allowed: %s)' % (
                ', '.join(unknown),
                ', '.join(sorted(set(required) | set(optional)))))

    def of_type(self, value, path, kind, nullable=False):
        if value is None and nullable:
            return
        # bool is an int in Python, never a valid count or id here.
        if isinstance(value, bool) and kind is not bool:
            self.fail(path, 'expected %s, got a boolean' % kind.__name__)
        if not isinstance(value, kind):
            self.fail(path, 'expected %s%s, got %s' % (
                kind.__name__, ' or null' if nullable else '',
                type(value).__name__))

    def matches(self, value, path, pattern, example):
        self.of_type(value, path, str)
        if not pattern.match(value):
            self.fail(path, '%r is not like %r' % (value, example))

    def int_at_least(self, value, path, minimum):
        self.of_type(value, path, int)
        if value < minimum:
            self.fail(path, 'must be >= %d, got %d' % (minimum, value))

    def one_of(self, value, path, allowed):
        if value not in allowed:
            self.fail(path, '%r is not one of %s' % (
                value, ', '.join(repr(item) for item in allowed)))

    def list_of(self, value, path, nullable=False):
        self.of_type(value, path, list, nullable)
        return [] if value is None else list(enumerate(value))


def validate(data, source):
    """Raise :class:`ReferenceHostError` unless ``data`` is a valid host."""
    check = _Checker(source)
    check.keys(data, '', ('format', 'name', 'description', 'hostname',
                          'nvml', 'pci_devices', 'libvirt_nodedevs',
                          'amdsmi'))
    check.of_type(data['format'], 'format', int)
    if data['format'] != FORMAT_VERSION:
        check.fail('format', 'unsupported version %r (this library reads '
                   'version %d)' % (data['format'], FORMAT_VERSION))
    check.matches(data['name'], 'name', HOST_NAME, 'hgx-h100')
    check.of_type(data['description'], 'description', str)
    check.of_type(data['hostname'], 'hostname', str)
    addresses = _check_pci_devices(check, data['pci_devices'])
    if data['nvml'] is not None:
        _check_nvml(check, data['nvml'], addresses)
    _check_nodedevs(check, data['libvirt_nodedevs'])
    if data['amdsmi'] is not None:
        _check_amdsmi(check, data['amdsmi'], addresses)


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


def _check_pci_devices(check, devices):
    """Check the PCI devices; return {address: 'pf'|'vf'|'missing-vf'}."""
    seen = {}

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
                check.int_at_least(device[key], '%s.%s' % (path, key), 0)
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
                         vf_path + '.mdevs')
        _check_mdevs(check, device.get('mdevs', []),
                     device.get('files', {}), path + '.mdevs')
    return seen


def _check_common(check, device, path):
    if 'numa_node' in device:
        check.int_at_least(device['numa_node'], path + '.numa_node', -1)
    if 'iommu_group' in device:
        check.int_at_least(device['iommu_group'], path + '.iommu_group', 0)
    for key in ('driver', 'local_cpulist'):
        if key in device:
            check.of_type(device[key], '%s.%s' % (path, key), str,
                          nullable=True)
    if 'class' in device:
        check.matches(device['class'], path + '.class', HEX_ID, '0x030200')
    files = device.get('files', {})
    check.of_type(files, path + '.files', dict)
    for name, content in files.items():
        file_path = '%s.files[%r]' % (path, name)
        parts = name.split('/')
        if name.startswith('/') or '..' in parts or '' in parts:
            check.fail(file_path, 'must be a relative path without ".."')
        check.of_type(content, file_path, str)


def _check_mdevs(check, mdevs, files, path):
    uuids = set()
    for index, mdev in check.list_of(mdevs, path):
        mdev_path = '%s[%d]' % (path, index)
        check.keys(mdev, mdev_path, ('uuid', 'type'))
        check.of_type(mdev['uuid'], mdev_path + '.uuid', str)
        if mdev['uuid'] in uuids:
            check.fail(mdev_path + '.uuid', 'duplicate uuid')
        uuids.add(mdev['uuid'])
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
    check.of_type(nvml['driver_version'], 'nvml.driver_version', str)
    check.of_type(nvml['models'], 'nvml.models', dict)
    for model, tables in nvml['models'].items():
        _check_model(check, tables, 'nvml.models[%r]' % model)
    vgpu_instance_ids = set()
    for index, device in check.list_of(nvml['devices'], 'nvml.devices'):
        path = 'nvml.devices[%d]' % index
        check.keys(device, path, _DEVICE_REQUIRED, ('lost',))
        if device['index'] != index:
            check.fail(path + '.index', 'is %r but the entry is number %d'
                       % (device['index'], index))
        model = nvml['models'].get(device['model'])
        if model is None:
            check.fail(path + '.model', '%r is not a key of nvml.models'
                       % device['model'])
        check.matches(device['pci_bus_id'], path + '.pci_bus_id',
                      NVML_BUS_ID, '00000000:1B:00.0')
        address = nvml_bus_id_to_address(device['pci_bus_id'])
        if addresses.get(address) != 'pf':
            check.fail(path + '.pci_bus_id', 'no pci_devices entry %s'
                       % address)
        for key in ('pci_device_id', 'pci_subsystem_id'):
            check.matches(device[key], '%s.%s' % (path, key), HEX_ID,
                          '0x233010DE')
        for key in ('uuid', 'name'):
            check.of_type(device[key], '%s.%s' % (path, key), str)
        for key in ('memory_total', 'memory_used', 'architecture',
                    'virtualization_mode'):
            check.int_at_least(device[key], '%s.%s' % (path, key), 0)
        check.of_type(device.get('lost', False), path + '.lost', bool)
        capability = device['cuda_capability']
        if (not isinstance(capability, list) or len(capability) != 2 or
                not all(isinstance(part, int) for part in capability)):
            check.fail(path + '.cuda_capability', 'expected [major, minor]')
        _check_mig(check, device, model, path)
        if device['host_vgpu_mode'] is not None:
            check.one_of(device['host_vgpu_mode'], path + '.host_vgpu_mode',
                         (0, 1))
        _check_vgpus(check, device, model, path, addresses,
                     vgpu_instance_ids)
        _check_nvlink(check, device['nvlink'], path + '.nvlink')
    count = len(nvml['devices'])
    member_of = {}
    for index, clique in check.list_of(nvml['nvlink_cliques'],
                                       'nvml.nvlink_cliques'):
        path = 'nvml.nvlink_cliques[%d]' % index
        for gpu_index, gpu in check.list_of(clique, path):
            gpu_path = '%s[%d]' % (path, gpu_index)
            check.of_type(gpu, gpu_path, int)
            if not 0 <= gpu < count:
                check.fail(gpu_path, 'no device with index %r' % gpu)
            if gpu in member_of:
                check.fail(gpu_path, 'device %d is already in clique %d'
                           % (gpu, member_of[gpu]))
            member_of[gpu] = index


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
        check.of_type(profile['name'], profile_path + '.name', str)
        for key, seen in (('index', seen_index), ('id', seen_id)):
            if profile[key] in seen:
                check.fail('%s.%s' % (profile_path, key), 'duplicate %r'
                           % profile[key])
            seen.add(profile[key])
        for place_index, placement in check.list_of(
                profile['placements'], profile_path + '.placements'):
            if (not isinstance(placement, list) or len(placement) != 2 or
                    not all(isinstance(part, int) and part >= 0
                            for part in placement)):
                check.fail('%s.placements[%d]' % (profile_path, place_index),
                           'expected [start, size]')
    seen_types = set()
    for index, vgpu_type in check.list_of(tables['vgpu_types'],
                                          path + '.vgpu_types'):
        type_path = '%s.vgpu_types[%d]' % (path, index)
        check.keys(vgpu_type, type_path, _VGPU_TYPE_KEYS)
        for key in ('id', 'framebuffer_mb', 'max_instances'):
            check.int_at_least(vgpu_type[key], '%s.%s' % (type_path, key), 0)
        for key in ('name', 'class'):
            check.of_type(vgpu_type[key], '%s.%s' % (type_path, key), str)
        profile_id = vgpu_type['gpu_instance_profile_id']
        if profile_id is not None and profile_id not in seen_id:
            check.fail(type_path + '.gpu_instance_profile_id',
                       'no GPU instance profile with id %r' % profile_id)
        if vgpu_type['id'] in seen_types:
            check.fail(type_path + '.id', 'duplicate %r' % vgpu_type['id'])
        seen_types.add(vgpu_type['id'])


def _check_mig(check, device, model, path):
    mig_mode = device['mig_mode']
    if mig_mode is not None and (
            not isinstance(mig_mode, list) or len(mig_mode) != 2 or
            any(mode not in MIG_MODES for mode in mig_mode)):
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
        check.int_at_least(instance['id'], gi_path + '.id', 0)
        if instance['id'] in ids:
            check.fail(gi_path + '.id', 'duplicate id %r' % instance['id'])
        ids.add(instance['id'])
        profile = profiles.get(instance['profile_id'])
        if profile is None:
            check.fail(gi_path + '.profile_id', 'no profile with id %r in '
                       'the model' % instance['profile_id'])
        placement = [instance['start'], instance['size']]
        if placement not in profile['placements']:
            check.fail(gi_path, 'placement %r is not one of %s\'s %r' % (
                placement, profile['name'], profile['placements']))
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
            if compute['start'] + compute['size'] > profile['slice_count']:
                check.fail(ci_path, 'does not fit the %d slices of its GPU '
                           'instance' % profile['slice_count'])
            check.of_type(compute['uuid'], ci_path + '.uuid', str)


def _check_vgpus(check, device, model, path, addresses, instance_ids):
    types = {vgpu_type['id'] for vgpu_type in model['vgpu_types']}
    for key in ('supported_vgpus', 'creatable_vgpus'):
        for index, type_id in check.list_of(device[key],
                                            '%s.%s' % (path, key)):
            if type_id not in types:
                check.fail('%s.%s[%d]' % (path, key, index),
                           'no vGPU type %r in the model' % type_id)
    if not set(device['creatable_vgpus']) <= set(device['supported_vgpus']):
        check.fail(path + '.creatable_vgpus', 'must be a subset of '
                   'supported_vgpus')
    for index, active in check.list_of(device['active_vgpus'],
                                       path + '.active_vgpus'):
        active_path = '%s.active_vgpus[%d]' % (path, index)
        check.keys(active, active_path,
                   ('id', 'type_id', 'vf_pci_bus_id', 'uuid'),
                   ('gpu_instance_id', 'mdev_uuid'))
        check.int_at_least(active['id'], active_path + '.id', 1)
        if active['id'] in instance_ids:
            check.fail(active_path + '.id', 'vGPU instance id %r is used '
                       'twice on the host' % active['id'])
        instance_ids.add(active['id'])
        if active['type_id'] not in device['supported_vgpus']:
            check.fail(active_path + '.type_id', 'not in supported_vgpus')
        check.matches(active['vf_pci_bus_id'], active_path + '.vf_pci_bus_id',
                      NVML_BUS_ID, '00000000:1B:00.4')
        address = nvml_bus_id_to_address(active['vf_pci_bus_id'])
        if address not in addresses:
            check.fail(active_path + '.vf_pci_bus_id', 'no pci_devices '
                       'entry %s' % address)
        check.of_type(active['uuid'], active_path + '.uuid', str)


def _check_nvlink(check, nvlink, path):
    if nvlink is None:
        return
    check.keys(nvlink, path, ('link_count', 'active_link_count',
                              'remote_device_type'))
    for key in nvlink:
        check.int_at_least(nvlink[key], '%s.%s' % (path, key), 0)
    if nvlink['active_link_count'] > nvlink['link_count']:
        check.fail(path + '.active_link_count', 'exceeds link_count')


# -- libvirt_nodedevs and amdsmi ---------------------------------------------

def _check_nodedevs(check, nodedevs):
    names = set()
    for index, text in check.list_of(nodedevs, 'libvirt_nodedevs',
                                     nullable=True):
        path = 'libvirt_nodedevs[%d]' % index
        check.of_type(text, path, str)
        try:
            element = ElementTree.fromstring(text)
        except ElementTree.ParseError as error:
            check.fail(path, 'not well-formed XML: %s' % error)
        if element.tag != 'device' or element.findtext('name') is None:
            check.fail(path, 'expected a <device> element with a <name>')
        name = element.findtext('name')
        if name == 'computer' or name in names:
            check.fail(path, 'device name %r is reserved or repeated' % name)
        names.add(name)


def _check_amdsmi(check, amdsmi, addresses):
    check.keys(amdsmi, 'amdsmi', ('gpus', 'link_type'))
    check.one_of(amdsmi['link_type'], 'amdsmi.link_type', ('XGMI', 'PCIE'))
    for index, gpu in check.list_of(amdsmi['gpus'], 'amdsmi.gpus'):
        path = 'amdsmi.gpus[%d]' % index
        check.keys(gpu, path, ('bdf', 'market_name', 'xgmi',
                               'compute_partition', 'memory_partition',
                               'memory_partition_caps', 'num_vf',
                               'vf_partitions'))
        if addresses.get(gpu['bdf']) != 'pf':
            check.fail(path + '.bdf', 'no pci_devices entry %r' % gpu['bdf'])
        check.keys(gpu['xgmi'], path + '.xgmi', ('xgmi_hive_id',
                                                 'xgmi_node_id',
                                                 'xgmi_lanes', 'index'))
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
        partitions = check.list_of(gpu['vf_partitions'],
                                   path + '.vf_partitions')
        if len(partitions) != gpu['num_vf']['num_vf_enabled']:
            check.fail(path + '.vf_partitions', '%d entries but '
                       'num_vf_enabled is %d' % (
                           len(partitions), gpu['num_vf']['num_vf_enabled']))
        for vf_index, partition in partitions:
            vf_path = '%s.vf_partitions[%d]' % (path, vf_index)
            check.keys(partition, vf_path, ('vf_id', 'bdf', 'fb'))
            if partition['bdf'] not in addresses:
                check.fail(vf_path + '.bdf', 'no pci_devices entry %r'
                           % partition['bdf'])
            check.keys(partition['fb'], vf_path + '.fb',
                       ('fb_offset', 'fb_size'))
