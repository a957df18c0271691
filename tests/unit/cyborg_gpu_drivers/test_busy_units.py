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
"""Units in use without allocations are reserved in Placement.

Each of the three drivers runs over a reference host whose guests were
running before its providers existed in Placement (an adopted host): the
hardware shows units in use, Placement has no allocation for them.
"""

import os

import fixtures

from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts
from tests.unit.cyborg_gpu_drivers import base

MIG = 'gpu_partitions_nvidia_mig'
VGPU = 'gpu_partitions_nvidia_vgpu'
AMD = 'gpu_partitions_amd_mxgpu'


def busy(devices):
    """``{provider name: (total, units in use)}`` of a report."""
    return {deployable.name: (deployable.num_accelerators, sum(
        1 for handle in deployable.attach_handle_list if handle.in_use))
        for device in devices if not device.stub
        for deployable in device.deployable_list}


class BusyUnitsTest(base.DriverTestCase):

    def agent_driver(self, host_name, driver_name, prepare=None):
        env = reference_hosts.load(host_name).materialize(
            self.useFixture(fixtures.TempDir()).path)
        if prepare:
            prepare(env)
        return env, fixture_drivers.build(driver_name, env,
                                          reserves_in_placement=True)

    def adopt(self, driver):
        """The first report creates the providers, with nothing
        allocated and nothing reserved (what Cyborg's conductor writes).
        """
        units = busy(driver.discover())
        self.assertEqual({}, self.inventories)
        for name, (total, _in_use) in units.items():
            self.inventories[name] = {'total': total, 'reserved': 0}
        return units

    def check_driver(self, host_name, driver_name, prepare=None):
        _env, driver = self.agent_driver(host_name, driver_name, prepare)
        units = self.adopt(driver)
        in_use = {name: used for name, (_total, used) in units.items()
                  if used}
        self.assertNotEqual({}, in_use)
        driver.discover()
        self.assertEqual(
            {name: used for name, (_t, used) in units.items()},
            {name: record['reserved']
             for name, record in self.inventories.items()})
        self.assertIn('hold no allocation in Placement', self.log.output)
        # An allocation appears for one of them (a guest Nova knows of):
        # its unit is no longer reserved, the others stay.
        name = sorted(in_use)[0]
        self.allocations[name] = 1
        driver.discover()
        self.assertEqual(in_use[name] - 1,
                         self.inventories[name]['reserved'])
        # Cyborg's conductor rewrote the inventory (reserved back to 0):
        # the next scan reserves again.
        other = sorted(in_use)[-1]
        self.inventories[other]['reserved'] = 0
        driver.discover()
        self.assertEqual(in_use[other] - self.allocations.get(other, 0),
                         self.inventories[other]['reserved'])
        return driver

    def test_mig_driver(self):
        self.check_driver('hgx-h200', MIG)

    def test_vgpu_driver_vendor_vfio(self):
        self.check_driver('pcie-l40s', VGPU)

    def test_vgpu_driver_mdev(self):
        self.check_driver('pcie-a100', VGPU)

    def test_busy_vf_whose_physfn_names_nothing_stays_in_use(self):
        # Found by a probe: the busy VF 0000:17:00.4's ``physfn`` link
        # missing or dangling listed it under a stand-in name, and its
        # in-use handle was gone from the report.
        for spoil in ('missing', 'dangling'):
            env, driver = self.agent_driver('pcie-l40s', VGPU)
            good = busy(driver.discover())
            link = os.path.join(env.sysfs_root, 'bus', 'pci', 'devices',
                                '0000:17:00.4', 'physfn')
            os.unlink(link)
            if spoil == 'dangling':
                os.symlink('../no-such-device', link)
            self.assertEqual(good, busy(driver.discover()), spoil)
            self.assertNotEqual({}, {name: used for name, (_total, used)
                                     in good.items() if used})

    def test_amd_driver_busy_vfs_reserved_until_freed(self):
        vfs = ('0000:05:02.0', '0000:05:02.3', '0000:26:02.1')

        def open_vfs(env, count='1'):
            for vf in vfs:
                with open(os.path.join(env.sysfs_root, 'bus', 'pci',
                                       'devices', vf, 'enable'), 'w') as f:
                    f.write(count + '\n')

        env, driver = self.agent_driver('mi300x-cpx', AMD, open_vfs)
        units = self.adopt(driver)
        driver.discover()
        reserved = {name: record['reserved']
                    for name, record in self.inventories.items()
                    if record['reserved']}
        self.assertEqual([2, 1], sorted(reserved.values(), reverse=True))
        self.assertEqual({name: used for name, (_t, used) in units.items()
                          if used}, reserved)
        # The guests stop: the VFs are freed and offered again.
        open_vfs(env, '0')
        driver.discover()
        self.assertEqual(
            [0] * len(self.inventories),
            [record['reserved'] for record in self.inventories.values()])
        self.assertIn('units in use without an allocation freed',
                      self.log.output)

    def test_nothing_reserved_while_providers_are_absent_or_allocated(self):
        _env, driver = self.agent_driver('hgx-h200', MIG)
        units = busy(driver.discover())
        for name, (total, used) in units.items():
            self.inventories[name] = {'total': total, 'reserved': 0}
            self.allocations[name] = used
        driver.discover()
        self.assertEqual({0}, {record['reserved']
                               for record in self.inventories.values()})

    def test_tools_never_write_to_placement(self):
        _env, driver = self.agent_driver('hgx-h200', MIG)
        driver.reserves_in_placement = False
        units = self.adopt(driver)
        driver.discover()
        self.assertEqual({0}, {record['reserved']
                               for record in self.inventories.values()})
        self.assertTrue(any(used for _total, used in units.values()))


def handles(devices):
    """``{(provider name, attach_info): in_use}`` of a report."""
    return {(deployable.name, handle.attach_info): handle.in_use
            for device in devices if not device.stub
            for deployable in device.deployable_list
            for handle in deployable.attach_handle_list}


class HeldOutsideTest(base.DriverTestCase):
    """Units in use when their provider first appears get no attach
    handle until freed: Cyborg's conductor keeps a handle's first
    ``in_use`` for ever, so a handle reported busy then would never be
    bindable.
    """

    VFS = ('0000:05:02.0', '0000:05:02.3')

    def setUp(self):
        super().setUp()
        self.env = reference_hosts.load('mi300x-cpx').materialize(
            self.useFixture(fixtures.TempDir()).path)
        self.open_vfs('1')
        self.driver = fixture_drivers.build(AMD, self.env,
                                            reserves_in_placement=True)
        self.provider_exists = lambda name: name in self.inventories

    def open_vfs(self, count, vfs=VFS):
        for vf in vfs:
            with open(os.path.join(self.env.sysfs_root, 'bus', 'pci',
                                   'devices', vf, 'enable'), 'w') as f:
                f.write(count + '\n')

    def report(self):
        devices = self.driver.discover()
        for device in devices:
            for deployable in device.deployable_list:
                self.inventories.setdefault(deployable.name, {
                    'total': deployable.num_accelerators, 'reserved': 0})
        return devices

    def test_busy_units_of_a_new_provider_wait_until_freed(self):
        first = self.report()
        totals = {d.name: d.num_accelerators for device in first
                  for d in device.deployable_list}
        # Every handle reported is free; the two busy VFs are missing but
        # still counted in the totals Placement gets.
        self.assertEqual({False}, set(handles(first).values()))
        self.assertEqual(sum(totals.values()) - 2, len(handles(first)))
        self.assertIn('2 units are in use by guests Cyborg did not bind',
                      self.log.output)
        # The providers exist now; the VFs stay busy and stay out.
        self.assertEqual(handles(first), handles(self.report()))
        self.assertEqual(
            [2], [record['reserved'] for record in self.inventories.values()
                  if record['reserved']])
        # One guest stops: its VF is reported, free.
        self.open_vfs('0', vfs=self.VFS[:1])
        freed = handles(self.report())
        self.assertEqual({False}, set(freed.values()))
        self.assertEqual(len(handles(first)) + 1, len(freed))
        self.assertIn('is free; reported to Cyborg, which can bind it now',
                      self.log.output)
        # A unit Cyborg bound (busy on an existing provider) is reported
        # in use, never left out.
        self.open_vfs('1', vfs=self.VFS[:1])
        again = handles(self.report())
        self.assertEqual(len(freed), len(again))
        self.assertEqual([True], [used for used in again.values() if used])

    def test_held_units_stay_held_while_their_gpu_is_a_stub(self):
        self.report()
        self.driver.scan = lambda session: {}
        self.report()
        del self.driver.scan
        # Readable again, still busy: still left out, not "freed".
        self.assertEqual({False}, set(handles(self.report()).values()))
        self.assertNotIn('which can bind it now', self.log.output)
