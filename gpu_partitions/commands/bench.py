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
"""``gpu-partitions bench``: benchmark an OpenAI-compatible endpoint.

``bench`` (or ``bench run``) measures one endpoint, flags named as in
``vllm bench serve``; ``bench compare`` lays results side by side per
slice; ``bench qualify`` boots a guest per flavor and benchmarks each.
"""

import math
import os

from gpu_partitions import cli

ACTIONS = ('run', 'compare', 'qualify', 'cloud-init')
BACKEND_ENDPOINTS = {'openai': '/v1/completions',
                     'vllm': '/v1/completions',
                     'openai-chat': '/v1/chat/completions'}


# Far above a real benchmark, low enough to fail fast instead of building
# millions of prompts or tasks.
MAX_PROMPTS = 10 ** 7
MAX_TOKENS = 2 ** 20
MAX_CONCURRENCY = 10 ** 5

_rate = cli.number(float, above=0, allow_inf=True)
_seconds = cli.number(float, above=0)


def _positive_int(maximum):
    return cli.number(int, minimum=1, maximum=maximum)


def register(subparsers):
    parser = subparsers.add_parser(
        'bench', help='benchmark an OpenAI-compatible endpoint',
        description='Benchmark an OpenAI-compatible endpoint (streaming), '
                    'with metrics defined as vLLM\'s `vllm bench serve`. '
                    'ACTION: run (default), compare RESULT..., qualify, '
                    'cloud-init (user-data for a benchmark guest).')
    parser.add_argument('action', nargs='?', choices=ACTIONS, default='run')
    parser.add_argument('inputs',
                        type=cli.nonempty, nargs='*', metavar='RESULT',
                        help='compare: result JSON files')
    run = parser.add_argument_group('run (also used by qualify)')
    run.add_argument('--base-url',
                     type=cli.nonempty, default='http://127.0.0.1:8000',
                     help='server URL without /v1 (default %(default)s)')
    run.add_argument('--backend', choices=sorted(BACKEND_ENDPOINTS),
                     default='openai',
                     help='openai/vllm: completions; openai-chat: chat')
    run.add_argument('--endpoint', type=cli.nonempty, default=None,
                     help='API path (default from --backend: '
                          '/v1/completions or /v1/chat/completions)')
    run.add_argument('--model', type=cli.nonempty, default=None,
                     help='model name (default: first of /v1/models)')
    run.add_argument('--num-prompts', type=_positive_int(MAX_PROMPTS),
                     default=1000)
    run.add_argument('--request-rate', type=_rate, nargs='+',
                     default=[math.inf],
                     help='requests/s, Poisson/gamma arrivals; several '
                          'values sweep; inf (default) sends all at once')
    run.add_argument('--burstiness', type=_rate, default=1.0,
                     help='gamma shape: 1 Poisson, <1 burstier, >1 more '
                          'regular, inf evenly spaced')
    run.add_argument('--max-concurrency',
                     type=_positive_int(MAX_CONCURRENCY), nargs='+',
                     default=None,
                     help='requests in flight at most; several values '
                          'sweep')
    run.add_argument('--random-input-len', type=_positive_int(MAX_TOKENS),
                     default=1024)
    run.add_argument('--random-output-len', type=_positive_int(MAX_TOKENS),
                     default=128)
    run.add_argument('--random-range-ratio',
                     type=cli.number(float, minimum=0, maximum=0.99),
                     default=0.0)
    run.add_argument('--seed', type=cli.number(int, minimum=0,
                                               maximum=2 ** 32 - 1),
                     default=0)
    run.add_argument('--num-warmups',
                     type=cli.number(int, minimum=0, maximum=10 ** 4),
                     default=0)
    run.add_argument('--no-ignore-eos', dest='ignore_eos',
                     action='store_false',
                     help='let the model stop early (default sends '
                          'ignore_eos like vllm bench serve)')
    run.add_argument('--goodput', type=cli.nonempty, nargs='+', default=None,
                     metavar='KEY:MS', help='SLOs: ttft, tpot, e2el in ms')
    run.add_argument('--metric-percentiles',
                     type=cli.nonempty, default='90,99')
    run.add_argument('--request-timeout', type=_seconds, default=6 * 3600.0,
                     help='seconds per request in all')
    run.add_argument('--stall-timeout', type=_seconds, default=300.0,
                     help='seconds without a streamed data line before a '
                          'request fails (comments and keep-alive pings '
                          'do not count)')
    run.add_argument('--result-file',
                     type=cli.nonempty, default='bench-result.json',
                     help='JSON result; the .md report and plots go '
                          'beside it')
    run.add_argument('--label', type=cli.nonempty, default=None)
    run.add_argument('--metadata', type=cli.nonempty, nargs='+', default=[],
                     metavar='KEY=VALUE')
    run.add_argument('--no-plots', dest='plots', action='store_false')
    run.add_argument('--no-gpu-probe', dest='gpu_probe',
                     action='store_false',
                     help='do not look for a local GPU (client outside '
                          'the guest)')
    compare = parser.add_argument_group('compare')
    compare.add_argument('--memory-gib',
                         type=cli.nonempty, nargs='+', default=[],
                         metavar='LABEL=GIB',
                         help='GPU memory of a slice, where the result '
                              'does not say')
    compare.add_argument('--compute-share',
                         type=cli.nonempty, nargs='+', default=[],
                         metavar='LABEL=FRACTION',
                         help='share of the GPU\'s compute, where the '
                              'profile does not say (time-sliced vGPU)')
    compare.add_argument('--output-dir', type=cli.nonempty, default=None,
                         help='compare/qualify: where to write files')
    qualify = parser.add_argument_group('qualify')
    # An empty $OS_CLOUD is unset, not an empty --os-cloud.
    qualify.add_argument('--os-cloud', type=cli.nonempty,
                         default=os.environ.get('OS_CLOUD') or None,
                         help='cloud name in clouds.yaml (default $OS_CLOUD)')
    qualify.add_argument('--flavor', type=cli.nonempty, action='append',
                         default=[],
                         help='flavor to qualify (repeat)')
    qualify.add_argument('--image',
                         type=cli.nonempty, help='benchmark image name or ID')
    qualify.add_argument('--network',
                         type=cli.nonempty, help='network name or ID')
    qualify.add_argument('--port',
                         type=cli.number(int, minimum=1, maximum=65535),
                         default=8000)
    qualify.add_argument('--key-name', type=cli.nonempty, default=None)
    qualify.add_argument('--user-data', type=cli.nonempty, default=None,
                         help='cloud-config file for the guests')
    qualify.add_argument('--endpoint-timeout', type=_seconds, default=3600.0,
                         help='seconds to wait for vLLM to serve')
    guest = parser.add_argument_group('cloud-init (guest settings)')
    guest.add_argument('--max-num-seqs', type=_positive_int(MAX_CONCURRENCY),
                       default=256)
    guest.add_argument('--max-num-batched-tokens',
                       type=_positive_int(MAX_TOKENS),
                       default=2048)
    guest.add_argument('--max-model-len', type=_positive_int(MAX_TOKENS),
                       default=4096)
    guest.add_argument('--kv-cache-memory-bytes',
                       type=_positive_int(2 ** 50),
                       default=None,
                       help='fixed KV cache, the same on every slice '
                            '(else --gpu-memory-utilization)')
    guest.add_argument('--gpu-memory-utilization',
                       type=cli.number(float, above=0, maximum=1),
                       default=0.9)
    guest.add_argument('--served-model-name', type=cli.nonempty, default=None)
    guest.add_argument('--licence-token-file', type=cli.nonempty, default=None,
                       help='NVIDIA vGPU client configuration token')
    guest.add_argument('--stock-image', action='store_true',
                       help='user-data that also installs driver and vLLM '
                            'on a stock Ubuntu cloud image')
    guest.add_argument('--driver-url', type=cli.nonempty, default=None,
                       help='--stock-image: NVIDIA guest driver .deb/.run')
    guest.add_argument('--vllm-version', type=cli.nonempty, default=None)
    guest.add_argument('--output', type=cli.nonempty, default=None,
                       help='write the user-data here (default stdout)')
    parser.set_defaults(func=run_command)


def _pairs(items, option, convert=str):
    pairs = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise cli.UsageError('%s %r: expected KEY=VALUE' % (option, item))
        try:
            pairs[key] = convert(value)
        except ValueError:
            raise cli.UsageError('%s %r: bad value %r' % (option, item,
                                                          value)) from None
    return pairs


def _run_flags(args):
    """``(goodput, percentiles)`` of the run flags that argparse does not
    check itself; UsageError. Called before anything is contacted or
    booted, so that a typo costs no guest.
    """
    from gpu_partitions.bench import metrics

    _sweep_values(args)
    try:
        goodput = metrics.parse_goodput(args.goodput)
        percentiles = tuple(float(p) for p in
                            args.metric_percentiles.split(','))
    except ValueError as error:
        raise cli.UsageError(str(error)) from None
    if any(not 0 < p <= 100 for p in percentiles):
        raise cli.UsageError('--metric-percentiles: values in (0, 100]')
    return goodput, percentiles


def run_config(args, base_url, model):
    """The :class:`RunConfig` the flags describe, for one endpoint."""
    from gpu_partitions.bench import loadgen

    goodput, percentiles = _run_flags(args)
    return loadgen.RunConfig(
        base_url=base_url, model=model,
        endpoint=args.endpoint or BACKEND_ENDPOINTS[args.backend],
        num_prompts=args.num_prompts, request_rate=args.request_rate[0],
        burstiness=args.burstiness,
        max_concurrency=(args.max_concurrency or [None])[0],
        random_input_len=args.random_input_len,
        random_output_len=args.random_output_len,
        random_range_ratio=args.random_range_ratio, seed=args.seed,
        ignore_eos=args.ignore_eos, num_warmups=args.num_warmups,
        percentiles=percentiles, goodput=goodput or None,
        request_timeout=args.request_timeout,
        stall_timeout=args.stall_timeout)


def _sweep_values(args):
    rates = args.request_rate if len(args.request_rate) > 1 else None
    limits = (args.max_concurrency
              if args.max_concurrency and len(args.max_concurrency) > 1
              else None)
    if rates and limits:
        raise cli.UsageError('sweep --request-rate or --max-concurrency, '
                             'not both')
    return rates, limits


def benchmark_endpoint(args, base_url, gpu_probe, label=None,
                       metadata=None):
    """Pre-flight, run (or sweep) and return the result dict."""
    import asyncio

    from gpu_partitions.bench import loadgen
    from gpu_partitions.bench import preflight
    from gpu_partitions.bench import results

    rates, limits = _sweep_values(args)
    endpoint = asyncio.run(preflight.check_endpoint(base_url, args.model))
    if not endpoint['ready']:
        raise cli.UsageError('endpoint %s not ready: health %s, models %s%s'
                             % (base_url, endpoint['health'],
                                endpoint['models'],
                                ', ' + endpoint['error']
                                if endpoint.get('error') else ''))
    config = run_config(args, base_url, endpoint['model'])
    checks = {'endpoint': endpoint, 'client': preflight.describe_client(),
              'gpu': (preflight.describe_gpus() if gpu_probe else
                      {'present': False, 'reason': 'not probed'})}
    runs = asyncio.run(loadgen.sweep(config, rates, limits))
    return results.build(checks, runs, label, metadata)


def _print_summary(result):
    for run in result['runs']:
        summary = run['summary']
        config = run['config']
        print('=' * 18 + ' Serving Benchmark Result ' + '=' * 18)
        rows = [('Successful requests:', summary['completed']),
                ('Failed requests:', summary['failed']),
                ('Maximum request concurrency:', config['max_concurrency']),
                ('Request rate configured (RPS):', config['request_rate']),
                ('Benchmark duration (s):', summary['duration']),
                ('Total input tokens:', summary['total_input_tokens']),
                ('Total generated tokens:', summary['total_output_tokens']),
                ('Request throughput (req/s):',
                 summary['request_throughput']),
                ('Request goodput (req/s):', summary['request_goodput']),
                ('Output token throughput (tok/s):',
                 summary['output_throughput']),
                ('Total token throughput (tok/s):',
                 summary['total_token_throughput'])]
        for name in ('ttft', 'tpot', 'itl', 'e2el'):
            for key in sorted(k for k in summary
                              if k.endswith('_%s_ms' % name)):
                rows.append((key + ':', summary[key]))
        if summary['requests_without_usage']:
            rows.append(('Requests without usage (tokens = chunks):',
                         summary['requests_without_usage']))
        for title, value in rows:
            if isinstance(value, float):
                value = '%.2f' % value
            elif value is None:
                value = 'n/a'
            print('%-40s %s' % (title, value))
        if summary['errors']:
            print('%-40s %s' % ('Errors:', summary['errors']))


def write_outputs(result, json_path, plots=True):
    from gpu_partitions.bench import results
    from gpu_partitions.simulator import report

    results.write_json(result, json_path)
    stem = os.path.splitext(json_path)[0]
    text = results.markdown(result)
    report.atomic_write(stem + '.md', lambda stream: stream.write(
        text.encode()))
    paths = [json_path, stem + '.md']
    if plots:
        paths += results.plot(result, stem + '-plots')
    return paths


def check_outputs(file=None, directory=None):
    """Refuse, before a benchmark runs for minutes or hours, an output
    it could not write at the end: its results would be lost.
    """
    from gpu_partitions.simulator import report

    try:
        if file:
            report.check_writable(file)
        if directory:
            report.check_writable_dir(directory)
    except ValueError as error:
        raise cli.UsageError(str(error)) from None


def do_run(args):
    # All that write_outputs writes: the report beside the JSON too (a
    # directory of that name failed it after the run).
    stem = os.path.splitext(args.result_file)[0]
    check_outputs(file=args.result_file)
    check_outputs(file=stem + '.md',
                  directory=stem + '-plots' if args.plots else None)
    metadata = _pairs(args.metadata, '--metadata')
    _run_flags(args)
    result = benchmark_endpoint(args, args.base_url, args.gpu_probe,
                                args.label, metadata)
    _print_summary(result)
    for path in write_outputs(result, args.result_file, args.plots):
        print('wrote', path)
    return 0 if all(run['summary']['completed'] for run in result['runs']) \
        else 1


def do_compare(args):
    from gpu_partitions.bench import compare
    from gpu_partitions.bench import results

    if len(args.inputs) < 1:
        raise cli.UsageError('compare needs result files')
    check_outputs(directory=args.output_dir)
    labelled = []
    memory = _pairs(args.memory_gib, '--memory-gib', float)
    share = _pairs(args.compute_share, '--compute-share', float)
    for path in args.inputs:
        try:
            result = results.load(path)
        except OSError as error:
            raise cli.UsageError('%s: %s' % (path, error.strerror)) from None
        except ValueError as error:
            raise cli.UsageError(str(error)) from None
        label = result.get('label') or os.path.splitext(
            os.path.basename(path))[0]
        try:
            # Each file alone first, so that one lacking a field the
            # comparison reads is named, with the field.
            compare.rows([(label, result)], memory, share)
        except (KeyError, IndexError, TypeError, AttributeError,
                ValueError) as error:
            raise cli.UsageError('%s: not a complete bench result (%s: %s)'
                                 % (path, type(error).__name__, error))
        labelled.append((label, result))
    table = compare.rows(labelled, memory, share)
    text = compare.markdown(table)
    print(text, end='')
    if args.output_dir:
        import json
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, 'compare.md'), 'w') as out:
            out.write(text)
        with open(os.path.join(args.output_dir, 'compare.json'), 'w') as out:
            json.dump(table, out, indent=2)
        compare.plot(table, os.path.join(args.output_dir, 'compare.png'))
    return 0


def do_qualify(args, connect=None):
    import json

    from gpu_partitions.bench import cloudinit
    from gpu_partitions.bench import qualify

    missing = [option for option, value in (('--image', args.image),
                                            ('--network', args.network),
                                            ('--flavor', args.flavor))
               if not value]
    if missing:
        raise cli.UsageError('qualify needs %s' % ', '.join(missing))
    user_data = None
    if args.user_data:
        try:
            # Bounded: /dev/zero or a disk image named by mistake would
            # exhaust memory; Nova refuses more anyway.
            with open(args.user_data, 'rb') as stream:
                raw = stream.read(cloudinit.MAX_USER_DATA_BYTES + 1)
            if len(raw) > cloudinit.MAX_USER_DATA_BYTES:
                raise ValueError('larger than %d bytes, the most Nova '
                                 'takes' % cloudinit.MAX_USER_DATA_BYTES)
            user_data = raw.decode('utf-8')
        except (OSError, ValueError) as error:
            raise cli.UsageError('--user-data %s: %s' % (
                args.user_data,
                getattr(error, 'strerror', None) or error)) from None
    plan = qualify.Plan(args.image, args.network, args.flavor, args.port,
                        args.key_name, user_data,
                        endpoint_timeout=args.endpoint_timeout)
    output_dir = args.output_dir or 'qualify-results'
    check_outputs(directory=output_dir)
    _run_flags(args)
    conn = cli.connect_cloud(args.os_cloud, connect)
    os.makedirs(output_dir, exist_ok=True)

    def benchmark(base_url, flavor, details):
        metadata = {'flavor': flavor, 'vcpus': details['vcpus'],
                    'ram_mib': details['ram']}
        metadata.update(('extra_spec ' + key, value)
                        for key, value in details['extra_specs'].items())
        result = benchmark_endpoint(args, base_url, False, flavor, metadata)
        write_outputs(result, os.path.join(output_dir, flavor + '.json'),
                      args.plots)
        return result

    records = qualify.qualify(conn, plan, benchmark, log=print)
    with open(os.path.join(output_dir, 'qualify.json'), 'w') as stream:
        json.dump(records, stream, indent=2)
    for record in records:
        print('%-30s %-7s deleted=%s %s' % (
            record['flavor'], record['status'], record['deleted'],
            record['error'] or ''))
    return 0 if all(r['status'] == 'ok' and r['deleted'] is not False
                    for r in records) else 1


def write_private(path, text):
    """Write ``text`` to ``path`` readable by its owner only (0600), even
    when the file already existed with a wider mode.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, 'w', encoding='utf-8') as stream:
        os.fchmod(descriptor, 0o600)
        stream.write(text)


def do_cloud_init(args):
    from gpu_partitions.bench import cloudinit

    if not args.model:
        raise cli.UsageError('cloud-init needs --model (path or name of '
                             'the model in the guest)')
    settings = {'VLLM_MODEL': args.model, 'VLLM_PORT': args.port,
                'VLLM_MAX_NUM_SEQS': args.max_num_seqs,
                'VLLM_MAX_NUM_BATCHED_TOKENS': args.max_num_batched_tokens,
                'VLLM_MAX_MODEL_LEN': args.max_model_len,
                'VLLM_GPU_MEMORY_UTILIZATION': args.gpu_memory_utilization}
    if args.kv_cache_memory_bytes:
        settings['VLLM_KV_CACHE_MEMORY_BYTES'] = args.kv_cache_memory_bytes
    if args.served_model_name:
        settings['VLLM_SERVED_MODEL_NAME'] = args.served_model_name
    token = None
    if args.licence_token_file:
        try:
            with open(args.licence_token_file, encoding='utf-8') as stream:
                token = stream.read(cloudinit.MAX_USER_DATA_BYTES + 1)
        except (OSError, ValueError) as error:
            raise cli.UsageError('--licence-token-file %s: %s' % (
                args.licence_token_file,
                getattr(error, 'strerror', None) or error)) from None
    try:
        text = cloudinit.render(
            settings, args.stock_image, token, args.driver_url,
            args.vllm_version or cloudinit.DEFAULT_VLLM_VERSION)
    except ValueError as error:
        raise cli.UsageError(str(error)) from None
    if args.output:
        try:
            write_private(args.output, text)
        except OSError as error:
            raise cli.UsageError('--output %s: %s' % (
                args.output, error.strerror or error)) from None
    else:
        print(text, end='')
    return 0


def run_command(args):
    if args.action != 'compare' and args.inputs:
        raise cli.UsageError('unexpected arguments %s (did you mean '
                             '"bench compare"?)' % ' '.join(args.inputs))
    if args.action == 'compare':
        return do_compare(args)
    if args.action == 'qualify':
        return do_qualify(args)
    if args.action == 'cloud-init':
        return do_cloud_init(args)
    return do_run(args)
