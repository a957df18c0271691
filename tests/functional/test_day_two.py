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
"""Retiring a GPU: reserve, drain, then remove (doc: operator/day-two).

The real MIG driver over ``hgx-h100``, Cyborg's real conductor, real
Placement and Nova.
"""

import json

from cyborg.common import exception as cyborg_exception
import fixtures

from gpu_partitions.cloud import harness
from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts
import placement_traits as names
from tests.functional import base

HOST = 'hgx-h100'
GPU = '0000:61:00.0'
PROFILE = '1g.10gb'


class RetireGpuTest(base.GpuCloudTestCase):

    def setUp(self):
        super().setUp()
        host = reference_hosts.load(HOST)
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        self.hostname = host.hostname
        self.devices = fixture_drivers.discover_all(
            env, ['gpu_partitions_nvidia_mig'])
        self.add_gpu_host(self.hostname, self.devices)
        self.rc = names.mig_resource_class(PROFILE)
        self.provider_name = names.provider_name(self.hostname, GPU, PROFILE)
        self.flavor = self.create_flavor(harness.gpu_extra_specs(
            self.rc, required_traits=[names.physical_gpu_trait(GPU)]))

    def without_the_gpu(self):
        return [device for device in self.devices
                if json.loads(device.controlpath_id.cpid_info)['bus']
                != GPU.split(':')[1]]

    def inventory(self):
        uuid = self.provider(self.provider_name).uuid
        return self.placement_get(
            '/resource_providers/%s/inventories' % uuid)

    def reserve_all(self):
        body = self.inventory()
        inventory = dict(body['inventories'][self.rc])
        inventory['reserved'] = inventory['total']
        uuid = self.provider(self.provider_name).uuid
        response = self.placement.put(
            '/resource_providers/%s/inventories/%s' % (uuid, self.rc),
            {'resource_provider_generation':
             body['resource_provider_generation'], **inventory},
            version='1.36')
        self.assertEqual(200, response.status, response.content)

    def test_reserve_drain_remove(self):
        server = self.boot(self.flavor)
        self.assertLandedOn(server, self.hostname, self.provider_name,
                            self.rc)

        # 1. Reserve: no new unit lands on the GPU, and the driver's next
        # report (same totals) keeps the reservation.
        self.reserve_all()
        self.assertEqual([], self.report(self.hostname, self.devices))
        inventory = self.inventory()['inventories'][self.rc]
        self.assertEqual(inventory['total'], inventory['reserved'])
        refused = self.boot(self.flavor)
        self.assertEqual('ERROR', refused['status'])

        # Removing the GPU before the drain: Placement refuses to delete a
        # provider holding an allocation (409) and Cyborg's whole report
        # fails; the provider and the allocation stay.
        self.assertRaises(cyborg_exception.ResourceProviderInUse,
                          self.report, self.hostname,
                          self.without_the_gpu())
        self.assertEqual({self.rc: 1},
                         self.allocations(server)[self.provider_name])

        # 2. Drain, 3. remove: the next report deletes the provider.
        self.delete(server)
        self.report(self.hostname, self.without_the_gpu())
        self.assertNotIn(self.provider_name,
                         [p.name for p in self.providers()])
