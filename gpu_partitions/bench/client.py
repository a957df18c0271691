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
"""One streamed request to an OpenAI-compatible server, timed as vLLM.

The clock is the event loop's (``loop.time()``: the monotonic clock, as
``time.perf_counter`` on Linux), so a test can run the client on a loop
with virtual time and check every figure exactly.  Chunks are
timestamped when the bytes carrying them are read.
"""

import asyncio
import json

import aiohttp

from gpu_partitions.bench import metrics

COMPLETIONS = 'completions'
CHAT = 'chat'
ENDPOINTS = {
    '/v1/completions': COMPLETIONS,
    '/v1/chat/completions': CHAT,
}


class StreamError(Exception):
    """A response the harness cannot use; ``kind`` names why."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def endpoint_kind(endpoint):
    """'completions' or 'chat' for an endpoint path, else ValueError."""
    for suffix, kind in ENDPOINTS.items():
        if endpoint.rstrip('/').endswith(suffix):
            return kind
    raise ValueError('endpoint %r: expected a path ending in one of %s'
                     % (endpoint, ', '.join(ENDPOINTS)))


def build_payload(kind, model, prompt, max_tokens, ignore_eos=True,
                  extra_body=None):
    """The JSON body ``vllm bench serve`` sends for this endpoint kind."""
    payload = {
        'model': model,
        'stream': True,
        'stream_options': {'include_usage': True},
    }
    if kind == CHAT:
        payload['messages'] = [{'role': 'user', 'content': prompt}]
        # The current name, and the older one servers such as llama.cpp's
        # still read instead.
        payload['max_completion_tokens'] = max_tokens
        payload['max_tokens'] = max_tokens
    else:
        payload['prompt'] = prompt
        payload['max_tokens'] = max_tokens
    if ignore_eos:
        payload['ignore_eos'] = True
    payload.update(extra_body or {})
    return payload


def _choice_text(kind, choice):
    if kind == CHAT:
        return (choice.get('delta') or {}).get('content') or ''
    return choice.get('text') or ''


class _EventParser:
    """Turns ``data:`` lines of a server-sent-event stream into events."""

    def __init__(self):
        self._buffer = b''
        self.done = False

    def feed(self, data):
        """Yield the JSON objects of the complete lines in ``data``."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b'\n')
        for raw in lines:
            line = raw.strip()
            # Blank lines end events; ':' lines are comments or pings.
            if not line.startswith(b'data:'):
                continue
            body = line[5:].strip()
            if body == b'[DONE]':
                self.done = True
                continue
            if self.done:
                raise StreamError('malformed_chunk', 'data after [DONE]')
            try:
                event = json.loads(body)
            except ValueError:
                raise StreamError('malformed_chunk', 'chunk is not JSON: %r'
                                  % body[:80]) from None
            if not isinstance(event, dict):
                raise StreamError('malformed_chunk',
                                  'chunk is not an object: %r' % body[:80])
            yield event


async def stream_request(session, url, payload, kind, timeout=None,
                         headers=None):
    """POST ``payload`` and time its stream.

    Never raises for a server's fault: the returned
    :class:`~gpu_partitions.bench.metrics.RequestResult` says whether it
    succeeded and, if not, ``error_kind`` says why (``http_<status>``,
    ``timeout``, ``connection``, ``dropped_stream``, ``malformed_chunk``,
    ``server_error``, ``no_tokens``).
    """
    loop = asyncio.get_running_loop()
    result = metrics.RequestResult()
    parser = _EventParser()
    text_chunks = 0
    first = last = None
    result.start_time = start = loop.time()
    try:
        async with session.post(url, json=payload, headers=headers,
                                timeout=timeout) as response:
            if response.status != 200:
                body = await response.text()
                raise StreamError('http_%d' % response.status,
                                  '%s %s' % (response.reason, body[:200]))
            async for data in response.content.iter_any():
                now = loop.time()
                for event in parser.feed(data):
                    if event.get('error'):
                        # vLLM reports a failure inside a 200 stream.
                        raise StreamError('server_error',
                                          str(event['error'])[:200])
                    usage = event.get('usage')
                    if usage:
                        result.usage_reported = True
                        result.prompt_tokens = int(
                            usage.get('prompt_tokens') or 0)
                        result.output_tokens = int(
                            usage.get('completion_tokens') or 0)
                    choices = event.get('choices')
                    if not choices:
                        continue
                    result.chunks += 1
                    if first is None:
                        first = now
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    if _choice_text(kind, choices[0]):
                        text_chunks += 1
            # A trailing line without its newline is still an event.
            for _ in parser.feed(b'\n'):
                pass
        if not parser.done:
            raise StreamError('dropped_stream',
                              'stream ended before data: [DONE]')
        if first is None:
            raise StreamError('no_tokens', 'no chunk with choices')
    except StreamError as error:
        result.error_kind, result.error = error.kind, str(error)
        return result
    except asyncio.TimeoutError:
        result.error_kind, result.error = 'timeout', 'request timed out'
        return result
    except aiohttp.ClientPayloadError as error:
        result.error_kind, result.error = 'dropped_stream', str(error)
        return result
    except (aiohttp.ClientError, OSError) as error:
        result.error_kind, result.error = 'connection', str(error)
        return result
    result.latency = last - start
    if not result.usage_reported:
        result.output_tokens = text_chunks
    result.success = True
    return result
