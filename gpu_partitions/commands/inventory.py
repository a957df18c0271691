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

Without arguments it runs the drivers enabled in Cyborg's configuration
(``[agent] enabled_drivers`` of ``--config-file``, default
``/etc/cyborg/cyborg.conf``) on this machine. With ``--fixture NAME`` or
``--fixture-file PATH`` the real drivers run over a reference host instead.
The output is one entry per provider the host would report through Cyborg:
name, resource class, total, traits and attach handles, grouped by GPU.
With ``--os-cloud NAME`` (a cloud of ``clouds.yaml``) it also shows how
Placement's providers under this host differ from that report.
With ``--record FILE`` it writes the host (NVML, sysfs, libvirt, AMD SMI,
read only) as a reference host file instead, for a bug report.
"""

import collections
import json
import os
import sys
import tempfile

from gpu_partitions import cli


def register(subparsers):
    parser = subparsers.add_parser(
        'inventory', help='show the providers a GPU host reports',
        description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--config-file', type=cli.nonempty, metavar='PATH',
                        default='/etc/cyborg/cyborg.conf',
                        help='Cyborg configuration naming the enabled '
                             'drivers and their options (default: '
                             '%(default)s); used when no fixture is given')
    source.add_argument('--fixture', type=cli.nonempty, metavar='NAME',
                        help='a reference host by name')
    source.add_argument('--fixture-file', type=cli.nonempty, metavar='PATH',
                        help='a reference host file')
    source.add_argument('--list-fixtures', action='store_true',
                        help='list the reference hosts and exit')
    parser.add_argument('--format', choices=('text', 'json'),
                        default='text')
    parser.add_argument('--driver', type=cli.nonempty,
                        action='append', metavar='NAME',
                        help='run only this driver (repeatable); default: '
                             'every driver')
    parser.add_argument('--os-cloud', type=cli.nonempty, metavar='NAME',
                        help='also compare with what Placement holds for '
                             'this host, reading Placement as this cloud of '
                             'clouds.yaml')
    record = parser.add_argument_group(
        'recording', 'write this host (or the --fixture) as a reference '
        'host file; reads only, never changes a GPU')
    record.add_argument('--record', type=cli.nonempty, metavar='FILE',
                        help='write the host as a reference host file '
                             'instead of showing its providers')
    record.add_argument('--no-redact', dest='redact', action='store_false',
                        help='keep the hostname and the GPU, MIG, vGPU '
                             'and mdev UUIDs as read (default: replaced)')
    record.add_argument('--sysfs-root', type=cli.nonempty,
                        metavar='DIR', default='/sys',
                        help='sysfs to read (default: %(default)s)')
    record.add_argument('--libvirt-uri', type=cli.nonempty, metavar='URI',
                        default='qemu:///system',
                        help='libvirt to read node devices from, read only '
                             '(default: %(default)s); "none" skips libvirt')
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


def _address(fields):
    return '%s:%s:%s.%s' % (fields['domain'], fields['bus'],
                            fields['device'], fields['function'])


def format_text(hostname, entries):
    """The tree GPU -> providers -> attach handles, for people."""
    by_gpu = collections.defaultdict(list)
    for entry in entries:
        by_gpu[_address(entry['gpu'])].append(entry)
    lines = ['%s: %d GPUs, %d providers' % (hostname, len(by_gpu),
                                            len(entries))]
    for gpu, gpu_entries in sorted(by_gpu.items()):
        lines.append('GPU %s  %s%s' % (
            gpu, gpu_entries[0]['model'],
            '  (stub: kept from the last good scan)'
            if gpu_entries[0]['stub'] else ''))
        for entry in gpu_entries:
            used = sum(1 for h in entry['attach_handles'] if h['in_use'])
            lines.append('  %s  %s total=%d in_use=%d' % (
                entry['name'], entry['resource_class'], entry['total'],
                used))
            lines.append('    traits: %s' % ' '.join(entry['traits']))
            for handle in entry['attach_handles']:
                address = handle['address']
                lines.append('    %s %s%s%s' % (
                    handle['type'], _address(address),
                    ' ' + address['asked_type'] if 'asked_type' in address
                    else '', ' in use' if handle['in_use'] else ''))
    return '\n'.join(lines)


def local_devices(config_file, names=None):
    """Driver devices of the drivers Cyborg would run on this machine."""
    from oslo_config import cfg

    import cyborg.conf  # noqa: F401 registers [agent] and [DEFAULT] host
    from cyborg_gpu_drivers import base

    cli.load_config(config_file)
    source = ('--driver' if names else
              '%s: [agent] enabled_drivers' % config_file)
    plugins = [(name, cli.driver_class(name, source))
               for name in names or cfg.CONF.agent.enabled_drivers]
    devices = []
    for name, plugin in plugins:
        # A check: our drivers are built read only, so that no MIG layout
        # or vGPU type is applied; Cyborg's own drivers only read anyway.
        try:
            if issubclass(plugin, base.GpuPartitionDriver):
                driver = plugin(read_only=True)
                driver.reserves_in_placement = False
            else:
                driver = plugin()
        except Exception as error:
            # A driver option the agent could not start with either.
            raise cli.UsageError('%s: driver %s cannot start: %s' % (
                config_file, name, cli.first_line(error)))
        devices.extend(driver.discover())
    return base.agent_hostname(), devices


def run(args):
    from gpu_partitions import reference_hosts

    if args.list_fixtures:
        for name in reference_hosts.names():
            description = reference_hosts.load(name).description
            print('%-14s %s' % (name, description.split('. ')[0]))
        return 0
    if args.record:
        return record_host(args)
    expected = None
    if args.fixture or args.fixture_file:
        hostname, devices, expected = fixture_devices(args)
    else:
        hostname, devices = local_devices(args.config_file, args.driver)
    entries = providers(devices)
    differences = None
    if args.os_cloud:
        differences = placement_differences(
            entries, cloud_providers(args.os_cloud, hostname))
    if args.format == 'json':
        result = {'host': hostname, 'providers': entries}
        if differences is not None:
            result['placement_differences'] = differences
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_text(hostname, entries))
        if differences is not None:
            print('Placement: %s' % ('in step with this report'
                                     if not differences else
                                     '%d differences' % len(differences)))
            for line in differences:
                print('  ' + line)
    return silent_gpus(hostname, entries, expected)


def silent_gpus(hostname, entries, expected):
    """Say which GPUs of a reference host reported no provider; exit
    status 1 when none of them did (the drivers' warnings say why).
    """
    if not expected:
        return 0
    reported = {_address(entry['gpu']).lower() for entry in entries}
    silent = sorted(set(expected) - reported)
    if not silent:
        return 0
    print('gpu-partitions inventory: %s: %d of %d GPUs report no provider '
          '(%s); the warnings above say why'
          % (hostname, len(silent), len(expected), ', '.join(silent)),
          file=sys.stderr)
    return 1 if len(silent) == len(expected) else 0


PLACEMENT_VERSION = '1.14'  # in_tree


def cloud_providers(cloud, hostname):
    """:func:`placement_providers` read as ``cloud`` of clouds.yaml;
    UsageError, one line, when the cloud is unknown, unreachable or
    answers something else than Placement would.
    """
    import keystoneauth1.exceptions
    import openstack
    import requests

    try:
        placement = openstack.connect(cloud=cloud).placement
        return placement_providers(placement, hostname)
    except (openstack.exceptions.SDKException,
            keystoneauth1.exceptions.ClientException,
            requests.RequestException) as error:
        reason = str(error).strip().splitlines()
        raise cli.UsageError('--os-cloud %s: %s: %s' % (
            cloud, type(error).__name__,
            reason[0] if reason else 'no details')) from None
    except (ValueError, KeyError, TypeError) as error:
        raise cli.UsageError('--os-cloud %s: Placement\'s answer is not '
                             'what it should be (%s: %s)'
                             % (cloud, type(error).__name__, error)) from None


def placement_providers(placement, hostname):
    """``{name: {'resource_class': {rc: total}, 'traits': [...]}}`` of the
    providers under the compute node called ``hostname``.

    ``placement`` is a keystoneauth adapter (openstacksdk's ``placement``
    proxy) answering ``get(url, microversion=...)``.
    """
    def get(url):
        response = placement.get(url, microversion=PLACEMENT_VERSION)
        response.raise_for_status()
        return response.json()

    roots = get('/resource_providers?name=%s' % hostname)[
        'resource_providers']
    if not roots:
        raise cli.UsageError('Placement has no provider named %s' % hostname)
    tree = get('/resource_providers?in_tree=%s' % roots[0]['uuid'])[
        'resource_providers']
    found = {}
    for provider in tree:
        if provider['uuid'] == roots[0]['uuid']:
            continue
        inventories = get('/resource_providers/%s/inventories'
                          % provider['uuid'])['inventories']
        traits = get('/resource_providers/%s/traits'
                     % provider['uuid'])['traits']
        found[provider['name']] = {
            'inventories': {rc: inventory['total']
                            for rc, inventory in inventories.items()},
            'traits': sorted(traits)}
    return found


def placement_differences(entries, placed):
    """Lines saying how Placement differs from this host's report.

    Only providers of ours (``OWNER_CYBORG``) that Placement holds count as
    extra; stubs are left out, as Cyborg's conductor leaves them alone.
    """
    import placement_traits

    lines = []
    reported = {e['name']: e for e in entries if not e['stub']}
    for name, entry in sorted(reported.items()):
        held = placed.get(name)
        if held is None:
            lines.append('missing in Placement: %s' % name)
            continue
        want = {entry['resource_class']: entry['total']}
        if held['inventories'] != want:
            lines.append('%s: inventory %s in Placement, %s reported'
                         % (name, held['inventories'], want))
        if held['traits'] != entry['traits']:
            lines.append('%s: traits only in Placement %s, only reported %s'
                         % (name,
                            sorted(set(held['traits']) -
                                   set(entry['traits'])),
                            sorted(set(entry['traits']) -
                                   set(held['traits']))))
    stubs = {e['name'] for e in entries if e['stub']}
    for name, held in sorted(placed.items()):
        if (name not in reported and name not in stubs
                and placement_traits.OWNER_CYBORG in held['traits']):
            lines.append('only in Placement: %s' % name)
    return lines


def record_host(args):
    """Write the host, or the materialised fixture, as a host file."""
    from gpu_partitions import reference_hosts
    from gpu_partitions.reference_hosts import fake_amdsmi
    from gpu_partitions.reference_hosts import record
    from gpu_partitions.simulator import report

    try:
        report.check_writable(args.record)
    except ValueError as error:
        raise cli.UsageError(str(error))
    if args.fixture or args.fixture_file:
        host = _load_fixture(args)
        with tempfile.TemporaryDirectory(prefix='gpu-partitions-') as tmp:
            env = _materialize(host, tmp)
            document, notes = record.record(
                nvml_module=env.nvml, sysfs_root=env.sysfs_root,
                libvirt_uri=env.libvirt_uri,
                amdsmi_module=fake_amdsmi.module_for(env.amdsmi),
                hostname=host.hostname, redact=args.redact)
    else:
        if not os.path.isdir(args.sysfs_root):
            # A typo would record a host with no device, exit status 0.
            raise cli.UsageError('--sysfs-root %s is not a directory'
                                 % args.sysfs_root)
        document, notes = record.record(
            sysfs_root=args.sysfs_root,
            libvirt_uri=None if args.libvirt_uri == 'none'
            else args.libvirt_uri, redact=args.redact)
    problem = None
    try:
        reference_hosts._validate.validate(document, args.record)
    except reference_hosts.ReferenceHostError as error:
        problem = str(error)
    text = json.dumps(document, indent=1, sort_keys=False) + '\n'
    try:
        report.atomic_write(args.record,
                            lambda stream: stream.write(text.encode()))
    except OSError as error:
        raise cli.UsageError('cannot write %s: %s' % (args.record,
                                                      error.strerror))
    nvml = document['nvml'] or {'devices': []}
    amd = document['amdsmi'] or {'gpus': []}
    print('recorded %s: %d NVIDIA GPUs (NVML), %d AMD GPUs (AMD SMI), %d '
          'PCI devices, %s libvirt node devices, %d notes%s'
          % (args.record, len(nvml['devices']), len(amd['gpus']),
             len(document['pci_devices']),
             'no' if document['libvirt_nodedevs'] is None
             else len(document['libvirt_nodedevs']), len(notes),
             ', identifiers redacted' if args.redact else ''),
          file=sys.stderr)
    if problem:
        print('gpu-partitions inventory: the recording does not validate '
              '(%s); please attach it to a bug report as it is' % problem,
              file=sys.stderr)
        return 1
    return 0


def _load_fixture(args):
    from gpu_partitions import reference_hosts

    try:
        return (reference_hosts.load(args.fixture) if args.fixture
                else reference_hosts.load_file(args.fixture_file))
    except reference_hosts.ReferenceHostError as error:
        raise cli.UsageError(str(error))


def _materialize(host, directory):
    from gpu_partitions import reference_hosts

    try:
        return host.materialize(directory)
    except reference_hosts.ReferenceHostError as error:
        raise cli.UsageError(str(error))


def fixture_devices(args):
    """Driver devices of the real drivers over a reference host."""
    from gpu_partitions import fixture_drivers

    host = _load_fixture(args)
    unknown = set(args.driver or ()) - set(fixture_drivers.DRIVERS)
    if unknown:
        raise cli.UsageError('unknown driver %s; known: %s' % (
            ', '.join(sorted(unknown)),
            ', '.join(sorted(fixture_drivers.DRIVERS))))
    with tempfile.TemporaryDirectory(prefix='gpu-partitions-') as directory:
        env = _materialize(host, directory)
        devices = fixture_drivers.discover_all(env, args.driver,
                                               read_only=True)
    return host.hostname, devices, fixture_gpus(host, args.driver)


def fixture_gpus(host, drivers=None):
    """PCI addresses of the GPUs a reference host shows to the drivers
    that run (the NVIDIA drivers see NVML's GPUs, the AMD driver amdsmi's).
    """
    from gpu_partitions import fixture_drivers
    from gpu_partitions.reference_hosts import _validate

    names = drivers or fixture_drivers.DRIVERS
    gpus = set()
    if host.data['nvml'] and any('nvidia' in name for name in names):
        gpus.update(_validate.nvml_bus_id_to_address(device['pci_bus_id'])
                    for device in host.data['nvml']['devices'])
    if host.data['amdsmi'] and any('amd' in name for name in names):
        gpus.update(gpu['bdf'] for gpu in host.data['amdsmi']['gpus'])
    return gpus
