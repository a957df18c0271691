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
"""Which policy applies to one host for one request.

Three levels, each overriding the one before:

1. the ``[gpu_partitions_scheduler]`` options (:mod:`nova_filters.conf`);
2. the metadata of the host's aggregates, key ``gpu_partitions_<name>``
   (for example ``gpu_partitions_policy=spread``). When the host's
   aggregates disagree, the strictest affinity wins (required, then
   preferred, then none) and a pack/spread conflict keeps level 1;
3. the flavor's extra spec ``gpu_partitions:<name>`` (validated at
   nova-api by :mod:`nova_filters.extra_specs`). A flavor written before
   the validators were installed, or through an API microversion older
   than 2.86, may still carry a value outside the allowed set: case,
   surrounding blanks, invisible format characters (a zero-width space)
   and compatibility forms (full-width letters) are forgiven; anything
   else is logged, and for an affinity it counts as ``required``,
   because the flavor asked for an affinity we cannot read and dropping
   it silently could break a multi-GPU workload. A bad ``policy`` only
   loses a preference, so it falls back to the levels below. Keys get the
   same forgiveness (and ``-`` for ``_``); several keys for one name give
   the strictest affinity, or no flavor policy when they disagree; a key
   of the namespace that names nothing is logged. Aggregate values are
   forgiven alike and read by the same rule: an unreadable affinity is
   logged once and counts as ``required``, an unreadable ``policy`` is
   logged once and ignored.

The weight multiplier follows Nova's own pattern
(``nova.scheduler.utils.get_weight_multiplier``): aggregate key
``gpu_partitions_weight_multiplier``, smallest value when several.
"""

import unicodedata

from oslo_log import log as logging

from nova.scheduler.filters import utils as filters_utils

from nova_filters import conf

LOG = logging.getLogger(__name__)

FLAVOR_NAMESPACE = 'gpu_partitions'
AGGREGATE_PREFIX = 'gpu_partitions_'

POLICY = 'policy'
LINK_AFFINITY = 'link_affinity'
NUMA_AFFINITY = 'numa_affinity'

ALLOWED = {
    POLICY: conf.PLACEMENT_POLICIES,
    LINK_AFFINITY: conf.AFFINITY_POLICIES,
    NUMA_AFFINITY: conf.AFFINITY_POLICIES,
}
_STRICTNESS = {conf.REQUIRED: 2, conf.PREFERRED: 1, conf.NONE: 0}


def flavor_key(name):
    return '%s:%s' % (FLAVOR_NAMESPACE, name)


def aggregate_key(name):
    return AGGREGATE_PREFIX + name


def resolve(name, host_state, spec_obj):
    """The value of policy ``name`` for ``host_state`` and ``spec_obj``."""
    return resolver(name, spec_obj)(host_state)


def for_host(host_state, spec_obj):
    """``(policy, link_affinity, numa_affinity)`` for one host."""
    return (resolve(POLICY, host_state, spec_obj),
            resolve(LINK_AFFINITY, host_state, spec_obj),
            resolve(NUMA_AFFINITY, host_state, spec_obj))


def resolver(name, spec_obj):
    """:func:`resolve` for one request: a function of the host state
    that reads the option and the flavor once, not once per host.
    """
    allowed = ALLOWED[name]
    flavor_value = _flavor_value(name, spec_obj)
    if flavor_value is not None:
        return lambda host_state: flavor_value
    default = getattr(conf.CONF.gpu_partitions_scheduler, name)

    def for_host(host_state):
        # Most hosts: no aggregate, nothing to read (asked of thousands
        # of hosts a request, so without a further call).
        if not getattr(host_state, 'aggregates', True):
            return default
        return _from_aggregates(name, host_state, allowed, default)
    return for_host


_MULTIPLIER = conf.weight_multiplier_type()


def weight_multiplier(host_state, default=None):
    """The smallest valid ``gpu_partitions_weight_multiplier`` of the
    host's aggregates, else ``default`` (None: the option, read now).

    As Nova's ``get_weight_multiplier``, but a value that is not a finite
    number within the option's bounds (``nan``, ``inf``, ``1e309``) is
    ignored with a warning: one would turn every weight into nan.
    """
    if default is None:
        default = conf.CONF.gpu_partitions_scheduler.weight_multiplier
    if not getattr(host_state, 'aggregates', True):
        return default
    key = aggregate_key('weight_multiplier')
    try:
        values = filters_utils.aggregate_values_from_key(host_state, key)
    except (AttributeError, TypeError):
        return default
    valid = []
    for value in values:
        try:
            valid.append(_MULTIPLIER(value))
        except (TypeError, ValueError) as error:
            LOG.warning('Ignoring aggregate metadata %(key)s=%(value)r of '
                        'host %(host)s: %(error)s.',
                        {'key': key, 'value': value, 'error': error,
                         'host': getattr(host_state, 'host', '?')})
    return min(valid) if valid else default


_WARNED = set()


def _warn_once(message, values, key=None):
    """Log ``message`` once per message and values (or ``key``, when
    given): the filter asks for every host.
    """
    key = (message, repr(sorted(values.items())) if key is None else key)
    if key not in _WARNED:
        _WARNED.add(key)
        LOG.warning(message, values)


def _flavor_specs(spec_obj):
    """``{name: [raw values]}`` of the flavor's keys in our namespace.

    A key is matched forgiving case, surrounding blanks and ``-`` for
    ``_`` (``GPU_Partitions:Link-Affinity ``), since nova-api refuses
    such keys only from microversion 2.86 on: an operator who wrote one
    before meant ours, and ignoring it would drop a required affinity in
    silence. A key of the namespace naming no policy is logged.
    """
    found = {}
    for key, raw in flavor_extra_specs(spec_obj).items():
        namespace, _, name = _canonical(str(key)).replace(
            '-', '_').partition(':')
        if namespace.strip() != FLAVOR_NAMESPACE:
            continue
        if name.strip() in ALLOWED:
            found.setdefault(name.strip(), []).append(raw)
        else:
            _warn_once('Flavor extra spec %(key)r is not one of ours '
                       '(%(known)s); ignored.',
                       {'key': key, 'known': ', '.join(
                           flavor_key(known) for known in sorted(ALLOWED))})
    return found


def _flavor_value(name, spec_obj):
    """The flavor's value of policy ``name``, None when it sets none.

    Several keys for one policy (``link_affinity`` and ``LINK_AFFINITY``)
    give the strictest affinity; policies that disagree give none.
    """
    raws = _flavor_specs(spec_obj).get(name)
    if not raws:
        return None
    values = {_one_flavor_value(name, raw) for raw in raws}
    if len(values) == 1:
        return values.pop()
    value = None if name == POLICY else max(values, key=_STRICTNESS.get)
    _warn_once('Flavor extra specs give %(key)s the values %(raws)r: '
               '%(effect)s.',
               {'key': flavor_key(name), 'raws': raws,
                'effect': 'using "%s"' % value if value else
                'using the configured and aggregate policy'})
    return value


def _one_flavor_value(name, raw):
    allowed = ALLOWED[name]
    value = _canonical(raw) if isinstance(raw, str) else raw
    if value in allowed:
        return value
    fallback = conf.REQUIRED if allowed is conf.AFFINITY_POLICIES else None
    _warn_once('Flavor extra spec %(key)s=%(raw)r is not one of '
               '%(allowed)s (nova-api validates it only from microversion '
               '2.86 on): %(effect)s.',
               {'key': flavor_key(name), 'raw': raw,
                'allowed': ', '.join(allowed),
                'effect': ('treating it as "required"' if fallback else
                           'using the configured and aggregate policy')})
    return fallback


def _canonical(text):
    """``text`` as keys and values are compared: compatibility forms
    folded (NFKC: full-width letters, no-break spaces), invisible format
    characters (zero-width space, soft hyphen) dropped, blanks stripped,
    lower case. Plain ASCII, nearly every value, skips the Unicode work.
    """
    if not text.isascii():
        text = ''.join(char for char in unicodedata.normalize('NFKC', text)
                       if unicodedata.category(char) != 'Cf')
    return text.strip().lower()


def flavor_extra_specs(spec_obj):
    try:
        return spec_obj.flavor.extra_specs or {}
    except (AttributeError, NotImplementedError, ValueError):
        # No flavor on the spec (old callers, some move operations).
        return {}


def max_numa_nodes(spec_obj):
    """Number of NUMA cells the instance has, or None without topology."""
    try:
        topology = spec_obj.numa_topology
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if topology is None or not topology.cells:
        return None
    return len(topology.cells)


def _from_aggregates(name, host_state, allowed, default):
    key = aggregate_key(name)
    try:
        values = filters_utils.aggregate_values_from_key(host_state, key)
    except (AttributeError, TypeError):
        return default
    # Forgiven as in flavors (see _canonical).
    given = {_canonical(str(v)) for v in values}
    valid = given & set(allowed)
    if valid != given:
        # As in flavors: an operator who set an affinity we cannot read
        # asked for one, and dropping it could break multi-GPU workloads.
        fallback = conf.REQUIRED if allowed is conf.AFFINITY_POLICIES \
            else None
        if fallback:
            valid.add(fallback)
        # Once per value, not once per host and request: a bad value on
        # an aggregate of thousands of hosts is met thousands of times.
        _warn_once('Aggregate metadata %(key)s=%(values)s (first met on '
                   'host %(host)s, logged once) is not one of '
                   '%(allowed)s: %(effect)s.',
                   {'key': key, 'values': sorted(map(str, values)),
                    'host': getattr(host_state, 'host', '?'),
                    'allowed': ', '.join(allowed),
                    'effect': ('treating it as "required"' if fallback
                               else 'ignored')},
                   key=(key, tuple(sorted(given - valid))))
    if not valid:
        return default
    if len(valid) == 1:
        return valid.pop()
    if name == POLICY:
        return default
    return max(valid, key=_STRICTNESS.get)
