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
"""Pre-flight: is the endpoint up, which model, which GPU does the guest see.

A result always says what it ran on.  The GPU is read through the
vendor's command-line tool (``nvidia-smi``, ``amd-smi``) behind
:class:`CommandRunner`; parsing is plain functions over its text.  No GPU,
no tool, or a tool that fails gives ``{"present": false, "reason": ...}``,
never an exception.
"""

import asyncio
from importlib import metadata
import json
import os
import platform
import re
import shutil
import socket
import subprocess

import aiohttp

NVIDIA_QUERY = ('name', 'memory.total', 'driver_version', 'uuid',
                'pci.bus_id', 'mig.mode.current')
# "A100D-3-40C": MIG-backed vGPU (3 compute slices, 40 GB, C-series);
# "H100XM-80C": time-sliced vGPU with 80 GB.
_VGPU_PROFILE = re.compile(
    r'\b(?P<gpu>[A-Z]\d+[A-Z]*)-(?:(?P<slices>\d+)-)?(?P<gb>\d+)'
    r'(?P<series>[ABCQ])\b')
_MIG_PROFILE = re.compile(r'\b(?P<slices>\d+)g\.(?P<gb>\d+)gb\b')
# Compute slices per full GPU in MIG mode: 4 on A30, 7 on the others.
_SLICES_PER_GPU = {'A30': 4}


class CommandRunner:
    """Runs a vendor tool; answers its stdout, or None if it cannot."""

    def __init__(self, timeout=30):
        self.timeout = timeout

    def __call__(self, argv):
        if shutil.which(argv[0]) is None:
            return None
        try:
            done = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None


def parse_nvidia_query(text):
    """Rows of ``nvidia-smi --query-gpu=NVIDIA_QUERY --format=csv,...``."""
    gpus = []
    for line in (text or '').splitlines():
        fields = [field.strip() for field in line.split(',')]
        if len(fields) != len(NVIDIA_QUERY):
            continue
        row = dict(zip(NVIDIA_QUERY, fields))
        try:
            memory_mib = int(float(row['memory.total']))
        except ValueError:
            memory_mib = None
        gpus.append({'name': row['name'], 'memory_mib': memory_mib,
                     'driver_version': row['driver_version'],
                     'uuid': row['uuid'], 'pci_bus_id': row['pci.bus_id'],
                     'mig_mode': row['mig.mode.current']})
    return gpus


def parse_nvidia_details(text):
    """Virtualisation mode and vGPU licence state from ``nvidia-smi -q``."""
    details = {}
    for line in (text or '').splitlines():
        key, sep, value = line.partition(':')
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == 'Virtualization Mode':
            details['virtualization_mode'] = value
        elif key == 'License Status':
            details['licence_status'] = value
            details['licensed'] = value.lower().startswith('licensed')
        elif key == 'Product Name' and 'licensed_product' not in details \
                and 'Virtual' in value:
            details['licensed_product'] = value
    return details


def parse_mig_devices(text):
    """MIG profiles listed by ``nvidia-smi -L`` (e.g. ``['3g.40gb']``)."""
    return [match.group(0) for match in
            (_MIG_PROFILE.search(line) for line in (text or '').splitlines()
             if 'MIG' in line) if match]


def slice_shares(name, mig_profile=None):
    """``(profile, compute_share)`` that a GPU name or MIG profile implies.

    compute_share is the fraction of the GPU's compute slices, None when
    the name does not say (a time-sliced vGPU shares the whole GPU).
    """
    mig = _MIG_PROFILE.search(mig_profile or '')
    vgpu = _VGPU_PROFILE.search(name or '')
    family = vgpu.group('gpu')[:3] if vgpu else (name or '')
    per_gpu = next((n for key, n in _SLICES_PER_GPU.items()
                    if key in family), 7)
    if mig:
        return mig.group(0), int(mig.group('slices')) / per_gpu
    if vgpu:
        slices = vgpu.group('slices')
        return vgpu.group(0), (int(slices) / per_gpu if slices else None)
    return None, 1.0


def nvidia_gpus(runner):
    """GPUs ``nvidia-smi`` shows, or None when it is absent or fails."""
    query = runner(['nvidia-smi', '--query-gpu=' + ','.join(NVIDIA_QUERY),
                    '--format=csv,noheader,nounits'])
    gpus = parse_nvidia_query(query)
    if not gpus:
        return None
    details = parse_nvidia_details(runner(['nvidia-smi', '-q']))
    mig_devices = parse_mig_devices(runner(['nvidia-smi', '-L']))
    for gpu in gpus:
        gpu['vendor'] = 'nvidia'
        gpu.update(details)
        gpu['mig_devices'] = mig_devices
        gpu['profile'], gpu['compute_share'] = slice_shares(
            gpu['name'], mig_devices[0] if mig_devices else None)
    return gpus


def amd_gpus(runner):
    """GPUs ``amd-smi static --json`` shows (SR-IOV VFs included)."""
    text = runner(['amd-smi', 'static', '--asic', '--vram', '--json'])
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(data, dict):
        data = data.get('gpu_data', [data])
    gpus = []
    for entry in data or ():
        asic = entry.get('asic') or {}
        vram = entry.get('vram') or {}
        size = vram.get('size')
        if isinstance(size, dict):
            size = size.get('value')
        try:
            memory_mib = int(size)
        except (TypeError, ValueError):
            memory_mib = None
        gpus.append({'vendor': 'amd', 'name': asic.get('market_name'),
                     'memory_mib': memory_mib, 'profile': None,
                     'compute_share': None})
    return gpus or None


def describe_gpus(runner=None):
    """What GPUs the guest sees: ``{'present', 'gpus' | 'reason'}``."""
    runner = runner or CommandRunner()
    for probe in (nvidia_gpus, amd_gpus):
        gpus = probe(runner)
        if gpus:
            return {'present': True, 'gpus': gpus}
    return {'present': False,
            'reason': 'no nvidia-smi or amd-smi answered: no GPU visible '
                      'to this host, or its driver is not loaded'}


async def check_endpoint(base_url, model=None, timeout=10):
    """Health and served models; picks the first model when none given."""
    base = base_url.rstrip('/')
    report = {'base_url': base, 'health': None, 'models': [],
              'model': model}
    limit = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=limit) as session:
        try:
            async with session.get(base + '/health') as response:
                report['health'] = ('ok' if response.status == 200
                                    else 'HTTP %d' % response.status)
            async with session.get(base + '/v1/models') as response:
                if response.status == 200:
                    body = await response.json(content_type=None)
                    report['models'] = [m.get('id') for m in
                                        body.get('data') or ()]
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError,
                ValueError, AttributeError) as error:
            report['error'] = '%s: %s' % (type(error).__name__, error)
    if report['model'] is None and report['models']:
        report['model'] = report['models'][0]
    report['ready'] = bool(report['models']) and (
        model is None or model in report['models'])
    return report


def describe_client():
    """Where the load generator ran (its own limits bound the results)."""
    try:
        version = metadata.version('openstack-gpu-partitions')
    except metadata.PackageNotFoundError:
        version = 'unknown'
    return {'hostname': socket.gethostname(),
            'python': platform.python_version(),
            'cpu_count': os.cpu_count(),
            'harness_version': version,
            'aiohttp': aiohttp.__version__}
