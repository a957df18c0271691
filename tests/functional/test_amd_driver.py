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
"""The AMD MxGPU driver through Cyborg's conductor into Placement and Nova.

The driver runs over the MI300X reference hosts (sysfs tree and a fake of
amdsmi at the module boundary); everything after ``discover()`` is the
real code: Cyborg's conductor ``report_data``, Placement on SQLite, Nova's
scheduler and, for device profiles, Cyborg's ARQ binding.
"""

import os
import urllib.parse

from cyborg import context as cyborg_context
from cyborg.objects import attach_handle as attach_handle_obj
from cyborg.objects import deployable as deployable_obj
import fixtures

from cyborg_gpu_drivers import amd_mxgpu
from gpu_partitions.cloud import harness
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_amdsmi
import placement_traits
from tests.functional import base

HIVE = placement_traits.xgmi_hive_trait(7728127076612325457)
CPX = placement_traits.vf_resource_class('AMD Instinct MI300X', 'CPX')
SPX = placement_traits.vf_resource_class('AMD Instinct MI300X', 'SPX')


class TestAmdDriver(base.GpuCloudTestCase):

    def materialize(self, name):
        host = reference_hosts.load(name)
        return host.materialize(self.useFixture(fixtures.TempDir()).path)

    @staticmethod
    def driver(env):
        return amd_mxgpu.AmdMxgpuDriver(
            hostname=env.hostname, sysfs_root=env.sysfs_root,
            amdsmi=fake_amdsmi.module_for(env.amdsmi))

    def gpu_providers(self, resource_class):
        return [p for p in self.providers() if resource_class in p.inventories]

    def candidates(self, **query):
        """``{provider name: amount}`` of each allocation candidate."""
        names = self.provider_names()
        body = self.allocation_candidates(urllib.parse.urlencode(query))
        return [{names[uuid]: sum(a['resources'].values())
                 for uuid, a in request['allocations'].items()}
                for request in body['allocation_requests']]

    def test_cpx_host_one_vf_and_eight_vfs_in_one_hive(self):
        env = self.materialize('mi300x-cpx')
        self.assertNotEqual([], self.add_gpu_host(
            env.hostname, self.driver(env).discover()))

        compute_node = self.provider(env.hostname)
        providers = self.gpu_providers(CPX)
        self.assertEqual(8, len(providers))
        for provider in providers:
            self.assertEqual(compute_node.uuid, provider.parent_uuid)
            self.assertStableUuid(provider)
            self.assertEqual({CPX: 8}, provider.inventories)
            for trait in (HIVE, 'CUSTOM_GPU_COMPUTE_PARTITION_CPX',
                          'CUSTOM_GPU_MEMORY_PARTITION_NPS4',
                          'CUSTOM_GPU_MODEL_MI300X', 'CUSTOM_GPU_VENDOR_AMD',
                          placement_traits.OWNER_CYBORG):
                self.assertIn(trait, provider.traits)
        names = sorted(p.name for p in providers)
        on_numa_1 = sorted(p.name for p in providers
                           if 'CUSTOM_GPU_NUMA_NODE_1' in p.traits)
        self.assertEqual(names[4:], on_numa_1)

        # One VF: any of the eight GPUs.
        one = self.candidates(resources1='%s:1' % CPX, required1=HIVE)
        self.assertEqual([[(name, 1)] for name in names],
                         sorted(sorted(c.items()) for c in one))
        # Eight VFs in one xGMI hive, all from one GPU: again any GPU.
        eight = self.candidates(resources1='%s:8' % CPX, required1=HIVE)
        self.assertEqual([[(name, 8)] for name in names],
                         sorted(sorted(c.items()) for c in eight))
        self.assertEqual([], self.candidates(resources1='%s:9' % CPX))
        # Outside the hive: nothing.
        self.assertEqual([], self.candidates(resources1='%s:1' % CPX,
                                             required1='!' + HIVE))

        # Steady state, and a restart: a new driver instance reports the
        # same devices and nothing is written to Placement.
        before = self.providers()
        self.assertEqual([], self.report(env.hostname,
                                         self.driver(env).discover()))
        self.run_periodics()
        self.assertEqual(before, self.providers())

        # Nova's Cyborg flow for one VF: the ARQ binds a VF's PCI handle.
        self.create_device_profile('mi300x-cpx-vf', [
            harness.device_profile_group(CPX, required_traits=[HIVE])])
        server = self.boot(self.create_flavor(
            harness.accel_extra_specs('mi300x-cpx-vf')))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        [(provider_name, used)] = [
            (name, resources) for name, resources
            in self.allocations(server).items() if CPX in resources]
        self.assertEqual({CPX: 1}, used)
        [arq] = self.arqs(server)
        self.assertEqual('Bound', arq['state'])
        self.assertEqual('PCI', arq['attach_handle_type'])
        provider = self.provider(provider_name)
        self.assertEqual(provider.uuid, arq['device_rp_uuid'])
        # The handle is a VF of the GPU the provider stands for.
        gpu = placement_traits.physical_gpu_of(provider.traits)
        vf = self.pci_address(arq['attach_handle_info'])
        self.assertEqual(gpu.split(':')[:2], vf.split(':')[:2])
        self.assertTrue(vf.endswith(tuple('02.%d' % n for n in range(8))))

        # Eight VFs of one GPU in the hive: Cyborg makes one ARQ per unit,
        # all bound to VFs of one provider.
        self.create_device_profile('mi300x-cpx-8vf', [
            harness.device_profile_group(CPX, required_traits=[HIVE],
                                         count=8)])
        server = self.boot(self.create_flavor(
            harness.accel_extra_specs('mi300x-cpx-8vf')))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        [(provider_name, used)] = [
            (name, resources) for name, resources
            in self.allocations(server).items() if CPX in resources]
        self.assertEqual({CPX: 8}, used)
        arqs = self.arqs(server)
        self.assertEqual(8, len(arqs))
        self.assertEqual({self.provider(provider_name).uuid},
                         {arq['device_rp_uuid'] for arq in arqs})
        self.assertEqual(8, len({self.pci_address(arq['attach_handle_info'])
                                 for arq in arqs}))

        # With VFs taken, the next report still writes nothing.
        self.assertEqual([], self.report(env.hostname,
                                         self.driver(env).discover()))

    def test_spx_host_eight_gpus_in_one_hive(self):
        env = self.materialize('mi300x-spx')
        self.add_gpu_host(env.hostname, self.driver(env).discover())
        providers = self.gpu_providers(SPX)
        self.assertEqual(8, len(providers))
        self.assertTrue(all(p.inventories == {SPX: 1} for p in providers))

        one = self.candidates(resources1='%s:1' % SPX, required1=HIVE)
        self.assertEqual(8, len(one))
        self.assertEqual([], self.candidates(resources1='%s:2' % SPX))
        # Eight VFs in one hive across the GPUs of the host: Placement
        # takes one resource amount from one provider, so that is eight
        # request groups of one VF each, isolated. Placement needs its
        # options for wide trees (8 children with one unit each), as the
        # operator guide says; without them this takes minutes.
        placement_conf = self.placement.fixture.conf_fixture
        placement_conf.config(group='workarounds',
                              optimize_for_wide_provider_trees=True)
        placement_conf.config(
            group='placement', max_allocation_candidates=100,
            allocation_candidates_generation_strategy='breadth-first')
        query = {'group_policy': 'isolate'}
        for group in range(1, 9):
            query['resources%d' % group] = '%s:1' % SPX
            query['required%d' % group] = HIVE
        eight = self.candidates(**query)
        self.assertNotEqual([], eight)
        for candidate in eight:
            self.assertEqual({p.name: 1 for p in providers}, candidate)
        query['required8'] = '!' + HIVE
        self.assertEqual([], self.candidates(**query))

        # The same as a device profile of eight groups and a flavor with
        # group_policy=isolate: the server takes every GPU of the host.
        self.create_device_profile('mi300x-8gpu-hive', [
            harness.device_profile_group(SPX, required_traits=[HIVE])
            for _ in range(8)])
        specs = harness.accel_extra_specs('mi300x-8gpu-hive')
        specs['group_policy'] = 'isolate'
        server = self.boot(self.create_flavor(specs))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        used = {name: resources for name, resources
                in self.allocations(server).items() if SPX in resources}
        self.assertEqual({p.name: {SPX: 1} for p in providers}, used)
        arqs = self.arqs(server)
        self.assertEqual({p.uuid for p in providers},
                         {arq['device_rp_uuid'] for arq in arqs})
        self.assertEqual([], self.report(env.hostname,
                                         self.driver(env).discover()))

    def test_adopted_host_busy_vfs_reserved_until_freed(self):
        """Guests were running on three VFs before the host's providers
        existed in Placement: no allocation holds those VFs.
        """
        env = self.materialize('mi300x-cpx')
        busy = ('0000:05:02.0', '0000:05:02.1', '0000:05:02.2')

        def set_open(count):
            for vf in busy:
                with open(os.path.join(env.sysfs_root, 'bus', 'pci',
                                       'devices', vf, 'enable'), 'w') as f:
                    f.write('%d\n' % count)

        set_open(1)
        driver = self.driver(env)
        self.add_gpu_host(env.hostname, driver.discover())
        gpu = placement_traits.physical_gpu_trait('0000:05:00.0')
        [provider] = [p for p in self.gpu_providers(CPX)
                      if gpu in p.traits]
        # The agent's next scan finds the providers and reserves the three
        # busy VFs; the conductor's report then writes nothing.
        self.assertEqual([], self.report(env.hostname, driver.discover()))
        self.assertEqual({'total': 8, 'reserved': 3},
                         self.inventory(provider, CPX))
        self.assertIn('3 reserved in Placement until freed',
                      self.stdlog.logger.output)
        self.assertIn('3 units are in use by guests Cyborg did not bind',
                      self.stdlog.logger.output)
        # Cyborg has attach handles for the five free VFs only.
        self.assertEqual(5, len(self.attach_handles(provider)))
        # Placement offers that GPU's five free VFs, not eight: a boot
        # asking for all eight VFs of that GPU finds no host instead of
        # failing at Cyborg's bind.
        self.assertEqual([], self.candidates(
            resources1='%s:6' % CPX, required1=gpu))
        self.assertEqual([[(provider.name, 5)]], [sorted(c.items()) for c in
                         self.candidates(resources1='%s:5' % CPX,
                                         required1=gpu)])
        self.create_device_profile('gpu0-8vf', [
            harness.device_profile_group(CPX, required_traits=[gpu],
                                         count=8)])
        flavor = self.create_flavor(harness.accel_extra_specs('gpu0-8vf'))
        server = self.boot(flavor)
        self.assertEqual('ERROR', server['status'])
        self.assertIn('No valid host', str(server.get('fault')))
        # Five VFs bind: the ARQs get the five free VFs.
        self.create_device_profile('gpu0-5vf', [
            harness.device_profile_group(CPX, required_traits=[gpu],
                                         count=5)])
        five = self.boot(self.create_flavor(
            harness.accel_extra_specs('gpu0-5vf')))
        self.assertEqual('ACTIVE', five['status'], five.get('fault'))
        bound = {self.pci_address(arq['attach_handle_info'])
                 for arq in self.arqs(five)}
        self.assertEqual(5, len(bound))
        self.assertEqual(set(), bound & set(busy))
        self.delete(five)

        # The old guests stop: the VFs are freed and Placement offers
        # them again.
        set_open(0)
        self.report(env.hostname, driver.discover())
        self.assertEqual({'total': 8, 'reserved': 0},
                         self.inventory(provider, CPX))
        self.assertIn('units in use without an allocation freed; 0 '
                      'reserved', self.stdlog.logger.output)
        self.assertEqual([[(provider.name, 8)]], [sorted(c.items()) for c in
                         self.candidates(resources1='%s:8' % CPX,
                                         required1=gpu)])
        self.assertIn('is free; reported to Cyborg, which can bind it now',
                      self.stdlog.logger.output)
        self.assertEqual([False] * 8, self.attach_handles(provider))
        # And Cyborg binds them: eight VFs of that GPU, the three freed
        # ones among them.
        eight = self.boot(flavor)
        self.assertEqual('ACTIVE', eight['status'], eight.get('fault'))
        bound = {self.pci_address(arq['attach_handle_info'])
                 for arq in self.arqs(eight)}
        self.assertEqual(8, len(bound))
        self.assertEqual(set(busy), bound & set(busy))

    def test_adopted_host_claims_not_started_never_over_commit(self):
        """Claims whose guests have not started, beside guests that hold
        no allocation: ``in use - used`` would reserve nothing and
        Placement would offer VFs that do not exist.
        """
        env = self.materialize('mi300x-cpx')
        outside = ('0000:05:02.0', '0000:05:02.1', '0000:05:02.2')

        def set_open(vfs, count):
            for vf in vfs:
                with open(os.path.join(env.sysfs_root, 'bus', 'pci',
                                       'devices', vf, 'enable'), 'w') as f:
                    f.write('%d\n' % count)

        set_open(outside, 1)
        driver = self.driver(env)
        self.add_gpu_host(env.hostname, driver.discover())
        gpu = placement_traits.physical_gpu_trait('0000:05:00.0')
        [provider] = [p for p in self.gpu_providers(CPX)
                      if gpu in p.traits]
        self.report(env.hostname, driver.discover())
        self.assertEqual({'total': 8, 'reserved': 3},
                         self.inventory(provider, CPX))

        def flavor(count):
            name = 'gpu0-%dvf' % count
            self.create_device_profile(name, [
                harness.device_profile_group(CPX, required_traits=[gpu],
                                             count=count)])
            return self.create_flavor(harness.accel_extra_specs(name))

        # Three VFs claimed and bound; their guest has not opened them.
        three = self.boot(flavor(3))
        self.assertEqual('ACTIVE', three['status'], three.get('fault'))
        claimed = {self.pci_address(arq['attach_handle_info'])
                   for arq in self.arqs(three)}
        self.assertEqual(set(), claimed & set(outside))

        def offered():
            """VFs of GPU 05 Placement still offers."""
            return max([0] + [count for count in range(1, 9)
                              if self.candidates(resources1='%s:%d' % (
                                  CPX, count), required1=gpu)])

        # Every agent pass from here on: 3 outside + 3 claimed of 8, so
        # two VFs are free whatever starts or stops in between.
        def agent_pass(agent=None):
            self.report(env.hostname, (agent or driver).discover())
            self.assertEqual(2, offered())
            self.assertEqual(3, self.inventory(provider, CPX)['reserved'])

        agent_pass()
        # The claim's guest starts: six VFs busy, three of them claimed.
        set_open(claimed, 1)
        agent_pass()
        # A restarted agent: it cannot tell the outside guests from the
        # claim's by identity; what Placement holds reserved stays.
        set_open(claimed, 0)
        driver = self.driver(env)
        agent_pass(driver)
        # It reported the outside guests' VFs in use, and Cyborg keeps a
        # handle's first in_use: once those guests stop, the VFs are free
        # but Cyborg will not bind them, so they stay reserved.
        set_open(outside, 0)
        agent_pass(driver)
        self.assertEqual([False] * 2 + [True] * 6,
                         sorted(self.attach_handles(provider)))
        # What Placement offers binds: two VFs.
        two = self.boot(flavor(2))
        self.assertEqual('ACTIVE', two['status'], two.get('fault'))
        self.assertEqual(0, offered())
        refused = self.boot(flavor(1))
        self.assertEqual('ERROR', refused['status'])
        self.assertIn('No valid host', str(refused.get('fault')))

    def attach_handles(self, provider):
        """``in_use`` of each attach handle Cyborg's database holds for
        the deployable of ``provider``.
        """
        context = cyborg_context.get_admin_context()
        deployable = deployable_obj.Deployable.get_by_device_rp_uuid(
            context, provider.uuid)
        return [handle.in_use for handle in
                attach_handle_obj.AttachHandle.get_ah_list_by_deployable_id(
                    context, deployable.id)]

    def inventory(self, provider, resource_class):
        record = self.placement_get('/resource_providers/%s/inventories'
                                    % provider.uuid)['inventories'][
                                        resource_class]
        return {'total': record['total'], 'reserved': record['reserved']}
