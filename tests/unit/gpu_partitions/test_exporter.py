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
"""``gpu-partitions exporter``: scraped over real HTTP on 127.0.0.1."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request

from prometheus_client import parser
import testtools
import yaml

from cyborg_gpu_drivers import inventory
from gpu_partitions.commands import exporter as command
from gpu_partitions.commands import inventory as inventory_command
from gpu_partitions import exporter
from gpu_partitions import fixture_drivers
from gpu_partitions import reference_hosts
import placement_traits

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..',
                                    '..'))
#: The ``gpu-partitions`` command, as its console script runs it.
GPU_PARTITIONS = [sys.executable, '-c',
                  'import sys; from gpu_partitions import cli; '
                  'sys.exit(cli.main())']


def samples(text):
    """``{metric name: [(labels, value)]}`` of an exposition."""
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(
                (sample.labels, sample.value))
    return found


def by_provider(found, name):
    return {labels['provider']: value for labels, value in found[name]}


def reported_providers(fixture):
    """What ``gpu-partitions inventory --fixture`` reports, by name."""
    host = reference_hosts.load(fixture)
    with tempfile.TemporaryDirectory() as directory:
        devices = fixture_drivers.discover_all(host.materialize(directory))
    return {entry['name']: entry
            for entry in inventory_command.providers(devices)}


class ExporterOverHttpTest(testtools.TestCase):

    def serve(self, *arguments):
        process = subprocess.Popen(
            GPU_PARTITIONS + ['exporter', '--port', '0'] + list(arguments),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=REPO)
        self.addCleanup(self._stop, process)
        line = process.stdout.readline()
        self.assertIn('serving http://127.0.0.1:', line,
                      process.stderr.read() if not line else line)
        return line.split()[-1]

    def _stop(self, process):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()

    def scrape(self, url):
        with urllib.request.urlopen(url, timeout=60) as response:
            self.assertEqual(200, response.status)
            self.assertIn('text/plain', response.headers['Content-Type'])
            return response.read().decode()

    def test_scrape_of_hgx_h100(self):
        url = self.serve('--fixture', 'hgx-h100')
        self.assertEqual('/metrics', url[url.rindex('/'):])
        text = self.scrape(url)
        found = samples(text)
        reported = reported_providers('hgx-h100')

        # Every provider the host reports, with its units.
        capacity = by_provider(found, 'gpu_partitions_provider_capacity_units')
        self.assertEqual(set(reported), set(capacity))
        offered = by_provider(found, 'gpu_partitions_provider_offered_units')
        free = by_provider(found, 'gpu_partitions_provider_free_units')
        used = by_provider(found, 'gpu_partitions_provider_used_units')
        stranded = by_provider(found,
                               'gpu_partitions_provider_stranded_units')
        for name, entry in reported.items():
            in_use = sum(1 for h in entry['attach_handles'] if h['in_use'])
            self.assertEqual(entry['total'], offered[name], name)
            self.assertEqual(entry['total'], capacity[name], name)
            self.assertEqual(in_use, used[name], name)
            self.assertEqual(entry['total'] - in_use, free[name], name)
            self.assertEqual(0, stranded[name], name)
        # No cloud read: no Placement usage metric.
        self.assertNotIn('gpu_partitions_provider_placement_used_units',
                         found)

        # Per GPU: NUMA node as the providers' traits say; the link domain
        # is the GPU's NVLink clique, which MIG providers do not carry as a
        # trait (MIG slices get no P2P over it).
        infos = found['gpu_partitions_gpu_info']
        self.assertEqual(8, len(infos))
        for labels, value in infos:
            self.assertEqual(1, value)
            traits = {trait for entry in reported.values()
                      if entry['gpu']['bus'] == labels['gpu'].split(':')[1]
                      for trait in entry['traits']}
            self.assertIn(placement_traits.numa_node_trait(
                int(labels['numa_node'])), traits)
            self.assertEqual('0', labels['link_domain'])
            self.assertIsNone(placement_traits.link_domain_of(traits))
            self.assertNotEqual('', labels['layout'])
        self.assertEqual(
            [1] * 8, [v for _, v in found['gpu_partitions_gpu_healthy']])
        self.assertEqual(
            sum(capacity.values()),
            sum(v for _, v in found['gpu_partitions_gpu_capacity_units']))
        self.assertEqual(
            [('gpu_partitions_nvidia_mig', 1)],
            sorted((labels['driver'], value) for labels, value in
                   found['gpu_partitions_scan_success']
                   if labels['driver'] == 'gpu_partitions_nvidia_mig'))

        # Prometheus conventions: one prefix, units in gauge names, no
        # _total on a gauge.
        for family in parser.text_string_to_metric_families(text):
            if family.name.startswith(('python_', 'process_')):
                continue
            self.assertTrue(family.name.startswith('gpu_partitions_'),
                            family.name)
            self.assertEqual('gauge', family.type, family.name)
            self.assertFalse(family.name.endswith('_total'), family.name)
            self.assertTrue(family.name.endswith(
                ('_units', '_bytes', '_seconds', '_info', '_healthy',
                 '_stub', '_success')), family.name)

    def test_unknown_fixture_is_a_usage_error(self):
        result = subprocess.run(
            GPU_PARTITIONS + ['exporter', '--fixture', 'no-such-host',
                              '--once'],
            capture_output=True, text=True, cwd=REPO, timeout=120)
        self.assertEqual(2, result.returncode)
        self.assertIn('gpu-partitions exporter: error:', result.stderr)
        self.assertNotIn('Traceback', result.stderr)

    def test_missing_config_file_is_a_usage_error(self):
        result = subprocess.run(
            GPU_PARTITIONS + ['exporter', '--config-file',
                              '/nonexistent/cyborg.conf', '--once'],
            capture_output=True, text=True, cwd=REPO, timeout=120)
        self.assertEqual(2, result.returncode)
        self.assertIn('/nonexistent/cyborg.conf does not exist',
                      result.stderr)


class FlakyDriver:
    """A driver whose later scans fail."""

    def __init__(self, host_inventory, good_scans):
        self.host_inventory = host_inventory
        self.good_scans = good_scans

    def collect(self):
        if self.good_scans <= 0:
            raise RuntimeError('NVML: GPU is lost')
        self.good_scans -= 1
        return self.host_inventory


def one_gpu_host(healthy=True, in_use=1, allocated=None):
    handles = [inventory.AttachHandle(inventory.PCI, '0000:1b:00.%d' % i,
                                      in_use=i - 4 < in_use)
               for i in range(4, 7)]
    gpu = inventory.Gpu(
        address='0000:1b:00.0', vendor_id='10de', device_id='2330',
        model='NVIDIA H100 80GB HBM3', memory_mib=81559, numa_node=1,
        link_domain='0', healthy=healthy,
        slices=[inventory.Slice('1g.10gb', 'CUSTOM_MIG_1G_10GB', [],
                                handles, total=3, allocated=allocated)])
    return inventory.HostInventory(hostname='gpu-0', gpus=[gpu])


class MetricsTest(testtools.TestCase):

    def families(self, scanner):
        scanner.refresh()
        return {sample.name: sample for family in exporter.metric_families(
            scanner.scans, scanner.placement_usages())
            for sample in family.samples}

    def test_unhealthy_gpu_strands_its_free_units(self):
        # Placement was asked and holds nothing beyond the unit in use.
        scanner = exporter.Scanner(
            {'d': FlakyDriver(one_gpu_host(healthy=False, allocated=0), 1)},
            60)
        found = self.families(scanner)
        self.assertEqual(3, found[
            'gpu_partitions_provider_capacity_units'].value)
        self.assertEqual(1, found[
            'gpu_partitions_provider_offered_units'].value)
        self.assertEqual(2, found[
            'gpu_partitions_provider_stranded_units'].value)
        self.assertEqual(0, found['gpu_partitions_provider_free_units'].value)
        self.assertEqual(0, found['gpu_partitions_gpu_healthy'].value)
        self.assertEqual(2, found['gpu_partitions_gpu_stranded_units'].value)

    def test_failed_scan_keeps_the_last_good_one(self):
        clock = [1000.0]
        scanner = exporter.Scanner(
            {'d': FlakyDriver(one_gpu_host(), 1)}, 30,
            clock=lambda: clock[0])
        self.assertEqual(1, self.families(scanner)[
            'gpu_partitions_scan_success'].value)
        clock[0] += 31
        found = self.families(scanner)
        self.assertEqual(0, found['gpu_partitions_scan_success'].value)
        self.assertEqual(1000.0, found[
            'gpu_partitions_scan_timestamp_seconds'].value)
        self.assertEqual(2, found['gpu_partitions_provider_free_units'].value)

    def test_scans_at_most_once_per_interval(self):
        driver = FlakyDriver(one_gpu_host(), 1)
        clock = [0.0]
        scanner = exporter.Scanner({'d': driver}, 30, clock=lambda: clock[0])
        scanner.refresh()
        clock[0] = 29
        scanner.refresh()
        self.assertTrue(scanner.scans['d'].ok)

    def test_placement_usage_counts_when_above_the_hardware(self):
        name = placement_traits.provider_name('gpu-0', '0000:1b:00.0',
                                              '1g.10gb')
        scanner = exporter.Scanner(
            {'d': FlakyDriver(one_gpu_host(), 1)}, 60,
            usages=lambda host: {name: {'CUSTOM_MIG_1G_10GB': 2}})
        found = self.families(scanner)
        self.assertEqual(2, found[
            'gpu_partitions_provider_placement_used_units'].value)
        self.assertEqual(1, found[
            'gpu_partitions_provider_hardware_used_units'].value)
        self.assertEqual(2, found['gpu_partitions_provider_used_units'].value)
        self.assertEqual(1, found['gpu_partitions_provider_free_units'].value)

    def test_placement_failure_leaves_usage_out(self):
        def broken(hostname):
            raise ConnectionError('placement down')

        scanner = exporter.Scanner(
            {'d': FlakyDriver(one_gpu_host(), 1)}, 60, usages=broken)
        found = self.families(scanner)
        self.assertNotIn('gpu_partitions_provider_placement_used_units',
                         found)
        self.assertEqual(1, found['gpu_partitions_provider_used_units'].value)

    def test_layout_label(self):
        gpu = one_gpu_host().gpus[0]
        gpu = dataclasses.replace(gpu, slices=gpu.slices + [
            inventory.Slice('3g.40gb', 'CUSTOM_MIG_3G_40GB', [], [], 1)])
        self.assertEqual('1g.10gb*3,3g.40gb*1', exporter.layout_text(gpu))


class ReadOnlyDriverTest(testtools.TestCase):

    def test_writers_refuse(self):
        calls = {}

        class Driver:
            def __init__(self, hostname=None, apply_layout=None,
                         write_vgpu_type=None):
                calls.update(apply_layout=apply_layout,
                             write_vgpu_type=write_vgpu_type)

        command.read_only_driver(Driver, hostname='h')
        for writer in calls.values():
            self.assertRaises(command.ReadOnlyError, writer, '0000:1b:00.0')

    def test_driver_without_writers(self):
        class Driver:
            def __init__(self, hostname=None):
                self.hostname = hostname

        self.assertEqual('h', command.read_only_driver(
            Driver, hostname='h').hostname)


class ShippedDashboardAndAlertsTest(testtools.TestCase):
    """The example alert rules and dashboard use only exported metrics."""

    METRIC = re.compile(r'\bgpu_partitions_[a-z_]+')

    def exported(self):
        return {family.name for family in exporter.metric_families({})}

    def test_alert_rules(self):
        path = os.path.join(REPO, 'etc', 'prometheus',
                            'gpu-partitions-alerts.yaml')
        with open(path) as f:
            rules = yaml.safe_load(f)['groups'][0]['rules']
        names = {rule['alert'] for rule in rules}
        self.assertIn('GpuPartitionsGpuLost', names)
        self.assertIn('GpuPartitionsCapacityStranded', names)
        for rule in rules:
            used = set(self.METRIC.findall(rule['expr']))
            self.assertNotEqual(set(), used, rule['alert'])
            self.assertEqual(set(), used - self.exported(), rule['alert'])

    def test_dashboard(self):
        path = os.path.join(REPO, 'etc', 'grafana',
                            'gpu-partitions-dashboard.json')
        with open(path) as f:
            dashboard = json.load(f)
        expressions = [target['expr'] for panel in dashboard['panels']
                       for target in panel['targets']]
        self.assertGreater(len(expressions), 5)
        for expression in expressions:
            used = set(self.METRIC.findall(expression))
            self.assertNotEqual(set(), used, expression)
            self.assertEqual(set(), used - self.exported(), expression)
