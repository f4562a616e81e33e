#!/usr/bin/env bash
# Install a built rsgi wheel the way a user does, on a machine with no Rust, and serve one
# request with it:
#
#   scripts/smoke-wheel.sh dist/rsgi-*.whl
#
# A fresh virtual environment, a PATH without cargo or rustc, `pip install WHEEL` (its
# dependencies come from PyPI), then `rsgi` serving a one-file app on a free port and a GET
# that must answer 200. Also checks that building the sdist (if given as a second argument)
# without Rust stops with rsgi's one-line message instead of downloading a toolchain.
set -euo pipefail
wheel=$(realpath "$1")
sdist=${2:+$(realpath "$2")}
PYTHON="${PYTHON:-python3}"
work=$(mktemp -d)
server=
cleanup() {
    if [[ -n "$server" ]]; then
        kill "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$PYTHON" -m venv "$work/venv"
# Only the venv and the system's basic tools: no ~/.cargo/bin.
export PATH="$work/venv/bin:/usr/local/bin:/usr/bin:/bin"
if command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is still on PATH ($(command -v cargo)); the smoke test needs a PATH without Rust" >&2
    exit 1
fi
"$work/venv/bin/python" -m pip install --progress-bar off -q "$wheel"

cat >"$work/hello.py" <<'APP'
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello from the wheel"})
APP
port=$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$work" && exec rsgi hello:app --port "$port" --no-access-log) &
server=$!
"$work/venv/bin/python" - "$port" <<'GET'
import sys, time, urllib.request

url = f"http://127.0.0.1:{sys.argv[1]}/"
for _ in range(100):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
            assert response.status == 200, response.status
            assert body == b"hello from the wheel", body
            print(f"wheel smoke test: GET / answered {response.status}")
            break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("wheel smoke test: the server never answered")
GET
kill -TERM "$server"
wait "$server"
server=

if [[ -n "$sdist" ]]; then
    out=$("$work/venv/bin/python" -m pip install --progress-bar off --no-binary rsgi "$sdist" 2>&1) && {
        echo "error: the sdist built without Rust?" >&2
        exit 1
    }
    if ! grep -q "rsgi: building from source needs Rust" <<<"$out"; then
        echo "error: a source build without Rust did not say how to get Rust:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "sdist without Rust: stopped with rsgi's one-line message"
fi
