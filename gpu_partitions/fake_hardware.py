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
"""A Cyborg driver that runs the real drivers over a reference host.

Enabled as ``gpu_partitions_fake_hardware`` in ``[agent] enabled_drivers``,
it lets a devstack gate or a demo cloud without GPUs go through the whole
production path: the real drivers, Cyborg's conductor, Placement and Nova.
Only the adapters' answers are recorded data.
"""

import os
import shutil

from cyborg.accelerator.drivers import driver as cyborg_driver
from oslo_log import log as logging

from gpu_partitions import conf
from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts

LOG = logging.getLogger(__name__)
CONF = conf.CONF


def load_reference_host(name_or_path):
    if os.path.sep in name_or_path or name_or_path.endswith('.json'):
        return reference_hosts.load_file(name_or_path)
    return reference_hosts.load(name_or_path)


class FakeHardwareDriver(cyborg_driver.GenericDriver):
    """Every configured real driver, over one reference host."""

    def __init__(self):
        group = CONF.gpu_partitions_fake_hardware
        unknown = set(group.drivers) - set(fixture_drivers.DRIVERS)
        if unknown:
            raise ValueError(
                '[gpu_partitions_fake_hardware] drivers: unknown %s; allowed '
                'values: %s' % (', '.join(sorted(unknown)),
                                ', '.join(sorted(fixture_drivers.DRIVERS))))
        host = load_reference_host(group.reference_host)
        # The tree is rebuilt at every start: it is the recorded host, not
        # state to keep.
        shutil.rmtree(group.state_path, ignore_errors=True)
        os.makedirs(group.state_path)
        env = host.materialize(group.state_path)
        self._drivers = [fixture_drivers.build(
            name, env, reserves_in_placement=True) for name in group.drivers]
        LOG.warning('Fake GPU hardware: reporting reference host %s '
                    'through drivers %s', host.name,
                    ', '.join(group.drivers))

    def discover(self):
        devices = []
        for driver in self._drivers:
            devices.extend(driver.discover())
        return devices

    def update(self, control_path, image_path):
        return False

    def get_stats(self):
        return {}
