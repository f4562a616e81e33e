"""What a benchmark app costs per request with no server at all.

Runs the same apps as ``run.py`` in this process, on uvloop, pinned to one CPU: each request
gets a fresh scope dict and its own asyncio Task (as with every ASGI server), ``receive()``
answers at once with an empty body, and ``send()`` keeps nothing. The CPU time per request is
a floor under any server's cost for that app (an optimistic one: the app runs here with warm
caches, where a server interleaves it with its I/O and the kernel's), so it bounds what a
faster server can gain:

    best possible ratio to a peer = peer's CPU per request / app's own CPU per request

A server's CPU per request is 1e6 / its "req per CPU-s" in run.py's table. The machine's speed
drifts when it is shared, so compare figures taken in the same quiet spell.

    python benches/app_cost.py

This is a measurement tool, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from run import APPS, WORKLOADS

REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> dict:
    return REQUEST


async def send(message: dict) -> None:
    pass


def scope(path: str, query: bytes) -> dict:
    """A scope as a server builds it for `GET path?query` from wrk."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.5"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


def load(spec: str):
    module, _, attr = spec.partition(":")
    sys.path.insert(0, str(APPS))
    return getattr(__import__(module), attr)


async def measure(app, path: str, query: bytes, requests: int, batch: int) -> float:
    """CPU µs per request, `batch` requests in flight per loop turn (wrk's connections)."""
    loop = asyncio.get_running_loop()
    for _ in range(2):  # warm-up, then the measured pass
        start = time.process_time()
        for _ in range(requests // batch):
            tasks = [loop.create_task(app(scope(path, query), receive, send)) for _ in range(batch)]
            await asyncio.gather(*tasks)
        elapsed = time.process_time() - start
    return elapsed / requests * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="hello,fastapi")
    p.add_argument("--requests", type=int, default=64 * 500)
    p.add_argument("--batch", type=int, default=64, help="requests per loop turn (default 64)")
    p.add_argument("--cpu", type=int, default=0, help="CPU to pin to (default 0)")
    args = p.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop
    except ImportError:
        sys.exit("app_cost.py needs uvloop, as the servers under test use it")
    print(f"CPython {sys.version.split()[0]}, uvloop {uvloop.__version__}, CPU {args.cpu}")
    for name in args.workloads.split(","):
        workload = WORKLOADS[name]
        path, _, query = workload.path.partition("?")
        app = load(workload.app)
        us = uvloop.run(measure(app, path, query.encode(), args.requests, args.batch))
        print(f"{name}: the app alone {us:.1f} µs of CPU per request")


if __name__ == "__main__":
    main()
