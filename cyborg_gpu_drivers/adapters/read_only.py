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
"""Read-only views of the hardware libraries, for code that must not
change a GPU (``gpu-partitions inventory --record``).

:class:`ReadOnlyModule` wraps ``pynvml`` or ``amdsmi``: constants,
structures and exceptions pass through, and of the library's functions
(names starting with its prefix) only those named in ``readers`` can
even be looked up; any other, ``nvmlDeviceSetMigMode`` or
``nvmlDeviceCreateGpuInstanceWithPlacement`` for example, raises
:class:`MutationRefused`. :class:`ReadOnlySysfs` is the sysfs adapter
without ``write``. A list of allowed readers, rather than a list of
forbidden writers, keeps a call added to a library later refused until
someone reads what it does.
"""

from cyborg_gpu_drivers.adapters import sysfs


class MutationRefused(RuntimeError):
    """A call that is not a known read was asked of a read-only view."""


class ReadOnlyModule:
    """``module`` with only the functions of ``readers`` callable."""

    def __init__(self, module, prefix, readers):
        self._module = module
        self._prefix = prefix
        self._readers = frozenset(readers)

    def __getattr__(self, name):
        if name.startswith(self._prefix) and name not in self._readers:
            raise MutationRefused(
                '%s is not a read this recording may make; the view of '
                'the library is read-only' % name)
        return getattr(self._module, name)


class ReadOnlySysfs(sysfs.Sysfs):
    """The sysfs adapter that refuses to write."""

    def write(self, address, name, value):
        raise MutationRefused('writing %s of %s: the view of sysfs is '
                              'read-only' % (name, address))
