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
"""GPU hosts as Placement would describe them, for the scheduler tests.

:class:`FakePlacement` holds provider summaries (the shape of
``GET /allocation_candidates`` at microversion 1.36) and answers a request
with allocation candidates the way Placement builds them: every
combination of providers that can hold each request group (different
providers for ``isolate``). Usage is changed with :meth:`claim`.
"""

import itertools
import uuid

from nova import objects
from nova.tests.unit.scheduler import fakes as nova_fakes

import placement_traits

H100_LAYOUTS = {
    'all-1g': {'1g.10gb': 7},
    'mixed': {'3g.40gb': 1, '2g.20gb': 1, '1g.10gb': 2},
    'whole': {'7g.80gb': 1},
}


def gpu_address(index):
    return '0000:%02x:00.0' % (0x18 + index * 0x10)


class FakePlacement:

    def __init__(self):
        self.summaries = {}
        self.queries = 0

    def add_host(self, name, gpus):
        """``gpus``: list of dicts with ``layout`` ({profile: count} or a
        VF tuple ('rc', count)), ``clique``, ``numa``. Returns the root
        uuid.
        """
        root = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
        self.summaries[root] = {
            'resources': {'VCPU': {'capacity': 256, 'used': 0},
                          'MEMORY_MB': {'capacity': 2 ** 21, 'used': 0}},
            'traits': ['COMPUTE_ACCELERATORS'],
            'parent_provider_uuid': None, 'root_provider_uuid': root}
        for index, gpu in enumerate(gpus):
            address = gpu.get('address', gpu_address(index))
            traits = [placement_traits.OWNER_CYBORG,
                      placement_traits.physical_gpu_trait(address),
                      placement_traits.model_trait('H100 80GB HBM3')]
            if gpu.get('numa') is not None:
                traits.append(placement_traits.numa_node_trait(gpu['numa']))
            if gpu.get('clique') is not None:
                traits.append(
                    placement_traits.nvlink_clique_trait(gpu['clique']))
            layout = gpu['layout']
            if isinstance(layout, tuple):
                slices = [(layout[0], layout[1], [])]
            else:
                slices = [(placement_traits.mig_resource_class(profile),
                           count,
                           [placement_traits.mig_profile_trait(profile)])
                          for profile, count in sorted(layout.items())]
            for rc, count, extra in slices:
                rp = str(uuid.uuid5(uuid.NAMESPACE_DNS,
                                    '%s/%s/%s' % (name, address, rc)))
                self.summaries[rp] = {
                    'resources': {rc: {'capacity': count, 'used': 0}},
                    'traits': sorted(traits + extra),
                    'parent_provider_uuid': root,
                    'root_provider_uuid': root}
        return root

    def provider(self, root, address, rc):
        for rp, summary in self.summaries.items():
            if (summary['root_provider_uuid'] == root and rc in
                    summary['resources'] and placement_traits.physical_gpu_of(
                        summary['traits']) == address):
                return rp
        raise KeyError((root, address, rc))

    def claim(self, allocation_request):
        for rp, alloc in allocation_request['allocations'].items():
            for rc, amount in alloc['resources'].items():
                self.summaries[rp]['resources'][rc]['used'] += amount

    def used(self, rp):
        return sum(r['used'] for r in self.summaries[rp]['resources'].values())

    def candidates(self, root, groups, isolate=True):
        """Allocation candidates on ``root`` for ``groups``: a list of
        ``(requester_id, rc, units)``.
        """
        per_group = []
        for requester, rc, units in groups:
            options = [rp for rp, s in sorted(self.summaries.items())
                       if s['root_provider_uuid'] == root
                       and rc in s['resources']
                       and (s['resources'][rc]['capacity']
                            - s['resources'][rc]['used']) >= units]
            per_group.append([(requester, rp, rc, units) for rp in options])
        result = []
        for combo in itertools.product(*per_group):
            rps = [rp for _, rp, _, _ in combo]
            if isolate and len(set(rps)) != len(rps):
                continue
            allocations = {root: {'resources': {'VCPU': 4,
                                                'MEMORY_MB': 4096}}}
            mappings = {'': [root]}
            fits = True
            for requester, rp, rc, units in combo:
                res = allocations.setdefault(rp, {'resources': {}})
                res['resources'][rc] = res['resources'].get(rc, 0) + units
                summary = self.summaries[rp]['resources'][rc]
                if summary['capacity'] - summary['used'] < \
                        res['resources'][rc]:
                    fits = False
                mappings.setdefault(requester, []).append(rp)
            if fits:
                result.append({'allocations': allocations,
                               'mappings': mappings})
        return result

    def query(self, spec_obj, host_states):
        """Stands in for the one extra Placement request."""
        self.queries += 1
        return self.summaries


def host_state(name, root, candidates, aggregates=(), num_instances=0):
    return nova_fakes.FakeHostState(name, name, {
        'uuid': root, 'allocation_candidates': candidates,
        'aggregates': list(aggregates), 'num_instances': num_instances,
        'free_ram_mb': 1024 * 1024, 'free_disk_mb': 10 ** 6,
        'vcpus_total': 256, 'vcpus_used': 0})


def request_spec(extra_specs=None, numa_cells=None, instance_uuid=None):
    spec = objects.RequestSpec(
        flavor=objects.Flavor(extra_specs=extra_specs or {}),
        instance_uuid=instance_uuid or str(uuid.uuid4()),
        num_instances=1, scheduler_hints={})
    if numa_cells:
        spec.numa_topology = objects.InstanceNUMATopology(cells=[
            objects.InstanceNUMACell(id=i, cpuset=set([i]), pcpuset=set(),
                                     memory=1024)
            for i in range(numa_cells)])
    else:
        spec.numa_topology = None
    return spec


def aggregate(metadata, name='agg'):
    return objects.Aggregate(id=1, name=name, metadata=metadata)


def hgx_gpus(layout='all-1g', cliques=(0,) * 8, numa=(0, 0, 0, 0, 1, 1, 1, 1)):
    return [{'layout': H100_LAYOUTS[layout], 'clique': clique, 'numa': node}
            for clique, node in zip(cliques, numa)]


def mig(profile):
    return placement_traits.mig_resource_class(profile)


def gpu_address_index(address):
    """Inverse of :func:`gpu_address`."""
    return (int(address.split(':')[1], 16) - 0x18) // 0x10
