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
"""Nova's own functional tests, unmodified, with our scheduler plugins.

``tox -e nova-functional`` loads the test classes of the installed nova
package listed in :data:`NOVA_TESTS` and runs them the way an operator runs
Nova with our plugins: ``GpuPartitionFilter`` and ``GpuPartitionWeigher``
appended to whatever filters and weighers each test configures. The
appending happens where Nova reads those options, when each scheduler's
HostManager starts, so a test's own ``self.flags(enabled_filters=...)`` is
honoured and extended, never replaced. ``GPU_PARTITIONS_NOVA_PLUGINS=0``
runs the same tests without the plugins, for comparison.

The plugins are appended only after Nova's test package is imported: that
import applies eventlet's monkey patching, which must come before anything
imports ``nova.scheduler.utils`` (it pulls in keystoneauth, urllib3 and
oslo.context, whose thread-locals would then be shared by all green
threads), as in nova-scheduler, which loads filters long after it patched.
"""

import functools
import os
import unittest

NOVA_TESTS = (
    'nova.tests.functional.test_servers.AcceleratorServerTest',
    'nova.tests.functional.test_servers.AcceleratorServerReschedTest',
    'nova.tests.functional.test_servers.AcceleratorServerOpsTest',
    'nova.tests.functional.test_servers.TwoPortsAcceleratorServerOpsTest',
    'nova.tests.functional.test_servers.PortAcceleratorServerOpsTest',
    'nova.tests.functional.test_servers.PortAcceleratorServerCreateRejectTest',
    'nova.tests.functional.test_servers.PortAndFlavorAccelsServerCreateTest',
    'nova.tests.functional.test_scheduler',
    'nova.tests.functional.test_server_group',
    'nova.tests.functional.test_aggregates',
    'nova.tests.functional.libvirt.test_vgpu',
    'nova.tests.functional.libvirt.test_numa_servers',
    'nova.tests.functional.libvirt.test_pci_in_placement',
)

FILTER = 'GpuPartitionFilter'
FILTER_PATH = 'nova_filters.gpu_filter.GpuPartitionFilter'
WEIGHER_PATH = 'nova_filters.gpu_weigher.GpuPartitionWeigher'


def _appended(values, value):
    values = list(values)
    return values if value in values else values + [value]


def append_plugins():
    """Make every HostManager Nova starts run our filter and weigher after
    the ones configured.
    """
    import nova.conf
    from nova.scheduler import host_manager

    conf = nova.conf.CONF
    start = host_manager.HostManager.__init__
    if getattr(start, 'gpu_partitions_appended', False):
        return

    @functools.wraps(start)
    def start_with_plugins(self, *args, **kwargs):
        group = conf.filter_scheduler
        # Overrides, as a test's self.flags: its fixture clears them.
        conf.set_override('available_filters', _appended(
            group.available_filters, FILTER_PATH), 'filter_scheduler')
        conf.set_override('enabled_filters', _appended(
            group.enabled_filters, FILTER), 'filter_scheduler')
        conf.set_override('weight_classes', _appended(
            group.weight_classes, WEIGHER_PATH), 'filter_scheduler')
        start(self, *args, **kwargs)

    start_with_plugins.gpu_partitions_appended = True
    host_manager.HostManager.__init__ = start_with_plugins


def load_tests(loader, standard_tests, pattern):
    suite = unittest.TestSuite()
    for name in NOVA_TESTS + ('tests.nova_functional.test_appended',):
        suite.addTests(loader.loadTestsFromName(name))
    # After Nova's test package was imported: it applies eventlet's
    # monkey patching first, as nova-scheduler does before loading any
    # filter (see doc/source/scheduler.rst).
    if os.environ.get('GPU_PARTITIONS_NOVA_PLUGINS', '1') != '0':
        append_plugins()
    return suite
