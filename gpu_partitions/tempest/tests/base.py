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
"""Base of the plugin's tests: admin clients, skips, the cloud wrapper."""

from tempest import config
from tempest import test

from gpu_partitions import scenarios
from gpu_partitions.tempest import cloud

CONF = config.CONF


class GpuPartitionsTest(test.BaseTestCase):

    credentials = ['admin']

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.service_available.gpu_partitions:
            raise cls.skipException('openstack-gpu-partitions is not '
                                    'enabled in this cloud')

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.admin = cls.os_admin

    @classmethod
    def resource_setup(cls):
        super().resource_setup()
        cls.image_ref = CONF.compute.image_ref
        cls.cloud = None

    def setUp(self):
        super().setUp()
        self.cloud = cloud.TempestCloud(
            self, self.admin, CONF.gpu_partitions.boot_timeout)
        self.gpu_providers = scenarios.gpu_providers(self.cloud)
        if not self.gpu_providers:
            self.skipTest('the cloud reports no GPU providers of '
                          'openstack-gpu-partitions')
