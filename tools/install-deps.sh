#!/bin/bash
# Install what the tests and the main job need on a fresh Debian machine:
# the Debian packages of bindep.txt and tox. Run as root (or with sudo).
# Profiles: "test" by default; `install-deps.sh test image` adds what
# `tox -e guest-image` needs (diskimage-builder's tools and QEMU).
set -eu

cd "$(dirname "$0")/.."
# tox and bindep pinned like everything else: virtualenv's version decides
# the pip and setuptools every tox environment starts with.
python3 -m pip install --quiet -c constraints.txt bindep tox
missing=$(python3 -m bindep -b "${@:-test}" || true)
if [ -n "$missing" ]; then
    echo "Installing Debian packages: $missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
