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
"""A small GPU host for the in-process cloud's smoke test.

One H100 SXM (PCI ``10de:2330``) with MIG on, split into two ``1g.10gb``
instances and one ``3g.40gb`` instance, each given to guests as an SR-IOV
VF (NVIDIA's vendor VFIO interface): a simulator fleet host, so its
inventory is the one the MIG driver reports for such a GPU.
"""

from gpu_partitions.simulator import fleet

DRIVER_NAME = 'hand_built'
LAYOUT = (('1g.10gb', 0), ('1g.10gb', 1), ('3g.40gb', 4))


def h100_mig_host(hostname='gpu-h100-0'):
    """The :class:`~cyborg_gpu_drivers.inventory.HostInventory` of one
    H100 80GB with two MIG profiles.
    """
    return fleet.host_inventory(fleet.make_host(
        hostname, fleet.KINDS['h100-80gb-mig'], 96000, 512 * 1024,
        [LAYOUT]))
