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
"""The set-up every driver test shares."""

import collections

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cyborg_gpu_drivers.adapters import sysfs
from cyborg_gpu_drivers import base


class DriverTestCase(testtools.TestCase):
    """Options reset after each test; the drivers' log captured."""

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(cfg.CONF))
        self.log = self.useFixture(fixtures.FakeLogger(
            name='cyborg_gpu_drivers'))
        # Placement as the drivers ask it about unhealthy GPUs: provider
        # name -> units allocated; nothing by default. The functional
        # tests ask the real Placement.
        self.allocations = {}
        self.useFixture(fixtures.MockPatchObject(
            base.GpuPartitionDriver, 'allocated_units',
            lambda driver, name, resource_class:
            self.allocations.get(name, 0)))
        # Placement's inventories as the drivers reserve busy units in
        # them: provider name -> {'total': ..., 'reserved': ...}; a
        # provider not listed is not in Placement.
        self.inventories = {}
        self.useFixture(fixtures.MockPatchObject(
            base.GpuPartitionDriver, 'placement_inventory',
            lambda driver, name, resource_class:
            (self.allocations.get(name, 0), dict(self.inventories[name]))
            if name in self.inventories else None))
        # Whether a provider exists in Placement (units in use on a new
        # one are held by guests Cyborg did not bind): yes unless a test
        # says otherwise.
        self.provider_exists = lambda name: True
        self.useFixture(fixtures.MockPatchObject(
            base.GpuPartitionDriver, 'provider_in_placement',
            lambda driver, name: self.provider_exists(name)))
        # The providers Placement has for one GPU, as the vGPU driver
        # reads them after a restart: GPU address -> {provider name:
        # {resource class: (used, record)}}; none by default.
        self.gpu_providers = {}
        self.useFixture(fixtures.MockPatchObject(
            base.GpuPartitionDriver, 'placement_gpu_providers',
            lambda driver, address: self.gpu_providers.get(address, {})))
        self.useFixture(fixtures.MockPatchObject(
            base.GpuPartitionDriver, 'set_reserved',
            lambda driver, name, resource_class, record, reserved:
            self.inventories[name].update(reserved=reserved)))

    def vendor_reads(self):
        """From now on, how many times each PCI device's ``vendor`` is
        read through the sysfs reader: ``{address: reads}``.
        """
        reads = collections.Counter()
        read = sysfs.Sysfs.read

        def counted(reader, address, name):
            if name == 'vendor':
                reads[address] += 1
            return read(reader, address, name)

        self.useFixture(fixtures.MockPatchObject(sysfs.Sysfs, 'read',
                                                 counted))
        return reads
