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
"""Reference hosts materialised once per test process, for the drivers'
tests that only read the tree."""

import atexit
import shutil
import tempfile

from gpu_partitions import reference_hosts

_SHARED = {}


def shared_env(name):
    """The materialised reference host ``name``; tests only read it.

    Materialising an HGX host writes thousands of files, so tests that
    change only NVML answers pair this sysfs tree with a fresh fake.
    """
    if name not in _SHARED:
        directory = tempfile.mkdtemp(prefix='drivers-%s-' % name)
        atexit.register(shutil.rmtree, directory, True)
        _SHARED[name] = reference_hosts.load(name).materialize(directory)
    return _SHARED[name]
