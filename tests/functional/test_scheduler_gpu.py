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
"""GpuPartitionFilter and GpuPartitionWeigher in the in-process cloud.

Nova's real API, conductor and scheduler, the real Placement and Cyborg's
real conductor report path. GPU hosts are simulator fleet hosts, whose
inventories are the ones the drivers report (HGX-style: H100 GPUs with a
MIG layout, one SR-IOV VF per MIG instance, two NUMA nodes; V100 GPUs with
a full-size vGPU type in two NVLink cliques of four), and MI300X hosts
built as HostInventory data.
"""

import threading
import time
from unittest import mock

import fixtures
from nova.scheduler.client import report
from nova.scheduler import manager
from nova.tests.functional.api import client as api_client

from cyborg_gpu_drivers import inventory
from gpu_partitions.cloud import harness
from gpu_partitions.simulator import fleet
from nova_filters import request_view
from nova_filters import topology
import placement_traits
from tests.functional import base

DRIVER = 'hand_built'
MIG_1G = placement_traits.mig_resource_class('1g.10gb')
NOVA_DEFAULT_FILTERS = [
    'ComputeFilter', 'ComputeCapabilitiesFilter', 'ImagePropertiesFilter',
    'ServerGroupAntiAffinityFilter', 'ServerGroupAffinityFilter']


def gpu_address(index):
    return '0000:%02x:00.0' % (0x18 + index * 0x10)


THREE_1G = (('1g.10gb', 0), ('1g.10gb', 1), ('1g.10gb', 2))


def hgx_host(hostname, gpus=8, layout=THREE_1G, kind='h100-80gb-mig'):
    """``gpus`` GPUs of ``kind`` laid out as ``layout`` (MIG instances or
    a vGPU type); GPU i is on NUMA node ``i * 2 // gpus``.
    """
    return fleet.host_inventory(fleet.make_host(
        hostname, fleet.KINDS[kind], 224000, 2 ** 21, [layout] * gpus))


def mi300x_host(hostname, gpus=8, vfs=2, hives=2):
    """``gpus`` MI300X in CPX mode, ``vfs`` SR-IOV VFs each; GPU i is in
    xGMI hive ``i * hives // gpus``.
    """
    model = 'AMD Instinct MI300X'
    rc = placement_traits.vf_resource_class(model, 'CPX')
    result = []
    for index in range(gpus):
        address = gpu_address(index)
        bus = int(address.split(':')[1], 16)
        handles = [inventory.AttachHandle(
            inventory.PCI, '0000:%02x:00.%d' % (bus, 1 + i))
            for i in range(vfs)]
        result.append(inventory.Gpu(
            address=address, vendor_id='1002', device_id='74a1',
            model=model, memory_mib=196608, numa_node=index * 2 // gpus,
            traits=[placement_traits.vendor_trait('1002'),
                    placement_traits.model_trait(model),
                    placement_traits.compute_partition_trait('CPX'),
                    placement_traits.xgmi_hive_trait(
                        0x1000 + index * hives // gpus)],
            slices=[inventory.Slice(
                name='MI300X-CPX', resource_class=rc,
                traits=[], handles=handles, total=vfs)]))
    return inventory.HostInventory(hostname=hostname, gpus=result), rc


class SchedulerTestBase(base.GpuCloudTestCase):

    ENABLED_FILTERS = NOVA_DEFAULT_FILTERS + ['GpuPartitionFilter']
    EXTRA_FILTERS = ('nova_filters.gpu_filter.GpuPartitionFilter',)
    WEIGHT_CLASSES = ['nova_filters.gpu_weigher.GpuPartitionWeigher']

    def add_hgx(self, hostname, **kwargs):
        host = hgx_host(hostname, **kwargs)
        self.add_inventory(host, DRIVER)
        return host

    def usage_per_gpu(self, host, resource_class):
        """Units used on each GPU of ``host``, in GPU order."""
        usages = self.provider_usages()
        result = []
        for gpu in host.gpus:
            total = 0
            for slice_ in gpu.slices:
                name = placement_traits.provider_name(
                    host.hostname, gpu.address, slice_.name)
                total += usages[name].get(resource_class, 0)
            result.append(total)
        return result

    def gpus_of(self, server, host):
        """Indexes of the GPUs of ``host`` the server holds slices on."""
        allocations = self.allocations(server)
        indexes = set()
        for index, gpu in enumerate(host.gpus):
            for slice_ in gpu.slices:
                name = placement_traits.provider_name(
                    host.hostname, gpu.address, slice_.name)
                if name in allocations:
                    indexes.add(index)
        return sorted(indexes)

    def pin_to_gpu(self, host, index, resource_class=MIG_1G, count=1):
        """Boot a server on GPU ``index`` of ``host`` (by its PCI trait)."""
        flavor = self.create_flavor(harness.gpu_extra_specs(
            resource_class,
            required_traits=[placement_traits.physical_gpu_trait(
                host.gpus[index].address)], count=count))
        server = self.boot(flavor)
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        return server


class TestPackAndSpread(SchedulerTestBase):

    CANDIDATE_QUERIES = 1

    def setUp(self):
        super().setUp()
        # Read now: the Placement fixture has replaced the client's get.
        self.report_client_get = report.SchedulerReportClient.get

    def _boot_series(self, policy, count, pinned_gpu=None):
        host = self.add_hgx('hgx-a', gpus=4)
        rc = MIG_1G
        if pinned_gpu is not None:
            self.pin_to_gpu(host, pinned_gpu)
        specs = harness.gpu_extra_specs(rc)
        specs['gpu_partitions:policy'] = policy
        flavor = self.create_flavor(specs)
        history = []
        for _ in range(count):
            calls = []

            def counted_get(client, url, *args, **kwargs):
                if url.startswith('/allocation_candidates'):
                    calls.append(url)
                return self.report_client_get(client, url, *args, **kwargs)

            with mock.patch.object(report.SchedulerReportClient, 'get',
                                   counted_get):
                server = self.boot(flavor)
            self.assertEqual('ACTIVE', server['status'], server.get('fault'))
            # Nova's own query, reused by the plugins; one more when
            # reuse_scheduler_query is off.
            self.assertEqual(self.CANDIDATE_QUERIES, len(calls))
            history.append(self.usage_per_gpu(host, rc))
        return history

    def test_pack_fills_the_gpu_in_use_before_opening_another(self):
        # Nova alone puts these on GPU 0, its first candidate: [3, 0, 1, 0].
        history = self._boot_series('pack', 4, pinned_gpu=2)
        self.assertEqual([[0, 0, 2, 0], [0, 0, 3, 0]], history[:2])
        self.assertEqual([[3, 1, 0, 0], [3, 2, 0, 0]],
                         [sorted(u, reverse=True) for u in history[2:]])

    def test_spread_puts_each_server_on_the_emptiest_gpu(self):
        history = self._boot_series('spread', 5, pinned_gpu=2)
        # The first three avoid GPU 2, which already holds one slice.
        self.assertEqual([1, 1, 1, 1], history[2])
        self.assertEqual([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1],
                          [2, 1, 1, 1], [2, 2, 1, 1]],
                         [sorted(u, reverse=True) for u in history])

    def test_pack_and_spread_across_hosts(self):
        hosts = [self.add_hgx('hgx-%d' % i, gpus=2) for i in range(2)]
        rc = MIG_1G
        for policy, expected in (('pack', [2, 0]), ('spread', [1, 1])):
            specs = harness.gpu_extra_specs(rc)
            specs['gpu_partitions:policy'] = policy
            flavor = self.create_flavor(specs)
            servers = [self.boot(flavor) for _ in range(2)]
            landed = [self.host_of(s) for s in servers]
            self.assertEqual(
                expected, sorted((landed.count(h.hostname) for h in hosts),
                                 reverse=True), policy)
            for server in servers:
                self.delete(server)


class TestPackWithExtraQuery(TestPackAndSpread):
    """Pack and spread again, the plugins asking Placement once more
    instead of reusing Nova's answer.
    """

    CANDIDATE_QUERIES = 2

    def setUp(self):
        super().setUp()
        self.flags(reuse_scheduler_query=False,
                   group='gpu_partitions_scheduler')


class TestLinkAffinity(SchedulerTestBase):

    def setUp(self):
        super().setUp()
        # One full-size time-sliced vGPU per GPU, the only slices that
        # get NVLink P2P (MIG-backed ones carry no clique trait): a 4-GPU
        # request takes 4 whole GPUs.
        self.host = self.add_hgx('hgx-a', layout='V100DX-32Q',
                                 kind='v100-32gb-vgpu')
        self.rc = placement_traits.vgpu_resource_class('V100DX-32Q')

    def _four_gpu_flavor(self, affinity):
        specs = {'group_policy': 'isolate',
                 'gpu_partitions:link_affinity': affinity}
        for group in '1234':
            specs.update(harness.gpu_extra_specs(self.rc, group=group))
        return self.create_flavor(specs)

    def _clique_of(self, index):
        return index * 2 // len(self.host.gpus)

    def test_four_gpu_request_lands_inside_one_clique(self):
        # GPU 1 busy: Placement's candidates now mix the cliques first.
        self.pin_to_gpu(self.host, 1, self.rc)
        server = self.boot(self._four_gpu_flavor('required'))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        gpus = self.gpus_of(server, self.host)
        self.assertEqual([4, 5, 6, 7], gpus)

    def test_no_clique_fits_required_fails_preferred_lands(self):
        self.pin_to_gpu(self.host, 0, self.rc)
        self.pin_to_gpu(self.host, 4, self.rc)
        server = self.boot(self._four_gpu_flavor('required'))
        self.assertEqual('ERROR', server['status'])
        self.assertIn('No valid host', server['fault']['message'])

        server = self.boot(self._four_gpu_flavor('preferred'))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        gpus = self.gpus_of(server, self.host)
        self.assertEqual(4, len(gpus))
        self.assertEqual({0, 1}, {self._clique_of(i) for i in gpus})

    def test_required_fails_closed_when_gpu_usage_cannot_be_read(self):
        # The plugins' own query fails and no topology is remembered for
        # the host (the scheduler's memory is process-wide and earlier
        # tests' hosts may share its uuid: an empty one replaces it): the
        # clique cannot be checked, so a required affinity fails rather
        # than being assumed; a preferred one lands.
        self.flags(reuse_scheduler_query=False,
                   group='gpu_partitions_scheduler')
        self.useFixture(fixtures.MockPatchObject(
            request_view.VIEWS.source, '_query',
            side_effect=RuntimeError('Placement unreachable')))
        self.useFixture(fixtures.MockPatchObject(
            request_view.VIEWS, 'topology', topology.TopologyCache(0)))
        server = self.boot(self._four_gpu_flavor('required'))
        self.assertEqual('ERROR', server['status'])
        self.assertIn('No valid host', server['fault']['message'])
        server = self.boot(self._four_gpu_flavor('preferred'))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        self.assertEqual(4, len(self.gpus_of(server, self.host)))


class TestHiveAffinity(SchedulerTestBase):

    def test_four_vf_request_lands_inside_one_xgmi_hive(self):
        host, rc = mi300x_host('mi300x-a')
        self.add_inventory(host, DRIVER)
        # GPU 2 busy (both VFs): hive 0 has three GPUs with free VFs left.
        for _ in range(2):
            flavor = self.create_flavor(harness.gpu_extra_specs(
                rc, required_traits=[placement_traits.physical_gpu_trait(
                    host.gpus[2].address)]))
            self.assertEqual('ACTIVE', self.boot(flavor)['status'])
        specs = {'group_policy': 'isolate',
                 'gpu_partitions:link_affinity': 'required'}
        for group in '1234':
            specs.update(harness.gpu_extra_specs(rc, group=group))
        server = self.boot(self.create_flavor(specs))
        self.assertEqual('ACTIVE', server['status'], server.get('fault'))
        self.assertEqual([4, 5, 6, 7], self.gpus_of(server, host))


class TestExtraSpecValidation(SchedulerTestBase):

    def test_invalid_value_and_unknown_key_are_refused(self):
        flavor = self.create_flavor({})
        self.api.microversion = '2.86'
        for key, value in (('gpu_partitions:policy', 'tight'),
                           ('gpu_partitions:link_affinity', 'always'),
                           ('gpu_partitions:polcy', 'pack')):
            error = self.assertRaises(
                api_client.OpenStackApiException,
                self.api.post_extra_spec, flavor,
                {'extra_specs': {key: value}})
            self.assertEqual(400, error.response.status_code)
            self.assertIn(key, error.response.text)
        error = self.assertRaises(
            api_client.OpenStackApiException, self.api.post_extra_spec,
            flavor, {'extra_specs': {'gpu_partitions:policy': 'tight'}})
        self.assertIn('allowed values: pack, spread', error.response.text)
        self.api.post_extra_spec(
            flavor, {'extra_specs': {'gpu_partitions:policy': 'spread',
                                     'gpu_partitions:numa_affinity': 'none'}})
        self.assertEqual(
            'spread', self.api.get_extra_spec(
                flavor, 'gpu_partitions:policy')['gpu_partitions:policy'])


class TestConcurrentBoots(SchedulerTestBase):

    def test_concurrent_boots_never_share_a_vf(self):
        self._boot_eight_onto_six_vfs()

    def test_boots_never_share_a_vf_claimed_after_they_read_placement(self):
        # Every request waits after Nova's Placement query until all eight
        # have asked, then they run one at a time, the last to ask first:
        # each runs after others claimed VFs that its answer shows free
        # (the loaded scheduler where the test above once filled 5 VFs).
        schedule = manager.SchedulerManager._schedule
        get_host_states = manager.SchedulerManager._get_all_host_states
        turn = threading.Condition()
        asked, waiting = [], []
        mine = threading.local()

        def after_the_query(scheduler, *args, **kwargs):
            with turn:
                mine.index = len(asked)
                asked.append(mine.index)
                waiting.append(mine.index)
                turn.notify_all()
                turn.wait_for(lambda: len(asked) == 8 and (
                    waiting[-1] == mine.index), timeout=30)
            return get_host_states(scheduler, *args, **kwargs)

        def one_request(scheduler, *args, **kwargs):
            try:
                return schedule(scheduler, *args, **kwargs)
            finally:
                with turn:
                    if getattr(mine, 'index', None) in waiting:
                        waiting.remove(mine.index)  # the next one's turn
                    mine.index = None
                    turn.notify_all()

        for name, method in (('_schedule', one_request),
                             ('_get_all_host_states', after_the_query)):
            self.useFixture(fixtures.MockPatchObject(
                manager.SchedulerManager, name, method))
        self._boot_eight_onto_six_vfs()
        self.assertEqual(list(range(8)), asked)

    def _boot_eight_onto_six_vfs(self):
        # 2 GPUs x 3 VFs: 6 units for 8 concurrent boots under pack.
        host = self.add_hgx('hgx-a', gpus=2)
        rc = MIG_1G
        flavor = self.create_flavor(harness.gpu_extra_specs(rc))
        # Bodies are built first: Nova's _build_server briefly changes the
        # API client's microversion, which threads must not race on.
        bodies = [self._build_server(flavor_id=flavor, networks='none')
                  for _ in range(8)]
        servers = []
        errors = []

        def boot(body):
            try:
                server_id = self.api.post_server({'server': body})['id']
                server = self.api.get_server(server_id)
                while server['status'] not in ('ACTIVE', 'ERROR'):
                    time.sleep(0.05)
                    server = self.api.get_server(server_id)
                servers.append(server)
            except Exception as error:  # reported below, not swallowed
                errors.append(error)

        threads = [threading.Thread(target=boot, args=(body,))
                   for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual([], errors)
        active = [s for s in servers if s['status'] == 'ACTIVE']
        per_gpu = self.usage_per_gpu(host, rc)
        self.assertLessEqual(max(per_gpu), 3)
        self.assertEqual(len(active), sum(per_gpu))
        # Counting what concurrent requests are about to claim steers them
        # to different VFs, so every VF gets used.
        self.assertEqual(6, len(active))
        for server in active:
            self.assertEqual(1, sum(
                amounts.get(rc, 0)
                for amounts in self.allocations(server).values()))
