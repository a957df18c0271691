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
"""The naming contract as gabbi YAML, against real Placement.

Each file of ``gabbits/`` holds one reference host's report (see
:mod:`tests.functional.gabbi_fixtures`) and asks Placement for it the way
Nova's scheduler does: ``GET /allocation_candidates?resources1=...&
required1=...``. The tests of one file run in order in one process
(``group_regex`` in ``.stestr.conf``).
"""

import os

from gabbi import driver
from placement.tests.functional.fixtures import gabbits as placement_fixtures

from tests.functional import gabbi_fixtures

TESTS_DIR = 'gabbits'


def load_tests(loader, tests, pattern):
    test_dir = os.path.join(os.path.dirname(__file__), TESTS_DIR)
    return driver.build_tests(test_dir, loader, host=None,
                              test_loader_name=__name__,
                              intercept=placement_fixtures.setup_app,
                              fixture_module=gabbi_fixtures)
