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
"""The in-memory Placement agrees with the real one.

A small fleet is written into the real Placement (in-process WSGI on
SQLite, through placement's own test fixture) and the same tasks are
scheduled by the same policies over both; every decision, and the
usages left at the end, must be the same.
"""

import logging

import fixtures
from placement.tests.functional.fixtures import placement as fixture
import requests
import testtools

from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import placement
from gpu_partitions.simulator import policies
from gpu_partitions.simulator import real_placement
from gpu_partitions.simulator import run
from gpu_partitions.simulator import trace
from tests.unit.simulator import synthetic

POLICIES = ('nova-default', 'random', 'hami-binpack', 'best-fit', 'fgd',
            'ours-pack', 'ours-spread')


class RealPlacementAgreesTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        # Placement's and Nova's request logs go to the test's details, not
        # to the console of the whole run.
        self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        service = self.useFixture(fixture.PlacementFixture())
        self.session = requests.Session()
        self.endpoint = service.endpoint
        self.fleet = fleet.parse_fleet_spec(
            'a100-80gb-mig:mixed:8:1,a100-80gb-mig:whole:8:1,'
            'v100-32gb-vgpu:V100DX-8Q:4:1,t4-vgpu:T4-4Q:2:2')
        self.tasks = trace.read_tasks(self._pods())
        self.real = real_placement.RealPlacement(
            self.session, self.endpoint, self.fleet)

    def _pods(self):
        directory = self.useFixture(fixtures.TempDir()).path
        return synthetic.write(directory, count=200, seed=11)[1]

    def test_same_decisions(self):
        for name in POLICIES:
            policy = policies.POLICIES[name]
            memory_runner = run.Runner(self.fleet, self.tasks, seed=2,
                                       keep_decisions=True)
            in_memory = memory_runner.arrivals(policy)
            memory_usages = memory_runner._last_placement.usages()
            real_runner = run.Runner(
                self.fleet, self.tasks, seed=2, keep_decisions=True,
                placement_factory=lambda built: self.real)
            real = real_runner.arrivals(policy)
            self.assertGreater(in_memory.placed, 10, name)
            self.assertGreater(in_memory.failed, 0, name)
            self.assertEqual(in_memory.decisions, real.decisions, name)
            self.assertEqual(in_memory.curve, real.curve, name)
            self.assertEqual(memory_usages, self.real.usages(), name)
            self.real.release_all()
            self.assertEqual({}, self.real.usages())

    def test_candidates_match_for_each_request_shape(self):
        memory = placement.InMemoryPlacement.from_fleet(self.fleet)
        requests_ = [
            placement.ResourceRequest(root=(('VCPU', 2000),)),
            placement.ResourceRequest(
                root=(('VCPU', 2000), ('MEMORY_MB', 4096)),
                groups=(('CUSTOM_MIG_1G_10GB', 1),)),
            placement.ResourceRequest(
                root=(('VCPU', 2000),),
                groups=(('CUSTOM_MIG_7G_80GB', 1),) * 4),
            placement.ResourceRequest(
                groups=(('CUSTOM_VGPU_V100DX_8Q', 1),
                        ('CUSTOM_VGPU_V100DX_8Q', 1))),
        ]
        for request in requests_:
            mine, my_summaries = memory.allocation_candidates(request)
            theirs, their_summaries = self.real.allocation_candidates(
                request)
            self.assertTrue(mine, request)
            self.assertEqual(
                [sorted(c['allocations'].items()) for c in mine],
                [sorted(c['allocations'].items()) for c in theirs],
                request)
            self.assertEqual(sorted(my_summaries), sorted(their_summaries))
            for rp, summary in my_summaries.items():
                theirs_ = their_summaries[rp]
                self.assertEqual(summary['root_provider_uuid'],
                                 theirs_['root_provider_uuid'])
                self.assertEqual(sorted(summary['traits']),
                                 sorted(theirs_['traits']))
                for rc, amounts in summary['resources'].items():
                    self.assertEqual(amounts, theirs_['resources'][rc])
