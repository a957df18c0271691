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
"""Packing simulator: a fleet, a task trace and Nova's real scheduler
classes over an in-memory Placement.

* :mod:`.trace` reads the Alibaba ``openb`` node and pod files, strictly.
* :mod:`.fleet` maps trace GPU models onto our host kinds (MIG or
  time-sliced vGPU), lays out each GPU and maps a task's request onto our
  resource classes.
* :mod:`.placement` is the in-memory Placement: providers, inventories,
  usages, traits and allocation candidates.
* :mod:`.scheduler` runs one scheduling decision the way nova-scheduler
  does: candidates, ``HostState`` objects, ``HostFilterHandler``,
  ``HostWeightHandler``, claim of the first candidate of the best host.
* :mod:`.policies` names the compared policies and holds the baseline
  weighers (HAMi, FGD paper baselines, FGD).
* :mod:`.run` drives the protocols (FGD's arrival protocol, timed replay)
  and the offline bound; :mod:`.report` writes the table, JSON and plots.

See ``doc/source/simulator.rst``.
"""
