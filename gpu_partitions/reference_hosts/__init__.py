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
"""Recorded GPU hosts, kept as data, and the fake world built from them.

A reference host is one JSON file (format in
``doc/source/reference-hosts.rst``): the NVML view, the PCI sysfs tree,
libvirt node devices and the host AMD SMI view of one machine. The drivers'
tests, the demo and the simulator load hosts from here and call
:meth:`ReferenceHost.materialize` to get a sysfs tree, a fake ``pynvml``
module and a libvirt test-driver URI for them.
"""

import dataclasses
import json
import os

from gpu_partitions.reference_hosts import _materialize
from gpu_partitions.reference_hosts import _validate
from gpu_partitions.reference_hosts._validate import ReferenceHostError

__all__ = ['HostEnvironment', 'ReferenceHost', 'ReferenceHostError',
           'load', 'load_file', 'names', 'HOSTS_DIR']

HOSTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         'hosts')
_SUFFIX = '.json'


@dataclasses.dataclass
class HostEnvironment:
    """The fake world of one materialized host.

    ``sysfs_root`` replaces ``/sys``; ``nvml`` replaces the ``pynvml``
    module; ``libvirt_uri`` is a libvirt test-driver URI (None when the host
    has no libvirt view); ``amdsmi`` is the host's AMD SMI view (None when
    it has none).
    """
    host: 'ReferenceHost'
    directory: str
    sysfs_root: str
    nvml: object
    libvirt_uri: str | None
    amdsmi: dict | None

    @property
    def hostname(self):
        """The host's name, as the drivers report it."""
        return self.host.hostname


class ReferenceHost:
    """One validated reference host.

    ``data`` is the parsed JSON document; callers must treat it as read
    only (it is shared by every environment materialized from the host).
    """

    def __init__(self, data, source):
        self.data = data
        self.source = source
        self.name = data['name']
        self.hostname = data['hostname']
        self.description = data['description']

    def __repr__(self):
        return '<ReferenceHost %s from %s>' % (self.name, self.source)

    def fake_nvml(self):
        """A fresh fake ``pynvml`` module for this host, nothing on disk.

        For tests that need only NVML; :meth:`materialize` gives the same
        fake along with the sysfs tree.
        """
        # Imported here: fake_nvml imports pynvml, which only the tests,
        # the demo and the simulator need.
        from gpu_partitions.reference_hosts import fake_nvml
        return fake_nvml.FakeNvml(self.data['nvml'])

    def materialize(self, directory):
        """Build the host's sysfs tree, fakes and libvirt XML in directory.

        ``directory`` must exist and hold no earlier materialization;
        everything is written beneath it, so one host can be materialized
        many times side by side.
        """
        directory = os.path.abspath(directory)
        if os.path.lexists(os.path.join(directory, 'sys')):
            # Never merge two hosts' trees, nor delete what is there.
            raise FileExistsError(
                '%s already holds a materialized host; use an empty '
                'directory' % directory)
        try:
            sysfs_root = _materialize.build_sysfs(
                self.data['pci_devices'], os.path.join(directory, 'sys'))
            libvirt_uri = None
            if self.data['libvirt_nodedevs'] is not None:
                node_xml = os.path.join(directory, 'node.xml')
                _materialize.write_libvirt_node_xml(
                    self.data['libvirt_nodedevs'], self.hostname, node_xml)
                libvirt_uri = 'test://' + node_xml
        except (OSError, _materialize.OutsideRoot) as error:
            raise ReferenceHostError(
                os.path.basename(self.source), None,
                'cannot materialize in %s: %s' % (directory, error))
        return HostEnvironment(
            host=self,
            directory=directory,
            sysfs_root=sysfs_root,
            nvml=self.fake_nvml(),
            libvirt_uri=libvirt_uri,
            amdsmi=self.data['amdsmi'])


def names():
    """Names of the shipped reference hosts, sorted."""
    return sorted(entry[:-len(_SUFFIX)] for entry in os.listdir(HOSTS_DIR)
                  if entry.endswith(_SUFFIX))


def load(name):
    """Load the shipped reference host called ``name``."""
    known = names()
    if name not in known:
        raise ReferenceHostError(
            name, None, 'no such reference host; known hosts: %s'
            % ', '.join(known))
    host = load_file(os.path.join(HOSTS_DIR, name + _SUFFIX))
    if host.name != name:
        raise ReferenceHostError(
            host.source, 'name',
            'is %r but the file is %s%s' % (host.name, name, _SUFFIX))
    return host


# Far above any real host (the largest shipped file is under 100 KiB), low
# enough that a runaway file cannot exhaust memory.
MAX_FILE_BYTES = 16 * 1024 * 1024


def load_file(path):
    """Load and validate a reference host file from any path."""
    source = os.path.basename(path)
    try:
        with open(path, 'rb') as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ReferenceHostError(source, None,
                                 'cannot read: %s' % error.strerror)
    if len(raw) > MAX_FILE_BYTES:
        raise ReferenceHostError(source, None, 'larger than %d bytes'
                                 % MAX_FILE_BYTES)
    try:
        data = json.loads(raw.decode('utf-8'))
    except ValueError as error:
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        raise ReferenceHostError(source, None, 'not valid JSON: %s'
                                 % _validate.show(str(error)))
    except RecursionError:
        raise ReferenceHostError(source, None, 'not valid JSON: nested '
                                 'too deeply')
    _validate.validate(data, source)
    return ReferenceHost(data, path)
