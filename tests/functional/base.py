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
"""Base of the functional tests: the in-process cloud.

Every test gets a fresh cloud (Nova API, conductor and scheduler, Placement
on SQLite, Cyborg's conductor on its own SQLite DB); it adds GPU hosts with
:meth:`~gpu_partitions.cloud.harness.CloudTestCase.add_gpu_host`. Set the
scheduler plugins with the class attributes ``ENABLED_FILTERS``,
``EXTRA_FILTERS``, ``WEIGHT_CLASSES`` and ``SCHEDULER_OPTIONS``.
"""

import uuid

from gpu_partitions.cloud import harness


class GpuCloudTestCase(harness.CloudTestCase):

    def provider(self, name):
        """The provider called ``name``; fails the test if there is none."""
        for provider in self.providers():
            if provider.name == name:
                return provider
        self.fail('no provider %r in Placement: %s'
                  % (name, [p.name for p in self.providers()]))

    def assertStableUuid(self, provider):
        """Cyborg derives a deployable's provider UUID from its name."""
        self.assertEqual(str(uuid.uuid3(uuid.NAMESPACE_DNS, provider.name)),
                         provider.uuid)

    @staticmethod
    def pci_address(attach_handle_info):
        """The address an ARQ's PCI attach handle names."""
        return '%(domain)s:%(bus)s:%(device)s.%(function)s' % (
            attach_handle_info)

    def assertLandedOn(self, server, hostname, provider_name,
                       resource_class, amount=1):
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        self.assertEqual(hostname, self.host_of(server))
        allocations = self.allocations(server)
        self.assertEqual({resource_class: amount},
                         allocations.get(provider_name), allocations)
