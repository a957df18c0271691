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
"""Read PCI devices through libudev (pyudev).

It answers the same questions as :class:`~cyborg_gpu_drivers.adapters.
sysfs.Sysfs` (the subset the AMD driver asks), so the driver runs on either.
Enumeration, attributes and the bound driver come from libudev; ``virtfnN``
and ``physfn`` are symlinks that libudev does not expose as attributes, so
they are read with ``os.readlink`` under the device's ``sys_path``.

Every read answers None (or []) when the device or attribute is missing:
a VF that vanishes in the middle of a scan reads as absent.
"""

import os

from cyborg_gpu_drivers.adapters import sysfs


def import_pyudev():
    """The pyudev module, or None when it (or libudev) is not installed."""
    try:
        import pyudev
    except Exception:  # ImportError, or OSError without libudev.so.1
        return None
    return pyudev


class UdevPci(sysfs.PciAttributes):
    """PCI devices as libudev lists them."""

    def __init__(self, pyudev, context=None):
        self._pyudev = pyudev
        self._context = context or pyudev.Context()

    def _device(self, address):
        try:
            return self._pyudev.Devices.from_name(self._context, 'pci',
                                                  address)
        except Exception:  # DeviceNotFoundError and friends
            return None

    def exists(self, address):
        return self._device(address) is not None

    def read(self, address, name):
        """The stripped text of an attribute, or None if it is missing."""
        device = self._device(address)
        if device is None:
            return None
        try:
            return device.attributes.asstring(name).strip()
        except (KeyError, UnicodeDecodeError, OSError):
            return None

    def driver(self, address):
        device = self._device(address)
        # libudev names a dangling link's target too: that is no driver.
        if device is None or not os.path.isdir(
                os.path.join(device.sys_path, 'driver')):
            return None
        return device.driver

    def _link_name(self, device, name):
        try:
            return os.path.basename(
                os.readlink(os.path.join(device.sys_path, name)))
        except OSError:
            return None

    def physfn(self, address):
        device = self._device(address)
        if device is None:
            return None
        return self._link_name(device, 'physfn')

    def virtfn_links(self, address):
        device = self._device(address)
        if device is None:
            return []
        return sysfs.virtfn_links(device.sys_path)

    def vfs_by_physfn(self, address):
        """Addresses of the devices whose ``physfn`` names ``address``."""
        return sorted(
            device.sys_name
            for device in self._context.list_devices(subsystem='pci')
            if self._link_name(device, 'physfn') == address)

    def addresses(self):
        """PCI addresses of every device libudev lists, sorted."""
        return sorted(device.sys_name for device in
                      self._context.list_devices(subsystem='pci'))
