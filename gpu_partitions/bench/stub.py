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
"""A scripted OpenAI-compatible streaming server for tests and self-checks.

Each request (numbered in arrival order) follows a :class:`Script`: when
its first chunk comes, the gaps between later chunks, how many tokens it
reports in ``usage``, and an optional fault.  With zero delays a response
is written in one piece, which makes the stub cheap enough to measure the
load generator's own ceiling against.  It listens on loopback only.
"""

import asyncio
import dataclasses
import json
import time

from aiohttp import web

LOOPBACK = ('127.0.0.1', '::1', 'localhost')
FAULTS = (None, 'http_500', 'drop', 'stall', 'malformed', 'no_usage',
          'error_event')
_MID_STREAM = ('drop', 'stall', 'malformed', 'error_event')


@dataclasses.dataclass
class Script:
    """How the stub answers one request (seconds, tokens).

    ``itl`` is one gap for all chunks or a list with one gap per chunk
    after the first; ``fault_after`` chunks are sent before a ``drop``,
    ``stall`` or ``malformed`` fault.  ``output_tokens`` None streams as
    many tokens as the request asks for (``max_tokens``).
    """

    ttft: float = 0.0
    itl: object = 0.0
    output_tokens: int = 4
    prompt_tokens: int = 8
    fault: str = None
    fault_after: int = 0
    stall_s: float = 3600.0
    # With no delays, write the whole response at once (cheapest) or one
    # write per chunk (as a server streaming tokens does).
    one_write: bool = True
    # A hostile or broken server: answer ``status`` and write exactly
    # these ``(delay_s, bytes)`` pieces as the body, nothing else.
    raw: list = None
    status: int = 200

    def gaps(self, count):
        if isinstance(self.itl, (int, float)):
            return [float(self.itl)] * (count - 1)
        if len(self.itl) != count - 1:
            raise ValueError('itl needs output_tokens - 1 gaps')
        return [float(gap) for gap in self.itl]


def _event(payload):
    return b'data: ' + json.dumps(payload).encode() + b'\n\n'


class StubServer:
    """The stub's HTTP server.

    Serves ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``,
    ``/health`` and vLLM-named ``/metrics`` counters.
    """

    def __init__(self, scripts, model='stub-model'):
        self.scripts = list(scripts) if not callable(scripts) else scripts
        self.model = model
        self.requests = 0
        self.counters = {'vllm:prompt_tokens_total': 0.0,
                         'vllm:generation_tokens_total': 0.0,
                         'vllm:request_success_total': 0.0,
                         'vllm:time_to_first_token_seconds_sum': 0.0,
                         'vllm:time_to_first_token_seconds_count': 0.0}
        self.running = 0
        self._runner = None
        self.base_url = None

    def script_for(self, index):
        if callable(self.scripts):
            return self.scripts(index)
        return self.scripts[index % len(self.scripts)]

    def app(self):
        application = web.Application()
        application.router.add_get('/health', self._health)
        application.router.add_get('/v1/models', self._models)
        application.router.add_get('/metrics', self._metrics)
        application.router.add_post('/v1/completions', self._completions)
        application.router.add_post('/v1/chat/completions', self._chat)
        return application

    async def start(self, host='127.0.0.1', port=0):
        if host not in LOOPBACK:
            raise ValueError('the stub listens on loopback only')
        self._runner = web.AppRunner(self.app(), access_log=None,
                                     handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = 'http://%s:%d' % (bound[0], bound[1])
        return self.base_url

    async def stop(self):
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request):
        return web.Response(text='')

    async def _models(self, request):
        return web.json_response({'object': 'list', 'data': [
            {'id': self.model, 'object': 'model', 'root': self.model,
             'max_model_len': 4096}]})

    async def _metrics(self, request):
        lines = ['# TYPE vllm:num_requests_running gauge',
                 'vllm:num_requests_running{model_name="%s"} %d'
                 % (self.model, self.running)]
        for name, value in self.counters.items():
            lines.append('%s{model_name="%s"} %r' % (name, self.model,
                                                     value))
        return web.Response(text='\n'.join(lines) + '\n')

    async def _completions(self, request):
        return await self._stream(request, chat=False)

    async def _chat(self, request):
        return await self._stream(request, chat=True)

    def _chunk(self, chat, index, final):
        if chat:
            delta = {'content': ' tok'}
            if index == 0:
                delta['role'] = 'assistant'
            choice = {'index': 0, 'delta': delta}
        else:
            choice = {'index': 0, 'text': ' tok'}
        choice['finish_reason'] = 'length' if final else None
        return _event({'id': 'stub', 'model': self.model,
                       'choices': [choice]})

    async def _stream(self, request, chat):
        index = self.requests
        self.requests += 1
        script = self.script_for(index)
        try:
            body = await request.json()
            asked = int(body.get('max_tokens') or
                        body.get('max_completion_tokens') or 1)
        except (ValueError, TypeError, AttributeError):
            return web.json_response({'error': 'bad request body'},
                                     status=400)
        if script.fault == 'http_500':
            return web.json_response({'error': 'scripted failure'},
                                     status=500)
        if script.raw is not None:
            return await self._raw(request, script)
        response = web.StreamResponse(
            headers={'Content-Type': 'text/event-stream'})
        await response.prepare(request)
        self.running += 1
        try:
            await self._send(request, response, script, chat,
                             script.output_tokens or max(asked, 1))
        finally:
            self.running -= 1
        return response

    async def _raw(self, request, script):
        response = web.StreamResponse(
            status=script.status,
            headers={'Content-Type': 'text/event-stream'})
        await response.prepare(request)
        for delay, piece in script.raw:
            await asyncio.sleep(delay)
            await response.write(piece)
        return response

    async def _send(self, request, response, script, chat, count):
        gaps = script.gaps(count)
        usage = _event({'id': 'stub', 'choices': [], 'usage': {
            'prompt_tokens': script.prompt_tokens,
            'completion_tokens': count,
            'total_tokens': script.prompt_tokens + count}})
        if (script.one_write and script.fault is None and script.ttft == 0
                and not any(gaps)):
            # One write: the cheapest way to stream, for ceiling checks.
            body = b''.join(self._chunk(chat, i, i == count - 1)
                            for i in range(count))
            await response.write(body + usage + b'data: [DONE]\n\n')
            self._count(script, count)
            return
        await asyncio.sleep(script.ttft)
        for i in range(count):
            if i:
                await asyncio.sleep(gaps[i - 1])
            if script.fault in _MID_STREAM and i == script.fault_after:
                await self._fault(request, response, script)
                return
            await response.write(self._chunk(chat, i, i == count - 1))
        if script.fault != 'no_usage':
            await response.write(usage)
        await response.write(b'data: [DONE]\n\n')
        self._count(script, count)

    async def _fault(self, request, response, script):
        if script.fault == 'malformed':
            await response.write(b'data: {"choices": [\n\n')
            await response.write(b'data: [DONE]\n\n')
        elif script.fault == 'error_event':
            await response.write(_event({'error': {
                'message': 'scripted engine failure', 'code': 500}}))
            await response.write(b'data: [DONE]\n\n')
        elif script.fault == 'stall':
            await asyncio.sleep(script.stall_s)
        elif script.fault == 'drop':
            # Close the connection mid-body: no chunked-encoding end.
            request.transport.close()

    def _count(self, script, count):
        self.counters['vllm:prompt_tokens_total'] += script.prompt_tokens
        self.counters['vllm:generation_tokens_total'] += count
        self.counters['vllm:request_success_total'] += 1
        self.counters['vllm:time_to_first_token_seconds_sum'] += script.ttft
        self.counters['vllm:time_to_first_token_seconds_count'] += 1


async def serve_for(seconds, port, host='127.0.0.1', one_write=False):
    """Run a zero-delay stub on ``port`` for at most ``seconds``."""
    stub = StubServer([Script(output_tokens=None, one_write=one_write)])
    await stub.start(host, port)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await stub.stop()


def main(argv=None):
    """``python -m gpu_partitions.bench.stub PORT SECONDS [one-write]``.

    A zero-delay stub that stops by itself, for load generators in other
    processes; it writes each chunk apart unless told ``one-write``.
    """
    import sys
    args = (argv or sys.argv[1:])
    asyncio.run(serve_for(float(args[1]), int(args[0]),
                          one_write=args[2:] == ['one-write']))


if __name__ == '__main__':
    main()
