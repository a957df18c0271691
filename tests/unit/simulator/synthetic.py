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
"""A small synthetic trace in openb format, made from a fixed seed.

Not a copy of the Alibaba trace: node models and the mix of requests
follow its shape (many fractional one-GPU tasks, some CPU-only and some
multi-GPU tasks) at a size that runs in seconds.
"""

import os
import random

from gpu_partitions.simulator import trace

NODES = (('G2', 8, 96000, 393216, 4), ('G3', 8, 128000, 786432, 1),
         ('V100M32', 8, 96000, 786432, 1), ('T4', 2, 104000, 524288, 4),
         ('P100', 2, 64000, 262144, 2))
FRACTIONS = (100, 250, 320, 470, 500, 810, 1000)


def nodes_csv():
    rows = [','.join(trace.NODE_COLUMNS)]
    number = 0
    for model, gpus, cpu, memory, count in NODES:
        for _ in range(count):
            rows.append('synth-node-%03d,%d,%d,%d,%s'
                        % (number, cpu, memory, gpus, model))
            number += 1
    return '\n'.join(rows) + '\n'


def pods_csv(count=120, seed=7, timed=True):
    rng = random.Random(seed)
    columns = trace.POD_COLUMNS if timed else trace.SHORT_POD_COLUMNS
    rows = [','.join(columns)]
    clock = 0
    for number in range(count):
        draw = rng.random()
        if draw < 0.1:
            num_gpu, milli = 0, 0
        elif draw < 0.16:
            num_gpu, milli = rng.choice((2, 4, 8)), 1000
        else:
            num_gpu, milli = 1, rng.choice(FRACTIONS)
        cpu = rng.choice((2000, 4000, 8000, 12000))
        memory = rng.choice((8192, 16384, 32768))
        fields = ['synth-pod-%04d' % number, str(cpu), str(memory),
                  str(num_gpu), str(milli)]
        if timed:
            clock += rng.randint(1, 600)
            fields += ['', 'LS', 'Running', str(clock),
                       str(clock + rng.randint(600, 20000)), str(clock)]
        rows.append(','.join(fields))
    return '\n'.join(rows) + '\n'


def write(directory, count=120, seed=7, timed=True):
    """Node and pod files in ``directory``; their paths."""
    nodes = os.path.join(directory, 'openb_node_list_gpu_node.csv')
    pods = os.path.join(directory, 'openb_pod_list_synthetic.csv')
    with open(nodes, 'w') as stream:
        stream.write(nodes_csv())
    with open(pods, 'w') as stream:
        stream.write(pods_csv(count, seed, timed))
    return nodes, pods
