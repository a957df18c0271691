#!/usr/bin/env python3
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
"""Fail if a wheel's native libraries use AVX-512 or AMX instructions.

A build that left llama.cpp's native CPU detection on, on a machine with
AVX-512 or AMX, runs there and crashes on a machine without them. The
disassembly tells, whatever machine this runs on: AVX-512 code names zmm
registers, mask registers or the upper 16 vector registers; AMX code names
tile registers.
"""

import re
import subprocess
import sys
import tempfile
import zipfile

BEYOND_BASELINE = re.compile(
    r'%zmm\d|%k[1-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b|%tmm\d|ldtilecfg')


def offending_instructions(library):
    listing = subprocess.run(['objdump', '-d', '--no-show-raw-insn', library],
                             capture_output=True, text=True, check=True)
    return [line.strip() for line in listing.stdout.splitlines()
            if BEYOND_BASELINE.search(line)]


def main(wheels):
    failed = False
    for wheel in wheels:
        with tempfile.TemporaryDirectory() as directory:
            with zipfile.ZipFile(wheel) as archive:
                libraries = [name for name in archive.namelist()
                             if re.search(r'\.so(\.\d+)*$', name)]
                archive.extractall(directory, libraries)
            if not libraries:
                print('%s: no native library found' % wheel)
                failed = True
            for name in libraries:
                found = offending_instructions(directory + '/' + name)
                if found:
                    failed = True
                    print('%s: %s has %d AVX-512/AMX instructions, e.g. %s'
                          % (wheel, name, len(found), found[0]))
            print('%s: %d native libraries checked' % (wheel, len(libraries)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
