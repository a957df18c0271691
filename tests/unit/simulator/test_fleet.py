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
"""Host kinds, MIG geometry, request mapping and layout planning."""

import collections

import testtools

from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import trace

A100 = fleet.KINDS['a100-80gb-mig']
T4 = fleet.KINDS['t4-vgpu']


class GeometryTest(testtools.TestCase):

    def test_named_layouts_follow_start_and_size_rules(self):
        for instances in fleet.MIG_LAYOUTS.values():
            fleet.check_mig_layout(instances)
            slices = sum(fleet.MIG_GEOMETRY[p][0] for p, _ in instances)
            self.assertLessEqual(slices, fleet.MIG_SLICES)

    def test_refuses_a_start_the_profile_cannot_take(self):
        error = self.assertRaises(fleet.LayoutError, fleet.check_mig_layout,
                                  [('3g.40gb', 2)])
        self.assertIn('cannot start at memory slot 2', str(error))
        self.assertRaises(fleet.LayoutError, fleet.check_mig_layout,
                          [('4g.40gb', 4)])

    def test_refuses_overlap(self):
        # 4g@0 takes slots 0-3; 2g@2 would sit inside it.
        error = self.assertRaises(fleet.LayoutError, fleet.check_mig_layout,
                                  [('4g.40gb', 0), ('2g.20gb', 2)])
        self.assertIn('overlaps', str(error))
        fleet.check_mig_layout([('4g.40gb', 0), ('3g.40gb', 4)])

    def test_unit_shares_of_a_layout(self):
        slices = {s.name: s for s in fleet.layout_slices(A100, '4g-3g')}
        self.assertAlmostEqual(4 / 7, slices['4g.40gb'].share)
        self.assertEqual('CUSTOM_MIG_3G_40GB',
                         slices['3g.40gb'].resource_class)
        (vgpu,) = fleet.layout_slices(T4, 'T4-4Q')
        self.assertEqual((4, 0.25, 'CUSTOM_VGPU_T4_4Q'),
                         (vgpu.count, vgpu.share, vgpu.resource_class))

    def test_a_mig_off_gpu_is_one_whole_time_sliced_unit(self):
        (whole,) = fleet.layout_slices(A100, fleet.MIG_OFF)
        self.assertEqual(('A100DX-80C', 'CUSTOM_VGPU_A100DX_80C', 1, 1.0),
                         (whole.name, whole.resource_class, whole.count,
                          whole.share))
        self.assertEqual(1.0, fleet.slice_share(A100, 'A100DX-80C'))
        self.assertEqual(fleet.MIG_OFF, fleet.layout_names(A100)[0])


class MappingTest(testtools.TestCase):

    def test_gpu_milli_onto_mig_profiles(self):
        cases = {1: '1g.10gb', 142: '1g.10gb', 143: '2g.20gb',
                 320: '3g.40gb', 470: '4g.40gb', 500: '4g.40gb',
                 572: '7g.80gb', 810: '7g.80gb', 999: '7g.80gb',
                 # A whole GPU is a MIG-off GPU's full-size type.
                 1000: 'A100DX-80C'}
        for milli, profile in cases.items():
            self.assertEqual(profile, A100.slice_for(milli), milli)

    def test_gpu_milli_onto_vgpu_types(self):
        cases = {100: 'T4-2Q', 125: 'T4-2Q', 126: 'T4-4Q', 470: 'T4-8Q',
                 500: 'T4-8Q', 810: 'T4-16Q'}
        for milli, name in cases.items():
            self.assertEqual(name, T4.slice_for(milli), milli)

    def test_multi_gpu_takes_whole_gpus_in_a_clique(self):
        task = trace.Task('t', 1000, 1000, num_gpu=4, gpu_milli=1000)
        # MIG-off GPUs' full-size time-sliced type: the only whole GPU of
        # a MIG kind that gets NVLink P2P.
        self.assertEqual([('CUSTOM_VGPU_A100DX_80C', 1)] * 4,
                         fleet.gpu_groups(task, A100))
        kinds = fleet.kinds_for(task, sorted(fleet.KINDS))
        self.assertIn('v100-32gb-vgpu', kinds)
        self.assertNotIn('t4-vgpu', kinds)
        eight = trace.Task('t', 1000, 1000, num_gpu=8, gpu_milli=1000)
        self.assertEqual(['a100-80gb-mig', 'h100-80gb-mig'],
                         fleet.kinds_for(eight, sorted(fleet.KINDS)))

    def test_gpu_spec_limits_kinds(self):
        task = trace.Task('t', 1, 1, 1, 500, gpu_spec=('T4', 'P100'))
        self.assertEqual(['p100-vgpu', 't4-vgpu'],
                         fleet.kinds_for(task, sorted(fleet.KINDS)))

    def test_every_trace_model_has_a_kind(self):
        for model, kind in fleet.TRACE_MODELS.items():
            self.assertIn(kind, fleet.KINDS, model)


class PlanningTest(testtools.TestCase):

    def test_layouts_follow_demand(self):
        units = {'7g.80gb': 10, '1g.10gb': 70}
        plan = fleet.plan_layouts(A100, 20, units)
        counts = collections.Counter(plan)
        self.assertEqual(20, len(plan))
        self.assertEqual({'whole': 10, 'all-1g': 10}, dict(counts))
        self.assertEqual('whole', plan[0])

    def test_mig_off_gpus_are_sized_from_whole_gpu_demand(self):
        # Oracle provisioning: 4 whole GPUs asked (one 2-GPU task and two
        # single whole GPUs) and 7 1g; MIG-off GPUs come first, so the
        # largest hosts get them, together in a clique.
        units = {'A100DX-80C': 4, '1g.10gb': 28}
        plan = fleet.plan_layouts(A100, 8, units)
        self.assertEqual([fleet.MIG_OFF] * 4 + ['all-1g'] * 4, plan)

    def test_build_from_nodes_keeps_groups_when_scaled(self):
        nodes = [trace.Node('n%d' % i, 96000, 1 << 19, 8, 'G2')
                 for i in range(40)]
        nodes += [trace.Node('t%d' % i, 96000, 1 << 19, 2, 'T4')
                  for i in range(10)]
        tasks = [trace.Task('a', 1000, 1000, 1, 100),
                 trace.Task('b', 1000, 1000, 8, 1000)]
        built = fleet.build_from_nodes(nodes, tasks, scale=0.1, seed=3)
        self.assertEqual({'a100-80gb-mig': 32, 't4-vgpu': 2},
                         built.kinds())
        again = fleet.build_from_nodes(nodes, tasks, scale=0.1, seed=3)
        self.assertEqual([h.name for h in built.hosts],
                         [h.name for h in again.hosts])
        host = next(h for h in built.hosts if h.kind is A100)
        # Numbered per host, as the drivers number NVLink cliques.
        self.assertEqual({'0'}, {g.clique for g in host.gpus})

    def test_fleet_spec(self):
        built = fleet.parse_fleet_spec('a100-80gb-mig:mixed:8:2,t4-vgpu:'
                                       'T4-8Q:2:1')
        self.assertEqual(3, len(built.hosts))
        self.assertEqual(18, built.gpu_count)
        layouts = [g.layout for g in built.hosts[0].gpus]
        self.assertEqual([fleet.MIG_OFF] + list(fleet.MIG_LAYOUTS),
                         layouts[:6])
        error = self.assertRaises(fleet.LayoutError, fleet.parse_fleet_spec,
                                  'a100-80gb-mig:odd:8:1')
        self.assertIn("unknown layout 'odd'", str(error))
