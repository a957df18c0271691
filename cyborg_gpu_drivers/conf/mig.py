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
             'Used with "layout", and in on_demand mode for the types of '
             'the mdevs Cyborg creates.'),
    cfg.StrOpt(
        'mode',
        default='static',
        choices=[('static', 'report the GPU instances that exist (and '
                            'apply "layout"); never create any at a '
                            'guest\'s request'),
                 ('on_demand', 'offer each MIG GPU\'s capacity as a set of '
                               'profiles that can all be placed together '
                               'and create a GPU instance when Cyborg '
                               'binds a unit, destroying it when the unit '
                               'is released')],
        help='How MIG GPUs are partitioned. on_demand needs the agent '
             'started as gpu-partitions-cyborg-agent (Cyborg\'s agent with '
             'the bind hook of this package) and GPUs whose VFs are mdev '
             'parents (Ampere); GPUs with NVIDIA\'s vendor VFIO interface '
             '(Hopper and later) stay static, because Cyborg binds their '
             'PCI units without calling the agent. Exclusive with '
             '"layout".'),
    cfg.MultiStrOpt(
        'on_demand_profiles',
        default=[],
        help='In on_demand mode, the MIG profiles a GPU model or GPU may '
             'be partitioned into, with their popularity among the '
             'requests: "<selector>=<profile>[:<weight>],...". The '
             'selector is a PCI address or a model name, as for "layout" '
             '(an address wins over a model); profile names are those of '
             '"nvidia-smi mig -lgip"; a weight is a positive number '
             '(default 1). An idle GPU offers one unit of each profile in '
             'turn, the most popular per unit already offered first, '
             'while all of them can still be placed together (with 1g, '
             '3g and 7g alike: four 1g and one 3g; with 7g weighted 4: '
             'the whole GPU). The idle GPUs of a host share the profiles '
             'out: a profile no GPU of the host offers, the most popular '
             'first, is led by one idle GPU whose other profiles stay '
             'offered elsewhere (two idle A100s: four 1g and one 3g, and '
             'one 7g). A GPU no value selects may take every profile that '
             'has a MIG-backed vGPU type, alike. Repeat the option for '
             'several selectors.'),
    cfg.StrOpt(
        'idle_instances',
        default='destroy',
        choices=[('destroy', 'destroy a GPU instance as soon as its unit '
                             'is released, so its slots go back to the '
                             'offer'),
                 ('keep_warm', 'keep it for the next guest asking for its '
                               'profile (saves the seconds of creating '
                               'it, but its slots stay that profile\'s)')],
        help='In on_demand mode, what becomes of a GPU instance whose '
             'guest is gone. With destroy, every agent pass also destroys '
             'the instances left idle (after an agent restart or a failed '
             'destruction): those of a profile of which no mdev exists '
             'on the GPU, beyond the units Placement has allocated for '
             'it; a GPU whose state cannot be read in full is left '
             'alone.'),
]
