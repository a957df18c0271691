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
"""Which idle GPU of a host should change kind, as plain data.

A *kind* is what one GPU offers as a whole: a time-sliced vGPU type
(``L40S-8Q``) or an AMD partition mode. Demand is what a driver can see
honestly on its own host: the units of each kind in use, the larger of
Placement's usage of the provider (claims, also those not bound yet) and
what the hardware shows busy. Requests that found no host (NoValidHost)
reach no driver, so a kind no GPU offers has no measurable demand; it is
offered once (coverage) when another GPU of the donor's kind stays idle
and the donor is not a whole-GPU one of a link domain that is still
whole (see below).

The policy moves at most one GPU per pass, and only a GPU with nothing in
use (unknown counts as in use). Hysteresis keeps kinds from flapping:

* a kind *wants* a GPU when its use ratio reaches ``high``;
* a donor kind gives one only if its ratio without that GPU stays at or
  below ``low`` (< ``high``), so the move cannot at once make the donor
  want it back;
* a GPU changed less than ``hold_seconds`` ago does not move again.

Which GPU moves keeps link domains (NVLink cliques, xGMI hives) whole: a
multi-GPU guest needs the whole-GPU kind (one unit per GPU) on GPUs of
one domain, so the GPU that moves to kind K is the one whose domain
already holds the most GPUs of K (domains grow homogeneous), then, for a
GPU giving up the whole-GPU kind, the one whose domain holds the fewest
GPUs of it still (a domain already broken gives, an intact one stays
whole), then the lowest PCI address. Coverage, a move no demand asks
for, never breaks a domain whose GPUs all hold the whole-GPU kind, so a
host whose cliques are all whole keeps offering the whole-GPU kind only
(in the simulator this took multigpu50 from 10.50% to 9.67%
unallocated; see ``doc/source/simulator.rst``). A GPU of unknown domain
is a domain of its own: no two GPUs are assumed to reach each other, and
PCIe-only hosts cover kinds as before.
"""

import collections
import dataclasses


@dataclasses.dataclass(frozen=True)
class GpuUse:
    """One GPU as the policy sees it.

    ``kind`` is None for a GPU that offers nothing yet; ``units`` the
    units its kind offers; ``used`` the units in use, None when unknown
    (counted as all in use); ``allowed`` the kinds the operator allows it;
    ``changed_at`` when this agent last changed it (None: never);
    ``link_domain`` its NVLink clique or xGMI hive, None when unknown or
    none.
    """
    address: str
    kind: str | None
    allowed: tuple
    units: int
    used: int | None
    changed_at: float | None = None
    link_domain: str | None = None

    @property
    def domain(self):
        """A key shared only by GPUs known to be linked."""
        if self.link_domain is None:
            return (None, self.address)
        return (self.link_domain, None)

    @property
    def busy_units(self):
        return self.units if self.used is None else self.used

    @property
    def idle(self):
        return self.used == 0


@dataclasses.dataclass(frozen=True)
class Move:
    """Give GPU ``address`` kind ``new`` instead of ``old``; ``reason``
    is a sentence for the log.
    """
    address: str
    old: str | None
    new: str
    reason: str


def use_by_kind(gpus):
    """``{kind: (units in use, units offered)}`` over the host's GPUs."""
    use = {}
    for gpu in gpus:
        if gpu.kind is None:
            continue
        used, units = use.get(gpu.kind, (0, 0))
        use[gpu.kind] = (used + gpu.busy_units, units + gpu.units)
    return use


def ratio(used, units):
    """Use ratio; a kind with nothing offered and nothing used is 0."""
    if units <= 0:
        return 0.0 if used <= 0 else float('inf')
    return used / units


def plan(gpus, now, high, low, hold_seconds):
    """The one :class:`Move` to make now, or None.

    Wanted kinds first, the fullest first; then coverage of allowed kinds
    no GPU offers. Among the GPUs that may move, the one that keeps link
    domains whole (see the module's docstring), ties to the lowest PCI
    address, so the plan is the same at every pass for the same data.
    """
    if not low < high:
        raise ValueError('low (%s) must be below high (%s)' % (low, high))
    use = use_by_kind(gpus)
    domains = kinds_by_domain(gpus)
    movable = [gpu for gpu in gpus if gpu.idle and gpu.allowed and (
        gpu.changed_at is None or now - gpu.changed_at >= hold_seconds)]
    wanted = sorted(((ratio(*use[kind]), kind) for kind in use
                     if ratio(*use[kind]) >= high), reverse=True)
    for full, kind in wanted:
        for gpu in _preferred(movable, kind, domains):
            if kind == gpu.kind or kind not in gpu.allowed:
                continue
            left = _donor_ratio(use, gpu)
            if left <= low:
                return Move(gpu.address, gpu.kind, kind, (
                    '%s is %d%% in use (at least %d%%); %s stays at %d%% '
                    'without this GPU (at most %d%%)' % (
                        kind, round(full * 100), round(high * 100),
                        gpu.kind or 'nothing', round(left * 100),
                        round(low * 100))))
    idle_per_kind = {}
    for gpu in gpus:
        if gpu.idle and gpu.kind is not None:
            idle_per_kind[gpu.kind] = idle_per_kind.get(gpu.kind, 0) + 1
    # No GPU offers a kind covered here: only the donor's domain counts.
    for gpu in _preferred(movable, None, domains):
        if gpu.kind is not None and idle_per_kind[gpu.kind] < 2:
            continue
        if _breaks_whole_domain(gpu, domains):
            continue
        for kind in gpu.allowed:
            if kind not in use:
                return Move(gpu.address, gpu.kind, kind, (
                    'no GPU of the host offers %s; %s keeps another idle '
                    'GPU' % (kind, gpu.kind) if gpu.kind else
                    'no GPU of the host offers %s' % kind))
    return None


def kinds_by_domain(gpus):
    """``{domain: Counter({kind: GPUs})}``, a domain per
    :attr:`GpuUse.domain`.
    """
    domains = collections.defaultdict(collections.Counter)
    for gpu in gpus:
        domains[gpu.domain][gpu.kind] += 1
    return domains


def _preferred(gpus, kind, domains):
    """``gpus`` in the order they should move to ``kind``: domain holding
    the most of ``kind`` first, then, for a whole-GPU donor, its domain
    holding the fewest of the donor's kind, then the lowest address.
    """
    def key(gpu):
        kinds = domains[gpu.domain]
        whole_gpu_donor = gpu.kind is not None and gpu.units == 1
        return (-kinds[kind] if kind is not None else 0,
                kinds[gpu.kind] if whole_gpu_donor else 0,
                gpu.address)
    return sorted(gpus, key=key)


def _breaks_whole_domain(gpu, domains):
    """True for a whole-GPU donor whose known link domain of two GPUs or
    more holds its kind alone: covering a kind with it would leave no
    multi-GPU guest the whole domain.
    """
    kinds = domains[gpu.domain]
    size = sum(kinds.values())
    return (gpu.link_domain is not None and gpu.units == 1 and size > 1
            and kinds[gpu.kind] == size)


def _donor_ratio(use, gpu):
    if gpu.kind is None:
        return 0.0
    used, units = use[gpu.kind]
    return ratio(used - gpu.busy_units, units - gpu.units)
