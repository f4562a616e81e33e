"""Hostile and broken clients against one server, on loopback: what each attack holds.

Each attack runs against a fresh server serving tests/apps/raw_app.py; meanwhile one
well-behaved client sends GET / on fresh connections, back to back, and the requests it got
answered count as "served meanwhile". Reported per attack: the server's RSS (whole process
tree, `VmRSS`) before, at the attack's peak and after it; its open fds at the peak; and the
requests served meanwhile.

    python benches/hostile.py rsgi --attacks slowloris,never-read,not-http
    python benches/hostile.py uvicorn --attacks slowloris --connections 10000
    python benches/hostile.py rsgi --attacks never-read --extra '--timeout-write 0'

Attacks:
- slowloris: N connections that each send one byte of a request head and nothing more;
  RSS per connection while they are held.
- never-read: 100 connections each asking for a 200 MiB streamed response and never
  reading; rsgi runs with --timeout-write 10 (see --extra) so that the drop shows within
  the run.
- not-http: N connections that each send a TLS ClientHello to the plain port; the time
  until every one is answered or closed.

Loopback only; the client raises its own fd limit. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = HERE.parent / "tests" / "apps"
HOST = "127.0.0.1"
TLS_HELLO = bytes.fromhex("16030100c4010000c00303") + bytes(range(0x30, 0x50))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
    return total


def fds(pid: int) -> int:
    return sum(len(list(Path(f"/proc/{p}/fd").iterdir())) for p in tree(pid))


def start(server: str, port: int, extra: list[str]) -> subprocess.Popen:
    if server == "rsgi":
        cmd = [sys.executable, "-m", "rsgi", "raw_app:app", "--no-access-log"]
        cmd += ["--log-level", "error"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "raw_app:app", "--no-access-log"]
        cmd += ["--log-level", "error"]
    cmd += ["--app-dir", str(APPS), "--host", HOST, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if get(port):
            return proc
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"{server} did not start: {' '.join(cmd)}")


def get(port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Bystander(threading.Thread):
    """A well-behaved client: GET / back to back, counting the answers."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.served, self.failed, self.stop = port, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if get(self.port):
                self.served += 1
            else:
                self.failed += 1


def connect_many(port: int, n: int, first: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if first:
            s.sendall(first)
        socks.append(s)
    return socks


def attack(server: str, name: str, n: int, hold: float, extra: list[str]) -> str:
    port = free_port()
    proc = start(server, port, extra)
    try:
        time.sleep(1)
        base = rss_kib(proc.pid)
        bystander = Bystander(port)
        bystander.start()
        started = time.monotonic()
        peak = peak_fds = 0
        note = ""
        if name == "slowloris":
            socks = connect_many(port, n, b"G")
            time.sleep(hold)
            peak, peak_fds = rss_kib(proc.pid), fds(proc.pid)
            note = f"{(peak - base) / n:.1f} KiB per connection"
        elif name == "never-read":
            request = b"GET /download?size=209715200&chunked=1 HTTP/1.1\r\nHost: h\r\n\r\n"
            socks = connect_many(port, n, request)
            end = time.monotonic() + hold
            while time.monotonic() < end:
                time.sleep(1)
                rss = rss_kib(proc.pid)
                if rss > peak:
                    peak, peak_fds = rss, fds(proc.pid)
            note = f"RSS {rss_kib(proc.pid) / 1024:.1f} MB after {hold:.0f} s"
        else:
            socks = connect_many(port, n, TLS_HELLO)
            peak, peak_fds = rss_kib(proc.pid), fds(proc.pid)
            answered = 0
            for s in socks:
                s.settimeout(max(0.1, started + hold - time.monotonic()))
                try:
                    answered += s.recv(16).startswith(b"HTTP/1.1 400")
                except OSError:
                    pass
            note = f"{answered}/{n} answered 400 in {time.monotonic() - started:.1f} s"
        for s in socks:
            s.close()
        time.sleep(2)
        after = rss_kib(proc.pid)
        bystander.stop.set()
        bystander.join()
        return (
            f"{server:<8} {name:<11} n={n:<6} RSS {base / 1024:6.1f} -> peak {peak / 1024:6.1f}"
            f" -> after {after / 1024:6.1f} MB, fds at peak {peak_fds:<6}"
            f" served meanwhile {bystander.served} (failed {bystander.failed}); {note}"
        )
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("server", choices=("rsgi", "uvicorn"))
    p.add_argument("--attacks", default="slowloris,never-read,not-http")
    p.add_argument("--connections", type=int, default=1000, help="for slowloris and not-http")
    p.add_argument("--hold", type=float, default=5.0, help="seconds (never-read: 20 at least)")
    p.add_argument(
        "--extra",
        default=None,
        help="more server options; rsgi's default is '--timeout-write 10', so that the "
        "never-read attack sees responses dropped within the run",
    )
    args = p.parse_args()
    if args.extra is None:
        args.extra = "--timeout-write 10" if args.server == "rsgi" else ""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for name in args.attacks.split(","):
        n = 100 if name == "never-read" else args.connections
        hold = max(args.hold, 20.0) if name == "never-read" else args.hold
        print(attack(args.server, name, n, hold, args.extra.split()), flush=True)


if __name__ == "__main__":
    main()
