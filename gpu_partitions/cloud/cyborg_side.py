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
"""Cyborg in the in-process cloud: its real conductor and API.

:class:`CyborgConductor` is Cyborg's conductor reporting into the in-process
Placement; :class:`CyborgApi` adds Cyborg's API app, so that Nova's
``accel:device_profile`` flow (device profiles, accelerator requests and
their binding) runs against real Cyborg code too.

Only plumbing is replaced here, nothing of Cyborg's logic:

* the database: Cyborg's own SQLAlchemy models, created with
  ``create_all`` in a SQLite file of a temporary directory, plugged into
  Cyborg's enginefacade with oslo.db's ``ReplaceEngineFacadeFixture`` (what
  Cyborg's own ``DatabaseFixture`` does, without writing the shared
  ``[database]`` options that Nova reads too);
* the transport of Cyborg's ``PlacementClient``: Cyborg builds an
  openstacksdk adapter from ``[placement]`` keystone options. The fixture
  hands it a keystoneauth adapter aimed at the Placement fixture's
  wsgi-intercept endpoint instead, the way Nova's ``PlacementFixture``
  re-routes Nova's report client. ``PlacementClient`` itself and
  ``ConductorManager.report_data`` run unchanged. The adapter records every
  request, so a caller can tell how many writes a report caused;
* Cyborg's RPC from its API to its conductor: oslo.messaging's in-memory
  ``fake`` driver, with an RPC server for the conductor topic serving the
  same ``ConductorManager`` through Cyborg's object serializer, as
  ``cyborg-conductor`` does;
* Cyborg's API: the pecan app itself (what ``cyborg-api`` serves behind
  keystonemiddleware), reached through wsgi-intercept. Keystone is stood
  in for by the identity headers keystonemiddleware would set, including
  ``X-Service-Roles: service`` on Nova's calls, which Cyborg requires (in
  place of Nova's service token) before it binds an ARQ;
* the clients between the two services: Nova's Cyborg client and Cyborg's
  Nova client (the ``accelerator-request-bound`` events) get keystoneauth
  adapters aimed at the intercepted APIs instead of openstacksdk adapters
  built from the catalog and keystone options;
* Cyborg's agents: binding an ``MDEV`` ARQ makes Cyborg's conductor call
  ``create_vgpu_mdev`` on the agent of the ARQ's host over RPC (the agent
  writes the attach handle's UUID into the parent's
  ``mdev_supported_types/<type>/create``). By default
  :class:`RecordingAgent` answers that RPC for each GPU host and records
  the calls instead of writing to this machine's sysfs. A host may run a
  real agent instead (:meth:`CyborgApi.start_agent` with an endpoint):
  the harness's ``start_cyborg_agent`` serves Cyborg's ``AgentManager``
  (with this package's bind hook) on the agent topic; only the kernel's
  mdev files are stood in for (:class:`MdevBusFixture`).
"""

import collections
import os
import uuid

import fixtures
from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_db.sqlalchemy import enginefacade
from oslo_db.sqlalchemy import test_fixtures
import oslo_messaging as messaging
from oslo_versionedobjects import base as ovo_base
from wsgi_intercept import interceptor

from cyborg.api import app as cyborg_api_app
from cyborg.common import constants as cyborg_constants
from cyborg.common import rpc as cyborg_rpc
from cyborg.conductor import manager as cyborg_conductor
from cyborg import context as cyborg_context
from cyborg.db.sqlalchemy import api as cyborg_db_api
from cyborg.db.sqlalchemy import models as cyborg_models
from cyborg import objects as cyborg_objects
from cyborg.objects import base as cyborg_objects_base

#: One HTTP request Cyborg sent to Placement.
PlacementRequest = collections.namedtuple(
    'PlacementRequest', ['method', 'url', 'status'])

WRITE_METHODS = frozenset({'PUT', 'POST', 'PATCH', 'DELETE'})


def _cyborg_object_classes():
    cyborg_objects.register_all()
    return {name: list(classes)
            for name, classes in ovo_base.VersionedObjectRegistry
            .obj_classes().items()
            if classes and classes[0].__module__.startswith('cyborg.')}


# Nova and Cyborg share oslo.versionedobjects' one registry, and Nova's
# TestCase puts back a copy of it taken at set-up when a test ends, which
# drops classes registered during the test. Cyborg registers its classes
# once, at import, so they are kept here and put back for every cloud
# (Cyborg's RPC serializer looks them up by name).
_CYBORG_OBJECT_CLASSES = _cyborg_object_classes()


def register_cyborg_objects():
    registry = ovo_base.VersionedObjectRegistry.obj_classes()
    for name, classes in _CYBORG_OBJECT_CLASSES.items():
        if not registry.get(name):
            registry[name] = list(classes)


def nova_at_cyborg(project_id):
    """What keystonemiddleware would tell Cyborg's API about Nova's calls.

    Nova calls with the user's token (an admin of the servers' project)
    plus Nova's service token. Cyborg stores the project on its ARQs and
    wants it to be a UUID.
    """
    return {'X-User-Id': 'admin', 'X-Project-Id': project_id,
            'X-Roles': 'admin,member,reader', 'X-Service-Roles': 'service'}


def cyborg_at_nova(project_id):
    """What Nova's stubbed keystone reads from Cyborg's calls.

    Nova's own test API client sends the same headers. Cyborg calls as an
    admin with the service role.
    """
    return {'X-Auth-User': 'cyborg', 'X-User-Id': 'cyborg',
            'X-Auth-Project-Id': project_id,
            'X-Roles': 'admin,member,reader,service'}


def service_adapter(service_type, endpoint, headers):
    """A keystoneauth adapter to an intercepted in-process API."""
    return ks_adapter.Adapter(
        ks_session.Session(auth=None), service_type=service_type,
        endpoint_override=endpoint, additional_headers=headers,
        raise_exc=False)


class RecordingPlacementAdapter(ks_adapter.Adapter):
    """A keystoneauth adapter into the in-process Placement app.

    It answers the calls Cyborg's ``PlacementClient`` makes on the
    openstacksdk proxy it normally gets (``get/put/post/delete`` with
    ``microversion`` and ``global_request_id``) and records each request.
    """

    def __init__(self, endpoint, token):
        super().__init__(
            ks_session.Session(auth=None),
            service_type='placement',
            endpoint_override=endpoint,
            additional_headers={'x-auth-token': token},
            raise_exc=False)
        self.requests = []

    def request(self, url, method, **kwargs):
        response = super().request(url, method, **kwargs)
        self.requests.append(
            PlacementRequest(method, url, response.status_code))
        return response


class CyborgDatabase(fixtures.Fixture):
    """Cyborg's schema in a SQLite file that lives as long as the fixture."""

    def _setUp(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            'cyborg.sqlite')
        facade = enginefacade.transaction_context()
        facade.configure(connection='sqlite:///' + path,
                         sqlite_synchronous=False)
        self.useFixture(test_fixtures.ReplaceEngineFacadeFixture(
            cyborg_db_api.main_context_manager, facade))
        cyborg_models.Base.metadata.create_all(facade.writer.get_engine())


class CyborgConductor(fixtures.Fixture):
    """Cyborg's ``ConductorManager`` with its DB, reporting to Placement.

    :param placement_endpoint: URL the Placement app is intercepted at.
    :param placement_token: token the Placement NoAuth middleware expects.
    """

    def __init__(self, placement_endpoint, placement_token):
        super().__init__()
        self._endpoint = placement_endpoint
        self._token = placement_token

    def _setUp(self):
        register_cyborg_objects()
        self.useFixture(CyborgDatabase())
        self.placement = RecordingPlacementAdapter(self._endpoint,
                                                   self._token)
        #: service type -> adapter Cyborg gets for it.
        self.routes = {'placement': self.placement}
        self.useFixture(fixtures.MonkeyPatch(
            'cyborg.common.utils.get_sdk_adapter', self._sdk_adapter))
        self.manager = cyborg_conductor.ConductorManager(
            topic=cyborg_constants.CONDUCTOR_TOPIC, host='cyborg-conductor')

    def _sdk_adapter(self, service_type, check_service=False):
        try:
            return self.routes[service_type]
        except KeyError:
            raise LookupError('the in-process cloud routes %s for Cyborg, '
                              'not %r' % (', '.join(sorted(self.routes)),
                                          service_type))

    def report(self, hostname, driver_devices):
        """Run ``report_data`` as Cyborg's agent on ``hostname`` would.

        :returns: the requests it sent to Placement that write
                  (``PUT``/``POST``/``PATCH``/``DELETE``), in order.
        """
        first = len(self.placement.requests)
        self.manager.report_data(cyborg_context.get_admin_context(),
                                 hostname, driver_devices)
        return [request for request in self.placement.requests[first:]
                if request.method in WRITE_METHODS]


class RecordingAgent:
    """The RPC endpoint of a Cyborg agent that records its mdev calls.

    Same methods and arguments as Cyborg's ``AgentManager``; ``calls``
    lists ``(method, pci_addr, asked_type, ah_uuid)``.
    """

    target = messaging.Target(version='1.0')

    def __init__(self):
        self.calls = []

    def create_vgpu_mdev(self, context, pci_addr, asked_type, ah_uuid):
        self.calls.append(('create_vgpu_mdev', pci_addr, asked_type,
                           ah_uuid))
        return ah_uuid

    def remove_vgpu_mdev(self, context, pci_addr, asked_type, ah_uuid):
        self.calls.append(('remove_vgpu_mdev', pci_addr, asked_type,
                           ah_uuid))


class CyborgApi(fixtures.Fixture):
    """Cyborg's API app and the RPC behind it, wired to Nova both ways.

    :param conductor: the :class:`CyborgConductor` that serves the API's
                      RPC calls.
    :param nova_endpoint: URL Nova's API is intercepted at, for Cyborg's
                          ``accelerator-request-bound`` events.
    :param project_id: the project Nova's servers belong to.
    """

    def __init__(self, conductor, nova_endpoint, project_id):
        super().__init__()
        self._conductor = conductor
        self._nova_endpoint = nova_endpoint
        self._project_id = project_id

    def _setUp(self):
        self._start_rpc()
        app = cyborg_api_app.setup_app()
        endpoint = 'http://%s/' % uuid.uuid4()
        intercept = interceptor.RequestsInterceptor(lambda: app, url=endpoint)
        intercept.install_intercept()
        self.addCleanup(intercept.uninstall_intercept)
        #: Cyborg's v2 API as Nova's Cyborg client reaches it.
        self.client = service_adapter('accelerator', endpoint + 'v2',
                                      nova_at_cyborg(self._project_id))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.accelerator.cyborg._CyborgClient._client',
            property(lambda _client: self.client)))
        self._conductor.routes['compute'] = service_adapter(
            'compute', self._nova_endpoint, cyborg_at_nova(self._project_id))

    def _start_rpc(self):
        transport = messaging.get_rpc_transport(cfg.CONF, url='fake:/cyborg')
        self.addCleanup(transport.cleanup)
        self.useFixture(fixtures.MonkeyPatch(
            'cyborg.common.rpc.TRANSPORT', transport))
        self._serve(cyborg_constants.CONDUCTOR_TOPIC, 'cyborg-conductor',
                    self._conductor.manager)
        #: hostname -> the RecordingAgent serving that host.
        self.agents = {}

    def _serve(self, topic, server_name, endpoint):
        server = cyborg_rpc.get_server(
            messaging.Target(topic=topic, server=server_name), [endpoint],
            serializer=cyborg_objects_base.CyborgObjectSerializer())
        server.start()
        self.addCleanup(server.wait)
        self.addCleanup(server.stop)

    def start_agent(self, hostname, endpoint=None):
        """Serve Cyborg's agent RPC for ``hostname``; returns the agent.

        ``endpoint`` answers it (a Cyborg ``AgentManager``); a
        :class:`RecordingAgent` when None.
        """
        if hostname not in self.agents:
            self.agents[hostname] = endpoint or RecordingAgent()
            self._serve(cyborg_constants.AGENT_TOPIC, hostname,
                        self.agents[hostname])
        return self.agents[hostname]


class MdevBusFixture(fixtures.Fixture):
    """Cyborg's two mdev writes, into ``bus`` instead of ``/sys``.

    Cyborg's ``AgentManager`` calls ``create_mdev_privileged`` and
    ``remove_mdev_privileged`` (``cyborg/accelerator/drivers/gpu/utils.py``),
    privsep entrypoints that write under ``/sys/class/mdev_bus``; here they
    go to ``bus`` (a ``FakeMdevBus`` of a materialized host), which does
    what the kernel would.
    """

    def __init__(self, bus):
        super().__init__()
        self.bus = bus

    def _setUp(self):
        self.useFixture(fixtures.MonkeyPatch(
            'cyborg.accelerator.drivers.gpu.utils.create_mdev_privileged',
            self.bus.create))
        self.useFixture(fixtures.MonkeyPatch(
            'cyborg.accelerator.drivers.gpu.utils.remove_mdev_privileged',
            self.bus.remove))
