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
import os
import shutil
import tempfile

from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import nvidia_vfio
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


def add_a100_mig_types(data, types, gpus=(0,)):
    """Give pcie-a100's model and its GPUs ``gpus`` (NVML indexes) the
    MIG-backed vGPU types ``{type id: (name, GPU instance profile id,
    framebuffer MiB)}``.
    """
    model = data['nvml']['models']['A100-PCIE-80GB']
    for type_id, (name, profile_id, framebuffer) in types.items():
        model['vgpu_types'].append({
            'id': type_id, 'name': name, 'class': 'Compute',
            'framebuffer_mb': framebuffer, 'max_instances': 1,
            'gpu_instance_profile_id': profile_id})
    for index in gpus:
        data['nvml']['devices'][index]['supported_vgpus'] += sorted(types)


def mdev_type_files(types, available):
    """sysfs files of an mdev parent listing ``types``; ``available``
    maps a type id to its available instances (0 when absent).
    """
    files = {}
    for type_id, (name, _, framebuffer) in types.items():
        prefix = 'mdev_supported_types/nvidia-%d/' % type_id
        files[prefix + 'name'] = name + '\n'
        files[prefix + 'device_api'] = 'vfio-pci\n'
        files[prefix + 'description'] = (
            'num_heads=1, frl_config=60, framebuffer=%dM, max_instance=1\n'
            % framebuffer)
        files[prefix + 'available_instances'] = '%d\n' % available.get(
            type_id, 0)
    return files


def a100_on_demand(gpus=(0,)):
    """pcie-a100 with GPU 0 (01:00.0), or the GPUs ``gpus`` (NVML
    indexes; GPU 1 is 41:00.0), switched to MIG and idle: no GPU
    instance, no vGPU, every VF an mdev parent listing the MIG-backed
    types of 1g.10gb, 3g.40gb and 7g.80gb (none available: NVIDIA's driver
    shows none while no GPU instance exists). The other GPU keeps MIG off.
    """
    data = copy.deepcopy(reference_hosts.load('pcie-a100').data)
    add_a100_mig_types(data, A100_MIG_TYPES, gpus)
    for index in gpus:
        device = data['nvml']['devices'][index]
        device['mig_mode'] = [1, 1]
        device['creatable_vgpus'] = []
        device['gpu_instances'] = []
        device['active_vgpus'] = []
        [pf] = [pf for pf in data['pci_devices'] if pf['address'][5:] ==
                device['pci_bus_id'][9:].lower()]
        pf['vf_defaults']['files'] = mdev_type_files(A100_MIG_TYPES, {})
        for vf in pf['virtfns']:
            vf.pop('files', None)
            vf.pop('mdevs', None)
    return data


def add_mdev(sysfs_root, parent, mdev_type):
    """An mdev of ``mdev_type`` on ``parent`` as sysfs shows it, whatever
    NVML holds; returns its directory.
    """
    directory = os.path.join(sysfs_root, 'bus', 'pci', 'devices', parent,
                             'u-%s' % mdev_type)
    os.makedirs(directory)
    os.symlink('../mdev_supported_types/%s' % mdev_type,
               os.path.join(directory, 'mdev_type'))
    return directory


def privileged_on(nvml):
    """``(create, destroy)``: what the MIG privsep daemon runs for
    on-demand instances, on a fake NVML.
    """
    from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
    from cyborg_gpu_drivers import privsep

    def create(address, profile_id, start):
        with nvml_adapter.Nvml(nvml).session() as session:
            return privsep.create_gpu_instance(session, address, profile_id,
                                               start)

    def destroy(address, gpu_instance_id):
        with nvml_adapter.Nvml(nvml).session() as session:
            privsep.destroy_gpu_instance(session, address, gpu_instance_id)

    return create, destroy


class VfOffers:
    """What the nvidia module does to ``creatable_vgpu_types`` as types
    come and go on a vendor-VFIO GPU without mixed-size mode: free VFs
    offer only the type the GPU holds, or, when it holds none, what the
    recorded idle L40S of ``pcie-l40s`` (``0000:b1:00.4``) offers.
    """

    IDLE_VF = '0000:b1:00.4'

    def __init__(self, sysfs_root):
        self._root = sysfs_root
        self._sysfs = sysfs_adapter.Sysfs(sysfs_root)
        with open(self._path(self.IDLE_VF)) as creatable:
            self._idle = creatable.read().splitlines()

    def _path(self, address):
        return os.path.join(self._root, 'bus', 'pci', 'devices', address,
                            'nvidia', 'creatable_vgpu_types')

    def refresh(self, pf_address):
        vfs = nvidia_vfio.list_vfs(self._sysfs, pf_address)
        held = {vf.current_type for vf in vfs if vf.current_type}
        offer = self._idle if not held else self._idle[:1] + [
            line for line in self._idle[1:]
            if int(line.split(':')[0]) in held]
        for vf in vfs:
            if not vf.current_type:
                with open(self._path(vf.address), 'w') as creatable:
                    creatable.write('\n'.join(offer) + '\n')

    @staticmethod
    def pf_of(vf_address):
        """The PF of an L40S VF of the reference host (function 0)."""
        return vf_address.rsplit(':', 1)[0] + ':00.0'
