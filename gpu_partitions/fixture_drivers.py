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
"""Run the real drivers over a materialised reference host.

``DRIVERS`` maps a driver's entry-point name to a factory that builds the
driver with the reference host's adapters (fake NVML module, sysfs root,
libvirt test URI) instead of the real hardware. Everything else the driver
does is the production code path.
"""

import importlib

from gpu_partitions.reference_hosts import fake_amdsmi

# entry-point name -> (module, class); each class takes the keyword
# arguments hostname, nvml, sysfs_root, libvirt_uri, amdsmi and ignores
# the ones its hardware does not use.
DRIVERS = {
    'gpu_partitions_nvidia_mig': ('cyborg_gpu_drivers.nvidia_mig',
                                  'NvidiaMigDriver'),
    'gpu_partitions_amd_mxgpu': ('cyborg_gpu_drivers.amd_mxgpu',
                                 'AmdMxgpuDriver'),
    'gpu_partitions_nvidia_vgpu': ('cyborg_gpu_drivers.nvidia_vgpu',
                                   'NvidiaVgpuDriver'),
}


def build(name, env, read_only=False, reserves_in_placement=False):
    """One driver over ``env``; only an agent's driver
    (``reserves_in_placement``) writes reservations to Placement.
    """
    module_name, class_name = DRIVERS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    driver = cls(hostname=env.hostname, nvml=env.nvml,
                 sysfs_root=env.sysfs_root, libvirt_uri=env.libvirt_uri,
                 amdsmi=fake_amdsmi.module_for(env.amdsmi),
                 read_only=read_only)
    driver.reserves_in_placement = reserves_in_placement
    return driver


def discover_all(env, names=None, read_only=False):
    """Driver devices of every (or the named) driver over ``env``;
    ``read_only`` drivers change nothing (no layout, no vGPU type).
    """
    devices = []
    for name in names or sorted(DRIVERS):
        devices.extend(build(name, env, read_only).discover())
    return devices
