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
"""Idle GPUs following demand: the policy, the privileged release, and
the vGPU driver on the ``pcie-l40s`` reference host (vendor VFIO).
"""

import dataclasses
import os
import time

from cyborg.common import exception as cyborg_exception
import fixtures
from keystoneauth1 import exceptions as keystone_exceptions
import testtools

from cyborg_gpu_drivers.adapters import sysfs as sysfs_adapter
from cyborg_gpu_drivers import nvidia_vfio
from cyborg_gpu_drivers import privsep
from cyborg_gpu_drivers import providers
from cyborg_gpu_drivers import retype
from cyborg_gpu_drivers import vgpu_types
from gpu_partitions.reference_hosts import fake_nvml
import placement_traits
from tests.unit.cyborg_gpu_drivers import faults
from tests.unit.cyborg_gpu_drivers import hosts
from tests.unit.cyborg_gpu_drivers import test_nvidia_vgpu as vgpu_tests

L40S = vgpu_tests.L40S
A100 = vgpu_tests.A100
TYPE_8Q, TYPE_12Q = 1505, 1506
HOLD = 600


def use(address, kind, units, used, allowed=('A', 'B'), changed_at=None):
    return retype.GpuUse(address, kind, tuple(allowed), units, used,
                         changed_at)


class PlanTest(testtools.TestCase):
    """:func:`retype.plan` over small hosts."""

    def plan(self, gpus, now=1000.0):
        return retype.plan(gpus, now, high=0.8, low=0.5, hold_seconds=600)

    def test_an_idle_gpu_moves_to_the_kind_in_demand(self):
        move = self.plan([use('1', 'A', 4, 4), use('2', 'B', 6, 0),
                          use('3', 'B', 6, 0)])
        self.assertEqual(('2', 'B', 'A'), (move.address, move.old, move.new))
        self.assertIn('A is 100% in use', move.reason)

    def test_a_gpu_with_a_guest_or_unknown_use_never_moves(self):
        for used in (1, None):
            self.assertIsNone(self.plan([use('1', 'A', 4, 4),
                                         use('2', 'B', 6, used)]))

    def test_unknown_use_counts_as_in_use(self):
        # GPU 1's use is unknown: A counts as full and takes idle GPU 2.
        move = self.plan([use('1', 'A', 4, None), use('2', 'B', 6, 0),
                          use('3', 'B', 6, 0)])
        self.assertEqual(('2', 'A'), (move.address, move.new))

    def test_the_donor_must_stay_below_low(self):
        # B without GPU 2 would be 4/6 in use, above low (0.5).
        self.assertIsNone(self.plan([use('1', 'A', 4, 4),
                                     use('2', 'B', 6, 0),
                                     use('3', 'B', 6, 4)]))

    def test_no_flapping_after_a_move(self):
        before = [use('1', 'A', 4, 4), use('2', 'B', 6, 0),
                  use('3', 'B', 6, 0)]
        move = self.plan(before)
        # After the move GPU 2 offers 4 units of A; nothing wants it back
        # even once the hold is over, at the same demand.
        after = [use('1', 'A', 4, 4), use('2', 'A', 4, 0, changed_at=1000),
                 use('3', 'B', 6, 0)]
        self.assertIsNotNone(move)
        self.assertIsNone(self.plan(after, now=5000.0))

    def test_a_recent_change_is_held(self):
        gpus = [use('1', 'A', 4, 4), use('2', 'B', 6, 0, changed_at=900),
                use('3', 'B', 6, 0, changed_at=900)]
        self.assertIsNone(self.plan(gpus, now=1000.0))
        self.assertEqual('2', self.plan(gpus, now=1500.0).address)

    def test_only_allowed_kinds(self):
        # GPU 3 (busy) keeps B offered; C is allowed but nothing asks it.
        self.assertIsNone(self.plan([use('1', 'A', 4, 4),
                                     use('2', 'B', 6, 0, allowed=('B', 'C')),
                                     use('3', 'B', 6, 1, allowed=())]))

    def test_a_kind_no_gpu_offers_is_covered_while_the_donor_keeps_one(self):
        move = self.plan([use('1', 'A', 4, 0, allowed=('A', 'B')),
                          use('2', 'A', 4, 0, allowed=('A', 'B'))])
        self.assertEqual(('1', 'B'), (move.address, move.new))
        self.assertIsNone(self.plan([use('1', 'A', 4, 0),
                                     use('2', 'A', 4, 2)]))

    def test_low_must_be_below_high(self):
        self.assertRaises(ValueError, retype.plan, [], 0, 0.5, 0.5, 0)


def v100(index, kind, used, clique):
    """GPU ``index`` of an 8-GPU V100 host: whole-GPU ``32Q`` (1 unit) or
    ``8Q`` (4 units) or ``16Q`` (2 units).
    """
    units = {'32Q': 1, '16Q': 2, '8Q': 4}[kind]
    return retype.GpuUse('0000:%02x:00.0' % index, kind,
                         ('32Q', '16Q', '8Q'), units, used,
                         link_domain=clique)


class LinkDomainPlanTest(testtools.TestCase):
    """Which GPU moves on a host of two NVLink cliques of 4 GPUs."""

    def plan(self, gpus):
        return retype.plan(gpus, 1000.0, high=0.8, low=0.5, hold_seconds=600)

    def host(self, cliques=('0', '1')):
        # Clique 0 (GPUs 0-3) is whole 32Q; clique 1 (GPUs 4-7) is broken:
        # GPU 4 offers 8Q, all of it in use. GPUs 3 and 7 run a guest.
        first, second = cliques
        return ([v100(i, '32Q', 1 if i == 3 else 0, first)
                 for i in range(4)] +
                [v100(4, '8Q', 4, second)] +
                [v100(i, '32Q', 1 if i == 7 else 0, second)
                 for i in range(5, 8)])

    def test_a_smaller_type_grows_in_the_broken_clique(self):
        move = self.plan(self.host())
        self.assertEqual(('0000:05:00.0', '32Q', '8Q'),
                         (move.address, move.old, move.new))

    def test_a_new_smaller_type_takes_a_gpu_of_the_broken_clique(self):
        # 16Q is wanted (8Q no longer) and offered only by a GPU of no
        # clique: neither clique holds any, so the one already broken
        # gives a GPU.
        gpus = self.host() + [v100(8, '16Q', 2, None)]
        gpus[4] = v100(4, '8Q', 2, '1')
        move = self.plan(gpus)
        self.assertEqual(('0000:05:00.0', '16Q'), (move.address, move.new))
        self.assertEqual(
            4, retype.kinds_by_domain(gpus)[('0', None)]['32Q'])

    def test_the_whole_type_grows_where_it_already_is(self):
        # 32Q is wanted; the idle 8Q GPUs of clique 0 and of clique 1 may
        # give one: the one in the clique holding more 32Q GPUs does.
        gpus = ([v100(0, '8Q', 0, '0'), v100(1, '8Q', 4, '0'),
                 v100(2, '8Q', 0, '0'), v100(3, '32Q', 1, '0')] +
                [v100(4, '8Q', 0, '1')] +
                [v100(i, '32Q', 1, '1') for i in range(5, 8)])
        move = self.plan(gpus)
        self.assertEqual(('0000:04:00.0', '8Q', '32Q'),
                         (move.address, move.old, move.new))

    def test_coverage_never_breaks_a_whole_clique(self):
        idle = [v100(i, '32Q', 0, str(i // 4)) for i in range(8)]
        self.assertIsNone(self.plan(idle))
        # Clique 0 is broken (GPU 0 offers 8Q): it covers 16Q, clique 1
        # stays whole.
        broken = [v100(0, '8Q', 0, '0')] + idle[1:]
        move = self.plan(broken)
        self.assertEqual(('0000:01:00.0', '32Q', '16Q'),
                         (move.address, move.old, move.new))
        # Without cliques every GPU is a domain of one: covered as today.
        move = self.plan([v100(i, '32Q', 0, None) for i in range(8)])
        self.assertEqual(('0000:00:00.0', '16Q'), (move.address, move.new))

    def test_unknown_domains_keep_the_lowest_address(self):
        # Without cliques no GPU is assumed linked to another: the plan is
        # the one by address, GPU 0 of what would be the intact clique.
        move = self.plan(self.host(cliques=(None, None)))
        self.assertEqual(('0000:00:00.0', '8Q'), (move.address, move.new))
        gpus = self.host(cliques=(None, None))
        self.assertEqual(len(gpus), len(retype.kinds_by_domain(gpus)))


class ReleaseIdleGpuTest(vgpu_tests.DriverTestCase):
    """The privileged release checks every VF itself."""

    def setUp(self):
        super().setUp()
        self.env = self.env('pcie-l40s')
        self.sysfs = sysfs_adapter.Sysfs(self.env.sysfs_root)

    def types(self, pf):
        return [vf.current_type for vf in nvidia_vfio.list_vfs(
            self.sysfs, pf)]

    def set_enable(self, vf, value):
        path = os.path.join(self.env.sysfs_root, 'bus', 'pci', 'devices',
                            vf, 'enable')
        with open(path, 'w') as enable:
            enable.write('%d\n' % value)

    def test_releases_every_vf_of_an_idle_gpu(self):
        self.assertEqual([TYPE_8Q, TYPE_8Q], self.types(L40S[1])[:2])
        released = privsep.release_idle_gpu(L40S[1])
        self.assertEqual(['0000:31:00.4', '0000:31:00.5'], released)
        self.assertEqual({0}, set(self.types(L40S[1])))

    def test_one_open_vf_and_nothing_is_written(self):
        self.set_enable('0000:31:00.5', 1)
        self.assertRaises(privsep.DeviceBusy, privsep.release_idle_gpu,
                          L40S[1])
        self.assertEqual([TYPE_8Q, TYPE_8Q], self.types(L40S[1])[:2])

    def test_the_caller_is_not_trusted(self):
        for address in ('0000:31:00.0\n', '../31:00.0', 31, None):
            self.assertRaises(privsep.InvalidPrivilegedRequest,
                              privsep.release_idle_gpu, address)
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.release_idle_gpu, '0000:99:00.0')

    def test_runs_in_the_vgpu_type_context(self):
        self.assertTrue(privsep.vgpu_type_pctxt.is_entrypoint(
            privsep.privileged_release_idle_gpu))
        self.assertFalse(privsep.mig_layout_pctxt.is_entrypoint(
            privsep.privileged_release_idle_gpu))


class FollowDemandTest(vgpu_tests.DriverTestCase):
    """The vGPU driver re-types an idle L40S when demand says so.

    ``pcie-l40s``: GPU 0 hosts L40S-12Q (2 of 4 in use), GPU 1 L40S-8Q
    (idle), GPU 2 nothing (idle), GPU 3 L40S-24C (1 in use).
    """

    def setUp(self):
        super().setUp()
        self.conf.config(group='nvidia_vgpu', type_mode='follow_demand',
                         allowed_types=['NVIDIA L40S=L40S-8Q,L40S-12Q'])
        self.env = self.env('pcie-l40s')
        self.sysfs = sysfs_adapter.Sysfs(self.env.sysfs_root)
        self.released = []
        self.offers = hosts.VfOffers(self.env.sysfs_root)
        # The agent's clock: each pass comes a hold after the last one
        # unless a test says otherwise.
        self.now = 0.0
        self.step = HOLD

    def clock(self):
        return self.now

    def write(self, address, type_id):
        super().write(address, type_id)
        self.offers.refresh(self.offers.pf_of(address))

    def release(self, pf):
        self.released.append(pf)
        privsep.release_idle_gpu(pf)
        self.offers.refresh(pf)

    def driver(self):
        driver = super().driver(self.env)
        driver._release_gpu = self.release
        driver._clock = self.clock
        return driver

    def run_pass(self, driver):
        """One agent pass; Placement then holds the report's providers."""
        self.now += self.step
        found = self.slices(driver.collect() if driver.read_only
                            else self._discover(driver))
        return found

    def _discover(self, driver):
        driver.apply()
        host = driver.collect()
        for spec in providers.provider_specs(host):
            self.inventories.setdefault(spec.name, {
                'total': spec.total, 'reserved': 0,
                'resource_provider_generation': 1})
        return host

    def provider(self, driver, address, type_name):
        gpu = driver.known_gpu(address)
        slice_ = next(s for s in gpu.slices if s.name == type_name)
        return providers.provider_name(self.env.hostname, gpu, slice_)

    def held_types(self, pf):
        return {vf.current_type for vf in nvidia_vfio.list_vfs(
            self.sysfs, pf)}

    def settle(self, driver):
        """Pass until GPU 2 has its first type and the host is steady."""
        self.run_pass(driver)
        return self.run_pass(driver)

    def demand_for_12q(self):
        """A settled driver with all of GPU 0's L40S-12Q claimed; and the
        provider of idle GPU 1's L40S-8Q, the one demand would move.
        """
        driver = self.driver()
        self.settle(driver)
        self.allocations[self.provider(driver, L40S[0], 'L40S-12Q')] = 4
        return driver, self.provider(driver, L40S[1], 'L40S-8Q')

    def test_an_idle_gpu_follows_demand_and_a_busy_one_never_moves(self):
        driver = self.driver()
        found = self.settle(driver)
        # GPU 2 took the first allowed type; nothing else moved.
        self.assertEqual(6, found[(L40S[2], 'L40S-8Q')][0])
        self.assertEqual([], self.released)
        # Demand for 12Q: Placement has all four of GPU 0 claimed.
        self.allocations[self.provider(driver, L40S[0], 'L40S-12Q')] = 4
        old = self.provider(driver, L40S[1], 'L40S-8Q')
        found = self.run_pass(driver)
        self.assertEqual([L40S[1]], self.released)
        self.assertEqual({0, TYPE_12Q}, self.held_types(L40S[1]))
        self.assertEqual(4, found[(L40S[1], 'L40S-12Q')][0])
        self.assertNotIn((L40S[1], 'L40S-8Q'), found)
        # The old provider (the 2 VFs GPU 1 held) stays closed until
        # Cyborg deletes it.
        self.assertEqual(2, self.inventories[old]['reserved'])
        self.assertEqual(1, len(self.log_lines(
            're-typed from L40S-8Q to L40S-12Q')))
        # Steady: no further move, and GPUs with guests were never
        # touched.
        for _ in range(3):
            self.run_pass(driver)
        self.assertEqual([L40S[1]], self.released)
        self.assertNotIn(L40S[0][:10], [a[:10] for a, t in self.writes])
        self.assertNotIn('0000:ca', [a[:7] for a, t in self.writes])
        self.assertEqual({TYPE_12Q}, self.held_types(L40S[0]) - {0})

    def test_the_policy_sees_the_gpus_link_domain(self):
        driver = self.driver()
        self.settle(driver)
        gpu = driver.known_gpu(L40S[1])
        # pcie-l40s has no NVLink: no clique, so a domain of its own.
        self.assertEqual([None], [u.link_domain for u in driver._uses(gpu)])
        linked = dataclasses.replace(gpu, link_domain='3')
        self.assertEqual([('L40S-8Q', '3')], [
            (u.kind, u.link_domain) for u in driver._uses(linked)])

    def test_a_claim_racing_the_hold_leaves_the_gpu_as_it_was(self):
        driver, old = self.demand_for_12q()
        put = []

        def claim_lands(driver_, name, resource_class, record, reserved):
            # Placement took a claim after the usage was read: the
            # generation moved and the PUT is refused.
            put.append(reserved)
            raise RuntimeError('Placement answered 409')

        self.useFixture(fixtures.MockPatchObject(
            type(driver), 'set_reserved', claim_lands))
        found = self.run_pass(driver)
        self.assertEqual([], self.released)
        self.assertEqual([2], put)
        self.assertEqual({TYPE_8Q}, self.held_types(L40S[1]) - {0})
        self.assertEqual(2, found[(L40S[1], 'L40S-8Q')][0])
        self.assertEqual(0, self.inventories[old]['reserved'])

    def test_a_claim_seen_after_the_hold_is_given_back(self):
        driver, old = self.demand_for_12q()
        real_set = type(driver).set_reserved

        def claim_before_put(driver_, name, resource_class, record,
                             reserved):
            real_set(driver_, name, resource_class, record, reserved)
            if name == old and reserved:
                self.allocations[old] = 1

        self.useFixture(fixtures.MockPatchObject(
            type(driver), 'set_reserved', claim_before_put))
        self.run_pass(driver)
        self.assertEqual([], self.released)
        self.assertEqual(0, self.inventories[old]['reserved'])
        self.assertEqual({TYPE_8Q}, self.held_types(L40S[1]) - {0})

    def test_a_failed_release_changes_nothing_on_other_gpus(self):
        driver, old = self.demand_for_12q()

        def refuse(pf):
            raise privsep.DeviceBusy('GPU %s: VF open' % pf)

        driver._release_gpu = refuse
        found = self.run_pass(driver)
        self.assertEqual(0, self.inventories[old]['reserved'])
        self.assertEqual(2, found[(L40S[1], 'L40S-8Q')][0])
        self.assertEqual((4, 2), found[(L40S[0], 'L40S-12Q')][:2])
        self.assertEqual(1, len(self.log_lines('VF open')))

    def test_unreadable_placement_moves_nothing(self):
        driver, _old = self.demand_for_12q()

        def unreadable(driver_, name, resource_class):
            raise RuntimeError('Placement answered 503')

        self.useFixture(fixtures.MockPatchObject(
            type(driver), 'placement_inventory', unreadable))
        self.run_pass(driver)
        self.assertEqual([], self.released)

    def test_a_restart_keeps_the_types_and_honours_the_hold(self):
        driver, old = self.demand_for_12q()
        self.run_pass(driver)
        self.assertEqual([L40S[1]], self.released)
        new = self.provider(driver, L40S[1], 'L40S-12Q')
        # The conductor deleted GPU 1's L40S-8Q; now every L40S-12Q is
        # claimed and idle GPU 2 (L40S-8Q) could follow.
        del self.inventories[old]
        self.allocations[new] = 4
        restarted = self.driver()
        self.step = 1.0
        for _ in range(3):
            found = self.run_pass(restarted)
            self.assertEqual(4, found[(L40S[1], 'L40S-12Q')][0])
            self.assertEqual(6, found[(L40S[2], 'L40S-8Q')][0])
        # The restarted agent cannot date GPU 2's last change: it holds
        # it from its first sight, then lets it go.
        self.assertEqual([L40S[1]], self.released)
        self.now += HOLD
        self.run_pass(restarted)
        self.assertEqual([L40S[1], L40S[2]], self.released)

    # Classes of fault a move can meet: Placement's answers (a conflict,
    # a server error, a timeout), bad data, a bug, the OS, the daemon.
    FAULTS = (RuntimeError('Placement answered 409'),
              cyborg_exception.PlacementServerError(),
              keystone_exceptions.ConnectTimeout('placement timed out'),
              KeyError('inventories'), TypeError('not subscriptable'),
              OSError(5, 'Input/output error'),
              privsep.DeviceBusy('VF 0000:31:00.4 open'))

    def faulty_placement(self, driver, old, point, error, times=1):
        """Placement raising ``error`` at ``point`` of GPU 1's move, for
        ``times`` calls: ``hold write`` (the write is refused),
        ``landed write`` (the write lands, then the answer is lost),
        ``hold read`` (the usage read after the write).
        """
        real_set = type(driver).set_reserved
        real_read = type(driver).placement_inventory
        left = [times]

        def fire():
            if left[0] <= 0:
                return False
            left[0] -= 1
            return True

        def set_reserved(driver_, name, resource_class, record, reserved):
            if name == old and reserved and point != 'hold read' and fire():
                if point == 'landed write':
                    real_set(driver_, name, resource_class, record, reserved)
                raise error
            real_set(driver_, name, resource_class, record, reserved)

        def read(driver_, name, resource_class):
            if (name == old and point == 'hold read' and
                    self.inventories[old]['reserved'] and fire()):
                raise error
            return real_read(driver_, name, resource_class)

        self.useFixture(fixtures.MockPatchObject(
            type(driver), 'set_reserved', set_reserved))
        self.useFixture(fixtures.MockPatchObject(
            type(driver), 'placement_inventory', read))

    def assert_gpu_1_kept_its_type(self, found, old):
        """GPU 1 kept L40S-8Q, its provider is open again, and the report
        has every GPU with its units.
        """
        self.assertEqual([], self.released)
        self.assertEqual({TYPE_8Q}, self.held_types(L40S[1]) - {0})
        self.assertEqual(0, self.inventories[old]['reserved'])
        self.assertEqual({(L40S[0], 'L40S-12Q'): 4, (L40S[1], 'L40S-8Q'): 2,
                          (L40S[2], 'L40S-8Q'): 6, (L40S[3], 'L40S-24C'): 1},
                         {key: value[0] for key, value in found.items()})

    def test_every_fault_of_placement_in_a_move_is_contained(self):
        driver, old = self.demand_for_12q()
        for point in ('hold write', 'landed write', 'hold read'):
            for error in self.FAULTS:
                # Each pass plans the same move again: the next fault.
                self.faulty_placement(driver, old, point, error)
                found = self.run_pass(driver)
                self.assert_gpu_1_kept_its_type(found, old)
                self.assertEqual(1, len(self.log_lines(
                    'moving it to L40S-12Q failed: %s'
                    % type(error).__name__)), (point, error))
                self.log.reset_output()
        # The fault gone, the next pass moves it.
        self.faulty_placement(driver, old, 'hold write', None, times=0)
        self.run_pass(driver)
        self.assertEqual([L40S[1]], self.released)

    def test_a_hold_that_cannot_be_put_back_is_set_right_next_pass(self):
        driver, old = self.demand_for_12q()
        # The read after the hold fails, and so does the read of the
        # clean-up: the provider stays closed for now.
        self.faulty_placement(
            driver, old, 'hold read',
            keystone_exceptions.ConnectTimeout('placement'), times=2)
        self.run_pass(driver)
        self.assertEqual([], self.released)
        self.assertEqual(2, self.inventories[old]['reserved'])
        # Demand gone: the next agent pass (discover) reserves from
        # Placement's usage again, and GPU 1's provider opens.
        self.allocations.clear()
        driver.discover()
        self.assertEqual(0, self.inventories[old]['reserved'])
        self.assertEqual({TYPE_8Q}, self.held_types(L40S[1]) - {0})

    def test_every_fault_of_the_release_is_contained(self):
        driver, old = self.demand_for_12q()
        for error in self.FAULTS + (ValueError('bad daemon answer'),):
            def refuse(pf, error=error):
                raise error

            driver._release_gpu = refuse
            found = self.run_pass(driver)
            self.assert_gpu_1_kept_its_type(found, old)
            self.assertEqual(1, len(self.log_lines(
                'moving it to L40S-12Q failed: %s' % type(error).__name__)))
            self.log.reset_output()

    def test_a_stop_after_the_release_gives_the_vfs_their_type_back(self):
        # The release emptied GPU 1's VFs, then the move was stopped (a
        # cancellation of the agent's worker, not an error): before, the
        # rest of the pass was skipped, GPU 1 hosted no type at the scan
        # and left the report while its provider was open again.
        for name, make in sorted(faults.ABORTS.items()):
            driver, old = self.demand_for_12q()

            def stopped(pf, make=make):
                self.release(pf)
                raise make()

            driver._release_gpu = stopped
            self.now += self.step
            devices = driver.discover()
            self.assertEqual(4, len(devices), name)
            self.assertEqual({TYPE_8Q}, self.held_types(L40S[1]) - {0},
                             name)
            self.assertEqual(0, self.inventories[old]['reserved'], name)
            self.assertIn('the read ended with %s' % type(make()).__name__,
                          self.log.output)
            # Set up again for the next stop.
            self.setUp_host()

    def setUp_host(self):
        for address in list(self.inventories):
            self.inventories[address]['reserved'] = 0
        self.allocations.clear()
        self.env = vgpu_tests.DriverTestCase.env(self, 'pcie-l40s')
        self.sysfs = sysfs_adapter.Sysfs(self.env.sysfs_root)
        self.offers = hosts.VfOffers(self.env.sysfs_root)
        self.released = []

    def test_a_gpu_vanishing_between_plan_and_move(self):
        driver, old = self.demand_for_12q()
        data = vgpu_tests.host_data('pcie-l40s')
        data['nvml']['devices'][1]['lost'] = True

        def vanish(pf):
            # The PF leaves sysfs and NVML as the move starts.
            os.unlink(os.path.join(self.env.sysfs_root, 'bus', 'pci',
                                   'devices', pf))
            driver._nvml = type(driver._nvml)(fake_nvml.FakeNvml(
                data['nvml']))
            self.release(pf)

        driver._release_gpu = vanish
        self.run_pass(driver)
        host = driver.collect()
        self.assertEqual(0, self.inventories[old]['reserved'])
        self.assertEqual(1, len(self.log_lines(
            'moving it to L40S-12Q failed: InvalidPrivilegedRequest')))
        # Still reported, unhealthy: nothing in use, nothing offered.
        gpu = next(g for g in host.gpus if g.address == L40S[1])
        self.assertFalse(gpu.healthy)
        self.assertEqual([L40S[0], L40S[1], L40S[2], L40S[3]],
                         [g.address for g in host.gpus])

    def test_a_fault_while_planning_moves_nothing_and_loses_nothing(self):
        driver, old = self.demand_for_12q()

        def broken(*args):
            raise TypeError("'NoneType' object is not iterable")

        self.useFixture(fixtures.MockPatchObject(retype, 'plan', broken))
        found = self.run_pass(driver)
        self.assert_gpu_1_kept_its_type(found, old)
        self.assertEqual(1, len(self.log_lines(
            'failed: TypeError: \'NoneType\' object is not iterable; no '
            'GPU changed type')))

    def test_a_placement_read_that_hangs_counts_as_in_use(self):
        driver, old = self.demand_for_12q()
        self.conf.config(group='gpu_partitions', gpu_scan_timeout=0.2)
        real_read = type(driver).placement_inventory

        def hang(driver_, name, resource_class):
            if name == old:
                time.sleep(1)
            return real_read(driver_, name, resource_class)

        self.useFixture(fixtures.MockPatchObject(
            type(driver), 'placement_inventory', hang))
        found = self.run_pass(driver)
        self.assert_gpu_1_kept_its_type(found, old)
        self.assertEqual(1, len(self.log_lines('gpu_scan_timeout')))

    def test_options_exclude_each_other(self):
        self.conf.config(group='nvidia_vgpu',
                         vgpu_type=['NVIDIA L40S=L40S-8Q'])
        self.assertRaises(vgpu_types.DeclarationError, self.driver)
        self.conf.config(group='nvidia_vgpu', vgpu_type=[])
        self.conf.config(group='gpu_partitions', follow_demand_low=0.9)
        self.assertRaises(vgpu_types.DeclarationError, self.driver)


class FailingDict(dict):
    """Placement as a fake dict that raises ``error`` at every read."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def get(self, *args):
        raise self.error


class FollowDemandMdevTest(vgpu_tests.DriverTestCase):
    """On mdev hosts (``pcie-a100``: GPU 0 runs two A100D-20C, GPU 1 is
    idle) a type is only what the driver offers: nothing is written. A
    new driver is a restarted agent: Placement keeps what the old one
    reported.
    """

    def setUp(self):
        super().setUp()
        self.conf.config(group='nvidia_vgpu', type_mode='follow_demand',
                         allowed_types=[
                             '0000:01:00.0=A100D-20C,A100D-10C',
                             '0000:41:00.0=A100D-10C,A100D-20C'])
        self.env = hosts.shared_env('pcie-a100')
        self.now = 0.0

    def driver(self):
        driver = super().driver(self.env)
        driver._release_gpu = self.fail
        driver._clock = lambda: self.now
        return driver

    def provider(self, address, type_name):
        return placement_traits.provider_name(self.env.hostname, address,
                                              type_name)

    def in_placement(self, address, type_name, total, used=0, reserved=0):
        """Placement holds a provider of ``type_name`` for the GPU."""
        rc = placement_traits.vgpu_resource_class(type_name)
        self.gpu_providers.setdefault(address, {})[
            self.provider(address, type_name)] = {rc: (used, {
                'total': total, 'reserved': reserved})}

    def moved_to_20c(self):
        """A driver that moved idle GPU 1 from A100D-10C to A100D-20C
        (Placement has GPU 0's four claimed), and the old provider.
        """
        driver = self.driver()
        found = self.slices(driver.collect())
        self.assertEqual(8, found[(A100[1], 'A100D-10C')][0])
        old = self.provider(A100[1], 'A100D-10C')
        self.inventories[old] = {'total': 8, 'reserved': 0}
        claimed = self.provider(A100[0], 'A100D-20C')
        # Two guests the hardware shows (reserved) and two claims.
        self.inventories[claimed] = {'total': 4, 'reserved': 2}
        self.allocations[claimed] = 2
        self.now += HOLD
        driver.apply()
        return driver, old

    def test_the_idle_gpu_offers_the_type_in_demand(self):
        driver, old = self.moved_to_20c()
        found = self.slices(driver.collect())
        self.assertEqual({(A100[0], 'A100D-20C'), (A100[1], 'A100D-20C')},
                         set(found))
        self.assertEqual((4, 0), found[(A100[1], 'A100D-20C')][:2])
        self.assertEqual(8, self.inventories[old]['reserved'])
        self.assertEqual([], self.writes)

    def test_a_restart_keeps_the_type_demand_chose(self):
        driver, _old = self.moved_to_20c()
        driver.collect()
        # Cyborg's conductor deleted the old provider and made the new.
        self.in_placement(A100[1], 'A100D-20C', 4)
        self.in_placement(A100[0], 'A100D-20C', 4, used=2, reserved=2)
        restarted = self.driver()
        for _ in range(2):
            restarted.apply()
            found = self.slices(restarted.collect())
            self.assertEqual((4, 0), found[(A100[1], 'A100D-20C')][:2])
            self.assertNotIn((A100[1], 'A100D-10C'), found)
        self.assertEqual(1, len(self.log_lines(
            'GPU 0000:41:00.0 hosts no vGPU type and offers A100D-20C '
            'again')))

    def test_a_restart_offers_the_first_allowed_type_to_a_new_gpu(self):
        found = self.slices(self.driver().collect())
        self.assertEqual((8, 0), found[(A100[1], 'A100D-10C')][:2])
        self.assertEqual([], self.log_lines('again'))

    def test_placement_unreadable_at_a_restart_sends_a_stub_then_reads(self):
        self.in_placement(A100[1], 'A100D-20C', 4)
        readable = self.gpu_providers
        self.gpu_providers = FailingDict(
            keystone_exceptions.ConnectTimeout('placement'))
        restarted = self.driver()
        host = restarted.collect()
        gpu = next(g for g in host.gpus if g.address == A100[1])
        # Cyborg keeps what it holds for a stub: nothing is deleted.
        self.assertTrue(gpu.stub)
        self.assertEqual({A100[0], A100[1]}, {g.address for g in host.gpus})
        self.assertEqual(1, len(self.log_lines('ConnectTimeout')))
        self.gpu_providers = readable
        found = self.slices(restarted.collect())
        self.assertEqual((4, 0), found[(A100[1], 'A100D-20C')][:2])

    def test_what_placement_shows_is_checked_against_allowed_types(self):
        # A type the GPU is not allowed, and a provider named for an
        # allowed type with another resource class: neither is taken.
        self.in_placement(A100[1], 'A100D-40C', 2)
        self.gpu_providers[A100[1]][self.provider(A100[1], 'A100D-20C')] = {
            placement_traits.vgpu_resource_class('A100D-10C'): (0, {
                'total': 4, 'reserved': 0})}
        found = self.slices(self.driver().collect())
        self.assertEqual((8, 0), found[(A100[1], 'A100D-10C')][:2])
        self.assertEqual(1, len(self.log_lines(
            'are not of the types nvidia_vgpu.allowed_types allows')))

    def test_a_claim_on_a_type_not_allowed_keeps_the_gpu_a_stub(self):
        self.in_placement(A100[1], 'A100D-40C', 2, used=1)
        host = self.driver().collect()
        gpu = next(g for g in host.gpus if g.address == A100[1])
        self.assertTrue(gpu.stub)
        self.assertEqual(1, len(self.log_lines('has claims but is not one')))

    def test_a_provider_held_closed_by_an_unfinished_move_loses(self):
        # The agent stopped after the move's hold, before the conductor
        # deleted the old provider: the open one is the GPU's type.
        self.in_placement(A100[1], 'A100D-10C', 8, reserved=8)
        self.in_placement(A100[1], 'A100D-20C', 4)
        found = self.slices(self.driver().collect())
        self.assertEqual((4, 0), found[(A100[1], 'A100D-20C')][:2])
        # Both open: which was last cannot be told; the first allowed.
        self.in_placement(A100[1], 'A100D-10C', 8)
        found = self.slices(self.driver().collect())
        self.assertEqual((8, 0), found[(A100[1], 'A100D-10C')][:2])
        self.assertEqual(1, len(self.log_lines(
            'Placement has providers of A100D-10C, A100D-20C')))
