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
"""The in-process cloud: real Placement, Cyborg and Nova.

:class:`CloudTestCase` is a Nova functional test case
(``ProviderUsageBaseTestCase``: Nova's API, conductor and scheduler, the
Placement WSGI app on SQLite) with Cyborg added
(:mod:`gpu_partitions.cloud.cyborg_side`: its conductor with its own
database, its API app, the RPC between them) and one fake ``nova-compute``
per GPU host. Tests subclass it; :func:`run_cloud` drives it from plain code
(the ``gpu-partitions demo`` command) by running it as a one-off test.

Workloads ask for GPU slices either way Nova allows:

* Nova's Cyborg flow: a device profile created in Cyborg's API
  (:meth:`CloudTestCase.create_device_profile`, groups built with
  :func:`device_profile_group`) and a flavor with
  ``accel:device_profile=<name>``. Nova's API reads the profile, the
  scheduler gets its groups from Placement, Nova's conductor creates and
  binds accelerator requests (ARQs) in Cyborg, Cyborg's conductor picks an
  attach handle and the compute waits for the bound ARQs.
  :meth:`CloudTestCase.arqs` shows them;
* plain flavor extra specs (:func:`gpu_extra_specs`:
  ``resources1:<RC>=1``, ``trait1:<T>=required``). Cyborg's providers are
  children of the compute node provider, so Placement answers these groups
  with them just as it answers a device profile's; no ARQ is made.

Scheduler plugins are switched by config before the scheduler starts:
set the class attributes (or pass them to :func:`run_cloud`)
``ENABLED_FILTERS`` (filter class names, None for Nova's defaults),
``EXTRA_FILTERS`` (class paths added to ``available_filters``),
``WEIGHT_CLASSES`` (class paths, None for Nova's defaults) and
``SCHEDULER_OPTIONS`` (any other ``[filter_scheduler]`` option, such as a
weigher's multiplier).
"""

import collections
import importlib.metadata
import os
import sysconfig
import time
import unittest
import urllib.parse

from cyborg.common import constants as cyborg_constants
from cyborg import context as cyborg_context
from nova.tests.functional import integrated_helpers

from cyborg_gpu_drivers import agent as cyborg_agent
from cyborg_gpu_drivers import report
from gpu_partitions.cloud import cyborg_side

#: A provider as Placement shows it.
Provider = collections.namedtuple(
    'Provider', ['name', 'uuid', 'parent_uuid', 'inventories', 'traits'])

NOVA_FILTERS = 'nova.scheduler.filters.all_filters'
PLACEMENT_VERSION = '1.36'
BOOT_TIMEOUT = 60.0


class CloudError(Exception):
    """The cloud could not be set up, or the code run in it failed."""


def api_paste_config():
    """Nova's ``api-paste.ini`` as the installed nova ships it.

    The wheel installs it as data under the environment's prefix
    (``<venv>/etc/nova/api-paste.ini``), not beside the package where
    Nova's test configuration looks for it.
    """
    relative = os.path.join('etc', 'nova', 'api-paste.ini')
    try:
        for entry in importlib.metadata.distribution('nova').files or ():
            if str(entry).endswith(relative):
                path = str(entry.locate())
                if os.path.exists(path):
                    return os.path.abspath(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    for prefix in (sysconfig.get_path('data'), '/'):
        path = os.path.join(prefix, relative)
        if os.path.exists(path):
            return path
    raise CloudError('nova\'s etc/nova/api-paste.ini is not installed')


def gpu_extra_specs(resource_class, required_traits=(),
                    forbidden_traits=(), count=1, group='1'):
    """Flavor extra specs asking for ``count`` units of one GPU provider.

    A numbered request group makes Placement take the resource and the
    traits from one and the same provider.
    """
    specs = {'resources%s:%s' % (group, resource_class): str(count)}
    specs.update(('trait%s:%s' % (group, trait), 'required')
                 for trait in required_traits)
    specs.update(('trait%s:%s' % (group, trait), 'forbidden')
                 for trait in forbidden_traits)
    return specs


def device_profile_group(resource_class, required_traits=(),
                         forbidden_traits=(), count=1):
    """One group of a Cyborg device profile: ``count`` units of one
    provider. Cyborg accepts only ``CUSTOM_`` traits here.
    """
    group = {'resources:%s' % resource_class: str(count)}
    group.update(('trait:%s' % trait, 'required')
                 for trait in required_traits)
    group.update(('trait:%s' % trait, 'forbidden')
                 for trait in forbidden_traits)
    return group


def accel_extra_specs(profile_name):
    """Flavor extra specs for Nova's Cyborg flow."""
    return {'accel:device_profile': profile_name}


class CloudTestCase(integrated_helpers.ProviderUsageBaseTestCase):
    """Nova, Placement and Cyborg (conductor and API) in one process."""

    compute_driver = 'fake.FakeDriver'

    ENABLED_FILTERS = None
    EXTRA_FILTERS = ()
    WEIGHT_CLASSES = None
    SCHEDULER_OPTIONS = {}

    def setUp(self):
        # Both must be set before the services start; flags set now are
        # cleared by Nova's ConfFixture at clean-up.
        self._configure_scheduler()
        self.flags(api_paste_config=api_paste_config(), group='wsgi')
        # A GPU host holds more slices than Nova's default quota of ten
        # instances; the cloud measures scheduling, not quotas.
        self.flags(instances=-1, cores=-1, ram=-1, group='quota')
        super().setUp()
        placement = self.placement.fixture
        self.cyborg = self.useFixture(cyborg_side.CyborgConductor(
            placement.endpoint, placement.token))
        nova_admin = self.api_fixture.admin_api
        self.cyborg_side_api = self.useFixture(cyborg_side.CyborgApi(
            self.cyborg, nova_admin.base_url, nova_admin.project_id))
        self.cyborg_api = self.cyborg_side_api.client

    def _configure_scheduler(self):
        options = dict(self.SCHEDULER_OPTIONS)
        options['available_filters'] = (
            [NOVA_FILTERS] + list(self.EXTRA_FILTERS))
        if self.ENABLED_FILTERS is not None:
            options['enabled_filters'] = list(self.ENABLED_FILTERS)
        if self.WEIGHT_CLASSES is not None:
            options['weight_classes'] = list(self.WEIGHT_CLASSES)
        self.flags(group='filter_scheduler', **options)

    # --- hosts and reports ------------------------------------------------

    def add_gpu_host(self, hostname, driver_devices):
        """Start ``nova-compute`` on ``hostname`` and report its GPUs.

        :returns: the Placement writes of the first report.
        """
        self._start_compute(hostname)
        self.cyborg_side_api.start_agent(hostname)
        return self.report(hostname, driver_devices)

    def start_cyborg_agent(self, hostname, drivers, mdev_bus):
        """Start ``nova-compute`` and Cyborg's real agent on ``hostname``.

        The agent is ``cyborg_gpu_drivers.agent.GpuPartitionsAgentManager``
        (Cyborg's ``AgentManager`` with the bind hook), built by its own
        ``__init__`` (it finds the compute node provider in Placement)
        with ``drivers`` in place of those its resource tracker loads
        from ``[agent] enabled_drivers``, and served on the agent RPC
        topic of the host. Cyborg's mdev writes go to ``mdev_bus``.
        Runs one agent cycle (:meth:`agent_cycle`); returns the agent.
        """
        self._start_compute(hostname)
        self.useFixture(cyborg_side.MdevBusFixture(mdev_bus))
        self.flags(resource_provider_name=hostname, group='agent')
        manager = cyborg_agent.GpuPartitionsAgentManager(
            cyborg_constants.AGENT_TOPIC, host=hostname)
        manager._rt.acc_drivers = list(drivers)
        self.cyborg_side_api.start_agent(hostname, manager)
        self.agent_cycle(hostname)
        return manager

    def agent_cycle(self, hostname):
        """One periodic pass of the real agent of ``hostname``: its
        ``update_available_resource`` (the drivers' ``discover`` and the
        RPC ``report_data`` to Cyborg's conductor).
        """
        self.cyborg_side_api.agents[hostname].update_available_resource(
            cyborg_context.get_admin_context())

    def add_inventory(self, host_inventory, driver_name):
        """:meth:`add_gpu_host` for a host given as a HostInventory."""
        return self.add_gpu_host(
            host_inventory.hostname,
            report.to_driver_devices(host_inventory, driver_name))

    def report(self, hostname, driver_devices):
        """Run Cyborg's conductor ``report_data`` for ``hostname``.

        :returns: the Placement writes it caused, as
                  ``PlacementRequest(method, url, status)``.
        """
        return self.cyborg.report(hostname, driver_devices)

    def run_periodics(self):
        """Run every compute's ``update_available_resource`` once.

        Failures show in Nova's log, not as exceptions: Nova's own
        ``raise_on_error`` trips over any earlier traceback in the log,
        such as the NoValidHost of a server that did not fit.
        """
        self._run_periodics()

    # --- flavors and servers ----------------------------------------------

    def create_device_profile(self, name, groups):
        """Create a device profile through Cyborg's API; returns it."""
        response = self.cyborg_api.post(
            '/device_profiles', json=[{'name': name, 'groups': list(groups)}])
        if response.status_code != 201:
            raise CloudError('Cyborg refused device profile %s: %s %s'
                             % (name, response.status_code, response.text))
        return response.json()

    def agent_calls(self, hostname):
        """The RPC calls Cyborg's conductor made to the agent of a host.

        ``create_vgpu_mdev`` when it binds an MDEV ARQ.
        """
        return list(self.cyborg_side_api.agents[hostname].calls)

    def arqs(self, server):
        """The accelerator requests Cyborg holds for ``server``."""
        response = self.cyborg_api.get('/accelerator_requests',
                                       params={'instance': server['id']})
        if response.status_code != 200:
            raise CloudError('Cyborg ARQs of %s: %s %s'
                             % (server['id'], response.status_code,
                                response.text))
        return response.json()['arqs']

    def create_flavor(self, extra_specs, name=None, vcpu=1, memory_mb=512,
                      disk=1):
        """A flavor with ``extra_specs``; returns its id."""
        return self._create_flavor(
            name=name, vcpu=vcpu, memory_mb=memory_mb, disk=disk,
            ephemeral=0, extra_spec=dict(extra_specs))

    def boot(self, flavor_id, name=None):
        """Boot one server and wait until it is ACTIVE or ERROR."""
        body = self._build_server(name=name, flavor_id=flavor_id,
                                  networks='none')
        server = self.api.post_server({'server': body})
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            server = self.api.get_server(server['id'])
            if server['status'] in ('ACTIVE', 'ERROR'):
                return server
            if time.monotonic() > deadline:
                raise CloudError('server %s still %s after %ds'
                                 % (server['id'], server['status'],
                                    BOOT_TIMEOUT))
            time.sleep(0.05)

    def delete(self, server):
        self._delete_server(server)
        self._wait_until_deleted(server)

    @staticmethod
    def host_of(server):
        return server.get('OS-EXT-SRV-ATTR:host')

    # --- Placement views --------------------------------------------------

    def placement_get(self, url, version=PLACEMENT_VERSION):
        response = self.placement.get(url, version=version)
        if response.status != 200:
            raise CloudError('GET %s: %s %s'
                             % (url, response.status, response.content))
        return response.body

    def providers(self):
        """Every provider, sorted by name.

        Each with its inventory totals and its traits, sorted.
        """
        result = []
        for rp in self.placement_get('/resource_providers')[
                'resource_providers']:
            inventories = self.placement_get(
                '/resource_providers/%s/inventories' % rp['uuid'])
            traits = self.placement_get(
                '/resource_providers/%s/traits' % rp['uuid'])
            result.append(Provider(
                name=rp['name'], uuid=rp['uuid'],
                parent_uuid=rp['parent_provider_uuid'],
                inventories={rc: inv['total'] for rc, inv in
                             inventories['inventories'].items()},
                traits=sorted(traits['traits'])))
        return sorted(result)

    def provider_names(self):
        return {rp['uuid']: rp['name'] for rp in self.placement_get(
            '/resource_providers')['resource_providers']}

    def provider_usages(self):
        """``{provider name: {resource class: used}}`` of every provider."""
        return {
            name: self.placement_get(
                '/resource_providers/%s/usages' % uuid)['usages']
            for uuid, name in self.provider_names().items()}

    def allocations(self, server):
        """``{provider name: {resource class: amount}}`` of a server."""
        names = self.provider_names()
        body = self.placement_get('/allocations/%s' % server['id'])
        return {names[uuid]: allocation['resources']
                for uuid, allocation in body['allocations'].items()}

    def allocation_candidates(self, query, version=PLACEMENT_VERSION):
        """``GET /allocation_candidates?<query>``.

        ``query`` is a dict or a ready query string.
        """
        if not isinstance(query, str):
            query = urllib.parse.urlencode(query)
        return self.placement_get('/allocation_candidates?' + query,
                                  version=version)


class _Session(CloudTestCase):
    """Runs one callable as the body of a test."""

    def __init__(self, body, settings, outcome):
        super().__init__('test_body')
        self._body = body
        for name, value in settings.items():
            setattr(self, name, value)
        # Nova's TestCase deletes every attribute of the case at clean-up,
        # so the outcome lives outside it.
        self._outcome_holder = outcome

    def test_body(self):
        self._outcome_holder.append(self._body(self))


def run_cloud(body, enabled_filters=None, extra_filters=(),
              weight_classes=None, scheduler_options=None):
    """Start the cloud, call ``body(cloud)``, tear it down.

    ``body`` gets the :class:`CloudTestCase` and may use all of its API;
    its return value is returned. Setup, ``body`` or clean-up failing
    raises :class:`CloudError` with the tracebacks (and Nova's captured
    log).
    """
    settings = {'ENABLED_FILTERS': enabled_filters,
                'EXTRA_FILTERS': tuple(extra_filters),
                'WEIGHT_CLASSES': weight_classes,
                'SCHEDULER_OPTIONS': dict(scheduler_options or {})}
    outcome = []
    result = unittest.TestResult()
    _Session(body, settings, outcome).run(result)
    problems = result.errors + result.failures
    if problems:
        raise CloudError('\n'.join(text for _case, text in problems))
    return outcome[0]
