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
"""The bench client against a hostile server on 127.0.0.1.

The scripted stub (:mod:`gpu_partitions.bench.stub`) answers each request
with exactly the bytes of one case, over real HTTP, on a loop with virtual
time. Every hostile response must fail its own request with a reason,
while a healthy request of the same run succeeds and the run's result
file is written.
"""

import json
import os

import fixtures
import testtools

from gpu_partitions.bench import client
from gpu_partitions.bench import loadgen
from gpu_partitions.bench import results
from gpu_partitions.bench import stub
from gpu_partitions.commands import bench as bench_command
from tests.unit.bench import vtime
from tests.unit.fuzz import outcomes

DONE = b'data: [DONE]\n\n'
TEXT = b'data: {"choices": [{"index": 0, "text": " tok"}]}\n\n'
CHAT = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'


def event(payload):
    return b'data: ' + json.dumps(payload).encode() + b'\n\n'


def usage(value):
    return event({'choices': [], 'usage': value})


def stream(*pieces):
    return stub.Script(raw=[(0.0, piece) for piece in pieces])


# (what, script, error kind the request must fail with)
HOSTILE = [
    ('choices [1]', stream(event({'choices': [1]}), DONE),
     'malformed_chunk'),
    ('choices [null]', stream(event({'choices': [None]}), DONE),
     'malformed_chunk'),
    ('choices a string', stream(event({'choices': 'abc'}), DONE),
     'malformed_chunk'),
    ('choices an object', stream(event({'choices': {'text': 'x'}}), DONE),
     'malformed_chunk'),
    ('choice text a number', stream(event({'choices': [{'text': 5}]}),
                                    DONE), 'malformed_chunk'),
    ('usage "abc"', stream(TEXT, usage('abc'), DONE), 'malformed_chunk'),
    ('usage a list', stream(TEXT, usage([1]), DONE), 'malformed_chunk'),
    ('completion_tokens "abc"', stream(TEXT, usage(
        {'completion_tokens': 'abc'}), DONE), 'malformed_chunk'),
    ('completion_tokens -1', stream(TEXT, usage(
        {'completion_tokens': -1}), DONE), 'malformed_chunk'),
    ('completion_tokens 1.5', stream(TEXT, usage(
        {'completion_tokens': 1.5}), DONE), 'malformed_chunk'),
    ('completion_tokens 1e400', stream(
        TEXT, b'data: {"choices": [], "usage": {"completion_tokens": '
        b'1e400}}\n\n', DONE), 'malformed_chunk'),
    ('prompt_tokens true', stream(TEXT, usage({'prompt_tokens': True}),
                                  DONE), 'malformed_chunk'),
    ('prompt_tokens 10**30', stream(TEXT, usage(
        {'prompt_tokens': 10 ** 30}), DONE), 'malformed_chunk'),
    ('chunk not JSON', stream(b'data: {"choices": [\n\n', DONE),
     'malformed_chunk'),
    ('chunk a JSON list', stream(b'data: [1, 2]\n\n', DONE),
     'malformed_chunk'),
    ('chunk empty', stream(b'data:\n\n', DONE), 'malformed_chunk'),
    ('chunk nested 100000 deep', stream(
        b'data: ' + b'[' * 100000 + b']' * 100000 + b'\n\n', DONE),
     'malformed_chunk'),
    ('chunk not UTF-8', stream(b'data: {"choices": "\xff\xfe"}\n\n', DONE),
     'malformed_chunk'),
    ('data after [DONE]', stream(TEXT, DONE, TEXT), 'malformed_chunk'),
    ('error event', stream(TEXT, event({'error': {'message': 'x' * 10000}}),
                           DONE), 'server_error'),
    ('no [DONE]', stream(TEXT), 'dropped_stream'),
    ('only empty choices', stream(event({'choices': []}), DONE),
     'no_tokens'),
    ('line of 2 MiB with its newline', stream(
        b'data: "' + b'x' * (2 * 1024 * 1024) + b'"\n\n', DONE),
     'oversized_line'),
    ('line of 2 MiB without newline', stream(
        *[b'x' * 65536] * 32), 'oversized_line'),
    ('500 with a non-UTF-8 body', stub.Script(
        status=500, raw=[(0.0, b'\xff\xfe\x80 engine died \xc3')]),
     'http_500'),
    ('500 with an 8 MiB body', stub.Script(
        status=500, raw=[(0.0, b'e' * 65536)] * 128), 'http_500'),
    ('404 empty', stub.Script(status=404, raw=[]), 'http_404'),
    ('keep-alive comments forever', stub.Script(
        raw=[(0.5, b': ping\n\n')] * 7200), 'stall'),
    ('one token then comments forever', stub.Script(
        raw=[(0.0, TEXT)] + [(0.5, b': keep-alive\n')] * 7200), 'stall'),
]

# Odd but valid: accepted, and why.
VALID = [
    ('CRLF line ends', stream(TEXT.replace(b'\n', b'\r\n'), DONE),
     'SSE allows CR LF line ends'),
    ('comments between chunks', stream(b': hi\n\n', TEXT, b':\n\n', DONE),
     'comments are pings, not data'),
    ('usage with null counts', stream(TEXT, usage(
        {'prompt_tokens': None, 'completion_tokens': None}), DONE),
     'null counts read as 0, as vLLM writes them before the end'),
    ('chat content null', stream(event({'choices': [
        {'delta': {'content': None}}]}), DONE),
     'a role-only chat chunk has null content'),
    ('unknown fields', stream(event({'choices': [{'text': 'x'}],
                                     'fuzz': [1, {'a': None}]}), DONE),
     'servers add fields; the client reads what it needs'),
]

HEALTHY = stub.Script(output_tokens=3)


def run_cases(scripts, endpoint='/v1/completions', stall_timeout=2.0):
    async def scenario():
        server = stub.StubServer(scripts)
        base_url = await server.start()
        try:
            config = loadgen.RunConfig(
                base_url=base_url, model='stub-model', endpoint=endpoint,
                num_prompts=len(scripts), max_concurrency=1,
                stall_timeout=stall_timeout, scrape_metrics=False)
            return await loadgen.run(config)
        finally:
            await server.stop()
    return vtime.run(scenario())


class HostileResponsesTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def test_each_hostile_response_fails_only_its_request(self):
        counted = outcomes.Outcomes('bench responses')
        for what, script, kind in HOSTILE:
            # One run per case: the hostile request, then a healthy one.
            try:
                result = run_cases([script, HEALTHY])
                path = os.path.join(self.tmp, 'result.json')
                bench_command.write_outputs(
                    results.build({}, [result]), path, plots=False)
            except Exception as error:  # noqa: B902 counted, then asserted
                counted.traceback('%s: %s: %.200s' % (
                    what, type(error).__name__, error))
                continue
            summary = result['summary']
            with open(path) as stream_:
                written = json.load(stream_)['runs'][0]
            errors = result['first_errors']
            if (summary['completed'] != 1 or summary['errors'] != {kind: 1}
                    or written['summary']['completed'] != 1):
                counted.accepted('%s: %r %r' % (what, summary['errors'],
                                                errors))
                continue
            counted.clear('%s: %s' % (kind, errors[0]['error'][:300]
                                      .replace('\n', ' ')))
            # The reason is short whatever the server sent.
            self.assertLessEqual(len(errors[0]['error']), 400, what)
        for what, script, reason in VALID:
            result = run_cases([script, HEALTHY])
            if result['summary']['completed'] == 2:
                counted.accepted(what, reason)
            else:
                counted.accepted('%s refused: %r' % (
                    what, result['summary']['errors']))
        counted.check(self, len(HOSTILE) + len(VALID))

    def test_chat_chunks_with_malformed_deltas(self):
        cases = [(event({'choices': [{'delta': 'x'}]}), 'delta a string'),
                 (event({'choices': [{'delta': {'content': 7}}]}),
                  'content a number'),
                 (event({'choices': [{'delta': [1]}]}), 'delta a list')]
        for chunk, what in cases:
            result = run_cases([stream(chunk, DONE), stub.Script()],
                               endpoint='/v1/chat/completions')
            self.assertEqual({'malformed_chunk': 1},
                             result['summary']['errors'], what)
            self.assertEqual(1, result['summary']['completed'], what)

    def test_stall_is_no_data_line_not_no_byte(self):
        # Comments every 0.5 s reset a byte timer forever; the stall
        # timer fails the request 2 s after its last data line.
        result = run_cases([stub.Script(
            raw=[(0.0, TEXT)] + [(0.5, b': ping\n\n')] * 7200)])
        self.assertEqual({'stall': 1}, result['summary']['errors'])
        self.assertLess(result['summary']['duration'], 3.0)


class EventParserTest(testtools.TestCase):

    def test_a_64_mib_line_fails_after_one_mib(self):
        parser = client._EventParser()
        piece = b'x' * 65536
        fed = 0
        error = None
        while fed < 64 * 1024 * 1024:
            try:
                parser.feed(piece)
            except client.StreamError as raised:
                error = raised
                break
            fed += len(piece)
        self.assertEqual('oversized_line', error.kind)
        self.assertLessEqual(fed, client.MAX_LINE_BYTES)

    def test_lines_split_anywhere_give_the_same_events(self):
        body = (TEXT + b': ping\n' + usage({'completion_tokens': 1}) +
                DONE)
        whole = client._EventParser().feed(body)
        parser = client._EventParser()
        split = []
        for offset in range(len(body)):
            split += parser.feed(body[offset:offset + 1])
        self.assertEqual(whole, split)
        self.assertEqual(2, len(whole))
        self.assertTrue(parser.done)
