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
"""Seeded synthetic prompts and request arrival times.

Prompts are built from a fixed list of common English words, each of
which is one token in the usual BPE vocabularies, so ``input_len`` words
come close to ``input_len`` prompt tokens without a tokenizer on the
client; the exact count comes back in each response's ``usage``.

Arrival times follow ``vllm bench serve``: gaps drawn from a gamma
distribution with shape ``burstiness`` and mean ``1 / rate`` (burstiness
1 is a Poisson process), summed, then rescaled so the last request is sent
at exactly ``n / rate`` seconds.
"""

import dataclasses
import math

import numpy

_WORDS = (
    'the of and to in is was for on that with as by at from his an be '
    'are which this or had it were also first not but one their new has '
    'after its two have been who other they all time when more most up '
    'may into only over some many between would than year during three '
    'about under then part where later made these world city both used '
    'such while before state well known since each people her she there '
    'through school became can being against second them city several '
    'area until found around four early same own house north south'
).split()


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str
    input_len: int
    output_len: int


def _length(rng, nominal, range_ratio):
    """Uniform integer in [L(1-r), L(1+r)] as vLLM's random dataset."""
    if range_ratio <= 0:
        return nominal
    low = max(1, int(math.floor(nominal * (1 - range_ratio))))
    high = max(low, int(math.ceil(nominal * (1 + range_ratio))))
    return int(rng.integers(low, high + 1))


def make_prompts(num_prompts, input_len, output_len, seed=0,
                 range_ratio=0.0):
    """``num_prompts`` seeded prompts; the same seed gives the same list.

    Each prompt starts with its index so that no two share a prefix long
    enough to make prefix caching flatter the numbers.
    """
    if num_prompts < 1 or input_len < 1 or output_len < 1:
        raise ValueError('num_prompts, input_len and output_len must be '
                         'at least 1')
    if not 0 <= range_ratio < 1:
        raise ValueError('range ratio must be in [0, 1)')
    rng = numpy.random.default_rng(seed)
    prompts = []
    for index in range(num_prompts):
        in_len = _length(rng, input_len, range_ratio)
        out_len = _length(rng, output_len, range_ratio)
        words = rng.choice(_WORDS, size=max(in_len - 1, 0))
        text = ' '.join([str(index)] + list(words))
        prompts.append(Prompt(text, in_len, out_len))
    return prompts


def arrival_offsets(count, request_rate, burstiness=1.0, seed=0):
    """Send times in seconds from the start, one per request.

    ``request_rate`` ``inf`` sends everything at once; ``burstiness``
    ``inf`` gives evenly spaced requests.
    """
    if request_rate <= 0:
        raise ValueError('request rate must be positive (or inf)')
    if burstiness <= 0:
        raise ValueError('burstiness must be positive')
    if math.isinf(request_rate):
        return [0.0] * count
    if math.isinf(burstiness):
        gaps = [1.0 / request_rate] * count
    else:
        rng = numpy.random.default_rng(seed)
        gaps = rng.gamma(shape=burstiness,
                         scale=1.0 / (request_rate * burstiness),
                         size=count).tolist()
    offsets = list(numpy.cumsum(gaps))
    # Rescale so the run lasts n / rate whatever the draw (as vLLM does):
    # throughput then does not depend on the seed's luck.
    target = count / request_rate
    if offsets and offsets[-1] > 0:
        offsets = [offset * target / offsets[-1] for offset in offsets]
    return [float(offset) for offset in offsets]
