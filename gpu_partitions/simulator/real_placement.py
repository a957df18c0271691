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
"""The simulator's Placement interface over a real Placement service.

Used to check the in-memory model: the same fleet is written to a real
Placement (providers, inventories, traits, as the Cyborg conductor would),
and the scheduler asks it for allocation candidates and writes claims
through its REST API. Candidates are normalised exactly as the in-memory
model's (:func:`gpu_partitions.simulator.placement.normalise`).
"""

import os_resource_classes as orc
import os_traits

from gpu_partitions.simulator import placement

MICROVERSION = 'placement 1.36'


class PlacementApiError(Exception):
    pass


class RealPlacement:
    """``session`` is a ``requests``-like object; ``endpoint`` the
    Placement URL.
    """

    def __init__(self, session, endpoint, fleet, token='admin'):
        self.session = session
        self.endpoint = endpoint.rstrip('/')
        self.headers = {'x-auth-token': token,
                        'OpenStack-API-Version': MICROVERSION,
                        'Accept': 'application/json'}
        self.providers = placement.fleet_providers(fleet)
        self.names = {p.uuid: p.name for p in self.providers}
        self.consumers = set()
        self._create(self.providers)

    def _call(self, method, path, body=None, expect=(200,)):
        response = self.session.request(
            method, self.endpoint + path, json=body, headers=self.headers)
        if response.status_code not in expect:
            raise PlacementApiError('%s %s: %s %s' % (
                method, path, response.status_code, response.text))
        return response.json() if response.content else None

    def _create(self, providers):
        classes = {rc for p in providers for rc in p.inventories
                   if rc not in orc.STANDARDS}
        for rc in sorted(classes):
            self._call('PUT', '/resource_classes/%s' % rc,
                       expect=(201, 204))
        standard = set(os_traits.get_traits())
        for trait in sorted({t for p in providers for t in p.traits
                             if t not in standard}):
            self._call('PUT', '/traits/%s' % trait, expect=(201, 204))
        for provider in providers:
            body = {'name': provider.name, 'uuid': provider.uuid}
            if provider.parent is not None:
                body['parent_provider_uuid'] = provider.parent
            self._call('POST', '/resource_providers', body)
            generation = self._call(
                'PUT', '/resource_providers/%s/inventories' % provider.uuid,
                {'resource_provider_generation': 0,
                 'inventories': {
                     rc: {'total': total,
                          'reserved': provider.reserved.get(rc, 0)}
                     for rc, total in provider.inventories.items()}})[
                'resource_provider_generation']
            self._call('PUT', '/resource_providers/%s/traits' % provider.uuid,
                       {'resource_provider_generation': generation,
                        'traits': sorted(provider.traits)})

    def allocation_candidates(self, request,
                              limit=placement.MAX_PLACEMENT_RESULTS):
        response = self.session.request(
            'GET', self.endpoint + '/allocation_candidates?'
            + request.query(), headers=self.headers)
        if (response.status_code == 400
                and 'No such resource class' in response.text):
            # A flavor for a slice no host reports: NoValidHost.
            return [], {}
        if response.status_code != 200:
            raise PlacementApiError('candidates: %s %s' % (
                response.status_code, response.text))
        answer = response.json()
        candidates = placement.normalise(
            answer['allocation_requests'], self.names, limit)
        trees = {answer['provider_summaries'][rp]['root_provider_uuid']
                 for c in candidates for rp in c['allocations']}
        summaries = {rp: summary for rp, summary
                     in answer['provider_summaries'].items()
                     if summary['root_provider_uuid'] in trees}
        return candidates, placement.ordered_summaries(summaries, self.names)

    def claim(self, consumer, allocation_request):
        response = self.session.request(
            'PUT', self.endpoint + '/allocations/%s' % _uuid(consumer),
            json={'allocations': allocation_request['allocations'],
                  'project_id': placement.provider_uuid('project'),
                  'user_id': placement.provider_uuid('user'),
                  'consumer_generation': None},
            headers=self.headers)
        if response.status_code == 409:
            return False
        if response.status_code != 204:
            raise PlacementApiError('claim: %s %s' % (response.status_code,
                                                      response.text))
        self.consumers.add(consumer)
        return True

    def release(self, consumer):
        if consumer in self.consumers:
            self.consumers.discard(consumer)
            self._call('DELETE', '/allocations/%s' % _uuid(consumer),
                       expect=(204,))

    def release_all(self):
        for consumer in sorted(self.consumers):
            self.release(consumer)

    def usages(self):
        found = {}
        for provider in self.providers:
            usages = self._call('GET', '/resource_providers/%s/usages'
                                % provider.uuid)['usages']
            used = {rc: n for rc, n in usages.items() if n}
            if used:
                found[provider.name] = used
        return found


def _uuid(consumer):
    return placement.provider_uuid('consumer/%s' % consumer)
