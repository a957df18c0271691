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
"""Qualify flavors: one guest per flavor, the same benchmark on each.

For each flavor: boot a guest from the benchmark image (openstacksdk,
credentials from clouds.yaml), wait for it to be ACTIVE and for its
vLLM endpoint to answer, run the benchmark against it, keep the result,
and delete the guest whatever happened, a failed step included.  One
flavor's failure is recorded and the next flavor still runs.
"""

import asyncio
import base64
import time

from gpu_partitions.bench import preflight

STEPS = ('find', 'boot', 'endpoint', 'benchmark')


class Plan:
    """What to boot; ``user_data`` is cloud-config text or None."""

    def __init__(self, image, network, flavors, port=8000, key_name=None,
                 user_data=None, name_prefix='gpu-bench',
                 boot_timeout=1800, endpoint_timeout=3600,
                 delete_timeout=600):
        if not flavors:
            raise ValueError('qualify needs at least one flavor')
        self.image = image
        self.network = network
        self.flavors = list(flavors)
        self.port = port
        self.key_name = key_name
        self.user_data = user_data
        self.name_prefix = name_prefix
        self.boot_timeout = boot_timeout
        self.endpoint_timeout = endpoint_timeout
        self.delete_timeout = delete_timeout


def server_address(server):
    """A floating IPv4 address if the guest has one, else a fixed one."""
    fixed = None
    for entries in (server.addresses or {}).values():
        for entry in entries:
            if entry.get('version', 4) != 4:
                continue
            if entry.get('OS-EXT-IPS:type') == 'floating':
                return entry['addr']
            fixed = fixed or entry.get('addr')
    if fixed is None:
        raise RuntimeError('server %s has no IPv4 address' % server.id)
    return fixed


def wait_for_endpoint(base_url, timeout, interval=10.0, sleep=time.sleep,
                      clock=time.monotonic):
    """Poll health and models until the server serves a model."""
    deadline = clock() + timeout
    while True:
        report = asyncio.run(preflight.check_endpoint(base_url))
        if report['ready']:
            return report
        if clock() >= deadline:
            raise TimeoutError('%s not ready after %ss: %s' % (
                base_url, timeout, report.get('error') or report['health']))
        sleep(interval)


def _flavor_summary(flavor):
    return {'name': flavor.name, 'vcpus': flavor.vcpus, 'ram': flavor.ram,
            'extra_specs': dict(getattr(flavor, 'extra_specs', None) or {})}


def qualify(conn, plan, benchmark, wait=wait_for_endpoint, log=print):
    """Run ``benchmark(base_url, flavor_name, flavor_details)`` per flavor.

    ``flavor_details`` (vCPUs, RAM, extra specs) say what the guest was
    given, since a client outside the guest cannot see its GPU.

    :param conn: an ``openstack.connection.Connection``.
    :returns: one record per flavor: ``status`` ('ok' or 'failed'),
        ``failed_step``, ``error``, ``deleted`` and ``result``.
    """
    records = []
    for flavor_name in plan.flavors:
        record = {'flavor': flavor_name, 'status': 'failed',
                  'failed_step': None, 'error': None, 'server_id': None,
                  'deleted': None, 'result': None}
        server = None
        step = 'find'
        try:
            flavor = conn.compute.find_flavor(flavor_name,
                                              ignore_missing=False)
            record['flavor_details'] = _flavor_summary(flavor)
            image = conn.image.find_image(plan.image, ignore_missing=False)
            network = conn.network.find_network(plan.network,
                                                ignore_missing=False)
            step = 'boot'
            user_data = None
            if plan.user_data:
                user_data = base64.b64encode(
                    plan.user_data.encode()).decode()
            server = conn.compute.create_server(
                name='%s-%s' % (plan.name_prefix, flavor_name),
                image_id=image.id, flavor_id=flavor.id,
                networks=[{'uuid': network.id}], key_name=plan.key_name,
                user_data=user_data)
            record['server_id'] = server.id
            log('%s: booting %s' % (flavor_name, server.id))
            server = conn.compute.wait_for_server(
                server, status='ACTIVE', wait=plan.boot_timeout)
            step = 'endpoint'
            base_url = 'http://%s:%d' % (server_address(server), plan.port)
            wait(base_url, plan.endpoint_timeout)
            step = 'benchmark'
            log('%s: benchmarking %s' % (flavor_name, base_url))
            record['result'] = benchmark(base_url, flavor_name,
                                         record['flavor_details'])
            record['status'] = 'ok'
        # Any failure of this flavor is recorded and the next one still
        # runs; the guest is deleted below either way.
        except Exception as error:
            record['failed_step'] = step
            record['error'] = '%s: %s' % (type(error).__name__, error)
            log('%s: failed at %s: %s' % (flavor_name, step,
                                          record['error']))
        finally:
            if server is not None:
                record['deleted'] = _delete(conn, server, plan, record,
                                            log)
        records.append(record)
    return records


def _delete(conn, server, plan, record, log):
    try:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, wait=plan.delete_timeout)
    except Exception as error:  # reported: the operator must clean up
        record['delete_error'] = '%s: %s' % (type(error).__name__, error)
        log('%s: could not delete %s: %s'
            % (record['flavor'], server.id, record['delete_error']))
        return False
    return True
