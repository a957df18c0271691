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
"""Partition metrics for Prometheus, from the drivers' scans.

:class:`Scanner` runs the drivers' scans (each driver's ``collect()``, the
same scan ``discover()`` reports to Cyborg) at most once per interval and
keeps, per driver, the last good :class:`HostInventory`.
:func:`metric_families` turns those, plus Placement's usages of the host's
providers when a cloud is given, into Prometheus metric families.
:class:`Collector` ties the two for ``prometheus_client``.

Units are counted per provider (one Placement provider per slice kind on a
GPU, named as :func:`placement_traits.provider_name` names it):

* capacity: the units the hardware has (``Slice.total``);
* offered: what the report gives Placement (all of them on a healthy GPU;
  on an unhealthy one those in use or allocated in Placement, all of them
  when the driver could not ask Placement);
* used: the larger of the units the hardware shows busy and Placement's
  usage (Placement's usage counts guests being built that the hardware
  does not show yet; the hardware counts units Placement does not know);
* free: offered minus used, never below 0;
* stranded: capacity minus offered, units the hardware has but Placement
  may not hand out (a lost or unhealthy GPU). ``CapacityStranded`` in the
  example alert rules fires on it.
"""

import threading
import time

from prometheus_client import core

from cyborg_gpu_drivers import inventory
import placement_traits

PREFIX = 'gpu_partitions_'

GPU_LABELS = ('host', 'gpu', 'driver')
PROVIDER_LABELS = ('host', 'gpu', 'provider', 'resource_class')


def _label(value):
    return '' if value is None else str(value)


def _gpu_values(hostname, gpu, driver):
    return (hostname, gpu.address, driver)


def used_units(slice_, placement_used):
    """Units in use: the hardware's busy handles or Placement's usage."""
    return max(slice_.in_use, placement_used or 0)


def layout_text(gpu):
    """The GPU's partitioning in one label: ``1g.10gb*3,3g.40gb*1``."""
    return ','.join('%s*%d' % (slice_.name, slice_.total)
                    for slice_ in sorted(gpu.slices, key=lambda s: s.name))


def metric_families(scans, usages=None):
    """Prometheus metric families of the scanned hosts.

    :param scans: ``{driver name: DriverScan}``.
    :param usages: ``{provider name: {resource class: used}}`` from
                   Placement, or None when no cloud is read.
    """
    def gauge(name, documentation, labels):
        return core.GaugeMetricFamily(PREFIX + name, documentation,
                                      labels=labels)

    scan_ok = gauge('scan_success',
                    'Whether the last scan of the driver succeeded (1) or '
                    'failed (0, the metrics show the last good scan).',
                    ['driver'])
    scan_time = gauge('scan_timestamp_seconds',
                      'When the driver last scanned successfully, Unix '
                      'time.', ['driver'])
    scan_duration = gauge('scan_duration_seconds',
                          'How long the last scan of the driver took.',
                          ['driver'])
    gpu_info = gauge('gpu_info',
                     'One GPU: model, PCI ids, NUMA node, NVLink clique or '
                     'xGMI hive ("" when none), partitioning; value 1.',
                     GPU_LABELS + ('model', 'vendor_id', 'device_id',
                                   'numa_node', 'link_domain', 'layout'))
    gpu_healthy = gauge('gpu_healthy',
                        '1 when the GPU is healthy, 0 when it is lost or '
                        'failing (only its units in use or allocated stay '
                        'offered).',
                        GPU_LABELS)
    gpu_stub = gauge('gpu_stub',
                     '1 when the GPU could not be read and is reported as '
                     'a Cyborg stub (what Placement holds for it is kept).',
                     GPU_LABELS)
    gpu_memory = gauge('gpu_memory_bytes', 'Memory of the GPU.', GPU_LABELS)
    gpu_capacity = gauge('gpu_capacity_units',
                         'Units of every provider of the GPU the hardware '
                         'has.', GPU_LABELS)
    gpu_used = gauge('gpu_used_units', 'Units of the GPU in use.',
                     GPU_LABELS)
    gpu_free = gauge('gpu_free_units',
                     'Units of the GPU Placement may still hand out.',
                     GPU_LABELS)
    gpu_stranded = gauge('gpu_stranded_units',
                         'Units of the GPU the hardware has but Placement '
                         'may not hand out (unhealthy GPU).', GPU_LABELS)
    provider_info = gauge('provider_info',
                          'One provider: its slice kind (MIG profile, vGPU '
                          'type or VF kind); value 1.',
                          PROVIDER_LABELS + ('kind',))
    capacity = gauge('provider_capacity_units',
                     'Units of the provider the hardware has.',
                     PROVIDER_LABELS)
    offered = gauge('provider_offered_units',
                    'Units of the provider reported to Placement as '
                    'inventory.', PROVIDER_LABELS)
    used = gauge('provider_used_units',
                 'Units of the provider in use: the larger of the hardware\'s '
                 'busy units and Placement\'s usage.', PROVIDER_LABELS)
    hardware_used = gauge('provider_hardware_used_units',
                          'Units of the provider the hardware shows busy.',
                          PROVIDER_LABELS)
    placement_used = gauge('provider_placement_used_units',
                           'Units of the provider allocated in Placement '
                           '(only when the exporter reads a cloud).',
                           PROVIDER_LABELS)
    free = gauge('provider_free_units',
                 'Units of the provider Placement may still hand out.',
                 PROVIDER_LABELS)
    stranded = gauge('provider_stranded_units',
                     'Units of the provider the hardware has but Placement '
                     'may not hand out (unhealthy GPU).', PROVIDER_LABELS)

    for driver, scan in sorted(scans.items()):
        scan_ok.add_metric([driver], 1 if scan.ok else 0)
        scan_duration.add_metric([driver], scan.duration)
        if scan.inventory is None:
            continue
        scan_time.add_metric([driver], scan.timestamp)
        hostname = scan.inventory.hostname
        for gpu in sorted(scan.inventory.gpus, key=lambda g: g.address):
            values = _gpu_values(hostname, gpu, driver)
            gpu_info.add_metric(values + (
                gpu.model, gpu.vendor_id, gpu.device_id,
                _label(gpu.numa_node), _label(gpu.link_domain),
                layout_text(gpu)), 1)
            gpu_healthy.add_metric(values, 1 if gpu.healthy else 0)
            gpu_stub.add_metric(values, 1 if gpu.stub else 0)
            gpu_memory.add_metric(values, gpu.memory_mib * 1024 * 1024)
            totals = dict.fromkeys(('capacity', 'used', 'free', 'stranded'),
                                   0)
            for slice_ in sorted(gpu.slices, key=lambda s: s.name):
                name = placement_traits.provider_name(
                    hostname, gpu.address, slice_.name)
                labels = (hostname, gpu.address, name,
                          slice_.resource_class)
                in_placement = None
                if usages is not None:
                    in_placement = usages.get(name, {}).get(
                        slice_.resource_class, 0)
                    placement_used.add_metric(labels, in_placement)
                offer = inventory.offered_total(gpu, slice_)
                busy = used_units(slice_, in_placement)
                provider_info.add_metric(labels + (slice_.name,), 1)
                capacity.add_metric(labels, slice_.total)
                offered.add_metric(labels, offer)
                hardware_used.add_metric(labels, slice_.in_use)
                used.add_metric(labels, busy)
                free.add_metric(labels, max(offer - busy, 0))
                stranded.add_metric(labels, slice_.total - offer)
                totals['capacity'] += slice_.total
                totals['used'] += busy
                totals['free'] += max(offer - busy, 0)
                totals['stranded'] += slice_.total - offer
            gpu_capacity.add_metric(values, totals['capacity'])
            gpu_used.add_metric(values, totals['used'])
            gpu_free.add_metric(values, totals['free'])
            gpu_stranded.add_metric(values, totals['stranded'])
    return [scan_ok, scan_time, scan_duration, gpu_info, gpu_healthy,
            gpu_stub, gpu_memory, gpu_capacity, gpu_used, gpu_free,
            gpu_stranded, provider_info, capacity, offered, used,
            hardware_used, placement_used, free, stranded]


class DriverScan:
    """The state of one driver's scans: the last good inventory."""

    def __init__(self):
        self.inventory = None
        self.ok = False
        self.timestamp = 0.0
        self.duration = 0.0


class Scanner:
    """Runs ``collect()`` of each driver at most once per ``interval``.

    :param drivers: ``{name: driver}``, drivers with ``collect()``.
    :param usages: a callable returning Placement's usages for a hostname
                   (``{provider name: {rc: used}}``), or None.
    A driver whose scan raises keeps its last good inventory and shows
    ``gpu_partitions_scan_success 0``; Placement failing leaves the
    Placement usage out of that scrape.
    """

    def __init__(self, drivers, interval, usages=None, log=None,
                 clock=time.time):
        self._drivers = dict(drivers)
        self._interval = interval
        self._usages = usages
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._scanned_at = None
        self.scans = {name: DriverScan() for name in self._drivers}

    def refresh(self):
        """Scan again if the last scan is older than the interval."""
        with self._lock:
            now = self._clock()
            if (self._scanned_at is not None
                    and now - self._scanned_at < self._interval):
                return
            self._scanned_at = now
            for name, driver in sorted(self._drivers.items()):
                self._scan(name, driver)

    def _scan(self, name, driver):
        scan = self.scans[name]
        started = time.monotonic()
        try:
            result = driver.collect()
        except Exception as error:
            scan.ok = False
            if self._log:
                self._log('%s: scan failed, keeping the last good scan: %s'
                          % (name, error))
        else:
            scan.inventory = result
            scan.ok = True
            scan.timestamp = self._clock()
        scan.duration = time.monotonic() - started

    def placement_usages(self):
        if self._usages is None:
            return None
        hostnames = {scan.inventory.hostname for scan in self.scans.values()
                     if scan.inventory is not None}
        usages = {}
        try:
            for hostname in sorted(hostnames):
                usages.update(self._usages(hostname))
        except Exception as error:
            if self._log:
                self._log('Placement usages unavailable: %s' % error)
            return None
        return usages


class Collector:
    """A ``prometheus_client`` collector over a :class:`Scanner`."""

    def __init__(self, scanner):
        self._scanner = scanner

    def collect(self):
        self._scanner.refresh()
        return metric_families(self._scanner.scans,
                               self._scanner.placement_usages())

    def describe(self):
        # No scan at registration time.
        return []
