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
"""NVIDIA vGPU type names and the operator's declared types, as plain data.

NVIDIA names a vGPU type ``<board>-<framebuffer GB><series>`` when it is
time-sliced (``NVIDIA L40S-4Q``, ``GRID T4-2B4``) and
``<board>-<GPU slices>-<framebuffer GB><series>[ME...]`` when a MIG GPU
instance backs it (``NVIDIA A100D-1-10C``, ``NVIDIA H100XM-1-10CME``).
The full name may hold spaces (``NVIDIA RTX Pro 6000 Blackwell DC-1-24Q``):
the last whitespace-separated token is the type. The series letter says
what the type is licensed for: ``A`` virtual applications, ``B`` virtual
PC, ``C`` compute, ``Q`` RTX workstation.

Declarations (option ``[nvidia_vgpu] vgpu_type``) say which type each
physical GPU should host. A time-sliced GPU hosts one type at a time unless
it runs in mixed-size (heterogeneous) mode; :func:`types_for_gpu` applies
that rule and names the declarations that break it.

With ``type_mode = follow_demand`` the allowed types (option
``[nvidia_vgpu] allowed_types``) stand in for the declarations: a new GPU
takes :func:`new_gpu_type`, and :func:`type_use` gives the policy of
:mod:`cyborg_gpu_drivers.retype` each GPU's use. The simulator's
on-demand vGPU GPUs are planned with the same functions.
"""

import dataclasses
import re

from cyborg_gpu_drivers import retype
import placement_traits

OPTION = 'nvidia_vgpu.vgpu_type'
ALLOWED_OPTION = 'nvidia_vgpu.allowed_types'

_TIME_SLICED = re.compile(
    r'^(?P<board>.+?)-(?P<gb>\d+)(?P<series>[ABCQ])(?P<heads>\d*)$')
_MIG_BACKED = re.compile(
    r'^(?P<board>.+?)-(?P<slices>\d+)-(?P<gb>\d+)(?P<series>[ABCQ])'
    r'(?P<extensions>[A-Z]*)$')
_PCI_SELECTOR = re.compile(r'^([0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:'
                           r'[0-9a-fA-F]{2}\.[0-7]$')


class DeclarationError(ValueError):
    """An invalid ``[nvidia_vgpu] vgpu_type`` value; the message says why."""


@dataclasses.dataclass(frozen=True)
class TypeName:
    """What a vGPU type's name says.

    ``short`` is the last token of the full name (``L40S-4Q``).
    ``series`` and ``framebuffer_gb`` are None when the name does not
    follow NVIDIA's scheme; ``gpu_slices`` is None for time-sliced types.
    """
    full: str
    short: str
    board: str | None = None
    series: str | None = None
    framebuffer_gb: int | None = None
    gpu_slices: int | None = None
    extensions: str = ''

    @property
    def known(self):
        return self.series is not None

    @property
    def mig_backed(self):
        return self.gpu_slices is not None


def parse_type_name(full_name):
    """A :class:`TypeName` for any non-empty name; never raises otherwise.

    ``NVIDIA A100D-1-10C`` is MIG-backed (1 slice, 10 GB, series C);
    ``NVIDIA L40S-48Q`` is time-sliced; ``GRID T4-2B4`` is time-sliced
    series B (the trailing digit counts display heads). A name outside the
    scheme gives a TypeName whose ``known`` is False.
    """
    full = ' '.join(str(full_name).split())
    short = placement_traits.vgpu_short_name(full)
    upper = short.upper()
    match = _MIG_BACKED.match(upper)
    if match:
        return TypeName(full=full, short=short, board=match.group('board'),
                        series=match.group('series'),
                        framebuffer_gb=int(match.group('gb')),
                        gpu_slices=int(match.group('slices')),
                        extensions=match.group('extensions'))
    match = _TIME_SLICED.match(upper)
    if match:
        return TypeName(full=full, short=short, board=match.group('board'),
                        series=match.group('series'),
                        framebuffer_gb=int(match.group('gb')))
    return TypeName(full=full, short=short)


def same_type(first, second):
    """True when two names (full or short) name the same type."""
    return (placement_traits.vgpu_short_name(first).upper() ==
            placement_traits.vgpu_short_name(second).upper())


# --- declarations ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Declaration:
    """``<selector>=<type>[,<type>...]``: a PCI address or a model name."""
    text: str
    address: str | None
    model: str | None
    types: tuple[str, ...]

    def matches(self, address, model):
        if self.address is not None:
            return self.address == address
        return _model_key(self.model) == _model_key(model)


def _model_key(model):
    return placement_traits.model_short_name(model or '').upper()


def parse_declaration(text, option=OPTION):
    """One option value; raises :class:`DeclarationError` naming
    ``option``.
    """
    selector, sep, types_text = str(text).partition('=')
    selector = selector.strip()
    # "L40S=," names no type, as "L40S=" does.
    types = tuple(name.strip() for name in types_text.split(',')
                  if name.strip())
    if not sep or not selector or not types:
        raise DeclarationError(
            '%s: %r is not "<PCI address or GPU model>=<vGPU type>[,<vGPU '
            'type>...]", e.g. "NVIDIA L40S=L40S-8Q" or '
            '"0000:17:00.0=L40S-4Q,L40S-8Q"' % (option, text))
    for name in types:
        parsed = parse_type_name(name)
        if not parsed.known:
            raise DeclarationError(
                '%s: %r in %r is not an NVIDIA vGPU type name; allowed: '
                '"<board>-<GB><series>" with series A, B, C or Q (e.g. '
                'L40S-8Q, A100D-20C)' % (option, name, text))
        if parsed.mig_backed:
            raise DeclarationError(
                '%s: %r in %r is a MIG-backed type; declare MIG layouts '
                'with nvidia_mig.layout instead; allowed here: time-sliced '
                'types "<board>-<GB><series>"' % (option, name, text))
    if _PCI_SELECTOR.match(selector):
        return Declaration(text=text,
                           address=placement_traits.pci_address(selector),
                           model=None, types=types)
    return Declaration(text=text, address=None, model=selector, types=types)


def parse_declarations(values, option=OPTION):
    """All option values; a GPU address or model declared twice is refused.
    """
    declarations = [parse_declaration(value, option) for value in values or ()]
    seen = {}
    for declaration in declarations:
        key = declaration.address or _model_key(declaration.model)
        if key in seen:
            raise DeclarationError(
                '%s: %r and %r declare types for the same GPU or model; '
                'allowed: one value per PCI address or model'
                % (option, seen[key], declaration.text))
        seen[key] = declaration.text
    return declarations


def declaration_for(declarations, address, model):
    """The declaration that applies to a GPU: its address wins over its
    model. None when no declaration names it.
    """
    by_address = [d for d in declarations if d.address is not None and
                  d.matches(address, model)]
    if by_address:
        return by_address[0]
    return next((d for d in declarations
                 if d.address is None and d.matches(address, model)), None)


@dataclasses.dataclass(frozen=True)
class TypeChoice:
    """The types a GPU should host, and why others were dropped.

    ``problems`` are sentences for the log, one per broken rule.
    """
    types: tuple[str, ...]
    problems: tuple[str, ...] = ()


def types_for_gpu(address, declared, hosted, mixed_size):
    """Which declared types a GPU may take, respecting one type per GPU.

    ``declared`` are the declared type names, ``hosted`` the short names
    of types the GPU already holds (VFs holding them, mdevs created).
    Without mixed-size mode a GPU hosts one type: the one it already
    holds wins over a different declaration, and of several declared
    types only the first is kept. Types already hosted are always
    reported by the caller, whatever this returns.
    """
    declared = list(dict.fromkeys(
        placement_traits.vgpu_short_name(name) for name in declared))
    if mixed_size or not declared:
        return TypeChoice(tuple(declared))
    problems = []
    hosted = sorted(set(hosted))
    if hosted:
        other = [name for name in declared
                 if not any(same_type(name, h) for h in hosted)]
        if other:
            problems.append(
                'GPU %s hosts vGPU type %s and is not in mixed-size mode, '
                'so the declared %s (%s) cannot be added; one type per '
                'physical GPU' % (address, ', '.join(hosted),
                                  ', '.join(other), OPTION))
        return TypeChoice(
            tuple(name for name in declared if name not in other),
            tuple(problems))
    if len(declared) > 1:
        problems.append(
            'GPU %s is not in mixed-size mode but %s declares %s; using '
            'only %s (enable mixed-size mode to host several types)'
            % (address, OPTION, ', '.join(declared), declared[0]))
    return TypeChoice((declared[0],), tuple(problems))


# --- capacity ---------------------------------------------------------------

def capped(in_use, free, limit):
    """Free units to offer so that in-use + free stays within ``limit``.

    Units in use are never dropped (Placement must keep them), even above
    the limit; ``limit`` None means no known limit.
    """
    if limit is None:
        return list(free)
    return list(free)[:max(limit - in_use, 0)]


def policy_name(type_name):
    """A vGPU type's name as :mod:`retype` compares kinds: short, upper
    case (``NVIDIA L40S-8q`` gives ``L40S-8Q``).
    """
    return placement_traits.vgpu_short_name(type_name).upper()


def type_use(address, type_name, allowed, units, used, changed_at,
             link_domain=None):
    """:class:`retype.GpuUse` of a GPU offering vGPU type ``type_name``;
    ``allowed``: the types it may take, empty when it may not move;
    ``link_domain``: the GPU's NVLink clique, None when it has none or it
    is unknown.
    """
    return retype.GpuUse(
        address=address, kind=policy_name(type_name),
        allowed=tuple(policy_name(name) for name in allowed),
        units=units, used=used, changed_at=changed_at,
        link_domain=link_domain)


def new_gpu_type(allowed):
    """The type a GPU hosting none takes when Placement shows no earlier
    choice of demand's: the first of ``allowed_types``.
    """
    return allowed[0]
