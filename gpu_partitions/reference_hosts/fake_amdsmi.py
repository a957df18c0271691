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
"""A fake ``amdsmi`` module built from a reference host's ``amdsmi`` view.

Faked at the module boundary: the functions have amdsmi's names, arguments
and return shapes, so the AMD driver's adapter code under test is the code
that runs on a real host. Calls before ``amdsmi_init`` raise, as the real
library does. ``fail`` makes a named call raise ``AmdSmiLibraryException``
(``fail['amdsmi_init'] = 'no GIM'``) to test the driver's fallbacks.
"""

import collections


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    pass


class _Handle:
    """An opaque processor handle, as amdsmi's ctypes pointer is."""

    def __init__(self, gpu):
        self._gpu = gpu


class FakeAmdsmi:
    """Used in place of the ``amdsmi`` module."""

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException

    def __init__(self, view):
        self._gpus = [dict(gpu) for gpu in (view or {}).get('gpus', ())]
        self._initialised = False
        self.fail = {}
        self.calls = collections.Counter()

    def _enter(self, name):
        self.calls[name] += 1
        if name in self.fail:
            raise AmdSmiLibraryException(self.fail[name])
        if name != 'amdsmi_init' and not self._initialised:
            raise AmdSmiLibraryException('AMDSMI_STATUS_NOT_INIT')

    def _gpu(self, name, handle):
        self._enter(name)
        if not isinstance(handle, _Handle):
            raise AmdSmiException('not a processor handle: %r' % (handle,))
        return handle._gpu

    def amdsmi_init(self, flag=None):
        self._enter('amdsmi_init')
        self._initialised = True

    def amdsmi_shut_down(self):
        self._enter('amdsmi_shut_down')
        self._initialised = False

    def amdsmi_get_processor_handles(self):
        self._enter('amdsmi_get_processor_handles')
        return [_Handle(gpu) for gpu in self._gpus]

    def amdsmi_get_gpu_device_bdf(self, handle):
        return self._gpu('amdsmi_get_gpu_device_bdf', handle)['bdf']

    def amdsmi_get_gpu_asic_info(self, handle):
        gpu = self._gpu('amdsmi_get_gpu_asic_info', handle)
        return {'market_name': gpu['market_name'], 'vendor_id': '0x1002'}

    def amdsmi_get_gpu_compute_partition(self, handle):
        return self._gpu('amdsmi_get_gpu_compute_partition',
                         handle)['compute_partition']

    def amdsmi_get_gpu_memory_partition(self, handle):
        return self._gpu('amdsmi_get_gpu_memory_partition',
                         handle)['memory_partition']

    def amdsmi_get_xgmi_info(self, handle):
        return dict(self._gpu('amdsmi_get_xgmi_info', handle)['xgmi'])

    def amdsmi_get_num_vf(self, handle):
        return dict(self._gpu('amdsmi_get_num_vf', handle)['num_vf'])

    def amdsmi_get_vf_partition_info(self, handle):
        gpu = self._gpu('amdsmi_get_vf_partition_info', handle)
        return [{'vf_id': vf['vf_id'], 'fb': dict(vf['fb'])}
                for vf in gpu['vf_partitions']]


def module_for(view):
    """A fake module for a host's view, or None when it has none."""
    return None if view is None else FakeAmdsmi(view)
