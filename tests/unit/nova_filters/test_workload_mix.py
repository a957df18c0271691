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
"""The typical workload learned from the requests the scheduler sees."""

import testtools

from nova_filters import provider_summaries
from nova_filters import scoring
from nova_filters import workload_mix
from tests.unit.nova_filters import fakes

MIG_1G = fakes.mig('1g.10gb')
MIG_3G = fakes.mig('3g.40gb')


class RequestHistoryTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.placement = fakes.FakePlacement()
        self.root = self.placement.add_host('h', fakes.hgx_gpus('mixed'))
        self.view = provider_summaries.parse(self.placement.summaries)

    def _states(self, groups, vcpus=4):
        candidates = self.placement.candidates(self.root, groups)
        for candidate in candidates:
            candidate['allocations'][self.root]['resources']['VCPU'] = vcpus
        return [fakes.host_state('h', self.root, candidates)]

    def _record(self, history, times, groups, vcpus=4):
        for _ in range(times):
            history.record(self.view, self._states(groups, vcpus))

    def test_default_mix_until_enough_requests_were_seen(self):
        history = workload_mix.RequestHistory(window=100, classes=4)
        self._record(history, workload_mix.MIN_SAMPLES - 1,
                     [('', MIG_1G, 1)])
        kinds = {w.kind for w in history.mix(self.view).workloads}
        self.assertIn(scoring.WHOLE_GPU, kinds)

    def test_shapes_grouped_by_gpu_part_with_mean_cpu_and_frequency(self):
        history = workload_mix.RequestHistory(window=100, classes=4)
        self._record(history, 15, [('', MIG_1G, 1)], vcpus=4)
        self._record(history, 15, [('', MIG_1G, 1)], vcpus=8)
        self._record(history, 10, [('1', MIG_3G, 1), ('2', MIG_3G, 1)])
        mix = history.mix(self.view)
        self.assertEqual(
            [(MIG_1G, 1, 6, 0.75), (MIG_3G, 2, 4, 0.25)],
            [(w.resource_class, w.gpus, w.vcpus, w.weight)
             for w in mix.workloads])

    def test_window_forgets_old_requests_and_classes_cap_the_mix(self):
        history = workload_mix.RequestHistory(window=30, classes=1)
        self._record(history, 30, [('', MIG_3G, 1)])
        self._record(history, 20, [('', MIG_1G, 1)])
        # 10 x 3g remain in the window beside 20 x 1g; one class kept.
        self.assertEqual([(MIG_1G, 1.0)], [
            (w.resource_class, w.weight)
            for w in history.mix(self.view).workloads])

    def test_requests_without_gpu_are_not_recorded(self):
        history = workload_mix.RequestHistory(window=100, classes=4)
        state = fakes.host_state('h', self.root, [
            {'allocations': {self.root: {'resources': {'VCPU': 1}}},
             'mappings': {'': [self.root]}}])
        for _ in range(30):
            history.record(self.view, [state])
        self.assertIn(scoring.WHOLE_GPU,
                      {w.kind for w in history.mix(self.view).workloads})
