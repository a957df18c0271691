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
"""Whole GPUs passed through by Nova itself, in the in-process cloud.

:class:`PciGpuDriver` is Nova's fake virt driver that also reports PCI
devices (``pci_passthrough_devices`` of ``get_available_resource``, as
the libvirt driver does). Everything after that is Nova's own code: the
resource tracker feeds them to a real ``PciDevTracker``, which matches
them against ``[pci] device_spec``; with ``[pci] report_in_placement``
``update_provider_tree_for_pci`` makes one Placement provider per GPU with
the device_spec's traits; with ``[filter_scheduler] pci_in_placement`` a
flavor's ``pci_passthrough:alias`` becomes request groups, and the compute
claims the devices of the providers the scheduler chose.

Nova's configuration is process-wide, so every host of a cloud shares one
device_spec: the hosts are identical machines (same PCI addresses),
as a fleet configured from one template is.
"""

import json

from oslo_serialization import jsonutils

from nova import objects
from nova.virt import fake

import placement_traits

#: Set as Nova's ``compute_driver`` once :func:`install` has run.
COMPUTE_DRIVER = 'fake.PciGpuDriver'


class PciGpuDriver(fake.FakeDriver):
    """Nova's fake driver with the PCI devices of :attr:`DEVICES`."""

    #: ``{hostname: [PCI device dicts]}``, as a virt driver reports them.
    DEVICES = {}

    def get_available_resource(self, nodename):
        status = super().get_available_resource(nodename)
        if status and nodename in self.DEVICES:
            devices = self.DEVICES[nodename]
            status['pci_passthrough_devices'] = jsonutils.dumps(devices)
            status['numa_topology'] = host_numa_topology(
                {device['numa_node'] for device in devices})._to_json()
        return status


def host_numa_topology(nodes, cpus=8, memory_mb=65536):
    """A host NUMA topology of ``nodes`` (ids), each with ``cpus`` CPUs
    and ``memory_mb`` of 4 KiB pages, so instances with ``hw:numa_nodes``
    fit and Nova's claim checks their PCI devices' NUMA nodes.
    """
    cells = []
    for node in sorted(nodes):
        cpuset = set(range(node * cpus, (node + 1) * cpus))
        cells.append(objects.NUMACell(
            id=node, cpuset=cpuset, pcpuset=set(), memory=memory_mb,
            cpu_usage=0, memory_usage=0, pinned_cpus=set(),
            siblings=[{cpu} for cpu in sorted(cpuset)],
            mempages=[objects.NUMAPagesTopology(
                size_kb=4, total=memory_mb * 256, used=0)],
            network_metadata=objects.NetworkMetadata(
                physnets=set(), tunneled=False),
            socket=0))
    return objects.NUMATopology(cells=cells)


def install(test_case):
    """Make :data:`COMPUTE_DRIVER` loadable (Nova imports drivers from
    ``nova.virt`` only) for the duration of ``test_case``.
    """
    import fixtures
    test_case.useFixture(fixtures.MonkeyPatch(
        'nova.virt.fake.PciGpuDriver', PciGpuDriver))
    # The one sysfs read on this path: for a device_spec naming a single
    # address Nova asks /sys whether it is an SR-IOV PF. These GPUs are
    # plain PCI functions, as that read says on a real host.
    test_case.useFixture(fixtures.MockPatch(
        'nova.pci.utils.is_physical_function', return_value=False))
    test_case.addCleanup(PciGpuDriver.DEVICES.clear)


def gpu_device(address, vendor_id, product_id, numa_node):
    """One whole GPU (``type-PCI``) as a virt driver reports it."""
    return {'address': address, 'vendor_id': vendor_id,
            'product_id': product_id, 'dev_type': 'type-PCI',
            'parent_addr': None, 'numa_node': numa_node,
            'status': 'available', 'label': 'label_%s_%s' % (
                vendor_id, product_id)}


def device_spec(address, vendor_id, product_id, numa_node=None,
                clique=None, resource_class=None):
    """One ``[pci] device_spec`` entry for the GPU at ``address``, with the
    NUMA and NVLink clique traits the scheduler plugins read.
    """
    traits = [trait for trait in (
        placement_traits.numa_node_trait(numa_node),
        None if clique is None
        else placement_traits.nvlink_clique_trait(clique)) if trait]
    spec = {'vendor_id': vendor_id, 'product_id': product_id,
            'address': address}
    if traits:
        spec['traits'] = ','.join(traits)
    if resource_class:
        spec['resource_class'] = resource_class
    return json.dumps(spec, sort_keys=True)


def alias(name, vendor_id, product_id, resource_class=None, traits=()):
    """One ``[pci] alias`` entry for whole GPUs (with ``traits``, only
    those of GPUs carrying them).
    """
    spec = {'name': name, 'vendor_id': vendor_id, 'product_id': product_id,
            'device_type': 'type-PCI'}
    if resource_class:
        spec['resource_class'] = resource_class
    if traits:
        spec['traits'] = ','.join(traits)
    return json.dumps(spec, sort_keys=True)


def provider_name(hostname, address):
    """The name Nova gives a PCI device's provider."""
    return '%s_%s' % (hostname, address.upper())
