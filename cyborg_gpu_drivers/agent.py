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
"""Cyborg's agent with a bind hook for on-demand MIG instances.

When Cyborg's conductor binds an ``MDEV`` accelerator request it calls
``create_vgpu_mdev`` on the agent of the request's host
(``cyborg/objects/ext_arq.py`` ``_allocate_attach_handle``), and Cyborg's
``AgentManager.create_vgpu_mdev`` writes the mdev at once: no driver is
asked. :class:`GpuPartitionsAgentManager` is Cyborg's ``AgentManager``
with those two RPC methods wrapped: each loaded driver that has
``prepare_unit`` is asked first (the MIG driver creates the GPU instance
the unit needs), then Cyborg's own code creates the mdev; if that fails,
whatever it raises (a stop of the agent included), the driver undoes what
it made and the error goes back to Cyborg's conductor, which marks the
request ``BindFailed``. The whole bind, and the whole release below,
runs with the GPU held by the drivers' ``hold_unit``: no other bind,
release or clean-up on that GPU comes between an instance's creation and
its mdev. After Cyborg removes an mdev, the drivers'
``release_unit`` runs; removing an mdev that does not exist (its bind
failed before it was made) is not an error, so the failed request can be
deleted. Everything else (the periodic
report, FPGA programming) is Cyborg's code as it is.

``gpu-partitions-cyborg-agent`` starts it the way ``cyborg-agent`` starts
Cyborg's own (same options, same privsep root helper).
"""

import contextlib
import shlex
import sys

from cyborg.agent import manager as cyborg_manager
from cyborg.common import constants
from oslo_config import cfg
from oslo_log import log as logging
from oslo_privsep import priv_context
from oslo_service import service

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


class GpuPartitionsAgentManager(cyborg_manager.AgentManager):
    """Cyborg's agent, asking its drivers around mdev creation."""

    def _drivers_with(self, method):
        return [getattr(driver, method) for driver in self._rt.acc_drivers
                if callable(getattr(driver, method, None))]

    def _held(self, pci_addr):
        """The drivers' ``hold_unit`` for the parent, all entered: a
        bind or release runs whole, never between another's steps on
        the same GPU.
        """
        stack = contextlib.ExitStack()
        with stack:
            for hold in self._drivers_with('hold_unit'):
                stack.enter_context(hold(pci_addr))
            return stack.pop_all()

    def create_vgpu_mdev(self, context, pci_addr, asked_type, ah_uuid):
        with self._held(pci_addr):
            return self._create_vgpu_mdev(context, pci_addr, asked_type,
                                          ah_uuid)

    def _create_vgpu_mdev(self, context, pci_addr, asked_type, ah_uuid):
        prepared = []
        try:
            for prepare in self._drivers_with('prepare_unit'):
                token = prepare(pci_addr, asked_type)
                if token is not None:
                    prepared.append((prepare.__self__, token))
                    break
            return super().create_vgpu_mdev(context, pci_addr, asked_type,
                                            ah_uuid)
        except BaseException:
            # A stop in the middle of the bind (SystemExit,
            # KeyboardInterrupt, GreenletExit) undoes it too: the GPU
            # instance made for it would otherwise stay until the next
            # clean-up pass.
            for driver, token in prepared:
                try:
                    driver.abort_unit(token)
                except Exception:
                    LOG.exception('Undoing the preparation of %s on %s '
                                  'failed', asked_type, pci_addr)
            raise

    def remove_vgpu_mdev(self, context, pci_addr, asked_type, ah_uuid):
        with self._held(pci_addr):
            return self._remove_vgpu_mdev(context, pci_addr, asked_type,
                                          ah_uuid)

    def _remove_vgpu_mdev(self, context, pci_addr, asked_type, ah_uuid):
        try:
            result = super().remove_vgpu_mdev(context, pci_addr, asked_type,
                                              ah_uuid)
        except FileNotFoundError:
            # A bind that failed before its mdev was made leaves the
            # attach handle on the ARQ; when Nova deletes the ARQ, Cyborg
            # removes an mdev that never existed, and its error path
            # (UnbindFailed, missing from its state table) makes the
            # delete fail: the ARQ and its attach handle would stay taken.
            LOG.info('No mdev %s of type %s on %s: nothing to remove',
                     ah_uuid, asked_type, pci_addr)
            result = None
        for release in self._drivers_with('release_unit'):
            try:
                if release(pci_addr, asked_type):
                    break
            except Exception:
                # The unit is gone; an instance left idle is only capacity
                # kept, and Placement already has the unit back.
                LOG.exception('Releasing %s on %s failed', asked_type,
                              pci_addr)
        return result


def main():
    """``gpu-partitions-cyborg-agent``: ``cyborg-agent`` with the hook."""
    # Here, not at the top: it imports eventlet (through oslo.service's
    # WSGI server), which only the agent's own process runs on; the unit
    # tests import the manager on native threads.
    from cyborg.common import service as cyborg_service
    cyborg_service.prepare_service(sys.argv)
    priv_context.init(root_helper=shlex.split('sudo'))
    manager = cyborg_service.RPCService(
        __name__, GpuPartitionsAgentManager.__name__, constants.AGENT_TOPIC)
    service.launch(CONF, manager, restart_method='mutate').wait()
