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
"""Cyborg driver for AMD MxGPU: SR-IOV VFs of Instinct GPUs run by GIM.

GIM, AMD's host driver, splits each GPU into VFs itself (its ``vf_num``
module parameter, with the compute and memory partition modes from
``/etc/gim_config``); this driver reports them and writes nothing. Per
physical GPU bound to ``gim`` it reports one deployable whose attach
handles are the GPU's VFs bound to ``vfio-pci``: all VFs of a GPU are the
same size, fixed by the compute partition mode, so the resource class is
per (model, compute partition), e.g. ``CUSTOM_GPU_VF_MI300X_CPX``.

In use: vfio-pci enables a VF's PCI device when a user (QEMU) opens it and
disables it when the user lets go, so the VF's sysfs ``enable`` count is
non-zero exactly while a guest holds it. That is all the hardware tells:
an instance that is stopped holds its VF in Placement and Cyborg but not
in the kernel. The report keeps every VF it can see, so inventory only
drops when a VF leaves vfio-pci or GIM removes it (``sriov_numvfs``); a
VF that vanishes in the middle of a scan, or whose ``virtfnN`` link is
lost, keeps its last report (none: the GPU is a stub), a VF whose
``enable`` cannot be read counts as in use, and a GPU whose state cannot
be read is reported as a stub so Cyborg keeps what it holds for it (the
scan skeleton of :mod:`cyborg_gpu_drivers.base`).

The logic (:func:`build_gpu` and helpers) is plain Python over what the
adapters read: :mod:`~cyborg_gpu_drivers.adapters.udev` or
:mod:`~cyborg_gpu_drivers.adapters.sysfs` for PCI, and
:mod:`~cyborg_gpu_drivers.adapters.amdsmi` for partitions and hives.
"""

import dataclasses
import re

from oslo_config import cfg
from oslo_log import log as logging

from cyborg_gpu_drivers.adapters import amdsmi as amdsmi_adapter
from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers.adapters import udev as udev_adapter
from cyborg_gpu_drivers import base
from cyborg_gpu_drivers import conf  # noqa: F401 (registers the options)
from cyborg_gpu_drivers import inventory
import placement_traits

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

AMD_VENDOR_ID = '1002'
GIM_DRIVER = 'gim'
# PCI class codes of Instinct PFs: display controllers and processing
# accelerators (MI300X: 0x120000).
GPU_CLASSES = ('0x03', '0x12')
VFIO_DRIVER = 'vfio-pci'
DEFAULT_SYSFS_ROOT = '/sys'

COMPUTE_PARTITIONS = ('SPX', 'DPX', 'TPX', 'QPX', 'CPX')
MEMORY_PARTITIONS = ('NPS1', 'NPS2', 'NPS4', 'NPS8')

# PF device id -> (model, HBM in MiB; 0 where not recorded). Ids from
# GIM's libgv/core/amdgv_marketing_name.c; 75a3 from a recorded MI355X
# host (issue #15: amdsmi's market name "AMD Instinct MI355X").
KNOWN_MODELS = {
    '74a1': ('AMD Instinct MI300X', 192 * 1024),
    '74a2': ('AMD Instinct MI308X', 0),
    '74a5': ('AMD Instinct MI325X', 256 * 1024),
    '74a8': ('AMD Instinct MI308X', 0),
    '74a9': ('AMD Instinct MI300X HF', 192 * 1024),
    '75a3': ('AMD Instinct MI355X', 288 * 1024),
}

# Model (short name) -> the (VFs per GPU, compute mode, memory mode) GIM
# supports under MxGPU. From AMD's GIM release notes: 9.4.0.K ("VF per
# GPU - Compute Mode - Memory Mode": MI300X 1-SPX-NPS1 and 8-CPX-NPS4;
# MI325X 1-SPX-NPS1; MI350X/MI355X 1-SPX-NPS1, 2-DPX-NPS2, 8-CPX-NPS2)
# and 8.5.0.K ("Partition Mode Support": MI35XX also 1 VF in DPX and in
# CPX with NPS1). https://github.com/amd/MxGPU-Virtualization/releases
# A model not listed (MI308X, MI300X HF, a model named by amdsmi or by
# [amd_mxgpu] models) is not checked: AMD documents no table for it.
_MI35X_MODES = frozenset({(1, 'SPX', 'NPS1'), (2, 'DPX', 'NPS2'),
                          (8, 'CPX', 'NPS2'), (1, 'DPX', 'NPS1'),
                          (1, 'CPX', 'NPS1')})
SUPPORTED_MODES = {
    'MI300X': frozenset({(1, 'SPX', 'NPS1'), (8, 'CPX', 'NPS4')}),
    'MI325X': frozenset({(1, 'SPX', 'NPS1')}),
    'MI350X': _MI35X_MODES,
    'MI355X': _MI35X_MODES,
}

# GIM writes these under the PF; bare-metal amdgpu has the second names.
COMPUTE_FILES = ('spatial_partition_mode', 'current_compute_partition')
MEMORY_FILES = ('memory_partition_mode', 'current_memory_partition')
_HIVE_FILE = 'xgmi_hive_info/xgmi_hive_id'
_DEVICE_ID = re.compile(r'^(0x)?[0-9a-fA-F]{4}$')


class AmdConfigError(ValueError):
    """An option of the [amd_mxgpu] group has a value the driver refuses."""


# --- plain data the adapters fill --------------------------------------


@dataclasses.dataclass(frozen=True)
class VfView:
    """One ``virtfnN`` link of a PF and what sysfs shows behind it.

    ``present`` is False when the link dangles (the VF vanished during the
    scan). ``open_count`` is the VF's PCI ``enable`` count.
    """
    index: int
    address: str
    present: bool
    driver: str | None = None
    open_count: int | None = None


@dataclasses.dataclass(frozen=True)
class PfView:
    """What the scan read for one GIM physical function."""
    address: str
    device_id: str
    numa_node: int | None
    compute_partition: str | None
    memory_partition: str | None
    xgmi_hive_id: int | None
    market_name: str | None
    vfs: tuple
    #: ``sriov_numvfs``; None when it cannot be read.
    numvfs: int | None = 0


# --- plain logic ----------------------------------------------------------


def parse_memory_partition(text):
    """The NPS mode out of a memory partition file, or None.

    GIM's ``memory_partition_mode`` has several lines, the mode on the
    first: ``memory_partition_mode: NPS4`` / ``numa_count: 4`` /
    ``NUMA0 type=HBM start=... end=...``. Bare-metal amdgpu's
    ``current_memory_partition`` holds the mode alone (``NPS1``).
    """
    if not text:
        return None
    for line in text.splitlines():
        key, colon, value = line.partition(':')
        if colon and key.strip().lower() == 'memory_partition_mode':
            return _mode(value, MEMORY_PARTITIONS)
    return _mode(text, MEMORY_PARTITIONS)


def parse_compute_partition(text):
    """``SPX``..``CPX`` from a compute partition file, or None."""
    return _mode(text, COMPUTE_PARTITIONS) if text else None


def _mode(text, allowed):
    words = str(text).split()
    if len(words) == 1 and words[0].upper() in allowed:
        return words[0].upper()
    return None


def parse_hive_id(text):
    """A decimal or ``0x`` hive id from sysfs; None for none or 0."""
    try:
        value = int(str(text).strip(), 0)
    except (TypeError, ValueError):
        return None
    return value or None


def slice_name(model, compute_partition):
    """The VF kind, ``MI300X-CPX``.

    With the host and the PF address it names the provider, so the name
    is stable across restarts.
    """
    return '%s-%s' % (placement_traits.normalize(
        placement_traits.model_short_name(model)), compute_partition)


def gpu_traits(model, pf):
    traits = [placement_traits.vendor_trait(AMD_VENDOR_ID),
              placement_traits.model_trait(model),
              placement_traits.compute_partition_trait(pf.compute_partition)]
    if pf.memory_partition:
        traits.append(placement_traits.memory_partition_trait(
            pf.memory_partition))
    numa = placement_traits.numa_node_trait(pf.numa_node)
    if numa:
        traits.append(numa)
    if pf.xgmi_hive_id:
        traits.append(placement_traits.xgmi_hive_trait(pf.xgmi_hive_id))
    return traits


def vf_handles(pf, previous, note):
    """The attach handles of a PF's VFs, in VF-index order.

    ``previous`` maps VF addresses to the handles of the last report: a VF
    that vanished during this scan keeps its handle until the next scan
    tells (a VF really gone is past ``sriov_numvfs`` and no longer listed,
    so one listed but absent is a race or a broken link, not a new
    state). ``note(key, message)``
    logs one line per problem.
    """
    handles = []
    for vf in pf.vfs:
        where = 'VF %s (virtfn%d of %s)' % (vf.address, vf.index, pf.address)
        if not vf.present:
            kept = previous.get(vf.address)
            note(vf.address, '%s vanished during the scan; %s' % (
                where, 'its last report is kept until the next scan'
                if kept else 'not offered'))
            if kept:
                handles.append(kept)
            continue
        if vf.driver != VFIO_DRIVER:
            # A VF with no driver (no link, or one that dangles) is left
            # out only when idle: an open one, or one whose open count
            # cannot be read, may be a guest's behind a broken link or in
            # the middle of a rebind.
            open_ = vf.driver is None and vf.open_count != 0
            note(vf.address, '%s is bound to %s, not %s: not offered%s; '
                 'bind it to %s to offer it' % (
                     where, vf.driver or 'no driver', VFIO_DRIVER,
                     ' (open, or its open count unreadable: counted in use)'
                     if open_ else '', VFIO_DRIVER))
            if open_:
                handles.append(inventory.AttachHandle(
                    attach_type=inventory.PCI, address=vf.address,
                    in_use=True))
            continue
        # An unreadable ``enable`` (None) is unknown: counted in use.
        handles.append(inventory.AttachHandle(
            attach_type=inventory.PCI, address=vf.address,
            in_use=vf.open_count is None or bool(vf.open_count)))
    return handles


def build_gpu(pf, model, memory_mib, previous, note):
    """The :class:`inventory.Gpu` of one PF whose compute mode is known."""
    handles = vf_handles(pf, previous, note)
    gpu = inventory.Gpu(
        address=pf.address, vendor_id=AMD_VENDOR_ID, device_id=pf.device_id,
        model=model, memory_mib=memory_mib, numa_node=pf.numa_node,
        link_domain=('%x' % pf.xgmi_hive_id) if pf.xgmi_hive_id else None,
        traits=gpu_traits(model, pf),
        board_info={key: value for key, value in (
            ('compute_partition', pf.compute_partition),
            ('memory_partition', pf.memory_partition),
            ('market_name', pf.market_name),
            ('vf_count', len(pf.vfs))) if value is not None})
    if handles:
        gpu.slices.append(inventory.Slice(
            name=slice_name(model, pf.compute_partition),
            resource_class=placement_traits.vf_resource_class(
                model, pf.compute_partition),
            traits=[], handles=handles, total=len(handles)))
    else:
        note(pf.address, 'GPU %s (%s) has no VF bound to %s: nothing '
             'offered; GIM creates the VFs (vf_num), bind them to %s'
             % (pf.address, model, VFIO_DRIVER, VFIO_DRIVER))
    return gpu


def partition_mode_error(model, compute, memory, vf_count):
    """Why GIM cannot run ``model`` with these modes and VF count, or
    None when it can or when AMD documents no table for the model.

    ``memory`` None (unreadable) is not held against the GPU, nor 0 VFs
    (GIM has not created them yet: nothing is offered anyway).
    """
    supported = SUPPORTED_MODES.get(placement_traits.normalize(
        placement_traits.model_short_name(model)))
    if supported is None or not vf_count or any(
            (vfs, mode) == (vf_count, compute) and memory in (nps, None)
            for vfs, mode, nps in supported):
        return None
    return ('%d VFs in %s/%s is not a partitioning GIM supports on %s; '
            'supported (VFs-compute-memory, GIM release notes): %s' % (
                vf_count, compute, memory or 'unknown memory mode', model,
                ', '.join('%d-%s-%s' % mode for mode in sorted(supported))))


def parse_models(value):
    """``[amd_mxgpu] models`` checked; raises AmdConfigError naming it."""
    models = {}
    for device_id, model in (value or {}).items():
        if not _DEVICE_ID.match(device_id.strip()):
            raise AmdConfigError(
                '[amd_mxgpu] models: %r is not a PCI device id; allowed: 4 '
                'hex digits such as 74a1' % device_id)
        try:
            placement_traits.model_trait(model)
        except placement_traits.InvalidName:
            raise AmdConfigError(
                '[amd_mxgpu] models: %r for %s gives no Placement name; '
                'allowed: letters, digits, spaces and -' % (model, device_id))
        models[device_id.strip().lower().removeprefix('0x')] = (
            model.strip(), 0)
    return models


# --- the driver ------------------------------------------------------------


class AmdMxgpuDriver(base.GpuPartitionDriver):
    """Reports the VFs of AMD Instinct GPUs bound to GIM."""

    DRIVER_NAME = 'gpu_partitions_amd_mxgpu'

    def __init__(self, hostname=None, nvml=None, sysfs_root=None,
                 libvirt_uri=None, amdsmi=None, read_only=True):
        # GIM makes the VFs: this driver never writes, read only or not.
        super().__init__(hostname=hostname, read_only=read_only)
        options = CONF.amd_mxgpu
        configured = parse_models(options.models)
        for device_id in sorted(set(configured) & set(KNOWN_MODELS)):
            if configured[device_id][0] != KNOWN_MODELS[device_id][0]:
                LOG.warning('AMD MxGPU driver: [amd_mxgpu] models entry %s '
                            'ignored: the driver names it "%s" and a new '
                            'name would rename resource classes under '
                            'existing flavors', device_id,
                            KNOWN_MODELS[device_id][0])
        self._models = dict(configured)
        self._models.update(KNOWN_MODELS)
        root = sysfs_root or CONF.gpu_partitions.sysfs_root
        # oslo.config has already refused a pci_backend not in its choices.
        self._pci = self._pci_reader(options.pci_backend, root)
        self._smi = None
        if amdsmi is not None:
            self._smi = amdsmi_adapter.AmdSmi(amdsmi)
        elif options.use_amdsmi and root == DEFAULT_SYSFS_ROOT:
            # Only beside the real /sys: amdsmi reads the real hardware.
            module, reason = amdsmi_adapter.import_amdsmi()
            if module is None:
                LOG.info('AMD MxGPU driver: amdsmi cannot be imported (%s); '
                         'partition modes come from sysfs', reason)
            else:
                self._smi = amdsmi_adapter.AmdSmi(module)
        # VF address -> its handle in the last report.
        self._previous = {}
        # Device ids whose naming was logged since the agent started.
        self._named = set()
        # PFs that offered VFs since the agent started.
        self._offered = set()
        # PFs whose last report was read whole (not a stub).
        self._whole = set()

    @staticmethod
    def _pci_reader(backend, root):
        if backend == 'sysfs' or root != DEFAULT_SYSFS_ROOT:
            return sysfs_adapter.Sysfs(root)
        pyudev = udev_adapter.import_pyudev()
        if pyudev is None:
            if backend == 'udev':
                raise AmdConfigError(
                    '[amd_mxgpu] pci_backend = udev but pyudev cannot be '
                    'imported; allowed: auto, udev (with pyudev), sysfs')
            LOG.info('AMD MxGPU driver: pyudev is not installed; reading '
                     'PCI devices from %s directly', root)
            return sysfs_adapter.Sysfs(root)
        return udev_adapter.UdevPci(pyudev)

    # --- scan ---------------------------------------------------------------

    def _notes(self, key, message):
        self.note(message)

    def bound_gpus(self):
        """PFs bound to GIM, and PFs of known models that should be; a PF
        whose driver or id cannot be read counts (it may hold guests), and
        so does a PF whose vendor cannot be read that may be an AMD GPU
        (:meth:`_may_be_ours`).
        """
        devices = self._pci.devices_by_vendor(AMD_VENDOR_ID)
        found = [address for address in devices.of_vendor
                 if self.contained(address, self._is_ours, address,
                                   failed=True)]
        found += [address for address in devices.unidentified
                  if self.contained(address, self._may_be_ours, address,
                                    failed=True)]
        return sorted(found)

    def _is_ours(self, address):
        return (self._pci.driver(address) == GIM_DRIVER
                or self._pci.device_id(address) in self._models)

    def _may_be_ours(self, address):
        """Whether a PF whose ``vendor`` cannot be read may be an AMD GPU
        holding guests: bound to GIM, an AMD ``subsystem_vendor`` or AMD
        VFs (:meth:`~cyborg_gpu_drivers.adapters.sysfs.PciAttributes.
        vendor_evidence`), a device id of the model table with a GPU or
        accelerator class code, or an AMD VF provider for it in Placement
        (ours before the agent started). A Placement that cannot be read
        counts as evidence: a stub Cyborg never had is ignored by its
        conductor, an omitted GPU loses its guests' records.
        """
        pci = self._pci
        reason = pci.vendor_evidence(address, AMD_VENDOR_ID, (GIM_DRIVER,))
        if reason is None:
            model = self._models.get(pci.device_id(address))
            if model is not None and (pci.read(address, 'class')
                                      or '').startswith(GPU_CLASSES):
                reason = 'its device id is %s\'s' % model[0]
        if reason is None:
            providers = self.contained(
                'Placement providers of GPU %s' % address,
                self.placement_gpu_providers, address, failed=None)
            if providers is None:
                reason = 'Placement cannot say whether it was ours'
            elif any(resource_class.startswith(placement_traits.RC_GPU_VF)
                     for classes in providers.values()
                     for resource_class in classes):
                reason = 'Placement has its VF provider'
        if reason is not None:
            self.note('PCI device %s: its vendor cannot be read, but %s: '
                      'counted as an AMD GPU so that nothing it holds is '
                      'lost' % (address, reason))
        return reason is not None

    def scan(self, session):
        pci = self._pci
        found = {}
        gim = []
        # Not bounded as a whole: its reads about each GPU are.
        for address in self.scan_bound_gpus():
            driver = self.contained(address, pci.driver, address,
                                    failed=self.FAILED)
            if driver is self.FAILED:
                continue
            if driver == GIM_DRIVER:
                gim.append(address)
            else:
                found[address] = self._stub(
                    address, 'bound to %s, not %s (GIM not loaded or the GPU '
                    'not given to it)' % (driver or 'no driver', GIM_DRIVER))
        # Bounded: amdsmi talks to GIM, which can hang like any driver.
        states = self.contained('amdsmi', self._amdsmi_states,
                                failed={}) if gim else {}
        for address in gim:
            gpu = self.contained(address, self._gpu, address,
                                 states.get(address), failed=self.FAILED)
            if gpu is not self.FAILED:
                found[address] = gpu
        read = {address: gpu for address, gpu in found.items()
                if gpu is not self.STUB}
        self._previous = {
            handle.address: handle for gpu in read.values()
            for slice_ in gpu.slices for handle in slice_.handles}
        self._whole = {address for address, gpu in read.items()
                       if not gpu.stub}
        self._offered = ({address for address, gpu in read.items()
                          if gpu.slices} |
                         (self._offered & {address for address, gpu
                                           in found.items()
                                           if gpu is self.STUB or gpu.stub}))
        return found

    def _gpu(self, address, state):
        pf = self._read_pf(address, state)
        if pf is None:
            return self._stub(address, 'vanished during the scan')
        if pf.compute_partition is None:
            return self._stub(address, 'its compute partition mode cannot '
                              'be read (neither amdsmi nor sysfs)')
        if pf.numvfs is None:
            self.note('AMD GPU %s: its sriov_numvfs cannot be read, so how '
                      'many VFs it has is unknown' % address, LOG.error)
            return self.FAILED
        unknown = self._unknown_vfs(pf)
        if unknown:
            self.note('AMD GPU %s: VFs %s cannot be read (their virtfn '
                      'links are missing, dangle or name no VF of the GPU) '
                      'and no report holds their units; reported as a stub '
                      'so Cyborg keeps what it holds for it' % (
                          address, ', '.join(unknown)), LOG.error)
            return self.STUB
        model, memory_mib = self._model(pf.device_id, pf.market_name)
        if model is None:
            return self._stub(address, 'its model is unknown')
        error = partition_mode_error(model, pf.compute_partition,
                                     pf.memory_partition, len(pf.vfs))
        if error:
            self.note('AMD GPU %s: %s (read from %s); not offered: check '
                      'GIM\'s vf_num and /etc/gim_config' % (
                          address, error, 'amdsmi' if pf.market_name
                          else 'sysfs'), LOG.error)
            return self._stub(address, 'its partitioning is not one GIM '
                              'supports')
        gpu = build_gpu(pf, model, memory_mib, self._previous, self._notes)
        if not gpu.slices and address in self._offered:
            # All its VFs left vfio-pci at once: GIM being reloaded, most
            # likely. Dropping the provider would fail anyway while an
            # instance holds one of its VFs.
            gpu = self._stub(address, 'without a VF on vfio-pci after '
                             'offering some')
        return gpu

    def _unknown_vfs(self, pf):
        """VFs of ``pf`` that cannot be read, are not in the last report,
        and may be in Cyborg: the PF was not read whole last scan, or the
        VF's address is not known. They count as in use.
        """
        return [vf.address for vf in pf.vfs
                if not vf.present and vf.address not in self._previous
                and (pf.address not in self._whole
                     or not sysfs_adapter.is_pci_address(vf.address))]

    def _stub(self, address, reason):
        """A GPU we cannot read now: Cyborg keeps what it holds for it."""
        self.note('AMD GPU %s: %s; reported as a stub, so Cyborg keeps what '
                  'it holds for it and adds nothing' % (address, reason))
        return self.stub_gpu(address)

    def stub_gpu(self, address):
        device_id = self._pci.device_id(address) or ''
        # A stub has no provider: its model names nothing in Placement.
        model, memory_mib = self._models.get(device_id, ('unknown', 0))
        return inventory.Gpu(
            address=address, vendor_id=AMD_VENDOR_ID, device_id=device_id,
            model=model, memory_mib=memory_mib, healthy=False, stub=True)

    def _model(self, device_id, market_name=None):
        """``(model, HBM MiB)`` of a PF device id; ``(None, 0)`` when
        nothing names it.

        The driver's table first, then amdsmi's market name, then
        ``[amd_mxgpu] models``; never the bare device id, so that no
        resource class is named after a number that a later, better name
        would replace under existing flavors.
        """
        known = KNOWN_MODELS.get(device_id)
        if known:
            return known
        configured = self._models.get(device_id)
        if market_name:
            if configured and configured[0] != market_name:
                self._name_once(device_id, LOG.warning, '[amd_mxgpu] models '
                                'names PCI device id %s "%s" but amdsmi reads '
                                'its market name "%s", which names it' % (
                                    device_id, configured[0], market_name))
            else:
                self._name_once(device_id, LOG.info, 'PCI device id %s is '
                                'not in the driver\'s table; named "%s" after '
                                'amdsmi\'s market name' % (device_id,
                                                           market_name))
            return market_name, 0
        if configured:
            return configured
        self._name_once(device_id, LOG.warning, (
            'PCI device id %s is not a known AMD Instinct model and amdsmi '
            'gives no market name: its GPUs are not offered; name it with '
            '[amd_mxgpu] models (e.g. "%s:AMD Instinct <model>") or '
            'install amdsmi') % (device_id, device_id))
        return None, 0

    def _name_once(self, device_id, log, message):
        # Once per agent: the same id on eight GPUs is one line.
        if device_id not in self._named:
            self._named.add(device_id)
            log('%s: %s', self.DRIVER_NAME, message)

    def _amdsmi_states(self):
        if self._smi is None:
            return {}
        try:
            return self._smi.read()
        except amdsmi_adapter.AmdSmiUnavailable as error:
            self._notes('amdsmi', 'amdsmi is failing (%s); partition modes '
                        'come from sysfs and the xGMI hive from '
                        '%s where present' % (error, _HIVE_FILE))
            return {}

    def _read_pf(self, address, state):
        """A :class:`PfView`, or None when the PF vanished."""
        pci = self._pci
        device_id = pci.device_id(address)
        if device_id is None:
            return None
        if state is not None and state.failed:
            self._notes(address + ' amdsmi', 'amdsmi failed %s for GPU %s; '
                        'those values come from sysfs'
                        % (', '.join(state.failed), address))
        state = state or amdsmi_adapter.GpuState(address=address)
        compute = (parse_compute_partition(state.compute_partition)
                   or _first(parse_compute_partition(pci.read(address, name))
                             for name in COMPUTE_FILES))
        memory = (parse_memory_partition(state.memory_partition)
                  or _first(parse_memory_partition(pci.read(address, name))
                            for name in MEMORY_FILES))
        hive = state.xgmi_hive_id or parse_hive_id(pci.read(address,
                                                            _HIVE_FILE))
        vfs = []
        for index, vf_address in pci.virtfns(address):
            present = pci.exists(vf_address)
            vfs.append(VfView(
                index=index, address=vf_address, present=present,
                driver=pci.driver(vf_address) if present else None,
                open_count=pci.read_int(vf_address, 'enable')
                if present else None))
        return PfView(address=address, device_id=device_id,
                      numa_node=pci.numa_node(address),
                      compute_partition=compute, memory_partition=memory,
                      xgmi_hive_id=hive, market_name=state.market_name,
                      vfs=tuple(vfs), numvfs=pci.sriov_numvfs(address))


def _first(values):
    return next((value for value in values if value), None)
