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
"""Options of the tempest plugin (group ``[gpu_partitions]``)."""

from oslo_config import cfg

service_option = cfg.BoolOpt(
    'gpu_partitions', default=False,
    help='Whether the cloud runs the openstack-gpu-partitions drivers and '
         'scheduler plugins.')

group = cfg.OptGroup('gpu_partitions', title='openstack-gpu-partitions')

opts = [
    cfg.StrOpt('policy', default='pack', choices=['pack', 'spread'],
               help='The [gpu_partitions_scheduler] policy the cloud runs.'),
    cfg.BoolOpt('fake_hardware', default=False,
                help='The Cyborg agents report a reference host '
                     '(gpu_partitions_fake_hardware driver): guests get no '
                     'real device, so only scheduling is checked.'),
    cfg.IntOpt('boot_timeout', default=600,
               help='Seconds a GPU server may take to become ACTIVE.'),
]
