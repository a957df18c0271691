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
"""The simulator's worker processes."""

import os
import signal
import subprocess
import sys
import time

import testtools

# A parent that starts one worker, keeps it busy, and waits to be killed.
_PARENT = '''
import os
import time

from gpu_partitions.simulator import run

if __name__ == '__main__':
    workers = run.Workers(1)
    print(workers.submit(os.getpid).result(), flush=True)
    workers.submit(time.sleep, 600)
    time.sleep(600)
'''


def _running(pid):
    try:
        with open('/proc/%d/stat' % pid) as stat:
            state = stat.read().rsplit(')', 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != 'Z'


class WorkersTest(testtools.TestCase):

    def test_a_busy_worker_ends_when_its_parent_is_killed(self):
        parent = subprocess.Popen([sys.executable, '-c', _PARENT],
                                  stdout=subprocess.PIPE, text=True)
        self.addCleanup(parent.stdout.close)
        self.addCleanup(parent.wait)
        self.addCleanup(parent.kill)
        worker = int(parent.stdout.readline())
        self.addCleanup(self._end, worker)
        time.sleep(1)       # the worker has taken the sleeping task
        self.assertTrue(_running(worker))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(_running(worker))

    @staticmethod
    def _end(pid):
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
