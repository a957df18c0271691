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
"""The cloud interface of :mod:`gpu_partitions.scenarios` over tempest's
clients, so the scenarios the functional tests run in-process also run
against a real cloud."""

import collections

from tempest.common import waiters
from tempest.lib.common import rest_client
from tempest.lib.common.utils import data_utils
from tempest.lib import exceptions as lib_exc

Provider = collections.namedtuple(
    'Provider', 'name uuid parent_uuid inventories traits')


class CyborgClient(rest_client.RestClient):
    """The few Cyborg API calls the scenarios need."""

    def __init__(self, auth_provider, region):
        super().__init__(auth_provider, 'accelerator', region)

    def create_device_profile(self, name, groups):
        body = [{'name': name, 'groups': list(groups)}]
        resp, body = self.post('v2/device_profiles',
                               body=self.serialize(body))
        self.expected_success(201, resp.status)
        return self.deserialize(body)

    def delete_device_profile(self, name):
        resp, _ = self.delete('v2/device_profiles/%s' % name)
        self.expected_success(204, resp.status)


class TempestCloud:
    """Admin clients of a tempest test, wrapped for the scenarios."""

    def __init__(self, test, clients, boot_timeout):
        self.test = test
        self.clients = clients
        self.boot_timeout = boot_timeout
        self.cyborg = CyborgClient(clients.auth_provider,
                                   clients.region or '')

    def create_device_profile(self, name, groups):
        profile = self.cyborg.create_device_profile(name, groups)
        self.test.addCleanup(self._ignore_not_found,
                             self.cyborg.delete_device_profile, name)
        return profile

    def create_flavor(self, extra_specs, name=None):
        flavors = self.clients.flavors_client
        flavor = flavors.create_flavor(
            name=name or data_utils.rand_name('gpu-partitions'),
            ram=1024, vcpus=1, disk=1)['flavor']
        self.test.addCleanup(self._ignore_not_found, flavors.delete_flavor,
                             flavor['id'])
        flavors.set_flavor_extra_spec(flavor['id'], **extra_specs)
        return flavor['id']

    def boot(self, flavor_id, name=None):
        servers = self.clients.servers_client
        server = servers.create_server(
            name=name or data_utils.rand_name('gpu-partitions'),
            flavorRef=flavor_id, imageRef=self.test.image_ref,
            networks='none')['server']
        self.test.addCleanup(self._ignore_not_found, servers.delete_server,
                             server['id'])
        try:
            waiters.wait_for_server_status(servers, server['id'], 'ACTIVE',
                                           timeout=self.boot_timeout)
        except lib_exc.TempestException:
            pass
        return servers.show_server(server['id'])['server']

    def delete(self, server):
        servers = self.clients.servers_client
        servers.delete_server(server['id'])
        waiters.wait_for_server_termination(servers, server['id'])

    def providers(self):
        rps = self.clients.resource_providers_client
        result = []
        for rp in rps.list_resource_providers()['resource_providers']:
            inventories = rps.list_resource_provider_inventories(
                rp['uuid'])['inventories']
            traits = rps.list_resource_provider_traits(rp['uuid'])['traits']
            result.append(Provider(
                rp['name'], rp['uuid'], rp.get('parent_provider_uuid'),
                {rc: inventory['total']
                 for rc, inventory in inventories.items()},
                sorted(traits)))
        return sorted(result)

    def allocations(self, server):
        names = {p.uuid: p.name for p in self.providers()}
        body = self.clients.placement_client.list_allocations(server['id'])
        return {names.get(uuid, uuid): allocation['resources']
                for uuid, allocation in body['allocations'].items()}

    @staticmethod
    def _ignore_not_found(function, *args):
        try:
            function(*args)
        except lib_exc.NotFound:
            pass
