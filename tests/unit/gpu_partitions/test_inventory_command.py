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
"""``gpu-partitions inventory``: a reference host, and the Placement diff."""

import json

import testtools

from gpu_partitions import cli
from gpu_partitions.commands import inventory
from tests.unit import cli_output


def run(*argv):
    code, out, _ = cli_output.run_cli(argv)
    return code, out


class FixtureInventoryTest(testtools.TestCase):

    def test_json_lists_every_provider_of_the_host(self):
        code, out = run('inventory', '--fixture', 'mi300x-cpx',
                        '--format', 'json')
        self.assertEqual(0, code)
        report = json.loads(out)
        self.assertEqual('mi300x-01', report['host'])
        self.assertEqual(8, len(report['providers']))
        for entry in report['providers']:
            self.assertEqual('CUSTOM_GPU_VF_MI300X_CPX',
                             entry['resource_class'])
            self.assertEqual(8, entry['total'])
            self.assertIn('OWNER_CYBORG', entry['traits'])
            self.assertEqual({'PCI'}, {h['type']
                                       for h in entry['attach_handles']})

    def test_text_is_a_tree_per_gpu(self):
        code, out = run('inventory', '--fixture', 'hgx-h100')
        self.assertEqual(0, code)
        self.assertIn('hgx-h100-01: 8 GPUs, 15 providers', out)
        self.assertEqual(8, out.count('\nGPU 0000:'))

    def test_unknown_fixture_is_refused(self):
        code, _, error = cli_output.run_cli(
            ['inventory', '--fixture', 'no-such-host'])
        self.assertEqual(2, code)
        self.assertIn('no-such-host', error)


def entry(name, total=4, traits=('OWNER_CYBORG', 'CUSTOM_A'), stub=False):
    return {'name': name, 'resource_class': 'CUSTOM_MIG_1G_10GB',
            'total': total, 'traits': sorted(traits), 'stub': stub}


def held(total=4, traits=('OWNER_CYBORG', 'CUSTOM_A')):
    return {'inventories': {'CUSTOM_MIG_1G_10GB': total},
            'traits': sorted(traits)}


class PlacementDifferencesTest(testtools.TestCase):

    def test_in_step(self):
        self.assertEqual([], inventory.placement_differences(
            [entry('a')], {'a': held()}))

    def test_each_kind_of_difference(self):
        lines = inventory.placement_differences(
            [entry('a', total=3), entry('b'), entry('c', traits=(
                'OWNER_CYBORG', 'CUSTOM_B')), entry('s', stub=True)],
            {'a': held(), 'c': held(), 'gone': held(), 's': held(),
             'nova-pgpu': held(traits=('OWNER_NOVA',))})
        self.assertEqual([
            "a: inventory {'CUSTOM_MIG_1G_10GB': 4} in Placement, "
            "{'CUSTOM_MIG_1G_10GB': 3} reported",
            'missing in Placement: b',
            "c: traits only in Placement ['CUSTOM_A'], only reported "
            "['CUSTOM_B']",
            'only in Placement: gone'], lines)


class FakeResponse:

    def __init__(self, body):
        self.body = body

    def raise_for_status(self):
        pass

    def json(self):
        return self.body


class FakePlacement:
    """Placement's API at the keystoneauth adapter boundary."""

    def __init__(self):
        self.urls = []
        self.answers = {
            '/resource_providers?name=h': {'resource_providers': [
                {'uuid': 'root', 'name': 'h'}]},
            '/resource_providers?in_tree=root': {'resource_providers': [
                {'uuid': 'root', 'name': 'h'},
                {'uuid': 'child', 'name': 'h_gpu'}]},
            '/resource_providers/child/inventories': {'inventories': {
                'CUSTOM_X': {'total': 2, 'reserved': 0}}},
            '/resource_providers/child/traits': {'traits': [
                'OWNER_CYBORG']},
        }

    def get(self, url, microversion=None):
        self.urls.append((url, microversion))
        return FakeResponse(self.answers[url])


class PlacementProvidersTest(testtools.TestCase):

    def test_children_of_the_compute_node(self):
        placement = FakePlacement()
        self.assertEqual(
            {'h_gpu': {'inventories': {'CUSTOM_X': 2},
                       'traits': ['OWNER_CYBORG']}},
            inventory.placement_providers(placement, 'h'))
        self.assertEqual({'1.14'}, {v for _, v in placement.urls})

    def test_unknown_host_is_a_usage_error(self):
        placement = FakePlacement()
        placement.answers['/resource_providers?name=x'] = {
            'resource_providers': []}
        self.assertRaises(cli.UsageError, inventory.placement_providers,
                          placement, 'x')
