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
"""On-demand partitioning in the simulator: MIG instances created when a
claim lands and destroyed when it is released (the driver's default
``[nvidia_mig] idle_instances = destroy``), time-sliced vGPU types that
follow demand while a GPU is idle, and the fleets and bound the
``--dynamic`` benchmark compares against.

The Placement model is the one the drivers run
(``doc/source/dynamic-partitioning.rst``), in its sequential form (the
simulator claims one request at a time): each GPU offers every profile
(MIG) or every type (vGPU) in a provider of its own, and after every
claim and release the agents set each inventory:

* MIG: the MIG driver's offer (``[nvidia_mig] mode = on_demand``), from
  the driver's own functions in :mod:`cyborg_gpu_drivers.mig_geometry`:
  a GPU in use offers :func:`~cyborg_gpu_drivers.mig_geometry.offer`
  (its instances, then its last offer as far as it still fits, then the
  most popular profiles per unit while the whole offer stays placeable);
  a host's idle GPUs spread the profiles between them with
  :func:`~cyborg_gpu_drivers.mig_geometry.spread`. Every profile of the
  kind is allowed; the popularity is :func:`slice_weights`. A claimed
  instance goes to the start
  :func:`~cyborg_gpu_drivers.mig_geometry.choose_start` picks, keeping
  the rest of the GPU's offer placeable, as the driver's
  ``prepare_unit`` does.
* vGPU: the vGPU driver's ``[nvidia_vgpu] type_mode = follow_demand``.
  Each GPU offers one type; :func:`allowed_types` are the operator's
  ``allowed_types``, every type of the kind, the most GPU share of the
  typical requests first (the popularity the MIG offers use). A GPU
  first takes the first allowed type
  (:func:`~cyborg_gpu_drivers.vgpu_types.new_gpu_type`); each pass of a
  host's agent then makes the one move
  :func:`cyborg_gpu_drivers.retype.plan` gives over the host's use
  (:func:`~cyborg_gpu_drivers.vgpu_types.type_use`), with the driver's
  ``[gpu_partitions] follow_demand_high``, ``follow_demand_low`` and
  ``follow_demand_hold_seconds``; only an idle GPU moves. The agents
  have run long before the first arrival: each idle host's moves are
  made and no hold runs then.

The simulator has no clock (nothing arrives at a time in the arrivals
protocol; replay's times are not passed down), so time is counted in
events: each claim or release is one agent pass interval
(:data:`AGENT_PASS_SECONDS`, Cyborg's default), after which every vGPU
host's agent makes one pass, and a hold of 600 s lasts ten events. That
is the driver when the fleet's claims and releases come one per pass
interval. With more events per interval the driver reacts later and
holds GPUs for more events than the model: the model is then the more
flexible; with fewer, the driver makes a chain of moves (a wanted type,
then covering the type given away) before the next claim where the
model makes one per event, and its holds end sooner: the model is then
the less flexible. MIG offers are set at once after each event, with no
pass interval.

The plugins and the policies are the ones of the static runs; only the
Placement under them changes.
"""

import collections
import dataclasses

from oslo_config import cfg

from cyborg_gpu_drivers import conf  # noqa: F401  (follow_demand_*)
from cyborg_gpu_drivers import mig_geometry as geometry
from cyborg_gpu_drivers import retype
from cyborg_gpu_drivers import vgpu_types
from gpu_partitions.simulator import fleet as fleet_mod
from gpu_partitions.simulator import placement as placement_mod
from gpu_partitions.simulator import run as run_mod

#: The profiles an on-demand MIG GPU may be split into: all of them.
ALLOWED = tuple(fleet_mod.MIG_TABLE)
#: Seconds between two passes of a Cyborg agent: Cyborg's
#: ``[DEFAULT] periodic_interval`` default, the simulator's clock tick.
AGENT_PASS_SECONDS = 60


def on_demand_fleet(fleet):
    """``fleet`` with every GPU offering all the slices its kind can make
    (each at its count on an empty GPU) instead of one layout, except
    MIG-off GPUs: the MIG driver cannot switch MIG mode, so they keep
    their full-size time-sliced type (the whole GPUs multi-GPU tasks
    need, with the NVLink clique MIG-backed slices lack).
    """
    hosts = []
    for host in fleet.hosts:
        slices = _all_slices(host.kind)
        gpus = tuple(gpu if gpu.layout == fleet_mod.MIG_OFF
                     else dataclasses.replace(gpu, layout=fleet_mod.ON_DEMAND,
                                              slices=slices)
                     for gpu in host.gpus)
        hosts.append(dataclasses.replace(host, gpus=gpus))
    return fleet_mod.Fleet(hosts=hosts)


def _all_slices(kind):
    if kind.mode == fleet_mod.MIG:
        return tuple(
            fleet_mod.SliceSet(profile, kind.resource_class(profile),
                               len(starts), count / fleet_mod.MIG_SLICES)
            for profile, (count, _, starts)
            in fleet_mod.MIG_GEOMETRY.items())
    return tuple(
        fleet_mod.SliceSet(name, kind.resource_class(name),
                           int(round(1 / fraction)), fraction)
        for name, fraction in kind.vgpu_types)


@dataclasses.dataclass
class _Gpu:
    kind: fleet_mod.Kind
    providers: dict        # slice name -> provider uuid
    counts: dict           # slice name -> units on an empty GPU
    instances: dict = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list))
    offer: dict = dataclasses.field(default_factory=dict)  # MIG: last
    vgpu_type: str = ''    # vGPU: the one type offered
    changed_at: float = 0  # vGPU: when its agent last moved it
    clique: str | None = None  # NVLink clique, None when PCIe only

    def mig_instances(self):
        return [i for mine in self.instances.values() for i in mine]


def allowed_types(kind, weights=None):
    """The vGPU types of ``kind`` as an operator lists them in
    ``[nvidia_vgpu] allowed_types``: every one, the most GPU share of
    the typical requests (``weights``, ``{type: units}``) first, ties and
    no weights the whole GPU first. The first is what a new GPU hosts.
    """
    fractions = dict(kind.vgpu_types)
    names = fleet_mod.layout_names(kind)
    weights = weights or {}
    return tuple(sorted(names, key=lambda name: (
        -weights.get(name, 0) * fractions[name], names.index(name))))


class OnDemandPlacement(placement_mod.InMemoryPlacement):
    """:class:`.placement.InMemoryPlacement` whose GPU inventories follow
    the instances created (see the module's docstring). ``weights``:
    ``{kind name: {slice name: popularity}}`` of the typical requests.
    """

    def __init__(self, fleet, weights=None):
        self.fleet = on_demand_fleet(fleet)
        super().__init__(placement_mod.fleet_providers(self.fleet))
        self.weights = weights or {}
        self._gpus = {}
        self._hosts = collections.defaultdict(list)   # MIG GPUs per host
        self._vgpu_hosts = collections.defaultdict(list)
        for host in self.fleet.hosts:
            for gpu in host.gpus:
                if gpu.layout != fleet_mod.ON_DEMAND:
                    continue    # MIG off: a fixed layout
                providers = {s.name: self._rp(host, gpu, s.name)
                             for s in gpu.slices}
                key = (host.name, gpu.address)
                self._gpus[key] = _Gpu(host.kind, providers,
                                       {s.name: s.count for s in gpu.slices},
                                       clique=gpu.clique)
                if host.kind.mode == fleet_mod.MIG:
                    self._hosts[host.name].append(key)
                else:
                    self._vgpu_hosts[host.name].append(key)
        self._gpu_of = {rp: key for rp, _, key, _
                        in run_mod.slice_providers(self.fleet)
                        if key in self._gpus}
        # Pure functions of the kind (and of the instances): computed once.
        self._idle_offers = {}
        self._offer_memo = {}
        for host in self._hosts:
            self._plan(host)
        options = cfg.CONF.gpu_partitions
        self._high = options.follow_demand_high
        self._low = options.follow_demand_low
        self._hold = options.follow_demand_hold_seconds
        self._allowed = {
            kind.name: allowed_types(kind, self.weights.get(kind.name))
            for kind in {host.kind for host in self.fleet.hosts
                         if host.kind.mode == fleet_mod.VGPU}}
        self._clock = 0     # seconds: one agent pass per claim or release
        self._due = {}      # vGPU host -> when its next pass may move one
        for host in self._vgpu_hosts:
            self._start_vgpus(host)

    @staticmethod
    def _rp(host, gpu, name):
        import placement_traits
        return placement_mod.provider_uuid(placement_traits.provider_name(
            host.name, gpu.address, name))

    def slice_providers(self):
        """What :class:`.run.FleetState` measures shares with."""
        return run_mod.slice_providers(self.fleet)

    def claim(self, consumer, allocation_request):
        if not super().claim(consumer, allocation_request):
            return False
        touched = set()
        for rp, alloc in allocation_request['allocations'].items():
            key = self._gpu_of.get(rp)
            if key is None:
                continue
            gpu = self._gpus[key]
            name = _slice_of(gpu, rp)
            for _ in range(sum(alloc['resources'].values())):
                self._create(gpu, consumer, name)
            self._refresh(key, gpu)
            touched.add(key[0])
        self._agent_passes(touched)
        return True

    def release(self, consumer):
        if consumer not in self.consumers:
            return
        touched = {self._gpu_of[rp] for rp in self.consumers[consumer]
                   if rp in self._gpu_of}
        super().release(consumer)
        for key in sorted(touched):
            gpu = self._gpus[key]
            gpu.instances.pop(consumer, None)
            self._refresh(key, gpu)
        self._agent_passes({key[0] for key in touched})

    def instances(self):
        """``{(host, GPU address): [(slice, start or None), ...]}`` of
        the GPUs in use.
        """
        return {key: sorted(gpu.mig_instances())
                for key, gpu in self._gpus.items() if gpu.mig_instances()}

    def offers(self):
        """``{(host, GPU address): {profile: units}}``: what each MIG GPU
        offers now.
        """
        return {key: dict(gpu.offer) for key, gpu in self._gpus.items()
                if gpu.kind.mode == fleet_mod.MIG}

    def vgpu_types(self):
        """``{(host, GPU address): type}``: what each vGPU GPU offers."""
        return {key: gpu.vgpu_type for key, gpu in self._gpus.items()
                if gpu.kind.mode == fleet_mod.VGPU}

    def _create(self, gpu, consumer, name):
        if gpu.kind.mode != fleet_mod.MIG:
            gpu.instances[consumer].append((name, None))
            return
        existing = gpu.mig_instances()
        # The rest of the offer stays placeable (the driver's
        # prepare_unit).
        rest = collections.Counter(gpu.offer)
        rest.subtract(collections.Counter(n for n, _ in existing))
        rest[name] -= 1
        start = geometry.choose_start(
            fleet_mod.MIG_TABLE, existing, name,
            self.weights.get(gpu.kind.name), keep=list((+rest).elements()))
        if start is None:
            # The inventory offered only what fits; reaching this is a
            # bug of the model, never a state to paper over.
            raise RuntimeError('%s claimed on a GPU where it no longer '
                               'fits: %s' % (name, existing))
        gpu.instances[consumer].append((name, start))

    def _refresh(self, key, gpu):
        """The MIG agent's inventory update after a creation or deletion
        (a vGPU GPU keeps its type: only an agent pass moves it).
        """
        if gpu.kind.mode == fleet_mod.MIG:
            self._plan(key[0])

    # --- vGPU types that follow demand ----------------------------------

    def _start_vgpus(self, host):
        """``host``'s agent has run long before the first arrival: each
        GPU took the first allowed type, the policy made its moves on the
        idle host, one per pass, and their holds have run out.
        """
        for key in self._vgpu_hosts[host]:
            gpu = self._gpus[key]
            gpu.vgpu_type = vgpu_types.new_gpu_type(
                self._allowed[gpu.kind.name])
            gpu.changed_at = -self._hold
            self._set(gpu, self._vgpu_offer(gpu))
        # Moved GPUs are held: a pass per GPU makes every move (and ends
        # where options without a hold would have GPUs flap).
        for _ in self._vgpu_hosts[host]:
            if self._agent_pass(host) is None:
                break
        for key in self._vgpu_hosts[host]:
            self._gpus[key].changed_at = -self._hold

    def _agent_passes(self, touched):
        """One agent pass interval, after a claim or a release: every
        vGPU host's agent makes its pass. A host that had no event since
        a pass that moved nothing is passed over until a hold runs out:
        its plan would be the same.
        """
        self._clock += AGENT_PASS_SECONDS
        for host in touched:
            if host in self._vgpu_hosts:
                self._due[host] = self._clock
        for host, due in list(self._due.items()):
            if due > self._clock:
                continue
            if self._agent_pass(host) is not None:
                self._due[host] = self._clock + AGENT_PASS_SECONDS
                continue
            held = [gpu.changed_at + self._hold
                    for gpu in map(self._gpus.get, self._vgpu_hosts[host])
                    if gpu.changed_at + self._hold > self._clock]
            if held:
                self._due[host] = min(held)
            else:
                del self._due[host]

    def _agent_pass(self, host):
        """The vGPU driver's pass on ``host`` (``type_mode =
        follow_demand``): the one move :func:`retype.plan` makes, or None.
        """
        keys = self._vgpu_hosts[host]
        move = retype.plan(
            [vgpu_types.type_use(
                address, gpu.vgpu_type, self._allowed[gpu.kind.name],
                gpu.counts[gpu.vgpu_type], _units_used(gpu),
                gpu.changed_at, gpu.clique)
             for (_, address), gpu in zip(keys, map(self._gpus.get, keys))],
            self._clock, self._high, self._low, self._hold)
        if move is None:
            return None
        gpu = self._gpus[(host, move.address)]
        if _units_used(gpu):
            # The policy moves idle GPUs only; reaching this is a bug of
            # the model.
            raise RuntimeError('GPU %s of %s moved with vGPUs in use'
                               % (move.address, host))
        gpu.vgpu_type = next(name for name in self._allowed[gpu.kind.name]
                             if vgpu_types.policy_name(name) == move.new)
        gpu.changed_at = self._clock
        self._set(gpu, self._vgpu_offer(gpu))
        return move

    @staticmethod
    def _vgpu_offer(gpu):
        return {name: count if name == gpu.vgpu_type else 0
                for name, count in gpu.counts.items()}

    def _plan(self, host):
        """The MIG driver's scan of ``host``: each GPU's own offer, then
        the idle GPUs' offers spread across them.
        """
        idle, covered = {}, set()
        for key in self._hosts[host]:
            gpu = self._gpus[key]
            existing = gpu.mig_instances()
            # Every claim has its instance at once: claimed == existing.
            claimed = collections.Counter(name for name, _ in existing)
            gpu.offer = self._offer(gpu.kind.name, existing, claimed,
                                    gpu.offer)
            if existing:
                covered.update(name for name, count in gpu.offer.items()
                               if count > claimed[name])
            else:
                idle[key[1]] = key
        if idle:
            facts = {address: self._facts(self._gpus[key].kind.name)
                     for address, key in idle.items()}
            plan = geometry.spread(
                facts, {address: self._gpus[key].offer
                        for address, key in idle.items()},
                covered, {address: self._idle_choices(
                    self._gpus[key].kind.name)
                    for address, key in idle.items()})
            for address, key in idle.items():
                self._gpus[key].offer = plan[address]
        for key in self._hosts[host]:
            gpu = self._gpus[key]
            self._set(gpu, {name: gpu.offer.get(name, 0)
                            for name in gpu.providers})

    def _facts(self, kind_name):
        return (fleet_mod.MIG_TABLE, ALLOWED, self.weights.get(kind_name))

    def _offer(self, kind_name, existing, claimed, previous):
        memo = (kind_name, tuple(sorted(existing)),
                tuple(sorted(claimed.items())),
                tuple(sorted((previous or {}).items())))
        if memo not in self._offer_memo:
            table, allowed, weights = self._facts(kind_name)
            self._offer_memo[memo] = geometry.offer(
                table, existing, claimed, allowed, weights, previous)
        return dict(self._offer_memo[memo])

    def _idle_choices(self, kind_name):
        if kind_name not in self._idle_offers:
            self._idle_offers[kind_name] = geometry.idle_offers(
                *self._facts(kind_name))
        return self._idle_offers[kind_name]

    def _set(self, gpu, totals):
        for name, rp in gpu.providers.items():
            provider = self.providers[rp]
            rc = next(iter(provider.inventories))
            provider.inventories[rc] = totals[name]
            self._summary_cache.pop(rp, None)


def _units_used(gpu):
    return sum(len(mine) for mine in gpu.instances.values())


def _slice_of(gpu, rp):
    for name, uuid in gpu.providers.items():
        if uuid == rp:
            return name
    raise KeyError(rp)


def slice_weights(fleet, tasks):
    """``{kind name: {slice name: expected units}}`` of the trace's
    requests, the popularity the MIG offers and placements keep room for
    (FGD's target workload: the task distribution is known).
    """
    demand = fleet_mod.demand_by_kind(tasks, fleet.kinds())
    return {kind: dict(units) for kind, units in demand.items()}


def placement_factory(fleet, tasks):
    """A :class:`.run.Runner` ``placement_factory`` for on-demand runs."""
    weights = slice_weights(fleet, tasks)
    return lambda fleet: OnDemandPlacement(fleet, weights)


# --- the fleets and the bound of the comparison -----------------------------

def operator_static_fleets(fleet):
    """``{name: fleet}``: ``fleet``'s hosts with layouts an operator
    chooses without the trace. ``whole``: no partitioning (every GPU
    the full-size time-sliced type, MIG off on the MIG kinds).
    ``even-mix``: one layout per host for all its GPUs (as NVIDIA's
    mig-manager applies one configuration per node label), the kind's
    layouts (MIG: MIG off, then the MIG layouts) or types (vGPU) taken in
    turn, largest hosts first, so each is on about as many hosts as the
    others.
    """
    turn = collections.Counter()
    whole, mix = [], []
    for host in sorted(fleet.hosts, key=lambda h: (-len(h.gpus), h.name)):
        names = fleet_mod.layout_names(host.kind)
        layout = names[turn[host.kind.name] % len(names)]
        turn[host.kind.name] += 1
        for hosts, chosen in ((whole, names[0]), (mix, layout)):
            hosts.append(fleet_mod.make_host(
                host.name, host.kind, host.cpu_milli, host.memory_mib,
                [chosen] * len(host.gpus)))
    return {name: fleet_mod.Fleet(hosts=sorted(hosts, key=lambda h: h.name))
            for name, hosts in (('whole', whole), ('even-mix', mix))}


def free_layout_requested(fleet, tasks):
    """Most requested GPU share (FGD's metric) the tasks can take when
    every GPU may take any layout: a linear program over task classes
    and kinds that keeps, per kind and summed over its hosts, the CPU,
    the memory and the GPUs' capacity: MIG compute slices (7 per GPU),
    memory slots (8), instances of each profile (its starts per GPU) and
    4g or 7g instances (at most one per GPU, both need slot 0); vGPU
    framebuffer shares (1 per GPU). Host boundaries, cliques, arrival
    order and integrality are ignored, so no policy, static or on
    demand, can leave less unallocated.
    """
    from scipy import optimize
    from scipy import sparse

    gpus = fleet.kinds()
    cpu = collections.Counter()
    memory = collections.Counter()
    for host in fleet.hosts:
        cpu[host.kind.name] += host.cpu_milli
        memory[host.kind.name] += host.memory_mib
    classes = collections.Counter(
        (t.num_gpu, t.gpu_milli, t.gpu_spec, t.cpu_milli, t.memory_mib)
        for t in tasks if t.num_gpu)
    ordered = sorted(classes)
    rows = {}
    limits = []

    def row(key, limit):
        if key not in rows:
            rows[key] = len(limits)
            limits.append(limit)
        return rows[key]

    for index, key in enumerate(ordered):
        row(('class', index), classes[key])
    entries = []     # (row, column, value)
    gains = []
    for index, (num_gpu, milli, spec, task_cpu, task_memory) in enumerate(
            ordered):
        probe = run_mod._probe_task(num_gpu, milli, spec)
        for kind_name in fleet_mod.kinds_for(probe, sorted(gpus)):
            kind = fleet_mod.KINDS[kind_name]
            count = gpus[kind_name]
            column = len(gains)
            gains.append(milli / 1000.0 if num_gpu == 1 else num_gpu)
            name = (kind.slice_for(milli) if num_gpu == 1
                    else kind.whole_slice)
            uses = [(('class', index), None, 1),
                    (('cpu', kind_name), cpu[kind_name], task_cpu),
                    (('memory', kind_name), memory[kind_name], task_memory)]
            if kind.mode == fleet_mod.MIG:
                # A MIG-off GPU's full-size type takes the whole GPU, as
                # a 7g instance does: one of them per GPU, both counted.
                profile = name if kind.is_mig_profile(name) else '7g.80gb'
                slices, size, starts = fleet_mod.MIG_GEOMETRY[profile]
                uses += [
                    (('slices', kind_name), fleet_mod.MIG_SLICES * count,
                     slices * num_gpu),
                    (('slots', kind_name), fleet_mod.MIG_SLOTS * count,
                     size * num_gpu),
                    (('profile', kind_name, profile), len(starts) * count,
                     num_gpu)]
                if profile in ('4g.40gb', '7g.80gb'):
                    uses.append((('slot0', kind_name), count, num_gpu))
            else:
                uses.append((('share', kind_name), count,
                             fleet_mod.slice_share(kind, name) * num_gpu))
            for key, limit, value in uses:
                entries.append((row(key, limit), column, float(value)))
    if not gains:
        return 0.0
    matrix = sparse.csr_matrix(
        ([v for _, _, v in entries],
         ([r for r, _, _ in entries], [c for _, c, _ in entries])),
        shape=(len(limits), len(gains)))
    result = optimize.linprog(c=[-g for g in gains], A_ub=matrix,
                              b_ub=limits, bounds=(0, None),
                              method='highs')
    if not result.success:
        raise RuntimeError('free-layout bound: %s' % result.message)
    return -result.fun
