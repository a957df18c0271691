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
"""Fail naming every package of this environment that constraints.txt
does not pin to the installed version.

tox runs it in every environment after installing it (``commands_pre``),
so a package that arrives unpinned (a new requirement, a new dependency of
a pinned one, a seed package that moved) turns CI red before an upstream
release can change a result without a commit of ours.

Usage: check-pins.py [CONSTRAINTS]   (default: constraints.txt beside tools/)
"""

import importlib.metadata
import os
import re
import sys

# The project itself, installed in development mode.
OWN = {'openstack-gpu-partitions'}


def normalise(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def read_pins(path):
    """Map normalised name -> pinned version; other lines are errors."""
    pins, errors = {}, []
    with open(path, encoding='utf-8') as stream:
        for number, line in enumerate(stream, 1):
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            match = re.fullmatch(r'([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)', line)
            if match is None:
                errors.append('%s:%d: %r is not NAME==VERSION'
                              % (path, number, line))
                continue
            pins[normalise(match.group(1))] = match.group(2)
    return pins, errors


def installed():
    """Map normalised name -> (name, version) of every distribution."""
    found = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata['Name']
        if name:
            found[normalise(name)] = (name, distribution.version)
    return found


def problems(pins, packages):
    for key, (name, version) in sorted(packages.items()):
        if key in OWN:
            continue
        if key not in pins:
            yield '%s==%s is installed but not pinned' % (name, version)
        elif pins[key] != version:
            yield '%s==%s is installed but pinned to %s' % (
                name, version, pins[key])


def main(argv):
    path = argv[1] if len(argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..', 'constraints.txt')
    pins, errors = read_pins(path)
    packages = installed()
    found = errors + list(problems(pins, packages))
    for line in found:
        print('check-pins: ' + line, file=sys.stderr)
    if found:
        print('check-pins: %d problem(s) in %s (%s); pin them in %s '
              '(tools/freeze-constraints.sh helps)'
              % (len(found), sys.prefix, sys.version.split()[0], path),
              file=sys.stderr)
        return 1
    print('check-pins: all %d packages of %s are pinned'
          % (len(packages.keys() - OWN), sys.prefix))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
