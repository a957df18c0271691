#!/bin/bash
# Install llama.cpp's OpenAI-compatible server (llama-cpp-python[server])
# into the Python environment given as $1, from a portable wheel.
#
# PyPI ships llama-cpp-python as source only, and its default build
# optimises for the build machine's CPU (-march=native). A wheel built so on
# one machine dies with SIGILL or a general protection fault on another
# whose CPU lacks what the first one had (AVX-512, AMX), and pip's wheel
# cache carries such a wheel from machine to machine unchanged. So the wheel
# is built here, once, with an explicit x86-64 baseline (AVX2, FMA, F16C:
# every machine of our kind has them; AVX-512 and AMX never), into a cache
# folder named after what decides the build (the version, the flags, the
# build tools and the compiler), and the environment installs only that
# wheel, never pip's own build.
set -eu

python=${1:?usage: install-llama-server.sh PYTHON}
cd "$(dirname "$0")/.."
constraints=$PWD/constraints.txt

version=$(sed -n -E 's/^llama[-_]cpp[-_]python==//ip' "$constraints")
if [ -z "$version" ]; then
    echo "constraints.txt pins no llama-cpp-python version" >&2
    exit 1
fi

portable_flags="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF"
portable_flags+=" -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON"
portable_flags+=" -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
portable_flags+=" -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF"
portable_flags+=" -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF"
portable_flags+=" -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF"
portable_flags+=" -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_CCACHE=OFF"

build_tools=$(grep -i -E '^(scikit[-_]build[-_]core|pathspec|packaging)==' \
    "$constraints")
key=$({ echo "$version $portable_flags $build_tools"; cmake --version \
    | head -n 1; cc --version | head -n 1; } | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/openstack-gpu-partitions
wheelhouse=$cache/llama-cpp-python-$version-$key

if ! ls "$wheelhouse"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "Building a portable llama-cpp-python $version wheel" \
        "(about 8 minutes on 2 cores) into $wheelhouse"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    # The build's own tools are pinned too; cmake and the compiler are
    # Debian's (bindep.txt).
    python3 -m venv "$build/venv"
    "$build/venv/bin/pip" install --quiet -c "$constraints" \
        scikit-build-core pathspec packaging
    # No --no-cache-dir would still let pip reuse a wheel it built
    # elsewhere: build from the source distribution, never the cache.
    CMAKE_ARGS="$portable_flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$build/venv/bin/pip" wheel --quiet --no-deps --no-cache-dir \
        --no-build-isolation --no-binary llama-cpp-python \
        -w "$build/wheels" "llama-cpp-python==$version"
    python3 "$PWD/tools/check-portable-wheel.py" "$build"/wheels/*.whl
    mkdir -p "$wheelhouse"
    mv "$build"/wheels/llama_cpp_python-*.whl "$wheelhouse/"
fi

# The guest image bakes the same wheel in (tox -e guest-image).
if [ -n "${GPU_PARTITIONS_WHEELHOUSE:-}" ]; then
    mkdir -p "$GPU_PARTITIONS_WHEELHOUSE"
    cp "$wheelhouse"/llama_cpp_python-"$version"-*.whl \
        "$GPU_PARTITIONS_WHEELHOUSE/"
fi
"$python" -m pip install --quiet -c "$constraints" \
    --only-binary llama-cpp-python --find-links "$wheelhouse" \
    "llama-cpp-python[server]==$version"
