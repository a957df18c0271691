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
"""Declared MIG layouts against the H100 profile table (hardware.md 2.1)."""

import testtools

from cyborg_gpu_drivers.adapters import nvml
from cyborg_gpu_drivers import mig_layouts


def _profile(pid, name, slices, count, starts, size):
    return nvml.GpuInstanceProfile(
        id=pid, name=name, slice_count=slices, instance_count=count,
        memory_mib=0, placements=tuple((start, size) for start in starts))


H100 = (
    _profile(0, '7g.80gb', 7, 1, [0], 8),
    _profile(5, '4g.40gb', 4, 1, [0], 4),
    _profile(9, '3g.40gb', 3, 2, [0, 4], 4),
    _profile(14, '2g.20gb', 2, 3, [0, 2, 4], 2),
    _profile(15, '1g.20gb', 1, 4, [0, 2, 4, 6], 2),
    _profile(19, '1g.10gb', 1, 7, range(7), 1),
    _profile(20, '1g.10gb+me', 1, 1, range(7), 1),
)


def plan(text):
    return mig_layouts.plan(mig_layouts.parse_layout(text), H100)


class PlanTest(testtools.TestCase):

    def test_named_layouts_fill_the_gpu(self):
        self.assertEqual([(19, start) for start in range(7)],
                         plan('all-1g.10gb'))
        self.assertEqual([(9, 0), (9, 4)], plan('all-3g.40gb'))
        self.assertEqual([(15, 0), (15, 2), (15, 4), (15, 6)],
                         plan('all-1g.20gb'))
        self.assertEqual([(0, 0)], plan('all-7g.80gb'))

    def test_explicit_layouts_place_big_profiles_first(self):
        self.assertEqual([(9, 4), (19, 0), (19, 1), (19, 2), (19, 3)],
                         plan('3g.40gb:1,1g.10gb:4'))
        # The documented valid mix: 4g at 0 and 3g at 4.
        self.assertEqual([(5, 0), (9, 4)], plan('4g.40gb:1,3g.40gb:1'))
        self.assertEqual([(14, 0), (14, 2), (14, 4), (19, 6)],
                         plan('2g.20gb:3,1g.10gb:1'))

    def test_refusals_name_the_option_and_allowed_values(self):
        cases = [
            ('5g.50gb:1', 'unknown MIG profile(s) 5g.50gb; allowed: '
                          '1g.10gb, 1g.10gb+me, 1g.20gb'),
            ('all-9g.90gb', 'allowed: 1g.10gb'),
            ('1g.10gb+me:2', 'at most 1 allowed'),
            ('4g.40gb:1,3g.40gb:1,1g.10gb:1', 'does not fit'),
            ('3g.40gb:2,2g.20gb:1', 'does not fit'),
        ]
        for text, message in cases:
            error = self.assertRaises(mig_layouts.LayoutError, plan, text)
            self.assertIn('[nvidia_mig] layout', str(error))
            self.assertIn(message, str(error))
        # A count isdigit() takes and int() does not (a superscript two).
        error = self.assertRaises(mig_layouts.LayoutError,
                                  mig_layouts.parse_layout,
                                  '1g.10gb:\u00b2')
        self.assertIn('is not a layout', str(error))

    def test_matches_existing_instances(self):
        existing = [nvml.GpuInstance(1, 9, 4, 4, True),
                    nvml.GpuInstance(2, 5, 0, 4, True)]
        self.assertTrue(mig_layouts.matches(
            plan('4g.40gb:1,3g.40gb:1'), existing))
        self.assertFalse(mig_layouts.matches(plan('all-3g.40gb'), existing))


class ParseTest(testtools.TestCase):

    def test_declarations(self):
        found = mig_layouts.parse_declarations([
            '0000:1B:00.0=all-1g.10gb',
            'NVIDIA H100 80GB HBM3 = 3g.40gb:1, 1g.10gb:4'])
        self.assertEqual('0000:1b:00.0', found[0].address)
        self.assertEqual('1g.10gb', found[0].layout.fill)
        self.assertEqual((('3g.40gb', 1), ('1g.10gb', 4)),
                         found[1].layout.counts)
        layout = mig_layouts.declaration_for
        self.assertIs(found[0].layout,
                      layout(found, '0000:1b:00.0', 'NVIDIA H100 80GB HBM3'))
        self.assertIs(found[1].layout,
                      layout(found, '0000:43:00.0', 'NVIDIA H100 80GB HBM3'))
        self.assertIsNone(layout(found, '0000:43:00.0', 'NVIDIA H200'))

    def test_model_without_vendor_word(self):
        [declaration] = mig_layouts.parse_declarations(
            ['h100 80gb hbm3=all-3g.40gb'])
        self.assertIsNotNone(mig_layouts.declaration_for(
            [declaration], '0000:1b:00.0', 'NVIDIA H100 80GB HBM3'))

    def test_bad_values(self):
        for values in (['all-1g.10gb'], ['0000:1b:00.0='],
                       ['0000:1b:00.0=1g.10gb'], ['0000:1b:00.0=1g.10gb:0'],
                       ['0000:1b:00.0=all-'],
                       ['0000:1b:00.0=all-1g.10gb', '1b:00.0=all-3g.40gb']):
            error = self.assertRaises(mig_layouts.LayoutError,
                                      mig_layouts.parse_declarations, values)
            self.assertIn('[nvidia_mig] layout', str(error))
