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
"""Options shared by all GPU partition drivers."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    'gpu_partitions',
    title='GPU partition drivers, common options',
    help='Options shared by the NVIDIA MIG, NVIDIA vGPU and AMD MxGPU '
         'drivers of openstack-gpu-partitions.')

OPTS = [
    cfg.StrOpt(
        'sysfs_root',
        default='/sys',
        help='Root of the sysfs tree the drivers read PCI devices from. '
             'Only tests and the fake-hardware mode change it.'),
]
