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
"""Flavor extra specs through Nova's real validator, and our options
through oslo.config's real file parser, with counted hostile values.
"""

import math
import os

import fixtures
from nova.api.validation.extra_specs import validators
from nova import exception
from oslo_config import cfg
from oslo_config import generator
import testtools

from nova_filters import policy
from tests.unit.fuzz import outcomes

HOSTILE_VALUES = ['', ' ', 'PACK', 'Pack', ' pack', 'pack ', 'pack\n',
                  'pack,spread', 'required;none', 'x' * 100000, '\x00',
                  'nan', '-1', '1e309', '{"a": 1}', '../../etc/passwd',
                  '\u202erequired', 'requ\u0131red', 'None', 'null']
NAMESPACE = policy.FLAVOR_NAMESPACE + ':'


class ExtraSpecsFuzzTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        validators.load_validators()

    def test_nova_validator_refuses_every_hostile_value_and_key(self):
        counted = outcomes.Outcomes('flavor extra specs')
        names = [policy.POLICY, policy.LINK_AFFINITY, policy.NUMA_AFFINITY]
        for name in names:
            allowed = policy.ALLOWED[name]
            for value in HOSTILE_VALUES + list(allowed):
                self.attempt(counted, NAMESPACE + name, value,
                             'an allowed value' if value in allowed
                             else None)
        for key in ('unknown', 'Policy', 'policy ', 'policy:x', '',
                    'x' * 1000, '../policy', 'link-affinity'):
            self.attempt(counted, NAMESPACE + key, 'pack', None)
        counted.check(self, 3 * len(HOSTILE_VALUES) + 8)

    def attempt(self, counted, key, value, reason):
        try:
            validators.validate(key, value)
        except exception.ValidationError as error:
            counted.clear(str(error).replace('\n', ' ')[:500])
        except Exception as error:  # noqa: B902 counted, then asserted
            counted.traceback('%r=%r: %s: %.200s' % (
                key, value[:20], type(error).__name__, error))
        else:
            counted.accepted('%r=%r' % (key, value[:20]), reason)


OPTION_VALUES = ['nan', 'inf', '-inf', '-1', '0', '1e309', '',
                 'x' * 10000, '../../etc/passwd', 'true', '[1', '9' * 400,
                 '\t', '1,2,3', 'a:b']
OUR_NAMESPACES = ['cyborg_gpu_drivers', 'gpu_partitions', 'nova_filters']


class OptionsFuzzTest(testtools.TestCase):
    """Each option of our groups, each hostile value, read from a file."""

    def test_option_values(self):
        counted = outcomes.Outcomes('configuration options')
        tmp = self.useFixture(fixtures.TempDir()).path
        loaders = generator._get_raw_opts_loaders(OUR_NAMESPACES)
        for _, loader in loaders:
            for group, opts in loader():
                group_name = getattr(group, 'name', group) or 'DEFAULT'
                for opt in opts:
                    for value in OPTION_VALUES:
                        self.attempt(counted, tmp, group_name, opt, value)
        counted.check(self, 20 * len(OPTION_VALUES))

    def attempt(self, counted, tmp, group, opt, value):
        conf = cfg.ConfigOpts()
        conf.register_opt(opt, group=group)
        path = os.path.join(tmp, 'fuzz.conf')
        with open(path, 'w') as stream:
            stream.write('[%s]\n%s = %s\n' % (group, opt.dest, value))
        what = '[%s] %s = %r' % (group, opt.dest, value[:20])
        try:
            conf([], default_config_files=[path])
            read = getattr(conf[group], opt.dest)
        except (cfg.ConfigFileValueError, ValueError) as error:
            counted.clear(str(error).replace('\n', ' ')[:500])
            return
        except Exception as error:  # noqa: B902 counted, then asserted
            counted.traceback('%s: %s: %.200s' % (what, type(error).__name__,
                                                  error))
            return
        if (isinstance(read, float) and not math.isfinite(read) and
                (group, opt.dest) in KNOWN_OPEN):
            counted.known_open(what)
            return
        counted.accepted(what, self.why_accepted(opt, read))

    @staticmethod
    def why_accepted(opt, read):
        if isinstance(read, float) and not math.isfinite(read):
            return None
        if read is None or read == opt.default:
            return 'empty or default value: the default applies'
        if isinstance(opt.type, cfg.types.Boolean):
            return 'a boolean spelling oslo.config accepts'
        if isinstance(opt.type, (cfg.types.Integer, cfg.types.Float)):
            return 'a number within the option\'s declared bounds'
        return ('text: names, paths and layouts are checked by the code '
                'that uses them (drivers refuse bad layouts and paths)')


# Found by this test, owned by the scheduler work (issue #14 row 11) and
# reported there; counted apart so that the rest stays asserted.
KNOWN_OPEN = {('gpu_partitions_scheduler', 'weight_multiplier')}
