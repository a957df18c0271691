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
"""Busy units and claims in every order: Placement never offers a unit
Cyborg cannot bind to a free VF.

One GPU of four VFs whose guests partly ran before its provider existed
(an adopted host), driven by the real scan skeleton
(:class:`base.GpuPartitionDriver`) against a model of what it talks to:
Placement (inventory with its generation, usage, claims that land between
the driver's read and its write, reads that fail) and Cyborg's conductor
as 17.0.0 behaves (an attach handle keeps the ``in_use`` of the report
that first lists it; only an unbind frees it; a handle left out would
delete another). After every step, whatever the order of claims, guests
starting and stopping, agent restarts and Placement outages:

* safety: what Placement offers (``total - reserved - used``) is at most
  the VFs Cyborg can bind that are free in the hardware, and ``reserved``
  never exceeds ``total``;
* liveness: once the guests that ran before the provider are gone, an
  agent that never restarted reserves nothing; one that restarted
  reserves no more than the previous agent did.
"""

import itertools

from cyborg_gpu_drivers import base as driver_base
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import report
import placement_traits as names
from tests.unit.cyborg_gpu_drivers import base

ADDRESS = '0000:1b:00.0'
VFS = ['0000:1b:00.%d' % function for function in range(4, 8)]
INFO = [report.attach_info(inventory.AttachHandle(inventory.PCI, vf))
        for vf in VFS]
KIND = 'MI300X-CPX'
RC = names.vf_resource_class('AMD Instinct MI300X', 'CPX')


class Model:
    """The hardware, Placement and Cyborg of one four-VF GPU."""

    def __init__(self, outside):
        # VFs busy with guests no claim holds.
        self.outside = set(outside)
        # Claims in order: [VF Cyborg bound, guest started].
        self.claims = []
        # Placement's inventory ({'total', 'reserved', 'generation'}),
        # None before Cyborg's conductor creates the provider.
        self.record = None
        self.placement_down = False
        self.claim_after_read = False
        # Cyborg: VF -> in_use of its attach handle.
        self.handles = {}
        self.faults = []
        self.restarted = False
        self.reserved_at_restart = 0
        self.agent = ModelDriver(self)

    def busy(self, vf):
        return vf in self.outside or [vf, True] in self.claims

    def gpu(self):
        handles = [inventory.AttachHandle(inventory.PCI, vf,
                                          in_use=self.busy(vf))
                   for vf in VFS]
        return inventory.Gpu(
            address=ADDRESS, vendor_id='1002', device_id='74a1',
            model='AMD Instinct MI300X', memory_mib=196592,
            slices=[inventory.Slice(name=KIND, resource_class=RC,
                                    traits=[], handles=handles,
                                    total=len(handles))])

    # --- Placement ---------------------------------------------------------

    def offered(self):
        return (self.record['total'] - self.record['reserved']
                - len(self.claims))

    def read(self):
        if self.placement_down:
            raise RuntimeError('Placement unreachable')
        if self.record is None:
            return None
        found = len(self.claims), {
            'total': self.record['total'],
            'reserved': self.record['reserved'],
            'resource_provider_generation': self.record['generation']}
        if self.claim_after_read:
            self.claim_after_read = False
            self.claim()
        return found

    def write_reserved(self, record, reserved):
        if self.placement_down:
            raise RuntimeError('Placement unreachable')
        if reserved > record['total']:
            self.faults.append('reserved %d above total' % reserved)
        if record['resource_provider_generation'] != \
                self.record['generation']:
            raise RuntimeError('Placement answered 409')
        self.record['reserved'] = reserved
        self.record['generation'] += 1

    # --- Nova and Cyborg ---------------------------------------------------

    def claim(self):
        """A boot Placement admits, bound by Cyborg at once."""
        if self.record is None or self.offered() < 1:
            return
        self.record['generation'] += 1
        free = sorted(vf for vf, in_use in self.handles.items()
                      if not in_use)
        if not free:
            self.faults.append('bind failed: no free attach handle')
            return
        if self.busy(free[0]):
            self.faults.append('bound %s, busy in the hardware' % free[0])
        self.handles[free[0]] = True
        self.claims.append([free[0], False])

    def start(self):
        waiting = [claim for claim in self.claims if not claim[1]]
        if waiting:
            waiting[0][1] = True

    def delete(self):
        if self.claims:
            vf, _started = self.claims.pop(0)
            self.handles[vf] = False
            self.record['generation'] += 1

    def outside_stop(self):
        if self.outside:
            self.outside.remove(min(self.outside))

    def restart(self):
        if not self.restarted:
            self.reserved_at_restart = self.record['reserved']
        self.restarted = True
        self.agent = ModelDriver(self)

    def scan(self):
        """One agent pass: the driver's discover(), then Cyborg's
        conductor stores the report.
        """
        for device in self.agent.discover():
            if device.stub:
                continue
            [deployable] = device.deployable_list
            if self.record is None:
                self.record = {'total': deployable.num_accelerators,
                               'reserved': 0, 'generation': 0}
            reported = {VFS[INFO.index(handle.attach_info)]: handle.in_use
                        for handle in deployable.attach_handle_list}
            for vf in sorted(set(self.handles) - set(reported)):
                self.faults.append('%s left out after it was reported' % vf)
            for vf, in_use in reported.items():
                self.handles.setdefault(vf, in_use)

    def scan_placement_down(self):
        self.placement_down = True
        self.scan()
        self.placement_down = False

    def claim_during_scan(self):
        self.claim_after_read = True
        self.scan()
        self.claim_after_read = False

    # --- what is checked ---------------------------------------------------

    def bindable(self):
        """VFs Cyborg can bind that are free in the hardware."""
        return sum(1 for vf, in_use in self.handles.items()
                   if not in_use and not self.busy(vf))

    def check(self, test, steps):
        test.assertEqual([], self.faults, steps)
        if self.record is None:
            return
        test.assertLessEqual(self.record['reserved'], self.record['total'],
                             steps)
        test.assertLessEqual(self.offered(), self.bindable(), steps)


class ModelDriver(driver_base.GpuPartitionDriver):
    """The real skeleton; the GPU and Placement are the model's."""

    DRIVER_NAME = 'model'

    def __init__(self, model):
        super().__init__(hostname='h')
        self.model = model

    def scan(self, session):
        return {ADDRESS: self.model.gpu()}

    def placement_inventory(self, provider_name, resource_class):
        return self.model.read()

    def provider_in_placement(self, provider_name):
        return self.model.read() is not None

    def set_reserved(self, provider_name, resource_class, record, reserved):
        self.model.write_reserved(record, reserved)


EVENTS = ('scan', 'claim', 'claim_during_scan', 'start', 'delete',
          'outside_stop', 'restart', 'scan_placement_down')


class OverCommitMatrixTest(base.DriverTestCase):

    def adopted(self, outside, first_scan):
        """The host's first agent passes with ``outside`` VFs busy, up to
        the one after Cyborg's conductor created the provider (created
        with nothing reserved: the driver's next pass reserves).
        """
        model = Model(outside)
        getattr(model, first_scan)()
        while model.record is None:
            model.scan()
        model.scan()
        model.check(self, (outside, first_scan))
        return model

    def run_steps(self, outside, first_scan, steps):
        model = self.adopted(outside, first_scan)
        for step in steps:
            getattr(model, step)()
            model.check(self, (outside, first_scan) + steps)
        # Liveness: the guests that ran before the provider stop.
        model.outside = set()
        model.scan()
        model.check(self, (outside, first_scan) + steps + ('end',))
        if model.restarted:
            self.assertLessEqual(model.record['reserved'],
                                 model.reserved_at_restart, steps)
        else:
            self.assertEqual(0, model.record['reserved'], steps)
        return model

    def test_every_order_of_three_steps(self):
        # 2 adoptions x the 8**3 orders with at most one restart (a second
        # one after the outside guests stopped is a known limit, see
        # _reserve_busy_units); each run asserts after every step.
        for outside, first_scan in (({VFS[0], VFS[1]}, 'scan'),
                                    ({VFS[0], VFS[1], VFS[2]},
                                     'scan_placement_down')):
            for steps in itertools.product(EVENTS, repeat=3):
                if steps.count('restart') < 2:
                    self.run_steps(outside, first_scan, steps)

    def test_named_windows(self):
        """The orders that opened a window before, step by step."""
        outside = {VFS[0], VFS[1]}
        for steps in (
                # Two claims not started beside two outside guests: busy
                # minus used was 0, Placement offered 2 more.
                ('claim', 'claim', 'scan', 'claim'),
                # The claims' guests start, then the outside ones stop.
                ('claim', 'scan', 'start', 'scan', 'outside_stop', 'scan',
                 'claim', 'claim'),
                # A restart while outside guests run: their VFs are
                # reported in use and stay in use in Cyborg once freed.
                ('claim', 'claim', 'restart', 'scan', 'outside_stop',
                 'outside_stop', 'scan', 'claim'),
                # A restart whose first scans cannot read Placement.
                ('restart', 'scan_placement_down', 'outside_stop',
                 'outside_stop', 'scan', 'claim', 'claim', 'claim'),
                # A claim lands between the driver's read and its write.
                ('claim_during_scan', 'claim_during_scan', 'claim')):
            model = self.run_steps(outside, 'scan', steps)
            self.assertLessEqual(len(model.claims), 4)

    def test_reserved_follows_the_held_units(self):
        model = self.adopted({VFS[0], VFS[1]}, 'scan')
        self.assertEqual(2, model.record['reserved'])
        model.claim()
        model.claim()
        model.scan()
        # Two claims not started: still the two outside VFs, and nothing
        # more is offered.
        self.assertEqual(2, model.record['reserved'])
        self.assertEqual(0, model.offered())
        model.outside_stop()
        model.scan()
        self.assertEqual(1, model.record['reserved'])
        self.assertIn('a unit held by a guest Cyborg did not bind is free',
                      self.log.output)
        # After a restart the last VF held outside is reported in use
        # (Cyborg keeps it busy), so it stays reserved once freed.
        model.restart()
        model.scan()
        model.outside_stop()
        model.scan()
        self.assertEqual(1, model.record['reserved'])
        self.assertEqual(1, model.offered())
        self.assertEqual(1, model.bindable())

    def test_unknown_placement_changes_nothing(self):
        model = Model({VFS[0], VFS[1]})
        model.scan_placement_down()
        # Whether the provider exists is unknown: the GPU goes as a stub,
        # so no busy VF reaches Cyborg before it is known to be held.
        self.assertEqual({}, model.handles)
        self.assertIsNone(model.record)
        model.scan()
        model.scan()
        self.assertEqual({VFS[2]: False, VFS[3]: False}, model.handles)
        self.assertEqual(2, model.record['reserved'])
        model.placement_down = True
        model.scan()
        model.placement_down = False
        self.assertEqual(2, model.record['reserved'])

    def test_a_restart_carries_no_reservation_without_busy_units(self):
        # A hold the last agent could not put back (reserved = total on
        # an idle provider), or an operator's: no busy unit can be stuck
        # in Cyborg behind it, so the restarted agent does not keep it.
        model = self.adopted(set(), 'scan')
        model.record['reserved'] = model.record['total']
        model.restart()
        model.scan()
        self.assertEqual(0, model.record['reserved'])
        self.assertEqual(4, model.offered())
