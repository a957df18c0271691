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

from nova_filters import conf
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

    def test_flavor_key_variants_and_duplicates(self):
        """Flavors nova-api never validated: every spelling of our keys
        counts, several keys give the strictest affinity, unknown keys of
        the namespace and bad values are logged, none raises.
        """
        link, numa, pol = (policy.LINK_AFFINITY, policy.NUMA_AFFINITY,
                           policy.POLICY)
        cases = [
            # (extra specs, (policy, link, numa), logged)
            ({'gpu_partitions:LINK_AFFINITY': 'required'},
             ('spread', 'required', 'preferred'), None),
            ({' gpu_partitions:link_affinity ': 'required'},
             ('spread', 'required', 'preferred'), None),
            ({'GPU_Partitions:Link-Affinity': 'required'},
             ('spread', 'required', 'preferred'), None),
            ({'gpu_partitions: numa_affinity': 'required'},
             ('spread', 'none', 'required'), None),
            ({'gpu_partitions:Policy': 'pack'},
             ('pack', 'none', 'preferred'), None),
            ({'gpu_partitions:link_affinity': 'none',
              'gpu_partitions:Link_Affinity': 'required'},
             ('spread', 'required', 'preferred'), 'using "required"'),
            ({'gpu_partitions:policy': 'pack',
              'gpu_partitions:POLICY': 'spread'},
             ('spread', 'none', 'preferred'),
             'using the configured and aggregate policy'),
            ({'gpu_partitions:link_afinity': 'required'},
             ('spread', 'none', 'preferred'), 'is not one of ours'),
            ({'gpu_partitions:link_affinity': '\x00'},
             ('spread', 'required', 'preferred'), 'treating it as'),
            ({'gpu_partitions:policy': 7},
             ('spread', 'none', 'preferred'), 'using the configured'),
            ({'other:link_affinity': 'required', 'gpu_partitionsx:policy':
              'pack'}, ('spread', 'none', 'preferred'), None),
        ]
        for specs, expected, logged in cases:
            logger = self.useFixture(fixtures.FakeLogger())
            spec = fakes.request_spec(specs)
            self.assertEqual(expected, policy.for_host(self.host, spec),
                             specs)
            self.assertEqual(expected, tuple(
                policy.resolver(name, spec)(self.host)
                for name in (pol, link, numa)), specs)
            if logged is None:
                self.assertEqual('', logger.output, specs)
            else:
                self.assertIn(logged, logger.output, specs)

    def test_resolver_agrees_with_resolve(self):
        for value in ('pack', 'spread', 'Pack', 'bogus', None):
            specs = {} if value is None else {'gpu_partitions:policy': value}
            spec = fakes.request_spec(specs)
            self.assertEqual(
                policy.resolve(policy.POLICY, self.host, spec),
                policy.resolver(policy.POLICY, spec)(self.host))

    def test_aggregate_values_forgive_case_and_blanks(self):
        for metadata, expected in (
                ({'gpu_partitions_link_affinity': ' Required'}, 'required'),
                ({'gpu_partitions_link_affinity': 'PREFERRED '},
                 'preferred'),
                ({'gpu_partitions_link_affinity': 'requierd'}, 'required'),
                ({'gpu_partitions_link_affinity': 'requierd',
                  'gpu_partitions_numa_affinity': 'bogus'}, 'required')):
            self.host = fakes.host_state(
                'h1', 'root-h1', [], aggregates=[fakes.aggregate(metadata)])
            self.assertEqual(expected, policy.resolve(
                policy.LINK_AFFINITY, self.host, fakes.request_spec({})),
                metadata)

    def test_invisible_and_compatibility_characters_are_forgiven(self):
        """What copying a flavor or aggregate value out of a document can
        bring along: nova-api at 2.86 and later refuses none of these keys
        (their namespace is not ours to it), so ignoring them would drop
        the affinity in silence.
        """
        link = policy.LINK_AFFINITY
        for specs, expected in (
                ({'gpu_partitions\u200b:link_affinity': 'required'},
                 'required'),
                ({'gpu_partitions:link_affinity\u200b': 'required'},
                 'required'),
                ({'\ufeffgpu_partitions:link_affinity': 'required'},
                 'required'),
                ({'gpu_partitions :link_affinity': 'required'}, 'required'),
                ({'ｇｐｕ_partitions:link_affinity': 'preferred'},
                 'preferred'),
                ({'gpu_partitions:link_affinity': 'ｎｏｎｅ'}, 'none'),
                ({'gpu_partitions:link_affinity': ' pre\u00adferred\u00a0'},
                 'preferred')):
            logger = self.useFixture(fixtures.FakeLogger())
            self.assertEqual(expected, policy.resolve(
                link, self.host, fakes.request_spec(specs)), specs)
            self.assertEqual('', logger.output, specs)
        self.host = fakes.host_state('h1', 'root-h1', [], aggregates=[
            fakes.aggregate({'gpu_partitions_link_affinity':
                             '\u200bｒequired'})])
        self.assertEqual('required', policy.resolve(
            link, self.host, fakes.request_spec({})))

    def test_bad_aggregate_value_is_logged_once_not_per_host(self):
        logger = self.useFixture(fixtures.FakeLogger())
        spec = fakes.request_spec({})
        for index in range(50):
            host = fakes.host_state('h%d' % index, 'root-%d' % index, [],
                                    aggregates=[fakes.aggregate(
                                        {'gpu_partitions_link_affinity':
                                         'requierd'})])
            for _ in range(3):
                self.assertEqual('required', policy.resolve(
                    policy.LINK_AFFINITY, host, spec))
        self.assertEqual(1, logger.output.count(
            'gpu_partitions_link_affinity'))
        self.assertIn("['requierd']", logger.output)
        self.assertIn('treating it as "required"', logger.output)

    def test_bad_aggregate_policy_is_ignored(self):
        logger = self.useFixture(fixtures.FakeLogger())
        host = fakes.host_state('h1', 'root-h1', [], aggregates=[
            fakes.aggregate({'gpu_partitions_policy': 'spraed'})])
        self.assertEqual(
            conf.CONF.gpu_partitions_scheduler.policy,
            policy.resolve(policy.POLICY, host, fakes.request_spec({})))
        self.assertIn("gpu_partitions_policy=['spraed']", logger.output)
        self.assertIn('ignored', logger.output)

    def test_bad_aggregate_affinity_beside_a_good_one_is_the_strictest(self):
        host = fakes.host_state('h1', 'root-h1', [], aggregates=[
            fakes.aggregate({'gpu_partitions_numa_affinity': 'preferred'}),
            fakes.aggregate({'gpu_partitions_numa_affinity': 'prefered'})])
        self.assertEqual('required', policy.resolve(
            policy.NUMA_AFFINITY, host, fakes.request_spec({})))
