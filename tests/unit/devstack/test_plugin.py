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
"""Run each phase of devstack/plugin.sh against stand-ins for devstack.

The stand-ins implement devstack's functions the plugin calls (iniset,
iniget, iniget_multiline, iniadd, trueorfalse, is_service_enabled,
setup_develop, echo_summary) and record the ``openstack`` commands. The ini
functions edit the file line by line as devstack's ``inc/ini-config``
does, so a multi-valued option keeps one line per value. The written
files are then read with Nova's and Cyborg's own option definitions.
"""

import configparser
import json
import os
import subprocess
import sys

import fixtures
import testtools

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                    '..'))

#: A line-based ini editor: ``get``/``get_multiline``/``set``/``add``.
INI_TOOL = r'''
import re, sys

action, path, section, option = sys.argv[1:5]
values = sys.argv[5:]
try:
    with open(path) as f:
        lines = f.read().splitlines()
except FileNotFoundError:
    lines = []
header = re.compile(r'^\[(.*)\]\s*$')
key = re.compile(r'^%s\s*=\s*(.*)$' % re.escape(option))
start = end = None
for i, line in enumerate(lines):
    match = header.match(line)
    if match and start is None and match.group(1) == section:
        start = i + 1
    elif match and start is not None and end is None:
        end = i
if start is not None and end is None:
    end = len(lines)
found = ([] if start is None else
         [(i, key.match(lines[i]).group(1)) for i in range(start, end)
          if key.match(lines[i])])
if action == 'get':
    print(found[-1][1] if found else '')
    sys.exit()
if action == 'get_multiline':
    print(' '.join(value for _, value in found))
    sys.exit()
if action == 'add':
    values = [value for _, value in found] + values
if start is None:
    lines += ['[%s]' % section]
    start = end = len(lines)
kept = [line for i, line in enumerate(lines)
        if i not in {index for index, _ in found}]
end -= len(found)
kept[end:end] = ['%s = %s' % (option, value) for value in values]
with open(path, 'w') as f:
    f.write('\n'.join(kept) + '\n')
'''

STANDINS = r'''
function iniset { "$PYTHON" "$INI_TOOL" set "$@"; }
function iniget { "$PYTHON" "$INI_TOOL" get "$@"; }
function iniget_multiline { "$PYTHON" "$INI_TOOL" get_multiline "$@"; }
function iniadd { "$PYTHON" "$INI_TOOL" add "$@"; }
function trueorfalse {
    local default=$1 name=$2
    local value=${!name:-$default}
    case "$value" in
        1|yes|Yes|YES|true|True|TRUE|on|On|ON) echo True ;;
        *) echo False ;;
    esac
}
function is_service_enabled {
    [[ ",$ENABLED_SERVICES," == *",$1,"* ]]
}
function setup_develop { echo "setup_develop $*" >> "$CALLS"; }
function echo_summary { :; }
function openstack {
    echo "openstack $*" >> "$CALLS"
    [[ "$*" != *" show "* ]]
}
'''


#: Reads a nova.conf as nova-scheduler does: Nova's CONF with every option
#: of Nova and of our scheduler plugins, then the scheduler's filter
#: loading (every class of available_filters, each enabled filter looked
#: up by name). Prints the values as JSON.
NOVA_READER = r'''
import json, sys

import nova.conf
from nova.scheduler import filters

import nova_filters.conf  # noqa: F401

CONF = nova.conf.CONF
CONF([], project='nova', default_config_files=[sys.argv[1]])
group = CONF.filter_scheduler
classes = filters.HostFilterHandler().get_matching_classes(
    group.available_filters)
print(json.dumps({
    'available_filters': group.available_filters,
    'enabled_filters': group.enabled_filters,
    'weight_classes': group.weight_classes,
    'compute_driver': CONF.compute_driver,
    'policy': CONF.gpu_partitions_scheduler.policy,
    'loaded_filters': sorted(cls.__name__ for cls in classes),
}))
'''

#: Reads a cyborg.conf with Cyborg's CONF and our drivers' options.
CYBORG_READER = r'''
import json, sys

import cyborg.conf
from oslo_config import cfg
import stevedore

CONF = cyborg.conf.CONF
for namespace in ('cyborg_gpu_drivers', 'gpu_partitions'):
    list_opts = stevedore.DriverManager('oslo.config.opts', namespace).driver
    for group, opts in list_opts():
        try:
            CONF.register_opts(opts, group=group)
        except cfg.DuplicateOptError:
            pass
CONF([], project='cyborg', default_config_files=[sys.argv[1]])
fake = CONF.gpu_partitions_fake_hardware
print(json.dumps({
    'enabled_drivers': CONF.agent.enabled_drivers,
    'fake_hardware': {'reference_host': fake.reference_host,
                      'drivers': fake.drivers,
                      'state_path': fake.state_path},
}))
'''


def _read(reader, path):
    result = subprocess.run([sys.executable, '-c', reader, path],
                            capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise AssertionError('reading %s failed:\n%s'
                             % (path, result.stderr[-3000:]))
    return json.loads(result.stdout)


def nova_conf(path):
    """``path`` as Nova's services read it."""
    return _read(NOVA_READER, path)


def cyborg_conf(path):
    """``path`` as Cyborg's agent reads it, with the drivers' options."""
    return _read(CYBORG_READER, path)


class DevstackPluginTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.cyborg_conf = self.path('cyborg.conf')
        self.nova_conf = self.path('nova.conf')
        self.tempest_conf = self.path('tempest.conf')
        for conf in (self.cyborg_conf, self.nova_conf, self.tempest_conf):
            open(conf, 'w').close()
        self.calls = self.path('calls.log')
        with open(self.path('standins.sh'), 'w') as f:
            f.write(STANDINS)
        with open(self.path('ini_tool.py'), 'w') as f:
            f.write(INI_TOOL)

    def path(self, name):
        return os.path.join(self.dir, name)

    def stack(self, phase, **settings):
        env = dict(os.environ,
                   PATH=os.path.dirname(sys.executable) + os.pathsep
                   + os.environ['PATH'],
                   PYTHON=sys.executable, CALLS=self.calls,
                   INI_TOOL=self.path('ini_tool.py'),
                   DEST='/opt/stack', DATA_DIR='/opt/stack/data',
                   CYBORG_CONF=self.cyborg_conf, NOVA_CONF=self.nova_conf,
                   NOVA_CPU_CONF=self.path('nova-cpu.conf'),
                   TEMPEST_CONFIG=self.tempest_conf,
                   ENABLED_SERVICES='cyborg-agent,cyborg-api,n-sch,n-cpu,'
                                    'tempest')
        env.update(settings)
        script = ('set -e; source {d}/standins.sh; '
                  'source {r}/devstack/settings; '
                  'source {r}/devstack/plugin.sh stack {phase}').format(
                      d=self.dir, r=REPO, phase=phase)
        result = subprocess.run(['bash', '-c', script], env=env,
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(0, result.returncode, result.stderr[-3000:])
        return result

    def ini(self, path):
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        parser.read(path)
        return parser

    def recorded_calls(self):
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            return f.read().splitlines()

    def test_install_develops_the_package(self):
        self.stack('install')
        self.assertEqual(
            ['setup_develop /opt/stack/openstack-gpu-partitions'],
            self.recorded_calls())

    def assertFiltersResolve(self, nova):
        # What Nova's scheduler does at start-up: each enabled filter must
        # be one of the classes available_filters loads.
        self.assertIn('GpuPartitionFilter', nova['loaded_filters'])
        missing = set(nova['enabled_filters']) - set(nova['loaded_filters'])
        self.assertEqual(set(), missing)

    def nova_defaults(self):
        return nova_conf(os.devnull)

    def test_post_config_enables_drivers_and_scheduler_plugins(self):
        self.stack('post-config')
        cyborg = cyborg_conf(self.cyborg_conf)
        self.assertEqual(
            ['gpu_partitions_nvidia_mig', 'gpu_partitions_nvidia_vgpu',
             'gpu_partitions_amd_mxgpu'], cyborg['enabled_drivers'])
        self.assertFalse(self.ini(self.cyborg_conf).has_section(
            'gpu_partitions_fake_hardware'))
        nova = nova_conf(self.nova_conf)
        defaults = self.nova_defaults()
        # One line per value of the multi-valued option, Nova's default
        # first.
        self.assertEqual(
            ['nova.scheduler.filters.all_filters',
             'nova_filters.gpu_filter.GpuPartitionFilter'],
            nova['available_filters'])
        # An empty enabled_filters meant Nova's defaults: they stay.
        self.assertEqual(
            list(defaults['enabled_filters']) + ['GpuPartitionFilter'],
            nova['enabled_filters'])
        self.assertIn('ComputeFilter', nova['enabled_filters'])
        self.assertEqual(
            ['nova.scheduler.weights.all_weighers',
             'nova_filters.gpu_weigher.GpuPartitionWeigher'],
            nova['weight_classes'])
        self.assertEqual('pack', nova['policy'])
        self.assertFiltersResolve(nova)

    def test_post_config_keeps_the_operators_filters(self):
        with open(self.nova_conf, 'w') as f:
            f.write('[filter_scheduler]\n'
                    'available_filters = nova.scheduler.filters.all_filters\n'
                    'available_filters = nova.scheduler.filters.'
                    'numa_topology_filter.NUMATopologyFilter\n'
                    'enabled_filters = ComputeFilter,NUMATopologyFilter\n')
        self.stack('post-config')
        nova = nova_conf(self.nova_conf)
        self.assertEqual(
            ['nova.scheduler.filters.all_filters',
             'nova.scheduler.filters.numa_topology_filter.'
             'NUMATopologyFilter',
             'nova_filters.gpu_filter.GpuPartitionFilter'],
            nova['available_filters'])
        self.assertEqual(
            ['ComputeFilter', 'NUMATopologyFilter', 'GpuPartitionFilter'],
            nova['enabled_filters'])
        self.assertFiltersResolve(nova)

    def test_post_config_twice_adds_nothing_twice(self):
        self.stack('post-config')
        self.stack('post-config', GPU_PARTITIONS_POLICY='spread')
        nova = nova_conf(self.nova_conf)
        self.assertEqual(
            ['nova.scheduler.filters.all_filters',
             'nova_filters.gpu_filter.GpuPartitionFilter'],
            nova['available_filters'])
        self.assertEqual(
            list(self.nova_defaults()['enabled_filters'])
            + ['GpuPartitionFilter'],
            nova['enabled_filters'])
        self.assertEqual(
            ['nova.scheduler.weights.all_weighers',
             'nova_filters.gpu_weigher.GpuPartitionWeigher'],
            nova['weight_classes'])
        self.assertEqual('spread', nova['policy'])
        self.assertFiltersResolve(nova)

    def test_fake_hardware_mode(self):
        self.stack('post-config', GPU_PARTITIONS_FAKE_HARDWARE='True',
                   GPU_PARTITIONS_FAKE_HOST='mi300x-cpx')
        cyborg = cyborg_conf(self.cyborg_conf)
        self.assertEqual(['gpu_partitions_fake_hardware'],
                         cyborg['enabled_drivers'])
        fake = cyborg['fake_hardware']
        self.assertEqual('mi300x-cpx', fake['reference_host'])
        self.assertEqual('/opt/stack/data/gpu-partitions-fake',
                         fake['state_path'])
        self.assertEqual(['gpu_partitions_nvidia_mig',
                          'gpu_partitions_nvidia_vgpu',
                          'gpu_partitions_amd_mxgpu'], fake['drivers'])
        # The computes run Nova's fake virt driver, as nova-compute loads
        # it ("nova.virt." + compute_driver).
        from nova.virt import driver
        from oslo_utils import importutils

        nova = nova_conf(self.nova_conf)
        self.assertEqual('fake.FakeDriver', nova['compute_driver'])
        self.assertTrue(issubclass(
            importutils.import_class('nova.virt.' + nova['compute_driver']),
            driver.ComputeDriver))

    def test_real_hardware_keeps_the_virt_driver(self):
        with open(self.nova_conf, 'w') as f:
            f.write('[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n')
        self.stack('post-config')
        self.assertEqual('libvirt.LibvirtDriver',
                         nova_conf(self.nova_conf)['compute_driver'])

    def test_extra_creates_a_profile_and_flavor_per_resource_class(self):
        self.stack('extra', GPU_PARTITIONS_FAKE_HARDWARE='True',
                   GPU_PARTITIONS_FAKE_HOST='mi300x-cpx')
        creates = [c for c in self.recorded_calls() if ' create ' in c]
        self.assertEqual(
            ['openstack accelerator device profile create '
             'gpu-vf-mi300x-cpx [{"resources:CUSTOM_GPU_VF_MI300X_CPX":'
             ' "1"}]',
             'openstack flavor create --ram 2048 --disk 10 --vcpus 2 '
             '--property accel:device_profile=gpu-vf-mi300x-cpx '
             'gpu-vf-mi300x-cpx'], creates)

    def test_test_config_sets_the_tempest_group(self):
        self.stack('test-config')
        tempest = self.ini(self.tempest_conf)
        self.assertEqual('True', tempest.get('service_available',
                                             'gpu_partitions'))
        self.assertEqual('False', tempest.get('gpu_partitions',
                                              'fake_hardware'))

    def test_services_not_enabled_are_left_alone(self):
        self.stack('post-config', ENABLED_SERVICES='key')
        self.assertEqual([], self.ini(self.cyborg_conf).sections())
        self.assertEqual([], self.ini(self.nova_conf).sections())
