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
"""The client and load generator against the scripted streaming stub.

The stub and the client share an event loop with virtual time
(:mod:`tests.unit.bench.vtime`), so every duration the client measures
is exactly the one scripted and every metric is checked to 1e-6 ms.
Requests still go over real HTTP on 127.0.0.1.
"""

import math

import testtools

from gpu_partitions.bench import loadgen
from gpu_partitions.bench import stub
from tests.unit.bench import vtime

# Three requests: TTFT 100/200/300 ms; gaps 20+30, 40 and none; 3, 2 and
# 1 output tokens; 10, 20 and 30 prompt tokens.
THREE = [stub.Script(ttft=0.1, itl=[0.02, 0.03], output_tokens=3,
                     prompt_tokens=10),
         stub.Script(ttft=0.2, itl=[0.04], output_tokens=2,
                     prompt_tokens=20),
         stub.Script(ttft=0.3, output_tokens=1, prompt_tokens=30)]


def bench(scripts, **settings):
    """Serve ``scripts`` and run one benchmark against them."""
    async def scenario():
        server = stub.StubServer(scripts)
        base_url = await server.start()
        try:
            config = loadgen.RunConfig(base_url=base_url, model='stub-model',
                                       **settings)
            return await loadgen.run(config)
        finally:
            await server.stop()
    return vtime.run(scenario())


class ScriptedTimingTest(testtools.TestCase):

    def assertFigures(self, expected, summary):
        for key, value in expected.items():
            self.assertAlmostEqual(value, summary[key], places=6, msg=key)

    def _check_three(self, endpoint):
        run = bench(THREE, endpoint=endpoint, num_prompts=3)
        summary = run['summary']
        self.assertEqual((3, 0, {}), (summary['completed'],
                                      summary['failed'], summary['errors']))
        self.assertEqual(60, summary['total_input_tokens'])
        self.assertEqual(6, summary['total_output_tokens'])
        # All sent at t=0; the last finishes at 300 ms.
        self.assertFigures({
            'duration': 0.3, 'request_throughput': 10.0,
            'output_throughput': 20.0, 'total_token_throughput': 220.0,
            'mean_ttft_ms': 200.0, 'median_ttft_ms': 200.0,
            'std_ttft_ms': math.sqrt(20000 / 3), 'p90_ttft_ms': 280.0,
            'p99_ttft_ms': 298.0,
            'mean_tpot_ms': 32.5, 'median_tpot_ms': 32.5,
            'std_tpot_ms': 7.5, 'p90_tpot_ms': 38.5, 'p99_tpot_ms': 39.85,
            'mean_itl_ms': 30.0, 'median_itl_ms': 30.0,
            'std_itl_ms': math.sqrt(200 / 3), 'p90_itl_ms': 38.0,
            'p99_itl_ms': 39.8,
            'mean_e2el_ms': 230.0, 'median_e2el_ms': 240.0,
            'std_e2el_ms': math.sqrt(3800), 'p90_e2el_ms': 288.0,
            'p99_e2el_ms': 298.8,
            'max_output_tokens_per_s': 6.0, 'max_concurrent_requests': 3,
            'mean_client_queue_time_ms': 0.0,
        }, summary)
        return run

    def test_completions_every_metric_exact(self):
        self._check_three('/v1/completions')

    def test_chat_every_metric_exact(self):
        self._check_three('/v1/chat/completions')

    def test_server_side_figures_from_metrics_deltas(self):
        server = self._check_three('/v1/completions')['server']
        self.assertEqual(6.0, server['generation_tokens'])
        self.assertEqual(60.0, server['prompt_tokens'])
        self.assertEqual(3.0, server['request_success'])
        self.assertAlmostEqual(200.0, server['mean_ttft_ms'])
        self.assertAlmostEqual(20.0, server['generation_throughput'])
        self.assertIn('peak_num_requests_running', server)

    def test_goodput(self):
        summary = bench(THREE, num_prompts=3,
                        goodput={'ttft': 250, 'tpot': 30})['summary']
        # Only the 100 ms TTFT / 25 ms TPOT request meets both.
        self.assertAlmostEqual(1 / 0.3, summary['request_goodput'])

    def test_concurrency_limit_queues_on_the_client(self):
        script = [stub.Script(ttft=0.1, itl=0.05, output_tokens=3)]
        summary = bench(script, num_prompts=3, max_concurrency=1)['summary']
        # One at a time, 200 ms each: the clock of a request starts when
        # it gets its slot, so TTFT stays 100 ms and the wait is apart.
        self.assertFigures({
            'duration': 0.6, 'request_throughput': 5.0,
            'mean_ttft_ms': 100.0, 'p99_ttft_ms': 100.0,
            'mean_tpot_ms': 50.0, 'mean_e2el_ms': 200.0,
            'mean_client_queue_time_ms': 200.0,
            'max_concurrent_requests': 1,
        }, summary)

    def test_poisson_arrivals_follow_the_seeded_schedule(self):
        script = [stub.Script(ttft=0.05, output_tokens=1)]
        summary = bench(script, num_prompts=4, request_rate=4.0,
                        burstiness=1.0, seed=5)['summary']
        # The schedule is rescaled so the last request leaves at 4/4 s;
        # it is answered 50 ms later.
        self.assertFigures({'duration': 1.05, 'mean_ttft_ms': 50.0,
                            'p99_e2el_ms': 50.0}, summary)


class FaultTest(testtools.TestCase):
    """Faults are counted by kind and never leak into the means."""

    def test_each_fault_counted_means_untouched(self):
        healthy = stub.Script(ttft=0.1, itl=0.01, output_tokens=3)
        slow = dict(ttft=0.5, itl=0.2, output_tokens=4)
        scripts = [healthy,
                   stub.Script(fault='http_500'),
                   stub.Script(fault='drop', fault_after=2, **slow),
                   stub.Script(fault='malformed', fault_after=1, **slow),
                   stub.Script(fault='stall', fault_after=1, **slow),
                   stub.Script(fault='error_event', fault_after=2, **slow),
                   stub.Script(fault='no_usage', ttft=0.1, itl=0.01,
                               output_tokens=3)]
        run = bench(scripts, num_prompts=7, request_rate=100.0,
                    burstiness=math.inf, stall_timeout=2.0)
        summary = run['summary']
        self.assertEqual(2, summary['completed'])
        self.assertEqual(5, summary['failed'])
        self.assertEqual({'dropped_stream': 1, 'http_500': 1,
                          'malformed_chunk': 1, 'server_error': 1,
                          'stall': 1}, summary['errors'])
        # The request without usage is counted by its chunks and flagged.
        self.assertEqual(1, summary['requests_without_usage'])
        self.assertEqual(6, summary['total_output_tokens'])
        # Prompt tokens are unknown without usage: not guessed.
        self.assertIsNone(summary['total_input_tokens'])
        self.assertIsNone(summary['total_token_throughput'])
        # Only the two healthy requests are in the latency figures.
        self.assertAlmostEqual(100.0, summary['mean_ttft_ms'], places=6)
        self.assertAlmostEqual(10.0, summary['mean_itl_ms'], places=6)
        self.assertAlmostEqual(120.0, summary['mean_e2el_ms'], places=6)
        self.assertEqual(5, len(run['first_errors']))

    def test_refused_connection_is_counted(self):
        async def scenario():
            server = stub.StubServer(THREE)
            base_url = await server.start()
            await server.stop()
            config = loadgen.RunConfig(base_url=base_url, model='m',
                                       num_prompts=2)
            return await loadgen.run(config)
        summary = vtime.run(scenario())['summary']
        self.assertEqual({'connection': 2}, summary['errors'])
        self.assertEqual(0, summary['completed'])

    def test_non_event_stream_body_fails_cleanly(self):
        # A server answering JSON instead of a stream: no [DONE], no chunk.
        async def scenario():
            from aiohttp import web
            app = web.Application()

            async def plain(request):
                return web.json_response({'choices': [{'text': 'x'}]})
            app.router.add_post('/v1/completions', plain)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, '127.0.0.1', 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            try:
                config = loadgen.RunConfig(
                    base_url='http://%s:%d' % (host, port), model='m',
                    num_prompts=1, scrape_metrics=False)
                return await loadgen.run(config)
            finally:
                await runner.cleanup()
        summary = vtime.run(scenario())['summary']
        self.assertEqual({'dropped_stream': 1}, summary['errors'])
