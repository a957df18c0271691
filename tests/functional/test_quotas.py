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
"""Per-class quotas: Keystone unified limits on our resource classes.

Nova's ``UnifiedLimitsDriver`` counts every resource class a boot asks for
(flavor ``resources*:`` specs and Cyborg device profile groups alike)
against ``class:<RC>`` limits, with usage read from Placement. Keystone is
stood in for by oslo.limit's ``LimitFixture`` (what Nova's own
``test_unified_limits`` uses); the rest is the real cloud.
"""

import fixtures
from nova.tests.functional.api import client
from oslo_limit import fixture as limit_fixture

from gpu_partitions.cloud import harness
from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts
import placement_traits as names
from tests.functional import base

HOST = 'hgx-h100'
PROFILE = '1g.10gb'


class UnifiedLimitsTest(base.GpuCloudTestCase):

    def setUp(self):
        super().setUp()
        self.flags(driver='nova.quota.UnifiedLimitsDriver', group='quota')
        self.rc = names.mig_resource_class(PROFILE)
        registered = {'servers': 100, 'class:VCPU': 1000,
                      'class:MEMORY_MB': 1000000, 'class:DISK_GB': 10000,
                      'class:%s' % self.rc: 10}
        project = {self.api.project_id: {'class:%s' % self.rc: 2}}
        self.useFixture(limit_fixture.LimitFixture(registered, project))
        host = reference_hosts.load(HOST)
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        self.add_gpu_host(host.hostname, fixture_drivers.discover_all(
            env, ['gpu_partitions_nvidia_mig']))

    def refused_boot(self, flavor_id):
        body = self._build_server(flavor_id=flavor_id, networks='none')
        error = self.assertRaises(client.OpenStackApiException,
                                  self.api.post_server, {'server': body})
        self.assertEqual(403, error.response.status_code)
        return error.response.json()['forbidden']['message']

    def check_third_boot_refused(self, flavor_id):
        for _ in range(2):
            server = self.boot(flavor_id)
            self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        message = self.refused_boot(flavor_id)
        self.assertIn('class:%s is over limit of 2' % self.rc, message)
        # The two servers hold two units in Placement, no more.
        used = sum(usages.get(self.rc, 0)
                   for usages in self.provider_usages().values())
        self.assertEqual(2, used)
        return message

    def test_flavor_extra_specs(self):
        flavor = self.create_flavor(harness.gpu_extra_specs(self.rc))
        message = self.check_third_boot_refused(flavor)
        self.assertEqual(
            'Project %s is over a limit for [Resource class:%s is over '
            'limit of 2 due to current usage 2 and delta 1]'
            % (self.api.project_id, self.rc), message)

    def test_device_profile(self):
        self.create_device_profile(
            'mig-1g', [harness.device_profile_group(self.rc)])
        flavor = self.create_flavor(harness.accel_extra_specs('mig-1g'))
        self.check_third_boot_refused(flavor)

    def test_deleting_a_server_frees_its_unit(self):
        flavor = self.create_flavor(harness.gpu_extra_specs(self.rc))
        servers = [self.boot(flavor) for _ in range(2)]
        self.refused_boot(flavor)
        self.delete(servers[0])
        self.assertEqual('ACTIVE', self.boot(flavor)['status'])
