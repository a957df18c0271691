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
"""An asyncio event loop with virtual time, for exact timing tests.

``loop.time()`` only moves when the loop has nothing to do: then it jumps
to the next timer instead of sleeping.  Real sockets still carry the
bytes (on loopback a write is readable by the peer when the write
returns); the loop waits ``QUIET_S`` of real time with no I/O before it
decides it is idle, so a jump never overtakes bytes in flight.  Every
``asyncio.sleep`` and aiohttp timeout then takes no real time and every
duration the client measures is exactly the one the stub scripted.
"""

import asyncio
import selectors

QUIET_S = 0.02
START = 1000.0


class _Clock:
    now = START


class _VirtualSelector(selectors.DefaultSelector):
    """Waits for real I/O; when there is none, moves the clock instead."""

    def __init__(self, clock):
        super().__init__()
        self._clock = clock

    def select(self, timeout=None):
        if timeout is not None and timeout <= 0:
            return super().select(0)
        events = super().select(QUIET_S if timeout is not None else None)
        if not events and timeout is not None:
            self._clock.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self):
        self._clock = _Clock()
        super().__init__(selector=_VirtualSelector(self._clock))

    def time(self):
        return self._clock.now


def run(coroutine):
    """Run ``coroutine`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
