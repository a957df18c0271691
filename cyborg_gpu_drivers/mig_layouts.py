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
"""Declared MIG layouts: parsing, choice per GPU and placement planning.

An operator declares layouts with ``[nvidia_mig] layout`` values of the
form ``<selector>=<layout>``:

* ``<selector>`` is a GPU's PCI address (``0000:1b:00.0``, any form
  :func:`placement_traits.pci_address` takes) or a model name as NVML
  gives it, with or without the vendor word (``NVIDIA H100 80GB HBM3``
  or ``H100 80GB HBM3``); an address wins over a model;
* ``<layout>`` is ``all-<profile>`` (as many instances of one profile as
  the GPU holds, e.g. ``all-1g.10gb``) or ``<profile>:<count>,...``
  (``3g.40gb:1,1g.10gb:4``).

Profiles are checked against the GPU model's own profile table (names and
``(start, size)`` placements from NVML), and a plan of ``(profile id,
start)`` is built that respects the memory-slot geometry, the compute
slices and each profile's instance limit. Nothing here does I/O.
"""

import collections
import dataclasses

import placement_traits

OPTION = '[nvidia_mig] layout'
ON_DEMAND_OPTION = '[nvidia_mig] on_demand_profiles'
ALL_PREFIX = 'all-'


class LayoutError(ValueError):
    """An invalid layout declaration; the message names the option."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """A parsed layout.

    ``fill`` is set for ``all-<profile>``, else ``counts`` lists
    ``(profile name, count)``.
    """
    text: str
    fill: str | None = None
    counts: tuple = ()


@dataclasses.dataclass(frozen=True)
class Declaration:
    address: str | None
    model: str | None
    #: A :class:`Layout`, or ``{profile: weight}`` for on-demand GPUs.
    layout: object


def parse_layout(text):
    text = text.strip()
    if text.lower().startswith(ALL_PREFIX):
        profile = text[len(ALL_PREFIX):].strip()
        if not profile:
            raise LayoutError('%s: %r names no profile after "all-"'
                              % (OPTION, text))
        return Layout(text=text, fill=profile)
    counts = collections.OrderedDict()
    for item in text.split(','):
        profile, sep, count = item.strip().rpartition(':')
        if not sep or not profile.strip() or not count.strip().isdecimal() \
                or int(count) < 1:
            raise LayoutError(
                '%s: %r is not a layout; allowed forms are '
                '"all-<profile>" (e.g. all-1g.10gb) or '
                '"<profile>:<count>,..." (e.g. 3g.40gb:1,1g.10gb:4)'
                % (OPTION, text))
        profile = profile.strip()
        counts[profile] = counts.get(profile, 0) + int(count)
    return Layout(text=text, counts=tuple(counts.items()))


def parse_declarations(values, parse=None, option=OPTION,
                       example='3g.40gb:1,1g.10gb:4'):
    """Parse every ``<selector>=<value>`` value of an option.

    ``parse`` turns the value after ``=`` into what is declared
    (:func:`parse_layout` by default). Raises :class:`LayoutError`
    naming the option and the allowed forms; a selector declared twice is
    refused too.
    """
    parse = parse or parse_layout
    declarations = []
    seen = set()
    for value in values or ():
        selector, sep, declared = value.partition('=')
        selector = selector.strip()
        if not sep or not selector or not declared.strip():
            raise LayoutError(
                '%s: %r must be <PCI address or GPU model>=<value>, e.g. '
                '"0000:1b:00.0=%s"' % (option, value, example))
        try:
            address, model = placement_traits.pci_address(selector), None
        except placement_traits.InvalidName:
            address, model = None, _model_key(selector)
        key = address or model
        if key in seen:
            raise LayoutError('%s: %r is declared more than once'
                              % (option, selector))
        seen.add(key)
        declarations.append(Declaration(address, model, parse(declared)))
    return declarations


def parse_profile_weights(text):
    """``1g.10gb:2,3g.40gb`` gives ``{'1g.10gb': 2.0, '3g.40gb': 1.0}``."""
    weights = {}
    for item in text.split(','):
        profile, sep, weight = item.strip().partition(':')
        profile = profile.strip()
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            value = None
        if not profile or value is None or not 0 < value < float('inf') \
                or profile in weights:
            raise LayoutError(
                '%s: %r is not a list of profiles; the form is '
                '"<profile>[:<positive weight>],...", each profile once '
                '(e.g. 1g.10gb:2,3g.40gb,7g.80gb)'
                % (ON_DEMAND_OPTION, text))
        weights[profile] = value
    return weights


def parse_on_demand(values):
    """The ``[nvidia_mig] on_demand_profiles`` declarations."""
    return parse_declarations(values, parse_profile_weights,
                              ON_DEMAND_OPTION, '1g.10gb:2,3g.40gb,7g.80gb')


def _model_key(model):
    return placement_traits.model_short_name(model).casefold()


def declaration_for(declarations, address, model):
    """What is declared for a GPU (address first, then model), or None."""
    by_model = None
    for declaration in declarations:
        if declaration.address == address:
            return declaration.layout
        if declaration.model is not None and model and \
                declaration.model == _model_key(model):
            by_model = declaration.layout
    return by_model


def plan(layout, profiles, where='GPU'):
    """``[(profile id, start)]`` realising ``layout`` on a GPU.

    ``profiles`` is the GPU model's table (objects with ``id``, ``name``,
    ``slice_count``, ``instance_count``, ``placements``). Big profiles
    are placed first; a layout that does not fit raises
    :class:`LayoutError` naming the option and the allowed profiles.
    """
    by_name = {profile.name: profile for profile in profiles}
    wanted = [layout.fill] if layout.fill else [n for n, _ in layout.counts]
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise LayoutError(
            '%s: %s for %s names unknown MIG profile(s) %s; allowed: %s'
            % (OPTION, layout.text, where, ', '.join(unknown),
               ', '.join(sorted(by_name))))
    total_slices = max(profile.slice_count for profile in profiles)
    if layout.fill:
        profile = by_name[layout.fill]
        for count in range(profile.instance_count, 0, -1):
            found = _place([profile] * count, total_slices)
            if found is not None:
                return found
        raise LayoutError('%s: %s does not fit on %s'
                          % (OPTION, layout.text, where))
    instances = []
    for name, count in layout.counts:
        profile = by_name[name]
        if count > profile.instance_count:
            raise LayoutError(
                '%s: %s asks %d x %s on %s; at most %d allowed'
                % (OPTION, layout.text, count, name, where,
                   profile.instance_count))
        instances.extend([profile] * count)
    found = _place(instances, total_slices)
    if found is None:
        raise LayoutError(
            '%s: %s does not fit on %s (compute slices or memory '
            'placements overlap); allowed placements: %s'
            % (OPTION, layout.text, where, '; '.join(
                '%s at %s' % (p.name, ','.join(
                    '%d+%d' % placement for placement in p.placements))
                for p in profiles if p.name in wanted)))
    return found


def _place(instances, total_slices):
    """Depth-first search of non-overlapping placements, big first."""
    if sum(profile.slice_count for profile in instances) > total_slices:
        return None
    ordered = sorted(instances, key=lambda p: (-p.slice_count, p.id))
    chosen = []

    def search(position, used):
        if position == len(ordered):
            return True
        profile = ordered[position]
        for start, size in profile.placements:
            slots = set(range(start, start + size))
            if slots & used:
                continue
            chosen.append((profile.id, start))
            if search(position + 1, used | slots):
                return True
            chosen.pop()
        return False

    return list(chosen) if search(0, frozenset()) else None


def matches(plan_, gpu_instances):
    """True when the existing complete GPU instances are exactly the plan.

    Compared as multisets of ``(profile id, start)``.
    """
    existing = collections.Counter(
        (gi.profile_id, gi.start) for gi in gpu_instances)
    return existing == collections.Counter(plan_)
