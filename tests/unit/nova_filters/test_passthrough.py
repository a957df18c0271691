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
"""Whole GPUs Nova passes through (PCI in Placement), weighed and filtered.

The providers have the shape Nova's ``pci_placement_translator`` gives
them: one per GPU (``type-PCI``/``type-PF``), one unit of
``CUSTOM_PCI_<VENDOR>_<PRODUCT>`` or of the device_spec's resource class,
traits ``COMPUTE_MANAGED_PCI_DEVICE``, ``OWNER_NOVA`` and the
device_spec's ``traits``. The in-process cloud test
(``tests/functional/test_passthrough.py``) has Nova make them.
"""

import copy
import uuid

import fixtures
import os_traits

from nova_filters import allocations
from nova_filters import passthrough
from nova_filters import provider_summaries
from tests.unit.nova_filters import fakes
from tests.unit.nova_filters import test_plugins

H100 = 'CUSTOM_PCI_10DE_2330'
NIC = 'CUSTOM_PCI_8086_1572'


def add_passthrough_host(placement, name, cliques=(0, 0, 1, 1),
                         numa=(0, 0, 1, 1), rc=H100, nics=0):
    """A compute node with one Nova PCI provider per GPU (and ``nics``
    NIC providers), named as Nova names them.
    """
    root = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
    placement.summaries[root] = {
        'resources': {'VCPU': {'capacity': 256, 'used': 0},
                      'MEMORY_MB': {'capacity': 2 ** 21, 'used': 0}},
        'traits': [], 'parent_provider_uuid': None,
        'root_provider_uuid': root}
    devices = [(fakes.gpu_address(i), rc, [
        'CUSTOM_GPU_NVLINK_CLIQUE_%d' % clique,
        'CUSTOM_GPU_NUMA_NODE_%d' % node])
        for i, (clique, node) in enumerate(zip(cliques, numa))]
    devices += [('0000:%02x:00.0' % (0xc0 + i), NIC, [])
                for i in range(nics)]
    for address, resource_class, traits in devices:
        rp = str(uuid.uuid5(uuid.NAMESPACE_DNS,
                            '%s_%s' % (name, address.upper())))
        placement.summaries[rp] = {
            'resources': {resource_class: {'capacity': 1, 'used': 0}},
            'traits': sorted(traits + [os_traits.COMPUTE_MANAGED_PCI_DEVICE,
                                       os_traits.OWNER_NOVA]),
            'parent_provider_uuid': root, 'root_provider_uuid': root}
    return root


class PassthroughTestBase(test_plugins.PluginTestBase):

    def _rp(self, root, index):
        for rp, summary in self.placement.summaries.items():
            if (summary['root_provider_uuid'] == root and rp != root
                    and uuid.uuid5(uuid.NAMESPACE_DNS, '%s_%s' % (
                        self._name(root),
                        fakes.gpu_address(index).upper())) == uuid.UUID(rp)):
                return rp
        raise KeyError(index)

    def _name(self, root):
        for name in ('h1', 'h2', 'h3'):
            if str(uuid.uuid5(uuid.NAMESPACE_DNS, name)) == root:
                return name
        raise KeyError(root)


class ClassTest(PassthroughTestBase):

    def test_nova_default_names_of_gpu_vendors_are_gpus(self):
        self.assertTrue(passthrough.is_gpu_class('CUSTOM_PCI_10DE_2330'))
        self.assertTrue(passthrough.is_gpu_class('CUSTOM_PCI_1002_74A1'))
        self.assertFalse(passthrough.is_gpu_class(NIC))
        self.assertFalse(passthrough.is_gpu_class('CUSTOM_PCI_10DE'))
        self.assertFalse(passthrough.is_gpu_class('VCPU'))
        # The drivers' own slices stay GPUs.
        self.assertTrue(passthrough.is_gpu_class(fakes.mig('1g.10gb')))

    def test_alias_classes_are_gpus_once_configured(self):
        self.assertFalse(passthrough.is_gpu_class('CUSTOM_A100_80GB'))
        self.gpu_flags(passthrough_resource_classes=[
            'a100_80gb', 'CUSTOM_MI210 '])
        self.assertEqual({'CUSTOM_A100_80GB', 'CUSTOM_MI210'},
                         passthrough.configured_classes())
        self.assertTrue(passthrough.is_gpu_class('CUSTOM_A100_80GB'))

    def test_alias_classes_are_named_as_nova_names_them(self):
        # Nova's pci_placement_translator: standard and CUSTOM_ names
        # kept, others made legal custom names.
        self.gpu_flags(passthrough_resource_classes=[
            'nvidia-a100.80gb', 'PGPU', 'custom_mi210'])
        self.assertEqual(
            {'CUSTOM_NVIDIA_A100_80GB', 'PGPU', 'CUSTOM_MI210'},
            passthrough.configured_classes())

    def test_view_counts_whole_gpus_and_reads_their_traits(self):
        root = add_passthrough_host(self.placement, 'h1', nics=2)
        rp = self._rp(root, 1)
        self.placement.claim({'allocations': {rp: {'resources': {H100: 1}}}})
        view = provider_summaries.parse(self.placement.summaries)
        host = view.host(root)
        # Four GPUs (the NICs are not GPUs), each its own provider.
        self.assertEqual(4, len(host.gpus))
        gpu = host.gpus[rp]
        self.assertEqual((1.0, 0, 'CUSTOM_GPU_NVLINK_CLIQUE_0'),
                         (gpu.used_share, gpu.numa_node, gpu.link_domain))
        self.assertEqual(0.25, view.fill(root))
        self.assertEqual({H100}, view.resource_classes)

    def test_configured_class_counts_after_the_option_changes(self):
        rc = 'CUSTOM_A100_80GB'
        root = add_passthrough_host(self.placement, 'h1', rc=rc)
        self.assertIsNone(
            provider_summaries.parse(self.placement.summaries).host(root))
        self.gpu_flags(passthrough_resource_classes=[rc])
        host = provider_summaries.parse(self.placement.summaries).host(root)
        self.assertEqual(4, len(host.gpus))

    def test_compute_node_classes_are_never_gpus(self):
        self.useFixture(fixtures.MockPatchObject(passthrough, '_WARNED',
                                                 set()))
        logger = self.useFixture(fixtures.FakeLogger())
        self.gpu_flags(passthrough_resource_classes=[
            'VCPU', 'memory_mb', ' ', 'CUSTOM_A100_80GB'])
        for _ in range(3):
            self.assertEqual({'CUSTOM_A100_80GB'},
                             passthrough.configured_classes())
        self.assertEqual(1, logger.output.count('MEMORY_MB, VCPU'))
        # A request without GPU stays one: no Placement query, no
        # candidate moved, neutral weights where no GPU usage is at hand.
        roots = [add_passthrough_host(self.placement, name)
                 for name in ('h1', 'h2')]
        states = [fakes.host_state(name, root, [
            {'allocations': {root: {'resources': {
                'VCPU': vcpus, 'MEMORY_MB': 512}}},
             'mappings': {'': [root]}} for vcpus in (1, 2)])
            for name, root in zip(('h1', 'h2'), roots)]
        before = copy.deepcopy([s.allocation_candidates for s in states])
        self.assertEqual(0, allocations.gpu_units(states))
        spec = fakes.request_spec()
        passed = self.filter.filter_all(states, spec)
        self.assertEqual([0.0, 0.0], [w.weight for w in self._weigh(
            passed, spec)])
        self.assertEqual(before, [s.allocation_candidates for s in states])
        self.assertEqual(0, self.placement.queries)


class SchedulingTest(PassthroughTestBase):

    def _pci_groups(self, count, rc=H100):
        # Nova makes one request group per device of the alias.
        return [('pci-%d' % i, rc, 1) for i in range(count)]

    def _gpus(self, state):
        view = provider_summaries.parse(self.placement.summaries)
        allocation = allocations.gpu_allocation(
            view, state.allocation_candidates[0])
        return sorted(self._index(state.uuid, rp) for rp in allocation)

    def _index(self, root, rp):
        for index in range(8):
            try:
                if self._rp(root, index) == rp:
                    return index
            except KeyError:
                break
        raise KeyError(rp)

    def _use(self, root, index, units=1, rc=H100):
        self.placement.claim({'allocations': {
            self._rp(root, index): {'resources': {rc: units}}}})

    def test_pack_and_spread_across_hosts_and_inside_one(self):
        roots = [add_passthrough_host(self.placement, name)
                 for name in ('h1', 'h2')]
        self._use(roots[1], 0)
        # Pack fills GPU 0's clique on h2 and keeps clique 1 whole; spread
        # takes an idle GPU of the idle host.
        for policy, host, gpus in (('pack', 'h2', [[1]]),
                                   ('spread', 'h1', [[0], [1], [2], [3]])):
            self.gpu_flags(policy=policy)
            states = self._states(roots, self._pci_groups(1))
            weighed = self._weigh(states, fakes.request_spec(
                instance_uuid=str(uuid.uuid4())))
            self.assertEqual(host, weighed[0].obj.host, policy)
            self.assertIn(self._gpus(weighed[0].obj), gpus, policy)

    def test_two_gpu_request_required_link_lands_in_one_clique(self):
        self.gpu_flags(link_affinity='required')
        (root,) = [add_passthrough_host(self.placement, 'h1')]
        self._use(root, 0)
        states = self._states([root], self._pci_groups(2))
        self.assertEqual(6, len(states[0].allocation_candidates))
        passed = self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual(1, len(passed))
        # Only GPUs 2 and 3 (clique 1) share a clique with a free peer.
        self.assertEqual(2, len(passed[0].allocation_candidates))
        self.assertEqual([2, 3], self._gpus(passed[0]))

    def test_two_gpu_request_without_a_free_clique(self):
        (root,) = [add_passthrough_host(self.placement, 'h1')]
        self._use(root, 0)
        self._use(root, 2)
        self.gpu_flags(link_affinity='required')
        states = self._states([root], self._pci_groups(2))
        self.assertEqual([], self.filter.filter_all(
            states, fakes.request_spec()))
        self.gpu_flags(link_affinity='preferred')
        states = self._states([root], self._pci_groups(2))
        passed = self.filter.filter_all(states, fakes.request_spec())
        self.assertEqual([1, 3], self._gpus(passed[0]))

    def test_numa_required_keeps_the_gpus_on_one_node(self):
        # Cliques across NUMA nodes, so only NUMA decides.
        self.gpu_flags(numa_affinity='required', link_affinity='none')
        (root,) = [add_passthrough_host(
            self.placement, 'h1', cliques=(0, 0, 0, 0), numa=(0, 1, 0, 1))]
        self._use(root, 0)
        states = self._states([root], self._pci_groups(2))
        passed = self.filter.filter_all(
            states, fakes.request_spec(numa_cells=1))
        self.assertEqual(2, len(passed[0].allocation_candidates))
        self.assertEqual([1, 3], self._gpus(passed[0]))

    def test_request_for_a_nic_is_no_gpu_request(self):
        (root,) = [add_passthrough_host(self.placement, 'h1', nics=2)]
        states = self._states([root], self._pci_groups(1, rc=NIC))
        self.assertEqual(0, allocations.gpu_units(states))
        states = self._states([root], self._pci_groups(2))
        self.assertEqual(2, allocations.gpu_units(states))
