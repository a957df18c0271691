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
"""Load Nova and Cyborg into one process despite their clashing options.

Both projects register their options on oslo.config's global ``cfg.CONF``
when their ``conf`` packages are imported, and a handful of those options
exist in both with different attributes, which makes the second import
fail with ``DuplicateOptError``. Measured on nova 34.0.0 and
openstack-cyborg 17.0.0, the clashes are:

* ``[DEFAULT] host`` (``HostDomain`` in Nova, ``HostAddress`` in Cyborg),
  ``pybasedir`` (each points at its own package), ``state_path`` (help
  text only);
* ``[service_user] send_service_user_token`` (help text only);
* ``[glance] num_retries`` (default 0 or 3) and the deprecated keystoneauth
  ``version``/``min_version``/``max_version`` options of ``[glance]`` and
  ``[placement]`` (a fresh lambda as ``type`` on every registration).

Every clash is an option with the same name and the same meaning, so the
cloud registers both projects on the one global ``CONF`` and lets the first
registration of exactly these options stand. Any other duplicate still
fails loudly. Giving Cyborg a ``ConfigOpts`` of its own was the other way;
it breaks as soon as Cyborg is imported before the cloud (the drivers' unit
tests do, and Cyborg's own test base writes to ``cfg.CONF``), because
Cyborg's modules keep the ``CONF`` they saw at import time.

Sharing ``CONF`` is safe for the cloud because the Cyborg side reads no
shared option: its database and its routes to Placement and to Nova are
wired in code (see :mod:`gpu_partitions.cloud.cyborg_side`), and the Nova
API paste file is set explicitly rather than derived from ``pybasedir``.
The tolerance is active only while this module imports both projects, so
it must run before anything imports the second of them:
``tests/functional/__init__.py`` imports this package first thing.

Concurrency is Nova's test default: Nova's test package monkey-patches the
process with eventlet unless ``OS_NOVA_DISABLE_EVENTLET_PATCHING=1`` asks
for native threads. Native threads were tried and dropped: with test
threads calling Nova's API at the same time, Nova's ``CellDatabases``
fixture deadlocks on its reader-writer lock, and the cloud was slower.
Eventlet's patching does break asyncio code in the same process, so
``tests/unit/__init__.py`` asks for native threads (the unit tests import
Nova's test modules but make no concurrent API calls), and tox runs
``tests/unit`` and ``tests/functional`` in separate processes.
"""

import contextlib
import importlib

from oslo_config import cfg

#: (group, option) registered by both Nova and Cyborg with the same meaning.
SHARED_OPTIONS = frozenset({
    (None, 'host'),
    (None, 'pybasedir'),
    (None, 'state_path'),
    ('service_user', 'send_service_user_token'),
    ('glance', 'num_retries'),
    ('glance', 'version'),
    ('glance', 'min_version'),
    ('glance', 'max_version'),
    ('placement', 'version'),
    ('placement', 'min_version'),
    ('placement', 'max_version'),
})

# Imported under the tolerant registration, in this order: the first one
# decides on eventlet, the next register every option of both projects.
_MODULES = (
    'nova.tests',
    'nova.conf',
    'cyborg.conf',
    'nova.tests.functional.integrated_helpers',
    'nova.tests.functional.fixtures',
    'cyborg.conductor.manager',
    'cyborg.db.api',
    'cyborg.db.sqlalchemy.api',
    'cyborg.objects',
)


@contextlib.contextmanager
def tolerate_shared_options(shared=SHARED_OPTIONS):
    """Let a second registration of a ``shared`` option be a no-op."""
    real_register_opt = cfg.ConfigOpts.register_opt

    def register_opt(self, opt, group=None, cli=False, **kwargs):
        try:
            return real_register_opt(self, opt, group, cli, **kwargs)
        except cfg.DuplicateOptError:
            group_name = getattr(group, 'name', group)
            if group_name == 'DEFAULT':
                group_name = None
            if (group_name, opt.dest) not in shared:
                raise
            return False

    cfg.ConfigOpts.register_opt = register_opt
    try:
        yield
    finally:
        cfg.ConfigOpts.register_opt = real_register_opt


def import_services():
    """Import Nova's functional harness and Cyborg's conductor together."""
    with tolerate_shared_options():
        for name in _MODULES:
            importlib.import_module(name)
