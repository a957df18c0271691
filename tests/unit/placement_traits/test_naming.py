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
"""The naming scheme, as a table: each row a fact and the name it gets."""

import os_traits
import testtools

import placement_traits as names


class NamingTableTest(testtools.TestCase):

    CASES = [
        (names.mig_resource_class, ('3g.40gb',), 'CUSTOM_MIG_3G_40GB'),
        (names.mig_resource_class, ('MIG 1g.10gb+me',),
         'CUSTOM_MIG_1G_10GB_ME'),
        (names.vgpu_resource_class, ('NVIDIA L40S-4Q',),
         'CUSTOM_VGPU_L40S_4Q'),
        (names.vgpu_resource_class,
         ('NVIDIA RTX Pro 6000 Blackwell DC-1-24Q',), 'CUSTOM_VGPU_DC_1_24Q'),
        (names.vf_resource_class, ('AMD Instinct MI300X', 'CPX'),
         'CUSTOM_GPU_VF_MI300X_CPX'),
        (names.vendor_trait, ('0x10de',), 'CUSTOM_GPU_VENDOR_NVIDIA'),
        (names.vendor_trait, ('1002',), 'CUSTOM_GPU_VENDOR_AMD'),
        (names.model_trait, ('NVIDIA H100 80GB HBM3',),
         'CUSTOM_GPU_MODEL_H100_80GB_HBM3'),
        (names.physical_gpu_trait, ('00000000:1B:00.0',),
         'CUSTOM_GPU_PCI_0000_1B_00_0'),
        (names.numa_node_trait, (1,), 'CUSTOM_GPU_NUMA_NODE_1'),
        (names.numa_node_trait, (-1,), None),
        (names.numa_node_trait, (None,), None),
        (names.nvlink_clique_trait, (0,), 'CUSTOM_GPU_NVLINK_CLIQUE_0'),
        (names.xgmi_hive_trait, (0x5EED1234,),
         'CUSTOM_GPU_XGMI_HIVE_5EED1234'),
        (names.xgmi_hive_trait, ('0x5eed1234',),
         'CUSTOM_GPU_XGMI_HIVE_5EED1234'),
        (names.mig_profile_trait, ('MIG 7g.80gb',),
         'CUSTOM_GPU_MIG_PROFILE_7G_80GB'),
        (names.vgpu_series_trait, ('q',), 'CUSTOM_GPU_VGPU_SERIES_Q'),
        (names.framebuffer_trait, (4096,), 'CUSTOM_GPU_FB_4GB'),
        (names.framebuffer_trait, (512,), 'CUSTOM_GPU_FB_0GB'),
        (names.nominal_framebuffer_trait, (80,), 'CUSTOM_GPU_FB_80GB'),
        (names.compute_partition_trait, ('cpx',),
         'CUSTOM_GPU_COMPUTE_PARTITION_CPX'),
        (names.memory_partition_trait, ('NPS4',),
         'CUSTOM_GPU_MEMORY_PARTITION_NPS4'),
        (names.cuda_capability_trait, (1, 0),
         'HW_GPU_CUDA_COMPUTE_CAPABILITY_V1_0'),
        (names.cuda_capability_trait, (99, 9), None),
        (names.pci_address, ('00000000:1B:00.0',), '0000:1b:00.0'),
        (names.pci_address, ('1b:00.4',), '0000:1b:00.4'),
        (names.pci_address, ('00010000:04:00.0',), '10000:04:00.0'),
        (names.provider_name, ('gpu-01.example.org', '0000:1b:00.0',
                               '3g.40gb'),
         'gpu-01_example_org_0000_1b_00_0_3g_40gb'),
    ]

    def test_table(self):
        for builder, args, expected in self.CASES:
            self.assertEqual(expected, builder(*args),
                             '%s%r' % (builder.__name__, args))

    def test_every_custom_name_is_valid_for_placement(self):
        for builder, args, expected in self.CASES:
            if expected and expected.startswith('CUSTOM_'):
                self.assertTrue(os_traits.is_custom(expected))
                self.assertTrue(names.is_valid_trait(expected))
                self.assertTrue(names.is_valid_resource_class(expected))

    def test_standard_names_are_reused(self):
        self.assertEqual('OWNER_CYBORG', names.OWNER_CYBORG)
        self.assertIn(names.OWNER_CYBORG, os_traits.get_traits())
        self.assertTrue(names.is_valid_resource_class('VGPU'))


class BadInputTest(testtools.TestCase):

    def test_empty_names_are_refused(self):
        for builder, args in [(names.mig_resource_class, ('',)),
                              (names.mig_resource_class, ('+++',)),
                              (names.vgpu_resource_class, ('   ',))]:
            self.assertRaises(names.InvalidName, builder, *args)

    def test_unknown_vgpu_series_names_the_allowed_ones(self):
        error = self.assertRaises(names.InvalidName,
                                  names.vgpu_series_trait, 'X')
        self.assertIn('A, B, C, Q', str(error))

    def test_bad_pci_address(self):
        for text in ('1b:00', 'zz:00.0', '0000:1b:00.8', ''):
            self.assertRaises(names.InvalidName, names.pci_address, text)

    def test_overlong_name_is_refused(self):
        self.assertRaises(names.InvalidName, names.mig_resource_class,
                          'x' * 300)


class ParserTest(testtools.TestCase):

    def test_mig_profile_framebuffer_is_the_nominal_size_of_the_name(self):
        for profile, gigabytes in (('MIG 1g.18gb', 18), ('1g.10gb+me', 10),
                                   ('1c.3g.20gb', 20), ('7g.141gb', 141),
                                   ('no size', None)):
            self.assertEqual(gigabytes,
                             names.mig_profile_framebuffer_gb(profile))

    def test_parsers_invert_builders(self):
        traits = [names.OWNER_CYBORG,
                  names.physical_gpu_trait('0000:c3:00.0'),
                  names.numa_node_trait(1),
                  names.nvlink_clique_trait(0),
                  names.model_trait('NVIDIA H100 80GB HBM3')]
        self.assertEqual('0000:c3:00.0', names.physical_gpu_of(traits))
        self.assertEqual(1, names.numa_node_of(traits))
        self.assertEqual('CUSTOM_GPU_NVLINK_CLIQUE_0',
                         names.link_domain_of(traits))

    def test_parsers_answer_none_without_the_trait(self):
        traits = [names.OWNER_CYBORG]
        self.assertIsNone(names.physical_gpu_of(traits))
        self.assertIsNone(names.numa_node_of(traits))
        self.assertIsNone(names.link_domain_of(traits))

    def test_xgmi_hive_is_a_link_domain(self):
        trait = names.xgmi_hive_trait('abc')
        self.assertEqual(trait, names.link_domain_of(['X', trait]))

    def test_gpu_resource_classes(self):
        self.assertTrue(names.is_gpu_resource_class(
            names.mig_resource_class('1g.10gb')))
        self.assertTrue(names.is_gpu_resource_class(
            names.vf_resource_class('MI300X', 'SPX')))
        self.assertFalse(names.is_gpu_resource_class('VCPU'))
