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
"""``gpu-partitions exporter``: partition metrics for Prometheus.

Serves ``/metrics`` over HTTP: per GPU and per provider capacity, used,
free and stranded units, health, partitioning, NUMA node and link domain
(:mod:`gpu_partitions.exporter`). The drivers enabled in Cyborg's
configuration (``--config-file``) scan this host, read-only; with
``--fixture NAME`` the real drivers scan a reference host instead (no GPU,
no cloud). With ``--os-cloud NAME`` Placement's usages of the host's
providers are added.
"""

import inspect
import signal
import sys
import tempfile
import threading

from gpu_partitions import cli


def register(subparsers):
    parser = subparsers.add_parser(
        'exporter', help='serve partition metrics for Prometheus',
        description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--config-file', type=cli.nonempty, metavar='PATH',
                        default='/etc/cyborg/cyborg.conf',
                        help='Cyborg configuration naming the enabled '
                             'drivers and their options (default: '
                             '%(default)s); used when no fixture is given')
    source.add_argument('--fixture', type=cli.nonempty, metavar='NAME',
                        help='serve a reference host by name through the '
                             'real drivers')
    parser.add_argument('--driver', type=cli.nonempty,
                        action='append', metavar='NAME',
                        help='scan only with this driver (repeatable); '
                             'default: every enabled driver')
    parser.add_argument('--listen', type=cli.nonempty,
                        metavar='ADDRESS', default='127.0.0.1',
                        help='address to listen on (default: %(default)s; '
                             'give 0.0.0.0 or the host\'s address for a '
                             'remote Prometheus)')
    parser.add_argument('--port', default=9835,
                        type=cli.number(int, minimum=0, maximum=65535),
                        help='TCP port (default: %(default)s; 0 picks a '
                             'free one, printed at start)')
    parser.add_argument('--interval', type=cli.number(float, above=0),
                        default=30.0,
                        help='scan the host at most once per this many '
                             'seconds; scrapes in between get the last '
                             'scan (default: %(default)s)')
    parser.add_argument('--os-cloud', type=cli.nonempty, metavar='NAME',
                        help='also read Placement\'s usages of the host\'s '
                             'providers, as this cloud of clouds.yaml')
    parser.add_argument('--once', action='store_true',
                        help='print one scrape in the text exposition '
                             'format and exit instead of serving')
    parser.set_defaults(func=run)


class ReadOnlyError(Exception):
    """A driver tried to change the host from the exporter."""


def _refuse_write(*args, **kwargs):
    raise ReadOnlyError('the exporter never changes the host; apply '
                        'layouts and vGPU types through the Cyborg agent')


#: Constructor arguments through which a driver writes to the host; the
#: exporter hands it a writer that refuses.
WRITERS = ('apply_layout', 'write_vgpu_type')


def read_only_driver(cls, **kwargs):
    """Build a driver whose writers refuse to change the host."""
    parameters = inspect.signature(cls).parameters
    kwargs.update((name, _refuse_write) for name in WRITERS
                  if name in parameters)
    return cls(**kwargs)


def local_drivers(config_file, names=None):
    """``{name: driver}`` of the drivers Cyborg runs on this machine."""
    from oslo_config import cfg

    import cyborg.conf  # noqa: F401 registers [agent] and [DEFAULT] host

    cli.load_config(config_file)
    source = ('--driver' if names else
              '%s: [agent] enabled_drivers' % config_file)
    classes = [(name, cli.driver_class(name, source))
               for name in names or cfg.CONF.agent.enabled_drivers]
    drivers = {}
    for name, cls in classes:
        if not hasattr(cls, 'collect'):
            print('exporter: %s is not a driver of this package; skipped'
                  % name, file=sys.stderr)
            continue
        try:
            drivers[name] = read_only_driver(cls)
        except Exception as error:
            # One bad driver option costs that driver only.
            print('exporter: %s cannot start: %s' % (name, error),
                  file=sys.stderr)
    return drivers


def fixture_drivers(name, directory, names=None):
    """``{name: driver}``: the real drivers over a reference host."""
    from gpu_partitions import fixture_drivers as builders
    from gpu_partitions import reference_hosts

    try:
        host = reference_hosts.load(name)
    except reference_hosts.ReferenceHostError as error:
        raise cli.UsageError(str(error))
    unknown = set(names or ()) - set(builders.DRIVERS)
    if unknown:
        raise cli.UsageError('unknown driver %s; known: %s' % (
            ', '.join(sorted(unknown)), ', '.join(sorted(builders.DRIVERS))))
    env = host.materialize(directory)
    return {driver: builders.build(driver, env)
            for driver in names or sorted(builders.DRIVERS)}


PLACEMENT_VERSION = '1.14'  # in_tree


def placement_usages(placement, hostname):
    """``{provider name: {rc: used}}`` of the providers under the compute
    node called ``hostname``; ``placement`` is a keystoneauth adapter.
    """
    def get(url):
        response = placement.get(url, microversion=PLACEMENT_VERSION)
        response.raise_for_status()
        return response.json()

    roots = get('/resource_providers?name=%s' % hostname)[
        'resource_providers']
    if not roots:
        return {}
    usages = {}
    for provider in get('/resource_providers?in_tree=%s'
                        % roots[0]['uuid'])['resource_providers']:
        usages[provider['name']] = get(
            '/resource_providers/%s/usages' % provider['uuid'])['usages']
    return usages


def build_registry(drivers, interval, usages=None):
    from prometheus_client import registry

    from gpu_partitions import exporter

    def log(message):
        print('exporter: ' + message, file=sys.stderr)

    scanner = exporter.Scanner(drivers, interval, usages=usages, log=log)
    collectors = registry.CollectorRegistry()
    collectors.register(exporter.Collector(scanner))
    return collectors


def run(args):
    import prometheus_client

    usages = None
    if args.os_cloud:
        import functools

        usages = functools.partial(
            placement_usages, cli.connect_cloud(args.os_cloud).placement)

    with tempfile.TemporaryDirectory(prefix='gpu-partitions-') as directory:
        if args.fixture:
            drivers = fixture_drivers(args.fixture, directory, args.driver)
        else:
            drivers = local_drivers(args.config_file, args.driver)
        if not drivers:
            raise cli.UsageError('no driver of this package to scan with')
        collectors = build_registry(drivers, args.interval, usages)
        if args.once:
            sys.stdout.write(
                prometheus_client.generate_latest(collectors).decode())
            return 0
        try:
            server, thread = prometheus_client.start_http_server(
                args.port, addr=args.listen, registry=collectors)
        except (OSError, UnicodeError) as error:
            # UnicodeError: a name no resolver takes (a label over 63
            # characters fails in the IDNA codec).
            raise cli.UsageError('cannot listen on %s:%d: %s'
                                 % (args.listen, args.port, error))
        print('gpu-partitions exporter: serving http://%s:%d/metrics'
              % (args.listen, server.server_port), flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        server.shutdown()
        thread.join()
    return 0
