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
"""Nova scheduler filters, weighers and flavor extra-spec validators that
pack or spread GPU slices and keep multi-GPU requests inside one NVLink
clique or xGMI hive.

Plain data and pure functions (no Nova import; the packing simulator uses
them too):

* :mod:`nova_filters.gpu_view`: the GPUs of the candidate hosts;
* :mod:`nova_filters.scoring`: pack, spread, fragmentation, affinity.

Nova edges:

* :mod:`nova_filters.gpu_weigher` (``GpuPartitionWeigher``) and
  :mod:`nova_filters.gpu_filter` (``GpuPartitionFilter``);
* :mod:`nova_filters.ordering`: orders a host's allocation candidates;
* :mod:`nova_filters.request_view`: one view per scheduling request;
* :mod:`nova_filters.policy`: config, aggregate and flavor policy levels;
* :mod:`nova_filters.extra_specs`: ``gpu_partitions:*`` validators;
* :mod:`nova_filters.conf`: the ``[gpu_partitions_scheduler]`` options.

See ``doc/source/scheduler.rst``.
"""
