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
"""The gpu_partitions:* extra specs, as nova-api's validation sees them."""

from nova.api.validation.extra_specs import validators
from nova import exception
from nova import test

from nova_filters import extra_specs


class ExtraSpecValidatorTest(test.NoDBTestCase):

    def setUp(self):
        super().setUp()
        # What nova-api does at start: every installed entry point.
        validators.load_validators()

    def test_registered_through_the_entry_point(self):
        for validator in extra_specs.register():
            self.assertIs(validator, validators.VALIDATORS[validator.name])
        self.assertIn('gpu_partitions', validators.NAMESPACES)

    def test_allowed_values_pass(self):
        for name, values in (
                ('gpu_partitions:policy', ('pack', 'spread')),
                ('gpu_partitions:link_affinity',
                 ('required', 'preferred', 'none')),
                ('gpu_partitions:numa_affinity',
                 ('required', 'preferred', 'none'))):
            for value in values:
                validators.validate(name, value)

    def test_bad_value_names_the_key_and_the_allowed_values(self):
        error = self.assertRaises(
            exception.ValidationError, validators.validate,
            'gpu_partitions:link_affinity', 'always')
        self.assertIn("'gpu_partitions:link_affinity'", str(error))
        self.assertIn('allowed values: required, preferred, none',
                      str(error))

    def test_unknown_key_of_the_namespace_is_refused(self):
        error = self.assertRaises(
            exception.ValidationError, validators.validate,
            'gpu_partitions:polcy', 'pack')
        self.assertIn('gpu_partitions:polcy', str(error))
