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
"""The load generator's own ceiling, beside another generator's.

A zero-delay stub (its own process, its own core) streams responses as
fast as it can write them; the harness, pinned to one core, drives it as
hard as it can, with short responses (the request rate it can sustain)
and long ones (the streamed chunks per second it can parse).  guidellm,
where installed, drives the same stub, pinned to the same core, with the
same concurrency and response lengths.  If a GPU slice streams fewer
chunks per second than this ceiling, the harness is not its bottleneck.
"""

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from gpu_partitions.bench import loadgen

HARNESS_CORE = 0
STUB_CORE = 1


def _free_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _cpu_seconds(pid):
    """User+system CPU seconds of a process (Linux /proc), or None."""
    try:
        with open('/proc/%d/stat' % pid) as stat:
            fields = stat.read().rpartition(')')[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _pin(pid, core):
    with contextlib.suppress(OSError, AttributeError):
        if core in os.sched_getaffinity(0) or os.cpu_count() > core:
            os.sched_setaffinity(pid, {core})


@contextlib.contextmanager
def stub_process(lifetime_s):
    """A zero-delay stub in a child process on its own core."""
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, '-m', 'gpu_partitions.bench.stub', str(port),
         str(lifetime_s)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    _pin(child.pid, STUB_CORE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(('127.0.0.1', port), 1).close()
                break
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError('stub did not start')
            time.sleep(0.1)
        yield child, 'http://127.0.0.1:%d' % port
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def measure_harness(base_url, stub_pid, num_prompts, concurrency,
                    output_len):
    """Our own rates against the stub, in this (pinned) process."""
    config = loadgen.RunConfig(
        base_url=base_url, model='stub-model', num_prompts=num_prompts,
        max_concurrency=concurrency, random_input_len=16,
        random_output_len=output_len, scrape_metrics=False,
        percentiles=(99.0,))
    stub_cpu = _cpu_seconds(stub_pid)
    own_cpu = time.process_time()
    run = asyncio.run(loadgen.run(config))
    summary = run['summary']
    own_cpu = time.process_time() - own_cpu
    duration = summary['duration']
    return _figures(summary['completed'], summary['failed'],
                    summary['total_output_tokens'], duration,
                    own_cpu, stub_cpu, stub_pid)


def _figures(completed, failed, chunks, duration, own_cpu, stub_cpu,
             stub_pid):
    figures = {'completed': completed, 'failed': failed,
               'duration_s': round(duration, 3),
               'requests_per_s': round(completed / duration, 1),
               'chunks_per_s': round(chunks / duration, 1)}
    if own_cpu is not None:
        figures['generator_cpu_util'] = round(own_cpu / duration, 2)
    after = _cpu_seconds(stub_pid)
    if stub_cpu is not None and after is not None:
        figures['stub_cpu_util'] = round((after - stub_cpu) / duration, 2)
    return figures


def find_guidellm(path=None):
    """guidellm's executable: ``path``, $GUIDELLM or PATH; False: none.

    :raises ValueError: when ``path`` or $GUIDELLM names no executable,
        before our own generator's runs (it failed after them).
    """
    if path is False:
        return None
    given = path or os.environ.get('GUIDELLM')
    if not given:
        return shutil.which('guidellm')
    found = shutil.which(given)
    if found is None:
        raise ValueError('%s %s: no such executable' % (
            '--guidellm' if path else '$GUIDELLM', given))
    return found


def guidellm_version(executable):
    try:
        done = subprocess.run([executable, '--version'], capture_output=True,
                              text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().split()[-1] if done.stdout.strip() else None


def measure_guidellm(executable, base_url, stub_pid, num_prompts,
                     concurrency, output_len, timeout_s=600):
    """guidellm's rates on the same stub, pinned to the harness core."""
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, 'prompts.json')
        output = os.path.join(work, 'result.json')
        with open(data, 'w') as stream:
            json.dump([{'prompt': '%d the quick brown fox' % i,
                        'output_tokens_count': output_len}
                       for i in range(num_prompts)], stream)
        argv = [executable, 'run',
                '--backend', 'kind=openai_http,target=%s' % base_url,
                '--profile', 'kind=concurrent,streams=%d' % concurrency,
                '--constraint', 'kind=max_requests,count=%d' % num_prompts,
                '--data', 'kind=json_file,path=%s' % data,
                '--output', 'kind=json,path=%s' % output,
                '--disable-console']
        stub_cpu = _cpu_seconds(stub_pid)
        child = subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        _pin(child.pid, HARNESS_CORE)
        try:
            _, errors = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return {'error': 'guidellm ran past %ss' % timeout_s}
        if child.returncode != 0 or not os.path.exists(output):
            return {'error': 'guidellm exit %s: %s' % (
                child.returncode, (errors or '')[-300:])}
        with open(output) as stream:
            report = json.load(stream)
    benchmark = report['benchmarks'][0]
    totals = benchmark['metrics']['request_totals']
    chunks = benchmark['metrics']['output_token_count']['successful'][
        'total_sum']
    # guidellm's own benchmark window: its start-up is not counted.
    return _figures(totals['successful'], totals['errored'], chunks,
                    benchmark['duration'], None, stub_cpu, stub_pid)


def _best(tries, key):
    """The try with the highest ``key``.

    A ceiling is the best observed: a lower try was held back by
    something else on the machine.
    """
    good = [t for t in tries if 'error' not in t]
    return max(good, key=lambda t: t[key]) if good else tries[-1]


def run(num_prompts=2000, concurrency=64, short_len=4, long_len=256,
        guidellm=None, pin=True, repeats=3, log=print):
    """Measure both generators; returns the summary dict.

    Each generator runs each workload ``repeats`` times, alternating, and
    its best try counts.  ``pin`` moves this process to the generator's
    core for good: only for a process that exists to measure.
    """
    if pin:
        _pin(0, HARNESS_CORE)
    executable = find_guidellm(guidellm)
    summary = {'concurrency': concurrency, 'num_prompts': num_prompts,
               'repeats': repeats,
               'cores': {'generator': HARNESS_CORE, 'stub': STUB_CORE},
               # Other work on the machine lowers both generators' figures.
               'load_average_before': os.getloadavg()[0],
               'workloads': {}}
    other_name = None
    if executable:
        other_name = 'guidellm %s' % (guidellm_version(executable) or '')
    keys = {'short': 'requests_per_s', 'long': 'chunks_per_s'}
    with stub_process(lifetime_s=3600) as (stub, base_url):
        for name, output_len in (('short', short_len), ('long', long_len)):
            prompts = num_prompts if name == 'short' else max(
                num_prompts // 4, concurrency)
            ours, others = [], []
            for _ in range(repeats):
                ours.append(measure_harness(base_url, stub.pid, prompts,
                                            concurrency, output_len))
                log('harness  %-5s (%d chunks/request): %s'
                    % (name, output_len, json.dumps(ours[-1])))
                if executable:
                    others.append(measure_guidellm(
                        executable, base_url, stub.pid, prompts,
                        concurrency, output_len))
                    log('guidellm %-5s (%d chunks/request): %s'
                        % (name, output_len, json.dumps(others[-1])))
            summary['workloads'][name] = {
                'output_len': output_len, 'num_prompts': prompts,
                'harness': _best(ours, keys[name]), 'harness_tries': ours,
                'other': _best(others, keys[name]) if others else None,
                'other_tries': others}
    short = summary['workloads']['short']
    long_ = summary['workloads']['long']
    summary['requests_per_s'] = short['harness']['requests_per_s']
    summary['chunks_per_s'] = long_['harness']['chunks_per_s']
    other = None
    if executable and 'error' not in (short['other'] or {}) and \
            'error' not in (long_['other'] or {}):
        other = {'name': other_name.strip(),
                 'requests_per_s': short['other']['requests_per_s'],
                 'chunks_per_s': long_['other']['chunks_per_s']}
    summary['other_generator'] = other
    summary['ratio_vs_other'] = (
        round(summary['chunks_per_s'] / other['chunks_per_s'], 2)
        if other and other['chunks_per_s'] else None)
    summary['ratio_vs_other_requests'] = (
        round(summary['requests_per_s'] / other['requests_per_s'], 2)
        if other and other['requests_per_s'] else None)
    return summary
