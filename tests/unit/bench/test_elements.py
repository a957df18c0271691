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
"""Static validation of the guest image elements and the guest files.

The image cannot be built here (no network for packages, driver or
weights), so this checks what can be checked without building: element
layout and dependencies, every script through shellcheck and bashate,
the rendered cloud-init user-data, and the launcher's behaviour with a
fake vLLM.
"""

import os
import shutil
import stat
import subprocess

import fixtures
import testtools
import yaml

from gpu_partitions.bench import cloudinit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
ELEMENTS = os.path.join(ROOT, 'elements')
OURS = ('gpu-guest-base', 'nvidia-guest-driver', 'rocm-guest',
        'vllm-server')
# Elements of diskimage-builder itself that ours may depend on.
DIB_ELEMENTS = ('block-device-efi', 'cloud-init', 'cloud-init-datasources',
                'disable-nouveau', 'dkms', 'growroot', 'install-static',
                'package-installs', 'ubuntu', 'vm')
HOOK_DIRS = ('root.d', 'extra-data.d', 'pre-install.d', 'install.d',
             'post-install.d', 'post-root.d', 'block-device.d',
             'pre-finalise.d', 'finalise.d', 'cleanup.d')
# Copies of the package's guest files that the image installs.
STATIC_COPIES = {
    'usr/local/libexec/vllm-serve': 'vllm-serve',
    'usr/local/libexec/vllm-metadata': 'vllm-metadata',
    'etc/systemd/system/vllm.service': 'vllm.service',
    'etc/default/vllm': 'vllm.default',
}


def element_path(*names):
    return os.path.join(ELEMENTS, *names)


def hook_scripts():
    for element in OURS:
        for hook_dir in HOOK_DIRS:
            directory = element_path(element, hook_dir)
            if os.path.isdir(directory):
                for name in sorted(os.listdir(directory)):
                    yield os.path.join(directory, name)


def environment_files():
    for element in OURS:
        directory = element_path(element, 'environment.d')
        if os.path.isdir(directory):
            for name in sorted(os.listdir(directory)):
                yield os.path.join(directory, name)


# Stand-ins diskimage-builder runs on kernels without device-mapper.
NO_DM_TOOLS = os.path.join(ROOT, 'tools', 'dib-without-device-mapper')


def bash_scripts():
    guest = cloudinit.GUEST_DIR
    return list(hook_scripts()) + [
        os.path.join(guest, 'vllm-serve'),
        os.path.join(guest, 'gpu-guest-setup')] + [
        os.path.join(NO_DM_TOOLS, name)
        for name in sorted(os.listdir(NO_DM_TOOLS))]


class ElementLayoutTest(testtools.TestCase):

    def test_only_known_elements(self):
        found = sorted(name for name in os.listdir(ELEMENTS)
                       if os.path.isdir(element_path(name)))
        self.assertEqual(sorted(OURS), found)

    def test_each_element_documented_with_known_dependencies(self):
        for element in OURS:
            self.assertTrue(os.path.isfile(element_path(element,
                                                        'README.rst')),
                            element)
            with open(element_path(element, 'element-deps')) as deps:
                for dep in deps.read().split():
                    self.assertIn(dep, OURS + DIB_ELEMENTS,
                                  '%s depends on unknown %s'
                                  % (element, dep))

    def test_no_unknown_phase_directories(self):
        allowed = set(HOOK_DIRS) | {'environment.d', 'static'}
        for element in OURS:
            for name in os.listdir(element_path(element)):
                if os.path.isdir(element_path(element, name)):
                    self.assertIn(name, allowed, '%s/%s' % (element, name))

    def test_hooks_are_executable_bash_with_strict_mode(self):
        scripts = list(hook_scripts())
        self.assertGreater(len(scripts), 6)
        for path in scripts:
            mode = os.stat(path).st_mode
            self.assertTrue(mode & stat.S_IXUSR, '%s not executable' % path)
            with open(path) as stream:
                text = stream.read()
            self.assertTrue(text.startswith('#!/bin/bash\n'), path)
            self.assertIn('set -eu', text, path)
            self.assertIn('set -o pipefail', text, path)
            # The chroot runs the build host's kernel, not the image's.
            self.assertNotIn('$(uname -r)', text, path)

    def test_environment_exports_only_dib_variables(self):
        # diskimage-builder drops variables not named DIB_* before hooks.
        for path in environment_files():
            with open(path) as stream:
                for line in stream:
                    if line.startswith('export '):
                        name = line.split()[1].split('=')[0]
                        self.assertTrue(name.startswith('DIB_'),
                                        '%s exports %s' % (path, name))

    def test_package_installs_parse(self):
        for element in OURS:
            path = element_path(element, 'package-installs.yaml')
            if os.path.exists(path):
                with open(path) as stream:
                    packages = yaml.safe_load(stream)
                self.assertIsInstance(packages, dict, path)
                self.assertTrue(packages, path)

    def test_static_files_match_the_package_copies(self):
        for static, guest in STATIC_COPIES.items():
            with open(element_path('vllm-server', 'static', static)) as a, \
                    open(os.path.join(cloudinit.GUEST_DIR, guest)) as b:
                self.assertEqual(b.read(), a.read(), static)
        launcher = element_path('vllm-server', 'static',
                                'usr/local/libexec/vllm-serve')
        self.assertTrue(os.stat(launcher).st_mode & stat.S_IXUSR)

    def test_server_unit_after_cloud_final_in_no_ordering_cycle(self):
        # cloud-final.service is ordered after multi-user.target (Debian
        # and Ubuntu): a unit after it cannot be wanted by that target,
        # or systemd drops it from the boot to break the cycle.
        settings = {}
        with open(os.path.join(cloudinit.GUEST_DIR, 'vllm.service')) as unit:
            for line in unit:
                key, _, value = line.partition('=')
                if value and not line.startswith('#'):
                    settings.setdefault(key.strip(), []).extend(
                        value.split())
        self.assertIn('cloud-final.service', settings['After'])
        self.assertEqual(['cloud-init.target'], settings['WantedBy'])

    def test_build_command_documented(self):
        with open(element_path('README.rst')) as stream:
            text = stream.read()
        self.assertIn('disk-image-create', text)
        for element in OURS[:2] + OURS[3:]:
            self.assertIn(element, text.split('disk-image-create')[1])


class ShellLintTest(testtools.TestCase):

    def test_shellcheck(self):
        if shutil.which('shellcheck') is None:
            self.skipTest('shellcheck is not installed (bindep)')
        scripts = bash_scripts() + list(environment_files())
        done = subprocess.run(['shellcheck', '-s', 'bash'] + scripts,
                              capture_output=True, text=True, check=False)
        self.assertEqual(0, done.returncode, done.stdout)

    def test_bashate(self):
        from bashate import bashate
        # Sourced environment files have no shebang (E005), as in DIB.
        for paths, ignore in ((bash_scripts(), ''),
                              (list(environment_files()), 'E005')):
            checker = bashate.BashateRun()
            checker.register_ignores(ignore)
            checker.register_warnings('')
            checker.register_errors('E')
            checker.check_files(paths, verbose=False)
            self.assertEqual(0, checker.error_count + checker.warning_count,
                             'bashate found problems in %s' % paths)


class CloudInitTest(testtools.TestCase):

    settings = {'VLLM_MODEL': '/models/qwen', 'VLLM_MAX_NUM_SEQS': 64,
                'VLLM_MAX_NUM_BATCHED_TOKENS': 2048,
                'VLLM_MAX_MODEL_LEN': 4096,
                'VLLM_KV_CACHE_MEMORY_BYTES': 8 * 2 ** 30}

    def parse(self, text):
        self.assertTrue(text.startswith('#cloud-config\n'))
        return yaml.safe_load(text)

    def files(self, config):
        return {entry['path']: entry for entry in config['write_files']}

    def test_image_user_data_pins_settings_and_token(self):
        config = self.parse(cloudinit.render(self.settings,
                                             licence_token='TOKEN'))
        files = self.files(config)
        env = files['/etc/vllm/vllm.env']['content']
        self.assertIn("VLLM_MAX_NUM_SEQS='64'", env)
        self.assertIn("VLLM_KV_CACHE_MEMORY_BYTES='8589934592'", env)
        self.assertEqual('TOKEN\n',
                         files[cloudinit.LICENCE_TOKEN_PATH]['content'])
        self.assertIn(['systemctl', 'restart', 'nvidia-gridd'],
                      config['runcmd'])

    def test_stock_image_user_data_carries_everything(self):
        text = cloudinit.render(self.settings, stock_image=True,
                                driver_url='http://mirror/nvidia.run')
        config = self.parse(text)
        files = self.files(config)
        for path in ('/usr/local/sbin/gpu-guest-setup',
                     '/usr/local/libexec/vllm-serve',
                     '/etc/systemd/system/vllm.service',
                     '/etc/vllm/vllm.env', '/etc/vllm/setup.env'):
            self.assertIn(path, files)
        self.assertEqual(cloudinit.guest_file('vllm-serve'),
                         files['/usr/local/libexec/vllm-serve']['content'])
        self.assertEqual(['/usr/local/sbin/gpu-guest-setup'],
                         config['runcmd'][0])
        self.assertIn('--no-block', config['runcmd'][-1])
        self.assertIn('python3-venv', config['packages'])
        self.assertLess(len(text.encode()), cloudinit.MAX_USER_DATA_BYTES)

    def test_rendered_scripts_pass_shellcheck(self):
        if shutil.which('shellcheck') is None:
            self.skipTest('shellcheck is not installed (bindep)')
        config = self.parse(cloudinit.render(self.settings,
                                             stock_image=True))
        directory = self.useFixture(fixtures.TempDir()).path
        for entry in config['write_files']:
            if entry['content'].startswith('#!/bin/bash'):
                path = os.path.join(directory,
                                    os.path.basename(entry['path']))
                with open(path, 'w') as stream:
                    stream.write(entry['content'])
                done = subprocess.run(['shellcheck', path],
                                      capture_output=True, text=True,
                                      check=False)
                self.assertEqual(0, done.returncode, done.stdout)

    def test_refuses_unpinned_or_unsafe_settings(self):
        error = self.assertRaises(ValueError, cloudinit.render,
                                  {'VLLM_MODEL': '/m'})
        self.assertIn('VLLM_MAX_NUM_SEQS', str(error))
        unsafe = dict(self.settings, VLLM_EXTRA_ARGS="x'; rm -rf /")
        self.assertRaises(ValueError, cloudinit.render, unsafe)
        unknown = dict(self.settings, VLLM_NOPE=1)
        error = self.assertRaises(ValueError, cloudinit.render, unknown)
        self.assertIn('VLLM_NOPE', str(error))


class LauncherTest(testtools.TestCase):
    """vllm-serve with a fake vLLM that prints its arguments."""

    def setUp(self):
        super().setUp()
        self.directory = self.useFixture(fixtures.TempDir()).path
        self.fake_engine('venv', 'vllm')
        self.pci = os.path.join(self.directory, 'pci')
        os.makedirs(self.pci)

    def fake_engine(self, venv, name):
        """A fake vLLM, or llama.cpp's server behind "python"."""
        venv_bin = os.path.join(self.directory, venv, 'bin')
        os.makedirs(venv_bin)
        fake = os.path.join(venv_bin, name)
        with open(fake, 'w') as stream:
            stream.write('#!/bin/sh\necho "ARGS %s $*"\n' % name)
        os.chmod(fake, 0o755)

    def add_pci_device(self, vendor, pci_class):
        device = os.path.join(self.pci, '0000:00:%02x.0'
                              % len(os.listdir(self.pci)))
        os.makedirs(device)
        for name, value in (('vendor', vendor), ('class', pci_class)):
            with open(os.path.join(device, name), 'w') as stream:
                stream.write(value + '\n')

    def launch(self, env_file_text, defaults_text=None):
        defaults = os.path.join(self.directory, 'defaults')
        with open(defaults, 'w') as stream:
            stream.write(defaults_text or cloudinit.guest_file(
                'vllm.default'))
        env_file = os.path.join(self.directory, 'vllm.env')
        with open(env_file, 'w') as stream:
            stream.write(env_file_text)
        environment = {
            'PATH': os.environ['PATH'],
            'VLLM_VENV': os.path.join(self.directory, 'venv'),
            'LLAMA_CPP_VENV': os.path.join(self.directory, 'llama'),
            'VLLM_PCI_DEVICES': self.pci,
            'VLLM_DEFAULTS_FILE': defaults, 'VLLM_ENV_FILE': env_file,
            # No metadata service or config drive in a test.
            'VLLM_METADATA_URL': '',
            'VLLM_CONFIG_DRIVE_LABEL': 'no-such-label-gpu-bench-test'}
        done = subprocess.run(
            ['bash', os.path.join(cloudinit.GUEST_DIR, 'vllm-serve')],
            env=environment, capture_output=True, text=True, timeout=30,
            check=False)
        return done

    def args(self, done, engine='vllm'):
        self.assertEqual(0, done.returncode, done.stderr)
        line = [text for text in done.stdout.splitlines()
                if text.startswith('ARGS ')][0]
        self.assertEqual(engine, line.split()[1], done.stdout)
        return line.split()[2:]

    def test_pins_scheduler_and_fixed_kv_cache(self):
        args = self.args(self.launch(cloudinit.env_text({
            'VLLM_MODEL': '/models/m', 'VLLM_MAX_NUM_SEQS': 32,
            'VLLM_KV_CACHE_MEMORY_BYTES': 1000})))
        self.assertEqual(['serve', '/models/m'], args[:2])
        pairs = dict(zip(args[2::2], args[3::2]))
        self.assertEqual('32', pairs['--max-num-seqs'])
        self.assertEqual('2048', pairs['--max-num-batched-tokens'])
        self.assertEqual('4096', pairs['--max-model-len'])
        self.assertEqual('1000', pairs['--kv-cache-memory-bytes'])
        self.assertNotIn('--gpu-memory-utilization', pairs)
        self.assertEqual('m', pairs['--served-model-name'])

    def test_memory_fraction_without_fixed_kv_cache(self):
        pairs = self.args(self.launch(''))
        self.assertIn('--gpu-memory-utilization', pairs)
        self.assertIn('/models/default', pairs)

    def test_auto_engine_is_llama_cpp_without_a_gpu(self):
        # QEMU's VGA and a virtio NIC are no GPU.
        self.fake_engine('llama', 'python')
        self.add_pci_device('0x1234', '0x030000')
        self.add_pci_device('0x1af4', '0x020000')
        args = self.args(self.launch(cloudinit.env_text({
            'VLLM_MODEL': '/models/m.gguf', 'VLLM_MAX_MODEL_LEN': 1024,
            'VLLM_MAX_NUM_BATCHED_TOKENS': 512, 'VLLM_CPU_THREADS': 3,
            'VLLM_SERVED_MODEL_NAME': 'gemma'})), engine='python')
        self.assertEqual(['-m', 'llama_cpp.server'], args[:2])
        pairs = dict(zip(args[2::2], args[3::2]))
        self.assertEqual('/models/m.gguf', pairs['--model'])
        self.assertEqual('gemma', pairs['--model_alias'])
        self.assertEqual('1024', pairs['--n_ctx'])
        self.assertEqual('512', pairs['--n_batch'])
        self.assertEqual('3', pairs['--n_threads'])
        self.assertEqual('False', pairs['--interrupt_requests'])

    def test_auto_engine_is_vllm_with_an_nvidia_or_amd_gpu(self):
        self.fake_engine('llama', 'python')
        for vendor, pci_class in (('0x10de', '0x030200'),
                                  ('0x1002', '0x038000')):
            for name in os.listdir(self.pci):
                shutil.rmtree(os.path.join(self.pci, name))
            self.add_pci_device(vendor, pci_class)
            args = self.args(self.launch(''))
            self.assertEqual('serve', args[0], vendor)

    def test_auto_engine_is_vllm_without_llama_cpp(self):
        self.assertEqual('serve', self.args(self.launch(''))[0])

    def test_engine_from_settings_wins_and_is_checked(self):
        self.fake_engine('llama', 'python')
        args = self.args(self.launch("VLLM_ENGINE='llama.cpp'\n"),
                         engine='python')
        self.assertIn('llama_cpp.server', args)
        self.add_pci_device('0x10de', '0x030200')
        self.args(self.launch("VLLM_ENGINE='llama.cpp'\n"),
                  engine='python')
        done = self.launch("VLLM_ENGINE='tensorrt'\n")
        self.assertNotEqual(0, done.returncode)
        self.assertIn('VLLM_ENGINE=tensorrt', done.stderr)

    def test_no_model_is_an_error_naming_it(self):
        done = self.launch('', defaults_text='VLLM_PORT=8000\n')
        self.assertNotEqual(0, done.returncode)
        self.assertIn('VLLM_MODEL', done.stderr)

    def test_metadata_helper(self):
        done = subprocess.run(
            ['python3', os.path.join(cloudinit.GUEST_DIR, 'vllm-metadata')],
            input='{"meta": {"vllm_max_num_seqs": "16", "owner": "x", '
                  '"vllm_model": "/models/a b"}}',
            capture_output=True, text=True, timeout=30, check=True)
        self.assertEqual("VLLM_MAX_NUM_SEQS=16\nVLLM_MODEL='/models/a b'\n",
                         done.stdout)
