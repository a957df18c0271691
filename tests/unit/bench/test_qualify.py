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
"""``bench qualify`` with a fake openstacksdk connection at the SDK edge.

Guests are fake; the endpoint each one "serves" is the real stub on
127.0.0.1 and the benchmark that runs against it is the real one.
"""

import json
import os
from unittest import mock

import fixtures
import testtools

from gpu_partitions.bench import qualify
from gpu_partitions.bench import stub
from gpu_partitions import cli
from gpu_partitions.commands import bench
from tests.unit.bench import fakes


def plan(flavors=('mig-3g', 'full')):
    return qualify.Plan('bench-image', 'net', flavors, port=8000,
                        endpoint_timeout=5)


def no_wait(base_url, timeout):
    return {'ready': True}


class QualifyTest(testtools.TestCase):

    def test_every_guest_deleted_when_all_goes_well(self):
        conn = fakes.FakeConnection()
        seen = []
        records = qualify.qualify(
            conn, plan(), lambda url, flavor, details: seen.append(
                (url, flavor, details['extra_specs'])) or {'flavor': flavor},
            wait=no_wait, log=lambda *a: None)
        specs = {'resources:VGPU': '1'}
        self.assertEqual([('http://127.0.0.1:8000', 'mig-3g', specs),
                          ('http://127.0.0.1:8000', 'full', specs)], seen)
        self.assertEqual(['ok', 'ok'], [r['status'] for r in records])
        self.assertEqual([True, True], [r['deleted'] for r in records])
        self.assertEqual({}, conn.servers)
        create = [c for c in conn.calls if c[0] == 'create_server'][0][2]
        self.assertEqual(('img-bench-image', 'flv-mig-3g',
                          [{'uuid': 'net-net'}]),
                         (create['image_id'], create['flavor_id'],
                          create['networks']))

    def _failing(self, fail=(), benchmark=None, wait=no_wait):
        conn = fakes.FakeConnection(fail=fail)
        records = qualify.qualify(
            conn, plan(), benchmark or (lambda url, flavor, details: {}),
            wait=wait,
            log=lambda *a: None)
        return conn, records

    def test_guest_deleted_when_boot_fails(self):
        conn, records = self._failing(fail={'wait_for_server'})
        self.assertEqual(['boot', 'boot'],
                         [r['failed_step'] for r in records])
        self.assertEqual([True, True], [r['deleted'] for r in records])
        self.assertEqual({}, conn.servers)

    def test_guest_deleted_when_endpoint_never_serves(self):
        def never(base_url, timeout):
            raise TimeoutError('not ready')
        conn, records = self._failing(wait=never)
        self.assertEqual(['endpoint', 'endpoint'],
                         [r['failed_step'] for r in records])
        self.assertEqual({}, conn.servers)

    def test_guest_deleted_when_benchmark_raises(self):
        def broken(url, flavor, details):
            raise RuntimeError('benchmark blew up')
        conn, records = self._failing(benchmark=broken)
        self.assertEqual('RuntimeError: benchmark blew up',
                         records[0]['error'])
        self.assertEqual({}, conn.servers)

    def test_guest_deleted_even_on_interrupt(self):
        def interrupted(url, flavor, details):
            raise KeyboardInterrupt()
        conn = fakes.FakeConnection()
        self.assertRaises(KeyboardInterrupt, qualify.qualify, conn, plan(),
                          interrupted, wait=no_wait, log=lambda *a: None)
        self.assertEqual({}, conn.servers)

    def test_missing_flavor_skips_to_next(self):
        conn, records = self._failing(fail={'find_flavor'})
        self.assertEqual(['find', 'find'],
                         [r['failed_step'] for r in records])
        self.assertEqual([None, None], [r['deleted'] for r in records])
        self.assertFalse(any(c[0] == 'create_server' for c in conn.calls))

    def test_failed_delete_is_reported(self):
        conn, records = self._failing(fail={'delete_server'})
        self.assertEqual([False, False], [r['deleted'] for r in records])
        self.assertIn('StepFailed', records[0]['delete_error'])

    def test_plan_needs_flavors(self):
        self.assertRaises(ValueError, qualify.Plan, 'i', 'n', [])


class WaitForEndpointTest(testtools.TestCase):

    def test_times_out_on_a_dead_endpoint(self):
        now = [0.0]

        def sleep(seconds):
            now[0] += seconds
        error = self.assertRaises(
            TimeoutError, qualify.wait_for_endpoint, 'http://127.0.0.1:9',
            30, interval=10, sleep=sleep, clock=lambda: now[0])
        self.assertIn('not ready after 30s', str(error))
        self.assertEqual(30.0, now[0])

    def test_returns_when_serving(self):
        with fakes.stub_in_thread([stub.Script()]) as server:
            report = qualify.wait_for_endpoint(server.base_url, 5)
        self.assertEqual('stub-model', report['model'])


class QualifyCommandTest(testtools.TestCase):
    """``gpu-partitions bench qualify`` end to end, SDK faked."""

    def test_benchmarks_each_flavor_and_cleans_up(self):
        directory = self.useFixture(fixtures.TempDir()).path
        conn = fakes.FakeConnection()
        with fakes.stub_in_thread([stub.Script(output_tokens=None)]) as srv:
            port = srv.base_url.rsplit(':', 1)[1]
            args = cli.build_parser().parse_args([
                'bench', 'qualify', '--flavor', 'mig-3g', '--flavor', 'full',
                '--image', 'bench-image', '--network', 'net',
                '--port', port, '--num-prompts', '4',
                '--random-input-len', '8', '--random-output-len', '5',
                '--max-concurrency', '2', '--output-dir', directory,
                '--no-plots'])
            with mock.patch('builtins.print'):
                code = bench.do_qualify(args, connect=lambda cloud: conn)
        self.assertEqual(0, code)
        self.assertEqual({}, conn.servers)
        with open(os.path.join(directory, 'qualify.json')) as stream:
            records = json.load(stream)
        self.assertEqual(['ok', 'ok'], [r['status'] for r in records])
        result = records[0]['result']
        self.assertEqual('1', result['metadata']['extra_spec resources:VGPU'])
        summary = result['runs'][0]['summary']
        self.assertEqual((4, 0, 20), (summary['completed'],
                                      summary['failed'],
                                      summary['total_output_tokens']))
        self.assertTrue(os.path.exists(os.path.join(directory,
                                                    'full.md')))

    def test_refuses_without_image(self):
        args = cli.build_parser().parse_args(['bench', 'qualify',
                                              '--flavor', 'x'])
        error = self.assertRaises(cli.UsageError, bench.do_qualify, args,
                                  connect=lambda cloud: None)
        self.assertIn('--image', str(error))
