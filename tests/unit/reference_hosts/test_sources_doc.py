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
"""Every shipped reference host says where its values come from."""

import os
import re

import testtools

from gpu_partitions import reference_hosts

DOC = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'doc',
                   'source', 'reference-hosts.rst')
KINDS = ('*documented', '*recorded', '*illustrative*')


def sources_part():
    """The text of "Where the values come from"."""
    with open(DOC) as stream:
        text = stream.read()
    return text.split('Where the values come from\n')[1].split(
        'Adding a host\n')[0]


def sources_sections():
    """``{section title: text}`` of the per-host sections."""
    part = sources_part()
    sections = re.split(r'\n(``[^\n]+)\n-+\n', part)
    return dict(zip(sections[1::2], sections[2::2]))


class SourcesDocTest(testtools.TestCase):

    def test_every_host_has_a_section_saying_where_values_come_from(self):
        sections = sources_sections()
        for name in reference_hosts.names():
            titles = [title for title in sections
                      if '``%s``' % name in title]
            self.assertEqual(1, len(titles), name)
            body = sections[titles[0]]
            for kind in KINDS:
                self.assertIn(kind, body, '%s lacks %s values' % (name,
                                                                  kind))

    def test_every_document_cited_is_listed_with_its_address(self):
        part = sources_part()
        listed = dict(re.findall(r'^\[([A-Z0-9-]+)\]\n\s+(.+)$', part,
                                 re.M))
        self.assertTrue(listed)
        for label in set(re.findall(r'\[([A-Z][A-Z0-9-]+)\]', part)):
            self.assertIn(label, listed)
        for label in listed:
            block = part.split('[%s]\n' % label)[1].split('\n[')[0]
            self.assertIn('https://', block, label)
