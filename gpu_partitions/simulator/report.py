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
"""Table, JSON and PNG plots of a simulation result.

A result is a plain dict (see :func:`gpu_partitions.simulator.simulate`);
files are written to a temporary name and renamed, so a failed run leaves
no partial file behind.
"""

import json
import os
import stat
import tempfile

from gpu_partitions import plotting


def table(result):
    """The result as text: one line per policy, then the bound, then
    the trace's rows set aside.
    """
    return '\n'.join([_policy_table(result)] + set_aside_lines(result))


def set_aside_lines(result):
    """One line per kind of row (nodes, tasks) of the trace set aside,
    with the reasons, counts and first lines of the file.
    """
    lines = []
    for what, found in sorted(result.get('set_aside', {}).items()):
        if found['total']:
            lines.append('set aside (cannot be placed by design): %d %s: %s'
                         % (found['total'], what, '; '.join(
                             '%d %s (line %s%s)' % (
                                 entry['count'], reason,
                                 ', '.join(map(str, entry['lines'])),
                                 ', ...' if entry['count']
                                 > len(entry['lines']) else '')
                             for reason, entry
                             in found['reasons'].items())))
    return lines


def _policy_table(result):
    protocol = result['protocol']
    head = '%s protocol, %s, fleet %d hosts / %d GPUs, seed %s; ' % (
        protocol, os.path.basename(result['trace']),
        result['fleet']['hosts'], result['fleet']['gpus'], result['seed'])
    if protocol == 'replay':
        head += ('fewest free whole GPUs and large slices over the '
                 'replay')
        lines = ['%-16s %-9s %9s %9s %11s %12s %8s' % (
            'policy', 'family', 'placed', 'failed', 'free GPUs',
            'free large', 'seconds')]
        for name, outcome in result['policies'].items():
            samples = outcome['over_time']
            lines.append('%-16s %-9s %9d %9d %11d %12d %8.1f' % (
                name, outcome['family'], outcome['placed'],
                outcome['failed'],
                min(s['free_whole_gpus'] for s in samples),
                min(s['free_large_slices'] for s in samples),
                outcome['seconds']))
        return '\n'.join([head] + lines)
    head += ('unallocated GPU share at %s%% arrived workload (slices: '
             'of the slices allocated; requested: FGD\'s metric)%s'
             % (result['arrived_at_end'],
                ', on-demand layouts' if result.get('dynamic') else ''))
    lines = ['%-16s %-9s %9s %10s %9s %9s %8s' % (
        'policy', 'family', 'slices%', 'requested%', 'placed', 'failed',
        'seconds')]
    for name, outcome in result['policies'].items():
        lines.append('%-16s %-9s %9.2f %10.2f %9d %9d %8.1f' % (
            name, outcome['family'], outcome['unallocated_at_end'],
            outcome['unallocated_requested_at_end'],
            outcome['placed'], outcome['failed'], outcome['seconds']))
    if result.get('bound'):
        lines.append('%-16s %-9s %9.2f %10.2f' % (
            'bound', 'offline', result['bound'][-1][1],
            result['bound_requested'][-1][1]))
        lines.append('%-16s %-9s %9s %10.2f' % (
            'free-layout', 'offline', '-',
            result['free_layout_bound'][-1][1]))

    return '\n'.join([head] + lines)


def atomic_write(path, write):
    """Write ``path`` through ``write(stream)`` (bytes): to a temporary
    file beside it, renamed over it, so that a failed write leaves no
    partial file. A symbolic link's target is what gets replaced; a path
    that is no regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is
    written into, as renaming over it would destroy it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, 'wb') as stream:
            write(stream)
        return
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix='.tmp')
    # mkstemp makes the file private; give it the usual mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    try:
        with os.fdopen(handle, 'wb') as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def check_writable(path):
    """Refuse (ValueError), before a run, a file path it could not
    write: a directory, or a folder that is missing or read-only.
    """
    if os.path.isdir(path):
        raise ValueError('%s is a directory, not a file to write' % path)
    if os.path.exists(path) and not os.path.isfile(path):
        # A device or FIFO is written into (see atomic_write).
        if not os.access(path, os.W_OK):
            raise ValueError('cannot write %s: not writable' % path)
        return
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.isdir(directory):
        raise ValueError('cannot write %s: no directory %s'
                         % (path, directory))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError('cannot write %s: directory %s is not writable'
                         % (path, directory))
    try:
        limit = os.pathconf(directory, 'PC_NAME_MAX')
    except (OSError, ValueError):
        return      # the file system does not say
    name = os.path.basename(os.path.realpath(path))
    if len(os.fsencode(name)) > limit:
        raise ValueError('cannot write %s: its name is longer than %d '
                         'bytes' % (_clip(path), limit))


def _clip(text, limit=80):
    return text if len(text) <= limit else text[:limit] + '...'


def check_writable_dir(directory):
    """Refuse (ValueError), before a run, a directory it could not write
    files into; a missing one is made when the results are written, so
    its parent must take it (a failed run leaves no empty directory).
    """
    if os.path.isdir(directory):
        check_writable(os.path.join(directory, 'x.json'))
    elif os.path.exists(directory):
        raise ValueError('%s is not a directory' % directory)
    else:
        check_writable(directory)


def write_json(result, path):
    atomic_write(path, lambda stream: stream.write(
        json.dumps(result, indent=1, sort_keys=True).encode()))


def write_plots(result, prefix):
    """``<prefix>-unallocated.png`` (arrivals) and ``<prefix>-free.png``
    (free whole GPUs and free large slices per step); the paths.
    """
    pyplot = plotting.pyplot()
    written = []
    policies = result['policies']
    if result['protocol'] == 'arrivals':
        figure, axes = pyplot.subplots(figsize=(7, 4.5))
        for name, outcome in policies.items():
            xs = [x for x, _ in outcome['curve']]
            ys = [y for _, y in outcome['curve']]
            style = '-' if outcome['family'] == 'ours' else '--'
            axes.plot(xs, ys, style, label=name, linewidth=1.2)
        if result.get('bound'):
            axes.plot([x for x, _ in result['bound']],
                      [y for _, y in result['bound']], 'k:', linewidth=2,
                      label='bound (relaxation)')
        axes.plot([0, 100], [100, 0], color='0.8', linewidth=0.8,
                  label='ideal (100 - arrived)')
        axes.set_xlabel('arrived workload (% of fleet GPUs)')
        axes.set_ylabel('unallocated GPU share (%)')
        axes.set_xlim(60, result['arrived_at_end'])
        axes.set_ylim(0, 40)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, ncol=2)
        axes.set_title('%s: unallocated GPUs vs arrived workload'
                       % os.path.basename(result['trace']), fontsize=9)
        written.append(_save(pyplot, figure, prefix + '-unallocated.png'))
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(7, 6),
                                            sharex=True)
    for name, outcome in policies.items():
        samples = outcome['over_time']
        if not samples:
            continue
        if result['protocol'] == 'replay':
            xs = [s['time'] / 3600.0 for s in samples]
        else:
            xs = [x for x, _ in outcome['curve']][:len(samples)]
        style = '-' if outcome['family'] == 'ours' else '--'
        top.plot(xs, [s['free_whole_gpus'] for s in samples], style,
                 label=name, linewidth=1)
        bottom.plot(xs, [s['free_large_slices'] for s in samples], style,
                    label=name, linewidth=1)
    top.set_ylabel('free whole GPUs')
    bottom.set_ylabel('free large slices\n(MIG >= 3g, vGPU >= 1/2)')
    bottom.set_xlabel('hours' if result['protocol'] == 'replay'
                      else 'arrived workload (% of fleet GPUs)')
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    top.legend(fontsize=7, ncol=2)
    written.append(_save(pyplot, figure, prefix + '-free.png'))
    return written


def _save(pyplot, figure, path):
    figure.tight_layout()
    atomic_write(path, lambda stream: figure.savefig(
        stream, format='png', dpi=90))
    pyplot.close(figure)
    return path
