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
"""Read AMD GPU partition state and xGMI hives through ``amdsmi``.

Two Python packages are called ``amdsmi``: ROCm's (PyPI, bare metal and
guests) and the host library shipped with GIM (``smi-lib``). Both have the
calls used here (``amdsmi_get_processor_handles``,
``amdsmi_get_gpu_device_bdf``, ``amdsmi_get_gpu_compute_partition``,
``amdsmi_get_gpu_memory_partition``, ``amdsmi_get_xgmi_info``,
``amdsmi_get_gpu_asic_info``); each call is tried on its own, and one that
the installed flavour lacks or that fails leaves its value None, so the
driver falls back to sysfs for that value only.

Importing ROCm's ``amdsmi`` without its shared library prints to stdout and
raises (``KeyError: 'libamd_smi.so'``), hence :func:`import_amdsmi`.
"""

import contextlib
import dataclasses
import io

import placement_traits


class AmdSmiUnavailable(Exception):
    """amdsmi cannot be initialised or cannot list the GPUs."""


@dataclasses.dataclass(frozen=True)
class GpuState:
    """What amdsmi says about one GPU; None where it could not tell.

    ``failed`` names the calls that raised, for the driver's log line.
    """
    address: str
    market_name: str | None = None
    compute_partition: str | None = None
    memory_partition: str | None = None
    xgmi_hive_id: int | None = None
    failed: tuple = ()


def import_amdsmi():
    """``(module, None)``, or ``(None, reason)`` when it cannot be imported.

    Whatever the import prints is swallowed: the agent's stdout is not a
    log.
    """
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import amdsmi
    except Exception as error:  # KeyError without libamd_smi.so, and more
        return None, '%s: %s' % (type(error).__name__, error)
    return amdsmi, None


class AmdSmi:
    """One ``amdsmi`` module (the real one or a fake of it)."""

    def __init__(self, module):
        self._amdsmi = module

    def read(self):
        """``{pci address: GpuState}`` of every GPU amdsmi lists.

        Raises :class:`AmdSmiUnavailable` when the library cannot start or
        list its GPUs; a failing call on one GPU only empties that value.
        """
        amdsmi = self._amdsmi
        try:
            amdsmi.amdsmi_init()
        except Exception as error:
            raise AmdSmiUnavailable('amdsmi_init failed: %s' % error)
        try:
            try:
                handles = amdsmi.amdsmi_get_processor_handles()
            except Exception as error:
                raise AmdSmiUnavailable(
                    'amdsmi_get_processor_handles failed: %s' % error)
            states = {}
            for handle in handles:
                state = self._state(handle)
                if state is not None:
                    states[state.address] = state
            return states
        finally:
            try:
                amdsmi.amdsmi_shut_down()
            except Exception:  # nothing to undo; the next read re-inits
                pass

    def _state(self, handle):
        failed = []

        def call(name):
            try:
                return getattr(self._amdsmi, name)(handle)
            except Exception:  # AmdSmiException, or a call this lacks
                failed.append(name)
                return None

        bdf = call('amdsmi_get_gpu_device_bdf')
        try:
            address = placement_traits.pci_address(bdf)
        except placement_traits.InvalidName:
            return None
        asic = call('amdsmi_get_gpu_asic_info') or {}
        xgmi = call('amdsmi_get_xgmi_info') or {}
        hive = xgmi.get('xgmi_hive_id')
        return GpuState(
            address=address,
            market_name=_text(asic.get('market_name')),
            compute_partition=_text(
                call('amdsmi_get_gpu_compute_partition')),
            memory_partition=_text(call('amdsmi_get_gpu_memory_partition')),
            # 0 is what a GPU outside any hive reports.
            xgmi_hive_id=hive if isinstance(hive, int) and hive else None,
            failed=tuple(failed))


def _text(value):
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and value != 'N/A' else None
