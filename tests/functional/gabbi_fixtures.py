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
"""gabbi fixtures: real Placement holding one reference host's report.

Each fixture starts openstack/placement's own gabbi ``APIFixture`` (the
Placement WSGI app on SQLite, ``noauth2``), creates the host's compute
node provider, runs every driver of this package over the reference host
and sends the report through Cyborg's real conductor ``report_data`` into
that Placement, as Cyborg's agent does. The YAML files of
``tests/functional/gabbits`` then query Placement over HTTP. The fixture
exports ``GPU_HOST`` (the compute node's name) and ``GPU_HOST_UUID``.
"""

import os
import tempfile
import uuid

from placement import deploy
from placement.tests.functional.fixtures import gabbits as placement_fixtures
from wsgi_intercept import interceptor

from gpu_partitions.cloud import cyborg_side
from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts

#: The token Placement's noauth2 middleware takes as an admin.
TOKEN = 'admin'


class ReferenceHostFixture(placement_fixtures.APIFixture):
    """Placement with the report of reference host ``HOST``."""

    HOST = None

    def start_fixture(self):
        super().start_fixture()
        host = reference_hosts.load(self.HOST)
        app = deploy.loadapp(placement_fixtures.CONF)
        endpoint = 'http://%s' % uuid.uuid4()
        self._intercept = interceptor.RequestsInterceptor(
            lambda: app, url=endpoint)
        self._intercept.install_intercept()
        self._conductor = cyborg_side.CyborgConductor(endpoint, TOKEN)
        self._conductor.setUp()
        root = str(uuid.uuid5(uuid.NAMESPACE_DNS, host.hostname))
        response = self._conductor.placement.post(
            '/resource_providers', microversion='1.20',
            json={'name': host.hostname, 'uuid': root})
        if response.status_code != 200:
            raise RuntimeError('creating %s in Placement: %s %s' % (
                host.hostname, response.status_code, response.text))
        with tempfile.TemporaryDirectory() as directory:
            devices = fixture_drivers.discover_all(
                host.materialize(directory))
        self._conductor.report(host.hostname, devices)
        os.environ['GPU_HOST'] = host.hostname
        os.environ['GPU_HOST_UUID'] = root

    def stop_fixture(self):
        self._conductor.cleanUp()
        self._intercept.uninstall_intercept()
        super().stop_fixture()


# One fixture per reference host, named as the YAML files name them.
class HgxH100(ReferenceHostFixture):
    HOST = 'hgx-h100'


class HgxH200(ReferenceHostFixture):
    HOST = 'hgx-h200'


class PcieL40s(ReferenceHostFixture):
    HOST = 'pcie-l40s'


class PcieA100(ReferenceHostFixture):
    HOST = 'pcie-a100'


class Mi300xSpx(ReferenceHostFixture):
    HOST = 'mi300x-spx'


class Mi300xCpx(ReferenceHostFixture):
    HOST = 'mi300x-cpx'


class Awkward(ReferenceHostFixture):
    HOST = 'awkward'
