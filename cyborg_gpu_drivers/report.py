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
* one ``DriverDeployable`` per provider of
  :func:`cyborg_gpu_drivers.providers.provider_spec` (one per slice kind
  on that GPU, a Placement provider under the compute node, named so its
  UUID is stable), with the spec's resource class, total and traits;
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
from cyborg_gpu_drivers import providers
import placement_traits


def attach_info(handle):
    """The attach handle string Cyborg stores and Nova reads."""
    address = _colon_address(handle.address)
    if handle.attach_type == inventory.MDEV:
        return cyborg_utils.mdev_str_to_json(
            address, handle.mdev_type, handle.mark)
    return cyborg_utils.pci_str_to_json(address)


def to_deployable(hostname, gpu, slice_, driver_name):
    spec = providers.provider_spec(hostname, gpu, slice_)
    attributes = [driver_attribute.DriverAttribute(
        key='rc', value=spec.resource_class)]
    attributes.extend(
        driver_attribute.DriverAttribute(key='trait%d' % i, value=trait)
        for i, trait in enumerate(spec.traits))
    handles = [
        driver_attach_handle.DriverAttachHandle(
            attach_type=handle.attach_type, attach_info=attach_info(handle),
            in_use=handle.in_use)
        for handle in slice_.handles]
    return driver_deployable.DriverDeployable(
        name=spec.name,
        num_accelerators=spec.total,
        attribute_list=attributes,
        attach_handle_list=handles,
        driver_name=driver_name)


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
            for slice_ in providers.offered_slices(gpu)])


def to_driver_devices(host_inventory, driver_name):
    """All driver devices of a host, in PCI address order."""
    return [to_driver_device(host_inventory.hostname, gpu, driver_name)
            for gpu in sorted(host_inventory.gpus, key=lambda g: g.address)]


def _colon_address(address):
    # Cyborg's helpers split "dddd:bb:dd.f"; they take the sysfs form as is.
    return placement_traits.pci_address(address)
