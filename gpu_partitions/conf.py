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
"""Options of the ``gpu-partitions`` tools, registered in this one place."""

from oslo_config import cfg

CONF = cfg.CONF

fake_hardware_group = cfg.OptGroup(
    'gpu_partitions_fake_hardware',
    title='Fake GPU hardware',
    help='The gpu_partitions_fake_hardware Cyborg driver runs the real '
         'drivers over a recorded reference host instead of the machine\'s '
         'GPUs, for gates and demos on machines without GPUs. Never enable '
         'it on a production compute node.')

fake_hardware_opts = [
    cfg.StrOpt(
        'reference_host',
        default='hgx-h100',
        help='Name of the reference host to pretend to be (see '
             '"gpu-partitions inventory --list-fixtures"), or the path of '
             'a reference host file.'),
    cfg.ListOpt(
        'drivers',
        default=['gpu_partitions_nvidia_mig', 'gpu_partitions_nvidia_vgpu',
                 'gpu_partitions_amd_mxgpu'],
        help='The real drivers to run over the reference host.'),
    cfg.StrOpt(
        'state_path',
        default='/var/lib/cyborg/gpu-partitions-fake',
        regex='^/',
        help='Directory where the reference host\'s sysfs tree and libvirt '
             'node-device file are written; an absolute path.'),
]


def register_opts(conf=CONF):
    conf.register_group(fake_hardware_group)
    conf.register_opts(fake_hardware_opts, group=fake_hardware_group)


def list_opts():
    """For oslo-config-generator (entry point ``oslo.config.opts``)."""
    return [(fake_hardware_group, fake_hardware_opts)]


register_opts()
