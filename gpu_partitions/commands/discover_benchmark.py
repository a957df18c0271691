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
"""``gpu-partitions benchmark discover``: the MIG driver's scan cost.

On the largest reference host with NVIDIA GPUs: NVML calls and CPU time of
one ``discover()`` of the MIG driver (the first one, which also reads the
static profile and vGPU type tables, and a steady-state one, which the
agent pays every cycle), then the Placement writes of the first report and
of a steady-state report cycle through the in-process cloud (real Cyborg
conductor, real Placement). The last line is one JSON object with
``discover_cpu_ms`` (steady state, median), ``nvml_calls`` (steady state)
and ``placement_writes_steady_state`` (target: zero).
"""

import json
import statistics
import tempfile
import time


def largest_nvidia_host():
    """The shipped host with the most NVIDIA GPUs and VFs."""
    from gpu_partitions import reference_hosts

    def size(host):
        nvml = host.data['nvml']
        if nvml is None:
            return (0, 0)
        vfs = sum(len(pci.get('virtfns', ()))
                  for pci in host.data['pci_devices'])
        return (len(nvml['devices']), vfs)

    hosts = [reference_hosts.load(name) for name in reference_hosts.names()]
    return max(hosts, key=lambda host: (size(host), host.name))


def discover(args):
    from cyborg_gpu_drivers import nvidia_mig
    from gpu_partitions.cloud import harness

    host = largest_nvidia_host()
    runs = 5 if args.quick else 25
    with tempfile.TemporaryDirectory() as directory:
        env = host.materialize(directory)
        driver = nvidia_mig.NvidiaMigDriver(
            hostname=host.hostname, nvml=env.nvml,
            sysfs_root=env.sysfs_root)

        def measured():
            env.nvml.reset_calls()
            started = time.process_time()
            devices = driver.discover()
            return (devices, (time.process_time() - started) * 1000.0,
                    env.nvml.total_calls)

        devices, first_ms, first_calls = measured()
        steady = [measured() for _ in range(runs)]
        steady_ms = statistics.median(cpu for _, cpu, _ in steady)
        steady_calls = steady[-1][2]
        deployables = sum(len(device.deployable_list) for device in devices)
        print('host %s: %d GPUs reported, %d providers'
              % (host.name, len(devices), deployables))
        print('first discover(): %.1f ms CPU, %d NVML calls'
              % (first_ms, first_calls))
        print('steady discover(): %.1f ms CPU (median of %d), %d NVML '
              'calls' % (steady_ms, runs, steady_calls))
        print('NVML calls by function (steady): %s' % json.dumps(
            dict(sorted(env.nvml.calls.items())), sort_keys=True))

        def cycles(cloud):
            first = cloud.add_gpu_host(host.hostname, driver.discover())
            again = cloud.report(host.hostname, driver.discover())
            return len(first), len(again)

        first_writes, steady_writes = harness.run_cloud(cycles)
    print('Placement writes: first report %d, steady-state report %d'
          % (first_writes, steady_writes))
    print(json.dumps({'discover_cpu_ms': round(steady_ms, 2),
                      'nvml_calls': steady_calls,
                      'placement_writes_steady_state': steady_writes,
                      'host': host.name,
                      'first_discover_cpu_ms': round(first_ms, 2),
                      'first_nvml_calls': first_calls,
                      'placement_writes_first_report': first_writes}))
    return 0
