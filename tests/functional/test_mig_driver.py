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
"""The NVIDIA MIG driver end to end in the in-process cloud.

The real driver over a reference host (fake pynvml, materialized sysfs)
-> Cyborg's real conductor ``report_data`` -> the real Placement -> Nova's
real scheduler.
"""

import copy

import fixtures

from cyborg_gpu_drivers import nvidia_mig
from gpu_partitions.cloud import harness
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml
import placement_traits as names
from tests.functional import base

HOST = 'hgx-h100'


class TestMigDriver(base.GpuCloudTestCase):

    def setUp(self):
        super().setUp()
        self.host = reference_hosts.load(HOST)
        self.env = self.host.materialize(
            self.useFixture(fixtures.TempDir()).path)

    def driver(self, nvml_section=None):
        return nvidia_mig.NvidiaMigDriver(
            hostname=self.host.hostname,
            nvml=fake_nvml.FakeNvml(nvml_section or self.host.data['nvml']),
            sysfs_root=self.env.sysfs_root)

    def provider_name(self, bus, profile):
        return names.provider_name(self.host.hostname,
                                   '0000:%s:00.0' % bus, profile)

    def candidate_providers(self, resource_class, *traits):
        body = self.allocation_candidates({
            'resources1': '%s:1' % resource_class,
            'required1': ','.join(traits)})
        by_uuid = self.provider_names()
        return sorted({by_uuid[uuid]
                       for request in body['allocation_requests']
                       for uuid in request['allocations']})

    def test_mig_driver_in_the_cloud(self):
        driver = self.driver()
        writes = self.add_gpu_host(self.host.hostname, driver.discover())
        self.assertNotEqual([], writes)
        providers = self.providers()
        mig = [p for p in providers
               if p.name.startswith(self.host.hostname + '_')]
        self.assertEqual(15, len(mig))
        for provider in mig:
            self.assertStableUuid(provider)

        # A MIG profile plus a NUMA trait: exactly the 3g.40gb providers
        # of the GPUs on NUMA node 1 (9d and df); 43 and 52 are on node 0.
        rc = names.mig_resource_class('3g.40gb')
        self.assertEqual(
            [self.provider_name('9d', '3g.40gb'),
             self.provider_name('df', '3g.40gb')],
            self.candidate_providers(rc, names.numa_node_trait(1)))
        self.assertEqual(
            [self.provider_name('43', '3g.40gb'),
             self.provider_name('52', '3g.40gb')],
            self.candidate_providers(rc, names.numa_node_trait(0)))
        self.assertEqual(
            [self.provider_name('df', '1g.10gb+me')],
            self.candidate_providers(
                names.mig_resource_class('1g.10gb+me'),
                names.nominal_framebuffer_trait(10)))
        # NVLink joins every GPU here, but MIG slices get no P2P over it.
        self.assertEqual([], [provider.name for provider in mig
                              if names.link_domain_of(provider.traits)])

        # The agent's next cycle: nothing to write.
        self.assertEqual([], self.report(self.host.hostname,
                                         driver.discover()))

        # Agent restart with NVML enumerating the GPUs in another order:
        # nothing to write, every provider keeps its UUID.
        section = copy.deepcopy(self.host.data['nvml'])
        order = [7, 3, 5, 1, 6, 0, 4, 2]
        section['devices'] = [dict(section['devices'][old], index=new)
                              for new, old in enumerate(order)]
        new_index = {old: new for new, old in enumerate(order)}
        section['nvlink_cliques'] = [sorted(new_index[i] for i in clique)
                                     for clique in section['nvlink_cliques']]
        restarted = self.driver(section)
        self.assertEqual([], self.report(self.host.hostname,
                                         restarted.discover()))
        self.assertEqual(providers, self.providers())

        # Nova schedules a flavor asking for the profile on NUMA node 1.
        flavor = self.create_flavor(harness.gpu_extra_specs(
            rc, required_traits=[names.numa_node_trait(1),
                                 names.mig_profile_trait('3g.40gb')]))
        server = self.boot(flavor)
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        [(provider, resources)] = [
            (name, res) for name, res in self.allocations(server).items()
            if rc in res]
        self.assertIn(provider, (self.provider_name('9d', '3g.40gb'),
                                 self.provider_name('df', '3g.40gb')))
        self.assertEqual({rc: 1}, resources)


class TestMigDriverLostGpu(base.GpuCloudTestCase):

    def test_lost_gpu_keeps_only_units_in_use(self):
        host = reference_hosts.load('hgx-h200')
        env = host.materialize(self.useFixture(fixtures.TempDir()).path)
        section = copy.deepcopy(host.data['nvml'])
        fake = fake_nvml.FakeNvml(section)
        driver = nvidia_mig.NvidiaMigDriver(
            hostname=host.hostname, nvml=fake, sysfs_root=env.sysfs_root)
        self.add_gpu_host(host.hostname, driver.discover())
        before = self.providers()
        lost = names.provider_name(host.hostname, '0000:c3:00.0', '1g.18gb')
        rc = names.mig_resource_class('1g.18gb')
        self.assertEqual({rc: 7}, self.provider(lost).inventories)

        # The GPU at c3 (3 of its 7 units running guests) falls off the
        # bus between two scans of the same agent.
        [device] = [d for d in section['devices']
                    if d['pci_bus_id'] == '00000000:C3:00.0']
        device['lost'] = True
        driver._nvml = type(driver._nvml)(fake_nvml.FakeNvml(section))
        writes = self.report(host.hostname, driver.discover())
        self.assertEqual(['PUT'], [w.method for w in writes])
        self.assertEqual({rc: 3}, self.provider(lost).inventories)
        after = self.providers()
        self.assertEqual([p.name for p in before], [p.name for p in after])
        self.assertEqual([p.uuid for p in before], [p.uuid for p in after])
