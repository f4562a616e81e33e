#!/usr/bin/env bash
# Build the rsgi wheel PyPI accepts: manylinux2014 (glibc 2.17) on Linux, linked with zig so
# that this machine's newer glibc does not leak into the tag; the native wheel on macOS.
#
#   scripts/build-wheel.sh [extra maturin build arguments]
#
# The wheel lands in dist/ (or $RSGI_WHEEL_DIR) and its path is printed last. Needs Rust
# (https://rustup.rs); maturin and ziglang are installed into $PYTHON if missing.
#
# Environment:
#   PYTHON=python3              interpreter that runs maturin (and whose ziglang zig is used)
#   RSGI_WHEEL_DIR=dist         output directory
#   RSGI_WHEEL_TARGET=          a Rust target triple to cross-compile for (e.g.
#                               aarch64-unknown-linux-gnu: zig links it, no cross toolchain)
#   CARGO_TARGET_DIR            cargo's build directory, as usual
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
OUT="${RSGI_WHEEL_DIR:-dist}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: building rsgi needs Rust (cargo): install it from https://rustup.rs" >&2
    exit 1
fi

need=()
"$PYTHON" -c 'import maturin' 2>/dev/null || need+=("maturin>=1.7,<2")
args=(--release --out "$OUT")
if [[ "$(uname -s)" == Linux ]]; then
    "$PYTHON" -c 'import ziglang' 2>/dev/null || need+=("ziglang")
    args+=(--zig --compatibility manylinux2014)
fi
if ((${#need[@]})); then
    "$PYTHON" -m pip install --progress-bar off -q "${need[@]}"
fi
if [[ -n "${RSGI_WHEEL_TARGET:-}" ]]; then
    args+=(--target "$RSGI_WHEEL_TARGET")
fi

if [[ "$(uname -s)" == Linux ]]; then
    # The zig binary the ziglang package ships, first on PATH for maturin.
    zig_dir=$("$PYTHON" -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')
    export PATH="$zig_dir:$PATH"
fi
mkdir -p "$OUT"
"$PYTHON" -m maturin build "${args[@]}" "$@" >&2
after=$(ls -t "$OUT"/*.whl | head -n 1)
echo "$after"
