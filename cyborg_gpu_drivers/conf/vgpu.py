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
"""Options of the NVIDIA vGPU driver (``gpu_partitions_nvidia_vgpu``)."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    'nvidia_vgpu',
    title='NVIDIA vGPU driver',
    help='The Cyborg driver reporting time-sliced vGPU types of NVIDIA '
         'GPUs with MIG disabled or unsupported, on mdev hosts (through '
         'libvirt) and on vendor-VFIO hosts (vGPU 17 and later). With no '
         'option set it changes nothing on the host and reports the types '
         'the GPUs already host.')

OPTS = [
    cfg.MultiStrOpt(
        'vgpu_type',
        default=[],
        help='The vGPU type a GPU model or GPU should host: '
             '"<selector>=<type>[,<type>...]". The selector is a PCI '
             'address (0000:17:00.0) or a model name as NVML gives it '
             '(NVIDIA L40S, or without the vendor word); an address wins '
             'over a model. Types are time-sliced type names as '
             '"nvidia-smi vgpu -s" prints them, with or without the vendor '
             'word (L40S-8Q, NVIDIA A100D-20C). A GPU hosts one type unless '
             'it runs in mixed-size mode; extra types are then ignored and '
             'logged. On vendor-VFIO hosts the driver gives the type to the '
             'free VFs of the GPU at start-up (never to a VF a guest uses); '
             'on mdev hosts it offers the type\'s available instances. '
             'Repeat the option for several selectors.'),
    cfg.StrOpt(
        'libvirt_uri',
        default='qemu:///system',
        help='libvirt URI the driver lists mdev parents and mdevs from '
             '(read-only connection). Used on mdev hosts only.'),
    cfg.StrOpt(
        'type_mode',
        default='static',
        choices=[('static', 'a GPU keeps the type it hosts or that '
                            'vgpu_type declares'),
                 ('follow_demand', 'an idle GPU (no vGPU in use, no '
                                   'claim in Placement) may change to '
                                   'another of its allowed_types when the '
                                   'host\'s use of that type is high; a '
                                   'GPU with a guest never changes')],
        help='Whether the vGPU type of an idle time-sliced GPU follows '
             'demand. Demand is measured on this host only: the share of '
             'each type\'s units in use (Placement\'s usage of the '
             'type\'s providers, or what the hardware shows busy if '
             'more). The thresholds are in [gpu_partitions] '
             'follow_demand_high, follow_demand_low and '
             'follow_demand_hold_seconds. GPUs in mixed-size mode keep '
             'their types. Exclusive with vgpu_type.'),
    cfg.MultiStrOpt(
        'allowed_types',
        default=[],
        help='In follow_demand mode, the time-sliced vGPU types a GPU '
             'model or GPU may take: "<selector>=<type>,<type>...", with '
             'selectors and type names as for vgpu_type (an address wins '
             'over a model). A GPU hosting no type gets the first one. A '
             'GPU no value selects is never re-typed. Repeat the option '
             'for several selectors.'),
]
