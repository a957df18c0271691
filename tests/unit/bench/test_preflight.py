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
"""Pre-flight: what the guest sees, read from vendor tool output."""

import testtools

from gpu_partitions.bench import preflight
from gpu_partitions.bench import stub
from tests.unit.bench import vtime

QUERY_MIG_VGPU = ('NVIDIA A100D-3-40C, 40960, 550.90.07, '
                  'GPU-5a7c, 00000000:06:00.0, [N/A]\n')
DETAILS_LICENSED = '''
    GPU Virtualization Mode
        Virtualization Mode               : VGPU
        Host VGPU Mode                    : N/A
    vGPU Software Licensed Product
        Product Name                      : NVIDIA Virtual Compute Server
        License Status                    : Licensed (Expiry: 2027-1-1)
'''
DETAILS_UNLICENSED = '''
        Product Name                      : NVIDIA Virtual Compute Server
        License Status                    : Unlicensed (Restricted)
'''
LIST_MIG = '''GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)
  MIG 3g.40gb     Device  0: (UUID: MIG-2)
'''
QUERY_H100 = ('NVIDIA H100 80GB HBM3, 81559, 570.1, GPU-1, '
              '00000000:07:00.0, Enabled\n')


def fake_runner(outputs):
    def run(argv):
        return outputs.get(tuple(argv[:2]))
    return run


class ParseTest(testtools.TestCase):

    def test_query_rows(self):
        gpus = preflight.parse_nvidia_query(QUERY_MIG_VGPU + 'garbage\n')
        self.assertEqual(1, len(gpus))
        self.assertEqual('NVIDIA A100D-3-40C', gpus[0]['name'])
        self.assertEqual(40960, gpus[0]['memory_mib'])

    def test_licence_states(self):
        licensed = preflight.parse_nvidia_details(DETAILS_LICENSED)
        self.assertTrue(licensed['licensed'])
        self.assertEqual('VGPU', licensed['virtualization_mode'])
        self.assertEqual('NVIDIA Virtual Compute Server',
                         licensed['licensed_product'])
        self.assertFalse(
            preflight.parse_nvidia_details(DETAILS_UNLICENSED)['licensed'])

    def test_slice_shares(self):
        self.assertEqual(('A100D-3-40C', 3 / 7),
                         preflight.slice_shares('NVIDIA A100D-3-40C'))
        self.assertEqual(('H100XM-80C', None),
                         preflight.slice_shares('GRID H100XM-80C'))
        self.assertEqual(('3g.40gb', 3 / 7),
                         preflight.slice_shares('NVIDIA H100', '3g.40gb'))
        self.assertEqual(('A30-2-12C', 2 / 4),
                         preflight.slice_shares('NVIDIA A30-2-12C'))
        self.assertEqual((None, 1.0),
                         preflight.slice_shares('NVIDIA H100 80GB HBM3'))

    def test_mig_devices(self):
        self.assertEqual(['3g.40gb'], preflight.parse_mig_devices(LIST_MIG))


class DescribeGpusTest(testtools.TestCase):

    def test_mig_backed_vgpu_guest(self):
        described = preflight.describe_gpus(fake_runner({
            ('nvidia-smi', '--query-gpu=' + ','.join(
                preflight.NVIDIA_QUERY)): QUERY_MIG_VGPU,
            ('nvidia-smi', '-q'): DETAILS_LICENSED}))
        gpu = described['gpus'][0]
        self.assertTrue(described['present'])
        self.assertEqual(('A100D-3-40C', 3 / 7, True),
                         (gpu['profile'], gpu['compute_share'],
                          gpu['licensed']))

    def test_mig_inside_passthrough_guest(self):
        described = preflight.describe_gpus(fake_runner({
            ('nvidia-smi', '--query-gpu=' + ','.join(
                preflight.NVIDIA_QUERY)): QUERY_H100,
            ('nvidia-smi', '-L'): LIST_MIG}))
        self.assertEqual('3g.40gb', described['gpus'][0]['profile'])

    def test_amd_vf(self):
        described = preflight.describe_gpus(fake_runner({
            ('amd-smi', 'static'): '{"gpu_data": [{"asic": {"market_name":'
                                   ' "AMD Instinct MI300X VF"}, "vram": '
                                   '{"size": {"value": 196592}}}]}'}))
        gpu = described['gpus'][0]
        self.assertEqual(('amd', 'AMD Instinct MI300X VF', 196592),
                         (gpu['vendor'], gpu['name'], gpu['memory_mib']))

    def test_no_gpu_is_an_answer_not_an_error(self):
        described = preflight.describe_gpus(fake_runner({}))
        self.assertFalse(described['present'])
        self.assertIn('no nvidia-smi', described['reason'])

    def test_real_runner_without_tools(self):
        runner = preflight.CommandRunner()
        self.assertIsNone(runner(['no-such-tool-here-xyz']))


class EndpointTest(testtools.TestCase):

    def test_ready_endpoint_picks_first_model(self):
        async def scenario():
            server = stub.StubServer([stub.Script()], model='tiny')
            url = await server.start()
            try:
                return await preflight.check_endpoint(url)
            finally:
                await server.stop()
        report = vtime.run(scenario())
        self.assertEqual(('ok', ['tiny'], 'tiny', True),
                         (report['health'], report['models'],
                          report['model'], report['ready']))

    def test_unknown_model_not_ready(self):
        async def scenario():
            server = stub.StubServer([stub.Script()], model='tiny')
            url = await server.start()
            try:
                return await preflight.check_endpoint(url, 'other')
            finally:
                await server.stop()
        self.assertFalse(vtime.run(scenario())['ready'])

    def test_unreachable_endpoint_reports_error(self):
        async def scenario():
            server = stub.StubServer([stub.Script()])
            url = await server.start()
            await server.stop()
            return await preflight.check_endpoint(url)
        report = vtime.run(scenario())
        self.assertFalse(report['ready'])
        self.assertIn('ClientConnectorError', report['error'])
