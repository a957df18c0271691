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
"""``gpu-partitions simulate`` arguments and the openb trace readers.

Every numeric and enum argument is fuzzed through the real parser (clear
``error: argument`` line, exit 2), ``--fleet`` through the command (one
``error:`` line, exit 2, nothing simulated), and every column of a pod
and a node file with malformed cells, rows and bytes.
"""

import contextlib
import io
import os

import fixtures
import testtools

from gpu_partitions import cli
from gpu_partitions.simulator import fleet as fleet_mod
from gpu_partitions.simulator import trace
from tests.unit.fuzz import outcomes

BAD_NUMBERS = ['nan', 'NaN', 'inf', '-inf', '-1', '0', '1e309', 'abc', '',
               '1_000', '0x10', '\u0661', '9' * 5000, '1.5.2']
# (option, values it takes) and which of BAD_NUMBERS are valid for it.
NUMERIC = {
    '--scale': {},
    '--target': {},
    '--speedup': {},
    '--seed': {'0': 'seed 0 is valid'},
    '--jobs': {},
}
BAD_FLEETS = ['a100-80gb-mig:mixed:0:1', 'a100-80gb-mig:mixed:-1:1',
              'a100-80gb-mig:mixed:17:1', 'a100-80gb-mig:mixed:8:0',
              'a100-80gb-mig:mixed:8:1000000',
              'a100-80gb-mig:mixed:8:3000,a100-80gb-mig:mixed:8:3000',
              'a100-80gb-mig:mixed:nan:1', 'a100-80gb-mig:mixed:8:1e6',
              'nosuch:mixed:8:1', 'a100-80gb-mig:nosuch:8:1',
              'a100-80gb-mig:mixed:8', ',', ':::', '../../etc:x:1:1']

POD_HEADER = ('name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,'
              'pod_phase,creation_time,deletion_time,scheduled_time')
POD_ROW = ['pod-0', '12000', '16384', '1', '460', '', 'LS', 'Running', '0',
           '100', '0']
NODE_HEADER = 'sn,cpu_milli,memory_mib,gpu,model'
NODE_ROW = ['node-0', '64000', '262144', '2', 'T4']
BAD_CELLS = ['', 'abc', '-1', '1_000', '\u0661\u0662', '9' * 5000, 'nan',
             '1e3', '0x10', 'x' * 100000, '"unbalanced', '1\x002',
             '99999999999999999999', '+5']


def parse(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            cli.build_parser().parse_args(argv)
        except SystemExit as exit_:
            return exit_.code, err.getvalue()
    return 0, err.getvalue()


class SimulateArgumentsTest(testtools.TestCase):

    def test_numeric_arguments(self):
        counted = outcomes.Outcomes('simulate arguments')
        for option, valid in sorted(NUMERIC.items()):
            for value in BAD_NUMBERS:
                code, err = parse(['simulate', option + '=' + value])
                what = '%s %r' % (option, value[:20])
                if code == 0:
                    counted.accepted(what, valid.get(value))
                elif code == 2 and err.strip().splitlines()[-1].startswith(
                        'gpu-partitions simulate: error: argument ' +
                        option):
                    counted.clear(err.strip().splitlines()[-1])
                else:
                    counted.traceback('%s: exit %r %r' % (what, code, err))
        for value in ('bogus', '', ',', 'fgd,bogus', 'x' * 10000,
                      'fgd,fgd'):
            code, err = parse(['simulate', '--policies=' + value])
            if code == 2 and ('unknown policy' in err
                              or "policy 'fgd' given twice" in err):
                counted.clear(err.strip().splitlines()[-1])
            else:
                counted.traceback('--policies %r: %r %r'
                                  % (value[:20], code, err))
        for value in ('pack', ''):
            code, err = parse(['simulate', '--protocol=' + value])
            if code == 2 and 'invalid choice' in err:
                counted.clear(err.strip().splitlines()[-1])
            else:
                counted.traceback('--protocol %r' % value)
        counted.check(self, len(NUMERIC) * len(BAD_NUMBERS) + 8)

    def test_fleet_specs(self):
        counted = outcomes.Outcomes('simulate --fleet')
        for spec in BAD_FLEETS:
            try:
                fleet_mod.parse_fleet_spec(spec)
            except fleet_mod.LayoutError as error:
                counted.clear(str(error))
            except Exception as error:  # noqa: B902 counted, then asserted
                counted.traceback('%r: %s: %s' % (spec, type(error).__name__,
                                                  error))
            else:
                counted.accepted(spec)
        counted.check(self, len(BAD_FLEETS))

    def test_huge_fleet_is_refused_before_building_it(self):
        error = self.assertRaises(fleet_mod.LayoutError,
                                  fleet_mod.parse_fleet_spec,
                                  'a100-80gb-mig:mixed:8:1000000')
        self.assertIn('more than %d' % fleet_mod.MAX_FLEET_HOSTS, str(error))


class TraceReaderFuzzTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def write(self, content):
        path = os.path.join(self.tmp, 'trace.csv')
        with open(path, 'wb') as stream:
            stream.write(content if isinstance(content, bytes)
                         else content.encode('utf-8', 'surrogatepass'))
        return path

    def attempt(self, counted, read, content, what, reason=None):
        try:
            read(self.write(content))
        except trace.TraceError as error:
            if 'trace.csv' not in str(error) or len(str(error)) > 500:
                counted.traceback('%s: unclear %r' % (what, str(error)[:300]))
            else:
                counted.clear(str(error))
        except Exception as error:  # noqa: B902 counted, then asserted
            counted.traceback('%s: %s: %.200s' % (what, type(error).__name__,
                                                  error))
        else:
            counted.accepted(what, reason)

    def fuzz_columns(self, counted, read, header, row, valid):
        good = ','.join(row)
        for column, name in enumerate(header.split(',')):
            for cell in BAD_CELLS:
                cells = list(row)
                cells[column] = cell
                text = '%s\n%s\n%s\n' % (header, good, ','.join(cells))
                self.attempt(counted, read, text,
                             '%s=%r' % (name, cell[:20]),
                             valid.get((name, cell)))

    def test_pod_file_every_column(self):
        counted = outcomes.Outcomes('trace pod file')
        valid = {}
        for cell in BAD_CELLS:
            # Free text the simulator never interprets.
            for name in ('qos', 'pod_phase', 'scheduled_time'):
                valid[(name, cell)] = 'column not read by the simulator'
            if cell and '\x00' not in cell and len(cell) <= 256:
                valid[('name', cell)] = 'any non-empty name'
                valid[('gpu_spec', cell)] = (
                    'any model name: a task of models no host has is set '
                    'aside by the fleet')
        for name in ('creation_time', 'deletion_time'):
            valid[(name, '')] = 'optional time'
        valid[('gpu_spec', '')] = 'empty spec: any model'
        valid[('cpu_milli', '1e3')] = None
        valid[('deletion_time', '99999999999999999999')] = None
        self.fuzz_columns(counted, trace.read_tasks, POD_HEADER, POD_ROW,
                          valid)
        self.raw_files(counted, trace.read_tasks, POD_HEADER)
        counted.check(self, 11 * len(BAD_CELLS))

    def test_node_file_every_column(self):
        counted = outcomes.Outcomes('trace node file')
        valid = {}
        for cell in BAD_CELLS:
            if cell and '\x00' not in cell and len(cell) <= 256:
                valid[('sn', cell)] = 'any non-empty node name'
                valid[('model', cell)] = (
                    'any model name: a node of a model not modelled is set '
                    'aside by the fleet')
        self.fuzz_columns(counted, trace.read_nodes, NODE_HEADER, NODE_ROW,
                          valid)
        self.raw_files(counted, trace.read_nodes, NODE_HEADER)
        counted.check(self, 5 * len(BAD_CELLS))

    def raw_files(self, counted, read, header):
        row = ','.join(POD_ROW if header == POD_HEADER else NODE_ROW)
        cases = [
            ('empty file', b''),
            ('header only', header + '\n'),
            ('wrong header', 'a,b,c\n1,2,3\n'),
            ('too many fields', '%s\n%s,extra\n' % (header, row)),
            ('too few fields', '%s\n%s\n' % (header, row.rsplit(',', 1)[0])),
            ('not UTF-8', header.encode() + b'\n\xff\xfe\n'),
            ('NUL bytes', header + '\n' + row.replace(',', '\x00,', 1)),
            ('field of 1 MiB', '%s\n"%s"\n' % (header, 'x' * 2 ** 20)),
            ('header of 10,000 columns', ','.join(['a'] * 10000) + '\n'),
            ('lone surrogate', header + '\n\udc80' + row + '\n'),
            ('duplicate row', '%s\n%s\n%s\n' % (header, row, row)),
        ]
        for what, content in cases:
            reason = None
            if what == 'duplicate row' and header == POD_HEADER:
                reason = 'two pods may ask the same; names are labels'
            self.attempt(counted, read, content, what, reason)
