#!/usr/bin/env python3
"""Side-by-side HTTP benchmarks of rsgi, uvicorn, granian, gunicorn and a pure-Rust hyper server.

Method (see benches/README.md and the project's BENCHMARKING notes):
- each server runs the same app, pinned to CPU 0 (`taskset -c 0`); the load generator
  (`wrk -t1`, or `ws-load` for WebSocket) is pinned to CPU 1;
- warm up 2 s, then measure (6 s by default) with `--latency`;
- a run with socket errors or non-2xx/3xx responses counts as zero and is flagged;
- the server order alternates over the rounds and each server keeps its best run;
- RSS of the server's process tree is read with `ps` right after the measurement;
- the server tree's CPU time is read from /proc: requests per CPU-second of the server is the
  per-core figure that stays meaningful when other jobs share the machine.

Example:
    python benches/run.py --workloads hello,fastapi --servers rsgi,uvicorn,granian,hyper \\
        --rounds 2 --duration 6

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import http.client
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
REPO = BENCHES.parent
APPS = BENCHES / "apps"
LUA = BENCHES / "lua"
RESULTS = BENCHES / "results"
HYPER_DIR = BENCHES / "hyper-hello"
WS_LOAD_DIR = BENCHES / "ws-load"
HYPER_BIN = HYPER_DIR / "target" / "release" / "hyper-hello"
WS_LOAD_BIN = WS_LOAD_DIR / "target" / "release" / "ws-load"

HOST = "127.0.0.1"
MIB = 1024 * 1024
HELLO = b"Hello, world!"
# gunicorn arbiters with one worker class each: `gunicorn -k <class>`.
GUNICORN_WORKERS = {
    "gunicorn-rsgi": "rsgi.Worker",
    "gunicorn-uvicorn": "uvicorn_worker.UvicornWorker",
}
GUNICORN_SERVERS = tuple(GUNICORN_WORKERS)


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    name: str
    app: str  # module:attribute, imported from benches/apps
    path: str
    connections: int
    description: str
    method: str = "GET"
    lua: str | None = None  # wrk script in benches/lua
    probe_body: bytes = b""  # request body sent by the readiness probe
    expect: bytes | None = None  # exact response body expected by the probe
    expect_len: int | None = None  # or only its length
    websocket: bool = False
    h2: bool = False  # load by h2load over h2c (prior knowledge) instead of wrk
    servers: tuple[str, ...] = ("rsgi", "uvicorn", "granian", *GUNICORN_SERVERS)


WORKLOADS = {
    w.name: w
    for w in (
        Workload(
            "hello",
            "hello:app",
            "/",
            64,
            "raw ASGI, 13-byte text/plain body, content-length set",
            expect=HELLO,
            servers=("rsgi", "uvicorn", "granian", "hyper", *GUNICORN_SERVERS),
        ),
        Workload(
            "fastapi",
            "fastapi_app:app",
            "/items/5?q=x",
            64,
            'FastAPI GET /items/{item_id}?q=x -> {"item_id":5,"q":"x"}',
            expect=b'{"item_id":5,"q":"x"}',
        ),
        Workload(
            "sleep",
            "sleep:app",
            "/",
            512,
            "raw ASGI, asyncio.sleep(0.01) then 13 bytes; 512 connections",
            expect=HELLO,
        ),
        Workload(
            "upload",
            "upload:app",
            "/",
            64,
            "raw ASGI, POST 1 MiB body, app reads it all and answers its length",
            method="POST",
            lua="upload.lua",
            probe_body=b"x" * MIB,
            expect=str(MIB).encode(),
            servers=("rsgi", "uvicorn", "granian", "hyper", *GUNICORN_SERVERS),
        ),
        Workload(
            "download64k",
            "download:small",
            "/",
            64,
            "raw ASGI, GET answering a 64 KiB body",
            expect_len=64 * 1024,
            servers=("rsgi", "uvicorn", "granian", "hyper", *GUNICORN_SERVERS),
        ),
        Workload(
            "download",
            "download:app",
            "/",
            64,
            "raw ASGI, GET answering a 1 MiB body",
            expect_len=MIB,
            servers=("rsgi", "uvicorn", "granian", "hyper", *GUNICORN_SERVERS),
        ),
        Workload(
            "file",
            "file:app",
            "/",
            64,
            "Starlette FileResponse of a 1 MiB file (http.response.pathsend where announced)",
            expect_len=MIB,
            servers=("rsgi", "uvicorn", "granian", *GUNICORN_SERVERS),
        ),
        Workload(
            "h2",
            "hello:app",
            "/",
            16,
            "raw ASGI hello over h2c (prior knowledge): h2load -c16 -m32",
            expect=HELLO,
            h2=True,
            servers=("rsgi", "granian"),
        ),
        Workload(
            "h2fastapi",
            "fastapi_app:app",
            "/items/5?q=x",
            16,
            "FastAPI GET /items/{item_id}?q=x over h2c: h2load -c16 -m32",
            expect=b'{"item_id":5,"q":"x"}',
            h2=True,
            servers=("rsgi", "granian"),
        ),
        Workload(
            "ws",
            "ws_echo:app",
            "/",
            32,
            "raw ASGI WebSocket echo, 64-byte text messages, closed loop (ws-load)",
            expect=b"ok",
            websocket=True,
            servers=("rsgi", "uvicorn", "granian"),
        ),
    )
}

ALL_SERVERS = ("rsgi", "uvicorn", "granian", "hyper", *GUNICORN_SERVERS)


# --------------------------------------------------------------------------- servers


def _console_script(name: str) -> list[str]:
    """The console script installed next to this interpreter, else `python -m name`."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", name]


def server_command(
    server: str, app: str, port: int, workers: int, body_len: int | None = None
) -> list[str]:
    """`body_len`: the size of the body the workload's app answers, for the pure-Rust server
    (which has no app and otherwise answers `Hello, world!`)."""
    py = sys.executable
    if server == "rsgi":
        cmd = [py, "-m", "rsgi", app, "--no-access-log", "--port", str(port)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
    elif server == "uvicorn":
        cmd = [py, "-m", "uvicorn", app, "--no-access-log", "--loop", "uvloop"]
        cmd += ["--http", "httptools", "--port", str(port)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
    elif server == "granian":
        cmd = _console_script("granian")
        cmd += ["--interface", "asgi", "--loop", "uvloop", "--runtime-mode", "st"]
        cmd += ["--no-access-log", "--port", str(port)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        cmd.append(app)
    elif server in GUNICORN_WORKERS:
        # gunicorn's defaults otherwise: no access log, keep-alive 2 s, uvloop and httptools
        # for UvicornWorker (its "auto"), uvloop for rsgi.Worker.
        cmd = [py, "-m", "gunicorn", "-k", GUNICORN_WORKERS[server], "-w", str(workers)]
        cmd += ["-b", f"{HOST}:{port}", *_gunicorn_no_control_socket(), app]
    elif server == "hyper":
        # One current_thread runtime per "worker" (SO_REUSEPORT listeners).
        cmd = [str(HYPER_BIN), str(port), str(max(workers, 1))]
        if body_len is not None:
            cmd.append(str(body_len))
    else:
        raise ValueError(f"unknown server {server!r}")
    return cmd


@functools.cache
def _gunicorn_no_control_socket() -> list[str]:
    """gunicorn 25+ opens a control socket in ~/.gunicorn by default; the benches need none."""
    out = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True
    ).stdout
    return ["--no-control-socket"] if "--no-control-socket" in out else []


def pinned(cpus: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, rss KiB, command name), from `ps`."""
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid=,rss=,comm="], capture_output=True, text=True, check=True
    ).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3:
            comm = parts[3] if len(parts) == 4 else ""
            table[int(parts[0])] = (int(parts[1]), int(parts[2]), comm)
    return table


def process_tree(root: int) -> list[int]:
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree.append(pid)
            todo.extend(children.get(pid, ()))
    return tree


def tree_rss(root: int) -> list[dict]:
    """RSS of every process in the tree rooted at `root` (`ps -o rss=`)."""
    table = process_table()
    return [
        {"pid": pid, "comm": table[pid][2], "rss_kib": table[pid][1]}
        for pid in process_tree(root)
        if pid in table
    ]


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time consumed so far by the live processes of the tree."""
    total = 0
    for pid in process_tree(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLK_TCK


def parse_cpu_list(spec: str) -> set[int]:
    """taskset-style list ("0", "0-1,3") -> CPU numbers; empty means every CPU."""
    if not spec:
        return set(range(os.cpu_count() or 1))
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def cpu_busy_seconds(cpus: set[int]) -> tuple[float, float]:
    """Busy time (everything but idle and iowait) of the given CPUs, and the part of it the
    hypervisor stole for other virtual machines, from /proc/stat."""
    busy = steal = 0
    for line in Path("/proc/stat").read_text().splitlines():
        m = re.match(r"cpu(\d+) (.*)", line)
        if m and int(m.group(1)) in cpus:
            v = [int(x) for x in m.group(2).split()]
            busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal
            steal += v[7]
    return busy / _CLK_TCK, steal / _CLK_TCK


class Server:
    def __init__(self, name: str, cmd: list[str], log_path: Path):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=APPS,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals the whole tree
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # Workers left behind by a supervisor that died first.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def probe(workload: Workload, port: int) -> tuple[bool, str]:
    """One request; True when the answer is a 200 with the expected body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        headers = {}
        if workload.probe_body:
            headers["Content-Type"] = "application/octet-stream"
        conn.request(
            workload.method, workload.path, body=workload.probe_body or None, headers=headers
        )
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    if resp.status != 200:
        return False, f"status {resp.status}"
    if workload.expect is not None and body != workload.expect:
        return False, f"unexpected body {body[:80]!r}"
    if workload.expect_len is not None and len(body) != workload.expect_len:
        return False, f"unexpected body length {len(body)}"
    return True, "ok"


def wait_ready(server: Server, workload: Workload, port: int, timeout: float) -> str | None:
    """None once the server answers correctly, else the reason it did not."""
    deadline = time.monotonic() + timeout
    reason = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            return f"server exited with code {server.proc.returncode}"
        ok, reason = probe(workload, port)
        if ok:
            return None
        time.sleep(0.2)
    return f"not ready after {timeout:.0f}s ({reason})"


# --------------------------------------------------------------------------- load generators


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if not m:
        raise ValueError(f"cannot parse latency {value!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str) -> dict:
    res: dict = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": None}
    res["socket_errors"] = 0
    res["non_2xx"] = 0
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        res["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", output):
        res["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+\w+)\s*$", output, re.M):
            res[key] = _to_ms(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        res["socket_errors"] = sum(int(g) for g in m.groups())
        res["socket_errors_detail"] = m.group(0)
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        res["non_2xx"] = int(m.group(1))
    return res


def run_load(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run a load generator to completion; (exit code, combined output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out.decode(errors="replace")


def run_measured(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    """Like run_load, plus the CPU seconds the load generator used (it is the only
    child reaped meanwhile, so the RUSAGE_CHILDREN delta is its own)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, out = run_load(cmd, timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return code, out, cpu


def wrk_command(args, workload: Workload, port: int, duration: float, latency: bool) -> list[str]:
    conns = args.connections or workload.connections
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{conns}", f"-d{duration:g}s"]
    if latency:
        cmd.append("--latency")
    if workload.lua:
        cmd += ["-s", str(LUA / workload.lua)]
    cmd.append(f"http://{HOST}:{port}{workload.path}")
    return pinned(args.load_cpus, cmd)


def h2load_command(args, workload: Workload, port: int, duration: float) -> list[str]:
    conns = args.connections or workload.connections
    threads = min(args.wrk_threads, conns)
    cmd = ["h2load", f"-c{conns}", f"-t{threads}", f"-m{H2_STREAMS}", f"-D{duration:g}"]
    cmd.append(f"http://{HOST}:{port}{workload.path}")
    return pinned(args.load_cpus, cmd)


#: Streams h2load keeps open on each connection.
H2_STREAMS = 32


def ws_command(args, workload: Workload, port: int) -> list[str]:
    conns = args.connections or workload.connections
    cmd = [str(WS_LOAD_BIN), f"ws://{HOST}:{port}{workload.path}", "--clients", str(conns)]
    cmd += ["--warmup", f"{args.warmup:g}", "--duration", f"{args.duration:g}"]
    return pinned(args.load_cpus, cmd)


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    workload: str
    server: str
    round: int
    rps: float = 0.0  # requests/s (messages/s for ws); 0 when flagged
    raw_rps: float | None = None  # as measured, even when flagged
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_tree_mib: float | None = None
    rss_max_mib: float | None = None  # largest single process (the worker)
    server_cpu_pct: float | None = None
    load_cpu_pct: float | None = None
    # CPU time of the server's and the load generator's CPUs used by anything else
    # (other jobs on a shared machine): a run with much of it is noisy, repeat it.
    other_cpu_pct: float | None = None
    # The part of other_cpu_pct that the hypervisor took for other virtual machines.
    steal_pct: float | None = None
    flags: list[str] = field(default_factory=list)  # any flag makes the run count as zero
    notes: list[str] = field(default_factory=list)  # warnings that do not
    processes: list[dict] = field(default_factory=list)
    server_cmd: list[str] = field(default_factory=list)
    load_cmd: list[str] = field(default_factory=list)
    load_output: str = ""
    log: str = ""

    @property
    def per_cpu_s(self) -> float:
        """Requests (or messages) per second of the server's own CPU time: the per-core
        figure that holds up when other jobs share the machine. 0 when flagged."""
        if not self.rps or not self.server_cpu_pct:
            return 0.0
        return self.rps / (self.server_cpu_pct / 100)


def run_once(args, workload: Workload, server_name: str, rnd: int, log_dir: Path) -> Run:
    port = free_port()
    body_len = None if workload.method == "POST" else workload.expect_len
    command = server_command(server_name, workload.app, port, args.workers, body_len)
    cmd = pinned(args.server_cpus, command)
    cmd += args.extra.get(server_name, [])
    log_path = log_dir / f"{workload.name}-{server_name}-r{rnd}.log"
    run = Run(workload.name, server_name, rnd, server_cmd=cmd, log=str(log_path))
    server = Server(server_name, cmd, log_path)
    server.start()
    try:
        problem = wait_ready(server, workload, port, args.start_timeout)
        if problem:
            run.flags.append(f"start failed: {problem}")
            tail = server.log_tail()
            print(f"    {server_name}: {problem}\n" + _indent(tail, "      | "), flush=True)
            return run

        if workload.websocket:
            load_cmd = ws_command(args, workload, port)
        elif workload.h2:
            if args.warmup > 0:
                run_load(h2load_command(args, workload, port, args.warmup), args.warmup + 30)
            load_cmd = h2load_command(args, workload, port, args.duration)
        else:
            warm = wrk_command(args, workload, port, args.warmup, latency=False)
            if args.warmup > 0:
                run_load(warm, args.warmup + 30)
            load_cmd = wrk_command(args, workload, port, args.duration, latency=True)
        run.load_cmd = load_cmd

        # CPUs of the server and of the load generator (every CPU when one is unpinned).
        cpus = parse_cpu_list(args.server_cpus) | parse_cpu_list(args.load_cpus)
        busy0, steal0 = cpu_busy_seconds(cpus)
        cpu0, t0 = tree_cpu_seconds(server.pid), time.monotonic()
        code, out, load_cpu = run_measured(load_cmd, args.warmup + args.duration + 60)
        wall = time.monotonic() - t0
        cpu1 = tree_cpu_seconds(server.pid)
        busy1, steal1 = cpu_busy_seconds(cpus)
        run.processes = tree_rss(server.pid)  # right after the run, before stopping
        run.load_output = out

        if workload.websocket:
            # ws-load's wall time includes its warm-up; CPU shares cover the whole call.
            _parse_ws(run, out)
        elif workload.h2:
            _parse_h2load(run, out)
        else:
            _parse_wrk_run(run, out)
        run.server_cpu_pct = round(100 * (cpu1 - cpu0) / wall, 1) if wall > 0 else None
        run.load_cpu_pct = round(100 * load_cpu / wall, 1) if wall > 0 else None
        if wall > 0:
            other = (busy1 - busy0) - (cpu1 - cpu0) - load_cpu
            run.other_cpu_pct = round(max(0.0, 100 * other / wall), 1)
            run.steal_pct = round(100 * (steal1 - steal0) / wall, 1)
        if code != 0:
            run.flags.append(f"load generator exit code {code}")
        if not server.alive():
            run.flags.append("server died during the run")
        if run.processes:
            rss = [p["rss_kib"] for p in run.processes]
            run.rss_tree_mib = round(sum(rss) / 1024, 1)
            run.rss_max_mib = round(max(rss) / 1024, 1)
        run.rps = 0.0 if run.flags else (run.raw_rps or 0.0)
        return run
    finally:
        server.stop()


def _parse_wrk_run(run: Run, out: str) -> None:
    res = parse_wrk(out)
    run.raw_rps, run.p50_ms, run.p99_ms = res["rps"], res["p50_ms"], res["p99_ms"]
    if res["rps"] is None:
        run.flags.append("could not parse wrk output")
    if res["socket_errors"]:
        run.flags.append(res["socket_errors_detail"])
    if res["non_2xx"]:
        run.flags.append(f"Non-2xx or 3xx responses: {res['non_2xx']}")


def _parse_h2load(run: Run, out: str) -> None:
    """h2load reports throughput and outcomes, but no latency percentiles."""
    if m := re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out):
        run.raw_rps = float(m.group(1))
    else:
        run.flags.append("could not parse h2load output")
    if m := re.search(r"\d+ succeeded, (\d+) failed, (\d+) errored", out):
        if int(m.group(1)) or int(m.group(2)):
            run.flags.append(m.group(0))
    if m := re.search(r"(\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out):
        if int(m.group(3)) or int(m.group(4)):
            run.flags.append(f"status codes: {m.group(0)}")


def _parse_ws(run: Run, out: str) -> None:
    m = re.search(r"^RESULT (\{.*\})\s*$", out, re.M)
    if not m:
        run.flags.append("could not parse ws-load output")
        return
    res = json.loads(m.group(1))
    run.raw_rps = res["msgs_per_s"]
    run.p50_ms = res["p50_us"] / 1000
    run.p99_ms = res["p99_us"] / 1000
    if res["errors"]:
        run.flags.append(f"ws-load client errors: {res['errors']}")


def run_line(r: Run) -> str:
    cpu = "/".join(_fmt(v, ".0f") for v in (r.server_cpu_pct, r.load_cpu_pct, r.other_cpu_pct))
    line = (
        f"  {r.workload:9} round {r.round + 1} {r.server:8} {r.raw_rps or 0:>11,.0f}/s  "
        f"p50 {_fmt(r.p50_ms, '.2f')} ms  p99 {_fmt(r.p99_ms, '.2f')} ms  "
        f"rss {_fmt(r.rss_tree_mib, '.1f')} MiB  cpu% srv/load/other {cpu}  "
        f"{r.per_cpu_s:,.0f}/CPU-s"
    )
    if r.flags:
        line += f"  FLAGGED (counts as 0): {'; '.join(r.flags)}"
    if r.notes:
        line += f"  {'; '.join(r.notes)}"
    return line


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# --------------------------------------------------------------------------- report


def best_runs(runs: list[Run]) -> dict[tuple[str, str], Run]:
    best: dict[tuple[str, str], Run] = {}
    for r in runs:
        key = (r.workload, r.server)
        cur = best.get(key)
        if cur is None or (r.rps, -len(r.flags)) > (cur.rps, -len(cur.flags)):
            best[key] = r
    return best


def best_efficiency(runs: list[Run]) -> dict[tuple[str, str], float]:
    best: dict[tuple[str, str], float] = {}
    for r in runs:
        key = (r.workload, r.server)
        best[key] = max(best.get(key, 0.0), r.per_cpu_s)
    return best


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _ratio(value: float, base: Run | None) -> str:
    if base is None or not base.rps or not value:
        return "-"
    return f"{value / base.rps:.2f}x"


def _per_cpu_ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base and value else "-"


def markdown_table(workloads: list[str], servers: list[str], best: dict, efficiency: dict) -> str:
    head = (
        "| workload | server | req/s | p50 ms | p99 ms | RSS MiB (tree/max) "
        "| CPU % srv/load/other | vs uvicorn | vs granian "
        "| req per CPU-s | per CPU-s vs uvicorn | per CPU-s vs granian | flags, notes |"
    )
    lines = [head, "|" + "---|" * 13]
    for w in workloads:
        for s in servers:
            r = best.get((w, s))
            if r is None:
                continue
            rss = f"{_fmt(r.rss_tree_mib, '.1f')} / {_fmt(r.rss_max_mib, '.1f')}"
            cpu = "/".join(
                _fmt(v, ".0f") for v in (r.server_cpu_pct, r.load_cpu_pct, r.other_cpu_pct)
            )
            flags = "; ".join(r.flags + r.notes)
            unit = " msg/s" if WORKLOADS[w].websocket else ""
            lines.append(
                f"| {w} | {s} | {r.rps:,.0f}{unit} | {_fmt(r.p50_ms, '.2f')} "
                f"| {_fmt(r.p99_ms, '.2f')} | {rss} | {cpu} "
                f"| {_ratio(r.rps, best.get((w, 'uvicorn')))} "
                f"| {_ratio(r.rps, best.get((w, 'granian')))} "
                f"| {efficiency.get((w, s), 0):,.0f} "
                f"| {_per_cpu_ratio(efficiency.get((w, s), 0), efficiency.get((w, 'uvicorn')))} "
                f"| {_per_cpu_ratio(efficiency.get((w, s), 0), efficiency.get((w, 'granian')))} "
                f"| {flags} |"
            )
    return "\n".join(lines)


#: (workload, peer) -> one (req/s ratio, req per CPU-s ratio) per round.
Pairs = dict[tuple[str, str], list[tuple[float, float]]]


def paired_ratios(runs: list[Run], subject: str) -> Pairs:
    """`subject`'s (req/s, req per CPU-s) over each peer's, round by round.

    Within a round the servers run back to back, so both sides of a ratio met much the same
    disturbance from other jobs; the median of these holds up better on a shared machine than
    a ratio of each server's best round, which may come from different spells.
    """
    by_round: dict[tuple[str, int], dict[str, Run]] = {}
    for r in runs:
        by_round.setdefault((r.workload, r.round), {})[r.server] = r
    pairs: Pairs = {}
    for (workload, _), servers in sorted(by_round.items()):
        mine = servers.get(subject)
        if mine is None or not mine.rps:
            continue
        for peer, theirs in servers.items():
            if peer != subject and theirs.rps and theirs.per_cpu_s and mine.per_cpu_s:
                pairs.setdefault((workload, peer), []).append(
                    (mine.rps / theirs.rps, mine.per_cpu_s / theirs.per_cpu_s)
                )
    return pairs


def paired_table(subject: str, pairs: Pairs) -> str:
    lines = [
        f"| workload | {subject} vs | rounds | median, req/s | median, per CPU-s "
        "| per CPU-s, each round |",
        "|---|---|---|---|---|---|",
    ]
    for (workload, peer), ratios in pairs.items():
        rps = statistics.median(r for r, _ in ratios)
        cpu = statistics.median(c for _, c in ratios)
        each = ", ".join(f"{c:.2f}" for _, c in ratios)
        lines.append(f"| {workload} | {peer} | {len(ratios)} | {rps:.2f}x | {cpu:.2f}x | {each} |")
    return "\n".join(lines)


def _version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {
            name: _dist_version(name)
            for name in (
                "rsgi",
                "uvicorn",
                "granian",
                "gunicorn",
                "uvicorn-worker",
                "fastapi",
                "uvloop",
                "httptools",
            )
        },
        "wrk": _version(["wrk", "-v"]),
        "git": _version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="workloads:\n"
        + "\n".join(f"  {w.name:9} {w.description}" for w in WORKLOADS.values()),
    )
    p.add_argument(
        "--workloads",
        default="hello,fastapi,download64k,download",
        help="comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--servers",
        default="rsgi,uvicorn,granian,hyper",
        help="comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="rounds, server order alternating (default: 2)"
    )
    p.add_argument("--duration", type=float, default=6.0, help="measured seconds (default: 6)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (default: 2)")
    p.add_argument(
        "--connections", type=int, default=0, help="override each workload's connection count"
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default: 1)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server worker processes; >1 disables pinning by default",
    )
    p.add_argument(
        "--server-cpus",
        default=None,
        help="taskset CPU list for servers (default: 0; none when --workers>1; '' = none)",
    )
    p.add_argument(
        "--load-cpus",
        default=None,
        help="taskset CPU list for the load generator (default: 1; none when --workers>1)",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="SERVER=ARGS",
        help="extra command-line arguments for one server, e.g. --extra 'rsgi=--threads 2'",
    )
    p.add_argument(
        "--start-timeout", type=float, default=30.0, help="seconds to wait for a server to answer"
    )
    p.add_argument(
        "--pause", type=float, default=1.0, help="seconds to rest between runs (default: 1)"
    )
    p.add_argument(
        "--noisy",
        type=float,
        default=10.0,
        help="warn when other jobs used more than this %% of a CPU on the benchmark's CPUs "
        "(default: 10)",
    )
    p.add_argument(
        "--no-build", action="store_true", help="do not run cargo build for hyper-hello / ws-load"
    )
    p.add_argument(
        "--output", type=Path, default=None, help="JSON file (default: benches/results/<time>.json)"
    )
    args = p.parse_args(argv)

    args.workloads = [w for w in args.workloads.split(",") if w]
    args.servers = [s for s in args.servers.split(",") if s]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r} (choose from {', '.join(WORKLOADS)})")
    for s in args.servers:
        if s not in ALL_SERVERS:
            p.error(f"unknown server {s!r} (choose from {', '.join(ALL_SERVERS)})")
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.workers < 1:
        p.error("--rounds, --duration and --workers must be positive")
    multi = args.workers > 1
    if args.server_cpus is None:
        args.server_cpus = "" if multi else "0"
    if args.load_cpus is None:
        args.load_cpus = "" if multi else "1"
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        name, sep, rest = item.partition("=")
        if not sep or name not in ALL_SERVERS:
            p.error(f"--extra expects SERVER=ARGS, got {item!r}")
        extra.setdefault(name, []).extend(shlex.split(rest))
    args.extra = extra
    return args


def _cargo_build(project: Path) -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        sys.exit("cargo not found: build benches/hyper-hello and benches/ws-load by hand")
    print(f"building {project.relative_to(REPO)} (cargo build --release)", flush=True)
    subprocess.run(
        [cargo, "build", "--release", "--quiet", "--manifest-path", str(project / "Cargo.toml")],
        check=True,
    )


def check_prerequisites(args, plan: list[tuple[Workload, list[str]]]) -> None:
    servers = {s for _, ss in plan for s in ss}
    needs_wrk = any(not w.websocket and not w.h2 for w, _ in plan)
    needs_ws = any(w.websocket for w, _ in plan)
    if needs_wrk and shutil.which("wrk") is None:
        sys.exit("wrk not found (apt-get install wrk)")
    if any(w.h2 for w, _ in plan) and shutil.which("h2load") is None:
        sys.exit("h2load not found (apt-get install nghttp2-client)")
    if (args.server_cpus or args.load_cpus) and shutil.which("taskset") is None:
        sys.exit("taskset not found (util-linux)")
    for server, module in (("gunicorn-rsgi", "gunicorn"), ("gunicorn-uvicorn", "uvicorn_worker")):
        if server in servers and importlib.util.find_spec(module) is None:
            sys.exit(f"{server} needs {module} (pip install gunicorn uvicorn-worker)")
    if servers & {"rsgi", "gunicorn-rsgi"}:
        probe_cmd = [sys.executable, "-c", "import rsgi._rsgi"]
        if subprocess.run(probe_cmd, capture_output=True).returncode != 0:
            sys.exit(
                "rsgi is not importable by this interpreter (build it with "
                "`maturin develop --release`), or leave it out with --servers"
            )
    for project, binary, wanted in (
        (HYPER_DIR, HYPER_BIN, "hyper" in servers),
        (WS_LOAD_DIR, WS_LOAD_BIN, needs_ws),
    ):
        if not wanted:
            continue
        if not args.no_build:
            _cargo_build(project)
        if not binary.exists():
            sys.exit(f"{binary} is missing: cargo build --release in {project}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # 512 connections and more: make sure neither wrk nor the servers run out of fds.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    plan = []
    for name in args.workloads:
        w = WORKLOADS[name]
        servers = [s for s in args.servers if s in w.servers]
        if servers:
            plan.append((w, servers))
    if not plan:
        sys.exit("nothing to run: no selected server supports the selected workloads")
    check_prerequisites(args, plan)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS / f"{stamp}.json"
    log_dir = RESULTS / "logs" / stamp
    info = machine_info()
    print(
        f"{info['cpu']} x{info['cpus']}, load average {info['loadavg_at_start'][0]:.2f}; "
        f"server cpus {args.server_cpus or 'any'}, load cpus {args.load_cpus or 'any'}, "
        f"workers {args.workers}, {args.rounds} round(s) of {args.warmup:g}s warm-up "
        f"+ {args.duration:g}s",
        flush=True,
    )

    runs: list[Run] = []
    try:
        for w, servers in plan:
            for rnd in range(args.rounds):
                order = servers if rnd % 2 == 0 else servers[::-1]
                for s in order:
                    r = run_once(args, w, s, rnd, log_dir)
                    runs.append(r)
                    if r.other_cpu_pct is not None and r.other_cpu_pct > args.noisy:
                        stolen = (
                            f" ({r.steal_pct:.0f}% stolen by the hypervisor)" if r.steal_pct else ""
                        )
                        r.notes.append(
                            f"noisy: other jobs took {r.other_cpu_pct:.0f}% of a CPU{stolen}"
                        )
                    print(run_line(r), flush=True)
                    time.sleep(args.pause)
    except KeyboardInterrupt:
        print("interrupted: reporting the runs done so far", file=sys.stderr)

    best = best_runs(runs)
    efficiency = best_efficiency(runs)
    table = markdown_table([w.name for w, _ in plan], args.servers, best, efficiency)
    print()
    print(table)
    subject = "rsgi" if "rsgi" in args.servers else args.servers[0]
    pairs = paired_ratios(runs, subject)
    if pairs:
        print()
        print(f"{subject} against each peer in the same round (the steadier comparison):")
        print(paired_table(subject, pairs))

    output.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": info,
        "config": {k: (v if not isinstance(v, Path) else str(v)) for k, v in vars(args).items()},
        "best": [asdict(r) for r in best.values()],
        "best_per_cpu_s": {f"{w}/{srv}": round(v) for (w, srv), v in efficiency.items()},
        "runs": [asdict(r) for r in runs],
        "paired": {
            f"{w}/{peer}": [{"rps": round(a, 3), "per_cpu_s": round(b, 3)} for a, b in ratios]
            for (w, peer), ratios in pairs.items()
        },
        "table": table,
    }
    output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nresults: {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")
    print(f"server logs: {log_dir.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
