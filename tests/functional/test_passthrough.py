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
"""Whole-GPU passthrough through Nova's own PCI in Placement.

Nova's resource tracker, PciDevTracker and pci_placement_translator make
the GPU providers from the devices the virt driver reports and the
``[pci] device_spec`` (with the operator's NUMA and NVLink clique
traits); the flavor's ``pci_passthrough:alias`` goes through Nova's real
API, scheduler (PciPassthroughFilter, GpuPartitionFilter,
GpuPartitionWeigher) and the compute's PCI claim.
"""

from gpu_partitions.cloud import nova_pci
import placement_traits
from tests.functional import base
from tests.functional import test_scheduler_gpu

VENDOR = '10de'
PRODUCT = '2330'  # H100 SXM5 80GB
RC = placement_traits.nova_pci_resource_class(VENDOR, PRODUCT)
# Four GPUs in two NVLink cliques (0, 0, 1, 1), on NUMA nodes (0, 0, 1, 1)
# unless a test case says otherwise.
ADDRESSES = ['0000:%02x:00.0' % (0x18 + 0x10 * i) for i in range(4)]


def clique_of(index):
    return index // 2


class PassthroughTestBase(base.GpuCloudTestCase):

    compute_driver = nova_pci.COMPUTE_DRIVER
    ENABLED_FILTERS = test_scheduler_gpu.NOVA_DEFAULT_FILTERS + [
        'PciPassthroughFilter', 'GpuPartitionFilter']
    EXTRA_FILTERS = ('nova_filters.gpu_filter.GpuPartitionFilter',)
    WEIGHT_CLASSES = ['nova_filters.gpu_weigher.GpuPartitionWeigher']

    def setUp(self):
        nova_pci.install(self)
        self.flags(report_in_placement=True, group='pci')
        self.flags(pci_in_placement=True, group='filter_scheduler')
        self.flags(device_spec=[
            nova_pci.device_spec(address, VENDOR, PRODUCT,
                                 numa_node=self.numa_of(i),
                                 clique=clique_of(i))
            for i, address in enumerate(ADDRESSES)], group='pci')
        # 'h100' takes any GPU; 'h100-clique<n>' only GPUs of clique n.
        self.flags(alias=[nova_pci.alias('h100', VENDOR, PRODUCT)] + [
            nova_pci.alias('h100-clique%d' % clique, VENDOR, PRODUCT,
                           traits=[placement_traits.nvlink_clique_trait(
                               clique)])
            for clique in (0, 1)], group='pci')
        super().setUp()

    @staticmethod
    def numa_of(index):
        return index // 2

    def add_passthrough_host(self, hostname):
        nova_pci.PciGpuDriver.DEVICES[hostname] = [
            nova_pci.gpu_device(address, VENDOR, PRODUCT, self.numa_of(i))
            for i, address in enumerate(ADDRESSES)]
        self._start_compute(hostname)

    def flavor(self, count, alias='h100', **policies):
        specs = {'pci_passthrough:alias': '%s:%d' % (alias, count)}
        specs.update(('gpu_partitions:%s' % key, value)
                     for key, value in policies.items())
        return self.create_flavor(specs)

    def gpus_of(self, server):
        """``(host, [GPU indexes])`` the server holds."""
        host = self.host_of(server)
        allocations = self.allocations(server)
        indexes = [i for i, address in enumerate(ADDRESSES)
                   if nova_pci.provider_name(host, address) in allocations]
        for i in indexes:
            self.assertEqual(
                {RC: 1}, allocations[nova_pci.provider_name(
                    host, ADDRESSES[i])])
        return host, indexes

    def boot_active(self, flavor):
        server = self.boot(flavor)
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        return server


class TestNovaPciProviders(PassthroughTestBase):

    def test_nova_reports_each_gpu_with_the_operators_traits(self):
        self.add_passthrough_host('pt-a')
        for i, address in enumerate(ADDRESSES):
            provider = self.provider(nova_pci.provider_name('pt-a', address))
            self.assertEqual({RC: 1}, provider.inventories)
            for trait in ('COMPUTE_MANAGED_PCI_DEVICE', 'OWNER_NOVA',
                          placement_traits.numa_node_trait(self.numa_of(i)),
                          placement_traits.nvlink_clique_trait(
                              clique_of(i))):
                self.assertIn(trait, provider.traits)


class TestPassthroughPackAndSpread(PassthroughTestBase):

    def test_pack_fills_a_host_and_a_clique_spread_opens_the_idle_host(self):
        self.add_passthrough_host('pt-a')
        self.add_passthrough_host('pt-b')
        first = self.boot_active(self.flavor(1))
        host, (gpu,) = self.gpus_of(first)
        other = ({'pt-a', 'pt-b'} - {host}).pop()

        packed = self.boot_active(self.flavor(1, policy='pack'))
        # Same host, the free GPU of the same clique: the other clique
        # stays whole for a 2-GPU request.
        self.assertEqual((host, [gpu ^ 1]), self.gpus_of(packed))

        spread = self.boot_active(self.flavor(1, policy='spread'))
        self.assertEqual(other, self.host_of(spread))


class TestPassthroughLinkAffinity(PassthroughTestBase):

    def test_two_gpu_request_lands_inside_one_clique(self):
        self.add_passthrough_host('pt-a')
        # One GPU taken: its clique keeps one free GPU, the other two.
        first = self.boot_active(self.flavor(1, policy='spread'))
        (taken,) = self.gpus_of(first)[1]
        whole = 1 - clique_of(taken)
        pair = self.boot_active(self.flavor(2, link_affinity='required'))
        self.assertEqual(('pt-a', [2 * whole, 2 * whole + 1]),
                         self.gpus_of(pair))

    def test_no_clique_free_required_fails_preferred_lands(self):
        self.add_passthrough_host('pt-a')
        for clique in (0, 1):
            server = self.boot_active(
                self.flavor(1, alias='h100-clique%d' % clique))
            (taken,) = self.gpus_of(server)[1]
            self.assertEqual(clique, clique_of(taken))
        server = self.boot(self.flavor(2, link_affinity='required'))
        self.assertEqual('ERROR', server['status'])
        self.assertIn('No valid host', server['fault']['message'])
        server = self.boot_active(self.flavor(2, link_affinity='preferred'))
        self.assertEqual(2, len(self.gpus_of(server)[1]))


class TestPassthroughNumaAffinity(PassthroughTestBase):
    """Both cliques span both NUMA nodes (0, 1, 0, 1), so NUMA decides."""

    @staticmethod
    def numa_of(index):
        return index % 2

    def test_two_gpu_request_of_a_one_node_instance_stays_on_one_node(self):
        self.add_passthrough_host('pt-a')
        first = self.boot_active(self.flavor(1, alias='h100-clique0'))
        (taken,) = self.gpus_of(first)[1]
        # The free GPUs: one on the taken GPU's node, two on the other.
        # With numa_affinity none, Nova claims a candidate spanning both
        # nodes, which its NUMA claim refuses (no valid host left).
        other_node = [i for i in range(4) if self.numa_of(i) !=
                      self.numa_of(taken)]
        flavor = self.create_flavor({
            'pci_passthrough:alias': 'h100:2', 'hw:numa_nodes': '1',
            'gpu_partitions:numa_affinity': 'required',
            'gpu_partitions:link_affinity': 'none'})
        pair = self.boot_active(flavor)
        self.assertEqual(('pt-a', other_node), self.gpus_of(pair))
