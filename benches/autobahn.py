#!/usr/bin/env python3
"""Autobahn|Testsuite's fuzzing client against rsgi serving a raw ASGI echo app.

    python benches/autobahn.py                 # cases 1-10 (seconds)
    python benches/autobahn.py --compression   # also 12-13, permessage-deflate (many minutes)
    python benches/autobahn.py --cases 5.*,6.4.*

`autobahntestsuite` is Python 2 only. The first run makes a virtualenv for it from the CPython
2.7 that pyenv has on the machine (virtualenv 20.21.1 is the last release that can) under
~/.cache/rsgi-autobahn; later runs reuse it. `wstest` always exits 0, so this script reads the
report's index.json, prints a summary per section, and exits 1 if any case FAILED.

Only the standard library is used. The report (HTML and JSON) goes to
benches/results/autobahn/.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
REPO = BENCHES.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rsgi-autobahn"
VENV = CACHE / "venv27"
WSTEST = VENV / "bin" / "wstest"
BASIC = [f"{n}.*" for n in range(1, 11)]
COMPRESSION = ["12.*", "13.*"]
GOOD = ("OK", "NON-STRICT", "INFORMATIONAL")


def find_python27() -> str:
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/2.7*/bin/python")))
    candidates += ["/usr/bin/python2.7", "/usr/bin/python2"]
    for c in candidates:
        if Path(c).exists():
            return c
    sys.exit("no CPython 2.7 found (pyenv install 2.7.18): autobahntestsuite needs it")


def ensure_wstest() -> None:
    if WSTEST.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    tool = CACHE / "virtualenv-tool"
    if not (tool / "bin" / "virtualenv").exists():
        print("making a helper venv with virtualenv 20.21.1 ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(tool)], check=True)
        subprocess.run(
            [str(tool / "bin" / "pip"), "install", "-q", "virtualenv==20.21.1"], check=True
        )
    print("making the Python 2.7 virtualenv and installing autobahntestsuite ...", flush=True)
    subprocess.run(
        [str(tool / "bin" / "virtualenv"), "-q", "-p", find_python27(), str(VENV)], check=True
    )
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "autobahntestsuite"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"rsgi exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("rsgi did not start")


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def summarize(index: dict) -> int:
    failed = []
    for agent, cases in index.items():
        sections: dict[str, Counter] = defaultdict(Counter)
        for case_id, result in cases.items():
            section = case_id.split(".")[0]
            behavior = result["behavior"]
            close = result.get("behaviorClose", "OK")
            verdict = behavior if behavior != "OK" or close in GOOD else f"close {close}"
            sections[section][verdict] += 1
            if behavior not in GOOD or close not in GOOD:
                failed.append((case_id, behavior, close))
        total = Counter()
        print(f"\n{agent}: per section")
        print(f"  {'section':8} {'cases':>5}  results")
        for section in sorted(sections, key=int):
            counts = sections[section]
            total.update(counts)
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"  {section:8} {sum(counts.values()):>5}  {detail}")
        detail = ", ".join(f"{k} {v}" for k, v in sorted(total.items()))
        print(f"  {'all':8} {sum(total.values()):>5}  {detail}")
    for case_id, behavior, close in sorted(failed, key=lambda f: case_key(f[0])):
        print(f"  FAILED {case_id}: behavior {behavior}, close {close}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case patterns (default 1.*-10.*)")
    parser.add_argument(
        "--compression", action="store_true", help="add cases 12 and 13 (permessage-deflate)"
    )
    parser.add_argument("--extra", default="", help="extra rsgi command-line arguments")
    args = parser.parse_args()
    cases = args.cases.split(",") if args.cases else list(BASIC)
    if args.compression:
        cases += COMPRESSION

    ensure_wstest()
    outdir = BENCHES / "results" / "autobahn"
    outdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": "rsgi", "url": f"ws://127.0.0.1:{port}"}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    server_cmd = [sys.executable, "-m", "rsgi", "ws_echo:app", "--app-dir", str(BENCHES / "apps")]
    server_cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    server_cmd += args.extra.split()
    log = open(outdir / "server.log", "wb")
    server = subprocess.Popen(server_cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, server)
        started = time.monotonic()
        subprocess.run(
            [str(WSTEST), "-m", "fuzzingclient", "-s", str(spec_path)],
            cwd=outdir,
            stdout=open(outdir / "wstest.log", "wb"),
            stderr=subprocess.STDOUT,
            check=False,
        )
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    index = json.loads((outdir / "index.json").read_text())
    print(f"Autobahn|Testsuite fuzzingclient, cases {','.join(cases)}: {elapsed:.0f} s")
    print(f"report: {outdir / 'index.html'}")
    return summarize(index)


if __name__ == "__main__":
    sys.exit(main())
