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
"""cloud-init user-data for a vLLM benchmark guest.

Two forms: for the diskimage-builder image (``elements/``), which already
has the driver, vLLM and ``vllm.service``, the user-data only pins the
per-guest settings (``/etc/vllm/vllm.env``) and the vGPU licence token;
for a stock Ubuntu cloud image it also carries the launcher, the unit and
a first-boot script that installs the driver and vLLM (slow, and it needs
the network: the image is the reference, this is the fallback).
"""

import os
import re
import shlex

import yaml

GUEST_DIR = os.path.join(os.path.dirname(__file__), 'guest')
# The vLLM release the image and the stock-image setup pin by default.
DEFAULT_VLLM_VERSION = '0.33.0'
LICENCE_TOKEN_PATH = (
    '/etc/nvidia/ClientConfigToken/client_configuration_token.tok')
# Nova caps user-data at 65535 bytes once base64-encoded.
MAX_USER_DATA_BYTES = 65535 * 3 // 4
SETTINGS = ('VLLM_MODEL', 'VLLM_SERVED_MODEL_NAME', 'VLLM_PORT',
            'VLLM_MAX_NUM_SEQS', 'VLLM_MAX_NUM_BATCHED_TOKENS',
            'VLLM_MAX_MODEL_LEN', 'VLLM_KV_CACHE_MEMORY_BYTES',
            'VLLM_GPU_MEMORY_UTILIZATION', 'VLLM_API_KEY',
            'VLLM_EXTRA_ARGS', 'VLLM_ENGINE', 'VLLM_CPU_THREADS')
# Settings a comparable benchmark must pin (vLLM derives them otherwise).
PINNED = ('VLLM_MAX_NUM_SEQS', 'VLLM_MAX_NUM_BATCHED_TOKENS',
          'VLLM_MAX_MODEL_LEN')
_SAFE_VALUE = re.compile(r'^[A-Za-z0-9_./:=@+, -]*$')


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (scripts, env files) as literal blocks."""


def _str(dumper, value):
    style = '|' if '\n' in value else None
    return dumper.represent_scalar('tag:yaml.org,2002:str', value,
                                   style=style)


_Dumper.add_representer(str, _str)


def guest_file(name):
    with open(os.path.join(GUEST_DIR, name)) as stream:
        return stream.read()


def env_text(settings):
    """``KEY='value'`` lines; refuses unknown keys and unsafe values."""
    lines = []
    for key, value in settings.items():
        if key not in SETTINGS:
            raise ValueError('unknown setting %s; allowed: %s'
                             % (key, ', '.join(SETTINGS)))
        text = str(value)
        if not _SAFE_VALUE.match(text):
            raise ValueError('setting %s=%r: only letters, digits, spaces '
                             'and _./:=@+,- are allowed' % (key, text))
        lines.append("%s='%s'" % (key, text))
    return '\n'.join(lines) + '\n'


def render(settings, stock_image=False, licence_token=None,
           driver_url=None, vllm_version=DEFAULT_VLLM_VERSION,
           pip_args=''):
    """The ``#cloud-config`` text for one guest."""
    missing = [key for key in ('VLLM_MODEL',) + PINNED
               if not settings.get(key)]
    if missing:
        raise ValueError('cloud-init settings need %s' % ', '.join(missing))
    files = [{'path': '/etc/vllm/vllm.env', 'permissions': '0644',
              'content': env_text(settings)}]
    runcmd = []
    if licence_token:
        # Root-only: nvidia-gridd runs as root and the token is a secret.
        files.append({'path': LICENCE_TOKEN_PATH, 'permissions': '0600',
                      'content': licence_token.strip() + '\n'})
        runcmd.append(['systemctl', 'restart', 'nvidia-gridd'])
    config = {}
    if stock_image:
        config['packages'] = ['python3-venv', 'python3-dev', 'gcc', 'curl']
        setup = {'VLLM_VERSION': vllm_version, 'VLLM_PIP_ARGS': pip_args,
                 'NVIDIA_DRIVER_URL': driver_url or ''}
        files += [
            {'path': '/etc/vllm/setup.env', 'permissions': '0644',
             'content': ''.join('%s=%s\n' % (key, shlex.quote(value))
                                for key, value in setup.items())},
            {'path': '/usr/local/sbin/gpu-guest-setup',
             'permissions': '0755', 'content': guest_file('gpu-guest-setup')},
            {'path': '/usr/local/libexec/vllm-serve', 'permissions': '0755',
             'content': guest_file('vllm-serve')},
            {'path': '/usr/local/libexec/vllm-metadata',
             'permissions': '0755', 'content': guest_file('vllm-metadata')},
            {'path': '/etc/default/vllm', 'permissions': '0644',
             'content': guest_file('vllm.default')},
            {'path': '/etc/systemd/system/vllm.service',
             'permissions': '0644', 'content': guest_file('vllm.service')},
        ]
        runcmd.insert(0, ['/usr/local/sbin/gpu-guest-setup'])
        # --no-block: vllm.service starts after cloud-final, which is
        # running this very command.
        runcmd += [['systemctl', 'daemon-reload'],
                   ['systemctl', 'enable', '--now', '--no-block',
                    'vllm.service']]
    # On the image vllm.service is enabled and ordered after cloud-final:
    # it starts with the settings written here, no command needed.
    config['write_files'] = files
    if runcmd:
        config['runcmd'] = runcmd
    text = '#cloud-config\n' + yaml.dump(config, Dumper=_Dumper,
                                         sort_keys=False,
                                         default_flow_style=False)
    if len(text.encode()) > MAX_USER_DATA_BYTES:
        raise ValueError('user-data is %d bytes; Nova takes at most %d'
                         % (len(text.encode()), MAX_USER_DATA_BYTES))
    return text
