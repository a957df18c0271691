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
"""Drive an OpenAI-compatible endpoint with seeded load, as vLLM does.

A run sends ``num_prompts`` requests at the arrival times of
:func:`~gpu_partitions.bench.workload.arrival_offsets`, at most
``max_concurrency`` in flight (a closed loop when the rate is ``inf``),
then aggregates with :func:`~gpu_partitions.bench.metrics.summarise`.
As in ``vllm bench serve``, a request's clock starts when it gets a
concurrency slot; the wait for that slot is ``client_queue_time``.
"""

import asyncio
import contextlib
import dataclasses
import math
import os

import aiohttp

from gpu_partitions.bench import client
from gpu_partitions.bench import metrics
from gpu_partitions.bench import prometheus
from gpu_partitions.bench import workload

GAUGE_SAMPLE_INTERVAL_S = 1.0


@dataclasses.dataclass
class RunConfig:
    """One benchmark run; field names follow ``vllm bench serve`` flags."""

    base_url: str
    model: str
    endpoint: str = '/v1/completions'
    num_prompts: int = 1000
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int = None
    random_input_len: int = 1024
    random_output_len: int = 128
    random_range_ratio: float = 0.0
    seed: int = 0
    ignore_eos: bool = True
    num_warmups: int = 0
    percentiles: tuple = metrics.DEFAULT_PERCENTILES
    goodput: dict = None
    request_timeout: float = 6 * 60 * 60
    stall_timeout: float = 300.0
    extra_body: dict = None
    scrape_metrics: bool = True

    def describe(self):
        """The run's settings as written into results (JSON-safe)."""
        settings = dataclasses.asdict(self)
        settings['request_rate'] = _json_number(self.request_rate)
        settings['burstiness'] = _json_number(self.burstiness)
        settings['percentiles'] = list(self.percentiles)
        return settings


def _json_number(value):
    return 'inf' if math.isinf(value) else value


def _headers():
    key = os.environ.get('OPENAI_API_KEY')
    return {'Authorization': 'Bearer ' + key} if key else None


async def _scrape(session, base_url):
    """Parsed ``/metrics`` or None when the server has none."""
    try:
        async with session.get(base_url.rstrip('/') + '/metrics',
                               timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status != 200:
                return None
            return prometheus.parse(await r.text())
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return None


async def _sample_gauges(session, base_url, samples):
    while True:
        sample = await _scrape(session, base_url)
        if sample is not None:
            samples.append(sample)
        await asyncio.sleep(GAUGE_SAMPLE_INTERVAL_S)


async def run(config, connector_limit=None):
    """Run one benchmark; returns ``{'config', 'summary', 'server'}``."""
    kind = client.endpoint_kind(config.endpoint)
    url = config.base_url.rstrip('/') + config.endpoint
    prompts = workload.make_prompts(
        config.num_prompts, config.random_input_len,
        config.random_output_len, config.seed, config.random_range_ratio)
    offsets = workload.arrival_offsets(
        len(prompts), config.request_rate, config.burstiness, config.seed)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout,
                                    sock_read=config.stall_timeout)
    headers = _headers()
    limit = connector_limit or config.max_concurrency or 0
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit,
                                     keepalive_timeout=60)
    loop = asyncio.get_running_loop()

    def payload(prompt):
        return client.build_payload(kind, config.model, prompt.text,
                                    prompt.output_len, config.ignore_eos,
                                    config.extra_body)

    async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None)) as session:
        if config.num_warmups:
            await asyncio.gather(*[
                client.stream_request(session, url, payload(prompts[0]),
                                      kind, timeout, headers,
                                      config.stall_timeout)
                for _ in range(config.num_warmups)])
        scrape = config.scrape_metrics
        before = await _scrape(session, config.base_url) if scrape else None
        samples = []
        sampler = None
        if before is not None:
            sampler = asyncio.ensure_future(
                _sample_gauges(session, config.base_url, samples))
        slots = (asyncio.Semaphore(config.max_concurrency)
                 if config.max_concurrency else contextlib.nullcontext())

        async def one(prompt, arrival):
            async with slots:
                result = await client.stream_request(
                    session, url, payload(prompt), kind, timeout, headers,
                    config.stall_timeout)
            result.client_queue_time = result.start_time - arrival
            return result

        started = loop.time()
        tasks = []
        for prompt, offset in zip(prompts, offsets):
            delay = started + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(prompt, loop.time())))
        results = await asyncio.gather(*tasks)
        duration = loop.time() - started
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        after = await _scrape(session, config.base_url) if scrape else None

    summary = metrics.summarise(results, duration, config.percentiles,
                                config.goodput)
    queue_times = [r.client_queue_time for r in results]
    summary['mean_client_queue_time_ms'] = (
        sum(queue_times) / len(queue_times) * 1000)
    server = {}
    if before is not None and after is not None:
        server = prometheus.deltas(before, after, duration)
        server.update(prometheus.gauge_peaks(samples + [after]))
    first_errors = [{'kind': r.error_kind, 'error': r.error}
                    for r in results if not r.success][:10]
    return {'config': config.describe(), 'summary': summary,
            'server': server, 'first_errors': first_errors}


async def sweep(config, request_rates=None, concurrencies=None):
    """One run per rate or per concurrency limit (not both at once).

    Each point gets its own seed (``seed + index``): the same kind of
    prompts, but not the same ones, so a server's prefix cache warmed by
    one point does not flatter the next.
    """
    if request_rates and concurrencies:
        raise ValueError('sweep over request rates or concurrencies, '
                         'not both')
    points = ([{'request_rate': rate} for rate in request_rates or ()] +
              [{'max_concurrency': limit} for limit in concurrencies or ()])
    runs = []
    for index, point in enumerate(points or [{}]):
        runs.append(await run(dataclasses.replace(
            config, seed=config.seed + index, **point)))
    return runs
