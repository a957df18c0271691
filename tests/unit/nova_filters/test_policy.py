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
"""Which policy a flavor, an aggregate and the options give one host,
flavor values that nova-api never validated included."""

import fixtures

from nova import test

from nova_filters import policy
from tests.unit.nova_filters import fakes


class TestFlavorValues(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(policy, '_WARNED', set()))
        self.host = fakes.host_state('h1', 'root-h1', [])
        self.flags(group='gpu_partitions_scheduler', policy='spread',
                   link_affinity='none', numa_affinity='preferred')

    def resolve(self, name, value):
        spec = fakes.request_spec({policy.flavor_key(name): value})
        return policy.resolve(name, self.host, spec)

    def test_valid_value_overrides_the_option(self):
        self.assertEqual('pack', self.resolve(policy.POLICY, 'pack'))
        self.assertEqual('required',
                         self.resolve(policy.LINK_AFFINITY, 'required'))

    def test_case_and_blanks_are_forgiven(self):
        self.assertEqual('required',
                         self.resolve(policy.LINK_AFFINITY, ' Required '))
        self.assertEqual('pack', self.resolve(policy.POLICY, 'PACK'))

    def test_unreadable_affinity_is_kept_as_required(self):
        for name in (policy.LINK_AFFINITY, policy.NUMA_AFFINITY):
            logger = self.useFixture(fixtures.FakeLogger())
            self.assertEqual('required', self.resolve(name, 'requierd'))
            self.assertIn("gpu_partitions:%s='requierd'" % name,
                          logger.output)
            self.assertIn('treating it as "required"', logger.output)

    def test_unreadable_policy_falls_back_to_the_option(self):
        logger = self.useFixture(fixtures.FakeLogger())
        self.assertEqual('spread', self.resolve(policy.POLICY, 'packed'))
        self.assertIn("gpu_partitions:policy='packed' is not one of pack, "
                      "spread", logger.output)

    def test_unreadable_policy_falls_back_to_the_aggregate(self):
        self.host = fakes.host_state(
            'h1', 'root-h1', [],
            aggregates=[fakes.aggregate({'gpu_partitions_policy': 'pack'})])
        self.assertEqual('pack', self.resolve(policy.POLICY, 'packed'))

    def test_warned_once_per_value_not_per_host(self):
        logger = self.useFixture(fixtures.FakeLogger())
        spec = fakes.request_spec({policy.flavor_key('link_affinity'): 'x'})
        for _ in range(50):
            policy.for_host(self.host, spec)
        self.assertEqual(1, logger.output.count('link_affinity'))

    def test_resolver_agrees_with_resolve(self):
        for value in ('pack', 'spread', 'Pack', 'bogus', None):
            specs = {} if value is None else {'gpu_partitions:policy': value}
            spec = fakes.request_spec(specs)
            self.assertEqual(
                policy.resolve(policy.POLICY, self.host, spec),
                policy.resolver(policy.POLICY, spec)(self.host))
