#!/bin/bash
# Install what the tests and the main job need on a fresh Debian machine:
# the Debian packages of bindep.txt (profiles test and image) and tox.
# Run as root (or with sudo).
set -eu

cd "$(dirname "$0")/.."
python3 -m pip install --quiet bindep tox
missing=$(python3 -m bindep -b test image || true)
if [ -n "$missing" ]; then
    echo "Installing Debian packages: $missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
