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
"""A trace of one's own: the forms of openb files read, the rows set
aside (counted, with their lines) and the command's errors for bad
names and output paths.
"""

import json
import os
from unittest import mock

import fixtures
import testtools

from gpu_partitions.simulator import fleet
from gpu_partitions.simulator import trace
from tests.unit.cli_output import run_cli
from tests.unit.simulator import synthetic


class FileFormsTest(testtools.TestCase):
    """BOM, CRLF and any column order read as the plain file does."""

    def setUp(self):
        super().setUp()
        self.directory = self.useFixture(fixtures.TempDir()).path

    def _write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path, 'wb') as stream:
            stream.write(data.encode('utf-8'))
        return path

    @staticmethod
    def _reversed_columns(text):
        return ''.join(','.join(reversed(line.split(','))) + '\n'
                       for line in text.splitlines())

    def test_pod_file_forms(self):
        text = synthetic.pods_csv()
        plain = trace.read_tasks(self._write('plain.csv', text))
        for name, data in (
                ('bom.csv', '\ufeff' + text),
                ('crlf.csv', text.replace('\n', '\r\n')),
                ('reversed.csv', self._reversed_columns(text))):
            self.assertEqual(plain, trace.read_tasks(self._write(name,
                                                                 data)),
                             name)

    def test_node_file_forms(self):
        text = synthetic.nodes_csv()
        plain = trace.read_nodes(self._write('plain.csv', text))
        for name, data in (
                ('bom.csv', '\ufeff' + text.replace('\n', '\r\n')),
                ('reversed.csv', self._reversed_columns(text))):
            self.assertEqual(plain, trace.read_nodes(self._write(name,
                                                                 data)),
                             name)

    def test_error_names_the_column_where_the_file_has_it(self):
        text = self._reversed_columns(synthetic.pods_csv())
        lines = text.splitlines()
        cells = lines[2].split(',')
        cells[-2] = 'many'      # cpu_milli, second from the right
        lines[2] = ','.join(cells)
        error = self.assertRaises(
            trace.TraceError, trace.read_tasks,
            self._write('bad.csv', '\n'.join(lines) + '\n'))
        self.assertIn('line 3, column %d (cpu_milli)'
                      % (len(trace.POD_COLUMNS) - 1), str(error))

    def test_bytes_not_utf8_are_located(self):
        lines = synthetic.nodes_csv().encode().splitlines(keepends=True)
        # Beyond the reader's first chunk of 8 KiB.
        lines += [b'filler-%04d,1000,1000,2,T4\n' % n for n in range(400)]
        lines.append('café,1000,1000,2,T4\n'.encode('latin-1'))
        path = os.path.join(self.directory, 'latin1.csv')
        with open(path, 'wb') as stream:
            stream.write(b''.join(lines))
        error = self.assertRaises(trace.TraceError, trace.read_nodes, path)
        self.assertIn('%s, line %d, column 1: byte 0xe9 is not UTF-8'
                      % (path, len(lines)), str(error))

    def test_header_problems_are_named(self):
        header = list(trace.POD_COLUMNS)
        for columns, expected in (
                (header[:6] + header[7:], 'lacks qos'),
                (header + ['extra'], "unknown column 'extra'"),
                ([''] + header, "unknown column ''"),
                (header + ['qos'], "has column 'qos' twice")):
            path = self._write('head.csv', ','.join(columns) + '\n')
            error = self.assertRaises(trace.TraceError, trace.read_tasks,
                                      path)
            self.assertIn(path + ', line 1: header', str(error))
            self.assertIn(expected, str(error))

    def test_names_and_paths_of_pod_files(self):
        nodes, pods = synthetic.write(self.directory)
        self.assertEqual(pods, trace.pod_file('synthetic', self.directory))
        error = self.assertRaises(trace.TraceError, trace.pod_file,
                                  'nosuch', self.directory)
        self.assertIn("no trace named 'nosuch'", str(error))
        self.assertIn('known: synthetic', str(error))
        error = self.assertRaises(trace.TraceError, trace.pod_file,
                                  'default',
                                  os.path.join(self.directory, 'none'))
        self.assertIn('no such trace directory', str(error))
        error = self.assertRaises(trace.TraceError, trace.read_tasks,
                                  self.directory + os.sep)
        self.assertIn('is a directory', str(error))


class SetAsideTest(testtools.TestCase):

    NODES = [trace.Node('t4', 64000, 262144, 2, 'T4', line=2),
             trace.Node('g2', 96000, 393216, 8, 'G2', line=3),
             trace.Node('cpu', 32000, 262144, 0, '', line=4),
             trace.Node('new', 64000, 262144, 4, 'B200', line=5)]

    def test_gpu_less_and_unmodelled_nodes(self):
        usable, set_aside = fleet.split_nodes(self.NODES)
        self.assertEqual(['t4', 'g2'], [node.name for node in usable])
        found = set_aside.to_dict()
        self.assertEqual(2, found['total'])
        self.assertEqual({'count': 1, 'lines': [4]},
                         found['reasons']['no GPU'])
        [unmodelled] = [reason for reason in found['reasons']
                        if "'B200'" in reason]
        self.assertEqual([5], found['reasons'][unmodelled]['lines'])

    def test_tasks_no_host_could_hold(self):
        def task(line, num_gpu=1, milli=500, spec=(), cpu=8000):
            return trace.Task('p%d' % line, cpu, 16384, num_gpu, milli,
                              gpu_spec=spec, line=line)

        tasks = [task(2), task(3, spec=('A100X',)),
                 task(4, spec=('G3',)), task(5, num_gpu=16, milli=1000),
                 task(6, num_gpu=2, milli=1000, spec=('G2', 'G3')),
                 task(7, num_gpu=4, milli=1000, spec=('T4',)),
                 task(8, cpu=100000), task(9, num_gpu=0, milli=0),
                 task(10, spec=('A100X', 'T4')),
                 trace.Task('nothing', 0, 0, 0, 0, line=11)]
        _, kept, set_aside = fleet.split_trace(tasks, nodes=self.NODES)
        self.assertEqual([2, 6, 9, 10], [t.line for t in kept])
        found = set_aside['tasks'].to_dict()
        self.assertEqual(6, found['total'])
        by_lines = {tuple(entry['lines']): reason
                    for reason, entry in found['reasons'].items()}
        self.assertIn('A100X on no host', by_lines[(3,)])
        self.assertIn('G3 on no host', by_lines[(4,)])
        # T4 hosts have no NVLink clique: 4 GPUs of them are unreachable.
        self.assertIn('more GPUs than any host or NVLink clique',
                      by_lines[(5, 7)])
        self.assertIn('more CPU or memory', by_lines[(8,)])
        self.assertIn('asks for no CPU, memory or GPU', by_lines[(11,)])
        self.assertEqual(2, set_aside['nodes'].total)

    def test_fleet_spec_is_checked_like_a_node_list(self):
        spec = fleet.parse_fleet_spec('t4-vgpu:T4-16Q:2:1')
        _, kept, set_aside = fleet.split_trace(
            [trace.Task('a', 1000, 1000, 1, 500, line=2),
             trace.Task('b', 1000, 1000, 1, 500, gpu_spec=('G2',), line=3)],
            fleet=spec)
        self.assertEqual([2], [t.line for t in kept])
        self.assertEqual(1, set_aside['tasks'].total)

    def test_no_usable_node(self):
        error = self.assertRaises(fleet.LayoutError, fleet.split_trace, [],
                                  nodes=self.NODES[2:])
        self.assertIn('no node with a modelled GPU', str(error))
        self.assertIn('1: no GPU', str(error))


class CommandTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.directory = self.useFixture(fixtures.TempDir()).path
        self.nodes, self.pods = synthetic.write(self.directory)

    def _append(self, path, *rows):
        with open(path, 'a') as stream:
            stream.write(''.join(row + '\n' for row in rows))

    def test_set_aside_rows_are_reported_in_text_and_json(self):
        self._append(self.nodes, 'cpu-only,32000,262144,0,')
        self._append(self.pods,
                     'odd-1,8000,16384,1,500,A100X,LS,Running,1,9,1',
                     'odd-2,8000,16384,16,1000,,LS,Running,1,9,1')
        result = os.path.join(self.directory, 'result.json')
        code, out, err = run_cli([
            'simulate', '--nodes', self.nodes, '--trace', self.pods,
            '--scale', '1', '--policies', 'best-fit', '--jobs', '1',
            '--no-progress', '--json', result])
        self.assertEqual(0, code, err)
        self.assertIn('set aside (cannot be placed by design): 2 tasks',
                      out)
        self.assertIn('1 no GPU (line 14)', out)
        with open(result) as stream:
            data = json.load(stream)
        self.assertEqual(1, data['set_aside']['nodes']['total'])
        self.assertEqual(2, data['set_aside']['tasks']['total'])
        self.assertEqual(
            [[122], [123]], sorted(entry['lines'] for entry in data[
                'set_aside']['tasks']['reasons'].values()))

    def test_no_placeable_gpu_task(self):
        pods = os.path.join(self.directory, 'odd.csv')
        with open(pods, 'w') as stream:
            stream.write(','.join(trace.POD_COLUMNS) + '\n'
                         'odd-1,8000,16384,1,500,A100X,LS,Running,1,9,1\n')
        code, _, err = run_cli(['simulate', '--nodes', self.nodes,
                                '--trace', pods, '--no-progress'])
        self.assertEqual(2, code)
        self.assertIn('%s: no GPU task this fleet could hold' % pods, err)
        self.assertIn('A100X', err)

    def test_output_path_refused_before_the_run(self):
        missing = os.path.join(self.directory, 'none', 'r.json')
        for option, path, expected in (
                ('--json', missing, 'no directory'),
                ('--json', self.directory, 'is a directory'),
                ('--plots', missing, 'no directory')):
            with mock.patch('gpu_partitions.simulator.run.simulate') as run:
                code, _, err = run_cli([
                    'simulate', '--nodes', self.nodes, '--trace', self.pods,
                    '--scale', '1', '--no-progress', option, path])
            self.assertEqual(2, code, option)
            self.assertIn(expected, err)
            run.assert_not_called()

    def test_unknown_trace_name(self):
        code, _, err = run_cli(['simulate', '--trace-dir', self.directory,
                                '--trace', 'nosuch', '--no-progress'])
        self.assertEqual(2, code)
        self.assertIn("no trace named 'nosuch'", err)

    def test_benchmark_refuses_bad_sizes_and_trace_names(self):
        self.useFixture(fixtures.EnvironmentVariable(
            trace.TRACE_DIR_ENV, self.directory))
        for variable, value, traces, expected in (
                ('GPU_PARTITIONS_SIM_SCALE', 'abc', 'synthetic',
                 '$GPU_PARTITIONS_SIM_SCALE'),
                ('GPU_PARTITIONS_SIM_SEEDS', '0', 'synthetic',
                 '$GPU_PARTITIONS_SIM_SEEDS'),
                ('GPU_PARTITIONS_SIM_SCALE', '1', 'nosuch',
                 "no trace named 'nosuch'")):
            with mock.patch.dict(os.environ, {variable: value}), \
                    mock.patch('gpu_partitions.simulator.run.simulate') as run:
                code, _, err = run_cli(['benchmark', 'packing', '--dynamic',
                                        '--traces', traces])
            self.assertEqual(2, code, err)
            self.assertIn(expected, err)
            run.assert_not_called()
