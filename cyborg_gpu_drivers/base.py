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
"""The base every driver of this package shares.

Cyborg's agent calls ``discover()`` and nothing else, and one exception
there loses the report of every driver on the host. So ``discover()`` here
never raises: a driver implements :meth:`GpuPartitionDriver.collect`, which
returns a plain :class:`~cyborg_gpu_drivers.inventory.HostInventory`, and
the base turns it into Cyborg objects. If ``collect`` fails anyway, the last
good report is sent again with every device marked ``stub`` so that Cyborg's
conductor neither adds nor deletes anything until the next good scan.
"""

import abc
import socket

from cyborg.accelerator.drivers import driver as cyborg_driver
from oslo_config import cfg
from oslo_log import log as logging

from cyborg_gpu_drivers import report

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


def agent_hostname():
    """The compute node provider name Cyborg's agent reports under."""
    try:
        name = CONF.agent.resource_provider_name
    except cfg.NoSuchOptError:
        name = None
    return name or CONF.host or socket.getfqdn()


class GpuPartitionDriver(cyborg_driver.GenericDriver, metaclass=abc.ABCMeta):
    """A Cyborg driver whose logic is plain Python over a HostInventory."""

    #: Cyborg's ``driver_name`` on every deployable.
    DRIVER_NAME = None

    def __init__(self, hostname=None):
        self._hostname = hostname
        self._last_good = []

    @property
    def hostname(self):
        return self._hostname or agent_hostname()

    @abc.abstractmethod
    def collect(self):
        """Scan the hardware and return a HostInventory.

        Expected hardware trouble (a lost GPU, a vanished VF) is handled
        inside and costs only the affected devices.
        """

    def discover(self):
        try:
            devices = report.to_driver_devices(self.collect(),
                                               self.DRIVER_NAME)
        except Exception:
            LOG.exception('%s: scan failed; re-sending the last good report '
                          'of %d GPUs as stubs so nothing is removed from '
                          'Placement', self.DRIVER_NAME, len(self._last_good))
            for device in self._last_good:
                device.stub = True
            return list(self._last_good)
        self._last_good = devices
        return devices

    def update(self, control_path, image_path):
        # GPUs get no firmware through Cyborg.
        return False

    def get_stats(self):
        return {}
