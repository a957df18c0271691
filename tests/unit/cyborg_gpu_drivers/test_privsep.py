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
"""The privileged helpers as an attacker calls them.

The plain functions run here as they run inside the privsep daemon; the
sysfs root is the daemon's own ``[gpu_partitions] sysfs_root``, pointed
at a temporary tree, never an argument.
"""

import copy
import inspect
import os
import shutil

import fixtures
from oslo_privsep import capabilities
import pynvml
import testtools

from cyborg_gpu_drivers.adapters import nvml as nvml_adapter
from cyborg_gpu_drivers import conf as privsep_conf
from cyborg_gpu_drivers import privsep
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml
from tests.unit.cyborg_gpu_drivers import base
from tests.unit.cyborg_gpu_drivers import faults
from tests.unit.cyborg_gpu_drivers import hosts
from tests.unit.cyborg_gpu_drivers import test_nvidia_vfio as vfio_tests

PF = vfio_tests.PF
VF = vfio_tests.FREE_VF


class VgpuTypeWriteTest(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.conf.config(group='gpu_partitions', sysfs_root=self.root)
        vfio_tests.make_device(self.root, PF)
        self.vf_dir = vfio_tests.make_device(
            self.root, VF, files={
                'nvidia/current_vgpu_type': '0\n',
                'nvidia/creatable_vgpu_types': vfio_tests.CREATABLE}.items(),
            links=[('physfn', '../' + PF)])
        self.victim = os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'victim')
        with open(self.victim, 'w') as victim:
            victim.write('precious\n')

    def current(self):
        with open(os.path.join(self.vf_dir, 'nvidia',
                               'current_vgpu_type')) as attribute:
            return attribute.read()

    def test_the_caller_gives_no_root(self):
        self.assertEqual(['vf_address', 'type_id'], list(
            inspect.signature(privsep.write_vgpu_type).parameters))
        self.assertRaises(TypeError, privsep.write_vgpu_type,
                          os.path.dirname(self.victim), VF, 1134)

    def test_symlinked_leaf_is_not_followed(self):
        leaf = os.path.join(self.vf_dir, 'nvidia', 'current_vgpu_type')
        os.unlink(leaf)
        os.symlink(self.victim, leaf)
        # Reading the type goes through the same no-follow open.
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.write_vgpu_type, VF, 0)
        with open(self.victim) as victim:
            self.assertEqual('precious\n', victim.read())

    def test_symlinked_directory_is_not_followed(self):
        nvidia = os.path.join(self.vf_dir, 'nvidia')
        os.rename(nvidia, nvidia + '.real')
        os.symlink(nvidia + '.real', nvidia)
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.write_vgpu_type, VF, 1134)

    def test_device_link_out_of_the_tree_is_refused(self):
        outside = os.path.dirname(self.victim)
        link = os.path.join(self.root, 'bus', 'pci', 'devices',
                            '0000:1b:00.7')
        os.symlink(outside, link)
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.write_vgpu_type, '0000:1b:00.7', 0)

    def test_addresses_match_in_full(self):
        for address in (VF + '\n', VF + '/../..', ' ' + VF, VF.upper(),
                        '../' + VF, 1):
            self.assertRaises(privsep.InvalidPrivilegedRequest,
                              privsep.write_vgpu_type, address, 1134)
        self.assertEqual('0\n', self.current())

    def test_only_a_creatable_type_on_a_free_idle_nvidia_vf(self):
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.write_vgpu_type, VF, 4242)
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.write_vgpu_type, PF, 1134)
        with open(os.path.join(self.vf_dir, 'enable'), 'w') as enable:
            enable.write('1\n')
        self.assertRaises(privsep.DeviceBusy,
                          privsep.write_vgpu_type, VF, 1134)
        self.assertEqual('0\n', self.current())
        with open(os.path.join(self.vf_dir, 'enable'), 'w') as enable:
            enable.write('0\n')
        privsep.write_vgpu_type(VF, 1134)
        self.assertEqual('1134\n', self.current())
        # Holding a type: another one is refused, release is allowed.
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.write_vgpu_type, VF, 1428)
        privsep.write_vgpu_type(VF, 0)
        self.assertEqual('0\n', self.current())

    def test_unreadable_type_is_busy(self):
        with open(os.path.join(self.vf_dir, 'nvidia', 'current_vgpu_type'),
                  'wb') as attribute:
            attribute.write(b'\xff\n')
        self.assertRaises(privsep.DeviceBusy,
                          privsep.write_vgpu_type, VF, 0)

    def test_attributes_that_are_not_regular_files(self):
        """Every attribute the daemon reads or writes, replaced by what
        is not a regular file: refused at once, nothing written (a FIFO
        held the daemon in open(2) before opens were non-blocking).
        """
        # A regression hangs: the test fails instead of the run.
        self.useFixture(fixtures.Timeout(20, gentle=True))
        current = os.path.join(self.vf_dir, 'nvidia', 'current_vgpu_type')
        for attribute in ('vendor', 'enable', 'nvidia/current_vgpu_type',
                          'nvidia/creatable_vgpu_types'):
            for kind, make in (('fifo', os.mkfifo), ('directory', os.mkdir)):
                where = '%s as a %s' % (attribute, kind)
                path = os.path.join(self.vf_dir, attribute)
                saved = path + '.saved'
                os.rename(path, saved)
                make(path)
                try:
                    error = self.assertRaises(
                        privsep.InvalidPrivilegedRequest,
                        privsep.write_vgpu_type, VF, 1134)
                    self.assertIn('not a regular file', str(error), where)
                finally:
                    os.remove(path) if kind == 'fifo' else os.rmdir(path)
                    os.rename(saved, path)
                with open(current) as attribute_file:
                    self.assertEqual('0\n', attribute_file.read(), where)

    def test_virtfn_that_is_not_a_link_keeps_every_type(self):
        pf_dir = os.path.join(self.root, 'devices', 'pci0000:00', PF)
        os.symlink('../' + VF, os.path.join(pf_dir, 'virtfn0'))
        vf_link = os.path.join(pf_dir, 'virtfn1')
        privsep.write_vgpu_type(VF, 1134)
        for kind, make in (('file', lambda path: open(path, 'w').close()),
                           ('directory', os.mkdir)):
            make(vf_link)
            error = self.assertRaises(privsep.DeviceBusy,
                                      privsep.release_idle_gpu, PF)
            self.assertIn('VFs cannot be listed', str(error), kind)
            self.assertEqual('1134\n', self.current(), kind)
            os.remove(vf_link) if kind == 'file' else os.rmdir(vf_link)
        self.assertEqual([VF], privsep.release_idle_gpu(PF))

    def test_errors_show_a_bounded_part_of_the_argument(self):
        huge = '0' * 10 ** 6
        for call in (lambda: privsep.write_vgpu_type(huge, 1134),
                     lambda: privsep.write_vgpu_type(VF, [huge]),
                     lambda: privsep.check_mig_layout(PF, [(huge,) * 3])):
            error = self.assertRaises(privsep.InvalidPrivilegedRequest, call)
            self.assertLess(len(str(error)), 200)


class MigLayoutTest(base.DriverTestCase):

    def setUp(self):
        super().setUp()
        data = copy.deepcopy(reference_hosts.load('hgx-h100').data)
        [pci] = [p for p in data['pci_devices']
                 if p['address'] == '0000:df:00.0']
        [device] = [d for d in data['nvml']['devices']
                    if d['pci_bus_id'] == '00000000:DF:00.0']
        data['pci_devices'] = [pci]
        data['nvml']['devices'] = [dict(device, index=0)]
        data['nvml']['nvlink_cliques'] = []
        self.idle = not device['active_vgpus']
        for vf in pci['virtfns']:
            vf.pop('files', None)
        self.data = data
        self.env = reference_hosts.ReferenceHost(data, 'hgx-h100') \
            .materialize(self.useFixture(fixtures.TempDir()).path)
        self.conf.config(group='gpu_partitions',
                         sysfs_root=self.env.sysfs_root)

    def layout(self, nvml):
        with nvml_adapter.Nvml(nvml).session() as session:
            device = session.device(0)
            return [(gi.profile_id, gi.start, gi.size) for gi in
                    session.gpu_instances(
                        device, session.gpu_instance_profiles(device))]

    def apply(self, nvml, instances):
        with nvml_adapter.Nvml(nvml).session() as session:
            privsep.apply_mig_layout(session, '0000:df:00.0', instances)

    def test_invalid_layout_destroys_nothing(self):
        self.assertTrue(self.idle)
        before = self.layout(self.env.nvml)
        for bad in ([(999, 0)], [(19, 99)], [(9, 0), (9, 0)],
                    [(9, 4), (19, 5)], [('9', 0)], []):
            self.assertRaises((privsep.InvalidPrivilegedRequest,
                               ValueError), self.apply, self.env.nvml, bad)
            self.assertEqual(before, self.layout(self.env.nvml), bad)
        self.assertEqual(0, self.env.nvml.calls['nvmlGpuInstanceDestroy'])

    def test_busy_gpu_is_refused_inside_the_daemon(self):
        before = self.layout(self.env.nvml)
        vf = os.path.join(self.env.sysfs_root, 'bus', 'pci', 'devices',
                          '0000:df:00.4', 'nvidia', 'current_vgpu_type')
        with open(vf, 'w') as attribute:
            attribute.write('1134\n')
        self.assertRaises(privsep.DeviceBusy, self.apply, self.env.nvml,
                          [(9, 0)])
        self.assertEqual(before, self.layout(self.env.nvml))

    def test_failed_creation_puts_the_old_layout_back(self):
        before = self.layout(self.env.nvml)

        class FailsSecond(fake_nvml.FakeNvml):
            created = 0

            def nvmlDeviceCreateGpuInstanceWithPlacement(self, *args):
                FailsSecond.created += 1
                if FailsSecond.created == 2:
                    raise pynvml.NVMLError_InsufficientResources()
                return super().nvmlDeviceCreateGpuInstanceWithPlacement(
                    *args)

        nvml = FailsSecond(self.data['nvml'])
        self.assertRaises(nvml_adapter.NvmlError, self.apply, nvml,
                          [(19, 0), (19, 1)])
        self.assertEqual(before, self.layout(nvml))

    def test_any_stop_of_a_creation_puts_the_old_layout_back(self):
        before = self.layout(self.env.nvml)
        stops = dict(faults.ABORTS, TypeError=lambda: TypeError('bad'))
        for name, make in sorted(stops.items()):
            stop = make()

            class StopsSecond(fake_nvml.FakeNvml):
                created = 0

                def nvmlDeviceCreateGpuInstanceWithPlacement(self, *args):
                    StopsSecond.created += 1
                    if StopsSecond.created == 2:
                        raise stop
                    return super().nvmlDeviceCreateGpuInstanceWithPlacement(
                        *args)

            nvml = StopsSecond(self.data['nvml'])
            try:
                self.apply(nvml, [(19, 0), (19, 1)])
            except BaseException as raised:
                self.assertIs(stop, raised, name)
            else:
                self.fail('%s: the layout was applied' % name)
            self.assertEqual(before, self.layout(nvml), name)


class ContextsTest(testtools.TestCase):
    """Each entrypoint runs in a daemon of its own holding only what its
    one job needs.
    """

    def test_each_entrypoint_has_its_own_context(self):
        self.assertTrue(privsep.vgpu_type_pctxt.is_entrypoint(
            privsep.privileged_write_vgpu_type))
        self.assertTrue(privsep.mig_layout_pctxt.is_entrypoint(
            privsep.privileged_apply_mig_layout))
        self.assertFalse(privsep.vgpu_type_pctxt.is_entrypoint(
            privsep.privileged_apply_mig_layout))
        self.assertFalse(privsep.mig_layout_pctxt.is_entrypoint(
            privsep.privileged_write_vgpu_type))

    def test_capabilities_per_context(self):
        # What each context was built with (its section's default; a
        # config fixture's reset clears defaults, so not read back).
        self.assertEqual((capabilities.CAP_DAC_OVERRIDE,),
                         privsep.VGPU_TYPE_CAPABILITIES)
        self.assertEqual((capabilities.CAP_SYS_ADMIN,),
                         privsep.MIG_LAYOUT_CAPABILITIES)
        self.assertEqual(privsep_conf.VGPU_TYPE_PRIVSEP_GROUP,
                         privsep.vgpu_type_pctxt.cfg_section)
        self.assertEqual(privsep_conf.MIG_LAYOUT_PRIVSEP_GROUP,
                         privsep.mig_layout_pctxt.cfg_section)

    def test_both_sections_in_the_sample(self):
        groups = [group for group, _opts in privsep_conf.list_opts()]
        self.assertIn(privsep_conf.VGPU_TYPE_PRIVSEP_GROUP, groups)
        self.assertIn(privsep_conf.MIG_LAYOUT_PRIVSEP_GROUP, groups)
        self.assertNotIn('cyborg_gpu_drivers_privsep', groups)


class OnDemandInstanceTest(MigLayoutTest):
    """One GPU instance made or destroyed inside the daemon."""

    def create(self, nvml, *args):
        with nvml_adapter.Nvml(nvml).session() as session:
            return privsep.create_gpu_instance(session, *args)

    def destroy(self, nvml, *args):
        with nvml_adapter.Nvml(nvml).session() as session:
            privsep.destroy_gpu_instance(session, *args)

    def test_the_caller_is_not_trusted(self):
        before = self.layout(self.env.nvml)
        taken = before[0][1]
        for bad in (('0000:df:00.0/../x', 19, 6), (None, 19, 6),
                    ('0000:df:00.0', '19', 6), ('0000:df:00.0', 19, -1),
                    ('0000:df:00.0', True, 6), ('0000:df:00.0', 999, 0),
                    ('0000:df:00.0', 19, 99), ('0000:df:00.0', 0, 0),
                    ('0000:df:00.0', 19, taken), ('0000:99:00.0', 19, 6)):
            self.assertRaises(privsep.InvalidPrivilegedRequest, self.create,
                              self.env.nvml, *bad)
        self.assertEqual(before, self.layout(self.env.nvml))
        self.assertEqual(0, self.env.nvml.calls[
            'nvmlDeviceCreateGpuInstanceWithPlacement'])

    def data_with_a_vgpu_on_the_first_instance(self):
        """The host's NVML data with a vGPU running on GPU 0's first GPU
        instance, and that instance.
        """
        data = copy.deepcopy(self.data)
        device = data['nvml']['devices'][0]
        gpu_instance = device['gpu_instances'][0]
        device['active_vgpus'] = [{
            'id': 1, 'type_id': device['supported_vgpus'][0],
            'vf_pci_bus_id': '00000000:DF:00.4',
            'uuid': '0c7c3a7e-3f1e-4a55-9d1b-5e3c7a9b2f10',
            'gpu_instance_id': gpu_instance['id']}]
        return data, gpu_instance

    def test_destroy_refuses_an_instance_a_vgpu_runs_on(self):
        data, gpu_instance = self.data_with_a_vgpu_on_the_first_instance()
        nvml = fake_nvml.FakeNvml(data['nvml'])
        before = self.layout(nvml)
        self.assertRaises(privsep.DeviceBusy, self.destroy, nvml,
                          '0000:df:00.0', gpu_instance['id'])
        self.assertRaises(privsep.InvalidPrivilegedRequest, self.destroy,
                          nvml, '0000:df:00.0', '1')
        self.assertEqual(before, self.layout(nvml))

    def test_destroy_keeps_an_instance_an_mdev_may_need(self):
        # GPU instance 2 is the GPU's only 3g (profile id 9); type 1134
        # (H100XM-3-40C) is of that profile, 1133 (2g) is not.
        nvml = fake_nvml.FakeNvml(self.data['nvml'])
        before = self.layout(nvml)
        for mdev_type in ('nvidia-1134', 'other-7'):
            mdev = hosts.add_mdev(self.env.sysfs_root, '0000:df:00.5',
                                  mdev_type)
            self.assertRaises(privsep.DeviceBusy, self.destroy, nvml,
                              '0000:df:00.0', 2)
            self.assertEqual(before, self.layout(nvml))
            shutil.rmtree(mdev)
        real = os.listdir

        def unreadable(path='.'):
            if str(path).endswith('df:00.6'):
                raise PermissionError(13, 'Permission denied', path)
            return real(path)

        with fixtures.MonkeyPatch('os.listdir', unreadable):
            self.assertRaises(privsep.DeviceBusy, self.destroy, nvml,
                              '0000:df:00.0', 2)
        self.assertEqual(before, self.layout(nvml))
        hosts.add_mdev(self.env.sysfs_root, '0000:df:00.5', 'nvidia-1133')
        self.destroy(nvml, '0000:df:00.0', 2)
        self.assertNotIn((9, 4, 4), self.layout(nvml))

    def test_ids_past_32_bits_are_refused_not_cut(self):
        # The C library gets an id as an unsigned int, as ctypes passes
        # it: 2**32 + id cut to id, which the checks must not miss.
        class CAbi(fake_nvml.FakeNvml):
            def nvmlDeviceGetGpuInstanceById(self, device, gpuInstanceId):
                return super().nvmlDeviceGetGpuInstanceById(
                    device, gpuInstanceId & 0xFFFFFFFF)

        data, gpu_instance = self.data_with_a_vgpu_on_the_first_instance()
        nvml = CAbi(data['nvml'])
        before = self.layout(nvml)
        # Instance 2, the only 3g, is needed by an mdev of its type.
        hosts.add_mdev(self.env.sysfs_root, '0000:df:00.5', 'nvidia-1134')
        for gpu_instance_id in (2 ** 32 + gpu_instance['id'], 2 ** 32 + 2,
                                2 ** 64 + 2):
            error = self.assertRaises(privsep.InvalidPrivilegedRequest,
                                      self.destroy, nvml, '0000:df:00.0',
                                      gpu_instance_id)
            self.assertIn('from 0 to 4294967295', str(error))
        # An id NVML does not list is not destroyed blind either.
        error = self.assertRaises(privsep.InvalidPrivilegedRequest,
                                  self.destroy, nvml, '0000:df:00.0', 77)
        self.assertIn('NVML lists no GPU instance 77', str(error))
        self.assertEqual(before, self.layout(nvml))
        self.assertEqual(0, nvml.calls['nvmlGpuInstanceDestroy'])
        for bad in ((2 ** 32 + 19, 6), (19, 2 ** 32 + 6)):
            self.assertRaises(privsep.InvalidPrivilegedRequest, self.create,
                              nvml, '0000:df:00.0', *bad)
            self.assertRaises(privsep.InvalidPrivilegedRequest,
                              privsep.check_mig_layout, '0000:df:00.0',
                              [bad])

    def data_with_slots_4_to_7_free(self):
        """The host's NVML data without GPU 0's 3g at 4."""
        data = copy.deepcopy(self.data)
        device = data['nvml']['devices'][0]
        device['gpu_instances'] = [gi for gi in device['gpu_instances']
                                   if gi['start'] != 4]
        return data

    def test_failed_compute_instance_leaves_the_gpu_as_it_was(self):
        data = self.data_with_slots_4_to_7_free()

        class NoCompute(fake_nvml.FakeNvml):
            def nvmlGpuInstanceCreateComputeInstance(self, *args):
                raise pynvml.NVMLError_Unknown()

        nvml = NoCompute(data['nvml'])
        before = self.layout(nvml)
        self.assertRaises(nvml_adapter.NvmlError, self.create, nvml,
                          '0000:df:00.0', 19, 6)
        self.assertEqual(before, self.layout(nvml))
        self.assertEqual(1, nvml.calls['nvmlGpuInstanceDestroy'])
        # With compute instances working, the same call makes one.
        nvml = fake_nvml.FakeNvml(data['nvml'])
        made = self.create(nvml, '0000:df:00.0', 19, 6)
        self.assertIn((19, 6, 1), self.layout(nvml))
        self.destroy(nvml, '0000:df:00.0', made)
        self.assertEqual(before, self.layout(nvml))

    def test_any_stop_of_the_compute_instance_leaves_the_gpu_as_it_was(
            self):
        # Not only NVML's errors: a stop of the daemon, or an error of
        # another kind, must not leave the new GPU instance behind.
        data = self.data_with_slots_4_to_7_free()
        stops = dict(faults.ABORTS, TypeError=lambda: TypeError('bad'))
        for name, make in sorted(stops.items()):
            stop = make()

            class Stopped(fake_nvml.FakeNvml):
                def nvmlGpuInstanceCreateComputeInstance(self, *args):
                    raise stop

            nvml = Stopped(data['nvml'])
            before = self.layout(nvml)
            try:
                self.create(nvml, '0000:df:00.0', 19, 6)
            except BaseException as raised:
                self.assertIs(stop, raised, name)
            else:
                self.fail('%s: the creation returned' % name)
            self.assertEqual(before, self.layout(nvml), name)
            self.assertEqual(1, nvml.calls['nvmlGpuInstanceDestroy'], name)

    def test_a_creation_whose_answer_is_lost_leaves_the_gpu_as_it_was(
            self):
        # The creation took effect and its answer was lost (an error or
        # a stop raised after it), or came back as garbage, or the
        # instance's id cannot be read: the instance NVML lists at that
        # placement is destroyed again; before, it stayed on the GPU
        # with no bind holding it.
        data = self.data_with_slots_4_to_7_free()
        device = data['nvml']['devices'][0]
        stops = dict(faults.ABORTS, Timeout=pynvml.NVMLError_Timeout,
                     OSError=lambda: OSError(5, 'Input/output error'))
        cases = []
        for name, make in sorted(stops.items()):
            cases.append(('lost %s' % name,
                          'nvmlDeviceCreateGpuInstanceWithPlacement', make,
                          None))
        # The ids of the new instance are read after the 3 there before.
        after = len(device['gpu_instances'])
        cases += [
            ('garbage handle', 'nvmlDeviceCreateGpuInstanceWithPlacement',
             None, lambda real: None),
            ('id unreadable', 'nvmlGpuInstanceGetInfo',
             pynvml.NVMLError_Unknown, None),
            ('id of another instance', 'nvmlGpuInstanceGetInfo', None,
             lambda real: setattr(real, 'id', 0) or real)]
        for name, function, make, garbage in cases:
            skip = after if function == 'nvmlGpuInstanceGetInfo' else 0

            class Lost(fake_nvml.FakeNvml):
                armed = False
                skipped = 0

                def __getattribute__(self, attribute):
                    real = super().__getattribute__(attribute)
                    if attribute != function or not type(self).armed:
                        return real
                    if type(self).skipped < skip:
                        type(self).skipped += 1
                        return real

                    def call(*args):
                        type(self).armed = False
                        answer = real(*args)
                        if make is not None:
                            raise make()
                        return garbage(answer)
                    return call

            nvml = Lost(data['nvml'])
            before = self.layout(nvml)
            Lost.armed = True
            try:
                made = self.create(nvml, '0000:df:00.0', 19, 6)
            except BaseException:
                self.assertEqual(before, self.layout(nvml), name)
            else:
                # Only an id NVML lists for the new instance is given.
                self.assertIn((19, 6, 1), self.layout(nvml), name)
                self.destroy(nvml, '0000:df:00.0', made)
                self.assertEqual(before, self.layout(nvml), name)
            self.assertFalse(Lost.armed, name)

    def test_entrypoints_run_in_the_mig_context(self):
        for entrypoint in (privsep.privileged_create_gpu_instance,
                           privsep.privileged_destroy_gpu_instance):
            self.assertTrue(privsep.mig_layout_pctxt.is_entrypoint(
                entrypoint))
            self.assertFalse(privsep.vgpu_type_pctxt.is_entrypoint(
                entrypoint))
