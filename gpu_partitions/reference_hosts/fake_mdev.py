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
"""The mdev bus of a materialized host: what the kernel and NVIDIA's vGPU
manager do when Cyborg's agent writes a UUID to
``class/mdev_bus/<parent>/mdev_supported_types/<type>/create`` or ``1``
to ``.../devices/<uuid>/remove``.

Creating is refused, as on an Ampere host running MIG-backed vGPU, when
the parent already holds an mdev (a VF holds one), when the parent does
not list the type, or when the type is MIG-backed and its GPU has no
complete GPU instance of the type's profile that no mdev holds yet (the
NVIDIA vGPU user guide: GPU instances must exist before MIG-backed vGPUs
are created on them). The GPU instances are read from the host's fake
NVML, so they are the ones the driver created or destroyed.
"""

import errno
import os
import shutil

_TYPES = 'mdev_supported_types'


class FakeMdevBus:
    """``create(parent, type, uuid)`` and ``remove(parent, type, uuid)``
    on ``env``'s sysfs tree, with ``env.nvml`` as the GPUs' state.
    """

    def __init__(self, env):
        self._root = env.sysfs_root
        self._nvml = env.nvml
        #: ``(method, parent, type, uuid)`` of every call, refused or not.
        self.calls = []

    def _device(self, address, *names):
        return os.path.join(self._root, 'bus', 'pci', 'devices', address,
                            *names)

    def mdevs(self, address):
        """``{uuid: type}`` of the mdevs on a parent."""
        found = {}
        try:
            entries = os.listdir(self._device(address))
        except OSError:
            return found
        for entry in entries:
            link = self._device(address, entry, 'mdev_type')
            if os.path.islink(link):
                found[entry] = os.path.basename(os.readlink(link))
        return found

    def _profile_id(self, mdev_type):
        vgpu_type = self._nvml._vgpu_types.get(
            int(mdev_type.rpartition('-')[2]))
        if vgpu_type is None:
            return None
        return vgpu_type.get('gpu_instance_profile_id')

    def _gpu(self, parent):
        physfn = self._device(parent, 'physfn')
        address = (os.path.basename(os.readlink(physfn))
                   if os.path.islink(physfn) else parent)
        for gpu in self._nvml._gpus:
            bus = gpu.data['pci_bus_id'].lower()
            if bus.endswith(address[-12:]):
                return address, gpu
        return address, None

    def _siblings(self, pf_address):
        directory = self._device(pf_address)
        return [os.path.basename(os.readlink(os.path.join(directory, name)))
                for name in os.listdir(directory)
                if name.startswith('virtfn')] + [pf_address]

    def create(self, parent, mdev_type, uuid):
        self.calls.append(('create', parent, mdev_type, uuid))
        if not os.path.isdir(self._device(parent, _TYPES, mdev_type)):
            raise OSError(errno.ENOENT, 'no mdev type %s on %s'
                          % (mdev_type, parent))
        if self.mdevs(parent):
            raise OSError(errno.EBUSY, '%s already holds an mdev' % parent)
        profile_id = self._profile_id(mdev_type)
        if profile_id is not None:
            pf_address, gpu = self._gpu(parent)
            free = [gi for gi in (gpu.gpu_instances if gpu else ())
                    if gi.data['profile_id'] == profile_id
                    and gi.compute_instances]
            held = sum(1 for sibling in self._siblings(pf_address)
                       for held_type in self.mdevs(sibling).values()
                       if self._profile_id(held_type) == profile_id)
            if len(free) <= held:
                raise OSError(errno.ENOSPC, 'no free GPU instance of '
                              'profile id %d on %s' % (profile_id,
                                                       pf_address))
        directory = self._device(parent, uuid)
        os.makedirs(directory)
        os.symlink(os.path.join('..', _TYPES, mdev_type),
                   os.path.join(directory, 'mdev_type'))
        return uuid

    def remove(self, parent, mdev_type, uuid):
        self.calls.append(('remove', parent, mdev_type, uuid))
        if self.mdevs(parent).get(uuid) != mdev_type:
            raise OSError(errno.ENOENT, 'no mdev %s of type %s on %s'
                          % (uuid, mdev_type, parent))
        shutil.rmtree(self._device(parent, uuid))
