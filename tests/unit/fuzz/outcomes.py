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
"""Counting fuzz outcomes the same way for every input surface.

Each input ends in one of four ways: a clear error (the surface's own
error type with a one-line message), a traceback (any other exception),
a right acceptance (an allow-listed case, with the reason it is right) or
a wrong silent acceptance. The tests assert no tracebacks and no wrong
acceptances; ``doc/source/reliability/inputs.inc`` gives the counts.
"""

import collections


class Outcomes:

    def __init__(self, surface):
        self.surface = surface
        self.counts = collections.Counter()
        self.tracebacks = []
        self.wrong = []
        self.accepted_because = collections.Counter()

    @property
    def tried(self):
        return sum(self.counts.values())

    def clear(self, message):
        if '\n' in message.strip() or not message.strip():
            self.traceback('unclear message %r' % message)
            return
        self.counts['clear'] += 1

    def traceback(self, what):
        self.counts['traceback'] += 1
        self.tracebacks.append(what)

    def accepted(self, what, reason=None):
        """Record an acceptance; ``reason`` None makes it a wrong one."""
        if reason is None:
            self.counts['wrong_acceptance'] += 1
            self.wrong.append(what)
        else:
            self.counts['right_acceptance'] += 1
            self.accepted_because[reason] += 1

    def known_open(self, what):
        """A wrong acceptance another branch owns and fixes: counted
        apart, named in the report, not asserted here.
        """
        self.counts['known_open'] += 1

    def summary(self):
        return ('%s: %d inputs, %d clear errors, %d tracebacks, %d right '
                'acceptances, %d wrong acceptances, %d known open' % (
                    self.surface, self.tried, self.counts['clear'],
                    self.counts['traceback'],
                    self.counts['right_acceptance'],
                    self.counts['wrong_acceptance'],
                    self.counts['known_open']))

    def check(self, test, minimum_tried):
        """Assert on ``test`` (a TestCase): enough inputs, no traceback,
        no wrong acceptance; the messages name the first offenders.
        """
        test.assertGreaterEqual(self.tried, minimum_tried, self.summary())
        test.assertEqual([], self.tracebacks[:10], self.summary())
        test.assertEqual([], self.wrong[:10], self.summary())
