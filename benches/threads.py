"""Where each server's CPU time goes per request: user and kernel time, and context switches,
for every thread of its process tree, under the same pinned load as run.py.

run.py says how fast each server is; this says why. Two servers that run a similar number of
instructions (benches/instructions.py) can still differ in time by how often their threads hand
work to each other (each hand-off is a futex call and a context switch) and by how many system
calls a request costs.

    python benches/threads.py                       # hello: rsgi, uvicorn, granian
    python benches/threads.py --workload fastapi --servers rsgi,uvicorn --duration 10

Figures come from /proc/PID/task/TID/stat (utime, stime) and .../status (voluntary and
involuntary context switches), read just before and just after one wrk run. This is a
measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import run

_TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
_SWITCHES = re.compile(r"^(voluntary|nonvoluntary)_ctxt_switches:\s+(\d+)", re.M)


@dataclass
class ThreadTimes:
    name: str
    user_us: float
    sys_us: float
    voluntary: float  # context switches
    involuntary: float


def snapshot(root: int) -> dict[tuple[int, int], ThreadTimes]:
    """Every thread of the process tree rooted at `root`, keyed by (pid, tid)."""
    threads = {}
    for pid in run.process_tree(root):
        task_dir = Path(f"/proc/{pid}/task")
        try:
            tids = [int(t.name) for t in task_dir.iterdir()]
        except OSError:
            continue  # the process ended meanwhile
        for tid in tids:
            try:
                stat = (task_dir / str(tid) / "stat").read_text()
                status = (task_dir / str(tid) / "status").read_text()
            except OSError:
                continue
            # The name may hold spaces and parentheses; the fields follow the last ')'.
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            switches = dict(_SWITCHES.findall(status))
            threads[(pid, tid)] = ThreadTimes(
                name,
                int(fields[11]) * _TICK_US,
                int(fields[12]) * _TICK_US,
                int(switches["voluntary"]),
                int(switches["nonvoluntary"]),
            )
    return threads


def per_request(
    before: dict[tuple[int, int], ThreadTimes],
    after: dict[tuple[int, int], ThreadTimes],
    requests: int,
) -> list[ThreadTimes]:
    """What each thread alive at both ends spent, and how often it switched, per request,
    busiest first; threads that did nothing are left out."""
    rows = []
    for key, b in after.items():
        a = before.get(key)
        if a is None:
            continue
        row = ThreadTimes(
            b.name,
            (b.user_us - a.user_us) / requests,
            (b.sys_us - a.sys_us) / requests,
            (b.voluntary - a.voluntary) / requests,
            (b.involuntary - a.involuntary) / requests,
        )
        if row.user_us + row.sys_us > 0 or row.voluntary + row.involuntary > 0:
            rows.append(row)
    rows.sort(key=lambda r: r.user_us + r.sys_us, reverse=True)
    return rows


def measure(args, server: str, workload: run.Workload) -> tuple[list[ThreadTimes], float]:
    port = run.free_port()
    cmd = run.pinned(args.server_cpus, run.server_command(server, workload.app, port, 1))
    log = run.RESULTS / "logs" / f"threads-{server}.log"
    proc = run.Server(server, cmd, log)
    proc.start()
    try:
        problem = run.wait_ready(proc, workload, port, timeout=60)
        if problem is not None:
            sys.exit(f"{server} did not start: {problem}\n{proc.log_tail()}")
        load = argparse.Namespace(
            connections=args.connections, wrk_threads=1, load_cpus=args.load_cpus
        )
        subprocess.run(
            run.wrk_command(load, workload, port, args.warmup, latency=False),
            capture_output=True,
            check=True,
        )
        before = snapshot(proc.pid)
        out = subprocess.run(
            run.wrk_command(load, workload, port, args.duration, latency=False),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        after = snapshot(proc.pid)
    finally:
        proc.stop()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"{server}: wrk saw errors:\n{out}")
    return per_request(before, after, requests), requests / args.duration


def report(server: str, rows: list[ThreadTimes], rate: float) -> str:
    lines = [f"{server}: {rate:,.0f} req/s"]
    for r in rows:
        lines.append(
            f"  {r.name:<18} user {r.user_us:5.2f} µs  sys {r.sys_us:5.2f} µs  "
            f"switches voluntary {r.voluntary:.3f}  involuntary {r.involuntary:.3f}"
        )
    lines.append(
        f"  {'total':<18} user {sum(r.user_us for r in rows):5.2f} µs  "
        f"sys {sum(r.sys_us for r in rows):5.2f} µs  "
        f"switches voluntary {sum(r.voluntary for r in rows):.3f}  "
        f"involuntary {sum(r.involuntary for r in rows):.3f}   (per request)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="hello", choices=sorted(run.WORKLOADS))
    parser.add_argument("--servers", default="rsgi,uvicorn,granian")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--connections", type=int, default=None)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    args = parser.parse_args(argv)
    workload = run.WORKLOADS[args.workload]
    for server in args.servers.split(","):
        rows, rate = measure(args, server, workload)
        print(report(server, rows, rate), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
