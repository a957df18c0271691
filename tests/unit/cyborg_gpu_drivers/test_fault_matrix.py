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
"""The drivers' fault matrix: every NVML call x every error class.

On each NVIDIA reference host, both NVIDIA drivers (as Cyborg's agent runs
them) scan with one GPU faulted: every NVML function they call about that
GPU raises each error class of :data:`faults.ERRORS` and each
BaseException of :data:`faults.ABORTS`, at a cold start (no last report)
and after a good scan. Functions called about no GPU (``nvmlInit``, vGPU
type facts) fail on every call. Each case must hold:

* ``discover()`` returns, no traceback is logged;
* no GPU of the good report is omitted (reported, unhealthy or stub);
* a GPU not faulted is reported exactly as in the good report (per-GPU
  containment), for faults about one GPU;
* no unit in use in the good report is reported free.

The counts of outcomes are printed (run with ``--subunit`` or see the
test's details) and written up in doc/source/reliability/drivers.inc.
"""

import collections
import copy
import os
import threading
from unittest import mock

import fixtures

from cyborg_gpu_drivers import base as driver_base
from cyborg_gpu_drivers import nvidia_mig
from cyborg_gpu_drivers import nvidia_vgpu
from gpu_partitions import reference_hosts
from tests.unit.cyborg_gpu_drivers import base
from tests.unit.cyborg_gpu_drivers import faults
from tests.unit.cyborg_gpu_drivers import hosts

DRIVERS = (nvidia_mig.NvidiaMigDriver, nvidia_vgpu.NvidiaVgpuDriver)
ERRORS = dict(faults.ERRORS, **faults.ABORTS)


def discover(env, nvml, drivers=None):
    """Both NVIDIA drivers' devices over ``env`` with ``nvml``; the
    drivers are kept for a next scan.
    """
    if drivers is None:
        drivers = [cls(hostname=env.hostname, nvml=nvml,
                       sysfs_root=env.sysfs_root,
                       libvirt_uri=env.libvirt_uri, read_only=True)
                   for cls in DRIVERS]
    else:
        for driver in drivers:
            driver._nvml = type(driver._nvml)(nvml)
    devices = []
    for driver in drivers:
        devices.extend(driver.discover())
    return devices, drivers


def view(devices):
    """``{cpid: (stub, {deployable: (total, in-use handles, handles)})}``
    with stubs merged under the real report of the same GPU.
    """
    found = {}
    for device in devices:
        deployables = {
            d.name: (d.num_accelerators,
                     sorted(h.attach_info for h in d.attach_handle_list
                            if h.in_use),
                     sorted(h.attach_info for h in d.attach_handle_list))
            for d in device.deployable_list}
        cpid = device.controlpath_id.cpid_info
        if cpid in found and device.stub:
            continue
        found[cpid] = (device.stub, deployables)
    return found


def in_use(deployables):
    return {info for _total, used, _all in deployables.values()
            for info in used}


class FaultMatrixTest(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        # No case hangs: a generous bound, so that a loaded test machine
        # never turns a slow read into a timeout.
        self.conf.config(group='gpu_partitions', gpu_scan_timeout=60)

    def run_matrix(self, host_name, gpu_index, error_name):
        """Every case of one host and one error class; the outcomes."""
        env = hosts.shared_env(host_name)
        section = reference_hosts.load(host_name).data['nvml']
        good, _ = discover(env, faults.FaultyNvml(section))
        good = view(good)
        faulted_bus = section['devices'][gpu_index]['pci_bus_id']
        faulted = next(cpid for cpid in good
                       if '"bus": "%s"' % faulted_bus[9:11].lower() in cpid)
        calls, host_calls = faults.gpu_calls(
            section, lambda nvml: discover(env, nvml), gpu_index)
        self.assertGreaterEqual(len(calls), 9, calls)
        outcomes = collections.Counter()
        for function in calls + host_calls:
            for start in ('cold', 'warm'):
                outcome = self.one_case(
                    env, section, good, faulted, function,
                    ERRORS[error_name],
                    None if function in host_calls else gpu_index, start)
                outcomes[('host call' if function in host_calls
                          else 'GPU call', start, outcome)] += 1
        self.addDetail('outcomes', _text('\n'.join(
            '%s %s: %s' % (host_name, error_name, ', '.join(
                '%s %s %s: %d' % (key + (count,))
                for key, count in sorted(outcomes.items()))))))
        # Every case ran: GPU calls and host calls, cold and warm.
        self.assertEqual(2 * (len(calls) + len(host_calls)),
                         sum(outcomes.values()))
        return outcomes

    def one_case(self, env, section, good, faulted, function, error,
                 gpu_index, start):
        where = '%s %s %s' % (start, function, error.__name__
                              if hasattr(error, '__name__') else error)
        drivers = None
        if start == 'warm':
            _, drivers = discover(env, faults.FaultyNvml(section))
        nvml = faults.FaultyNvml(section, function, error, gpu_index)
        lines = len(self.log.output)
        devices, drivers = discover(env, nvml, drivers)
        self.assertNotIn('Traceback', self.log.output[lines:], where)
        found = view(devices)
        # Nothing omitted; what was not reported before may come as a
        # stub only (a GPU whose owner the scan could not tell).
        self.assertEqual([], sorted(set(good) - set(found)), where)
        self.assertEqual([], [cpid for cpid in set(found) - set(good)
                              if not found[cpid][0]], where)
        for cpid, (stub, deployables) in found.items():
            if stub or cpid not in good:
                continue
            self.assertLessEqual(in_use(good[cpid][1]), in_use(deployables),
                                 '%s: %s' % (where, cpid))
            if gpu_index is not None and cpid != faulted:
                self.assertEqual(good[cpid], found[cpid],
                                 '%s: %s' % (where, cpid))
        stub, deployables = found[faulted]
        if nvml.injected == 0:
            return 'not reached'
        if stub:
            return 'stub'
        if deployables == good[faulted][1]:
            return 'tolerated'
        return 'unhealthy or degraded'


# One test per reference host and error class, so that stestr spreads
# them over its workers: test_<host>_<error>.
for _host, _gpu in (('hgx-h100', 0), ('pcie-l40s', 0), ('pcie-a100', 0)):
    for _error in ERRORS:
        def _test(self, host=_host, gpu=_gpu, error=_error):
            self.run_matrix(host, gpu, error)
        _test.__name__ = 'test_%s_%s' % (_host.replace('-', '_'), _error)
        setattr(FaultMatrixTest, _test.__name__, _test)


class HangTest(base.DriverTestCase):
    """One NVML call that blocks does not block the whole scan."""

    def test_blocked_call_costs_one_gpu(self):
        self.conf.config(group='gpu_partitions', gpu_scan_timeout=3)
        env = hosts.shared_env('hgx-h100')
        section = reference_hosts.load('hgx-h100').data['nvml']
        good = view(discover(env, faults.FaultyNvml(section))[0])
        release = threading.Event()
        self.addCleanup(release.set)
        nvml = faults.FaultyNvml(section, 'nvmlDeviceGetGpuInstances',
                                 gpu_index=2, hang=release)
        devices, drivers = discover(env, nvml)
        # discover() came back while the call is still blocked.
        self.assertFalse(release.is_set())
        found = view(devices)
        self.assertEqual(sorted(good), sorted(found))
        hung = next(cpid for cpid in found if '"bus": "%s"' % section[
            'devices'][2]['pci_bus_id'][9:11].lower() in cpid)
        self.assertTrue(found[hung][0])
        # The next scan does not pile a second read onto the hung GPU.
        injected = nvml.injected
        discover(env, nvml, drivers)
        self.assertEqual(injected, nvml.injected)
        self.assertIn('earlier read still has not returned',
                      self.log.output)


class AbortTest(base.DriverTestCase):
    """A BaseException from a read is that read's fault; one raised in
    the agent's own thread (its operator's Ctrl-C or stop) still stops it.
    """

    def test_read_abort_is_contained_but_the_operators_stop_is_not(self):
        env = hosts.shared_env('pcie-a100')
        section = reference_hosts.load('pcie-a100').data['nvml']
        for name, abort in faults.ABORTS.items():
            _, [_mig, driver] = discover(env, faults.FaultyNvml(section))
            good = driver.discover()

            def read():
                raise abort()
            self.assertEqual('unknown', driver.contained(
                'GPU x', read, failed='unknown'), name)
            self.assertIn('GPU x cannot be read: ReadAborted: GPU x: the '
                          'read ended with %s' % name, self.log.output)
            with mock.patch.object(driver_base.report, 'to_driver_devices',
                                   side_effect=abort()):
                self.assertRaises(type(abort()), driver.discover)
            self.assertTrue(good, name)
            self.assertEqual(len(good), len(driver.discover()), name)


class UnknownStateTest(base.DriverTestCase):
    """Unknown state counts as in use."""

    def test_active_vgpus_not_supported_keeps_busy_vfs_in_use(self):
        env = hosts.shared_env('hgx-h200')
        section = reference_hosts.load('hgx-h200').data['nvml']
        good = view(discover(env, faults.FaultyNvml(section))[0])
        blind = view(discover(env, faults.FaultyNvml(
            section, 'nvmlDeviceGetActiveVgpus',
            faults.ERRORS['NotSupported']))[0])
        self.assertEqual(sorted(good), sorted(blind))
        for cpid, (_stub, deployables) in good.items():
            used = in_use(blind[cpid][1])
            self.assertLessEqual(in_use(deployables), used)
            # Every VF holding a type counts as busy.
            self.assertEqual({info for _t, _u, handles
                              in blind[cpid][1].values()
                              for info in handles}, used)

    def test_vf_type_unreadable_keeps_its_unit_in_use(self):
        data = copy.deepcopy(reference_hosts.load('hgx-h200').data)
        env = reference_hosts.ReferenceHost(data, 'hgx-h200').materialize(
            self.useFixture(__import__('fixtures').TempDir()).path)
        driver = nvidia_mig.NvidiaMigDriver(
            hostname=env.hostname, nvml=faults.FaultyNvml(data['nvml']),
            sysfs_root=env.sysfs_root, read_only=True)
        before = view(driver.discover())
        busy = sorted(info for _stub, deployables in before.values()
                      for info in in_use(deployables))
        self.assertNotEqual([], busy)
        # Garble the type of every busy VF, and remove one VF entirely.
        import json
        import os
        addresses = []
        for info in busy:
            pci = json.loads(info)
            addresses.append('%(domain)s:%(bus)s:%(device)s.%(function)s'
                             % pci)
        for address in addresses[:-1]:
            with open(os.path.join(env.sysfs_root, 'bus', 'pci', 'devices',
                                   address, 'nvidia', 'current_vgpu_type'),
                      'wb') as attribute:
                attribute.write(b'\xff\xfe\n')
        gone = os.path.realpath(os.path.join(
            env.sysfs_root, 'bus', 'pci', 'devices', addresses[-1]))
        __import__('shutil').rmtree(gone)
        after = view(driver.discover())
        self.assertEqual(busy, sorted(
            info for _stub, deployables in after.values()
            for info in in_use(deployables)))

    def test_busy_vf_unreadable_at_a_cold_start_sends_a_stub(self):
        """No last report holds the unit of a VF NVML runs a vGPU on but
        whose type cannot be read: its GPU is a stub, not reported
        without the unit (Cyborg would delete the attach handle).
        """
        for host, cls, busy_vf, idle_vf in (
                ('hgx-h200', nvidia_mig.NvidiaMigDriver, '0000:1b:00.4',
                 '0000:52:00.4'),
                ('pcie-l40s', nvidia_vgpu.NvidiaVgpuDriver, '0000:17:00.4',
                 '0000:31:00.4')):
            data = reference_hosts.load(host).data
            env = reference_hosts.ReferenceHost(data, host).materialize(
                self.useFixture(fixtures.TempDir()).path)

            def build():
                return cls(hostname=env.hostname,
                           nvml=faults.FaultyNvml(data['nvml']),
                           sysfs_root=env.sysfs_root, read_only=True)

            good = view(build().discover())
            busy_gpu = busy_vf[:-1] + '0'
            for vf in (busy_vf, idle_vf):
                path = os.path.join(env.sysfs_root, 'bus', 'pci', 'devices',
                                    vf, 'nvidia', 'current_vgpu_type')
                with open(path, 'rb') as attribute:
                    saved = attribute.read()
                with open(path, 'wb') as attribute:
                    attribute.write(b'\xff\xfe\n')
                found = view(build().discover())
                self.assertEqual(sorted(good), sorted(found), host)
                for cpid, (stub, deployables) in found.items():
                    if '"bus": "%s"' % busy_gpu[5:7] in cpid and \
                            vf == busy_vf:
                        self.assertTrue(stub, host)
                        continue
                    # Every other GPU, and a GPU whose unreadable VF runs
                    # nothing, is reported as it was.
                    self.assertFalse(stub, (host, vf, cpid))
                    self.assertEqual(in_use(good[cpid][1]),
                                     in_use(deployables), (host, vf))
                with open(path, 'wb') as attribute:
                    attribute.write(saved)
            self.assertIn('VFs %s run a vGPU or may (NVML) but their state '
                          'cannot be read' % busy_vf, self.log.output)
            self.assertNotIn('Traceback', self.log.output)

    def test_busy_vf_of_a_type_nvml_does_not_list_stays_in_use(self):
        # The MIG driver: a VF NVML runs a vGPU on shows a type the GPU
        # has not (garbled): its unit stays in use, or a stub at a cold
        # start; it was dropped from the report.
        data = reference_hosts.load('hgx-h200').data
        env = reference_hosts.ReferenceHost(data, 'hgx-h200').materialize(
            self.useFixture(fixtures.TempDir()).path)

        def build():
            return nvidia_mig.NvidiaMigDriver(
                hostname=env.hostname, nvml=faults.FaultyNvml(data['nvml']),
                sysfs_root=env.sysfs_root, read_only=True)

        warm = build()
        good = view(warm.discover())
        [cpid] = [cpid for cpid in good if '"bus": "1b"' in cpid]
        busy = in_use(good[cpid][1])
        self.assertTrue(any('"function": "4"' in info for info in busy))
        path = os.path.join(env.sysfs_root, 'bus', 'pci', 'devices',
                            '0000:1b:00.4', 'nvidia', 'current_vgpu_type')
        for garbled in (b'-1\n', b'99999999999999999999999\n'):
            with open(path, 'wb') as attribute:
                attribute.write(garbled)
            found = view(warm.discover())
            self.assertFalse(found[cpid][0], garbled)
            self.assertEqual(busy, in_use(found[cpid][1]), garbled)
            self.assertTrue(view(build().discover())[cpid][0], garbled)
        self.assertIn('VF 0000:1b:00.4 of GPU 0000:1b:00.0 holds vGPU type '
                      '-1, which NVML does not list', self.log.output)


def _text(text):
    from testtools import content
    return content.text_content(text)
