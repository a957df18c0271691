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
"""A small hand-built GPU host, until the reference hosts are wired in.

One H100 SXM (PCI ``10de:2330``) at ``0000:1b:00.0`` with MIG on, split
into two ``1g.10gb`` instances and one ``3g.40gb`` instance, each given to
guests as an SR-IOV VF (NVIDIA's vendor VFIO interface).
"""

from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import report
import placement_traits

DRIVER_NAME = 'hand_built'


def _mig_slice(profile, vf_addresses):
    return inventory.Slice(
        name=profile,
        resource_class=placement_traits.mig_resource_class(profile),
        traits=[placement_traits.mig_profile_trait(profile),
                placement_traits.TRAIT_MIG_BACKED],
        handles=[inventory.AttachHandle(inventory.PCI, address)
                 for address in vf_addresses],
        total=len(vf_addresses))


def h100_mig_host(hostname='gpu-h100-0'):
    """One H100 80GB with two MIG profiles."""
    model = 'NVIDIA H100 80GB HBM3'
    gpu = inventory.Gpu(
        address='0000:1b:00.0', vendor_id='10de', device_id='2330',
        model=model, memory_mib=81559, numa_node=0,
        traits=[placement_traits.vendor_trait('10de'),
                placement_traits.model_trait(model),
                placement_traits.numa_node_trait(0)],
        slices=[_mig_slice('1g.10gb', ['0000:1b:00.4', '0000:1b:00.5']),
                _mig_slice('3g.40gb', ['0000:1b:00.6'])])
    return inventory.HostInventory(hostname=hostname, gpus=[gpu])


def sample_hosts():
    """``[(hostname, Cyborg driver devices)]`` of the hand-built hosts."""
    host = h100_mig_host()
    return [(host.hostname, report.to_driver_devices(host, DRIVER_NAME))]
