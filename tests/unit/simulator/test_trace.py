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
"""Strict reading of openb node and pod files."""

import io
import os
import sys
from unittest import mock

import fixtures
import testtools

from gpu_partitions import cli
from gpu_partitions.simulator import trace
from tests.unit.simulator import synthetic


class TraceTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.directory = self.useFixture(fixtures.TempDir()).path
        self.nodes, self.pods = synthetic.write(self.directory)

    def _write(self, name, text):
        path = os.path.join(self.directory, name)
        with open(path, 'w') as stream:
            stream.write(text)
        return path

    def test_reads_synthetic_files(self):
        nodes = trace.read_nodes(self.nodes)
        tasks = trace.read_tasks(self.pods)
        self.assertEqual(12, len(nodes))
        self.assertEqual(('G2', 8), (nodes[0].model, nodes[0].gpus))
        self.assertEqual(120, len(tasks))
        self.assertIsNotNone(tasks[0].creation_time)
        self.assertTrue(any(t.num_gpu > 1 for t in tasks))
        self.assertTrue(any(t.num_gpu == 0 for t in tasks))

    def test_short_form_has_no_times(self):
        path = self._write('short.csv', synthetic.pods_csv(timed=False))
        tasks = trace.read_tasks(path)
        self.assertIsNone(tasks[0].creation_time)
        self.assertEqual((), tasks[0].gpu_spec)

    def test_gpu_share(self):
        task = trace.Task('t', 0, 0, num_gpu=1, gpu_milli=470)
        self.assertEqual(0.47, task.gpu_share)
        self.assertEqual(4.0, trace.Task('t', 0, 0, 4, 1000).gpu_share)

    def _refused(self, reader, text, *expected):
        path = self._write('bad.csv', text)
        error = self.assertRaises(trace.TraceError, reader, path)
        for fragment in expected:
            self.assertIn(fragment, str(error))
        self.assertIn(path, str(error))
        return error

    def test_non_integer_names_line_and_column(self):
        lines = synthetic.pods_csv().splitlines()
        fields = lines[3].split(',')
        fields[1] = '12x'
        lines[3] = ','.join(fields)
        error = self._refused(trace.read_tasks, '\n'.join(lines),
                              'line 4', 'column 2 (cpu_milli)', "'12x'")
        self.assertEqual(4, error.line)

    def test_bad_header(self):
        self._refused(trace.read_nodes, 'sn,cpu,memory_mib,gpu,model\n',
                      'line 1', 'lacks cpu_milli', "unknown column 'cpu'")

    def test_wrong_number_of_fields(self):
        text = synthetic.nodes_csv() + 'extra-node,1000,1000,2\n'
        self._refused(trace.read_nodes, text, 'line 14', 'has 4 fields')

    def test_gpu_node_without_model(self):
        text = synthetic.nodes_csv() + 'odd-node,1000,1000,2,\n'
        self._refused(trace.read_nodes, text, 'line 14',
                      'column 5 (model)', 'is empty')

    def test_duplicate_node(self):
        text = synthetic.nodes_csv() + 'synth-node-000,1000,1000,2,T4\n'
        self._refused(trace.read_nodes, text, 'listed twice')

    def test_fractional_multi_gpu_task(self):
        text = (','.join(trace.SHORT_POD_COLUMNS)
                + '\np-1,1000,1000,2,500\n')
        self._refused(trace.read_tasks, text, 'line 2',
                      'column 5 (gpu_milli)', 'whole GPUs')

    def test_more_than_one_gpu_of_milli(self):
        text = ','.join(trace.SHORT_POD_COLUMNS) + '\np-1,1000,1000,1,1500\n'
        self._refused(trace.read_tasks, text, 'above 1000')

    def test_deletion_before_creation(self):
        text = (','.join(trace.POD_COLUMNS)
                + '\np-1,1000,1000,1,500,,LS,Running,100,50,100\n')
        self._refused(trace.read_tasks, text, 'column 10 (deletion_time)',
                      'before creation_time')

    def test_missing_file(self):
        error = self.assertRaises(trace.TraceError, trace.read_nodes,
                                  os.path.join(self.directory, 'none.csv'))
        self.assertIn('cannot read', str(error))

    def test_default_directory_is_beside_the_repository(self):
        self.useFixture(fixtures.EnvironmentVariable(trace.TRACE_DIR_ENV))
        repository = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))))
        self.assertEqual(
            os.path.join(os.path.dirname(repository), 'shared', 'traces',
                         'alibaba-openb-2023'), trace.trace_dir())
        self.assertEqual('/x/y.csv', trace.pod_file('/x/y.csv'))


class CommandRefusesBadInputTest(testtools.TestCase):
    """A malformed file stops the command before any result is written."""

    def test_no_json_or_plot_written(self):
        directory = self.useFixture(fixtures.TempDir()).path
        nodes, pods = synthetic.write(directory)
        with open(pods, 'a') as stream:
            stream.write('bad-pod,1000,1000,1,abc,,LS,Running,1,2,1\n')
        result = os.path.join(directory, 'result.json')
        stderr = io.StringIO()
        with mock.patch.object(sys, 'stderr', stderr):
            code = cli.main(['simulate', '--nodes', nodes, '--trace', pods,
                             '--json', result, '--plots',
                             os.path.join(directory, 'plot'),
                             '--no-progress'])
        self.assertEqual(2, code)
        self.assertIn('line 122, column 5 (gpu_milli)', stderr.getvalue())
        self.assertEqual(sorted(['openb_node_list_gpu_node.csv',
                                 'openb_pod_list_synthetic.csv']),
                         sorted(os.listdir(directory)))
