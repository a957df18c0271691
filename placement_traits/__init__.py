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
"""The one place that names Placement resource classes, traits and providers.

Every custom name the project puts into Placement is built here, from plain
hardware facts (a MIG profile name, a vGPU type name, a PCI address, a NUMA
node number). Drivers call the builders; the scheduler plugins call the
parsers. Standard names from os-traits and os-resource-classes are reused
where they exist (``OWNER_CYBORG``, CUDA compute capability traits).

See ``doc/source/naming.rst`` for the table of the scheme.
"""

import re

import os_resource_classes as orc
import os_traits

# Placement's own limit for resource class and trait names.
MAX_NAME_LENGTH = 255
CUSTOM_NAME = re.compile(r'^CUSTOM_[A-Z0-9_]+$')
_NOT_NAME_CHAR = re.compile(r'[^A-Z0-9]+')

OWNER_CYBORG = os_traits.OWNER_CYBORG

# Prefixes of the custom names. The parsers below rely on them, so a prefix
# must never be the start of another one.
RC_MIG = 'CUSTOM_MIG_'
RC_VGPU = 'CUSTOM_VGPU_'
RC_GPU_VF = 'CUSTOM_GPU_VF_'
# Nova's name for a PCI device it reports in Placement ([pci]
# report_in_placement) when its device_spec gives no resource_class:
# CUSTOM_PCI_<VENDOR>_<PRODUCT>. Nova names these, not this project.
RC_NOVA_PCI = 'CUSTOM_PCI_'

TRAIT_VENDOR = 'CUSTOM_GPU_VENDOR_'
TRAIT_MODEL = 'CUSTOM_GPU_MODEL_'
TRAIT_PHYSICAL_GPU = 'CUSTOM_GPU_PCI_'
TRAIT_NUMA_NODE = 'CUSTOM_GPU_NUMA_NODE_'
TRAIT_NVLINK_CLIQUE = 'CUSTOM_GPU_NVLINK_CLIQUE_'
TRAIT_XGMI_HIVE = 'CUSTOM_GPU_XGMI_HIVE_'
TRAIT_MIG_PROFILE = 'CUSTOM_GPU_MIG_PROFILE_'
TRAIT_VGPU_SERIES = 'CUSTOM_GPU_VGPU_SERIES_'
TRAIT_FRAMEBUFFER = 'CUSTOM_GPU_FB_'
TRAIT_COMPUTE_PARTITION = 'CUSTOM_GPU_COMPUTE_PARTITION_'
TRAIT_MEMORY_PARTITION = 'CUSTOM_GPU_MEMORY_PARTITION_'
TRAIT_MIG_BACKED = 'CUSTOM_GPU_MIG_BACKED'
TRAIT_VGPU_HETEROGENEOUS = 'CUSTOM_GPU_VGPU_MIXED_SIZE'
# A MIG GPU whose instances are made on demand (every profile offered,
# inventories follow what fits); the suffix is its compute slices.
TRAIT_MIG_ON_DEMAND = 'CUSTOM_GPU_MIG_ON_DEMAND_SLICES_'

VENDOR_NAMES = {'10de': 'NVIDIA', '1002': 'AMD'}
VGPU_SERIES = ('A', 'B', 'C', 'Q')

# Words that every model name of a vendor carries and that only make the
# trait longer.
_MODEL_NOISE = re.compile(
    r'^(NVIDIA|AMD|ADVANCED MICRO DEVICES,? INC\.?|INSTINCT)\s+', re.I)


class InvalidName(ValueError):
    """A hardware fact cannot be turned into a valid Placement name."""


def normalize(*parts):
    """Join ``parts`` into an upper-case name of ``[A-Z0-9_]`` only.

    Every run of other characters becomes one underscore, so
    ``('1g.10gb+me',)`` gives ``1G_10GB_ME``.
    """
    words = []
    for part in parts:
        text = _NOT_NAME_CHAR.sub('_', str(part).upper()).strip('_')
        if text:
            words.append(text)
    if not words:
        raise InvalidName('empty name from %r' % (parts,))
    return '_'.join(words)


def custom(prefix, *parts):
    """Return ``prefix`` + the normalised ``parts``, checked for Placement."""
    name = prefix + normalize(*parts)
    if len(name) > MAX_NAME_LENGTH or not CUSTOM_NAME.match(name):
        raise InvalidName('%r is not a valid custom Placement name' % name)
    return name


def is_valid_custom(name):
    return bool(CUSTOM_NAME.match(name)) and len(name) <= MAX_NAME_LENGTH


def is_valid_resource_class(name):
    return name in orc.STANDARDS or is_valid_custom(name)


def is_valid_trait(name):
    return is_valid_custom(name) or name in os_traits.get_traits()


# --- PCI addresses --------------------------------------------------------

_SYSFS_PCI = re.compile(
    r'^(?P<domain>[0-9a-f]{4,8}):(?P<bus>[0-9a-f]{2}):'
    r'(?P<device>[0-9a-f]{2})\.(?P<function>[0-7])$')


def pci_address(text):
    """Return the sysfs form ``dddd:bb:dd.f`` of a PCI address.

    Accepts NVML's ``00000000:1B:00.0`` (8-digit domain, upper case), the
    legacy ``0000:1b:00.0`` and a short ``1b:00.0`` (domain 0). A domain
    above 0xffff (Intel VMD) keeps all its digits, as the kernel writes it.
    """
    text = str(text).strip().lower()
    if text.count(':') == 1:
        text = '0000:' + text
    match = _SYSFS_PCI.match(text)
    if not match:
        raise InvalidName('%r is not a PCI address' % text)
    domain = int(match.group('domain'), 16)
    return '%04x:%s:%s.%s' % (domain, match.group('bus'),
                              match.group('device'), match.group('function'))


# --- resource classes -----------------------------------------------------

def mig_resource_class(profile):
    """A MIG-backed slice: ``3g.40gb`` gives ``CUSTOM_MIG_3G_40GB``."""
    return custom(RC_MIG, _strip_mig_prefix(profile))


def vgpu_resource_class(type_name):
    """A vGPU type: ``NVIDIA L40S-4Q`` gives ``CUSTOM_VGPU_L40S_4Q``.

    Full names may hold spaces (``NVIDIA RTX Pro 6000 Blackwell DC-1-24Q``),
    so the last whitespace-separated token names the type.
    """
    return custom(RC_VGPU, vgpu_short_name(type_name))


def vf_resource_class(model, compute_partition):
    """An SR-IOV VF of one GPU model in one partition mode.

    ``MI300X``, ``CPX`` gives ``CUSTOM_GPU_VF_MI300X_CPX``.
    """
    return custom(RC_GPU_VF, model_short_name(model), compute_partition)


# --- traits ---------------------------------------------------------------

def vendor_trait(vendor):
    """``10de``/``0x10de``/``nvidia`` give ``CUSTOM_GPU_VENDOR_NVIDIA``."""
    key = str(vendor).lower().removeprefix('0x')
    return custom(TRAIT_VENDOR, VENDOR_NAMES.get(key, vendor))


def model_trait(model):
    """``NVIDIA H100 80GB HBM3`` gives ``CUSTOM_GPU_MODEL_H100_80GB_HBM3``."""
    return custom(TRAIT_MODEL, model_short_name(model))


def physical_gpu_trait(address):
    """Name the physical GPU a provider sits on.

    Usage is summed per GPU through it: ``0000:1b:00.0`` gives
    ``CUSTOM_GPU_PCI_0000_1B_00_0``.
    """
    return custom(TRAIT_PHYSICAL_GPU, pci_address(address))


def numa_node_trait(node):
    """NUMA node of the GPU, or None when the firmware gives none (-1)."""
    if node is None or int(node) < 0:
        return None
    return custom(TRAIT_NUMA_NODE, int(node))


def nvlink_clique_trait(clique):
    """A set of GPUs of one host that are all NVLink peers."""
    return custom(TRAIT_NVLINK_CLIQUE, clique)


def xgmi_hive_trait(hive_id):
    """A set of AMD GPUs in one xGMI hive; ``hive_id`` as amdsmi gives it."""
    if isinstance(hive_id, int):
        hive_id = '%x' % hive_id
    return custom(TRAIT_XGMI_HIVE, str(hive_id).lower().removeprefix('0x'))


def mig_profile_trait(profile):
    return custom(TRAIT_MIG_PROFILE, _strip_mig_prefix(profile))


def mig_on_demand_trait(slices):
    return custom(TRAIT_MIG_ON_DEMAND, str(int(slices)))


def mig_on_demand_slices(traits):
    """Compute slices of an on-demand MIG GPU from its provider's
    traits, None for a GPU with a fixed layout.
    """
    for trait in traits:
        if trait.startswith(TRAIT_MIG_ON_DEMAND):
            suffix = trait[len(TRAIT_MIG_ON_DEMAND):]
            if suffix.isdecimal() and int(suffix) > 0:
                return int(suffix)
    return None


def vgpu_series_trait(series):
    series = str(series).upper()
    if series not in VGPU_SERIES:
        raise InvalidName('vGPU series %r is not one of %s'
                          % (series, ', '.join(VGPU_SERIES)))
    return custom(TRAIT_VGPU_SERIES, series)


def nominal_framebuffer_trait(gigabytes):
    """Framebuffer of a slice as NVIDIA's tables name it.

    The MIG profile ``1g.10gb`` and the vGPU type ``A100DX-10C`` both give
    ``CUSTOM_GPU_FB_10GB``, whatever NVML measures (9,728 MiB for that
    profile on an A100 80GB), so one flavor trait matches both.
    """
    return custom(TRAIT_FRAMEBUFFER, '%dGB' % int(gigabytes))


def framebuffer_trait(mebibytes):
    """Framebuffer in whole GiB, rounded down (512 MiB: 0GB), for a slice
    whose name gives no nominal size.
    """
    return custom(TRAIT_FRAMEBUFFER, '%dGB' % (int(mebibytes) // 1024))


def compute_partition_trait(mode):
    """AMD compute partition mode: SPX, DPX, TPX, QPX or CPX."""
    return custom(TRAIT_COMPUTE_PARTITION, mode)


def memory_partition_trait(mode):
    """AMD memory partition mode: NPS1, NPS2 or NPS4."""
    return custom(TRAIT_MEMORY_PARTITION, mode)


def cuda_capability_trait(major, minor):
    """The standard os-traits name, or None where os-traits has none."""
    name = 'HW_GPU_CUDA_COMPUTE_CAPABILITY_V%d_%d' % (major, minor)
    return name if name in os_traits.get_traits() else None


# --- providers ------------------------------------------------------------

_NOT_PROVIDER_CHAR = re.compile(r'[^a-zA-Z0-9_\-]')


def provider_name(host, address, slice_name):
    """Name of the provider for one kind of slice on one physical GPU.

    Keyed on the host, the GPU's PCI address and the slice (MIG profile,
    vGPU type or VF kind), never on an NVML index, so it is stable across
    restarts, re-ordered indices and driver reloads. Placement names must
    be unique cloud-wide, hence the host prefix.
    """
    raw = '%s_%s_%s' % (host, pci_address(address), slice_name)
    return _NOT_PROVIDER_CHAR.sub('_', raw)


# --- parsing, for the scheduler side --------------------------------------

def physical_gpu_of(traits):
    """The PCI address of the physical GPU named in ``traits``, or None."""
    for trait in traits:
        if trait.startswith(TRAIT_PHYSICAL_GPU):
            parts = trait[len(TRAIT_PHYSICAL_GPU):].lower().split('_')
            if len(parts) == 4:
                return '%s:%s:%s.%s' % tuple(parts)
    return None


def _suffix_of(traits, prefix):
    for trait in traits:
        if trait.startswith(prefix):
            return trait[len(prefix):]
    return None


def numa_node_of(traits):
    value = _suffix_of(traits, TRAIT_NUMA_NODE)
    return int(value) if value is not None and value.isdecimal() else None


def link_domain_of(traits):
    """The NVLink clique or xGMI hive trait a provider carries, or None.

    Two GPUs of one host can talk over NVLink or xGMI iff they carry the
    same one.
    """
    for trait in traits:
        if trait.startswith((TRAIT_NVLINK_CLIQUE, TRAIT_XGMI_HIVE)):
            return trait
    return None


def is_gpu_resource_class(name):
    return name.startswith((RC_MIG, RC_VGPU, RC_GPU_VF))


def nova_pci_resource_class(vendor_id, product_id):
    """Nova's default class of a PCI device in Placement:
    ``10de``, ``2330`` gives ``CUSTOM_PCI_10DE_2330``.
    """
    return custom(RC_NOVA_PCI, vendor_id, product_id)


def is_nova_pci_gpu_class(name):
    """Whether ``name`` is Nova's default class of a PCI device of a GPU
    vendor (:data:`VENDOR_NAMES`), such as ``CUSTOM_PCI_10DE_2330``.
    """
    if not name.startswith(RC_NOVA_PCI):
        return False
    vendor, _, product = name[len(RC_NOVA_PCI):].partition('_')
    return vendor.lower() in VENDOR_NAMES and bool(product)


# --- helpers ----------------------------------------------------------------

# ``3g.40gb``, ``1g.10gb+me``, ``1c.3g.20gb``: compute and memory of a MIG
# profile name.
_MIG_PROFILE_MEMORY = re.compile(r'(?:^|\.)\d+g\.(?P<gb>\d+)gb', re.I)


def mig_profile_framebuffer_gb(profile):
    """The nominal memory a MIG profile's name gives (``7g.80gb``: 80), or
    None for a name without one.
    """
    match = _MIG_PROFILE_MEMORY.search(_strip_mig_prefix(profile))
    return int(match.group('gb')) if match else None


def _strip_mig_prefix(profile):
    # NVML names GPU instance profiles "MIG 1g.10gb".
    return str(profile).strip().removeprefix('MIG ').strip()


def vgpu_short_name(type_name):
    """``NVIDIA A100D-1-10C`` gives ``A100D-1-10C``."""
    tokens = str(type_name).split()
    if not tokens:
        raise InvalidName('empty vGPU type name')
    return tokens[-1]


def model_short_name(model):
    """``NVIDIA H100 80GB HBM3`` gives ``H100 80GB HBM3``."""
    text = str(model).strip()
    while True:
        stripped = _MODEL_NOISE.sub('', text)
        if stripped == text:
            return text
        text = stripped
