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
"""Turn a :class:`HostInventory` into Cyborg driver objects.

This is the only module that builds Cyborg's versioned objects, so a change
of Cyborg's object API touches this file alone. The shape is:

* one ``DriverDevice`` per physical GPU, keyed on its PCI address;
* one ``DriverDeployable`` per slice kind on that GPU (it becomes one
  Placement provider under the compute node), named by
  :func:`placement_traits.provider_name` so its UUID is stable;
* one attach handle per unit, ``PCI`` for a VF and ``MDEV`` for an mdev.

Cyborg's conductor compares attributes and attach handles as strings, so
everything here is deterministic: traits are sorted and numbered, JSON keys
are sorted.
"""

import json

from cyborg.accelerator.common import utils as cyborg_utils
from cyborg.common import constants
from cyborg.objects.driver_objects import driver_attach_handle
from cyborg.objects.driver_objects import driver_attribute
from cyborg.objects.driver_objects import driver_controlpath_id
from cyborg.objects.driver_objects import driver_deployable
from cyborg.objects.driver_objects import driver_device

from cyborg_gpu_drivers import inventory
import placement_traits


def attach_info(handle):
    """The attach handle string Cyborg stores and Nova reads."""
    address = _colon_address(handle.address)
    if handle.attach_type == inventory.MDEV:
        return cyborg_utils.mdev_str_to_json(
            address, handle.mdev_type, handle.mark)
    return cyborg_utils.pci_str_to_json(address)


def deployable_traits(gpu, slice_):
    """Traits of one provider, sorted: the GPU's own plus the slice's."""
    traits = {placement_traits.OWNER_CYBORG,
              placement_traits.physical_gpu_trait(gpu.address)}
    traits.update(gpu.traits)
    traits.update(slice_.traits)
    return sorted(traits)


def provider_name(hostname, gpu, slice_):
    return placement_traits.provider_name(hostname, gpu.address, slice_.name)


def to_deployable(hostname, gpu, slice_, driver_name):
    attributes = [driver_attribute.DriverAttribute(
        key='rc', value=slice_.resource_class)]
    attributes.extend(
        driver_attribute.DriverAttribute(key='trait%d' % i, value=trait)
        for i, trait in enumerate(deployable_traits(gpu, slice_)))
    handles = [
        driver_attach_handle.DriverAttachHandle(
            attach_type=handle.attach_type, attach_info=attach_info(handle),
            in_use=handle.in_use)
        for handle in slice_.handles]
    return driver_deployable.DriverDeployable(
        name=provider_name(hostname, gpu, slice_),
        num_accelerators=inventory.offered_total(gpu, slice_),
        attribute_list=attributes,
        attach_handle_list=handles,
        driver_name=driver_name)


def offered_slices(gpu):
    """The slices that become providers: those with something to offer.

    Placement refuses an inventory of 0, so a slice with nothing to offer
    (a lost GPU with nothing in use or allocated, a profile with no usable
    VF) has no provider; Cyborg's conductor deletes the provider it had,
    which Placement allows because nothing is allocated on it.
    """
    return [slice_ for slice_ in gpu.slices
            if inventory.offered_total(gpu, slice_) > 0]


def to_driver_device(hostname, gpu, driver_name):
    return driver_device.DriverDevice(
        vendor=gpu.vendor_id,
        model=gpu.model,
        type=constants.DEVICE_GPU,
        std_board_info=json.dumps(
            {'device_id': gpu.device_id, 'memory_mib': gpu.memory_mib},
            sort_keys=True),
        vendor_board_info=json.dumps(gpu.board_info, sort_keys=True),
        stub=gpu.stub,
        controlpath_id=driver_controlpath_id.DriverControlPathID(
            cpid_type='PCI',
            cpid_info=cyborg_utils.pci_str_to_json(
                _colon_address(gpu.address))),
        deployable_list=[
            to_deployable(hostname, gpu, slice_, driver_name)
            for slice_ in offered_slices(gpu)])


def to_driver_devices(host_inventory, driver_name):
    """All driver devices of a host, in PCI address order."""
    return [to_driver_device(host_inventory.hostname, gpu, driver_name)
            for gpu in sorted(host_inventory.gpus, key=lambda g: g.address)]


def _colon_address(address):
    # Cyborg's helpers split "dddd:bb:dd.f"; they take the sysfs form as is.
    return placement_traits.pci_address(address)
