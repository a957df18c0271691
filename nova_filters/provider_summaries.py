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
"""Placement's provider summaries -> a :class:`~nova_filters.gpu_view.GpuView`.

:func:`parse` reads the ``provider_summaries`` of ``GET
/allocation_candidates`` (microversion 1.29 or later: resources with
capacity and used, traits, root provider) once per request. It is the
scheduler plugins' hot loop (over a hundred thousand providers at 5,000
hosts), so it keeps no object per provider or GPU: it reads a provider's
traits through :func:`~nova_filters.topology.topology_of` (one hash, no
parsing), sums each GPU's usage into the hosts' fills, which is all the
weigher needs for most hosts, and lists each host's providers in one flat
tuple that the garbage collector does not track. A host's
:class:`~nova_filters.gpu_view.HostGpus` is built only when asked for.
The view keeps none of the answer but the compute nodes' summaries: it
may outlive the request (until a full collection frees Nova's
``RequestSpec``), and the garbage collector walks whatever it keeps.
"""

import os_resource_classes as orc

from nova_filters import gpu_view
from nova_filters import passthrough
from nova_filters import topology as topology_mod
import placement_traits

_GPU_PREFIXES = (placement_traits.RC_MIG, placement_traits.RC_VGPU,
                 placement_traits.RC_GPU_VF)
_VCPU = orc.VCPU
_MEMORY_MB = orc.MEMORY_MB
_ERRORS = (AttributeError, KeyError, TypeError, ValueError,
           ArithmeticError)
# Placement's largest amount (a signed 64-bit column); beyond it, or below
# 0, a capacity or usage is garbage, and a huge one would overflow the
# float arithmetic of the GPUs' shares.
_MAX_AMOUNT = 2 ** 63 - 1

# Resource class -> MIG compute slices per unit, 0 for another GPU class
# (vGPU type, VF, whole GPU passed through), -1 for a class that is not a
# GPU's. A process meets few classes; the bound only guards against a
# flood of odd names. Built for the passthrough classes configured when
# it was last checked (see _check_passthrough_classes).
_CLASSES = {}
_MAX_CLASSES = 4096
_PASSTHROUGH = [frozenset()]


def _check_passthrough_classes():
    configured = passthrough.configured_classes()
    if configured != _PASSTHROUGH[0]:
        _CLASSES.clear()
        _PASSTHROUGH[0] = configured


def _classify(resource_class):
    if not isinstance(resource_class, str):
        raise TypeError('resource class %r' % (resource_class,))
    slices = _CLASSES.get(resource_class)
    if slices is None:
        slices = (gpu_view.mig_slices(resource_class) or 0
                  if resource_class.startswith(_GPU_PREFIXES)
                  or passthrough.is_passthrough_class(
                      resource_class, _PASSTHROUGH[0]) else -1)
        if len(_CLASSES) < _MAX_CLASSES:
            _CLASSES[resource_class] = slices
    return slices


def is_gpu_class(resource_class):
    return _classify(resource_class) >= 0


def parse(summaries, roots=None, topology=None):
    """A view of the GPU providers in ``summaries``.

    The view keeps the compute nodes' summaries of ``summaries`` (not
    the rest) and must not see them changed. ``roots``
    limits it to those compute nodes. ``topology``, a
    :class:`~nova_filters.topology.TopologyCache`, remembers the hosts'
    GPU providers for when Placement cannot be read. Anything that is not
    a well-formed GPU provider is skipped.
    """
    _check_passthrough_classes()
    # One tuple and one dict (of strings and numbers) per host: objects
    # kept from this loop, one per provider or per GPU, would trip the
    # garbage collector's full collection that Nova's decoding of the
    # answer has just armed (a walk over the whole answer, longer than
    # this loop).
    # root -> its GPU providers, flat (see topology.HOSTED_FIELDS)
    members = {}
    # root -> its GPUs: address -> index in the per-GPU lists
    gpus_of = {}
    # Per GPU: MIG slices used and offered, share of its other units used.
    mig_used = []
    mig_offered = []
    other_share = []
    classes = set()
    linked = False
    known_topology = topology_mod.known_topology
    topology_of = topology_mod.topology_of
    join_names = topology_mod.TRAIT_SEPARATOR.join
    classify = _CLASSES.get
    # Placement lists a host's providers together: each run of one host's
    # providers is gathered in ``run``, then added to the host's members.
    last_root = gpu_index = None
    run = []
    for uuid, summary in summaries.items():
        try:
            gpu = None
            for rc, amounts in summary['resources'].items():
                slices = classify(rc)
                if slices is None:
                    slices = _classify(rc)
                if slices < 0:
                    continue
                capacity = amounts['capacity']
                if type(capacity) is not int:
                    capacity = _whole(capacity)
                if capacity <= 0:
                    continue
                used = amounts['used']
                if type(used) is not int:
                    used = _whole(used)
                if capacity > _MAX_AMOUNT or not 0 <= used <= _MAX_AMOUNT:
                    raise ValueError('amounts out of range')
                if gpu is None:
                    # The root is read only for a provider of GPU units
                    # (not for a compute node, a NIC, a disk).
                    root = summary.get('root_provider_uuid') or uuid
                    other_host = root != last_root
                    if other_host and roots is not None and (
                            root not in roots):
                        break
                    names = summary.get('traits') or ()
                    place = known_topology(join_names(names))
                    if place is None or len(place.traits) != len(names):
                        place = topology_of(names)
                    if other_host:
                        gpu_index = gpus_of.get(root)
                        if gpu_index is None:
                            gpu_index = gpus_of[root] = {}
                        _end_run(run, last_root, members, classes)
                        last_root = root
                    # A provider without a GPU address is its own GPU.
                    address = place.gpu or uuid
                    gpu = gpu_index.get(address)
                    if gpu is None:
                        gpu = gpu_index[address] = len(mig_used)
                        mig_used.append(0)
                        mig_offered.append(0)
                        other_share.append(0.0)
                    if place.link_domain is not None:
                        linked = True
                if slices:
                    mig_used[gpu] += slices * used
                    # An on-demand MIG GPU offers every profile: its
                    # slices count, not the sum of its offers.
                    mig_offered[gpu] = (place.on_demand_slices
                                        or mig_offered[gpu]
                                        + slices * capacity)
                else:
                    other_share[gpu] += used / capacity
                run += (uuid, place.traits, rc, capacity, used)
        except _ERRORS:
            continue
    _end_run(run, last_root, members, classes)
    if topology is not None:
        topology.remember(members)
    shares = list(map(gpu_view.used_share, mig_used, mig_offered,
                      other_share))
    # Each host's mean GPU share, added as HostGpus.used_share adds.
    fills = {root: sum(map(shares.__getitem__, gpus.values())) / len(gpus)
             for root, gpus in gpus_of.items()}
    return gpu_view.GpuView(
        source=_Hosts(members,
                      {root: summaries.get(root) for root in members}),
        fills=fills, resource_classes=frozenset(classes), linked=linked)


def _whole(amount):
    """``amount`` as an int when it is a whole finite number (JSON may
    give ``7.0``); TypeError otherwise (a provider that :func:`parse`
    skips).
    """
    if isinstance(amount, float) and amount.is_integer():
        return int(amount)
    raise TypeError('amount %r is not a whole number' % (amount,))


def _end_run(run, root, members, classes):
    """Add ``run``, providers of host ``root`` (None: no host yet) listed
    one after another, to its members and their classes to ``classes``;
    empty ``run``.
    """
    if root is not None:
        members[root] = members.get(root, ()) + tuple(run)
        classes.update(run[2::topology_mod.HOSTED_FIELDS])
        run.clear()


def _free_of(summary):
    """``(free VCPU, free MEMORY_MB)`` of a compute node's summary, None
    for what cannot be read.
    """
    free = []
    for rc in (_VCPU, _MEMORY_MB):
        try:
            amounts = summary['resources'][rc]
            free.append(int(amounts['capacity']) - int(amounts['used']))
        except _ERRORS:
            free.append(None)
    return tuple(free)


class _Hosts:
    """Builds a host's :class:`~nova_filters.gpu_view.HostGpus` from the
    providers :func:`parse` listed, when the view first asks for it.

    It keeps what it needs of the answer, not the answer: a request's
    view can outlive the request (until its RequestSpec is collected), and
    the whole answer kept that long would be walked by the garbage
    collector's full collections in the next request.
    """

    def __init__(self, members, compute_nodes):
        self._members = members
        self._compute_nodes = compute_nodes
        # GPU provider -> its root, made when first needed: a candidate
        # names its compute node first, whose host, once built, knows its
        # providers.
        self._owner = None

    def roots(self):
        return self._members.keys()

    def root_of(self, uuid):
        if uuid in self._members:
            return uuid
        if self._owner is None:
            self._owner = {
                provider: root for root, hosted in self._members.items()
                for provider in hosted[::topology_mod.HOSTED_FIELDS]}
        return self._owner.get(uuid)

    def host(self, root):
        hosted = self._members.get(root)
        if hosted is None:
            return None
        # The compute node's free VCPU and memory, read for the few hosts
        # that are built, not in the loop over every provider.
        return gpu_view.host_gpus(root,
                                  topology_mod.gpu_providers(root, hosted),
                                  _free_of(self._compute_nodes.get(root)))
