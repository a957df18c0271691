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
"""MIG placement geometry of the simulator's fleet and a fragmentation
score over it.

The table is :data:`gpu_partitions.simulator.fleet.MIG_GEOMETRY` (the
A100/H100 profiles, starts and slices, with their sources there), which
the fixed layouts are checked against; this module binds it to the
geometry the MIG driver uses too (:mod:`cyborg_gpu_drivers.mig_geometry`),
so the simulator and the driver place instances alike.

An *instance set* is a collection of ``(profile, start)`` pairs already
created on one GPU. Instances in use cannot move, so where a new
instance goes decides which later requests the GPU can still take:
:func:`choose_start` picks the free start that keeps the most capacity
usable by the typical requests (``weights``: profile -> popularity),
that is the one that least increases :func:`fragmentation`.
"""

from cyborg_gpu_drivers import mig_geometry as shared
from gpu_partitions.simulator import fleet as fleet_mod

GEOMETRY = fleet_mod.MIG_GEOMETRY
SLICES = fleet_mod.MIG_SLICES
#: ``{profile: (compute slices, ((start, size), ...))}``.
TABLE = {profile: (slices, tuple((start, size) for start in starts))
         for profile, (slices, size, starts) in GEOMETRY.items()}


def slots(profile, start):
    """Memory slots an instance of ``profile`` at ``start`` takes."""
    return shared.slots(TABLE, profile, start)


def occupied(instances):
    return shared.occupied(TABLE, instances)


def free_starts(instances, profile):
    """Starts where one more ``profile`` instance fits, lowest first."""
    return shared.free_starts(TABLE, instances, profile)


def capacity(instances, profile):
    """How many more ``profile`` instances fit."""
    return shared.capacity(TABLE, instances, profile)


def free_slices(instances):
    return SLICES - shared.used_slices(TABLE, instances)


def fragmentation(instances, weights):
    """:func:`cyborg_gpu_drivers.mig_geometry.fragmentation` on the
    fleet's table.
    """
    return shared.fragmentation(TABLE, instances, weights)


def choose_start(instances, profile, weights):
    """The free start of ``profile`` leaving the least fragmentation (the
    highest start on a tie); None when none is free.
    """
    return shared.choose_start(TABLE, instances, profile, weights)


def placeable(instances, profiles):
    """Whether the ``profiles`` can all be created beside ``instances``."""
    return shared.placeable(TABLE, instances, profiles)
