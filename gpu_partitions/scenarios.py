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
"""Scenarios shared by the functional tests and the tempest plugin.

Each scenario drives a cloud through a small interface and returns what it
observed; the callers assert. The functional tests pass the in-process
cloud (:class:`gpu_partitions.cloud.harness.CloudTestCase`), the tempest
plugin a real cloud (:class:`gpu_partitions.tempest.cloud.TempestCloud`).
Both offer:

``create_device_profile(name, groups)``
    a Cyborg device profile;
``create_flavor(extra_specs, name=None)``
    a flavor id; raises with the API's message when Nova refuses a spec;
``boot(flavor_id, name=None)``
    a server dict, ACTIVE or ERROR;
``delete(server)``;
``allocations(server)``
    ``{provider name: {resource class: amount}}``;
``providers()``
    objects with ``name``, ``uuid``, ``parent_uuid``, ``inventories``
    (``{resource class: total}``) and ``traits``.
"""

import collections
import uuid

import placement_traits

GpuProvider = collections.namedtuple(
    'GpuProvider', 'name uuid resource_class total gpu link_domain numa_node')


def gpu_providers(cloud):
    """The GPU providers our drivers reported, sorted by name."""
    found = []
    for provider in cloud.providers():
        if placement_traits.OWNER_CYBORG not in provider.traits:
            continue
        for resource_class, total in provider.inventories.items():
            if placement_traits.is_gpu_resource_class(resource_class):
                found.append(GpuProvider(
                    provider.name, provider.uuid, resource_class, total,
                    placement_traits.physical_gpu_of(provider.traits),
                    placement_traits.link_domain_of(provider.traits),
                    placement_traits.numa_node_of(provider.traits)))
    return sorted(found)


def _unique_name(prefix):
    return '%s-%s' % (prefix, uuid.uuid4().hex[:8])


def slice_flavor(cloud, resource_class, count=1, groups=1, extra_specs=None):
    """A flavor whose device profile asks ``groups`` groups of ``count``.

    Each group lands on one provider, so ``groups`` > 1 spreads a request
    over several physical GPUs.
    """
    name = _unique_name(resource_class.lower().replace('_', '-'))
    group = {'resources:%s' % resource_class: str(count)}
    cloud.create_device_profile(name, [dict(group) for _ in range(groups)])
    specs = {'accel:device_profile': name}
    specs.update(extra_specs or {})
    return cloud.create_flavor(specs, name=name)


def gpus_of(cloud, server, providers):
    """The physical GPUs (PCI addresses) holding ``server``'s slices."""
    by_name = {p.name: p for p in providers}
    return sorted(by_name[name].gpu for name in cloud.allocations(server)
                  if name in by_name)


def boot_each_slice_kind(cloud):
    """Boot one server per GPU resource class the cloud offers.

    :returns: ``{resource class: (server status, [provider names holding
              that class for the server])}``; every server is deleted.
    """
    providers = gpu_providers(cloud)
    outcome = {}
    for resource_class in sorted({p.resource_class for p in providers}):
        server = cloud.boot(slice_flavor(cloud, resource_class))
        try:
            held = sorted(name for name, resources in
                          cloud.allocations(server).items()
                          if resource_class in resources)
            outcome[resource_class] = (server['status'], held)
        finally:
            cloud.delete(server)
    return outcome


def series_of_boots(cloud, resource_class, count, policy):
    """Boot ``count`` one-slice servers under ``policy`` (pack or spread).

    :returns: the physical GPU of each server, in boot order; the servers
              are deleted.
    """
    providers = gpu_providers(cloud)
    flavor = slice_flavor(cloud, resource_class,
                          extra_specs={'gpu_partitions:policy': policy})
    servers = []
    try:
        for _ in range(count):
            servers.append(cloud.boot(flavor))
        return [gpus_of(cloud, server, providers)[0]
                if server['status'] == 'ACTIVE' else None
                for server in servers]
    finally:
        for server in servers:
            cloud.delete(server)


def multi_gpu_request(cloud, resource_class, gpus, link_affinity,
                      per_gpu=1):
    """Boot one server asking ``per_gpu`` slices on each of ``gpus`` GPUs.

    :returns: ``(status, [link domain of each GPU it got])``; the server is
              deleted.
    """
    providers = gpu_providers(cloud)
    by_gpu = {p.gpu: p.link_domain for p in providers}
    flavor = slice_flavor(
        cloud, resource_class, count=per_gpu, groups=gpus,
        extra_specs={'gpu_partitions:link_affinity': link_affinity,
                     'group_policy': 'isolate'})
    server = cloud.boot(flavor)
    try:
        if server['status'] != 'ACTIVE':
            return server['status'], []
        return server['status'], [by_gpu[gpu] for gpu in
                                  gpus_of(cloud, server, providers)]
    finally:
        cloud.delete(server)


def invalid_extra_spec(cloud, key='gpu_partitions:policy', value='sideways'):
    """Try a flavor with a bad value of one of our extra specs.

    :returns: the error text the cloud answered, or None if it accepted it.
    """
    try:
        cloud.create_flavor({key: value}, name=_unique_name('invalid'))
    except Exception as error:  # the API client's own exception type
        return str(error)
    return None
