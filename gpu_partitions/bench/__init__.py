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
"""In-guest inference benchmark for OpenAI-compatible servers.

Load generation and metrics follow vLLM's ``vllm bench serve`` so results
from a GPU slice can be laid beside results taken with vLLM's own tool.
Plain-data modules (:mod:`metrics`, :mod:`workload`, :mod:`prometheus`,
:mod:`compare`, :mod:`cloudinit`) have no I/O; :mod:`client`,
:mod:`loadgen`, :mod:`preflight` and :mod:`qualify` talk to servers, GPUs
and clouds; :mod:`results` writes files and plots; :mod:`stub` is the
scripted server the tests and :mod:`ceiling` (the harness's own limits)
run against.  ``guest/`` holds the files a benchmark guest installs.
"""
