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
"""Host kinds, GPU layouts and the mapping of trace requests onto them.

Trace GPU models map onto our host kinds (:data:`TRACE_MODELS`):

========  ==================  =========================================
trace     kind                partitioning, links
========  ==================  =========================================
G2        ``a100-80gb-mig``   MIG, 7 compute slices / 8 memory slots, or
                              MIG off with the full-size time-sliced type
                              (``A100DX-80C``); the GPUs of a host form
                              one NVLink clique, which only MIG-off GPUs
                              use (MIG-backed slices get no P2P)
G3        ``h100-80gb-mig``   same (H100 SXM, ``H100XM-80C``)
V100M32   ``v100-32gb-vgpu``  time-sliced vGPU, one type per GPU;
                              cliques of 4 GPUs (hybrid cube-mesh halves)
V100M16   ``v100-16gb-vgpu``  same
T4        ``t4-vgpu``         time-sliced vGPU, PCIe only (no clique)
P100      ``p100-vgpu``       same
A10       ``a10-vgpu``        same
========  ==================  =========================================

A task's ``gpu_milli`` of one GPU maps onto the smallest slice of the kind
that holds it: on MIG kinds a whole GPU (1000) is a MIG-off GPU's
full-size type, a fraction ``ceil(7 * gpu_milli / 1000)`` compute slices
rounded up to a profile (1g, 2g, 3g, 4g, else 7g); on vGPU kinds the
smallest type of 1/8, 1/4, 1/2 or the whole framebuffer. ``num_gpu`` > 1
asks for that many whole GPUs (full-size time-sliced types, on MIG kinds
those of MIG-off GPUs), one request group each, which must share an
NVLink clique: only full-size time-sliced vGPU types carry a clique
trait, as the drivers report them.

Whole GPUs of the MIG kinds are modelled as an operator runs them: MIG
disabled (:data:`MIG_OFF`), so the MIG driver leaves the GPU to the
time-sliced vGPU driver, which reports the one type that owns the whole
framebuffer, with the GPU's NVLink clique. The MIG driver cannot switch
a GPU's MIG mode (not even in ``on_demand`` mode), so which GPUs are MIG
off is fixed when the fleet is built, like any layout.

:func:`host_inventory` gives the ``HostInventory`` the drivers report for
a host; the simulator's Placement holds its provider specs.

MIG layouts are fixed per GPU, as the MIG driver reports the instances
that exist; each one is checked against the placement start/size rules
of the A100/H100 geometry. The layout of each GPU (and the vGPU type of
each time-sliced GPU, and which MIG GPUs are MIG off) is chosen when the
fleet is built, in proportion to the whole trace's demand: oracle
provisioning, which no operator can do (:func:`plan_layouts`).
"""

import collections
import dataclasses
import math
import random

from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import nvidia_common
from cyborg_gpu_drivers import vgpu_types
import placement_traits

MIG = 'mig'
VGPU = 'vgpu'

# A100/H100 family: profile -> (compute slices, memory-slot size, starts).
MIG_GEOMETRY = {
    '1g.10gb': (1, 1, (0, 1, 2, 3, 4, 5, 6)),
    '2g.20gb': (2, 2, (0, 2, 4)),
    '3g.40gb': (3, 4, (0, 4)),
    '4g.40gb': (4, 4, (0,)),
    '7g.80gb': (7, 8, (0,)),
}
MIG_SLOTS = 8
MIG_SLICES = 7
# MIG_GEOMETRY as the table of cyborg_gpu_drivers.mig_geometry, whose
# functions the on-demand simulation calls: {profile: (compute slices,
# ((start, size in memory slots), ...))}.
MIG_TABLE = {profile: (slices, tuple((start, size) for start in starts))
             for profile, (slices, size, starts) in MIG_GEOMETRY.items()}
# NVML's GPU instance profile ids of these profiles on A100/H100 80GB
# (nvidia-smi mig -lgip).
MIG_PROFILE_IDS = {'1g.10gb': 19, '2g.20gb': 14, '3g.40gb': 9,
                   '4g.40gb': 5, '7g.80gb': 0}
# The layout of a GPU whose MIG instances or vGPU type follow demand
# (:mod:`.dynamic`).
ON_DEMAND = 'on-demand'
# The layout of a MIG-capable GPU with MIG disabled: the vGPU driver
# reports it with the kind's full-size time-sliced type (Kind.mig_off_type).
MIG_OFF = 'mig-off'

# Named layouts: ((profile, start), ...), largest instances first.
MIG_LAYOUTS = {
    'whole': (('7g.80gb', 0),),
    '4g-3g': (('4g.40gb', 0), ('3g.40gb', 4)),
    '3g-x2': (('3g.40gb', 0), ('3g.40gb', 4)),
    '2g-x3-1g': (('2g.20gb', 0), ('2g.20gb', 2), ('2g.20gb', 4),
                 ('1g.10gb', 6)),
    'all-1g': tuple(('1g.10gb', start) for start in range(7)),
}


# Bounds of --fleet: the largest GPU hosts carry 16 GPUs; 5,000 hosts
# is four times the Alibaba trace's 1,213 nodes (building 20,000 took a
# silent minute on 2 cores, before any task was placed).
MAX_GPUS_PER_HOST = 16
MAX_FLEET_HOSTS = 5000


class LayoutError(ValueError):
    pass


def check_mig_layout(instances):
    """Refuse a layout that breaks the placement start/size rules."""
    used = set()
    for profile, start in instances:
        if profile not in MIG_GEOMETRY:
            raise LayoutError('unknown MIG profile %r' % profile)
        _, size, starts = MIG_GEOMETRY[profile]
        if start not in starts:
            raise LayoutError('%s cannot start at memory slot %d (allowed: '
                              '%s)' % (profile, start, starts))
        slots = set(range(start, start + size))
        if slots & used or max(slots) >= MIG_SLOTS:
            raise LayoutError('%s at %d overlaps another instance'
                              % (profile, start))
        used |= slots


for _layout in MIG_LAYOUTS.values():
    check_mig_layout(_layout)


@dataclasses.dataclass(frozen=True)
class Kind:
    """A GPU host kind; ``model``, ``device_id`` and ``cuda_capability``
    as NVML gives them for the GPU.
    """
    name: str
    model: str
    device_id: str
    cuda_capability: tuple
    mode: str             # MIG or VGPU
    vgpu_types: tuple = ()  # ((type name, fraction of the GPU), ...)
    clique_size: int = 0  # GPUs per NVLink clique, 0 when PCIe only
    memory_gib: int = 80
    # MIG kinds: the time-sliced type that owns a MIG-off GPU's whole
    # framebuffer (one instance per GPU, so it gets NVLink P2P).
    mig_off_type: str = ''

    @property
    def whole_slice(self):
        if self.mode == MIG:
            return self.mig_off_type
        return self.vgpu_types[-1][0]

    def slice_for(self, gpu_milli):
        """The slice name holding ``gpu_milli`` of one GPU; on MIG kinds
        a whole GPU is a MIG-off GPU, a fraction a MIG profile.
        """
        if self.mode == MIG:
            if gpu_milli >= 1000 - 1e-9:
                return self.mig_off_type
            slices = math.ceil(MIG_SLICES * gpu_milli / 1000.0 - 1e-9)
            for profile, (count, _, _) in MIG_GEOMETRY.items():
                if count >= slices:
                    return profile
        for name, fraction in self.vgpu_types:
            if fraction * 1000 >= gpu_milli - 1e-9:
                return name
        raise LayoutError('%d milli-GPU fits no slice of %s'
                          % (gpu_milli, self.name))

    def is_mig_profile(self, slice_name):
        return self.mode == MIG and slice_name != self.mig_off_type

    def resource_class(self, slice_name):
        if self.is_mig_profile(slice_name):
            return placement_traits.mig_resource_class(slice_name)
        return placement_traits.vgpu_resource_class(slice_name)


def _vgpu(prefix, sizes):
    # sizes in GiB for 1/8, 1/4, 1/2 and the whole framebuffer.
    return tuple(('%s-%dQ' % (prefix, size), fraction)
                 for size, fraction in zip(sizes, (0.125, 0.25, 0.5, 1.0)))


KINDS = {
    # NVIDIA's vGPU type names: A100DX for the HGX A100 80GB, H100XM for
    # the HGX H100 80GB (recorded on the hgx-h100 reference host).
    'a100-80gb-mig': Kind('a100-80gb-mig', 'NVIDIA A100-SXM4-80GB', '20b2',
                          (8, 0), MIG, clique_size=8,
                          mig_off_type='A100DX-80C'),
    'h100-80gb-mig': Kind('h100-80gb-mig', 'NVIDIA H100 80GB HBM3', '2330',
                          (9, 0), MIG, clique_size=8,
                          mig_off_type='H100XM-80C'),
    'v100-32gb-vgpu': Kind('v100-32gb-vgpu', 'Tesla V100-SXM2-32GB', '1db5',
                           (7, 0), VGPU, _vgpu('V100DX', (4, 8, 16, 32)),
                           clique_size=4, memory_gib=32),
    'v100-16gb-vgpu': Kind('v100-16gb-vgpu', 'Tesla V100-SXM2-16GB', '1db1',
                           (7, 0), VGPU, _vgpu('V100X', (2, 4, 8, 16)),
                           clique_size=4, memory_gib=16),
    't4-vgpu': Kind('t4-vgpu', 'Tesla T4', '1eb8', (7, 5), VGPU,
                    _vgpu('T4', (2, 4, 8, 16)), memory_gib=16),
    'p100-vgpu': Kind('p100-vgpu', 'Tesla P100-PCIE-16GB', '15f8', (6, 0),
                      VGPU, _vgpu('P100', (2, 4, 8, 16)), memory_gib=16),
    'a10-vgpu': Kind('a10-vgpu', 'NVIDIA A10', '2236', (8, 6), VGPU,
                     _vgpu('A10', (3, 6, 12, 24)), memory_gib=24),
}

TRACE_MODELS = {
    'G2': 'a100-80gb-mig',
    'G3': 'h100-80gb-mig',
    'V100M32': 'v100-32gb-vgpu',
    'V100M16': 'v100-16gb-vgpu',
    'T4': 't4-vgpu',
    'P100': 'p100-vgpu',
    'A10': 'a10-vgpu',
}


@dataclasses.dataclass(frozen=True)
class SliceSet:
    """The units of one slice kind on one GPU: one Placement provider.

    ``share`` is the fraction of the GPU one unit takes, computed as the
    scheduler's GPU view does (MIG: compute slices over the layout's).
    """
    name: str
    resource_class: str
    count: int
    share: float


@dataclasses.dataclass(frozen=True)
class FleetGpu:
    address: str
    layout: str
    slices: tuple          # (SliceSet, ...)
    clique: str | None
    numa_node: int


@dataclasses.dataclass(frozen=True)
class FleetHost:
    name: str
    kind: Kind
    cpu_milli: int
    memory_mib: int
    gpus: tuple            # (FleetGpu, ...)


@dataclasses.dataclass
class Fleet:
    hosts: list

    @property
    def gpu_count(self):
        return sum(len(h.gpus) for h in self.hosts)

    def kinds(self):
        """``{kind name: GPUs}`` of the fleet."""
        counts = collections.Counter()
        for host in self.hosts:
            counts[host.kind.name] += len(host.gpus)
        return dict(counts)

    def summary(self):
        layouts = collections.Counter(
            (host.kind.name, gpu.layout)
            for host in self.hosts for gpu in host.gpus)
        return {'hosts': len(self.hosts), 'gpus': self.gpu_count,
                'layouts': {'%s/%s' % key: n
                            for key, n in sorted(layouts.items())}}


def gpu_address(index):
    return '0000:%02x:00.0' % (0x10 + index * 0x08)


def mig_instances(layout):
    """``((profile, start), ...)`` of a layout given by name
    (:data:`MIG_LAYOUTS`) or as such a tuple, checked.
    """
    if isinstance(layout, str):
        return MIG_LAYOUTS[layout]
    check_mig_layout(layout)
    return tuple(layout)


def layout_slices(kind, layout):
    """``(SliceSet, ...)`` of one GPU of ``kind`` laid out as ``layout``
    (a MIG layout, see :func:`mig_instances`, :data:`MIG_OFF`, or a vGPU
    type name).
    """
    if kind.mode == MIG and layout == MIG_OFF:
        name = kind.mig_off_type
        return (SliceSet(name, kind.resource_class(name), 1, 1.0),)
    if kind.mode == MIG:
        counts = collections.Counter(p for p, _ in mig_instances(layout))
        total = sum(MIG_GEOMETRY[p][0] * n for p, n in counts.items())
        return tuple(
            SliceSet(p, kind.resource_class(p), n, MIG_GEOMETRY[p][0] / total)
            for p, n in sorted(counts.items()))
    fraction = dict(kind.vgpu_types)[layout]
    count = int(round(1 / fraction))
    return (SliceSet(layout, kind.resource_class(layout), count,
                     1.0 / count),)


def layout_names(kind):
    """The kind's layouts, whole GPUs first."""
    if kind.mode == MIG:
        return (MIG_OFF,) + tuple(MIG_LAYOUTS)
    return tuple(reversed([name for name, _ in kind.vgpu_types]))


def make_host(name, kind, cpu_milli, memory_mib, layouts):
    """A host of ``kind`` whose GPUs have ``layouts`` (one per GPU).

    GPUs are numbered as the drivers number them: NUMA node 0 for the
    first half, NVLink cliques ``0, 1, ...`` of ``kind.clique_size`` GPUs
    in PCI address order.
    """
    gpus = []
    half = max(1, len(layouts) // 2)
    for index, layout in enumerate(layouts):
        clique = None
        if kind.clique_size and len(layouts) > 1:
            clique = str(index // kind.clique_size)
        gpus.append(FleetGpu(
            address=gpu_address(index),
            layout=layout if isinstance(layout, str) else ','.join(
                '%s@%d' % instance for instance in layout),
            slices=layout_slices(kind, layout), clique=clique,
            numa_node=0 if index < half else 1))
    return FleetHost(name=name, kind=kind, cpu_milli=cpu_milli,
                     memory_mib=memory_mib, gpus=tuple(gpus))


# --- the drivers' view of a host ---------------------------------------------

def host_inventory(host):
    """The :class:`~cyborg_gpu_drivers.inventory.HostInventory` the
    NVIDIA drivers report for ``host``: their own slice and trait builders
    over the facts NVML would give, one SR-IOV VF per unit. A GPU laid out
    :data:`ON_DEMAND` (MIG) also carries the on-demand trait; a
    :data:`MIG_OFF` GPU is reported as the vGPU driver reports it.
    """
    return inventory.HostInventory(
        hostname=host.name,
        gpus=[_inventory_gpu(host.kind, index, gpu)
              for index, gpu in enumerate(host.gpus)])


def _inventory_gpu(kind, index, gpu):
    device = nvml_adapter.Device(
        index=index, handle=None, address=gpu.address, name=kind.model,
        device_id=kind.device_id, memory_mib=kind.memory_gib * 1024,
        cuda_capability=kind.cuda_capability)
    traits = nvidia_common.gpu_traits(device, gpu.numa_node)
    if kind.mode == MIG and gpu.layout == ON_DEMAND:
        traits.append(placement_traits.mig_on_demand_trait(MIG_SLICES))
    vfs = iter(_vf_addresses(gpu.address))
    slices = []
    for slice_set in gpu.slices:
        handles = [inventory.AttachHandle(inventory.PCI, next(vfs))
                   for _ in range(slice_set.count)]
        if kind.is_mig_profile(slice_set.name):
            count, size, starts = MIG_GEOMETRY[slice_set.name]
            profile = nvml_adapter.GpuInstanceProfile(
                id=MIG_PROFILE_IDS[slice_set.name], name=slice_set.name,
                slice_count=count, instance_count=len(starts),
                memory_mib=placement_traits.mig_profile_framebuffer_gb(
                    slice_set.name) * 1024,
                placements=tuple((start, size) for start in starts))
            slices.append(nvidia_common.mig_slice(profile, handles))
        else:
            # A GPU holds ``count`` instances of its type at most.
            name = vgpu_types.parse_type_name(slice_set.name)
            facts = nvidia_common.TypeFacts(
                name, name.framebuffer_gb * 1024, slice_set.count)
            slices.append(nvidia_common.vgpu_slice(
                facts, handles, mixed_size=False,
                clique=None if gpu.clique is None else int(gpu.clique)))
    return inventory.Gpu(
        address=gpu.address, vendor_id=nvidia_common.NVIDIA_VENDOR_ID,
        device_id=kind.device_id, model=kind.model,
        memory_mib=kind.memory_gib * 1024, numa_node=gpu.numa_node,
        link_domain=gpu.clique, traits=traits, slices=slices)


def _vf_addresses(address):
    # The VFs of a GPU follow it on its bus, eight functions a device.
    domain, bus, _ = address.split(':', 2)
    for number in range(1, 32 * 8):
        yield '%s:%s:%02x.%d' % (domain, bus, number // 8, number % 8)


# --- requests -------------------------------------------------------------

def kinds_for(task, kind_names):
    """Kinds (of ``kind_names``) whose GPUs a task may use."""
    allowed = kind_names
    if task.gpu_spec:
        wanted = {TRACE_MODELS.get(model) for model in task.gpu_spec}
        allowed = [k for k in kind_names if k in wanted]
    if task.num_gpu > 1:
        allowed = [k for k in allowed
                   if KINDS[k].clique_size >= task.num_gpu]
    return list(allowed)


def gpu_groups(task, kind):
    """``[(resource class, units), ...]``, one per request group."""
    if task.num_gpu == 0:
        return []
    if task.num_gpu == 1:
        name = kind.slice_for(task.gpu_milli)
        return [(kind.resource_class(name), 1)]
    rc = kind.resource_class(kind.whole_slice)
    return [(rc, 1)] * task.num_gpu


def slice_share(kind, slice_name):
    """GPU share of one unit in the layout a task of it would use."""
    if kind.is_mig_profile(slice_name):
        return MIG_GEOMETRY[slice_name][0] / MIG_SLICES
    if slice_name == kind.mig_off_type:
        return 1.0
    return dict(kind.vgpu_types)[slice_name]


# --- rows set aside ---------------------------------------------------------

class SetAside:
    """Rows of a trace the simulator cannot place by design, by reason,
    with their file lines: counted and reported, never silently dropped.
    """

    SHOWN_LINES = 5

    def __init__(self):
        self.lines = collections.defaultdict(list)

    def add(self, reason, line):
        self.lines[reason].append(line)

    @property
    def total(self):
        return sum(len(lines) for lines in self.lines.values())

    def describe(self):
        return '; '.join('%d: %s' % (len(lines), reason)
                         for reason, lines in sorted(self.lines.items()))

    def to_dict(self):
        return {'total': self.total, 'reasons': {
            reason: {'count': len(lines),
                     'lines': sorted(lines)[:self.SHOWN_LINES]}
            for reason, lines in sorted(self.lines.items())}}


def split_nodes(nodes):
    """``(usable nodes, SetAside)``: a node without GPUs or of a GPU
    model no host kind models (:data:`TRACE_MODELS`) is set aside.
    """
    usable = []
    set_aside = SetAside()
    for node in nodes:
        if node.gpus == 0:
            set_aside.add('no GPU', node.line)
        elif node.model not in TRACE_MODELS:
            set_aside.add('GPU model %r not modelled (modelled: %s)' % (
                node.model, ', '.join(sorted(TRACE_MODELS))), node.line)
        else:
            usable.append(node)
    return usable, set_aside


def split_trace(tasks, nodes=None, fleet=None):
    """``(usable nodes, placeable tasks, set aside)`` of a trace run on
    its ``nodes`` or on ``fleet``; ``set aside`` is ``{'nodes': ...,
    'tasks': ...}`` (:meth:`SetAside.to_dict`). LayoutError when no node
    is usable.
    """
    nodes_aside = SetAside()
    if fleet is None:
        nodes, nodes_aside = split_nodes(nodes)
        if not nodes:
            raise LayoutError('no node with a modelled GPU (%s)'
                              % nodes_aside.describe())
    tasks, tasks_aside = split_tasks(
        tasks, host_shapes(fleet.hosts if fleet else nodes))
    return nodes, tasks, {'nodes': nodes_aside, 'tasks': tasks_aside}


def host_shapes(hosts):
    """``{(kind name, GPUs, cpu_milli, memory_mib), ...}`` of fleet
    hosts or of usable trace nodes: what :func:`split_tasks` checks.
    """
    shapes = set()
    for host in hosts:
        if isinstance(host, FleetHost):
            shapes.add((host.kind.name, len(host.gpus), host.cpu_milli,
                        host.memory_mib))
        else:
            shapes.add((TRACE_MODELS[host.model], host.gpus, host.cpu_milli,
                        host.memory_mib))
    return shapes


def split_tasks(tasks, shapes):
    """``(placeable tasks, SetAside)``: a task no host of ``shapes``
    (:func:`host_shapes`) could hold even when empty is set aside: it
    asks for nothing, its GPU models are on no host, it asks more GPUs
    than a host or an NVLink clique of them has, or more CPU or memory
    than any host of the kinds it may use.
    """
    kinds = sorted({shape[0] for shape in shapes})
    placeable = []
    set_aside = SetAside()
    for task in tasks:
        reason = None
        allowed = kinds_for(task, kinds) if task.num_gpu else kinds
        if not (task.num_gpu or task.cpu_milli or task.memory_mib):
            # Placement has no empty request: nothing to place.
            reason = 'asks for no CPU, memory or GPU'
        elif task.num_gpu and task.gpu_spec and not kinds_for(
                dataclasses.replace(task, num_gpu=1), kinds):
            reason = 'GPU model %s on no host of the fleet' % '|'.join(
                task.gpu_spec)
        elif task.num_gpu and not any(
                shape[0] in allowed and shape[1] >= task.num_gpu
                for shape in shapes):
            reason = ('more GPUs than any host or NVLink clique of its GPU '
                      'models has')
        elif not any(shape[0] in allowed and shape[1] >= task.num_gpu
                     and shape[2] >= task.cpu_milli
                     and shape[3] >= task.memory_mib for shape in shapes):
            reason = 'more CPU or memory than any host of its GPU models'
        if reason:
            set_aside.add(reason, task.line)
        else:
            placeable.append(task)
    return placeable, set_aside


# --- layout planning --------------------------------------------------------

def demand_by_kind(tasks, kind_gpus):
    """Expected units of each slice per kind: a task's demand is split
    over the kinds it may use, in proportion to their GPUs.
    """
    demand = collections.defaultdict(collections.Counter)
    names = sorted(kind_gpus)
    for task in tasks:
        if task.num_gpu == 0:
            continue
        allowed = kinds_for(task, names)
        total = sum(kind_gpus[k] for k in allowed)
        for name in allowed:
            kind = KINDS[name]
            weight = kind_gpus[name] / total
            if task.num_gpu == 1:
                demand[name][kind.slice_for(task.gpu_milli)] += weight
            else:
                demand[name][kind.whole_slice] += weight * task.num_gpu
    return demand


def _gpus_per_layout(kind, units):
    """GPUs of each layout to serve ``units`` ({slice: count})."""
    if kind.mode == VGPU:
        fractions = dict(kind.vgpu_types)
        return {name: units.get(name, 0) * fractions[name]
                for name in fractions}
    need = {MIG_OFF: units.get(kind.mig_off_type, 0),
            'whole': units.get('7g.80gb', 0),
            '4g-3g': units.get('4g.40gb', 0)}
    need['3g-x2'] = max(0.0, units.get('3g.40gb', 0) - need['4g-3g']) / 2
    need['2g-x3-1g'] = units.get('2g.20gb', 0) / 3
    need['all-1g'] = max(0.0, units.get('1g.10gb', 0)
                         - need['2g-x3-1g']) / 7
    return need


def plan_layouts(kind, gpus, units):
    """``gpus`` layout names, in proportion to the demand ``units``,
    largest layouts first (largest remainder rounding).
    """
    need = _gpus_per_layout(kind, units)
    total = sum(need.values())
    order = layout_names(kind)
    if total <= 0:
        return [order[0]] * gpus
    exact = {name: need.get(name, 0) * gpus / total for name in order}
    counts = {name: int(exact[name]) for name in order}
    rest = gpus - sum(counts.values())
    for name in sorted(order, key=lambda n: exact[n] - counts[n],
                       reverse=True)[:rest]:
        counts[name] += 1
    return [name for name in order for _ in range(counts[name])]


def build_from_nodes(nodes, tasks=(), scale=1.0, seed=0):
    """A fleet from trace nodes; ``scale`` < 1 keeps that share of the
    nodes of each (model, GPUs) group, chosen with ``seed``.
    """
    chosen = nodes
    if scale < 1.0:
        rng = random.Random(seed)
        groups = collections.defaultdict(list)
        for node in nodes:
            groups[(node.model, node.gpus)].append(node)
        chosen = []
        for key in sorted(groups):
            members = groups[key]
            keep = max(1, int(round(len(members) * scale)))
            chosen.extend(rng.sample(members, keep))
        chosen.sort(key=lambda n: n.name)
    kind_gpus = collections.Counter()
    for node in chosen:
        kind_gpus[TRACE_MODELS[node.model]] += node.gpus
    demand = demand_by_kind(tasks, kind_gpus)
    layouts = {name: plan_layouts(KINDS[name], count, demand[name])
               for name, count in kind_gpus.items()}
    # Largest hosts take the largest layouts, so whole GPUs sit together
    # where multi-GPU tasks need a clique of them.
    hosts = []
    for node in sorted(chosen, key=lambda n: (-n.gpus, n.name)):
        kind_name = TRACE_MODELS[node.model]
        mine, layouts[kind_name] = (layouts[kind_name][:node.gpus],
                                    layouts[kind_name][node.gpus:])
        hosts.append(make_host(node.name, KINDS[kind_name], node.cpu_milli,
                               node.memory_mib, mine))
    hosts.sort(key=lambda h: h.name)
    return Fleet(hosts=hosts)


def parse_fleet_spec(text):
    """``KIND:LAYOUT:GPUS:HOSTS[,...]`` (``LAYOUT`` a MIG layout or vGPU
    type, or ``mixed`` to cycle through them) into a fleet of hosts with
    96 cores and 512 GiB each.
    """
    hosts = []
    for index, part in enumerate(p for p in text.split(',') if p.strip()):
        fields = part.strip().split(':')
        if len(fields) != 4:
            raise LayoutError('fleet entry %r is not KIND:LAYOUT:GPUS:HOSTS'
                              % part)
        kind_name, layout, gpus, count = fields
        if kind_name not in KINDS:
            raise LayoutError('unknown kind %r; known: %s'
                              % (kind_name, ', '.join(sorted(KINDS))))
        kind = KINDS[kind_name]
        names = layout_names(kind)
        if layout != 'mixed' and layout not in names:
            raise LayoutError('unknown layout %r for %s; known: mixed, %s'
                              % (layout, kind_name, ', '.join(names)))
        try:
            gpus, count = int(gpus), int(count)
        except ValueError:
            raise LayoutError('GPUS and HOSTS of %r must be integers' % part)
        if not 1 <= gpus <= MAX_GPUS_PER_HOST:
            raise LayoutError('GPUS of %r must be 1 to %d'
                              % (part, MAX_GPUS_PER_HOST))
        if count < 1:
            raise LayoutError('HOSTS of %r must be at least 1' % part)
        if len(hosts) + count > MAX_FLEET_HOSTS:
            raise LayoutError(
                'the fleet would have %d hosts, more than %d; the simulator '
                'keeps every host in memory and replays tasks one by one, '
                'so larger fleets would run for days' % (
                    len(hosts) + count, MAX_FLEET_HOSTS))
        for number in range(count):
            if layout == 'mixed':
                per_gpu = [names[i % len(names)] for i in range(gpus)]
            else:
                per_gpu = [layout] * gpus
            hosts.append(make_host('%s-%d-%03d' % (kind_name, index, number),
                                   kind, 96000, 512 * 1024, per_gpu))
    if not hosts:
        raise LayoutError('empty fleet')
    return Fleet(hosts=hosts)
