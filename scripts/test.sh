#!/usr/bin/env bash
# The one command that runs every rsgi test. README.md and .ci/run both call it.
#
#   scripts/test.sh [extra pytest arguments]
#
# Steps: install tests/requirements.txt; build rsgi's wheel from this checkout
# (scripts/build-wheel.sh: a release build of the Rust core, manylinux2014 on Linux) and
# install it; `cargo test`; then `python -m pytest tests -q`.
#
# Environment:
#   PYTHON=python3        interpreter to use
#   RSGI_TEST_WHEEL=PATH  install this wheel instead of building one (.ci/run builds the
#                         wheel once, checks it, then passes it here)
#   RSGI_TEST_INSTALL=0   skip both pip steps and test the rsgi already installed
#                         (CI's wheel job installs a built wheel first)
#   RSGI_TEST_CARGO=0     skip `cargo test` (run elsewhere, or no Rust here)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"

if [[ "${RSGI_TEST_INSTALL:-1}" != 0 ]]; then
    echo "--- pip install -r tests/requirements.txt"
    "$PYTHON" -m pip install --progress-bar off -q -r tests/requirements.txt
    wheel="${RSGI_TEST_WHEEL:-}"
    if [[ -z "$wheel" ]]; then
        echo "--- scripts/build-wheel.sh (release build of the Rust core; takes a few minutes)"
        wheel_dir=$(mktemp -d)
        trap 'rm -rf "$wheel_dir"' EXIT
        wheel=$(PYTHON="$PYTHON" RSGI_WHEEL_DIR="$wheel_dir" scripts/build-wheel.sh)
    fi
    echo "--- pip install $wheel"
    "$PYTHON" -m pip install --progress-bar off --force-reinstall --no-deps "$wheel"
    "$PYTHON" -m pip install --progress-bar off -q "$wheel"
fi

if [[ "${RSGI_TEST_CARGO:-1}" != 0 ]]; then
    echo "--- cargo test"
    cargo test
fi

echo "--- python -m pytest tests -q $*"
# Run from the repository root but import the installed rsgi: the package
# lives in python/, so the checkout does not shadow it.
"$PYTHON" -m pytest tests -q "$@"
