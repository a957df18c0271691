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
"""MIG placement geometry of the A100/H100 family and a fragmentation
score over it.

A GPU instance of a profile takes ``size`` consecutive memory slots of
the GPU's 8 and may only start at the slots NVIDIA lists for the profile
(NVIDIA MIG User Guide, "Supported MIG Profiles" and "A100 MIG
placement"; ``nvidia-smi mig -lgipp``; summarised with its sources in
``../shared/reference/hardware.md`` section 2.1)::

    profile   compute slices  memory slots  starts
    1g.10gb   1               1             0 1 2 3 4 5 6
    2g.20gb   2               2             0 2 4
    3g.40gb   3               4             0 4
    4g.40gb   4               4             0
    7g.80gb   7               8             0

The table is :data:`gpu_partitions.simulator.fleet.MIG_GEOMETRY`, which
the fixed layouts are checked against; this module only reads it.

An *instance set* is a collection of ``(profile, start)`` pairs already
created on one GPU. Instances in use cannot move, so where a new
instance goes decides which later requests the GPU can still take:
:func:`choose_start` picks the free start that keeps the most capacity
usable by the typical requests (``weights``: profile -> popularity),
that is the one that least increases :func:`fragmentation`.
"""

from gpu_partitions.simulator import fleet as fleet_mod

GEOMETRY = fleet_mod.MIG_GEOMETRY
SLICES = fleet_mod.MIG_SLICES


def slots(profile, start):
    """Memory slots an instance of ``profile`` at ``start`` takes."""
    return range(start, start + GEOMETRY[profile][1])


def occupied(instances):
    return {slot for profile, start in instances
            for slot in slots(profile, start)}


def free_starts(instances, profile):
    """Starts where one more ``profile`` instance fits, lowest first."""
    taken = occupied(instances)
    return [start for start in GEOMETRY[profile][2]
            if not taken.intersection(slots(profile, start))]


def capacity(instances, profile):
    """How many more ``profile`` instances fit. The placements of one
    profile never overlap each other, so it is the number of free
    starts.
    """
    return len(free_starts(instances, profile))


def free_slices(instances):
    return SLICES - sum(GEOMETRY[p][0] for p, _ in instances)


def fragmentation(instances, weights):
    """Expected free compute slices (of 7) that the next request cannot
    use: for each profile, the free slices beyond what more instances of
    it could fill, weighted by the profile's popularity (weights sum to
    1; an empty ``weights`` counts every profile alike). The GPU-level
    form of FGD's fragmentation measure, with MIG's placements as the
    reason a task cannot use free capacity.
    """
    weights = _normalised(weights)
    free = free_slices(instances)
    return sum(
        weight * max(0, free - GEOMETRY[profile][0]
                     * capacity(instances, profile))
        for profile, weight in weights.items())


def choose_start(instances, profile, weights):
    """The free start of ``profile`` whose instance leaves the least
    fragmentation (the highest start on a tie, keeping slot 0 for 4g and
    7g); None when none is free.
    """
    best = None
    for start in free_starts(instances, profile):
        after = list(instances) + [(profile, start)]
        key = (fragmentation(after, weights), -start)
        if best is None or key < best[0]:
            best = (key, start)
    return None if best is None else best[1]


def placeable(instances, profiles):
    """Whether the ``profiles`` (a list, repeats allowed) can all be
    created beside ``instances``, in some placement.
    """
    if not profiles:
        return True
    first, rest = profiles[0], profiles[1:]
    return any(placeable(list(instances) + [(first, start)], rest)
               for start in free_starts(instances, first))


def _normalised(weights):
    weights = {p: w for p, w in (weights or {}).items()
               if p in GEOMETRY and w > 0}
    if not weights:
        weights = dict.fromkeys(GEOMETRY, 1.0)
    total = sum(weights.values())
    return {p: w / total for p, w in weights.items()}
