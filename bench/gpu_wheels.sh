#!/usr/bin/env bash
# Download, on this machine (which reaches PyPI), the wheels the device machine's python3 (CPython
# 3.12, no network) lacks for alignflow: bench/gpu_wheels.txt, made by bench/gpu_wheels.py. They
# land in .whl/ (ignored by git through .git/info/exclude), about 58 MB; name .whl in the run's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl -r bench/gpu_wheels.txt
du -sh .whl
