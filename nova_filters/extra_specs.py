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
"""Validators of the ``gpu_partitions:*`` flavor extra specs for nova-api.

Registered through the ``nova.api.extra_spec_validators`` entry point, so
nova-api (API microversion 2.86 and later) refuses an unknown key of the
namespace or a bad value with HTTP 400, naming the key and the allowed
values. Install this package where nova-api runs.
"""

from nova.api.validation.extra_specs import base
from nova import exception

from nova_filters import conf
from nova_filters import policy


class EnumValidator(base.ExtraSpecValidator):
    """Like Nova's enum check, with the key named in the error."""

    def validate(self, name, value):
        try:
            super().validate(name, value)
        except exception.ValidationError:
            raise exception.ValidationError(
                "Validation failed; extra spec '%s' has value '%s'; allowed "
                "values: %s." % (name, value,
                                 ', '.join(self.value['enum'])))


def _validator(name, description, allowed):
    return EnumValidator(
        name=policy.flavor_key(name),
        description=description,
        value={'type': str, 'enum': list(allowed),
               'description': 'One of: %s.' % ', '.join(allowed)})


EXTRA_SPEC_VALIDATORS = [
    _validator(
        policy.POLICY,
        'Where the GPU slices of this flavor go: "pack" fills the fullest '
        'GPU that fits, keeping whole GPUs and NVLink cliques free; '
        '"spread" uses the emptiest GPU of the emptiest host. Overrides '
        '[gpu_partitions_scheduler] policy and aggregate metadata.',
        conf.PLACEMENT_POLICIES),
    _validator(
        policy.LINK_AFFINITY,
        'Whether the GPUs of a request spanning several physical GPUs must '
        '("required"), should ("preferred") or need not ("none") share one '
        'NVLink clique or xGMI hive.',
        conf.AFFINITY_POLICIES),
    _validator(
        policy.NUMA_AFFINITY,
        'Whether the GPUs of an instance with a NUMA topology must '
        '("required"), should ("preferred") or need not ("none") sit on no '
        'more host NUMA nodes than the instance has NUMA cells.',
        conf.AFFINITY_POLICIES),
]


def register():
    return EXTRA_SPEC_VALIDATORS
