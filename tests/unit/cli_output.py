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
"""Run the ``gpu-partitions`` command in-process and keep what it prints."""

import io
import sys
from unittest import mock

from gpu_partitions import cli


def run_cli(argv):
    """``(exit code, stdout, stderr)`` of ``gpu-partitions argv``
    (argparse's ``SystemExit`` is left to the caller).
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, 'stdout', stdout), mock.patch.object(
            sys, 'stderr', stderr):
        code = cli.main(list(argv))
    return code, stdout.getvalue(), stderr.getvalue()
