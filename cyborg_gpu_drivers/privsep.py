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
"""The package's one privileged context and its entrypoints.

Every write the drivers make to the host (a vGPU type on a VF, a MIG
layout on a GPU) goes through an entrypoint here. Each entrypoint checks
its arguments before touching anything and then calls a plain function of
the same name without the ``privileged_`` prefix; tests call those plain
functions directly, on a fake sysfs tree or a fake NVML.

The daemon is started by the Cyborg agent's root helper (``sudo
privsep-helper``) on first use, with the options of the
``[cyborg_gpu_drivers_privsep]`` section.
"""

import os
import re

from oslo_privsep import capabilities
from oslo_privsep import priv_context

from cyborg_gpu_drivers import conf

sys_admin_pctxt = priv_context.PrivContext(
    'cyborg_gpu_drivers',
    cfg_section=conf.PRIVSEP_GROUP,
    pypath=__name__ + '.sys_admin_pctxt',
    capabilities=[capabilities.CAP_DAC_OVERRIDE,
                  capabilities.CAP_DAC_READ_SEARCH,
                  capabilities.CAP_SYS_ADMIN])

# The sysfs form of a PCI address, as the kernel names devices.
_PCI_ADDRESS = re.compile(r'^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$')

VGPU_TYPE_FILE = os.path.join('nvidia', 'current_vgpu_type')


class InvalidPrivilegedRequest(ValueError):
    """An argument of a privileged call failed validation; nothing ran."""


def check_pci_address(address):
    if not isinstance(address, str) or not _PCI_ADDRESS.match(address):
        raise InvalidPrivilegedRequest(
            '%r is not a sysfs PCI address (dddd:bb:dd.f)' % (address,))
    return address


def check_non_negative_int(name, value):
    # bool is an int subclass; True is not a type id.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPrivilegedRequest(
            '%s must be a non-negative integer, got %r' % (name, value))
    return value


def vgpu_type_path(sysfs_root, vf_address):
    """``<root>/bus/pci/devices/<vf>/nvidia/current_vgpu_type``, checked.

    The VF must be a real device directory under ``sysfs_root`` that has
    the vendor VFIO interface; the resolved path must stay inside it.
    """
    check_pci_address(vf_address)
    root = os.path.realpath(sysfs_root)
    device = os.path.realpath(
        os.path.join(root, 'bus', 'pci', 'devices', vf_address))
    path = os.path.join(device, VGPU_TYPE_FILE)
    if not device.startswith(root + os.sep) or not os.path.isfile(path):
        raise InvalidPrivilegedRequest(
            'no NVIDIA vendor VFIO VF %s under %s' % (vf_address, root))
    return path


def write_vgpu_type(sysfs_root, vf_address, type_id):
    """Write ``type_id`` (``0`` releases) to a VF's current_vgpu_type."""
    check_non_negative_int('type_id', type_id)
    path = vgpu_type_path(sysfs_root, vf_address)
    with open(path, 'w') as attribute:
        attribute.write('%d\n' % type_id)


@sys_admin_pctxt.entrypoint
def privileged_write_vgpu_type(sysfs_root, vf_address, type_id):
    write_vgpu_type(sysfs_root, vf_address, type_id)


def check_mig_layout(gpu_address, instances):
    """Validate a MIG layout request: ``[(profile_id, start), ...]``."""
    check_pci_address(gpu_address)
    if not isinstance(instances, (list, tuple)) or not instances:
        raise InvalidPrivilegedRequest(
            'a MIG layout must list at least one (profile id, start)')
    checked = []
    for item in instances:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InvalidPrivilegedRequest(
                'a MIG layout entry must be (profile id, start), got %r'
                % (item,))
        checked.append((check_non_negative_int('profile_id', item[0]),
                        check_non_negative_int('start', item[1])))
    return checked


@sys_admin_pctxt.entrypoint
def privileged_apply_mig_layout(gpu_address, instances):
    """Replace the GPU instances of an idle GPU (real NVML, as root)."""
    # Imported here: only the privileged daemon applies layouts.
    from cyborg_gpu_drivers.adapters import nvml
    instances = check_mig_layout(gpu_address, instances)
    with nvml.Nvml().session() as session:
        session.replace_gpu_instances(gpu_address, instances)
