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
"""Vendor-VFIO VF parsing and validated writes over a real temporary tree."""

import os

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cyborg_gpu_drivers.adapters import sysfs
from cyborg_gpu_drivers import nvidia_vfio
from cyborg_gpu_drivers import privsep

PF = '0000:1b:00.0'
FREE_VF = '0000:1b:00.4'
BUSY_VF = '0000:1b:00.5'
GONE_VF = '0000:1b:00.6'
CREATABLE = ('ID    : vGPU Name\n'
             '1134 : NVIDIA H100XM-3-40C\n'
             '1428   NVIDIA RTX Pro 6000 Blackwell DC-1-24Q\n'
             'warning: something odd\n')


class ParseTest(testtools.TestCase):

    def test_creatable_types_lenient(self):
        self.assertEqual(
            [nvidia_vfio.VgpuType(1134, 'NVIDIA H100XM-3-40C'),
             nvidia_vfio.VgpuType(
                 1428, 'NVIDIA RTX Pro 6000 Blackwell DC-1-24Q')],
            nvidia_vfio.parse_creatable_types(CREATABLE))

    def test_digits_int_does_not_take_are_skipped(self):
        # str.isdigit() holds for a superscript two, which int() refuses:
        # the line is skipped, the file not left unreadable.
        self.assertEqual(
            [nvidia_vfio.VgpuType(1134, 'NVIDIA H100XM-3-40C')],
            nvidia_vfio.parse_creatable_types(
                '\u00b234 : NVIDIA L40S-4Q\n1\u00b2 : x\n'
                '1134 : NVIDIA H100XM-3-40C\n'))
        self.assertIsNone(privsep._mdev_type_id('nvidia-\u00b2'))

    def test_header_only_or_empty(self):
        self.assertEqual(
            [], nvidia_vfio.parse_creatable_types('ID    : vGPU Name\n'))
        self.assertEqual([], nvidia_vfio.parse_creatable_types(None))

    def test_current_type(self):
        self.assertEqual(0, nvidia_vfio.parse_current_type('0\n'))
        self.assertEqual(1134, nvidia_vfio.parse_current_type('1134\n'))
        self.assertEqual(0x46e, nvidia_vfio.parse_current_type('0x46e'))
        self.assertIsNone(nvidia_vfio.parse_current_type('busy'))


def make_device(root, address, files=(), links=()):
    """A PCI device as the kernel lays it out: the directory under
    ``devices/`` and the ``bus/pci/devices`` symlink to it.
    """
    relative = os.path.join('devices', 'pci0000:00', address)
    directory = os.path.join(root, relative)
    os.makedirs(directory)
    devices = os.path.join(root, 'bus', 'pci', 'devices')
    os.makedirs(devices, exist_ok=True)
    os.symlink(os.path.join('..', '..', '..', relative),
               os.path.join(devices, address))
    for name, text in dict({'vendor': '0x10de\n', 'enable': '0\n'},
                           **dict(files)).items():
        os.makedirs(os.path.dirname(os.path.join(directory, name)),
                    exist_ok=True)
        with open(os.path.join(directory, name), 'w') as f:
            f.write(text)
    for name, target in links:
        os.symlink(target, os.path.join(directory, name))
    return directory


class VfTreeTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        # The privileged side reads its root from its own configuration.
        self.useFixture(config_fixture.Config(cfg.CONF)).config(
            group='gpu_partitions', sysfs_root=self.root)
        self.devices = os.path.join(self.root, 'bus', 'pci', 'devices')
        self.pf_dir = make_device(self.root, PF)
        self.vf(FREE_VF, '0', CREATABLE, index=0)
        self.vf(BUSY_VF, '1134', 'ID    : vGPU Name\n', index=1)
        # virtfn2 dangles: the VF vanished during the scan.
        os.symlink('../' + GONE_VF, os.path.join(self.pf_dir, 'virtfn2'))
        self.sysfs = sysfs.Sysfs(self.root)
        self.writes = []

    def vf(self, address, current, creatable, index):
        make_device(self.root, address, files={
            'nvidia/current_vgpu_type': current + '\n',
            'nvidia/creatable_vgpu_types': creatable}.items(),
            links=[('physfn', '../' + PF)])
        os.symlink('../' + address,
                   os.path.join(self.pf_dir, 'virtfn%d' % index))

    def writer(self, address, type_id):
        self.writes.append((address, type_id))
        # The real write, without privsep.
        privsep.write_vgpu_type(address, type_id)

    def current(self, address):
        return nvidia_vfio.read_current_type(self.sysfs, address)

    def test_list_vfs_skips_vanished(self):
        vfs = nvidia_vfio.list_vfs(self.sysfs, PF)
        self.assertEqual([FREE_VF, BUSY_VF], [vf.address for vf in vfs])
        self.assertTrue(vfs[0].is_free)
        self.assertTrue(vfs[0].offers(1134))
        self.assertEqual(1134, vfs[1].current_type)
        self.assertEqual((), vfs[1].creatable)

    def test_list_vfs_finds_a_vf_whose_link_is_missing_or_wrong(self):
        # The reader the AMD driver shares: a VF whose virtfnN link is
        # gone or names a wrong device is found by its physfn link, and a
        # VF index below sriov_numvfs that no VF answers is unknown.
        with open(os.path.join(self.pf_dir, 'sriov_numvfs'), 'w') as f:
            f.write('3\n')
        link = os.path.join(self.pf_dir, 'virtfn1')
        for target in (None, '../no-such-device', '../' + FREE_VF):
            if os.path.lexists(link):
                os.unlink(link)
            if target is not None:
                os.symlink(target, link)
            unknown = set()
            vfs = nvidia_vfio.list_vfs(self.sysfs, PF, unknown,
                                       note=lambda message: None)
            self.assertEqual([(0, FREE_VF), (1, BUSY_VF)],
                             [(vf.index, vf.address) for vf in vfs], target)
            self.assertEqual({GONE_VF}, unknown, target)
        # virtfn2 gone too: still unknown, under a name that is no
        # device (no sriov_offset here to give its address).
        os.unlink(os.path.join(self.pf_dir, 'virtfn2'))
        unknown = set()
        nvidia_vfio.list_vfs(self.sysfs, PF, unknown,
                             note=lambda message: None)
        [name] = unknown
        self.assertFalse(self.sysfs.exists(name))

    def test_assign_free_vf(self):
        self.assertTrue(nvidia_vfio.assign_type(
            self.sysfs, FREE_VF, 1134, in_use_addresses=[BUSY_VF],
            writer=self.writer))
        self.assertEqual(1134, self.current(FREE_VF))
        self.assertEqual([(FREE_VF, 1134)], self.writes)

    def test_assign_same_type_is_noop(self):
        self.assertFalse(nvidia_vfio.assign_type(
            self.sysfs, BUSY_VF, 1134, writer=self.writer))
        self.assertEqual([], self.writes)

    def test_assign_refusals_write_nothing(self):
        cases = [
            (FREE_VF, 9999, 'cannot take vGPU type 9999'),
            (FREE_VF, '1134', 'positive integer'),
            (FREE_VF, 0, 'positive integer'),
            (FREE_VF, True, 'positive integer'),
            (BUSY_VF, 1428, 'already holds vGPU type 1134'),
            (GONE_VF, 1134, 'does not exist'),
        ]
        for address, type_id, message in cases:
            error = self.assertRaises(
                nvidia_vfio.VfioError, nvidia_vfio.assign_type,
                self.sysfs, address, type_id, writer=self.writer)
            self.assertIn(message, str(error))
        self.assertEqual([], self.writes)

    def test_never_touches_vf_in_use(self):
        for call in (
                lambda: nvidia_vfio.assign_type(
                    self.sysfs, FREE_VF, 1134, in_use_addresses={FREE_VF},
                    writer=self.writer),
                lambda: nvidia_vfio.release_type(
                    self.sysfs, BUSY_VF, in_use_addresses=[BUSY_VF],
                    writer=self.writer)):
            self.assertRaisesRegex(nvidia_vfio.VfioError, 'in use', call)
        self.assertEqual([], self.writes)
        self.assertEqual(1134, self.current(BUSY_VF))

    def test_privsep_entrypoint_writes_through_the_checked_path(self):
        # Out of client mode the entrypoint runs in this process, as it
        # runs inside the privsep daemon.
        privsep.vgpu_type_pctxt.set_client_mode(False)
        self.addCleanup(privsep.vgpu_type_pctxt.set_client_mode, True)
        self.assertEqual('cyborg_gpu_drivers',
                         privsep.vgpu_type_pctxt.prefix)
        self.assertTrue(nvidia_vfio.assign_type(self.sysfs, FREE_VF, 1134))
        self.assertEqual(1134, self.current(FREE_VF))
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.privileged_write_vgpu_type, GONE_VF, 1134)

    def test_release(self):
        self.assertTrue(nvidia_vfio.release_type(
            self.sysfs, BUSY_VF, writer=self.writer))
        self.assertEqual(nvidia_vfio.NO_TYPE, self.current(BUSY_VF))
        self.assertFalse(nvidia_vfio.release_type(
            self.sysfs, FREE_VF, writer=self.writer))
        self.assertEqual([(BUSY_VF, 0)], self.writes)


class PrivsepValidationTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.useFixture(config_fixture.Config(cfg.CONF)).config(
            group='gpu_partitions', sysfs_root=self.root)

    def test_write_refuses_bad_arguments(self):
        for address, type_id in (('../../etc', 1), ('0000:1b:00.4', -1),
                                 ('0000:1b:00.4', 'x'),
                                 ('0000:1b:00.4\n', 1),
                                 ('0000:1b:00.4', 1)):
            self.assertRaises(privsep.InvalidPrivilegedRequest,
                              privsep.write_vgpu_type, address, type_id)

    def test_mig_layout_check(self):
        self.assertEqual([(9, 0), (19, 4)], privsep.check_mig_layout(
            '0000:1b:00.0', [(9, 0), [19, 4]]))
        for bad in ([], [(9,)], [(9, -1)], [('9', 0)]):
            self.assertRaises(privsep.InvalidPrivilegedRequest,
                              privsep.check_mig_layout, '0000:1b:00.0', bad)
        self.assertRaises(privsep.InvalidPrivilegedRequest,
                          privsep.check_mig_layout, '1b:00.0', [(9, 0)])
