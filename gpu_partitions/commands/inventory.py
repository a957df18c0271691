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
"""``gpu-partitions inventory``: what a GPU host reports to Placement.

With ``--fixture NAME`` or ``--fixture-file PATH`` the real drivers run over
a reference host; the output is one entry per provider the host would
report through Cyborg: name, resource class, total, traits and attach
handles.
"""

import json
import tempfile

from gpu_partitions import cli


def register(subparsers):
    parser = subparsers.add_parser(
        'inventory', help='show the providers a GPU host reports',
        description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--fixture', metavar='NAME',
                        help='a reference host by name')
    source.add_argument('--fixture-file', metavar='PATH',
                        help='a reference host file')
    source.add_argument('--list-fixtures', action='store_true',
                        help='list the reference hosts and exit')
    parser.add_argument('--format', choices=('text', 'json'),
                        default='text')
    parser.add_argument('--driver', action='append', metavar='NAME',
                        help='run only this driver (repeatable); default: '
                             'every driver')
    parser.set_defaults(func=run)


def providers(devices):
    """Plain dicts, one per provider, from Cyborg driver devices."""
    entries = []
    for device in devices:
        for deployable in device.deployable_list:
            attributes = {a.key: a.value for a in deployable.attribute_list}
            entries.append({
                'name': deployable.name,
                'resource_class': attributes['rc'],
                'total': deployable.num_accelerators,
                'traits': sorted(value for key, value in attributes.items()
                                 if key.startswith('trait')),
                'attach_handles': [
                    {'type': handle.attach_type,
                     'address': json.loads(handle.attach_info),
                     'in_use': handle.in_use}
                    for handle in deployable.attach_handle_list],
                'gpu': json.loads(device.controlpath_id.cpid_info),
                'model': device.model,
                'stub': device.stub,
            })
    return entries


def format_text(hostname, entries):
    lines = ['%s: %d providers' % (hostname, len(entries))]
    for entry in entries:
        lines.append('  %s  %s x%d%s' % (
            entry['name'], entry['resource_class'], entry['total'],
            '  (stub)' if entry['stub'] else ''))
        lines.append('      traits: %s' % ' '.join(entry['traits']))
        for handle in entry['attach_handles']:
            address = handle['address']
            lines.append('      %s %s:%s:%s.%s%s%s' % (
                handle['type'], address['domain'], address['bus'],
                address['device'], address['function'],
                ' ' + address['asked_type'] if 'asked_type' in address
                else '', ' in use' if handle['in_use'] else ''))
    return '\n'.join(lines)


def run(args):
    from gpu_partitions import fixture_drivers
    from gpu_partitions import reference_hosts

    if args.list_fixtures:
        for name in reference_hosts.names():
            print('%-14s %s' % (name, reference_hosts.load(name).description))
        return 0
    try:
        host = (reference_hosts.load(args.fixture) if args.fixture
                else reference_hosts.load_file(args.fixture_file))
    except reference_hosts.ReferenceHostError as error:
        raise cli.UsageError(str(error))
    unknown = set(args.driver or ()) - set(fixture_drivers.DRIVERS)
    if unknown:
        raise cli.UsageError('unknown driver %s; known: %s' % (
            ', '.join(sorted(unknown)),
            ', '.join(sorted(fixture_drivers.DRIVERS))))
    with tempfile.TemporaryDirectory(prefix='gpu-partitions-') as directory:
        env = host.materialize(directory)
        entries = providers(fixture_drivers.discover_all(env, args.driver))
    if args.format == 'json':
        print(json.dumps({'host': host.hostname, 'providers': entries},
                         indent=2, sort_keys=True))
    else:
        print(format_text(host.hostname, entries))
    return 0
