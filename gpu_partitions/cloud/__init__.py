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
"""An in-process OpenStack cloud for GPU partitions.

See :mod:`gpu_partitions.cloud.harness` for the API and
``doc/source/testing.rst`` for how it is built. Importing this package
loads Nova and Cyborg into the process (see
:mod:`gpu_partitions.cloud._sharedconf`), so import it only where the cloud
is needed.
"""

from gpu_partitions.cloud import _sharedconf

_sharedconf.import_services()
