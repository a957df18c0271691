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
"""MIG placement geometry, a fragmentation score and the on-demand offer.

The one copy both the MIG driver and the simulator use; plain functions,
no I/O. A *table* maps each profile to ``(compute slices, placements)``,
placements being ``(start, size)`` in memory slots as NVML lists them
(``nvidia-smi mig -lgipp``). An *instance set* is a collection of
``(profile, start)`` pairs on one GPU. A100/H100 (NVIDIA MIG User Guide,
"Supported MIG Profiles")::

    profile   compute slices  memory slots  starts
    1g.10gb   1               1             0 1 2 3 4 5 6
    2g.20gb   2               2             0 2 4
    3g.40gb   3               4             0 4
    4g.40gb   4               4             0
    7g.80gb   7               8             0

Instances in use cannot move, so where a new instance goes decides which
later requests the GPU can still take: :func:`choose_start` picks the free
start that least increases :func:`fragmentation` for the typical requests
(``weights``: profile -> popularity). :func:`offer` is the on-demand
offer of ``doc/source/dynamic-partitioning.rst`` (Model 2): a multiset of
profiles that can all be placed together, so no set of concurrent claims
Placement admits within it can over-commit the GPU.
"""

import collections


def total_slices(table):
    """Compute slices of the whole GPU: those of its largest profile."""
    return max(slices for slices, _ in table.values())


def slots(table, profile, start):
    """Memory slots an instance of ``profile`` at ``start`` takes."""
    size = dict(table[profile][1])[start]
    return range(start, start + size)


def occupied(table, instances):
    return {slot for profile, start in instances
            for slot in slots(table, profile, start)}


def used_slices(table, instances):
    return sum(table[profile][0] for profile, _ in instances)


def free_starts(table, instances, profile):
    """Starts where one more ``profile`` instance fits, lowest first.

    Both the memory slots and the compute slices must be free.
    """
    if used_slices(table, instances) + table[profile][0] > \
            total_slices(table):
        return []
    taken = occupied(table, instances)
    return [start for start, size in sorted(table[profile][1])
            if not taken.intersection(range(start, start + size))]


def capacity(table, instances, profile):
    """How many more ``profile`` instances fit (one at a time, greedily:
    the placements of one profile never overlap each other).
    """
    made = list(instances)
    count = 0
    while True:
        starts = free_starts(table, made, profile)
        if not starts:
            return count
        made.append((profile, starts[0]))
        count += 1


def fragmentation(table, instances, weights):
    """Expected free compute slices that the next request cannot use:
    for each profile, the free slices beyond what more instances of it
    could fill, weighted by the profile's popularity (an empty
    ``weights`` counts every profile alike). FGD's per-GPU fragmentation
    with MIG's placements as the reason free capacity is unusable.
    """
    weights = normalised(table, weights)
    free = total_slices(table) - used_slices(table, instances)
    return sum(
        weight * max(0, free - table[profile][0]
                     * capacity(table, instances, profile))
        for profile, weight in weights.items())


def choose_start(table, instances, profile, weights, keep=()):
    """The free start of ``profile`` whose instance leaves the least
    fragmentation (the highest start on a tie, keeping slot 0 for the
    big profiles); None when none is free.

    Starts after which the profiles ``keep`` (promised to others) could
    no longer all be placed are taken only when no other start is free.
    """
    best = None
    for start in free_starts(table, instances, profile):
        after = list(instances) + [(profile, start)]
        key = (not placeable(table, after, keep),
               fragmentation(table, after, weights), -start)
        if best is None or key < best[0]:
            best = (key, start)
    return None if best is None else best[1]


def placeable(table, instances, profiles):
    """Whether the ``profiles`` (a list, repeats allowed) can all be
    created beside ``instances``, in some placement.
    """
    profiles = sorted(profiles, key=lambda p: -table[p][0])
    if not profiles:
        return True
    first, rest = profiles[0], profiles[1:]
    return any(placeable(table, list(instances) + [(first, start)], rest)
               for start in free_starts(table, instances, first))


def offer(table, instances, claimed, allowed, weights, previous=None):
    """``{profile: units}`` a GPU offers on demand (Model 2).

    ``instances`` exist on the GPU; ``claimed`` is ``{profile: units
    Placement has allocated}``. Every claimed unit and every existing
    instance stays in the offer (Placement must never lose them); claims
    that no instance backs yet must stay placeable. Then units of the
    ``allowed`` profiles are added one at a time while the whole offer
    can still be placed beside the instances: each time the profile with
    the most popularity (``weights``) per unit already offered, the
    smaller profile on a tie. On an idle GPU with every profile alike that
    gives one unit of each in turn, smallest first: with 1g, 3g and 7g
    allowed, four 1g and one 3g.

    ``previous`` (``{profile: units}``, the GPU's last offer) is kept
    first, as far as it still fits beside the instances and claims,
    before anything is added: an offer moves only when it must, so a
    claim Placement admitted against it still finds its unit.
    """
    existing = collections.Counter(profile for profile, _ in instances)
    units = collections.Counter()
    for profile in set(existing) | set(claimed):
        units[profile] = max(existing[profile], claimed.get(profile, 0))
    pending = list((units - existing).elements())
    weights = {profile: (weights or {}).get(profile, 1.0)
               for profile in allowed if profile in table}
    kept = sorted((p for p in previous or {} if p in weights),
                  key=lambda p: (-table[p][0], p))
    for profile in kept:
        while units[profile] < previous[profile] and placeable(
                table, instances, pending + [profile]):
            units[profile] += 1
            pending.append(profile)
    while True:
        fits = [profile for profile in weights
                if placeable(table, instances, pending + [profile])]
        if not fits:
            return {profile: count for profile, count in units.items()
                    if count}
        chosen = max(fits, key=lambda p: (weights[p] / (units[p] + 1),
                                          -table[p][0], p))
        units[chosen] += 1
        pending.append(chosen)


def normalised(table, weights):
    weights = {p: w for p, w in (weights or {}).items()
               if p in table and w > 0}
    if not weights:
        weights = dict.fromkeys(table, 1.0)
    total = sum(weights.values())
    return {p: w / total for p, w in weights.items()}


def idle_offers(table, allowed, weights):
    """The offers an idle GPU chooses from: ``{None: its own offer}`` and
    ``{profile: the offer led by one unit of that profile}`` for each
    allowed profile of the table.
    """
    offers = {None: offer(table, [], {}, allowed, weights)}
    for profile in allowed:
        if profile in table:
            offers[profile] = offer(table, [], {profile: 1}, allowed,
                                    weights)
    return offers


def spread(gpus, previous, covered=(), choices=None):
    """``{address: {profile: units}}``: the offers of a host's idle GPUs.

    ``gpus`` maps each idle GPU (no instance, no mdev, nothing claimed) to
    ``(table, allowed, weights)``; ``previous`` maps addresses to their
    last offers; ``covered`` names the profiles other GPUs of the host
    still offer free units of. Together the GPUs cover every allowed
    profile they can:

    * a GPU keeps its last offer when it is one of its
      :func:`idle_offers`, else it takes its own offer;
    * each allowed profile that no GPU offers, the most popular first (a
      profile's weight share on the GPUs that allow it; the larger on a
      tie), is then led by the GPU with the highest address whose other
      profiles are all still offered by another GPU (idle or not) or by
      its new offer; with no such GPU it stays uncovered.

    Every offer is one GPU's own placeable offer, so the per-GPU argument
    against over-commit holds unchanged. A function of its arguments
    only; with the last offers as ``previous`` a GPU's offer changes only
    when coverage needs it (a GPU becoming idle or busy). ``choices``
    (``{address: idle_offers(*gpus[address])}``) may be given by a caller
    that already holds them (the simulator, once per GPU kind).
    """
    if choices is None:
        choices = {address: idle_offers(*facts)
                   for address, facts in gpus.items()}
    plan = {}
    for address in sorted(gpus):
        last = {p: n for p, n in (previous.get(address) or {}).items() if n}
        plan[address] = last if last in choices[address].values() else \
            choices[address][None]
    popularity = collections.defaultdict(float)
    for table, allowed, weights in gpus.values():
        shares = normalised(table, {p: (weights or {}).get(p, 1.0)
                                    for p in allowed}) if allowed else {}
        for profile, share in shares.items():
            popularity[profile] = max(popularity[profile], share)
    sizes = {profile: table[profile][0] for table, allowed, _ in gpus.values()
             for profile in allowed if profile in table}
    for profile in sorted(popularity, key=lambda p: (
            -popularity[p], -sizes[p], p)):
        if profile in covered or any(plan[address].get(profile)
                                     for address in plan):
            continue
        for address in sorted(plan, reverse=True):
            led = choices[address].get(profile)
            if led is None:
                continue
            others = [plan[a] for a in plan if a != address]
            lost = [p for p in plan[address]
                    if not led.get(p) and p not in covered and
                    not any(o.get(p) for o in others)]
            if not lost:
                plan[address] = led
                break
    return plan
