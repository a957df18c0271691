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
"""vGPU type names, declarations and the one-type-per-GPU rule."""

import testtools

from cyborg_gpu_drivers import retype
from cyborg_gpu_drivers import vgpu_types


class TypeNameTest(testtools.TestCase):

    def test_time_sliced(self):
        name = vgpu_types.parse_type_name('NVIDIA L40S-48Q')
        self.assertEqual(('L40S-48Q', 'L40S', 'Q', 48, None),
                         (name.short, name.board, name.series,
                          name.framebuffer_gb, name.gpu_slices))
        self.assertTrue(name.known)
        self.assertFalse(name.mig_backed)

    def test_mig_backed_with_media_extensions(self):
        name = vgpu_types.parse_type_name('NVIDIA H100XM-1-10CME')
        self.assertEqual(('H100XM', 1, 10, 'C', 'ME'),
                         (name.board, name.gpu_slices, name.framebuffer_gb,
                          name.series, name.extensions))
        self.assertTrue(name.mig_backed)

    def test_name_with_spaces_uses_last_token(self):
        name = vgpu_types.parse_type_name(
            'NVIDIA RTX Pro  6000 Blackwell DC-1-24Q')
        self.assertEqual('DC-1-24Q', name.short)
        self.assertEqual('NVIDIA RTX Pro 6000 Blackwell DC-1-24Q', name.full)
        self.assertEqual((1, 24, 'Q'), (name.gpu_slices, name.framebuffer_gb,
                                        name.series))

    def test_display_heads_suffix(self):
        name = vgpu_types.parse_type_name('GRID T4-2B4')
        self.assertEqual(('T4', 'B', 2), (name.board, name.series,
                                          name.framebuffer_gb))

    def test_name_outside_the_scheme_is_unknown_not_an_error(self):
        name = vgpu_types.parse_type_name('nvidia-999')
        self.assertFalse(name.known)
        self.assertEqual('nvidia-999', name.short)
        self.assertIsNone(name.framebuffer_gb)

    def test_same_type(self):
        self.assertTrue(vgpu_types.same_type('NVIDIA L40S-8Q', 'l40s-8q'))
        self.assertFalse(vgpu_types.same_type('L40S-8Q', 'L40S-8C'))


class DeclarationTest(testtools.TestCase):

    def test_model_and_address(self):
        by_model, by_address = vgpu_types.parse_declarations(
            ['NVIDIA L40S = L40S-8Q', '17:00.0=L40S-4Q, NVIDIA L40S-8Q'])
        self.assertEqual(('NVIDIA L40S', None, ('L40S-8Q',)),
                         (by_model.model, by_model.address, by_model.types))
        self.assertEqual(('0000:17:00.0', ('L40S-4Q', 'NVIDIA L40S-8Q')),
                         (by_address.address, by_address.types))

    def test_address_wins_over_model(self):
        declarations = vgpu_types.parse_declarations(
            ['L40S=L40S-8Q', '0000:17:00.0=L40S-4Q'])
        self.assertEqual(('L40S-4Q',), vgpu_types.declaration_for(
            declarations, '0000:17:00.0', 'NVIDIA L40S').types)
        self.assertEqual(('L40S-8Q',), vgpu_types.declaration_for(
            declarations, '0000:31:00.0', 'NVIDIA L40S').types)
        self.assertIsNone(vgpu_types.declaration_for(
            declarations, '0000:01:00.0', 'NVIDIA A100 80GB PCIe'))

    def test_refused_values_name_the_option_and_allowed_form(self):
        for value, expected in (
                ('L40S-8Q', 'is not "<PCI address or GPU model>'),
                ('L40S=', 'is not "<PCI address or GPU model>'),
                ('L40S=, ,', 'is not "<PCI address or GPU model>'),
                (' =L40S-8Q', 'is not "<PCI address or GPU model>'),
                ('L40S=big', "'big' in 'L40S=big' is not an NVIDIA vGPU"),
                ('L40S=L40S-8X', 'series A, B, C or Q'),
                ('H100=H100-1-10C', 'nvidia_mig.layout')):
            error = self.assertRaises(vgpu_types.DeclarationError,
                                      vgpu_types.parse_declarations, [value])
            self.assertIn('nvidia_vgpu.vgpu_type', str(error))
            self.assertIn(expected, str(error))

    def test_one_value_per_selector(self):
        error = self.assertRaises(
            vgpu_types.DeclarationError, vgpu_types.parse_declarations,
            ['NVIDIA L40S=L40S-8Q', 'L40S=L40S-4Q'])
        self.assertIn('same GPU or model', str(error))


class OneTypePerGpuTest(testtools.TestCase):

    def test_free_gpu_takes_the_first_declared_type(self):
        choice = vgpu_types.types_for_gpu(
            '0000:b1:00.0', ['L40S-4Q', 'L40S-8Q'], [], mixed_size=False)
        self.assertEqual(('L40S-4Q',), choice.types)
        self.assertEqual(1, len(choice.problems))
        self.assertIn('not in mixed-size mode', choice.problems[0])

    def test_hosted_type_wins_over_another_declaration(self):
        choice = vgpu_types.types_for_gpu(
            '0000:31:00.0', ['NVIDIA L40S-4Q'], ['L40S-8Q'],
            mixed_size=False)
        self.assertEqual((), choice.types)
        self.assertIn('hosts vGPU type L40S-8Q', choice.problems[0])
        self.assertIn('L40S-4Q', choice.problems[0])

    def test_declaring_the_hosted_type_is_fine(self):
        choice = vgpu_types.types_for_gpu(
            '0000:31:00.0', ['L40S-8Q'], ['L40S-8Q'], mixed_size=False)
        self.assertEqual((('L40S-8Q',), ()), (choice.types, choice.problems))

    def test_mixed_size_keeps_every_type(self):
        choice = vgpu_types.types_for_gpu(
            '0000:31:00.0', ['L40S-4Q', 'L40S-8Q'], ['L40S-8Q'],
            mixed_size=True)
        self.assertEqual((('L40S-4Q', 'L40S-8Q'), ()),
                         (choice.types, choice.problems))

    def test_capped_never_drops_units_in_use(self):
        self.assertEqual(['a', 'b'], vgpu_types.capped(2, 'abcd', 4))
        self.assertEqual([], vgpu_types.capped(5, 'abcd', 4))
        self.assertEqual(list('abcd'), vgpu_types.capped(5, 'abcd', None))


class FollowDemandTest(testtools.TestCase):

    def test_a_gpu_use_names_types_as_the_policy_compares_them(self):
        use = vgpu_types.type_use('0000:31:00.0', 'NVIDIA L40S-8q',
                                  ['L40S-8Q', 'GRID L40S-4Q'], 6, 2, 30.0)
        self.assertEqual(retype.GpuUse('0000:31:00.0', 'L40S-8Q',
                                       ('L40S-8Q', 'L40S-4Q'), 6, 2, 30.0),
                         use)
        self.assertEqual((), vgpu_types.type_use(
            '0000:31:00.0', 'L40S-8Q', (), 6, None, None).allowed)
        self.assertIsNone(use.link_domain)
        self.assertEqual('1', vgpu_types.type_use(
            '0000:31:00.0', 'L40S-48Q', (), 1, 0, None, '1').link_domain)

    def test_a_new_gpu_takes_the_first_allowed_type(self):
        self.assertEqual('L40S-4Q', vgpu_types.new_gpu_type(
            ('L40S-4Q', 'L40S-8Q')))
