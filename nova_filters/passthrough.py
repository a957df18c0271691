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
"""Whole GPUs that Nova passes through, as Placement shows them.

With ``[pci] report_in_placement`` Nova's compute makes one child provider
of the compute node per ``type-PCI`` or ``type-PF`` device its ``[pci]
device_spec`` matches (``<node>_<PCI ADDRESS>``, see Nova's
``nova/compute/pci_placement_translator.py``), with one unit of the
device_spec's ``resource_class`` or, without one,
``CUSTOM_PCI_<VENDOR>_<PRODUCT>``; the VFs of a PF are units of the PF's
provider. Its traits are ``COMPUTE_MANAGED_PCI_DEVICE``, ``OWNER_NOVA``
and the device_spec's ``traits``. With ``[filter_scheduler]
pci_in_placement`` a flavor's ``pci_passthrough:alias`` becomes one
request group per device, so the allocation candidates hold these
providers like any GPU slice.

Such a provider is one physical GPU (it carries no ``CUSTOM_GPU_PCI_*``
trait, so the GPU view names it by its uuid). Nova does not put a
device's NUMA node or NVLink peers in Placement; the operator adds them as
device_spec traits (``CUSTOM_GPU_NUMA_NODE_<n>``,
``CUSTOM_GPU_NVLINK_CLIQUE_<n>``), which :mod:`nova_filters.topology`
reads like the drivers' own.

Which classes count as GPUs: Nova's default names of NVIDIA and AMD
devices (:func:`placement_traits.is_nova_pci_gpu_class`) and the classes
listed in ``[gpu_partitions_scheduler] passthrough_resource_classes``.
"""

import os_resource_classes as orc
from oslo_log import log as logging

from nova_filters import conf
import placement_traits

LOG = logging.getLogger(__name__)


def _normalized(name):
    # As Nova names a device_spec's resource_class in Placement: standard
    # and CUSTOM_ names kept, any other made a legal custom name (so
    # "nvidia-a100" is CUSTOM_NVIDIA_A100).
    name = name.strip().upper()
    if name in orc.STANDARDS or orc.is_custom(name):
        return name
    return orc.normalize_name(name)


# Classes every instance takes from its compute node: listed as GPUs by
# mistake, they would make every request a GPU request, weighed, reordered
# and, without the scheduler's own answer, a Placement query each.
NOT_GPUS = frozenset((orc.VCPU, orc.PCPU, orc.MEMORY_MB, orc.DISK_GB))
_WARNED = set()


def configured_classes():
    """The operator's passthrough GPU classes, normalised as Nova does,
    without :data:`NOT_GPUS` (logged once).
    """
    names = conf.CONF.gpu_partitions_scheduler.passthrough_resource_classes
    classes = frozenset(_normalized(name) for name in names or ()
                        if name and name.strip())
    wrong = classes & NOT_GPUS
    if wrong:
        if wrong not in _WARNED:
            _WARNED.add(wrong)
            LOG.warning('[gpu_partitions_scheduler] '
                        'passthrough_resource_classes lists %s, which every '
                        'instance takes from its compute node, not a GPU; '
                        'ignored.', ', '.join(sorted(wrong)))
        classes -= wrong
    return classes


def is_passthrough_class(resource_class, configured=None):
    """Whether ``resource_class`` is a whole GPU passed through by Nova.

    ``configured`` is :func:`configured_classes`, read once by a caller
    that asks many times.
    """
    if configured is None:
        configured = configured_classes()
    return (placement_traits.is_nova_pci_gpu_class(resource_class)
            or resource_class in configured)


def is_gpu_class(resource_class, configured=None):
    """Whether ``resource_class`` is any GPU's: a slice the drivers report
    or a whole GPU Nova passes through.
    """
    return (placement_traits.is_gpu_resource_class(resource_class)
            or is_passthrough_class(resource_class, configured))
