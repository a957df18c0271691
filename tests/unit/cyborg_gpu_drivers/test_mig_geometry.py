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
"""The shared MIG geometry and the on-demand offer (Model 2)."""

import collections
import itertools
import random

import testtools

from cyborg_gpu_drivers import mig_geometry as geometry

# The A100/H100 table as NVML lists it (``nvidia-smi mig -lgipp``).
TABLE = {
    '1g.10gb': (1, tuple((s, 1) for s in range(7))),
    '2g.20gb': (2, ((0, 2), (2, 2), (4, 2))),
    '3g.40gb': (3, ((0, 4), (4, 4))),
    '4g.40gb': (4, ((0, 4),)),
    '7g.80gb': (7, ((0, 8),)),
}
ALLOWED = ('1g.10gb', '3g.40gb', '7g.80gb')


def sub_multisets(units):
    counter = collections.Counter(units)
    names = sorted(counter)
    for counts in itertools.product(*(range(counter[n] + 1)
                                      for n in names)):
        yield [n for n, c in zip(names, counts) for _ in range(c)]


class OfferTest(testtools.TestCase):

    def test_idle_gpu_every_profile_alike(self):
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1},
                         {p: n for p, n in geometry.offer(
                             TABLE, [], {}, ALLOWED, {}).items() if n})

    def test_weights_choose_the_whole_gpu(self):
        self.assertEqual({'7g.80gb': 1}, {p: n for p, n in geometry.offer(
            TABLE, [], {}, ALLOWED, {'7g.80gb': 4}).items() if n})

    def test_only_allowed_profiles_are_added(self):
        offer = geometry.offer(TABLE, [('2g.20gb', 0)], {'2g.20gb': 1},
                               ['1g.10gb'], {})
        # The existing 2g stays (a guest holds it); only 1g is added.
        self.assertEqual({'2g.20gb': 1, '1g.10gb': 5},
                         {p: n for p, n in offer.items() if n})

    def test_claims_without_instances_stay_placeable(self):
        # Two 3g claimed, none created yet: nothing else fits.
        offer = geometry.offer(TABLE, [], {'3g.40gb': 2}, ALLOWED, {})
        self.assertEqual({'3g.40gb': 2}, {p: n for p, n in offer.items()
                                          if n})

    def test_compute_slices_bound_placements(self):
        # 3g + 3g + 1g is 7 slices but needs 9 memory slots.
        self.assertFalse(geometry.placeable(
            TABLE, [], ['3g.40gb', '3g.40gb', '1g.10gb']))
        # A table whose slots allow more than its slices: slices win.
        wide = {'1g': (1, tuple((s, 1) for s in range(8))),
                '7g': (7, ((0, 8),))}
        self.assertEqual(7, geometry.capacity(wide, [], '1g'))

    def test_every_concurrent_subset_of_the_offer_is_placeable(self):
        """Model 2: whatever part of the offer Placement admits, in any
        order, the GPU can place, after any history of binds (placed by
        choose_start keeping the rest of the offer) and releases.
        """
        for seed in range(20):
            rng = random.Random(seed)
            weights = {p: rng.choice((1, 2, 4)) for p in ALLOWED}
            instances = []
            for _ in range(30):
                claimed = collections.Counter(p for p, _ in instances)
                offer = geometry.offer(TABLE, instances, claimed, ALLOWED,
                                       weights)
                free = collections.Counter(offer)
                free.subtract(claimed)
                free_units = list((+free).elements())
                for part in sub_multisets(free_units):
                    self.assertTrue(geometry.placeable(
                        TABLE, instances, part), (seed, instances, part))
                if free_units and (not instances or rng.random() < 0.7):
                    profile = rng.choice(free_units)
                    rest = list(free_units)
                    rest.remove(profile)
                    start = geometry.choose_start(
                        TABLE, instances, profile, weights, keep=rest)
                    self.assertIsNotNone(start)
                    after = instances + [(profile, start)]
                    self.assertTrue(geometry.placeable(TABLE, after, rest))
                    instances = after
                elif instances:
                    instances.pop(rng.randrange(len(instances)))

    def test_choose_start_keeps_the_promised_3g(self):
        # Offer 3g + four 1g on an idle GPU: the first 1g goes where the
        # 3g can still go (slot 3, the highest start that keeps it).
        rest = ['3g.40gb'] + ['1g.10gb'] * 3
        self.assertEqual(3, geometry.choose_start(TABLE, [], '1g.10gb', {},
                                                  keep=rest))
        # Without a promise, the fragmentation score alone: slot 6.
        self.assertEqual(6, geometry.choose_start(TABLE, [], '1g.10gb', {}))
