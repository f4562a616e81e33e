"""What an open connection costs a server in memory.

Starts the server on `hello:app` (from benches/apps), opens N connections that send nothing,
then sends one request on each and reads the answer, then closes them all, and prints the
growth of the server's anonymous RSS (`RssAnon`, /proc) at each step, per connection:

    python benches/conn_memory.py rsgi uvicorn granian --connections 512

This is a measurement tool, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

from run import WORKLOADS, Server, free_port, process_tree, server_command, wait_ready

SERVERS = ("rsgi", "uvicorn", "granian")
#: Long enough that no connection is closed idle while the measure runs.
KEEP_ALIVE = {"rsgi": "--timeout-keep-alive", "uvicorn": "--timeout-keep-alive"}


def anon_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                total += int(line.split()[1])
    return total


def measure(name: str, n: int, log_dir: Path) -> str:
    port = free_port()
    hello = WORKLOADS["hello"]
    cmd = server_command(name, hello.app, port, workers=1)
    if name in KEEP_ALIVE:
        cmd += [KEEP_ALIVE[name], "60"]
    server = Server(name, cmd, log_dir / f"{name}.log")
    server.start()
    try:
        problem = wait_ready(server, hello, port, timeout=20)
        if problem:
            sys.exit(f"{name}: {problem}\n{server.log_tail()}")
        time.sleep(1)
        pids = process_tree(server.pid)
        base = anon_kib(pids)
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        time.sleep(1)
        idle = anon_kib(pids)
        for c in conns:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            c.recv(4096)
        time.sleep(1)
        used = anon_kib(pids)
        for c in conns:
            c.close()
        time.sleep(1.5)
        closed = anon_kib(pids)
    finally:
        server.stop()
    return (
        f"{name:<8} idle {(idle - base) / n:5.1f} KiB per connection, "
        f"after a request {(used - base) / n:5.1f} KiB, "
        f"{closed - base:6d} KiB still held once all are closed"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("servers", nargs="+", choices=SERVERS)
    p.add_argument("--connections", type=int, default=512)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as log_dir:
        for name in args.servers:
            print(measure(name, args.connections, Path(log_dir)), flush=True)


if __name__ == "__main__":
    main()
