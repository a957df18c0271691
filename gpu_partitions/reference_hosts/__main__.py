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
"""Check reference host files: ``python -m gpu_partitions.reference_hosts``.

``check PATH...`` validates each file and materializes it in a temporary
directory; ``list`` prints the shipped hosts. Exit status 1 when a file is
refused.
"""

import argparse
import sys
import tempfile

from gpu_partitions import reference_hosts


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m ' + __package__)
    commands = parser.add_subparsers(dest='command', required=True)
    check = commands.add_parser('check', help='validate and materialize '
                                'reference host files')
    check.add_argument('paths', nargs='+', metavar='PATH')
    commands.add_parser('list', help='list the shipped reference hosts')
    args = parser.parse_args(argv)
    if args.command == 'list':
        for name in reference_hosts.names():
            print(name)
        return 0
    failed = False
    for path in args.paths:
        try:
            host = reference_hosts.load_file(path)
            with tempfile.TemporaryDirectory() as directory:
                host.materialize(directory)
        except reference_hosts.ReferenceHostError as error:
            print('refused: %s' % error, file=sys.stderr)
            failed = True
            continue
        print('ok: %s (%s)' % (path, host.name))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
