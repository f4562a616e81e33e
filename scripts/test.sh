#!/usr/bin/env bash
# The one command that runs every rsgi test. README.md and .ci/run both call it.
#
#   scripts/test.sh [extra pytest arguments]
#
# Steps: install tests/requirements.txt; build and install rsgi from this
# checkout (`pip install .`, a release build of the Rust core); `cargo test`;
# then `python -m pytest tests -q`.
#
# Environment:
#   PYTHON=python3        interpreter to use
#   RSGI_TEST_INSTALL=0   skip both pip steps and test the rsgi already installed
#                         (CI's wheel job installs a built wheel first)
#   RSGI_TEST_CARGO=0     skip `cargo test` (run elsewhere, or no Rust here)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"

if [[ "${RSGI_TEST_INSTALL:-1}" != 0 ]]; then
    echo "--- pip install -r tests/requirements.txt"
    "$PYTHON" -m pip install --progress-bar off -q -r tests/requirements.txt
    echo "--- pip install . (release build of the Rust core; takes a few minutes)"
    "$PYTHON" -m pip install --progress-bar off .
fi

if [[ "${RSGI_TEST_CARGO:-1}" != 0 ]]; then
    echo "--- cargo test"
    cargo test
fi

echo "--- python -m pytest tests -q $*"
# Run from the repository root but import the installed rsgi: the package
# lives in python/, so the checkout does not shadow it.
exec "$PYTHON" -m pytest tests -q "$@"
