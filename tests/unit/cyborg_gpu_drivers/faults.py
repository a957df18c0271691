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
"""Faults injected at the pynvml boundary, shared by the fault matrices.

:class:`FaultyNvml` wraps a reference host's fake ``pynvml`` and makes one
NVML function fail whenever it is asked about one GPU (its device handle,
or a GPU instance, compute instance or MIG device handle of that GPU), or
on every call when no GPU is named. :func:`gpu_calls` lists the functions
a driver calls about a GPU, so a matrix covers every one of them.
"""

import collections
import ctypes

import pynvml

from gpu_partitions.reference_hosts import fake_nvml


def _unicode_error():
    return UnicodeDecodeError('utf-8', b'\xff', 0, 1, 'invalid start byte')


#: Error name -> a factory of the exception raised.
ERRORS = collections.OrderedDict([
    ('Unknown', pynvml.NVMLError_Unknown),
    ('Timeout', pynvml.NVMLError_Timeout),
    ('GpuIsLost', pynvml.NVMLError_GpuIsLost),
    ('NotSupported', pynvml.NVMLError_NotSupported),
    ('OSError', lambda: OSError(5, 'Input/output error')),
    ('Exception', lambda: Exception('something unexpected')),
    ('UnicodeDecodeError', _unicode_error),
    ('TypeError', lambda: TypeError('unexpected argument')),
])


class Aborted(BaseException):
    """A BaseException of no standard kind, as a library's cancellation
    (eventlet's Timeout, asyncio's CancelledError) is.
    """


#: Error name -> a factory of a BaseException that is not an Exception,
#: raised by a read: the scan contains it as it contains an error (no
#: operator's signal reaches the scan's worker threads).
ABORTS = collections.OrderedDict([
    ('SystemExit', lambda: SystemExit(1)),
    ('KeyboardInterrupt', KeyboardInterrupt),
    ('Aborted', lambda: Aborted('cancelled')),
])

#: The five NVML-ish errors of the issue's cold-start matrix.
ISSUE_ERRORS = ('Unknown', 'Timeout', 'GpuIsLost', 'NotSupported', 'OSError')

#: The nine NVML calls of the issue's cold-start matrix: the GPU's
#: identity and its MIG and vGPU state.
ISSUE_CALLS = ('nvmlDeviceGetPciInfo', 'nvmlDeviceGetMemoryInfo',
               'nvmlDeviceGetName', 'nvmlDeviceGetUUID',
               'nvmlDeviceGetMigMode', 'nvmlDeviceGetGpuInstanceProfileInfo',
               'nvmlDeviceGetGpuInstances', 'nvmlDeviceGetSupportedVgpus',
               'nvmlDeviceGetActiveVgpus')


class FaultyNvml:
    """A fake ``pynvml`` whose ``function`` raises ``error()`` about the
    GPU at NVML index ``gpu_index`` (every call if None).

    ``hang`` (a :class:`threading.Event`) makes the call block until the
    event is set, instead of raising.
    """

    def __init__(self, section, function=None, error=None, gpu_index=None,
                 hang=None):
        self._fake = fake_nvml.FakeNvml(section)
        self._function = function
        self._error = error
        self._hang = hang
        self._gpu = (None if gpu_index is None
                     else self._fake._gpus[gpu_index])
        self.injected = 0

    def __getattr__(self, name):
        value = getattr(self._fake, name)
        if name != self._function or not callable(value):
            return value

        def call(*args, **kwargs):
            if self._gpu is None or any(self._about(arg) for arg in args):
                self.injected += 1
                if self._hang is not None:
                    self._hang.wait()
                else:
                    raise self._error()
            return value(*args, **kwargs)
        return call

    def _about(self, arg):
        return gpu_of(self._fake, arg) is self._gpu


def gpu_of(fake, arg):
    """The fake's GPU an NVML handle argument belongs to, or None."""
    if not isinstance(arg, ctypes._Pointer):
        return None
    entity = fake._entities.get(ctypes.cast(arg, ctypes.c_void_p).value)
    if entity is None:
        return None
    return entity if isinstance(entity, fake_nvml._Gpu) else entity.gpu


class RecordingNvml:
    """A fake ``pynvml`` that records which functions are asked about
    which GPU index.
    """

    def __init__(self, section):
        self._fake = fake_nvml.FakeNvml(section)
        self.calls = collections.defaultdict(set)
        self.host_calls = set()

    def __getattr__(self, name):
        value = getattr(self._fake, name)
        if not name.startswith('nvml') or not callable(value):
            return value

        def call(*args, **kwargs):
            gpus = {gpu_of(self._fake, arg) for arg in args} - {None}
            for gpu in gpus:
                self.calls[self._fake._gpus.index(gpu)].add(name)
            if not gpus:
                self.host_calls.add(name)
            return value(*args, **kwargs)
        return call


def gpu_calls(section, scan, gpu_index):
    """NVML functions ``scan(nvml)`` calls about GPU ``gpu_index``, and
    those it calls about no GPU, both sorted.
    """
    recording = RecordingNvml(section)
    scan(recording)
    return (sorted(recording.calls[gpu_index]),
            sorted(recording.host_calls - {'nvmlShutdown'}))
