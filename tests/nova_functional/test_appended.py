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
"""The harness really appends our plugins to what a test configures."""

import os

import fixtures
from nova.scheduler import host_manager
from nova import test


class AppendedTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        if os.environ.get('GPU_PARTITIONS_NOVA_PLUGINS', '1') == '0':
            self.skipTest('plugins not appended in this run')
        for name in ('refresh_cells_caches', '_init_aggregates',
                     '_init_instance_info'):
            self.useFixture(fixtures.MockPatchObject(
                host_manager.HostManager, name))

    def _names(self, manager):
        return ([type(f).__name__ for f in manager.enabled_filters],
                [type(w).__name__ for w in manager.weighers])

    def test_appended_after_what_the_test_configures(self):
        self.flags(enabled_filters=['ComputeFilter'],
                   weight_classes=['nova.scheduler.weights.ram.RAMWeigher'],
                   group='filter_scheduler')
        filters, weighers = self._names(host_manager.HostManager())
        self.assertEqual(['ComputeFilter', 'GpuPartitionFilter'], filters)
        self.assertEqual(['RAMWeigher', 'GpuPartitionWeigher'], weighers)

    def test_appended_once(self):
        host_manager.HostManager()
        filters, weighers = self._names(host_manager.HostManager())
        self.assertEqual(1, filters.count('GpuPartitionFilter'))
        self.assertEqual(1, weighers.count('GpuPartitionWeigher'))
