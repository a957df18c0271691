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
"""Test doubles: a fake openstacksdk connection and a stub in a thread."""

import asyncio
import contextlib
import threading
import types

from gpu_partitions.bench import stub


class StepFailed(Exception):
    """The failure a fake SDK call was told to raise."""


class FakeConnection:
    """The part of ``openstack.connection.Connection`` qualify uses.

    ``fail`` names SDK calls that raise :class:`StepFailed`; ``calls``
    records every call in order; ``servers`` the guests still alive.
    """

    def __init__(self, fail=(), address='127.0.0.1'):
        self.fail = set(fail)
        self.address = address
        self.calls = []
        self.servers = {}
        self.created = 0
        self.compute = types.SimpleNamespace(
            find_flavor=self._call('find_flavor', self._flavor),
            create_server=self._call('create_server', self._create),
            wait_for_server=self._call('wait_for_server', self._wait),
            delete_server=self._call('delete_server', self._delete),
            wait_for_delete=self._call('wait_for_delete', lambda s, **k: s))
        self.image = types.SimpleNamespace(
            find_image=self._call('find_image', lambda name, **k:
                                  types.SimpleNamespace(id='img-' + name)))
        self.network = types.SimpleNamespace(
            find_network=self._call('find_network', lambda name, **k:
                                    types.SimpleNamespace(id='net-' + name)))

    def _call(self, name, function):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name in self.fail:
                raise StepFailed(name)
            return function(*args, **kwargs)
        return call

    def _flavor(self, name, ignore_missing=True):
        return types.SimpleNamespace(
            id='flv-' + name, name=name, vcpus=8, ram=65536,
            extra_specs={'resources:VGPU': '1'})

    def _create(self, **kwargs):
        self.created += 1
        server = types.SimpleNamespace(
            id='srv-%d' % self.created, addresses={},
            status='BUILD', **kwargs)
        self.servers[server.id] = server
        return server

    def _wait(self, server, status='ACTIVE', wait=None):
        server.status = status
        server.addresses = {'private': [
            {'addr': '10.0.0.5', 'version': 4,
             'OS-EXT-IPS:type': 'fixed'},
            {'addr': self.address, 'version': 4,
             'OS-EXT-IPS:type': 'floating'}]}
        return server

    def _delete(self, server, ignore_missing=True):
        self.servers.pop(server.id, None)


@contextlib.contextmanager
def stub_in_thread(scripts, model='stub-model'):
    """A :class:`StubServer` on its own loop and thread; yields it."""
    loop = asyncio.new_event_loop()
    server = stub.StubServer(scripts, model)
    started = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
