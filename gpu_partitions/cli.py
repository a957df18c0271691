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
import signal
import sys
import warnings

# Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    'inventory',
    'exporter',
    'demo',
    'simulate',
    'bench',
    'benchmark',
)

EVENTLET_NOTICE = r'\s*Eventlet is deprecated'


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
    # Nova's and Cyborg's libraries import eventlet, whose deprecation
    # notice (nine lines on every run) is for their authors, not for a
    # user of this command, and buried its one-line errors.
    warnings.filterwarnings('ignore', message=EVENTLET_NOTICE)
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args) or 0
        # Flushed here, where a reader that has gone is handled below,
        # not at exit (block-buffered stdout: a pipe without
        # PYTHONUNBUFFERED), where Python would print a stack and exit 120.
        sys.stdout.flush()
        return status
    except UsageError as error:
        print('gpu-partitions %s: error: %s' % (args.command, error),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line, not the stack of wherever it landed. Files
        # are written only once a run has succeeded, so none is left half.
        print('gpu-partitions %s: interrupted' % args.command,
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output has gone (``| head -1``): stop quietly,
        # with the status of a command ended by SIGPIPE. Python would
        # report the broken pipe again when it flushes stdout at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass  # stdout is no file (tests): nothing is flushed at exit
        return 128 + signal.SIGPIPE


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
        raise UsageError('%s: %s' % (path, first_line(error)))
    for key in cfg.CONF:
        value = _read_option(path, cfg.CONF, 'DEFAULT', key, errors)
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            for name in value:
                _read_option(path, value, key, name, errors)


DRIVER_NAMESPACE = 'cyborg.accelerator.driver'


def driver_class(name, source):
    """The class of the Cyborg driver called ``name`` (an entry point),
    or a one-line :class:`UsageError` naming ``source`` (where the name
    was given) and the drivers installed.
    """
    from importlib import metadata

    from stevedore import driver
    from stevedore import exception

    try:
        return driver.DriverManager(DRIVER_NAMESPACE, name).driver
    except exception.NoUniqueMatch as error:
        known = sorted({entry.name for entry in metadata.entry_points(
            group=DRIVER_NAMESPACE)})
        raise UsageError('%s: %s driver %r; installed: %s' % (
            source, 'no' if isinstance(error, exception.NoMatches)
            else 'more than one', name, ', '.join(known) or 'none'))


def connect_cloud(name, connect=None):
    """``connect(cloud=name)`` (default :func:`openstack.connect`); a
    cloud clouds.yaml lacks or cannot authenticate with is one
    :class:`UsageError` line.
    """
    import keystoneauth1.exceptions
    import openstack

    try:
        return (connect or openstack.connect)(cloud=name)
    except (openstack.exceptions.SDKException,
            keystoneauth1.exceptions.ClientException) as error:
        raise UsageError('--os-cloud %s: %s: %s' % (
            name or '(not given: the OS_* variables)',
            type(error).__name__, first_line(error))) from None


def _read_option(path, options, group, name, errors):
    try:
        return options[name]
    except errors as error:
        # oslo.config's message names the option and where it was read;
        # its reason follows "is not valid: ".
        raise UsageError('%s: [%s] %s: %s' % (
            path, group, name,
            first_line(error).rpartition('is not valid: ')[2]))


def first_line(error):
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
    # Run as ``python -m gpu_partitions.cli`` this file is __main__, whose
    # UsageError is not the one the commands raise: every usage error was
    # a traceback. Run the package's module instead.
    from gpu_partitions import cli
    sys.exit(cli.main())
