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
"""The ``gpu-partitions`` command.

Each subcommand is a module of :mod:`gpu_partitions.commands` with a
``register(subparsers)`` function that adds its parser and sets ``func``.
Every module is imported to build ``--help``, so modules keep their heavy
imports inside their ``run`` functions.
"""

import argparse
import importlib
import math
import os
import sys

# Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    'inventory',
    'exporter',
    'demo',
    'simulate',
    'bench',
    'benchmark',
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog='gpu-partitions',
        description='Tools of openstack-gpu-partitions: see what a GPU host '
                    'reports, run the in-process demo cloud, simulate a '
                    'fleet, benchmark.')
    subparsers = parser.add_subparsers(dest='command', required=True)
    for name in COMMANDS:
        module = importlib.import_module('gpu_partitions.commands.' + name)
        module.register(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UsageError as error:
        print('gpu-partitions %s: error: %s' % (args.command, error),
              file=sys.stderr)
        return 2


class UsageError(Exception):
    """Bad input from the command line or a file it names: exit code 2."""


def load_config(path, project='cyborg'):
    """Parse ``path`` into oslo.config's global options, as the service
    of ``project`` would, and read every registered option now, so that a
    file that cannot be read and a bad value (``gpu_scan_timeout = nan``)
    are one :class:`UsageError` naming the file, before anything runs.
    """
    from oslo_config import cfg

    if not os.path.isfile(path):
        raise UsageError('%s %s; give --config-file or --fixture' % (
            path, 'is not a file' if os.path.exists(path)
            else 'does not exist'))
    # UnicodeDecodeError is a ValueError: a binary file.
    errors = (cfg.Error, ValueError, OSError)
    try:
        cfg.CONF([], project=project, default_config_files=[path])
    except errors as error:
        raise UsageError('%s: %s' % (path, _first_line(error)))
    for key in cfg.CONF:
        value = _read_option(path, cfg.CONF, 'DEFAULT', key, errors)
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            for name in value:
                _read_option(path, value, key, name, errors)


def _read_option(path, options, group, name, errors):
    try:
        return options[name]
    except errors as error:
        # oslo.config's message names the option and where it was read;
        # its reason follows "is not valid: ".
        raise UsageError('%s: [%s] %s: %s' % (
            path, group, name,
            _first_line(error).rpartition('is not valid: ')[2]))


def _first_line(error):
    return (str(error).splitlines() or [type(error).__name__])[0]


def nonempty(text):
    """An argparse ``type`` for a name or path: an empty one (an unset
    shell variable) is refused, not taken as the option left out (which
    scanned this host instead of a fixture).
    """
    if not text.strip():
        raise argparse.ArgumentTypeError('must not be empty')
    return text


def number(kind=float, minimum=None, maximum=None, above=None,
           allow_inf=False):
    """An argparse ``type`` for a bounded int or float.

    ``minimum``/``maximum`` are inclusive, ``above`` exclusive. NaN is
    always refused, infinity unless ``allow_inf``; argparse turns the
    refusal into ``error: argument --x: ...`` and exit status 2.
    """
    def convert(text):
        try:
            # int() and float() also take "1_000" and other scripts'
            # digits; a command line number is plain ASCII.
            if not text.isascii() or '_' in text:
                raise ValueError(text)
            value = kind(text)
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                '%r is not %s' % (text, 'an integer' if kind is int
                                  else 'a number'))
        if kind is float and (math.isnan(value) or
                              (math.isinf(value) and not allow_inf)):
            raise argparse.ArgumentTypeError(
                '%r: must be a finite number%s' % (
                    text, ' or inf' if allow_inf else ''))
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError('%r: must be above %s'
                                             % (text, above))
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError('%r: must be at least %s'
                                             % (text, minimum))
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError('%r: must be at most %s'
                                             % (text, maximum))
        return value
    convert.__name__ = kind.__name__
    return convert


if __name__ == '__main__':
    sys.exit(main())
