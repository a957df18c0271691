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
"""Options of the Nova scheduler plugins, registered in this one place.

They are the first of three policy levels; per-aggregate metadata and
per-flavor extra specs override them (see :mod:`nova_filters.policy`).
"""

import math

from oslo_config import cfg
from oslo_config import types

CONF = cfg.CONF

PACK = 'pack'
SPREAD = 'spread'
PLACEMENT_POLICIES = (PACK, SPREAD)

REQUIRED = 'required'
PREFERRED = 'preferred'
NONE = 'none'
AFFINITY_POLICIES = (REQUIRED, PREFERRED, NONE)

# Nova's own weighers take multipliers up to 1e6 (build failures); beyond
# 1e9 a multiplier only risks overflowing the sum of weights.
MAX_WEIGHT_MULTIPLIER = 1e9
# A shape is a few small tuples; a million of them is a few hundred MiB.
MAX_WORKLOAD_WINDOW = 100000
MAX_WORKLOAD_CLASSES = 256


class FiniteFloat(types.Float):
    """A float option that refuses nan and infinity (``1e309`` parses to
    infinity): one such multiplier turns every weight into nan.
    """

    def __call__(self, value):
        number = super().__call__(value)
        if number is None or not math.isfinite(number):
            raise ValueError('%r is not a finite number' % (value,))
        return number


def weight_multiplier_type():
    return FiniteFloat(min=-MAX_WEIGHT_MULTIPLIER, max=MAX_WEIGHT_MULTIPLIER)


GROUP = cfg.OptGroup(
    'gpu_partitions_scheduler',
    title='GPU partition scheduling',
    help='Options of the openstack-gpu-partitions Nova scheduler filter '
         '(GpuPartitionFilter) and weigher (GpuPartitionWeigher). policy, '
         'link_affinity and numa_affinity can be overridden per host '
         'aggregate (metadata key "gpu_partitions_<option>") and per '
         'flavor (extra spec "gpu_partitions:<option>"); '
         'weight_multiplier per host aggregate '
         '("gpu_partitions_weight_multiplier").')

OPTS = [
    cfg.StrOpt(
        'policy',
        default=PACK,
        choices=[
            (PACK, 'Fill the fullest GPU that fits, keeping whole GPUs, '
                   'whole MIG layouts and whole NVLink cliques free.'),
            (SPREAD, 'Put each slice on the emptiest GPU of the emptiest '
                     'host.'),
        ],
        help='Where GPU slices go, across hosts and inside a host.'),
    cfg.StrOpt(
        'link_affinity',
        default=PREFERRED,
        choices=[
            (REQUIRED, 'A request spanning several physical GPUs only '
                       'lands on GPUs of one NVLink clique or xGMI hive.'),
            (PREFERRED, 'Such GPUs come first; others are used when no '
                        'clique fits.'),
            (NONE, 'Links are ignored.'),
        ],
        help='NVLink clique / xGMI hive affinity of requests that span '
             'several physical GPUs.'),
    cfg.StrOpt(
        'numa_affinity',
        default=PREFERRED,
        choices=[
            (REQUIRED, 'The GPUs of an instance with a NUMA topology sit on '
                       'at most as many host NUMA nodes as it has cells.'),
            (PREFERRED, 'Such GPUs come first.'),
            (NONE, 'NUMA placement of the GPUs is ignored.'),
        ],
        help='NUMA affinity of the GPUs of instances that have a NUMA '
             'topology (hw:numa_nodes or CPU pinning).'),
    cfg.Opt(
        'weight_multiplier',
        type=weight_multiplier_type(),
        default=1.0,
        help='Multiplier of GpuPartitionWeigher. The pack or spread '
             'direction comes from the policy option, so a negative value '
             'inverts it; 0 turns the host weighing off (the candidates '
             'inside a host are still ordered). A finite number from '
             '-1e9 to 1e9.'),
    cfg.BoolOpt(
        'reuse_scheduler_query',
        default=True,
        help='Read GPU usage from the allocation candidates the scheduler '
             'already fetched for the request (the plugins wrap the '
             'scheduler\'s Placement client to keep the provider '
             'summaries Nova drops), instead of asking Placement once '
             'more. When that answer is not available the plugins fall '
             'back to one extra GET /allocation_candidates per request.'),
    cfg.IntOpt(
        'workload_window',
        default=1000,
        min=0,
        max=MAX_WORKLOAD_WINDOW,
        help='How many recent GPU requests make the typical workload that '
             'the pack policy keeps room for: a placement is judged by how '
             'much GPU capacity it leaves that these requests (their GPU '
             'slice, GPU count, VCPU and memory) could no longer use. 0 '
             'uses one of each GPU resource class instead, with no CPU or '
             'memory.'),
    cfg.IntOpt(
        'workload_classes',
        default=16,
        min=1,
        max=MAX_WORKLOAD_CLASSES,
        help='How many of the most frequent request shapes of the '
             'workload window are weighed; the cost of weighing grows with '
             'it.'),
    cfg.BoolOpt(
        'weigh_requests_without_gpu',
        default=True,
        help='Also weigh requests that take no GPU (pack policy): they go '
             'where their VCPU and memory strand the least GPU capacity, '
             'hosts without GPUs first. Uses only the allocation '
             'candidates the scheduler already fetched (see '
             'reuse_scheduler_query); never asks Placement for them.'),
    cfg.IntOpt(
        'request_view_ttl',
        default=30,
        min=1,
        max=3600,
        help='Seconds the GPU view of one scheduling request is kept for '
             'the filter and weigher of that request (and the later '
             'instances of a multi-create). A request still running after '
             'that builds a new view.'),
    cfg.ListOpt(
        'passthrough_resource_classes',
        default=[],
        help='Resource classes of whole GPUs that Nova passes through as '
             'PCI devices reported in Placement ([pci] '
             'report_in_placement), when the [pci] device_spec gives them '
             'a resource_class (as a [pci] alias "resource_class" names '
             'it), for example CUSTOM_A100_80GB. Nova\'s default names '
             'CUSTOM_PCI_10DE_<product> (NVIDIA) and CUSTOM_PCI_1002_'
             '<product> (AMD) count as GPUs without being listed. The '
             'filter and weigher pack or spread these GPUs like slices, '
             'and apply link and NUMA affinity from the device_spec '
             '"traits" CUSTOM_GPU_NVLINK_CLIQUE_<n> and '
             'CUSTOM_GPU_NUMA_NODE_<n>. Names are read as Nova names a '
             'device_spec resource_class: upper-cased, standard and '
             'CUSTOM_ names kept, any other made a custom name '
             '(nvidia-a100 is CUSTOM_NVIDIA_A100). VCPU, PCPU, MEMORY_MB '
             'and DISK_GB are never GPUs and are ignored.'),
    cfg.IntOpt(
        'topology_cache_ttl',
        default=600,
        min=0,
        max=86400,
        help='Seconds the traits and tree shape of GPU providers are '
             'remembered; used to keep enforcing link and NUMA affinity '
             'when Placement cannot be read. 0 disables the cache.'),
]


def register_opts(conf=CONF):
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    """For oslo-config-generator (entry point ``oslo.config.opts``)."""
    return [(GROUP, OPTS)]


register_opts()
