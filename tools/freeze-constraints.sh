#!/bin/bash
# Rewrite constraints.txt from the py3 tox environment, after a
# requirement was added or a pin must move. Review the diff before
# committing: nova, openstack-cyborg and openstack-placement must stay on
# the release they are pinned to.
set -eu

cd "$(dirname "$0")/.."
header=$(sed -n '/^#/p' constraints.txt)
{
    echo "$header"
    .tox/py3/bin/pip freeze --exclude-editable \
        | grep -v '^openstack-gpu-partitions' | LC_ALL=C sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
