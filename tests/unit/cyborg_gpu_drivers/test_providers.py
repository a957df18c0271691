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

import testtools

from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import providers
import placement_traits

ADDRESS = '0000:1b:00.0'
RC = placement_traits.mig_resource_class('1g.10gb')


def _gpu(healthy=True, allocated=None):
    handles = [inventory.AttachHandle(inventory.PCI, '0000:1b:00.%d' % i,
                                      in_use=i == 4)
               for i in (4, 5, 6)]
    return inventory.Gpu(
        address=ADDRESS, vendor_id='10de', device_id='2330',
        model='NVIDIA H100 80GB HBM3', memory_mib=81559, healthy=healthy,
        traits=[placement_traits.vendor_trait('10de')],
        slices=[inventory.Slice(
            name='1g.10gb', resource_class=RC,
            traits=[placement_traits.TRAIT_MIG_BACKED], handles=handles,
            total=3, allocated=allocated)])


class ProviderSpecsTest(testtools.TestCase):

    def test_one_spec_per_slice_under_the_host(self):
        [spec] = providers.provider_specs(
            inventory.HostInventory('h1', [_gpu()]))
        self.assertEqual(providers.ProviderSpec(
            name=placement_traits.provider_name('h1', ADDRESS, '1g.10gb'),
            parent='h1', resource_class=RC, total=3, reserved=1,
            traits=tuple(sorted([
                placement_traits.OWNER_CYBORG,
                placement_traits.physical_gpu_trait(ADDRESS),
                placement_traits.vendor_trait('10de'),
                placement_traits.TRAIT_MIG_BACKED]))), spec)

    def test_unhealthy_gpu_offers_what_is_used_or_allocated(self):
        [spec] = providers.provider_specs(inventory.HostInventory(
            'h1', [_gpu(healthy=False, allocated=2)]))
        self.assertEqual((2, 1), (spec.total, spec.reserved))
        # Nothing in use or allocated: no provider (Placement refuses an
        # inventory of 0).
        gpu = _gpu(healthy=False, allocated=0)
        gpu.slices[0].handles = []
        self.assertEqual([], providers.provider_specs(
            inventory.HostInventory('h1', [gpu])))
