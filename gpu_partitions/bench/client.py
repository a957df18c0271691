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


# A server-sent-event line longer than this fails its request: vLLM's
# chunks are a few hundred bytes, a long one some KiB.
MAX_LINE_BYTES = 1024 * 1024
# The most of an error response's body that is read (and the most kept
# in the reason).
MAX_ERROR_BODY = 64 * 1024
ERROR_EXCERPT = 200
# Token counts above this are not a server's answer but garbage.
MAX_TOKENS = 10 ** 9


def _choice_text(kind, choice):
    """The text a chunk's first choice carries; StreamError if malformed."""
    if not isinstance(choice, dict):
        raise StreamError('malformed_chunk', 'a choice is %s, not an '
                          'object' % type(choice).__name__)
    if kind == CHAT:
        delta = choice.get('delta') or {}
        if not isinstance(delta, dict):
            raise StreamError('malformed_chunk', 'choice delta is %s, not '
                              'an object' % type(delta).__name__)
        text = delta.get('content') or ''
    else:
        text = choice.get('text') or ''
    if not isinstance(text, str):
        raise StreamError('malformed_chunk', 'choice text is %s, not a '
                          'string' % type(text).__name__)
    return text


def _token_count(usage, key):
    value = usage.get(key)
    if value is None:
        return 0
    if (isinstance(value, bool) or not isinstance(value, int) or
            not 0 <= value <= MAX_TOKENS):
        raise StreamError('malformed_chunk', 'usage.%s is %s, not a token '
                          'count' % (key, _excerpt(repr(value))))
    return value


def _excerpt(text, limit=80):
    return text if len(text) <= limit else text[:limit] + '...'


class _EventParser:
    """Turns ``data:`` lines of a server-sent-event stream into events.

    Bytes are kept in one growing buffer and scanned once each, so a long
    line costs linear time, and no line may exceed ``max_line`` bytes.
    """

    def __init__(self, max_line=MAX_LINE_BYTES):
        self._buffer = bytearray()
        self._scanned = 0
        self.max_line = max_line
        self.done = False
        self.data_events = 0

    def feed(self, data):
        """The JSON objects of the complete lines in ``data``, a list."""
        self._buffer += data
        events = []
        start = 0
        while True:
            end = self._buffer.find(b'\n', max(start, self._scanned))
            if end < 0:
                break
            events.extend(self._line(bytes(self._buffer[start:end])))
            start = end + 1
        del self._buffer[:start]
        self._scanned = len(self._buffer)
        if self._scanned > self.max_line:
            raise StreamError('oversized_line', 'a stream line exceeds %d '
                              'bytes' % self.max_line)
        return events

    def _line(self, raw):
        if len(raw) > self.max_line:
            raise StreamError('oversized_line', 'a stream line exceeds %d '
                              'bytes' % self.max_line)
        line = raw.strip()
        # Blank lines end events; ':' lines are comments or pings.
        if not line.startswith(b'data:'):
            return ()
        self.data_events += 1
        body = line[5:].strip()
        if body == b'[DONE]':
            self.done = True
            return ()
        if self.done:
            raise StreamError('malformed_chunk', 'data after [DONE]')
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):
            raise StreamError('malformed_chunk', 'chunk is not JSON: %r'
                              % body[:80]) from None
        if not isinstance(event, dict):
            raise StreamError('malformed_chunk',
                              'chunk is not an object: %r' % body[:80])
        return (event,)


async def _error_reason(response):
    """``reason: body excerpt`` of a non-200 answer, reading a bounded
    part of the body and tolerating any bytes in it.
    """
    body = await response.content.read(MAX_ERROR_BODY)
    text = body.decode('utf-8', errors='replace')
    return '%s %s' % (response.reason, text[:ERROR_EXCERPT])


async def stream_request(session, url, payload, kind, timeout=None,
                         headers=None, stall_timeout=None):
    """POST ``payload`` and time its stream.

    Never raises for a server's fault: the returned
    :class:`~gpu_partitions.bench.metrics.RequestResult` says whether it
    succeeded and, if not, ``error_kind`` says why (``http_<status>``,
    ``timeout``, ``stall``, ``connection``, ``dropped_stream``,
    ``malformed_chunk``, ``oversized_line``, ``server_error``,
    ``no_tokens``, ``client_error``). ``stall_timeout`` bounds the time
    without a ``data:`` line: comments and keep-alive pings do not count
    as progress.
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
                raise StreamError('http_%d' % response.status,
                                  await _error_reason(response))
            progress_at = loop.time()
            while True:
                data = await _read_some(response, loop, progress_at,
                                        stall_timeout)
                if not data:
                    break
                now = loop.time()
                seen = parser.data_events
                for event in parser.feed(data):
                    if event.get('error'):
                        # vLLM reports a failure inside a 200 stream.
                        raise StreamError('server_error',
                                          _excerpt(str(event['error']),
                                                   200))
                    usage = event.get('usage')
                    if usage:
                        if not isinstance(usage, dict):
                            raise StreamError(
                                'malformed_chunk', 'usage is %s, not an '
                                'object' % type(usage).__name__)
                        result.prompt_tokens = _token_count(
                            usage, 'prompt_tokens')
                        result.output_tokens = _token_count(
                            usage, 'completion_tokens')
                        result.usage_reported = True
                    choices = event.get('choices')
                    if not choices:
                        continue
                    if not isinstance(choices, list):
                        raise StreamError(
                            'malformed_chunk', 'choices is %s, not a list'
                            % type(choices).__name__)
                    has_text = bool(_choice_text(kind, choices[0]))
                    result.chunks += 1
                    if first is None:
                        first = now
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    if has_text:
                        text_chunks += 1
                if parser.data_events != seen:
                    progress_at = now
            # A trailing line without its newline is still an event.
            parser.feed(b'\n')
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
    except Exception as error:  # noqa: B902 one request, never the run
        # Whatever else a response provokes fails this request only;
        # the run keeps its other requests and writes its result.
        result.error_kind = 'client_error'
        result.error = '%s: %s' % (type(error).__name__,
                                   _excerpt(str(error), 200))
        return result
    result.latency = last - start
    if not result.usage_reported:
        result.output_tokens = text_chunks
    result.success = True
    return result


async def _read_some(response, loop, progress_at, stall_timeout):
    """The next bytes of the body (b'' at its end); StreamError('stall')
    once ``stall_timeout`` passed since ``progress_at``.
    """
    if stall_timeout is None:
        return await response.content.readany()
    deadline = progress_at + stall_timeout
    try:
        return await asyncio.wait_for(response.content.readany(),
                                      max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        if loop.time() < deadline:
            raise  # aiohttp's own request timeout, not a stall
        raise StreamError('stall', 'no data line for %gs (comments and '
                          'pings do not count)' % stall_timeout) from None
