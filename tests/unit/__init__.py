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

import os

# Unit tests share their process with asyncio code (the bench harness),
# which eventlet's monkey-patching breaks, so Nova's test modules run here
# on native threads. The functional tests keep Nova's default, eventlet
# (see gpu_partitions/cloud/_sharedconf.py).
os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')

# Loads Nova and Cyborg into this process together (their clashing options
# are registered once) before any test module imports the second of them.
import gpu_partitions.cloud  # noqa: E402,F401
