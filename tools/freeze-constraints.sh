#!/bin/bash
# Rewrite constraints.txt from tox environments, after a requirement was
# added or a pin must move: the union of what `pip freeze --all` lists in
# each one (default: every environment under .tox), plus the pins of
# packages that no environment holds (tox and bindep on the host, the
# llama.cpp wheel's build tools). Two environments that disagree on a
# version stop it. Review the diff before committing: nova,
# openstack-cyborg and openstack-placement must stay on the release they
# are pinned to. tools/check-pins.py (run by tox in every environment)
# names what is missing.
set -eu

cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
    # shellcheck disable=SC2046
    set -- $(find .tox -mindepth 3 -maxdepth 3 -path '*/bin/python' \
        -not -path '.tox/.*' -printf '%h\n' | xargs -r -n1 dirname \
        | xargs -r -n1 basename)
fi
key() { sed 's/==.*//' | tr 'A-Z_.' 'a-z--'; }
header=$(sed -n '/^#/p' constraints.txt)
frozen=$(for env in "$@"; do
    .tox/"$env"/bin/python -m pip freeze --all --exclude-editable
done | grep -v -i -e '^openstack-gpu-partitions' -e '^#' | LC_ALL=C sort -f -u)
outside=$(grep -v '^#' constraints.txt | while read -r pin; do
    echo "$frozen" | key | grep -qx "$(echo "$pin" | key)" || echo "$pin"
done)
frozen=$(printf '%s\n%s\n' "$frozen" "$outside" | sed '/^$/d' \
    | LC_ALL=C sort -f -u)
conflicts=$(echo "$frozen" | key | sort | uniq -d)
if [ -n "$conflicts" ]; then
    echo "Environments disagree on: $conflicts" >&2
    exit 1
fi
{
    echo "$header"
    echo "$frozen"
} > constraints.txt.new
mv constraints.txt.new constraints.txt
