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
"""Options of the AMD MxGPU driver (``gpu_partitions_amd_mxgpu``)."""

from oslo_config import cfg

GROUP = cfg.OptGroup(
    'amd_mxgpu',
    title='AMD MxGPU driver',
    help='The Cyborg driver reporting the SR-IOV virtual functions of AMD '
         'Instinct GPUs run by the GIM host driver. GIM creates the VFs '
         '(its vf_num module parameter); this driver only reports them '
         'and changes nothing on the host.')

OPTS = [
    cfg.StrOpt(
        'pci_backend',
        default='auto',
        choices=[('auto', 'libudev through pyudev when it imports, plain '
                          'sysfs otherwise'),
                 ('udev', 'libudev through pyudev; refuse to start without '
                          'it'),
                 ('sysfs', 'plain reads under [gpu_partitions] '
                           'sysfs_root')],
        help='How the driver finds PCI devices. A sysfs_root other than '
             '/sys always reads plain sysfs.'),
    cfg.BoolOpt(
        'use_amdsmi',
        default=True,
        help='Read the compute and memory partition modes and the xGMI '
             'hive through the amdsmi Python package when it imports. '
             'Without it (or when a call fails) the partition modes come '
             'from the files GIM writes under the physical function in '
             'sysfs, and the xGMI hive from xgmi_hive_info/xgmi_hive_id '
             'where the kernel has it; a GPU without a known hive gets no '
             'hive trait.'),
    cfg.DictOpt(
        'models',
        default={},
        help='Model names of physical-function PCI device ids that neither '
             'the driver nor amdsmi can name, as "<device id>:<model>" '
             'pairs ("<4 hex digits>:AMD Instinct <model>"). The model '
             'names the '
             'resource class (CUSTOM_GPU_VF_<model>_<compute partition>), '
             'the model trait and the providers, so it must stay the same '
             'for the life of the host: changing it later renames resource '
             'classes under existing flavors (drain the GPUs first). It '
             'never renames a model the driver knows (74a1 MI300X, 74a2 '
             'and 74a8 MI308X, 74a5 MI325X, 74a9 MI300X HF, 75a3 MI355X) '
             'or whose market name amdsmi reads: those entries are ignored '
             'with a warning. A GPU that nothing names is not offered.'),
]
