"""User-space instructions per request, counted by valgrind (callgrind), for each server.

Time per request moves by several percent between back-to-back runs on a shared machine (other
tenants, hypervisor steal), which hides most single changes to the hot path. An instruction count
does not move: each server runs under callgrind, instrumentation is switched on only while a
fixed number of keep-alive requests is answered, and the count of every thread (and, for
granian, every process) is divided by that number.

    python benches/instructions.py                          # hello: rsgi, uvicorn, granian, hyper
    python benches/instructions.py --workloads hello,fastapi --servers rsgi,uvicorn
    python benches/instructions.py --servers rsgi --requests 20000

What it does not see: the kernel's work (the send and receive system calls are about half of a
hello request's CPU time, and the same for every server), and what an instruction costs (cache
misses, branch mispredictions). Use it to compare versions of rsgi and to find where
instructions go (`callgrind_annotate` on the files it keeps with `--keep`); quote run.py's
requests per CPU-second for speed.

Needs valgrind (`apt-get install valgrind`). This is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run

WARMUP = 2000


def load(port: int, path: str, total: int, connections: int = 32) -> None:
    """Sends `total` GET requests over `connections` keep-alive connections, one in flight on
    each, and reads every response whole (content-length framing)."""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    sent = done = 0
    for _ in range(min(connections, total)):
        s = socket.create_connection((run.HOST, port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
        s.sendall(request)
        sent += 1
    while done < total:
        events = sel.select(60)
        if not events:
            raise TimeoutError(f"no response in 60 s ({done} of {total} done)")
        for key, _ in events:
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                raise ConnectionError("the server closed a keep-alive connection")
            buf = pending[s] + data
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                length = _content_length(buf[:end])
                if len(buf) < end + 4 + length:
                    break
                buf = buf[end + 4 + length :]
                done += 1
                if sent < total:
                    s.sendall(request)
                    sent += 1
            pending[s] = buf
    for s in pending:
        s.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("response without content-length")


def callgrind(cmd: list[str], out_dir: Path) -> list[str]:
    # Child processes too: granian's worker, and what a script's shebang runs.
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--trace-children=yes",
        f"--callgrind-out-file={out_dir}/callgrind.%p",
        *cmd,
    ]


def control(*args: str) -> None:
    """Tells every callgrind process of this user (there is one server at a time)."""
    subprocess.run(["callgrind_control", *args], capture_output=True, check=False)


def instructions(out_dir: Path) -> int:
    total = 0
    for f in out_dir.glob("callgrind.*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure(server: str, workload: run.Workload, requests: int, keep: Path | None) -> int:
    port = run.free_port()
    out_dir = Path(tempfile.mkdtemp(prefix=f"icount-{server}-"))
    cmd = callgrind(run.server_command(server, workload.app, port, 1), out_dir)
    proc = run.Server(server, cmd, out_dir / "server.log")
    proc.start()
    try:
        if run.wait_ready(proc, workload, port, timeout=180) is not None:
            sys.exit(f"{server} did not start:\n{proc.log_tail()}")
        load(port, workload.path, WARMUP)
        control("-i", "on")
        load(port, workload.path, requests)
        control("-i", "off")
        # Write the counts now: a server that ignores SIGINT is killed, and loses what is
        # not dumped.
        control("-d")
        time.sleep(1)
    finally:
        proc.stop(timeout=60)
    count = instructions(out_dir)
    if keep is not None:
        dest = keep / f"{workload.name}-{server}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(out_dir, dest)
    shutil.rmtree(out_dir, ignore_errors=True)
    return count // requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="hello")
    parser.add_argument("--servers", default="rsgi,uvicorn,granian,hyper")
    parser.add_argument("--requests", type=int, default=10_000, help="counted requests")
    parser.add_argument("--keep", type=Path, help="keep the callgrind files under this folder")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found (apt-get install valgrind)")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.workloads.split(","):
        workload = run.WORKLOADS[name]
        for server in args.servers.split(","):
            if server not in workload.servers:
                continue
            if server == "hyper" and not run.HYPER_BIN.exists():
                sys.exit("build benches/hyper-hello first (cargo build --release)")
            per_request = measure(server, workload, args.requests, args.keep)
            rows.append((name, server, per_request))
            print(f"{name:8} {server:8} {per_request:>9,} instructions per request", flush=True)
    print("\n| workload | server | instructions per request | vs rsgi |\n|---|---|---|---|")
    for name, server, count in rows:
        ours = next((c for w, s, c in rows if w == name and s == "rsgi"), None)
        ratio = f"{count / ours:.2f}x" if ours else "-"
        print(f"| {name} | {server} | {count:,} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
