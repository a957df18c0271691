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
"""An in-memory Placement for the simulated fleet.

It holds what the Cyborg drivers report (one root provider per compute
node with ``VCPU`` and ``MEMORY_MB``, one child provider per slice kind
of each physical GPU, with its traits) and answers the one question the
scheduler asks: the allocation candidates of a request, in the shape of
``GET /allocation_candidates`` (microversion 1.36: ``allocations``,
``mappings`` and ``provider_summaries`` with capacity and used).

Requests are an unnumbered group on the compute node plus numbered
granular groups with ``group_policy=isolate``. Candidates are normalised
the same way for this model and for the real Placement
(:func:`normalise`): one per set of providers (Placement lists every
permutation of identical groups over the same providers; they are the
same claim), sorted by host and provider names, at most ``limit``
(Nova's ``[scheduler] max_placement_results``).
"""

import collections
import dataclasses
import itertools
import uuid

import os_resource_classes as orc

from cyborg_gpu_drivers import providers as provider_specs
from gpu_partitions.simulator import fleet as fleet_mod

MAX_PLACEMENT_RESULTS = 1000
_NAMESPACE = uuid.UUID('1d3c0d2e-5b7a-4d6c-9a57-6a2b1f0e9c11')


def provider_uuid(name):
    return str(uuid.uuid5(_NAMESPACE, name))


@dataclasses.dataclass(frozen=True)
class ResourceRequest:
    """``root``: ``{rc: amount}`` of the compute node (unnumbered group);
    ``groups``: ``((rc, amount), ...)``, one per numbered group.
    """
    root: tuple = ()
    groups: tuple = ()

    def query(self):
        """The query string of ``GET /allocation_candidates``."""
        parts = []
        if self.root:
            parts.append('resources=' + ','.join(
                '%s:%d' % item for item in self.root))
        for index, (rc, amount) in enumerate(self.groups, start=1):
            parts.append('resources%d=%s:%d' % (index, rc, amount))
        if len(self.groups) > 1:
            parts.append('group_policy=isolate')
        return '&'.join(parts)


@dataclasses.dataclass
class Provider:
    uuid: str
    name: str
    root: str
    parent: str | None
    inventories: dict
    traits: frozenset
    used: dict = dataclasses.field(default_factory=dict)
    reserved: dict = dataclasses.field(default_factory=dict)

    def free(self, rc):
        return (self.inventories.get(rc, 0) - self.reserved.get(rc, 0)
                - self.used.get(rc, 0))


def fleet_providers(fleet):
    """The providers the fleet's drivers would report (through
    :func:`cyborg_gpu_drivers.providers.provider_specs` of each host's
    inventory), under one compute node provider per host, roots first.
    """
    providers = []
    for host in fleet.hosts:
        root = provider_uuid(host.name)
        providers.append(Provider(
            uuid=root, name=host.name, root=root, parent=None,
            inventories={orc.VCPU: host.cpu_milli,
                         orc.MEMORY_MB: host.memory_mib},
            traits=frozenset(['COMPUTE_ACCELERATORS'])))
        for spec in provider_specs.provider_specs(
                fleet_mod.host_inventory(host)):
            providers.append(Provider(
                uuid=provider_uuid(spec.name), name=spec.name, root=root,
                parent=provider_uuid(spec.parent),
                inventories={spec.resource_class: spec.total},
                reserved={spec.resource_class: spec.reserved},
                traits=frozenset(spec.traits)))
    return providers


def normalise(candidates, names, limit=MAX_PLACEMENT_RESULTS):
    """One candidate per set of allocations, sorted by provider names.

    ``names`` maps provider uuid to name (the host comes first in every
    provider name).
    """
    unique = {}
    for candidate in candidates:
        key = tuple(sorted(
            (names[rp], rc, amount)
            for rp, alloc in candidate['allocations'].items()
            for rc, amount in alloc['resources'].items()))
        if key not in unique:
            unique[key] = candidate
    ordered = [unique[key] for key in sorted(unique)]
    return ordered[:limit] if limit else ordered


def ordered_summaries(summaries, names):
    """``summaries`` in provider-name order. Placement's JSON object has
    no defined order, and the GPU view sums usage in the order it reads
    providers, so both backends hand the plugins the same order.
    """
    return {rp: summaries[rp]
            for rp in sorted(summaries, key=lambda rp: names[rp])}


class InMemoryPlacement:
    """Providers, usages and allocation candidates of a fleet."""

    def __init__(self, providers):
        self.providers = {p.uuid: p for p in providers}
        self.names = {p.uuid: p.name for p in providers}
        self.roots = sorted((p for p in providers if p.parent is None),
                            key=lambda p: p.name)
        self._tree = collections.defaultdict(list)
        self._by_rc = collections.defaultdict(list)
        for provider in providers:
            self._tree[provider.root].append(provider)
            if provider.parent is not None:
                for rc in provider.inventories:
                    self._by_rc[rc].append(provider)
        for members in (list(self._by_rc.values())
                        + list(self._tree.values())):
            members.sort(key=lambda p: p.name)
        self._children_named_after_roots = all(
            p.name.startswith(self.names[p.root]) for p in providers)
        self._children = {root: [p for p in members if p.parent is not None]
                          for root, members in self._tree.items()}
        # The order of ordered_summaries(), found once.
        self._in_name_order = sorted(providers, key=lambda p: p.name)
        self.consumers = {}
        self._summary_cache = {}

    @classmethod
    def from_fleet(cls, fleet):
        return cls(fleet_providers(fleet))

    # --- reading ------------------------------------------------------

    def allocation_candidates(self, request, limit=MAX_PLACEMENT_RESULTS):
        """``(allocation_requests, provider_summaries)``, normalised."""
        root_needs = dict(request.root)
        groups = list(request.groups)
        if groups:
            roots = self._roots_with(groups)
        else:
            roots = [p.uuid for p in self.roots]
        # With one group, or identical groups, candidates come out in the
        # order normalise() gives (roots by name, then combinations of
        # providers sorted by name; a root's name is a prefix of its
        # children's), once each: stop at the limit instead of building
        # every candidate of a large fleet.
        in_order = (root_needs and len(set(groups)) <= 1
                    and self._children_named_after_roots)
        labels = [str(index) for index in range(1, len(groups) + 1)]
        candidates = []
        for root in roots:
            if in_order and limit and len(candidates) >= limit:
                break
            root_provider = self.providers[root]
            if any(root_provider.free(rc) < amount
                   for rc, amount in root_needs.items()):
                continue
            for picks in self._group_picks(root, groups):
                allocations = {}
                mappings = {}
                if root_needs:
                    allocations[root] = {'resources': dict(root_needs)}
                    mappings[''] = [root]
                for label, (rc, amount), rp in zip(labels, groups, picks):
                    alloc = allocations.get(rp)
                    if alloc is None:
                        allocations[rp] = {'resources': {rc: amount}}
                    else:
                        resources = alloc['resources']
                        resources[rc] = resources.get(rc, 0) + amount
                    mappings[label] = [rp]
                candidates.append({'allocations': allocations,
                                   'mappings': mappings})
                if in_order and limit and len(candidates) >= limit:
                    break
        if not in_order:
            candidates = normalise(candidates, self.names, limit)
        return candidates, self.provider_summaries(candidates)

    def _roots_with(self, groups):
        roots = None
        for rc, amount in set(groups):
            # Provider.free inlined: this runs over the fleet's providers
            # for every request.
            mine = {p.root for p in self._by_rc.get(rc, ())
                    if p.inventories.get(rc, 0) - p.reserved.get(rc, 0)
                    - p.used.get(rc, 0) >= amount}
            roots = mine if roots is None else roots & mine
        return sorted(roots or (), key=lambda r: self.names[r])

    def _group_picks(self, root, groups):
        """Providers for the numbered groups, one distinct provider per
        group (``isolate``); identical groups give combinations.
        """
        if not groups:
            yield ()
            return
        # Provider.free inlined, once per distinct group.
        fitting = {}
        for rc, amount in set(groups):
            fitting[(rc, amount)] = [
                p.uuid for p in self._children.get(root, ())
                if rc in p.inventories
                and p.inventories[rc] - p.reserved.get(rc, 0)
                - p.used.get(rc, 0) >= amount]
        options = [fitting[group] for group in groups]
        if len(fitting) == 1:
            yield from itertools.combinations(options[0], len(groups))
            return
        for picks in itertools.product(*options):
            if len(set(picks)) == len(picks):
                yield picks

    def provider_summaries(self, candidates):
        trees = {self.providers[rp].root for c in candidates
                 for rp in c['allocations']}
        if not trees:
            return {}
        cached = self._summary_cache
        return {p.uuid: cached.get(p.uuid) or self._summary(p)
                for p in self._in_name_order if p.root in trees}

    def _summary(self, provider):
        cached = self._summary_cache.get(provider.uuid)
        if cached is None:
            cached = {
                'resources': {rc: {'capacity': (
                    total - provider.reserved.get(rc, 0)),
                    'used': provider.used.get(rc, 0)}
                    for rc, total in provider.inventories.items()},
                'traits': sorted(provider.traits),
                'parent_provider_uuid': provider.parent,
                'root_provider_uuid': provider.root}
            self._summary_cache[provider.uuid] = cached
        return cached

    # --- writing ------------------------------------------------------

    def claim(self, consumer, allocation_request):
        """Write ``allocation_request`` for ``consumer``; False if it no
        longer fits (as Placement answers 409).
        """
        allocations = allocation_request['allocations']
        for rp, alloc in allocations.items():
            provider = self.providers[rp]
            for rc, amount in alloc['resources'].items():
                if provider.free(rc) < amount:
                    return False
        for rp, alloc in allocations.items():
            provider = self.providers[rp]
            for rc, amount in alloc['resources'].items():
                provider.used[rc] = provider.used.get(rc, 0) + amount
            self._summary_cache.pop(rp, None)
        self.consumers[consumer] = allocations
        return True

    def release(self, consumer):
        for rp, alloc in self.consumers.pop(consumer, {}).items():
            provider = self.providers[rp]
            for rc, amount in alloc['resources'].items():
                provider.used[rc] -= amount
            self._summary_cache.pop(rp, None)

    def usages(self):
        """``{provider name: {rc: used}}`` of providers in use."""
        return {p.name: {rc: n for rc, n in p.used.items() if n}
                for p in self.providers.values()
                if any(p.used.values())}
