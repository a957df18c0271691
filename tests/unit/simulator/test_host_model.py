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
"""The simulator's hosts are the hosts the drivers report.

A reference host is read by the real MIG and time-sliced vGPU drivers
(fake NVML, sysfs tree) and the same host is built as a simulator fleet
host (its kind, the MIG layout of each GPU or MIG off, its PCI
addresses); both go through the one provider-spec function, and each
provider must have the same resource class, total and traits.
"""

import copy
import dataclasses

import fixtures

from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import nvidia_mig
from cyborg_gpu_drivers import nvidia_vgpu
from cyborg_gpu_drivers import providers
from gpu_partitions import reference_hosts
from gpu_partitions.reference_hosts import fake_nvml
from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import placement
import placement_traits
from tests.unit.cyborg_gpu_drivers import base
from tests.unit.cyborg_gpu_drivers import hosts


def _layout(gpu):
    """``((profile, start), ...)`` of a driver-reported MIG GPU, None
    when it uses a profile the fleet's A100/H100 80GB table lacks.
    """
    instances = []
    for text in gpu.board_info['gpu_instances']:
        profile, _, place = text.partition('@')
        if profile not in fleet.MIG_GEOMETRY:
            return None
        instances.append((profile, int(place.partition('+')[0])))
    return tuple(instances)


# The full-size time-sliced type of the H100 SXM5 80GB on hgx-h100
# (NVML type id 1143, one instance per GPU).
H100XM_80C = '1143'


def hgx_h100_mig_off(indexes):
    """hgx-h100 with the GPUs ``indexes`` switched to MIG off, idle, as
    an operator runs whole GPUs: no GPU instance, the first VF holding
    the full-size time-sliced type H100XM-80C, the other VFs free.
    """
    data = copy.deepcopy(reference_hosts.load('hgx-h100').data)
    for index in indexes:
        device = data['nvml']['devices'][index]
        device['mig_mode'] = [0, 0]
        device['gpu_instances'] = []
        address = device['pci_bus_id'][4:].lower()
        pf = next(p for p in data['pci_devices'] if p['address'] == address)
        for vf in pf['virtfns']:
            vf.pop('files', None)
        pf['virtfns'][0]['files'] = {
            'nvidia/current_vgpu_type': H100XM_80C + '\n'}
    return reference_hosts.ReferenceHost(data, 'hgx-h100')


class ReferenceHostTest(base.DriverTestCase):

    def _driver_and_fleet(self, env, kind):
        """The drivers' report of ``env`` (both NVIDIA drivers, each
        owning its GPUs) and the fleet host of ``kind`` built alike.
        """
        def collect(driver_class):
            return driver_class(
                hostname=env.hostname, nvml=fake_nvml.FakeNvml(
                    env.host.data['nvml']), sysfs_root=env.sysfs_root,
                libvirt_uri=env.libvirt_uri, read_only=True).collect().gpus

        mig_off = collect(nvidia_vgpu.NvidiaVgpuDriver)
        gpus = sorted(collect(nvidia_mig.NvidiaMigDriver) + mig_off,
                      key=lambda gpu: gpu.address)
        reported = inventory.HostInventory(hostname=env.hostname, gpus=gpus)
        mig_off = {gpu.address for gpu in mig_off}
        layouts = [fleet.MIG_OFF if gpu.address in mig_off
                   else _layout(gpu) or 'whole' for gpu in gpus]
        host = fleet.make_host(env.hostname, fleet.KINDS[kind], 224000,
                               2 ** 21, layouts)
        host = dataclasses.replace(host, gpus=tuple(
            dataclasses.replace(simulated, address=gpu.address)
            for simulated, gpu in zip(host.gpus, gpus)))
        modelled = {gpu.address for gpu in gpus
                    if gpu.address in mig_off or _layout(gpu)}
        return reported, fleet.host_inventory(host), modelled

    @staticmethod
    def _providers(host_inventory, addresses):
        return {spec.name: (spec.resource_class, spec.total, spec.traits)
                for spec in providers.provider_specs(host_inventory)
                if placement_traits.physical_gpu_of(spec.traits)
                in addresses}

    def test_hgx_h100_providers_match_the_mig_driver(self):
        reported, simulated, modelled = self._driver_and_fleet(
            hosts.shared_env('hgx-h100'), 'h100-80gb-mig')
        # GPUs 6 and 7 use 1g.20gb and 1g.10gb+me, which the simulator's
        # geometry does not model; the six others are compared.
        self.assertEqual(6, len(modelled))
        expected = self._providers(reported, modelled)
        self.assertEqual(10, len(expected))
        self.assertEqual(expected, self._providers(simulated, modelled))
        for _, _, traits in expected.values():
            self.assertIn(placement_traits.vendor_trait('10de'), traits)
            self.assertIn(placement_traits.TRAIT_MIG_BACKED, traits)

    def test_mig_off_gpus_match_the_vgpu_driver_with_their_clique(self):
        # GPUs 6 and 7 (the two whose MIG profiles the simulator lacks)
        # MIG off: the vGPU driver reports them, the MIG driver the six
        # others; all eight are compared.
        directory = self.useFixture(fixtures.TempDir()).path
        env = hgx_h100_mig_off((6, 7)).materialize(directory)
        reported, simulated, modelled = self._driver_and_fleet(
            env, 'h100-80gb-mig')
        self.assertEqual(8, len(modelled))
        expected = self._providers(reported, modelled)
        self.assertEqual(expected, self._providers(simulated, modelled))
        clique = placement_traits.nvlink_clique_trait(0)
        whole = {name: rc for name, (rc, total, traits) in expected.items()
                 if clique in traits}
        # Only the MIG-off GPUs' full-size type gets the NVLink clique,
        # one unit per GPU, in the resource class multi-GPU tasks ask.
        self.assertEqual(
            {'hgx-h100-01_0000_d1_00_0_H100XM-80C': 'CUSTOM_VGPU_H100XM_80C',
             'hgx-h100-01_0000_df_00_0_H100XM-80C':
             'CUSTOM_VGPU_H100XM_80C'}, whole)
        kind = fleet.KINDS['h100-80gb-mig']
        self.assertEqual(kind.resource_class(kind.whole_slice),
                         'CUSTOM_VGPU_H100XM_80C')
        self.assertEqual({1}, {expected[name][1] for name in whole})

    def test_in_memory_placement_holds_the_specs(self):
        host = fleet.make_host('hgx-1', fleet.KINDS['v100-32gb-vgpu'],
                               96000, 2 ** 19, ['V100DX-32Q', 'V100DX-8Q'])
        children = {p.name: (p.inventories, p.reserved, p.traits,
                             p.parent)
                    for p in placement.fleet_providers(fleet.Fleet([host]))
                    if p.parent is not None}
        root = placement.provider_uuid(host.name)
        self.assertEqual(
            {spec.name: ({spec.resource_class: spec.total},
                         {spec.resource_class: spec.reserved},
                         frozenset(spec.traits), root)
             for spec in providers.provider_specs(
                 fleet.host_inventory(host))},
            children)
        # Only the full-size type gets NVLink P2P, as the vGPU driver
        # reports it.
        clique = placement_traits.nvlink_clique_trait(0)
        self.assertEqual(
            {True: ['hgx-1_0000_10_00_0_V100DX-32Q'],
             False: ['hgx-1_0000_18_00_0_V100DX-8Q']},
            {has: [name for name, (_, _, traits, _) in children.items()
                   if (clique in traits) == has] for has in (True, False)})
