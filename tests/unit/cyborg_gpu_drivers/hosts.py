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
"""Reference hosts materialised once per test process, for the drivers'
tests that only read the tree."""

import atexit
import copy
import shutil
import tempfile

from gpu_partitions import reference_hosts

_SHARED = {}


def shared_env(name):
    """The materialised reference host ``name``; tests only read it.

    Materialising an HGX host writes thousands of files, so tests that
    change only NVML answers pair this sysfs tree with a fresh fake.
    """
    if name not in _SHARED:
        directory = tempfile.mkdtemp(prefix='drivers-%s-' % name)
        atexit.register(shutil.rmtree, directory, True)
        _SHARED[name] = reference_hosts.load(name).materialize(directory)
    return _SHARED[name]


#: MIG-backed vGPU types of the A100 80GB PCIe that on-demand tests offer:
#: NVIDIA's names (vGPU for Compute, "NVIDIA A100 PCIe 80GB" types) and
#: the GPU instance profiles NVML lists for them on pcie-a100; the type
#: ids are illustrative (the recorded host runs time-sliced types only).
A100_MIG_TYPES = {700: ('NVIDIA A100D-1-10C', 19, 10240),
                  701: ('NVIDIA A100D-3-40C', 9, 40960),
                  702: ('NVIDIA A100D-7-80C', 0, 81920)}


def a100_on_demand():
    """pcie-a100 with GPU 0 (01:00.0) switched to MIG and idle: no GPU
    instance, no vGPU, every VF an mdev parent listing the MIG-backed
    types of 1g.10gb, 3g.40gb and 7g.80gb. GPU 1 keeps MIG off.
    """
    data = copy.deepcopy(reference_hosts.load('pcie-a100').data)
    model = data['nvml']['models']['A100-PCIE-80GB']
    for type_id, (name, profile_id, framebuffer) in A100_MIG_TYPES.items():
        model['vgpu_types'].append({
            'id': type_id, 'name': name, 'class': 'Compute',
            'framebuffer_mb': framebuffer, 'max_instances': 1,
            'gpu_instance_profile_id': profile_id})
    device = data['nvml']['devices'][0]
    device['mig_mode'] = [1, 1]
    device['supported_vgpus'] += sorted(A100_MIG_TYPES)
    device['creatable_vgpus'] = []
    device['gpu_instances'] = []
    device['active_vgpus'] = []
    files = {}
    for type_id, (name, _, framebuffer) in A100_MIG_TYPES.items():
        prefix = 'mdev_supported_types/nvidia-%d/' % type_id
        files[prefix + 'name'] = name + '\n'
        files[prefix + 'device_api'] = 'vfio-pci\n'
        files[prefix + 'description'] = (
            'num_heads=1, frl_config=60, framebuffer=%dM, max_instance=1\n'
            % framebuffer)
        # No GPU instance exists yet: NVIDIA's driver shows none available.
        files[prefix + 'available_instances'] = '0\n'
    pf = data['pci_devices'][0]
    pf['vf_defaults']['files'] = files
    for vf in pf['virtfns']:
        vf.pop('files', None)
        vf.pop('mdevs', None)
    return data
