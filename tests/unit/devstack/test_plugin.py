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
iniget, trueorfalse, is_service_enabled, setup_develop, echo_summary) and
record the ``openstack`` commands, so the test checks the configuration
files and commands each phase produces.
"""

import configparser
import os
import subprocess
import sys

import fixtures
import testtools

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                    '..'))

STANDINS = r'''
function iniset {
    "$PYTHON" - "$@" <<'PY'
import configparser, sys
path, section, option, value = sys.argv[1:5]
parser = configparser.ConfigParser(interpolation=None)
parser.optionxform = str
parser.read(path)
if not parser.has_section(section):
    parser.add_section(section)
parser.set(section, option, value)
with open(path, 'w') as f:
    parser.write(f)
PY
}
function iniget {
    "$PYTHON" - "$@" <<'PY'
import configparser, sys
path, section, option = sys.argv[1:4]
parser = configparser.ConfigParser(interpolation=None)
parser.optionxform = str
parser.read(path)
print(parser.get(section, option, fallback=''))
PY
}
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

    def path(self, name):
        return os.path.join(self.dir, name)

    def stack(self, phase, **settings):
        env = dict(os.environ,
                   PATH=os.path.dirname(sys.executable) + os.pathsep
                   + os.environ['PATH'],
                   PYTHON=sys.executable, CALLS=self.calls,
                   DEST='/opt/stack', DATA_DIR='/opt/stack/data',
                   CYBORG_CONF=self.cyborg_conf, NOVA_CONF=self.nova_conf,
                   NOVA_CPU_CONF=self.path('nova-cpu.conf'),
                   TEMPEST_CONFIG=self.tempest_conf,
                   ENABLED_SERVICES='cyborg-agent,cyborg-api,n-sch,tempest')
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

    def test_post_config_enables_drivers_and_scheduler_plugins(self):
        self.stack('post-config')
        cyborg = self.ini(self.cyborg_conf)
        self.assertEqual(
            'gpu_partitions_nvidia_mig,gpu_partitions_nvidia_vgpu,'
            'gpu_partitions_amd_mxgpu',
            cyborg.get('agent', 'enabled_drivers'))
        self.assertFalse(cyborg.has_section('gpu_partitions_fake_hardware'))
        nova = self.ini(self.nova_conf)
        self.assertEqual(
            'nova.scheduler.filters.all_filters,'
            'nova_filters.gpu_filter.GpuPartitionFilter',
            nova.get('filter_scheduler', 'available_filters'))
        self.assertEqual('GpuPartitionFilter',
                         nova.get('filter_scheduler', 'enabled_filters'))
        self.assertEqual(
            'nova.scheduler.weights.all_weighers,'
            'nova_filters.gpu_weigher.GpuPartitionWeigher',
            nova.get('filter_scheduler', 'weight_classes'))
        self.assertEqual('pack', nova.get('gpu_partitions_scheduler',
                                          'policy'))

    def test_post_config_twice_adds_nothing_twice(self):
        self.stack('post-config')
        self.stack('post-config', GPU_PARTITIONS_POLICY='spread')
        nova = self.ini(self.nova_conf)
        self.assertEqual('GpuPartitionFilter',
                         nova.get('filter_scheduler', 'enabled_filters'))
        self.assertEqual('spread', nova.get('gpu_partitions_scheduler',
                                            'policy'))

    def test_fake_hardware_mode(self):
        self.stack('post-config', GPU_PARTITIONS_FAKE_HARDWARE='True',
                   GPU_PARTITIONS_FAKE_HOST='mi300x-cpx')
        cyborg = self.ini(self.cyborg_conf)
        self.assertEqual('gpu_partitions_fake_hardware',
                         cyborg.get('agent', 'enabled_drivers'))
        self.assertEqual('mi300x-cpx', cyborg.get(
            'gpu_partitions_fake_hardware', 'reference_host'))
        self.assertEqual('/opt/stack/data/gpu-partitions-fake', cyborg.get(
            'gpu_partitions_fake_hardware', 'state_path'))

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
