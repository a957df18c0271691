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
"""Record a live GPU host as a reference host file: the inverse of
:meth:`ReferenceHost.materialize`.

:func:`record` reads NVML, the PCI devices of NVIDIA and AMD in sysfs,
libvirt's node devices of those devices and AMD SMI, and returns the
host as a format-1 document that :func:`reference_hosts.load_file`
accepts. It never changes a device: every library is reached through a
read-only view (:mod:`cyborg_gpu_drivers.adapters.read_only`) that
refuses any call not in the lists below, libvirt through a read-only
connection, sysfs through an adapter without ``write``; nothing here
imports the privileged code.

A library that is absent or does not start leaves its part ``null`` and
a note; a GPU that fails while being read is recorded as lost (unknown
state, which the drivers count as in use) and noted, never a traceback.
The notes end the document's ``description`` and are logged.

Not recordable, so left out or approximated (each gets a note when it
applies): MIG profile tables of a GPU model none of whose GPUs has MIG
enabled (NVML answers ``NotSupported``), with the MIG-backed vGPU types
that name them; the identity of a lost GPU (its bus id is taken from the
NVIDIA GPU in sysfs that NVML did not name);
``memory_partition_caps`` where AMD SMI has no call for them; sysfs
files the drivers do not read.
"""

import collections
import ctypes
import re
import socket
import xml.etree.ElementTree as ElementTree

from oslo_log import log as logging

from cyborg_gpu_drivers.adapters import read_only
from gpu_partitions.reference_hosts import _validate
import placement_traits

LOG = logging.getLogger(__name__)

VENDORS = ('10de', '1002')  # NVIDIA, AMD
GPU_CLASS_PREFIXES = ('0x0300', '0x0302', '0x1200')

# Every pynvml function the recording calls; the view refuses the rest.
NVML_READERS = (
    'nvmlInit', 'nvmlShutdown', 'nvmlSystemGetDriverVersion',
    'nvmlDeviceGetCount', 'nvmlDeviceGetHandleByIndex', 'nvmlDeviceGetName',
    'nvmlDeviceGetUUID', 'nvmlDeviceGetPciInfo', 'nvmlDeviceGetMemoryInfo',
    'nvmlDeviceGetArchitecture', 'nvmlDeviceGetCudaComputeCapability',
    'nvmlDeviceGetMigMode', 'nvmlDeviceGetGpuInstanceProfileInfo',
    'nvmlDeviceGetGpuInstancePossiblePlacements',
    'nvmlDeviceGetGpuInstances', 'nvmlGpuInstanceGetInfo',
    'nvmlGpuInstanceGetComputeInstanceProfileInfo',
    'nvmlGpuInstanceGetComputeInstances', 'nvmlComputeInstanceGetInfo',
    'nvmlDeviceGetMaxMigDeviceCount', 'nvmlDeviceGetMigDeviceHandleByIndex',
    'nvmlDeviceGetGpuInstanceId', 'nvmlDeviceGetComputeInstanceId',
    'nvmlDeviceGetVirtualizationMode', 'nvmlDeviceGetHostVgpuMode',
    'nvmlDeviceGetSupportedVgpus', 'nvmlDeviceGetCreatableVgpus',
    'nvmlDeviceGetActiveVgpus', 'nvmlVgpuInstanceGetType',
    'nvmlVgpuInstanceGetUUID', 'nvmlVgpuInstanceGetGpuPciId',
    'nvmlVgpuInstanceGetGpuInstanceId', 'nvmlVgpuInstanceGetMdevUUID',
    'nvmlVgpuTypeGetName', 'nvmlVgpuTypeGetClass',
    'nvmlVgpuTypeGetFramebufferSize', 'nvmlVgpuTypeGetMaxInstances',
    'nvmlVgpuTypeGetGpuInstanceProfileId', 'nvmlDeviceGetNvLinkState',
    'nvmlDeviceGetNvLinkRemoteDeviceType', 'nvmlDeviceGetP2PStatus')
AMDSMI_READERS = (
    'amdsmi_init', 'amdsmi_shut_down', 'amdsmi_get_processor_handles',
    'amdsmi_get_gpu_device_bdf', 'amdsmi_get_gpu_asic_info',
    'amdsmi_get_xgmi_info', 'amdsmi_get_gpu_compute_partition',
    'amdsmi_get_gpu_memory_partition',
    'amdsmi_get_gpu_memory_partition_config', 'amdsmi_get_num_vf',
    'amdsmi_get_vf_partition_info')

# The sysfs files the drivers read beyond the attributes every device
# has (materialize writes those from the device's keys).
DEVICE_FILES = (
    'enable', 'nvidia/creatable_vgpu_types', 'nvidia/current_vgpu_type',
    'spatial_partition_mode', 'spatial_partition_caps',
    'current_compute_partition', 'available_compute_partition',
    'memory_partition_mode', 'memory_partition_config',
    'current_memory_partition', 'available_memory_partition',
    'xgmi_hive_info/xgmi_hive_id')
MDEV_TYPE_FILES = ('name', 'description', 'device_api',
                   'available_instances')
DEFAULT_ENABLE = '0\n'  # what materialize writes when a file says nothing

INVALID_GPU_INSTANCE_PROFILE_ID = 0xFFFFFFFF
REDACTED_HOSTNAME = 'recorded-host'
MAX_NOTES_TEXT = 3000


class Recording:
    """Notes gathered while recording, each also logged once."""

    def __init__(self):
        self.notes = []

    def note(self, message, *args):
        text = message % args if args else message
        LOG.warning('%s', text)
        self.notes.append(text)


def record(nvml_module=None, sysfs_root='/sys', libvirt_uri=None,
           amdsmi_module=None, hostname=None, redact=True):
    """``(document, notes)``: the host as a format-1 reference host.

    ``nvml_module`` and ``amdsmi_module`` are the libraries (None: import
    them; absent ones are skipped with a note); ``libvirt_uri`` None skips
    libvirt. The result validates with :func:`_validate.validate`.
    """
    recording = Recording()
    pci = read_only.ReadOnlySysfs(sysfs_root)
    pci_devices = [_pci_device(pci, address, recording)
                   for address in _devices_of_interest(pci)]
    addresses = {entry['address'] for device in pci_devices
                 for entry in [device] + device.get('virtfns', [])}
    if not pci_devices:
        recording.note('no NVIDIA or AMD PCI device under %s/bus/pci',
                       sysfs_root)
    nvml = _nvml_section(nvml_module, pci, pci_devices, recording)
    nodedevs = _libvirt_section(libvirt_uri, addresses, recording)
    amdsmi = _amdsmi_section(amdsmi_module, pci, pci_devices, recording)
    hostname = hostname or socket.gethostname()
    document = {
        'format': _validate.FORMAT_VERSION,
        'name': _host_name(hostname),
        'description': '',
        'hostname': hostname,
        'nvml': nvml,
        'pci_devices': pci_devices,
        'libvirt_nodedevs': nodedevs,
        'amdsmi': amdsmi,
    }
    if redact:
        document = _redacted(document)
    document['description'] = _description(recording.notes, redact)
    return document, recording.notes


def _host_name(hostname):
    name = re.sub(r'[^a-z0-9-]+', '-', hostname.split('.')[0].lower())
    name = name.strip('-')[:63]
    return name or 'recorded'


def _description(notes, redact):
    text = ('Recorded by "gpu-partitions inventory --record" (read only). '
            '%s' % ('Identifiers redacted: hostname, GPU, MIG, vGPU and '
                    'mdev UUIDs replaced consistently. ' if redact else
                    'Identifiers kept as read (not redacted). '))
    if not notes:
        return text + 'Notes: none.'
    shown = []
    for note in notes:
        if sum(map(len, shown)) + len(note) > MAX_NOTES_TEXT:
            shown.append('and %d more (see the log)'
                         % (len(notes) - len(shown)))
            break
        shown.append(note)
    return text + 'Notes: ' + '; '.join(shown)


# --- sysfs ---------------------------------------------------------------

def _devices_of_interest(pci):
    """PFs (and devices without SR-IOV) of NVIDIA and AMD, by address."""
    return [address for address in pci.addresses()
            if pci.vendor(address) in VENDORS and not pci.physfn(address)]


def _hex(value):
    return '0x' + value.lower().removeprefix('0x') if value else None


def _attributes(pci, address):
    """The device's own keys as the format spells them."""
    entry = {}
    for key in ('vendor', 'device', 'class', 'subsystem_vendor',
                'subsystem_device'):
        value = _hex(pci.read(address, key))
        if value is not None and _validate.HEX_ID.match(value):
            entry[key] = value
    node = pci.read_int(address, 'numa_node')
    entry['numa_node'] = node if node is not None and node >= -1 else -1
    cpus = pci.read(address, 'local_cpulist')
    if cpus:
        entry['local_cpulist'] = cpus
    driver = pci.driver(address)
    if driver and _validate.NAME_COMPONENT.match(driver):
        entry['driver'] = driver
    group = pci.link_name(address, 'iommu_group')
    if group is not None and group.isdigit():
        entry['iommu_group'] = int(group)
    files = _files(pci, address)
    if files:
        entry['files'] = files
    mdevs = _mdevs(pci, address, files)
    if mdevs:
        entry['mdevs'] = mdevs
    return entry


def _files(pci, address):
    files = {}
    for name in DEVICE_FILES:
        content = _raw(pci, address, name)
        if content is not None and not (name == 'enable' and
                                        content == DEFAULT_ENABLE):
            files[name] = content
    for mdev_type in pci.list_names(address, 'mdev_supported_types'):
        if not _validate.NAME_COMPONENT.match(mdev_type):
            continue
        for name in MDEV_TYPE_FILES:
            path = 'mdev_supported_types/%s/%s' % (mdev_type, name)
            content = _raw(pci, address, path)
            if content is not None:
                files[path] = content
    return files


def _raw(pci, address, name):
    """A file's text as read (newline kept), None when unreadable."""
    try:
        with open(pci.device_path(address, name)) as stream:
            return stream.read(_validate.MAX_CONTENT)
    except (OSError, ValueError):
        return None


def _mdevs(pci, address, files):
    """Created mdevs under the device: directories with ``mdev_type``."""
    mdevs = []
    for name in pci.list_names(address):
        if not _validate.MDEV_UUID.match(name):
            continue
        mdev_type = pci.link_name(address, name + '/mdev_type')
        prefix = 'mdev_supported_types/%s/' % mdev_type
        if mdev_type and any(path.startswith(prefix) for path in files):
            mdevs.append({'uuid': name, 'type': mdev_type})
    return mdevs


def _pci_device(pci, address, recording):
    entry = {'address': address}
    entry.update(_attributes(pci, address))
    for key in ('vendor', 'device', 'class'):
        if key not in entry:
            recording.note('%s: sysfs gives no %s; recorded as 0x0',
                           address, key)
            entry[key] = '0x0'
    if pci.read(address, 'sriov_totalvfs') is not None:
        _sriov(pci, entry, recording)
    return entry


def _sriov(pci, pf, recording):
    address = pf['address']
    for key in ('sriov_totalvfs', 'sriov_offset', 'sriov_stride'):
        pf[key] = max(pci.read_int(address, key) or 0, 0)
    pf['sriov_vf_device'] = _hex(pci.read(address, 'sriov_vf_device')
                                 or pf['device'])
    vfs = []
    for _index, vf_address in pci.virtfns(address):
        if not pci.exists(vf_address):
            recording.note('%s: VF %s is listed but gone; recorded as '
                           'missing', address, vf_address)
            vfs.append({'address': vf_address, 'missing': True})
            continue
        vf = {'address': vf_address}
        vf.update(_attributes(pci, vf_address))
        vfs.append(vf)
    if not vfs and pci.read(address, 'sriov_numvfs') is None:
        return  # no sriov_numvfs file to say 0: no virtfns key either
    pf['virtfns'] = [_as_vf_entry(pf, vf, recording) for vf in vfs]
    _factor_vf_defaults(pf)
    if len(vfs) > pf['sriov_totalvfs']:
        recording.note('%s: %d VFs listed but sriov_totalvfs is %d; '
                       'recorded as %d', address, len(vfs),
                       pf['sriov_totalvfs'], len(vfs))
        pf['sriov_totalvfs'] = len(vfs)


def _as_vf_entry(pf, vf, recording):
    """Keep only what a VF entry may hold; say what differs and is lost."""
    if vf.get('missing'):
        return vf
    for key in ('vendor', 'subsystem_vendor', 'subsystem_device',
                'local_cpulist'):
        if vf.get(key) != pf.get(key):
            recording.note('%s: VF %s %s differs from its PF\'s and is '
                           'recorded as the PF\'s', pf['address'],
                           vf['address'], key)
    if vf.get('numa_node') == pf['numa_node']:
        del vf['numa_node']
    entry = {key: vf[key] for key in ('address', 'iommu_group', 'numa_node',
                                      'files', 'mdevs') if key in vf}
    entry['driver'] = vf.get('driver')
    entry['class'] = vf.get('class')  # folded into vf_defaults below
    if vf.get('device') != pf['sriov_vf_device']:
        recording.note('%s: VF %s device id %s differs from '
                       'sriov_vf_device', pf['address'], vf['address'],
                       vf.get('device'))
    return entry


def _factor_vf_defaults(pf):
    """Move what every present VF shares into ``vf_defaults``."""
    present = [vf for vf in pf['virtfns'] if not vf.get('missing')]
    defaults = {}
    if present:
        drivers = {vf['driver'] for vf in present}
        if len(drivers) == 1 and None not in drivers:
            defaults['driver'] = drivers.pop()
        classes = collections.Counter(vf['class'] for vf in present)
        common_class = classes.most_common(1)[0][0]
        if common_class and common_class != pf['class']:
            defaults['class'] = common_class
        shared = dict(present[0].get('files', {}))
        for vf in present[1:]:
            shared = {name: content for name, content in shared.items()
                      if vf.get('files', {}).get(name) == content}
        if shared:
            defaults['files'] = shared
    bound = any(vf['driver'] for vf in present)
    for vf in present:
        # Without a common driver each VF says its own; unbound is said
        # only beside bound VFs, absent when none is bound.
        if 'driver' in defaults or not (vf['driver'] or bound):
            del vf['driver']
        del vf['class']
        files = {name: content
                 for name, content in vf.pop('files', {}).items()
                 if name not in defaults.get('files', {})}
        if files:
            vf['files'] = files
    if defaults:
        pf['vf_defaults'] = defaults


# --- NVML ----------------------------------------------------------------

_RAISE = object()  # ``unsupported=_RAISE``: let NotSupported through


class _Lost(Exception):
    """The GPU answered GpuIsLost."""


def _import_pynvml():
    import pynvml
    return pynvml


def _nvml_section(module, pci, pci_devices, recording):
    has_nvidia = any(device['vendor'] == '0x10de' for device in pci_devices)
    if module is None:
        try:
            module = _import_pynvml()
        except ImportError as error:
            (recording.note if has_nvidia else LOG.info)(
                'NVML not recorded: pynvml (nvidia-ml-py) is not installed '
                '(%s)' % error)
            return None
    nvml = read_only.ReadOnlyModule(module, 'nvml', NVML_READERS)
    try:
        nvml.nvmlInit()
    except (module.NVMLError, OSError) as error:
        (recording.note if has_nvidia else LOG.info)(
            'NVML not recorded: nvmlInit failed (%s)' % error)
        return None
    try:
        return _NvmlRecorder(nvml, pci, pci_devices, recording).section()
    except read_only.MutationRefused:
        raise
    except Exception as error:
        # Host-wide calls (count, driver version) failing: no GPU is
        # known, so nothing of NVML can be kept.
        recording.note('NVML not recorded: %s: %s', type(error).__name__,
                       error)
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except module.NVMLError as error:
            LOG.debug('nvmlShutdown failed: %s', error)


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_bus_id(address):
    domain, rest = address.split(':', 1)
    return ('%08x:%s' % (int(domain, 16), rest)).upper()


class _NvmlRecorder:

    def __init__(self, nvml, pci, pci_devices, recording):
        self.nvml = nvml
        self.pci = pci
        self.pci_devices = pci_devices
        self.recording = recording

    def call(self, name, *args, unsupported=_RAISE):
        """``pynvml.<name>(*args)``; NotSupported raises unless an
        ``unsupported`` value is given to answer instead.
        """
        nvml = self.nvml
        try:
            return getattr(nvml, name)(*args)
        except nvml.NVMLError_GpuIsLost:
            raise _Lost(name)
        except nvml.NVMLError_NotSupported:
            if unsupported is _RAISE:
                raise
            return unsupported

    def section(self):
        nvml = self.nvml
        count = self.call('nvmlDeviceGetCount')
        handles, devices, lost, bus_ids = [], [], [], {}
        for index in range(count):
            handles.append(None)
            devices.append(None)
            try:
                handle = self.call('nvmlDeviceGetHandleByIndex', index)
                pci_info = self.call('nvmlDeviceGetPciInfo', handle)
                bus_ids[index] = _nvml_bus_id(
                    placement_traits.pci_address(_text(pci_info.busId)))
                devices[index] = self.device(index, handle, pci_info)
                self.check_consistent(devices[index])
                handles[index] = handle
            except read_only.MutationRefused:
                raise
            except Exception as error:
                self.lose(index, error, devices, lost)
        models = self.models(devices, handles, lost)
        self.fill_lost(devices, sorted(lost), models, bus_ids)
        kept = [device for device in devices if device is not None]
        for position, device in enumerate(kept):
            device['index'] = position
        return {
            'driver_version': _text(self.call(
                'nvmlSystemGetDriverVersion')),
            'models': models,
            'devices': kept,
            'nvlink_cliques': self.cliques(devices, handles, nvml),
        }

    def lose(self, index, error, devices, lost):
        """Record GPU ``index`` as lost: its state is unknown."""
        # Any GPU may fail in any way; the drivers count a lost GPU's
        # units as in use, never as free.
        if not isinstance(error, _Lost):
            self.recording.note(
                'GPU %d: reading it failed (%s: %s); recorded as lost '
                '(unknown state)', index, type(error).__name__, error)
        devices[index] = None
        lost.append(index)

    def device(self, index, handle, pci_info):
        memory = self.call('nvmlDeviceGetMemoryInfo', handle)
        mig_mode = self.call('nvmlDeviceGetMigMode', handle,
                             unsupported=None)
        architecture = self.call('nvmlDeviceGetArchitecture', handle,
                                 unsupported=0)
        capability = self.call('nvmlDeviceGetCudaComputeCapability', handle,
                               unsupported=(0, 0))
        name = _text(self.call('nvmlDeviceGetName', handle))
        return {
            'index': index,
            'model': name,
            'uuid': _text(self.call('nvmlDeviceGetUUID', handle)),
            'name': name,
            'pci_bus_id': _nvml_bus_id(placement_traits.pci_address(
                _text(pci_info.busId))),
            'pci_device_id': '0x%08X' % pci_info.pciDeviceId,
            'pci_subsystem_id': '0x%08X' % pci_info.pciSubSystemId,
            'memory_total': int(memory.total),
            'memory_used': int(memory.used),
            'architecture': int(architecture),
            'cuda_capability': [int(part) for part in capability],
            'mig_mode': [int(mode) for mode in mig_mode]
            if mig_mode is not None else None,
            'gpu_instances': [],  # filled once the profiles are known
            'virtualization_mode': int(self.call(
                'nvmlDeviceGetVirtualizationMode', handle, unsupported=0)),
            'host_vgpu_mode': self.call('nvmlDeviceGetHostVgpuMode', handle,
                                        unsupported=None),
            'supported_vgpus': [int(t) for t in self.call(
                'nvmlDeviceGetSupportedVgpus', handle, unsupported=[])],
            'creatable_vgpus': [int(t) for t in self.call(
                'nvmlDeviceGetCreatableVgpus', handle, unsupported=[])],
            'active_vgpus': self.active_vgpus(handle),
            'nvlink': self.nvlink(handle),
        }

    @staticmethod
    def check_consistent(device):
        """Refuse vGPU answers that contradict each other (a GPU whose
        answers cannot all be true is in an unknown state).
        """
        supported = set(device['supported_vgpus'])
        stray = (set(device['creatable_vgpus']) |
                 {active['type_id'] for active in device['active_vgpus']}
                 ) - supported
        if stray:
            raise ValueError('vGPU types %s are creatable or running but '
                             'not supported' % sorted(stray))

    def active_vgpus(self, handle):
        active = []
        for instance in self.call('nvmlDeviceGetActiveVgpus', handle,
                                  unsupported=[]):
            entry = {
                'id': int(instance),
                'type_id': int(self.call('nvmlVgpuInstanceGetType',
                                         instance)),
                'vf_pci_bus_id': _text(self.call(
                    'nvmlVgpuInstanceGetGpuPciId', instance)).upper(),
                'uuid': _text(self.call('nvmlVgpuInstanceGetUUID',
                                        instance)),
            }
            gpu_instance = self.call('nvmlVgpuInstanceGetGpuInstanceId',
                                     instance, unsupported=None)
            if gpu_instance not in (None, INVALID_GPU_INSTANCE_PROFILE_ID):
                entry['gpu_instance_id'] = int(gpu_instance)
            mdev = self.call('nvmlVgpuInstanceGetMdevUUID', instance,
                             unsupported=None)
            if mdev and _validate.MDEV_UUID.match(_text(mdev)):
                entry['mdev_uuid'] = _text(mdev)
            active.append(entry)
        return active

    def nvlink(self, handle):
        nvml = self.nvml
        states = []
        for link in range(nvml.NVML_NVLINK_MAX_LINKS):
            try:
                states.append(self.call('nvmlDeviceGetNvLinkState', handle,
                                        link))
            except nvml.NVMLError_NotSupported:
                if not states:
                    return None
                break
            except nvml.NVMLError_InvalidArgument:
                break
        if not states:
            return None
        active = [link for link, state in enumerate(states) if state]
        remote = 0
        if active:
            remote = self.call('nvmlDeviceGetNvLinkRemoteDeviceType',
                               handle, active[0], unsupported=0)
        if active != list(range(len(active))):
            self.recording.note(
                'NVLink of a GPU has inactive links among active ones; '
                'format 1 records the count (%d of %d) only',
                len(active), len(states))
        return {'link_count': len(states), 'active_link_count': len(active),
                'remote_device_type': int(remote)}

    # --- per model: MIG profiles and vGPU types --------------------------

    def models(self, devices, handles, lost):
        """The models' tables, and each MIG GPU's instances; a GPU whose
        MIG or vGPU state cannot be read becomes lost.
        """
        models = {}
        for index, (device, handle) in enumerate(zip(devices, handles)):
            if device is None:
                continue
            tables = models.setdefault(device['model'], {
                'gpu_instance_profiles': [], 'vgpu_types': []})
            try:
                if device['mig_mode'] and device['mig_mode'][0] == 1:
                    if not tables['gpu_instance_profiles']:
                        tables['gpu_instance_profiles'] = self.profiles(
                            handle)
                    device['gpu_instances'] = self.gpu_instances(
                        handle, tables['gpu_instance_profiles'])
                self.vgpu_types(handle, device, tables)
            except read_only.MutationRefused:
                raise
            except Exception as error:
                self.lose(index, error, devices, lost)
        for tables in models.values():
            tables['vgpu_types'].sort(key=lambda t: t['id'])
        return models

    def profiles(self, handle):
        nvml = self.nvml
        profiles = []
        for index in range(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = self.call('nvmlDeviceGetGpuInstanceProfileInfo',
                                 handle, index)
            except (nvml.NVMLError_NotSupported,
                    nvml.NVMLError_InvalidArgument):
                continue
            count = ctypes.c_uint(0)
            self.call('nvmlDeviceGetGpuInstancePossiblePlacements', handle,
                      info.id, None, ctypes.byref(count))
            buffer = (nvml.c_nvmlGpuInstancePlacement_t * count.value)()
            self.call('nvmlDeviceGetGpuInstancePossiblePlacements', handle,
                      info.id, buffer, ctypes.byref(count))
            profiles.append({
                'index': index, 'id': int(info.id),
                'name': _text(info.name),
                'slice_count': int(info.sliceCount),
                'instance_count': int(info.instanceCount),
                'memory_mb': int(info.memorySizeMB),
                'multiprocessor_count': int(info.multiprocessorCount),
                'placements': [[p.start, p.size]
                               for p in buffer[:count.value]]})
        return profiles

    def gpu_instances(self, handle, profiles):
        nvml = self.nvml
        uuids = self.mig_device_uuids(handle)
        found = []
        for profile in profiles:
            buffer = (nvml.c_nvmlGpuInstance_t *
                      max(profile['instance_count'], 1))()
            count = ctypes.c_uint(0)
            self.call('nvmlDeviceGetGpuInstances', handle, profile['id'],
                      buffer, ctypes.byref(count))
            for gpu_instance in buffer[:count.value]:
                info = self.call('nvmlGpuInstanceGetInfo', gpu_instance)
                found.append({
                    'id': int(info.id), 'profile_id': int(info.profileId),
                    'start': int(info.placement.start),
                    'size': int(info.placement.size),
                    'compute_instances': self.compute_instances(
                        gpu_instance, int(info.id), uuids)})
        return sorted(found, key=lambda gi: (gi['start'], gi['id']))

    def compute_instances(self, gpu_instance, gi_id, uuids):
        nvml = self.nvml
        found = []
        for index in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                info = self.call(
                    'nvmlGpuInstanceGetComputeInstanceProfileInfo',
                    gpu_instance, index,
                    nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            except nvml.NVMLError:
                continue
            buffer = (nvml.c_nvmlComputeInstance_t *
                      max(info.instanceCount, 1))()
            count = ctypes.c_uint(0)
            self.call('nvmlGpuInstanceGetComputeInstances', gpu_instance,
                      info.id, buffer, ctypes.byref(count))
            for compute in buffer[:count.value]:
                ci = self.call('nvmlComputeInstanceGetInfo', compute)
                found.append({
                    'id': int(ci.id), 'profile_id': int(ci.profileId),
                    'start': int(ci.placement.start),
                    'size': int(ci.placement.size),
                    'uuid': uuids.get((gi_id, int(ci.id)), 'unknown')})
        return sorted(found, key=lambda ci: ci['id'])

    def mig_device_uuids(self, handle):
        """``{(gpu instance id, compute instance id): MIG uuid}``."""
        nvml = self.nvml
        uuids = {}
        for index in range(self.call('nvmlDeviceGetMaxMigDeviceCount',
                                     handle, unsupported=0)):
            try:
                mig = self.call('nvmlDeviceGetMigDeviceHandleByIndex',
                                handle, index)
            except nvml.NVMLError:
                continue
            key = (int(self.call('nvmlDeviceGetGpuInstanceId', mig)),
                   int(self.call('nvmlDeviceGetComputeInstanceId', mig)))
            uuids[key] = _text(self.call('nvmlDeviceGetUUID', mig))
        return uuids

    def vgpu_types(self, handle, device, tables):
        known = {vgpu_type['id'] for vgpu_type in tables['vgpu_types']}
        profile_ids = {p['id'] for p in tables['gpu_instance_profiles']}
        dropped = []
        for type_id in device['supported_vgpus']:
            if type_id in known:
                continue
            profile = self.call('nvmlVgpuTypeGetGpuInstanceProfileId',
                                type_id)
            profile = (None if profile in (None,
                                           INVALID_GPU_INSTANCE_PROFILE_ID)
                       else int(profile))
            if profile is not None and profile not in profile_ids:
                dropped.append(type_id)
                continue
            tables['vgpu_types'].append({
                'id': type_id,
                'name': _text(self.call('nvmlVgpuTypeGetName', type_id)),
                'class': _text(self.call('nvmlVgpuTypeGetClass', type_id)),
                'framebuffer_mb': int(self.call(
                    'nvmlVgpuTypeGetFramebufferSize', type_id)) // 2 ** 20,
                'max_instances': int(self.call(
                    'nvmlVgpuTypeGetMaxInstances', handle, type_id,
                    unsupported=0)),
                'gpu_instance_profile_id': profile})
            known.add(type_id)
        if dropped:
            self.recording.note(
                'GPU %s: MIG-backed vGPU types %s left out: no GPU of the '
                'model has MIG enabled, so NVML gives no profile table',
                device['pci_bus_id'], ', '.join(map(str, dropped)))
            for key in ('supported_vgpus', 'creatable_vgpus'):
                device[key] = [t for t in device[key] if t not in dropped]

    # --- lost GPUs and NVLink cliques ------------------------------------

    def fill_lost(self, devices, lost, models, bus_ids):
        """Place each lost GPU at its bus id if NVML gave it, else at the
        NVIDIA GPU of sysfs NVML did not name.
        """
        by_address = {entry['address']: entry for entry in self.pci_devices}
        named = {_validate.nvml_bus_id_to_address(bus_id)
                 for bus_id in bus_ids.values()}
        unnamed = [entry for entry in self.pci_devices
                   if entry['vendor'] == '0x10de' and
                   entry['class'].startswith(GPU_CLASS_PREFIXES) and
                   entry['address'] not in named]
        for index in lost:
            known = bus_ids.get(index)
            if known is not None:
                entry = by_address.get(_validate.nvml_bus_id_to_address(
                    known))
            else:
                entry = unnamed.pop(0) if unnamed else None
            if entry is None:
                self.recording.note(
                    'GPU %d is lost and no NVIDIA GPU in sysfs matches it; '
                    'left out', index)
                continue
            device_id = entry['device'].removeprefix('0x').upper()
            model = next((device['model'] for device in devices
                          if device is not None and
                          device['pci_device_id'][2:6] == device_id.zfill(4)
                          ), None)
            if model is None:
                model = 'unknown'
                models.setdefault(model, {'gpu_instance_profiles': [],
                                          'vgpu_types': []})
            self.recording.note(
                'GPU %d is lost: NVML answers nothing more about it; '
                'recorded at %s%s', index, entry['address'],
                '' if known else ' (the NVIDIA GPU of sysfs NVML did not '
                'name)')
            devices[index] = {
                'index': index, 'model': model,
                'uuid': 'GPU-lost-%d' % index, 'name': 'unknown (lost)',
                'pci_bus_id': _nvml_bus_id(entry['address']),
                'pci_device_id': '0x%s%s' % (device_id.zfill(4),
                                             entry['vendor'][2:].upper()),
                'pci_subsystem_id': '0x%s%s' % (
                    entry.get('subsystem_device', '0x0')[2:].upper().zfill(
                        4), entry.get('subsystem_vendor', '0x0')[
                        2:].upper().zfill(4)),
                'memory_total': 0, 'memory_used': 0, 'architecture': 0,
                'cuda_capability': [0, 0], 'mig_mode': None,
                'gpu_instances': [], 'virtualization_mode': 0,
                'host_vgpu_mode': None, 'supported_vgpus': [],
                'creatable_vgpus': [], 'active_vgpus': [], 'nvlink': None,
                'lost': True}

    def cliques(self, devices, handles, nvml):
        """NVLink P2P as the maximal cliques of the peer relation, so a
        partial mesh is recorded exactly (a GPU may be in several).
        """
        peers = collections.defaultdict(set)
        live = [(position, handle) for position, (device, handle)
                in enumerate(zip(devices, handles))
                if handle is not None and device is not None and
                device['nvlink'] is not None]
        for first, (a, handle_a) in enumerate(live):
            for b, handle_b in live[first + 1:]:
                try:
                    status = self.call(
                        'nvmlDeviceGetP2PStatus', handle_a, handle_b,
                        nvml.NVML_P2P_CAPS_INDEX_NVLINK)
                except read_only.MutationRefused:
                    raise
                except Exception as error:
                    self.recording.note(
                        'NVLink P2P between GPUs %d and %d unreadable (%s: '
                        '%s); recorded as none', a, b, type(error).__name__,
                        error)
                    continue
                if status == nvml.NVML_P2P_STATUS_OK:
                    peers[a].add(b)
                    peers[b].add(a)
        groups = _maximal_cliques(peers)
        renumber = {}
        for device in devices:
            if device is not None:
                renumber[device['index']] = len(renumber)
        return [[renumber[i] for i in group if i in renumber]
                for group in groups]


# --- libvirt -------------------------------------------------------------

def _libvirt_section(uri, addresses, recording):
    """``<device>`` XML of the PCI devices recorded and their mdevs."""
    if uri is None:
        return None
    try:
        import libvirt
    except ImportError as error:
        recording.note('libvirt not recorded: libvirt-python is not '
                       'installed (%s)', error)
        return None
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    try:
        connection = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as error:
        recording.note('libvirt not recorded: cannot open %s read-only '
                       '(%s)', uri, error)
        return None
    try:
        devices = connection.listAllDevices(0)
    except libvirt.libvirtError as error:
        recording.note('libvirt not recorded: cannot list node devices of '
                       '%s (%s)', uri, error)
        connection.close()
        return None
    wanted = {'pci_' + re.sub(r'[:.]', '_', address)
              for address in addresses}
    found = []
    try:
        for device in devices:
            try:
                name = device.name()
                if not (name in wanted or name.startswith('mdev_')):
                    continue
                xml = device.XMLDesc(0)
            except libvirt.libvirtError as error:
                recording.note('a libvirt node device vanished while being '
                               'read; left out (%s)', error)
                continue
            element = _without_vpd(xml, recording)
            if element is None:
                continue
            if name.startswith('mdev_') and \
                    element.findtext('parent') not in wanted:
                continue
            found.append((name, ElementTree.tostring(
                element, encoding='unicode')))
    finally:
        connection.close()
    return [xml for _name, xml in sorted(found)]


def _without_vpd(xml, recording):
    """The device element without its VPD (serial and part numbers)."""
    try:
        element = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        recording.note('a libvirt node device has unparsable XML; left out '
                       '(%s)', error)
        return None
    for parent in element.iter():
        for child in list(parent):
            if child.tag == 'capability' and child.get('type') == 'vpd':
                parent.remove(child)
    return element


# --- AMD SMI -------------------------------------------------------------

def _amdsmi_section(module, pci, pci_devices, recording):
    has_amd = any(device['vendor'] == '0x1002' for device in pci_devices)
    if module is None:
        if not has_amd:
            return None
        from cyborg_gpu_drivers.adapters import amdsmi as amdsmi_adapter
        module, reason = amdsmi_adapter.import_amdsmi()
        if module is None:
            recording.note('AMD SMI not recorded: amdsmi cannot be '
                           'imported (%s)', reason)
            return None
    smi = read_only.ReadOnlyModule(module, 'amdsmi', AMDSMI_READERS)
    try:
        smi.amdsmi_init()
    except read_only.MutationRefused:
        raise
    except Exception as error:
        recording.note('AMD SMI not recorded: amdsmi_init failed (%s)',
                       error)
        return None
    try:
        handles = smi.amdsmi_get_processor_handles()
        gpus = []
        for handle in handles:
            try:
                gpus.append(_amd_gpu(smi, handle, pci, recording))
            except read_only.MutationRefused:
                raise
            except Exception as error:
                recording.note('an AMD GPU failed while being read (%s: '
                               '%s); left out of amdsmi, the drivers fall '
                               'back to sysfs for it',
                               type(error).__name__, error)
    except read_only.MutationRefused:
        raise
    except Exception as error:
        recording.note('AMD SMI not recorded: listing the GPUs failed (%s)',
                       error)
        return None
    finally:
        try:
            smi.amdsmi_shut_down()
        except Exception:  # nothing to undo
            pass
    hives = {gpu['xgmi']['xgmi_hive_id'] for gpu in gpus}
    link_type = 'XGMI' if len(gpus) > 1 and len(hives) == 1 and \
        0 not in hives else 'PCIE'
    if gpus:
        recording.note('amdsmi.link_type %s is derived from the hive ids, '
                       'not read', link_type)
    return {'gpus': gpus, 'link_type': link_type}


def _mode(value, allowed):
    """``SPX`` from ``SPX``, ``AMDSMI_COMPUTE_PARTITION_SPX`` or an enum."""
    text = str(getattr(value, 'name', value)).strip().upper()
    mode = text.rsplit('_', 1)[-1]
    if mode not in allowed:
        raise ValueError('unknown partition mode %r' % text)
    return mode


def _amd_gpu(smi, handle, pci, recording):
    address = smi.amdsmi_get_gpu_device_bdf(handle).strip().lower()
    xgmi = smi.amdsmi_get_xgmi_info(handle)
    memory = _mode(smi.amdsmi_get_gpu_memory_partition(handle),
                   _validate.MEMORY_MODES)
    caps = None
    try:
        config = smi.amdsmi_get_gpu_memory_partition_config(handle)
        caps = [_mode(cap, _validate.MEMORY_MODES)
                for cap in config.get('partition_caps', ())]
    except read_only.MutationRefused:
        raise
    except Exception as error:  # absent in GIM's library, or failing
        LOG.debug('amdsmi_get_gpu_memory_partition_config: %s', error)
    if not caps:
        caps = [memory]
        recording.note('%s: memory_partition_caps not readable through '
                       'amdsmi; recorded as the current mode only', address)
    num_vf = smi.amdsmi_get_num_vf(handle)
    links = dict(pci.virtfns(address))
    partitions = []
    for partition in smi.amdsmi_get_vf_partition_info(handle):
        vf_id = int(partition['vf_id'])
        if vf_id not in links:
            raise ValueError('VF %d of %s has no virtfn%d link in sysfs'
                             % (vf_id, address, vf_id))
        partitions.append({
            'vf_id': vf_id,
            'bdf': links[vf_id],
            'fb': {'fb_offset': int(partition['fb']['fb_offset']),
                   'fb_size': int(partition['fb']['fb_size'])}})
    return {
        'bdf': address,
        'market_name': str(smi.amdsmi_get_gpu_asic_info(handle).get(
            'market_name') or 'unknown'),
        'xgmi': {key: int(xgmi.get(key) or 0) for key in (
            'xgmi_hive_id', 'xgmi_node_id', 'xgmi_lanes', 'index')},
        'compute_partition': _mode(
            smi.amdsmi_get_gpu_compute_partition(handle),
            _validate.PARTITION_MODES),
        'memory_partition': memory,
        'memory_partition_caps': caps,
        'num_vf': {key: int(num_vf[key]) for key in (
            'num_vf_enabled', 'num_vf_supported')},
        'vf_partitions': partitions,
    }


# --- redaction -----------------------------------------------------------

_UUID_PARTS = (r'[0-9a-fA-F]{8}', r'[0-9a-fA-F]{4}', r'[0-9a-fA-F]{4}',
               r'[0-9a-fA-F]{4}', r'[0-9a-fA-F]{12}')
_UUID_TEXT = re.compile('-'.join(_UUID_PARTS))
# libvirt names an mdev node device mdev_<uuid with _>_<parent>.
_MDEV_NAME = re.compile('mdev_(%s)' % '_'.join(_UUID_PARTS))


def _redacted(document):
    """The document with identifiers replaced, the same one everywhere.

    Every UUID (GPU-, MIG-, vGPU and mdev UUIDs, also in libvirt's
    ``mdev_<uuid>`` names) becomes ``00000000-0000-4000-8000-<n>``
    numbered in order of appearance; the hostname becomes
    ``recorded-host``.
    """
    mapping = {}

    def pseudonym(value):
        value = value.lower()
        if value not in mapping:
            mapping[value] = '00000000-0000-4000-8000-%012x' % (
                len(mapping) + 1)
        return mapping[value]

    def scrub(value):
        if isinstance(value, dict):
            return {scrub(key): scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [scrub(item) for item in value]
        if not isinstance(value, str):
            return value
        value = _MDEV_NAME.sub(lambda match: 'mdev_' + pseudonym(
            match.group(1).replace('_', '-')).replace('-', '_'), value)
        return _UUID_TEXT.sub(lambda match: pseudonym(match.group(0)),
                              value)

    redacted = scrub(document)
    redacted['hostname'] = REDACTED_HOSTNAME
    redacted['name'] = REDACTED_HOSTNAME
    return redacted


def _maximal_cliques(peers):
    """Every maximal set of pairwise peers (Bron-Kerbosch, small graphs),
    sorted; listing them keeps exactly the pairs in ``peers``.
    """
    found = []

    def extend(clique, candidates, excluded):
        if not candidates and not excluded:
            if len(clique) > 1:
                found.append(sorted(clique))
            return
        for node in sorted(candidates):
            extend(clique | {node}, candidates & peers[node],
                   excluded & peers[node])
            candidates = candidates - {node}
            excluded = excluded | {node}

    extend(set(), set(peers), set())
    return sorted(found)
