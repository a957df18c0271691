#!/bin/bash
# Fail when the sample configuration files in etc/ are not what
# oslo-config-generator makes from the options now ("tox -e genconfig"
# rewrites them).
set -eu

cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for config in etc/oslo-config-generator/*.conf; do
    sample=$(sed -n 's/^output_file *= *//p' "$config")
    oslo-config-generator --config-file "$config" \
        --output-file "$scratch/sample"
    if ! diff -u "$sample" "$scratch/sample"; then
        echo "$sample is out of date: run 'tox -e genconfig'" >&2
        status=1
    fi
done
exit $status
