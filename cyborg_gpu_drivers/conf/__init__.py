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
"""Every option of the Cyborg drivers, registered in this one place.

One module per option group; each has ``GROUP``, ``OPTS`` and nothing else.
Add a module to ``_MODULES`` to register it and have it in the sample.
"""

from oslo_config import cfg
from oslo_privsep import priv_context

from cyborg_gpu_drivers.conf import amd
from cyborg_gpu_drivers.conf import common
from cyborg_gpu_drivers.conf import mig
from cyborg_gpu_drivers.conf import vgpu

CONF = cfg.CONF

_MODULES = (common, mig, amd, vgpu,)


def register_opts(conf=CONF):
    for module in _MODULES:
        conf.register_group(module.GROUP)
        conf.register_opts(module.OPTS, group=module.GROUP)


# Sections of the privsep daemons' own options (helper_command, user,
# capabilities, ...), one per privileged context; oslo.privsep registers
# them when the context is created.
VGPU_TYPE_PRIVSEP_GROUP = 'cyborg_gpu_drivers_vgpu_type_privsep'
MIG_LAYOUT_PRIVSEP_GROUP = 'cyborg_gpu_drivers_mig_layout_privsep'


def list_opts():
    """For oslo-config-generator (entry point ``oslo.config.opts``)."""
    return [(module.GROUP, module.OPTS) for module in _MODULES] + [
        (group, priv_context.OPTS)
        for group in (VGPU_TYPE_PRIVSEP_GROUP, MIG_LAYOUT_PRIVSEP_GROUP)]


register_opts()
