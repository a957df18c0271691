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
"""The NVIDIA vGPU driver end to end in the in-process cloud.

The real driver over two reference hosts -> Cyborg's real conductor
``report_data`` -> the real Placement -> Nova's real scheduler:
``pcie-l40s`` (vendor VFIO: sysfs tree + fake pynvml) and ``pcie-a100``
(mdev: libvirt's test driver over the host's node devices).
"""

import copy

import fixtures
from oslo_config import cfg

from cyborg_gpu_drivers import nvidia_vgpu
from cyborg_gpu_drivers import privsep
from gpu_partitions.cloud import harness
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml
import placement_traits as names
from tests.functional import base

CONF = cfg.CONF


class TestVgpuDriver(base.GpuCloudTestCase):

    def setUp(self):
        super().setUp()
        # Every idle L40S gets L40S-4Q; the untouched A100 gets A100D-10C.
        # GPUs already hosting another type keep it.
        self.flags(group='nvidia_vgpu', vgpu_type=[
            'NVIDIA L40S=L40S-4Q', '0000:41:00.0=A100D-10C'])
        self.hosts = {}
        for name in ('pcie-l40s', 'pcie-a100'):
            host = reference_hosts.load(name)
            self.hosts[name] = (host, host.materialize(
                self.useFixture(fixtures.TempDir()).path))
        self.writes = []
        # The privileged side takes its root from its own configuration;
        # only the L40S host has vendor-VFIO VFs to write.
        self.flags(group='gpu_partitions',
                   sysfs_root=self.hosts['pcie-l40s'][1].sysfs_root)

    def write(self, address, type_id):
        self.writes.append((address, type_id))
        privsep.write_vgpu_type(address, type_id)

    def driver(self, name, nvml_section=None):
        host, env = self.hosts[name]
        return nvidia_vgpu.NvidiaVgpuDriver(
            hostname=host.hostname,
            nvml=fake_nvml.FakeNvml(nvml_section or host.data['nvml']),
            sysfs_root=env.sysfs_root, libvirt_uri=env.libvirt_uri,
            write_vgpu_type=self.write)

    def name(self, host_name, bus, vgpu_type):
        return names.provider_name(self.hosts[host_name][0].hostname,
                                   '0000:%s:00.0' % bus, vgpu_type)

    def candidates(self, vgpu_type, *traits):
        query = {'resources1': '%s:1' % names.vgpu_resource_class(
            vgpu_type)}
        if traits:
            query['required1'] = ','.join(traits)
        body = self.allocation_candidates(query)
        by_uuid = self.provider_names()
        return sorted({by_uuid[uuid]
                       for request in body['allocation_requests']
                       for uuid in request['allocations']})

    def test_vgpu_driver_in_the_cloud(self):
        drivers = {name: self.driver(name) for name in self.hosts}
        for name, driver in drivers.items():
            self.assertNotEqual([], self.add_gpu_host(
                self.hosts[name][0].hostname, driver.discover()))
        # Only the idle L40S at b1 was given the declared type.
        self.assertEqual(12, len(self.writes))
        self.assertEqual({'0000:b1'}, {a[:7] for a, _ in self.writes})

        providers = self.providers()
        vgpu = sorted(p.name for p in providers
                      if any(rc.startswith(names.RC_VGPU)
                             for rc in p.inventories))
        self.assertEqual(sorted([
            self.name('pcie-l40s', '17', 'L40S-12Q'),
            self.name('pcie-l40s', '31', 'L40S-8Q'),
            self.name('pcie-l40s', 'b1', 'L40S-4Q'),
            self.name('pcie-l40s', 'ca', 'L40S-24C'),
            self.name('pcie-a100', '01', 'A100D-20C'),
            self.name('pcie-a100', '41', 'A100D-10C')]), vgpu)
        for provider in providers:
            if provider.name in vgpu:
                self.assertStableUuid(provider)
        self.assertEqual(
            {names.vgpu_resource_class('L40S-4Q'): 12},
            self.provider(self.name('pcie-l40s', 'b1', 'L40S-4Q'))
            .inventories)
        self.assertEqual(
            {names.vgpu_resource_class('A100D-20C'): 4},
            self.provider(self.name('pcie-a100', '01', 'A100D-20C'))
            .inventories)

        # Each type is found on exactly its GPU; traits narrow further.
        self.assertEqual([self.name('pcie-l40s', 'b1', 'L40S-4Q')],
                         self.candidates('L40S-4Q'))
        self.assertEqual([self.name('pcie-l40s', '31', 'L40S-8Q')],
                         self.candidates('L40S-8Q',
                                         names.numa_node_trait(0)))
        self.assertEqual([], self.candidates('L40S-8Q',
                                             names.numa_node_trait(1)))
        self.assertEqual([self.name('pcie-l40s', 'ca', 'L40S-24C')],
                         self.candidates('L40S-24C',
                                         names.vgpu_series_trait('C'),
                                         names.framebuffer_trait(24576)))
        self.assertEqual([self.name('pcie-a100', '41', 'A100D-10C')],
                         self.candidates('A100D-10C',
                                         names.numa_node_trait(1)))
        self.assertEqual([self.name('pcie-a100', '01', 'A100D-20C')],
                         self.candidates('A100D-20C'))

        # The agents' next cycle: nothing to write.
        for name, driver in drivers.items():
            self.assertEqual([], self.report(self.hosts[name][0].hostname,
                                             driver.discover()))

        # Agent restart with NVML enumerating the GPUs in reverse order:
        # the declared types are already in place, nothing is written to
        # the host or to Placement, every UUID is kept.
        for name in self.hosts:
            section = copy.deepcopy(self.hosts[name][0].data['nvml'])
            section['devices'] = [
                dict(device, index=index) for index, device in
                enumerate(reversed(section['devices']))]
            self.assertEqual([], self.report(
                self.hosts[name][0].hostname,
                self.driver(name, section).discover()))
        self.assertEqual(12, len(self.writes))
        self.assertEqual(providers, self.providers())

        # Nova's Cyborg flow onto a vendor-VFIO VF: a PCI attach handle.
        l40s = self.hosts['pcie-l40s'][0].hostname
        target = self.name('pcie-l40s', 'b1', 'L40S-4Q')
        rc = names.vgpu_resource_class('L40S-4Q')
        self.create_device_profile('l40s-4q', [harness.device_profile_group(
            rc, required_traits=[names.vgpu_series_trait('Q')])])
        server = self.boot(self.create_flavor(
            harness.accel_extra_specs('l40s-4q')))
        self.assertLandedOn(server, l40s, target, rc)
        [arq] = self.arqs(server)
        self.assertEqual(('Bound', 'PCI'),
                         (arq['state'], arq['attach_handle_type']))
        self.assertIn(self.pci_address(arq['attach_handle_info']),
                      [address for address, _ in self.writes])

        # Nova's Cyborg flow onto an mdev parent: an MDEV attach handle.
        # Cyborg's conductor binds it and has the host's agent create the
        # mdev, of the handle's type, named by the attach handle's UUID:
        # the UUID Nova 34's libvirt driver looks up (and creates if
        # missing) before it gives the mdev to the guest
        # (LibvirtDriver._allocate_cyborg_mdevs).
        a100 = self.hosts['pcie-a100'][0].hostname
        target = self.name('pcie-a100', '01', 'A100D-20C')
        rc = names.vgpu_resource_class('A100D-20C')
        self.create_device_profile('a100d-20c', [
            harness.device_profile_group(rc)])
        server = self.boot(self.create_flavor(
            harness.accel_extra_specs('a100d-20c')))
        self.assertLandedOn(server, a100, target, rc)
        [arq] = self.arqs(server)
        self.assertEqual(('Bound', 'MDEV'),
                         (arq['state'], arq['attach_handle_type']))
        info = arq['attach_handle_info']
        mdev_type = info['asked_type']
        self.assertTrue(mdev_type.startswith('nvidia-'), info)
        self.assertEqual(
            [('create_vgpu_mdev', self.pci_address(info), mdev_type,
              arq['attach_handle_uuid'])],
            self.agent_calls(a100))

        # The same type through plain flavor extra specs: scheduled onto
        # the provider, but no ARQ, so nothing is attached.
        server = self.boot(self.create_flavor(harness.gpu_extra_specs(rc)))
        self.assertLandedOn(server, a100, target, rc)
        self.assertEqual([], self.arqs(server))
