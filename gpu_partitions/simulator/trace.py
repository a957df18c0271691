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
"""Strict readers of the Alibaba ``openb`` node and pod files.

Node files: ``sn,cpu_milli,memory_mib,gpu,model``. Pod files: either the
long form ``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,
pod_phase,creation_time,deletion_time,scheduled_time`` or the short form
``name,cpu_milli,memory_mib,num_gpu,gpu_milli`` (the multigpu traces).

Columns are found by their header names, in any order; a UTF-8 byte
order mark and CRLF line ends are read as such. Anything odd is refused
with :class:`TraceError`, which names the file, the line (1 is the
header) and the column (1-based, with its name), so the run stops before
any result is written. Rows that are well formed but that the simulator
cannot place by design (GPU-less nodes, GPU models no host kind models,
tasks no host could ever hold) are read as they are: the fleet sets them
aside and counts them (:func:`.fleet.split_nodes`,
:func:`.fleet.split_tasks`).
"""

import csv
import dataclasses
import os
import re

NODE_COLUMNS = ('sn', 'cpu_milli', 'memory_mib', 'gpu', 'model')
POD_COLUMNS = ('name', 'cpu_milli', 'memory_mib', 'num_gpu', 'gpu_milli',
               'gpu_spec', 'qos', 'pod_phase', 'creation_time',
               'deletion_time', 'scheduled_time')
SHORT_POD_COLUMNS = POD_COLUMNS[:5]

# Where CI and a checkout beside ../shared find the trace.
DEFAULT_TRACE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))),
    os.pardir, 'shared', 'traces', 'alibaba-openb-2023')
TRACE_DIR_ENV = 'GPU_PARTITIONS_TRACE_DIR'


class TraceError(ValueError):
    """A node or pod file that cannot be read, with where and why."""

    def __init__(self, path, line, column, message):
        self.path = path
        self.line = line
        self.column = column
        where = path
        if line is not None:
            where += ', line %d' % line
        if column is not None:
            where += ', column %s' % column
        super().__init__('%s: %s' % (where, message))


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str
    line: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True)
class Task:
    """One pod of the trace. ``gpu_milli`` is per GPU (1000 = one GPU);
    ``gpu_spec`` the allowed models (empty: any); times in seconds, None
    when the file has none.
    """
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: tuple = ()
    creation_time: int | None = None
    deletion_time: int | None = None
    # Where the task is in its file (for reports), not part of it.
    line: int = dataclasses.field(default=0, compare=False)

    @property
    def gpu_share(self):
        """GPUs the task asks for (0.47 for 470 milli of one GPU)."""
        if self.num_gpu == 0:
            return 0.0
        if self.num_gpu == 1:
            return self.gpu_milli / 1000.0
        return float(self.num_gpu)


def trace_dir(explicit=None):
    """The directory of the openb files: ``explicit``, else
    ``$GPU_PARTITIONS_TRACE_DIR``, else ``../shared/traces/...`` beside
    the repository.
    """
    return os.path.abspath(
        explicit or os.environ.get(TRACE_DIR_ENV) or DEFAULT_TRACE_DIR)


def default_node_file(directory=None):
    return os.path.join(trace_dir(directory), 'openb_node_list_gpu_node.csv')


def pod_file(name, directory=None):
    """``default`` gives ``openb_pod_list_default.csv`` of the trace dir;
    a path (with a ``/`` or ending in ``.csv``) is returned as is. A name
    the trace dir does not hold is refused with the names it holds.
    """
    if os.sep in name or name.endswith('.csv'):
        return name
    folder = trace_dir(directory)
    path = os.path.join(folder, 'openb_pod_list_%s.csv' % name)
    if not os.path.isdir(folder):
        raise TraceError(folder, None, None, 'no such trace directory (set '
                         '--trace-dir or $%s)' % TRACE_DIR_ENV)
    if not os.path.exists(path):
        known = sorted(entry[len('openb_pod_list_'):-len('.csv')]
                       for entry in os.listdir(folder)
                       if entry.startswith('openb_pod_list_')
                       and entry.endswith('.csv'))
        raise TraceError(folder, None, None, 'no trace named %s (no %s); '
                         'known: %s; a file of your own is given by its '
                         'path (./NAME.csv)' % (
                             _show(name), os.path.basename(path),
                             ', '.join(known) or 'none'))
    return path


class _Reader:
    """Rows of a CSV file with the position of each cell."""

    def __init__(self, path, columns_options):
        self.path = path
        if os.path.isdir(path):
            raise TraceError(path, None, None, 'is a directory; give a CSV '
                             'file (a trace directory is --trace-dir)')
        try:
            # utf-8-sig: files saved by spreadsheets start with a BOM.
            with open(path, newline='', encoding='utf-8-sig') as stream:
                self.rows = list(csv.reader(_lines(path, stream)))
        except OSError as error:
            raise TraceError(path, None, None, 'cannot read: %s'
                             % error.strerror)
        except UnicodeDecodeError:
            raise _not_utf8(path)
        except csv.Error as error:
            raise TraceError(path, None, None, 'not a CSV file: %s' % error)
        if not self.rows:
            raise TraceError(path, 1, None, 'empty file, expected a header')
        # Columns by name, in any order; every one of a form, no other.
        self.header = tuple(cell.strip() for cell in self.rows[0])
        for columns in columns_options:
            if (len(self.header) == len(columns)
                    and set(self.header) == set(columns)):
                self.columns = columns
                break
        else:
            raise TraceError(path, 1, None, self._header_problem(
                columns_options))

    def _header_problem(self, columns_options):
        twice = sorted({c for c in self.header if self.header.count(c) > 1})
        if twice:
            return 'header has column %s twice' % _show(','.join(twice))
        closest = min(columns_options, key=lambda columns: len(
            set(columns) ^ set(self.header)))
        missing = [c for c in closest if c not in self.header]
        unknown = [c for c in self.header if c not in closest]
        found = []
        if missing:
            found.append('lacks %s' % ','.join(missing))
        if unknown:
            found.append('has unknown column %s' % _show(','.join(unknown)))
        return 'header %s; expected the columns %s (any order)' % (
            ' and '.join(found),
            ' or '.join(','.join(c) for c in columns_options))

    def records(self):
        for index, row in enumerate(self.rows[1:], start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(self.header):
                raise TraceError(self.path, index, None,
                                 'has %d fields; the header has %d'
                                 % (len(row), len(self.header)))
            yield index, dict(zip(self.header, (c.strip() for c in row)))

    def error(self, line, column, message):
        position = '%d (%s)' % (self.header.index(column) + 1, column)
        return TraceError(self.path, line, position, message)

    def integer(self, line, record, column, minimum=0, optional=False):
        text = record[column]
        if text == '' and optional:
            return None
        # Plain ASCII digits only: int() would also take "1_000", "+5"
        # and other scripts' digits, and a 5,000-digit number.
        if not _INTEGER.match(text):
            raise self.error(line, column, '%s is not an integer (at most '
                             '%d digits)' % (_show(text), _MAX_DIGITS))
        value = int(text)
        if value < minimum:
            raise self.error(line, column, '%d is below %d' % (value,
                                                               minimum))
        maximum = _MAXIMA.get(column)
        if maximum is not None and value > maximum:
            raise self.error(line, column, '%d is above %d' % (value,
                                                               maximum))
        return value

    def name(self, line, record, column):
        if not record[column]:
            raise self.error(line, column, 'is empty')
        if len(record[column]) > _MAX_NAME:
            raise self.error(line, column, 'is longer than %d characters'
                             % _MAX_NAME)
        if not record[column].isprintable():
            raise self.error(line, column, '%s holds control characters'
                             % _show(record[column]))
        return record[column]


_MAX_DIGITS = 15
_INTEGER = re.compile(r'^-?[0-9]{1,%d}$' % _MAX_DIGITS, re.ASCII)
_MAX_NAME = 256
# Far above anything of the trace (96 CPUs, 8 GPUs, 2 TiB per node), so
# only nonsense is refused; times are seconds, any 64-bit-safe value.
_MAXIMA = {'gpu': 64, 'num_gpu': 64, 'cpu_milli': 10 ** 7,
           'memory_mib': 10 ** 9}


# A row of an openb file is under 200 characters; a line far longer is
# not a trace (/dev/zero, a binary file without newlines), and reading it
# whole could exhaust memory.
_MAX_LINE = 64 * 1024


def _lines(path, stream):
    """``stream``'s lines, refusing one longer than :data:`_MAX_LINE`."""
    number = 0
    while True:
        line = stream.readline(_MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > _MAX_LINE:
            raise TraceError(path, number, None, 'line longer than %d '
                             'characters: not a trace file' % _MAX_LINE)
        yield line


def _not_utf8(path):
    """Where in the file its first byte that is not UTF-8 is (line, and
    column counted by commas before it on its line); read a line at a
    time, as far as that byte.
    """
    with open(path, 'rb') as stream:
        number = 0
        while True:
            line = stream.readline(_MAX_LINE + 1)
            number += 1
            if len(line) > _MAX_LINE:
                return TraceError(path, number, None, 'line longer than %d '
                                  'characters: not a trace file' % _MAX_LINE)
            if not line:
                return TraceError(path, None, None, 'not UTF-8 (save the '
                                  'file as UTF-8)')
            try:
                line.decode('utf-8')
            except UnicodeDecodeError as error:
                return TraceError(
                    path, number, line[:error.start].count(b',') + 1,
                    'byte 0x%02x is not UTF-8 (save the file as UTF-8)'
                    % line[error.start])


def _clip(text, limit=80):
    return text if len(text) <= limit else text[:limit] + '...'


def _show(text):
    return repr(_clip(text, 40))


def read_nodes(path):
    """The nodes of a node file, GPU-less ones (``gpu`` 0, ``model``
    empty) and those of any model name included.
    """
    reader = _Reader(path, (NODE_COLUMNS,))
    nodes = []
    seen = set()
    for line, record in reader.records():
        name = reader.name(line, record, 'sn')
        if name in seen:
            raise reader.error(line, 'sn', 'node %s is listed twice'
                               % _show(name))
        seen.add(name)
        gpus = reader.integer(line, record, 'gpu')
        model = record['model']
        if gpus or model:
            model = reader.name(line, record, 'model')
        nodes.append(Node(
            name=name,
            cpu_milli=reader.integer(line, record, 'cpu_milli', 1),
            memory_mib=reader.integer(line, record, 'memory_mib', 1),
            gpus=gpus, model=model, line=line))
    if not nodes:
        raise TraceError(path, None, None, 'no node in the file')
    return nodes


def read_tasks(path):
    """The tasks of a pod file (long or short form)."""
    reader = _Reader(path, (POD_COLUMNS, SHORT_POD_COLUMNS))
    timed = reader.columns == POD_COLUMNS
    tasks = []
    for line, record in reader.records():
        num_gpu = reader.integer(line, record, 'num_gpu')
        gpu_milli = reader.integer(line, record, 'gpu_milli')
        if gpu_milli > 1000:
            raise reader.error(line, 'gpu_milli',
                               '%d is above 1000 (one GPU)' % gpu_milli)
        if num_gpu > 1 and gpu_milli != 1000:
            raise reader.error(line, 'gpu_milli',
                               'a task of %d GPUs must take whole GPUs '
                               '(1000), not %d' % (num_gpu, gpu_milli))
        if num_gpu == 1 and gpu_milli == 0:
            raise reader.error(line, 'gpu_milli',
                               'is 0 for a task of one GPU')
        if num_gpu == 0 and gpu_milli != 0:
            raise reader.error(line, 'gpu_milli',
                               'is %d for a task of no GPU' % gpu_milli)
        spec = ()
        creation = deletion = None
        if timed:
            spec = tuple(m for m in record['gpu_spec'].split('|') if m)
            if spec:
                reader.name(line, record, 'gpu_spec')
            creation = reader.integer(line, record, 'creation_time',
                                      optional=True)
            deletion = reader.integer(line, record, 'deletion_time',
                                      optional=True)
            if (creation is not None and deletion is not None
                    and deletion < creation):
                raise reader.error(line, 'deletion_time',
                                   '%d is before creation_time %d'
                                   % (deletion, creation))
        tasks.append(Task(
            name=reader.name(line, record, 'name'),
            cpu_milli=reader.integer(line, record, 'cpu_milli'),
            memory_mib=reader.integer(line, record, 'memory_mib'),
            num_gpu=num_gpu, gpu_milli=gpu_milli, gpu_spec=spec,
            creation_time=creation, deletion_time=deletion, line=line))
    if not tasks:
        raise TraceError(path, None, None, 'no task in the file')
    return tasks
