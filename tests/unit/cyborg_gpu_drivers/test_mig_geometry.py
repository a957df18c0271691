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


class PreviousOfferTest(testtools.TestCase):

    def test_claims_within_an_offer_never_move_it(self):
        """Whatever part of any idle offer is claimed, the offer with its
        last self as ``previous`` is the same: a claim racing the agent's
        next write still finds every unit it was admitted against.
        """
        weights = dict.fromkeys(TABLE, 1.0)
        for lead, last in geometry.idle_offers(TABLE, TABLE,
                                               weights).items():
            units = [p for p, n in last.items() for _ in range(n)]
            for part in sub_multisets(units):
                claimed = collections.Counter(part)
                self.assertEqual(last, geometry.offer(
                    TABLE, [], claimed, TABLE, weights, last),
                    (lead, part))

    def test_what_no_longer_fits_is_dropped(self):
        # The last offer was a 7g; a 1g was claimed since (a claim from
        # before): the 7g goes, the rest is the GPU's own offer.
        self.assertEqual({'1g.10gb': 4, '3g.40gb': 1}, geometry.offer(
            TABLE, [], {'1g.10gb': 1}, ALLOWED, {}, {'7g.80gb': 1}))

    def test_profiles_no_longer_allowed_are_not_kept(self):
        self.assertEqual({'1g.10gb': 7}, geometry.offer(
            TABLE, [], {}, ['1g.10gb'], {}, {'3g.40gb': 1}))


class SpreadTest(testtools.TestCase):

    @staticmethod
    def gpus(count, allowed=ALLOWED, weights=None):
        return {'0000:%02x:00.0' % index: (TABLE, allowed, weights or {})
                for index in range(count)}

    def test_two_idle_gpus_offer_different_sets(self):
        self.assertEqual({'0000:00:00.0': {'1g.10gb': 4, '3g.40gb': 1},
                          '0000:01:00.0': {'7g.80gb': 1}},
                         geometry.spread(self.gpus(2), {}))

    def test_every_profile_covered_when_there_are_enough_gpus(self):
        for count in range(1, 7):
            plan = geometry.spread(self.gpus(count, tuple(TABLE)), {})
            covered = {p for units in plan.values() for p in units}
            # Own offer 2x1g+2g+3g, then 4g and 7g led by one GPU each.
            self.assertEqual(min(count + 2, 5), len(covered), count)
            for units in plan.values():
                self.assertTrue(geometry.placeable(TABLE, [], [
                    p for p, n in units.items() for _ in range(n)]))

    def test_deterministic_and_stable(self):
        gpus = self.gpus(4, tuple(TABLE))
        plan = geometry.spread(gpus, {})
        shuffled = dict(reversed(list(gpus.items())))
        self.assertEqual(plan, geometry.spread(shuffled, {}))
        self.assertEqual(plan, geometry.spread(gpus, plan))
        self.assertEqual(plan, geometry.spread(gpus, geometry.spread(
            gpus, plan)))

    def test_given_idle_offers_are_used_as_they_are(self):
        gpus = self.gpus(3, tuple(TABLE))
        choices = {address: geometry.idle_offers(*facts)
                   for address, facts in gpus.items()}
        self.assertEqual(geometry.spread(gpus, {}),
                         geometry.spread(gpus, {}, (), choices))
        # Only the choices given are chosen from: no 7g among them.
        for offers in choices.values():
            del offers['7g.80gb']
        plan = geometry.spread(gpus, {}, (), choices)
        self.assertFalse(any(units.get('7g.80gb')
                             for units in plan.values()))

    def test_a_gpu_leaving_moves_at_most_one_other(self):
        for count in range(2, 7):
            gpus = self.gpus(count, tuple(TABLE))
            plan = geometry.spread(gpus, {})
            for gone in gpus:
                rest = {a: f for a, f in gpus.items() if a != gone}
                after = geometry.spread(rest, plan)
                moved = [a for a in rest if after[a] != plan[a]]
                self.assertLessEqual(len(moved), 1, (count, gone))

    def test_one_gpu_keeps_its_own_offer(self):
        # Nothing can be led without losing 1g and 3g: 7g stays uncovered.
        self.assertEqual({'0000:00:00.0': {'1g.10gb': 4, '3g.40gb': 1}},
                         geometry.spread(self.gpus(1), {}))

    def test_weights_shape_the_own_offer_and_the_rest_is_led(self):
        plan = geometry.spread(self.gpus(
            2, ('1g.10gb', '4g.40gb', '7g.80gb'),
            {'1g.10gb': 1, '4g.40gb': 3, '7g.80gb': 2}), {})
        self.assertEqual({'0000:00:00.0': {'4g.40gb': 1, '1g.10gb': 3},
                          '0000:01:00.0': {'7g.80gb': 1}}, plan)

    def test_leading_never_uncovers_another_profile(self):
        # GPU 0 may take 1g only (seven of them); GPU 1 any of 1g, 4g, 7g
        # with its own offer 4g + 3x1g. 7g is missing; GPU 1 can lead it
        # (GPU 0 still covers 1g) only by giving up 4g, which no other
        # GPU offers: 7g stays uncovered rather than 4g being lost.
        gpus = self.gpus(2, ('1g.10gb', '4g.40gb', '7g.80gb'),
                         {'1g.10gb': 1, '4g.40gb': 3, '7g.80gb': 2})
        gpus['0000:00:00.0'] = (TABLE, ('1g.10gb',), {})
        self.assertEqual({'0000:00:00.0': {'1g.10gb': 7},
                          '0000:01:00.0': {'4g.40gb': 1, '1g.10gb': 3}},
                         geometry.spread(gpus, {}))

    def test_profiles_other_gpus_offer_count_as_covered(self):
        plan = geometry.spread(self.gpus(1), {},
                               covered={'1g.10gb', '3g.40gb'})
        self.assertEqual({'0000:00:00.0': {'7g.80gb': 1}}, plan)

    def test_a_previous_offer_that_is_no_choice_is_replaced(self):
        plan = geometry.spread(self.gpus(1), {
            '0000:00:00.0': {'2g.20gb': 1, '1g.10gb': 1}})
        self.assertEqual({'0000:00:00.0': {'1g.10gb': 4, '3g.40gb': 1}},
                         plan)

    def test_gpu_without_allowed_profiles_offers_nothing(self):
        self.assertEqual({'0000:00:00.0': {}},
                         geometry.spread(self.gpus(1, ()), {}))
