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

One request, in the order it meets the modules:

* :mod:`nova_filters.summary_source`: Placement's provider summaries
  (Nova's own answer, or one extra query);
* :mod:`nova_filters.provider_summaries`: those summaries as a
  :mod:`nova_filters.gpu_view` (plain data, no Nova import), helped by
  :mod:`nova_filters.topology` (the trait cache);
* :mod:`nova_filters.request_state`: the view shared by the filter and the
  weigher and across a multi-create;
* :mod:`nova_filters.reservations`: units concurrent requests are about to
  claim;
* :mod:`nova_filters.allocations`, :mod:`nova_filters.scoring` and
  :mod:`nova_filters.ranking`: pure functions (the packing simulator uses
  them too) giving the order of a host's allocations;
* :mod:`nova_filters.candidates`: prunes or reorders a host's
  ``allocation_candidates``;
* :mod:`nova_filters.gpu_filter` (``GpuPartitionFilter``) and
  :mod:`nova_filters.gpu_weigher` (``GpuPartitionWeigher``), tied to the
  above by :mod:`nova_filters.request_view`.

Around them: :mod:`nova_filters.policy` (config, aggregate and flavor
policy levels), :mod:`nova_filters.workload_mix` (the learned workloads),
:mod:`nova_filters.extra_specs` (``gpu_partitions:*`` validators) and
:mod:`nova_filters.conf` (the ``[gpu_partitions_scheduler]`` options).

See ``doc/source/scheduler.rst``.
"""
