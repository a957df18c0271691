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
"""Options of the NVIDIA MIG driver (``gpu_partitions_nvidia_mig``)."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    'nvidia_mig',
    title='NVIDIA MIG driver',
    help='The Cyborg driver reporting MIG-backed vGPU slices of NVIDIA '
         'GPUs that have MIG enabled. With no option set it changes '
         'nothing on the host and reports what exists.')

OPTS = [
    cfg.MultiStrOpt(
        'layout',
        default=[],
        help='A MIG layout to apply at start-up, one value per GPU model '
             'or GPU: "<selector>=<layout>". The selector is a PCI address '
             '(0000:1b:00.0) or a model name as NVML gives it (NVIDIA '
             'H100 80GB HBM3, or without the vendor word); an address '
             'wins over a model. The layout is "all-<profile>" (as many '
             'instances of one profile as fit, e.g. all-1g.10gb) or '
             '"<profile>:<count>,..." (e.g. 3g.40gb:1,1g.10gb:4); profile '
             'names are those of "nvidia-smi mig -lgip" for that GPU. A '
             'layout is applied only to a GPU with MIG enabled and '
             'nothing running on it (no active vGPU, no VF holding a '
             'vGPU type, no mdev); otherwise the GPU is left as it is and '
             'the driver logs why. Repeat the option for several '
             'selectors.'),
    cfg.StrOpt(
        'vgpu_series',
        default='C',
        choices=[('A', 'virtual applications'), ('B', 'virtual PC'),
                 ('C', 'compute (AI Enterprise)'), ('Q', 'RTX workstation')],
        help='Series of the MIG-backed vGPU type the driver gives the free '
             'VFs of a GPU after applying a layout (one VF per GPU '
             'instance, e.g. H100XM-3-40C for 3g.40gb with series C). '
             'Used only together with "layout".'),
]
