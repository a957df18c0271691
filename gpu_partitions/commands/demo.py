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
"""``gpu-partitions demo``: GPU hosts through a real cloud, in one process.

The hosts' Cyborg driver devices go through Cyborg's conductor into
Placement, under a fake ``nova-compute`` per host; then, for every kind of
slice reported, a Cyborg device profile asks for one unit, a flavor names
the profile (``accel:device_profile``) and servers are booted through Nova's
API, scheduler and conductor, which binds an accelerator request in Cyborg.
The table shows where each server landed: host, physical GPU, slice (the
provider's resource class) and the attach handle Cyborg bound.
"""

import json
import logging
import warnings

SERVERS_PER_CLASS = 2


def register(subparsers):
    parser = subparsers.add_parser(
        'demo', help='boot GPU servers in the in-process cloud and show '
                     'where they land',
        description='Report GPU hosts through Cyborg\'s conductor into '
                    'Placement, boot servers asking for each kind of slice '
                    'through Nova, all in this process, and show where '
                    'they landed.')
    parser.add_argument('--per-class', type=int, default=SERVERS_PER_CLASS,
                        metavar='N',
                        help='servers booted per kind of slice (default: '
                             '%(default)s)')
    parser.set_defaults(func=run)


def default_hosts():
    """The hosts the demo runs over: ``[(hostname, driver devices)]``."""
    from gpu_partitions.cloud import samples
    return samples.sample_hosts()


def run(args):
    # The services' chatter (eventlet notices at import, INFO lines while
    # the cloud shuts down, after Nova's log capture ends) would drown the
    # table. Errors still reach the captured log a failure comes back with.
    logging.disable(logging.WARNING)
    warnings.simplefilter('ignore')
    servers, providers = run_demo(default_hosts, per_class=args.per_class)
    print(format_servers(servers))
    print()
    print(format_providers(providers))
    return 0


def run_demo(host_source, per_class=SERVERS_PER_CLASS, **cloud_settings):
    """Report ``host_source()``'s hosts and boot ``per_class`` servers
    asking for each resource class they offer.

    :param host_source: callable returning ``[(hostname, driver
        devices)]``; plug reference hosts and drivers in here.
    :param cloud_settings: scheduler settings for
        :func:`gpu_partitions.cloud.harness.run_cloud`.
    :returns: ``(servers, providers)``, lists of dicts for the tables.
    """
    from gpu_partitions.cloud import harness

    hosts = list(host_source())
    deployables = {}
    for hostname, devices in hosts:
        for device in devices:
            gpu = _address(json.loads(device.controlpath_id.cpid_info))
            for deployable in device.deployable_list:
                rc = {a.key: a.value for a in deployable.attribute_list}['rc']
                deployables[deployable.name] = {
                    'host': hostname, 'gpu': gpu, 'resource_class': rc}

    def body(cloud):
        for hostname, devices in hosts:
            cloud.add_gpu_host(hostname, devices)
        servers = []
        classes = sorted({d['resource_class'] for d in deployables.values()})
        for rc in classes:
            slug = rc.lower().removeprefix('custom_').replace('_', '-')
            cloud.create_device_profile(
                slug, [harness.device_profile_group(rc)])
            flavor = cloud.create_flavor(harness.accel_extra_specs(slug),
                                         name='demo-' + slug)
            for number in range(1, per_class + 1):
                server = cloud.boot(flavor, name='%s-%d' % (slug, number))
                landed = [name for name in cloud.allocations(server)
                          if name in deployables]
                handles = [_handle(arq) for arq in cloud.arqs(server)
                           if arq['state'] == 'Bound']
                servers.append({
                    'server': server['name'], 'status': server['status'],
                    'asked': rc, 'host': cloud.host_of(server) or '-',
                    'provider': landed[0] if landed else '-',
                    'gpu': (deployables[landed[0]]['gpu']
                            if landed else '-'),
                    'handle': ', '.join(handles) or '-'})
        usages = cloud.provider_usages()
        providers = [
            {'provider': provider.name, 'host': info['host'],
             'gpu': info['gpu'], 'resource_class': info['resource_class'],
             'used': usages[provider.name].get(info['resource_class'], 0),
             'total': provider.inventories.get(info['resource_class'], 0)}
            for provider in cloud.providers()
            for info in [deployables.get(provider.name)] if info]
        return servers, providers

    return harness.run_cloud(body, **cloud_settings)


def format_servers(servers):
    return _table(
        ('server', 'status', 'host', 'GPU', 'slice', 'attach handle',
         'provider'),
        [(s['server'], s['status'], s['host'], s['gpu'], s['asked'],
          s['handle'], s['provider']) for s in servers])


def format_providers(providers):
    return _table(
        ('provider', 'host', 'GPU', 'slice', 'used'),
        [(p['provider'], p['host'], p['gpu'], p['resource_class'],
          '%d/%d' % (p['used'], p['total'])) for p in providers])


def _table(header, rows):
    widths = [max(len(str(cell)) for cell in column)
              for column in zip(header, *rows)]
    lines = ['  '.join(str(cell).ljust(width)
                       for cell, width in zip(row, widths)).rstrip()
             for row in [header] + list(rows)]
    lines.insert(1, '  '.join('-' * width for width in widths))
    return '\n'.join(lines)


def _handle(arq):
    """``PCI 0000:1b:00.4`` or ``MDEV 0000:1b:00.0 nvidia-1044``."""
    info = arq['attach_handle_info']
    text = '%s %s' % (arq['attach_handle_type'], _address(info))
    if info.get('asked_type'):
        text += ' ' + info['asked_type']
    return text


def _address(fields):
    return '%s:%s:%s.%s' % (fields['domain'], fields['bus'],
                            fields['device'], fields['function'])
