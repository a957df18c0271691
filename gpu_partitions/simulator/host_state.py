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
"""The Nova ``HostState`` of a simulated compute node.

The simulator and ``gpu-partitions benchmark scheduler`` build their hosts
here, so both run Nova's filters and weighers over the same values: an
enabled, up QEMU/KVM x86_64 service with allocation ratios of 1, as
nova-compute's resource tracker would report it. Only what the caller
knows differs: names, CPUs, memory and what is in use.
"""

from nova.scheduler import host_manager
from oslo_utils import timeutils

DISK_GB = 7000
# QEMU 9.2.0, as libvirt's driver encodes it.
HYPERVISOR_VERSION = 9002000


def host_state(name, uuid, vcpus, memory_mb, vcpus_used=0, memory_mb_used=0,
               num_instances=0, cell_uuid=None):
    """A ``HostState`` for compute node ``name`` (provider ``uuid``)."""
    now = timeutils.utcnow()
    state = host_manager.HostState(name, name, cell_uuid)
    state.uuid = uuid
    state.vcpus_total = vcpus
    state.vcpus_used = vcpus_used
    state.total_usable_ram_mb = memory_mb
    state.free_ram_mb = memory_mb - memory_mb_used
    state.total_usable_disk_gb = DISK_GB
    state.free_disk_mb = DISK_GB * 1024
    state.disk_mb_used = 0
    state.num_instances = num_instances
    state.num_io_ops = 0
    state.failed_builds = 0
    state.cpu_allocation_ratio = 1.0
    state.ram_allocation_ratio = 1.0
    state.disk_allocation_ratio = 1.0
    state.hypervisor_type = 'QEMU'
    state.hypervisor_version = HYPERVISOR_VERSION
    state.supported_instances = [('x86_64', 'kvm', 'hvm')]
    state.service = {'disabled': False, 'forced_down': False, 'host': name,
                     'created_at': now, 'updated_at': now,
                     'last_seen_up': now}
    state.updated = None
    state.stats = {}
    state.limits = {}
    state.aggregates = []
    state.instances = {}
    return state
