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

import math

from oslo_config import cfg
from oslo_config import types


class FiniteFloat(types.Float):
    """A bounded float that also refuses nan, which slips past the bounds
    (every comparison with nan is false): a nan deadline never expires and
    a nan demand threshold is never reached.
    """

    def __call__(self, value):
        number = super().__call__(value)
        if number is None or not math.isfinite(number):
            raise ValueError('%r is not a finite number' % (value,))
        return number


GROUP = cfg.OptGroup(
    'gpu_partitions',
    title='GPU partition drivers, common options',
    help='Options shared by the NVIDIA MIG, NVIDIA vGPU and AMD MxGPU '
         'drivers of openstack-gpu-partitions.')

OPTS = [
    cfg.StrOpt(
        'sysfs_root',
        default='/sys',
        # Absolute: a relative one would name a tree under the privileged
        # daemon's working directory.
        regex='^/',
        help='Root of the sysfs tree the drivers read PCI devices from; '
             'an absolute path. Only tests and the fake-hardware mode '
             'change it.'),
    cfg.Opt(
        'gpu_scan_timeout',
        type=FiniteFloat(min=0.1, max=300.0),
        default=5.0,
        help='Seconds one read of the hardware may take during a scan: '
             'one GPU through NVML or sysfs, or opening NVML. A GPU whose '
             'read takes longer is reported as unknown (its last report, '
             'offering nothing new, or a Cyborg stub) and the scan goes '
             'on with the other GPUs; while the read still hangs, later '
             'scans do not start another one for that GPU.'),
    cfg.Opt(
        'follow_demand_high',
        type=FiniteFloat(min=0.0, max=1.0),
        default=0.8,
        help='When a GPU\'s kind follows demand ([nvidia_vgpu] '
             'type_mode = follow_demand): the share of a kind\'s units in '
             'use on this host at which an idle GPU of another kind is '
             'changed to it. Must be above follow_demand_low.'),
    cfg.Opt(
        'follow_demand_low',
        type=FiniteFloat(min=0.0, max=1.0),
        default=0.5,
        help='An idle GPU leaves its kind only if that kind\'s share in '
             'use, without this GPU, stays at or below this value. The '
             'gap to follow_demand_high keeps GPUs from changing back '
             'and forth.'),
    cfg.IntOpt(
        'follow_demand_hold_seconds',
        default=600, min=0,
        help='A GPU whose kind this agent changed is not changed again '
             'for this many seconds. After the agent starts, every GPU is '
             'held this long from its first scan: a change made before '
             'the restart cannot be dated. At most one GPU per host '
             'changes per agent pass.'),
]
