"""Several hosts on one machine, for tests/test_cluster.py.

Each host is a Linux network namespace: a client, a load balancer and two or more app hosts,
each with one veth link to a bridge that lives in a namespace of its own (the switch). All
addresses (10.77.0.0/24) exist only inside these namespaces; nothing is added to the
machine's own network namespace, and deleting the namespaces deletes every link.

Processes run in a host with ``ip netns exec NS ...`` (ip enters the namespace and execs the
command, so the Popen pid is the process itself). The test's own clients (the load generator,
WebSocket clients, probes) run in threads that enter the client or load balancer namespace
with setns(2), which moves only the calling thread; sockets keep the namespace they were made
in.

Namespaces are named ``rsgic-<pid>-<host>`` after the pytest process that made them, so that
concurrent runs leave each other alone and a run can remove what a crashed run left behind
(namespaces whose pid is no longer a live process, with every process still in them).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import conftest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DEPLOY = REPO_ROOT / "deploy"
APPS_DIR = TESTS_DIR / "apps"
#: tests/apps/deploy_app.py: JSON naming the host ("instance") and the worker pid; ``/slow``
#: takes 0.2 s; a WebSocket echoes "<instance>:<text>".
APP = "deploy_app:app"

PREFIX = "rsgic-"
SUBNET = "10.77.0"
LB_ADDR = f"{SUBNET}.1"
CLIENT_ADDR = f"{SUBNET}.2"
APP_PORT = 8000
LB_PORT = 8080
CLONE_NEWNET = 0x40000000


# --------------------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    binary = find_tool("ip")
    assert binary, "ip (iproute2) is not installed"
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if sys.platform != "linux":
        return f"network namespaces are Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "making network namespaces needs root (run the tests as root, as CI does)"
    if find_tool("ip") is None:
        return "ip is not installed (Debian: apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def netns_names() -> list[str]:
    result = ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def netns_pids(name: str) -> list[int]:
    result = ip("netns", "pids", name, check=False)
    return [int(pid) for pid in result.stdout.split()]


def kill_netns_processes(name: str) -> None:
    """SIGKILL every process in a namespace and wait (bounded) until none is left."""
    deadline = time.monotonic() + 10
    while True:
        pids = netns_pids(name)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes left in namespace {name}: {pids}")
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def clean_leftovers() -> list[str]:
    """Remove the namespaces (and their processes) of earlier runs that are no longer alive."""
    removed = []
    for name in netns_names():
        match = re.fullmatch(rf"{PREFIX}(\d+)-[\w-]+", name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and process_alive(pid):
            continue  # another test run, still going
        kill_netns_processes(name)
        ip("netns", "del", name, check=False)
        removed.append(name)
    return removed


_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into a named network namespace."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str):
    """Run a block of the calling thread in a namespace, then go back to where it was."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter_netns(name)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


class Network:
    """Hosts (name -> address) on one bridge, each host its own namespace."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = dict(hosts)
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        assert host in self.hosts, host
        return f"{self.tag}-{host}"

    def create(self) -> None:
        try:
            self._add(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
            for host, addr in self.hosts.items():
                ns = self.ns(host)
                self._add(ns)
                ip("-n", ns, "link", "set", "lo", "up")
                # One veth pair made straight into the two namespaces: eth0 in the host,
                # the host's name in the switch, plugged into the bridge.
                ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", host,
                   "netns", self.switch)  # fmt: skip
                ip("-n", self.switch, "link", "set", host, "master", "br0", "up")
                ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise

    def _add(self, name: str) -> None:
        ip("netns", "add", name)
        self.made.append(name)

    def destroy(self) -> None:
        """Kill every process in the hosts, then delete the namespaces (and so the links)."""
        errors = []
        for name in reversed(self.made):
            try:
                kill_netns_processes(name)
            except RuntimeError as exc:
                errors.append(str(exc))
            ip("netns", "del", name, check=False)
        self.made.clear()
        left = [name for name in netns_names() if name.startswith(self.tag + "-")]
        assert not left and not errors, f"left behind: {left} {errors}"


# --------------------------------------------------------------------------------------
# Processes in a namespace
# --------------------------------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RSGI_", "UVICORN_"))}
    env.pop("WEB_CONCURRENCY", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class Process:
    """One command run in a namespace, its output in files under ``workdir``."""

    def __init__(self, ns: str, name: str, cmd: list[str], workdir: Path, env=None) -> None:
        self.ns = ns
        self.name = name
        self.cmd = cmd
        self.workdir = workdir
        self.log = workdir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"--- start {time.monotonic():.3f}: {' '.join(self.cmd)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [find_tool("ip"), "netns", "exec", self.ns, *self.cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(self.env),
                cwd=self.workdir,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{self.name} did not exit in {timeout}s\n{self.tail()}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        """TERM, and KILL if it does not exit in ``timeout``. A second TERM is sent after a
        second, which ends rsgi's --shutdown-delay at once."""
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
            return
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def tail(self, size: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}):\n{text[-size:]}"


def wait_for(predicate, timeout: float, message: str = "condition", interval: float = 0.05):
    """conftest's wait_for, saying what it waited for when it times out."""
    failure = f"timed out after {timeout}s waiting for: {message}"
    return conftest.wait_for(predicate, timeout, interval, failure)


def http_get(ns: str, host: str, port: int, path: str, timeout: float = 2.0):
    """(status, body) of one GET on a fresh connection made from namespace ``ns``; None when
    no connection or no answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        with in_netns(ns):
            conn.connect()  # the socket is made here, in the namespace
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# rsgi on an app host, with the options of deploy/systemd/rsgi.service
# --------------------------------------------------------------------------------------


def systemd_rsgi_options() -> list[str]:
    """The options of ExecStart= in deploy/systemd/rsgi.service (the app name dropped)."""
    unit = (DEPLOY / "systemd" / "rsgi.service").read_text()
    match = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", unit, re.M)
    assert match, "no ExecStart= in rsgi.service"
    words = match.group(1).replace("\\\n", " ").split()
    assert words[0].endswith("/rsgi") and not words[1].startswith("-"), words
    return words[2:]


def option_value(options: list[str], name: str) -> str:
    return options[options.index(name) + 1]


def host_options(options: list[str], *, host: str, workers: int, trusted: str) -> list[str]:
    """rsgi.service's options, for TCP on ``host`` instead of its unix socket, as its own
    comment says: --uds replaced by --host/--port, --forwarded-allow-ips the balancer."""
    out = []
    words = iter(options)
    for word in words:
        if word in ("--uds", "--workers", "--forwarded-allow-ips"):
            next(words)
            continue
        out.append(word)
    return [
        *out,
        "--host",
        host,
        "--port",
        str(APP_PORT),
        "--workers",
        str(workers),
        "--forwarded-allow-ips",
        trusted,
        "--no-access-log",
    ]


class AppHost:
    """rsgi -w N on one host, stopped and started again under the same address."""

    def __init__(self, name: str, addr: str, ns: str, probe_ns: str, workdir: Path) -> None:
        self.name = name
        self.addr = addr
        self.probe_ns = probe_ns
        self.options = host_options(systemd_rsgi_options(), host=addr, workers=2, trusted=LB_ADDR)
        cmd = [sys.executable, "-m", "rsgi", APP, "--app-dir", str(APPS_DIR), *self.options]
        self.process = Process(ns, name, cmd, workdir, env={"INSTANCE": name})
        self.starts = 0

    @property
    def shutdown_delay(self) -> float:
        return float(option_value(self.options, "--shutdown-delay"))

    def health(self) -> int | None:
        """The status of /healthz, asked from the balancer's namespace; None if no answer."""
        answer = http_get(self.probe_ns, self.addr, APP_PORT, "/healthz", timeout=1.0)
        return answer[0] if answer else None

    def start(self, wait: bool = True) -> None:
        self.process.start()
        self.starts += 1
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.health() != 200:
            # An rsgi being rebuilt into site-packages by someone else can fail to start for
            # a moment: try again (bounded by the deadline).
            if not self.process.alive():
                assert time.monotonic() < deadline, f"{self.name} exits\n{self.process.tail()}"
                time.sleep(1)
                self.process.start()
            assert time.monotonic() < deadline, f"{self.name} not ready\n{self.process.tail()}"
            time.sleep(0.1)

    def worker_pids(self) -> set[int]:
        """The pids of the master's live children (the workers)."""
        pids = set()
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (task / "children").read_text().split())
        return {pid for pid in pids if process_alive(pid)}

    def crash(self) -> None:
        """SIGKILL every process of the host at once (the master and its workers)."""
        pids = netns_pids(self.process.ns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(5)
        wait_for(lambda: not netns_pids(self.process.ns), 5, f"{self.name}'s processes to die")


# --------------------------------------------------------------------------------------
# Load balancers, configured from deploy/
# --------------------------------------------------------------------------------------


def haproxy_config(apps: list[AppHost], workdir: Path) -> str:
    """deploy/haproxy/haproxy.cfg with this network's addresses, and a stats socket."""
    cfg = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert cfg.count("\n    bind :80\n") == 1
    cfg = cfg.replace("\n    bind :80\n", f"\n    bind {LB_ADDR}:{LB_PORT}\n")
    servers = re.findall(r"^    server \S+ [\d.]+:\d+( .*)?$", cfg, re.M)
    assert len(servers) >= 2, "haproxy.cfg should list several servers"
    lines = "".join(f"    server {a.name} {a.addr}:{APP_PORT}{servers[0]}\n" for a in apps)
    cfg = re.sub(r"(^    server \S+ [\d.]+:\d+.*\n)+", lines, cfg, count=1, flags=re.M)
    stats = f"    stats socket {workdir / 'haproxy.sock'} mode 600 level admin\n"
    # HAProxy needs two descriptors per connection: where the hard limit on open files is
    # below that (some containers), lower the global maxconn to fit rather than fail.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    maxconn = int(re.search(r"^    maxconn (\d+)$", cfg, re.M).group(1))
    if limit != resource.RLIM_INFINITY and 2 * maxconn + 100 > limit:
        cfg = cfg.replace(f"    maxconn {maxconn}\n", f"    maxconn {(limit - 100) // 2}\n", 1)
    assert cfg.count("\nglobal\n") == 1
    return cfg.replace("\nglobal\n", "\nglobal\n" + stats)


def haproxy_check_timing() -> tuple[float, int, int]:
    """(inter seconds, fall, rise) of deploy/haproxy/haproxy.cfg's default-server."""
    cfg = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    line = re.search(r"^\s*default-server (.*)$", cfg, re.M).group(1).split()
    inter = line[line.index("inter") + 1]
    seconds = float(inter[:-2]) / 1000 if inter.endswith("ms") else float(inter.rstrip("s"))
    return seconds, int(line[line.index("fall") + 1]), int(line[line.index("rise") + 1])


def nginx_config(apps: list[AppHost], workdir: Path, build_info: str) -> str:
    """deploy/nginx/rsgi.conf with the upstream block of upstream.conf, as both files say
    for several hosts: upstream.conf's servers become the app hosts (same parameters), the
    site listens on the balancer's address. pid, logs and temp files go into ``workdir``."""
    site = (DEPLOY / "nginx" / "rsgi.conf").read_text()
    upstream = (DEPLOY / "nginx" / "upstream.conf").read_text()
    block = re.compile(r"^upstream rsgi \{\n.*?^\}\n", re.M | re.S)
    assert block.search(site) and block.search(upstream)
    servers = re.findall(r"^    server [\d.]+:\d+( [^;]*)?;$", upstream, re.M)
    assert len(servers) >= 2, "upstream.conf should list several servers"
    lines = "".join(f"    server {a.addr}:{APP_PORT}{servers[0]};\n" for a in apps)
    upstream = re.sub(r"(^    server [\d.]+:\d+[^;]*;\n)+", lines, upstream, count=1, flags=re.M)
    site = block.sub(lambda _: block.search(upstream).group(0), site)
    assert site.count("listen 80;") == 1
    site = site.replace("listen 80;", f"listen {LB_ADDR}:{LB_PORT};")
    site = re.sub(r"^\s*listen \[::\]:80;\n", "", site, flags=re.M)
    temp = "".join(
        f"    {kind}_temp_path {workdir / (kind + '_temp')};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if f"--without-http_{kind}_module" not in build_info
    )
    return f"""user root;
daemon off;
master_process on;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    log_format upstream '$msec $request $status upstream=$upstream_addr/$upstream_status';
    access_log {workdir / "nginx-access.log"} upstream;
{temp}
{site}
}}
"""


class Balancer:
    """haproxy or nginx in the balancer's namespace, listening on LB_ADDR:LB_PORT."""

    def __init__(self, kind: str, ns: str, apps: list[AppHost], workdir: Path) -> None:
        self.kind = kind
        self.ns = ns
        self.workdir = workdir / kind
        self.workdir.mkdir(exist_ok=True)
        binary = find_tool(kind)
        assert binary, f"{kind} is not installed"
        self.conf = self.workdir / f"{kind}.conf"
        if kind == "haproxy":
            self.conf.write_text(haproxy_config(apps, self.workdir))
            check = [binary, "-c", "-f", str(self.conf)]
            cmd = [binary, "-db", "-f", str(self.conf)]
        else:
            info = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
            self.conf.write_text(nginx_config(apps, self.workdir, info.stdout + info.stderr))
            check = [binary, "-t", "-p", str(self.workdir), "-c", str(self.conf)]
            cmd = [binary, "-p", str(self.workdir), "-c", str(self.conf)]
        # Checked in the balancer's namespace, where nginx -t can bind the address.
        check = [find_tool("ip"), "netns", "exec", ns, *check]
        result = subprocess.run(check, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (
            f"{kind} config check failed:\n{result.stdout}{result.stderr}"
        )
        self.process = Process(ns, kind, cmd, self.workdir)

    def start(self) -> None:
        self.process.start()
        wait_for(
            lambda: (
                not self.process.alive() or http_get(self.ns, LB_ADDR, LB_PORT, "/") is not None
            ),
            10,
            f"{self.kind} to listen",
        )
        assert self.process.alive(), self.logs()

    def stop(self) -> None:
        self.process.stop(timeout=5)

    def logs(self) -> str:
        parts = [self.process.tail()]
        for name in ("nginx-error.log",):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each server ("UP", "DOWN", "UP 1/2", ...), from its stats socket."""
        assert self.kind == "haproxy"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(self.workdir / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "rsgi" and row["svname"] not in ("BACKEND", "FRONTEND")
        }


# --------------------------------------------------------------------------------------
# Clients: HTTP load and WebSockets, in threads inside the client namespace
# --------------------------------------------------------------------------------------


@dataclass
class Record:
    start: float
    end: float
    client: str
    path: str
    instance: str | None = None
    pid: int | None = None
    error: str | None = None


@dataclass
class Load:
    """A steady, bounded HTTP load through the balancer.

    ``keepalive`` clients each keep one connection open for request after request;
    ``fresh`` clients open a new connection for every request (``Connection: close``). Every
    ``slow_every``-th request of a client is ``/slow`` (0.2 s in the app), so that requests
    are in flight whenever a host stops; every third is a POST with a body, which balancers
    retry on another host only when it was never sent to the first. Each client pauses
    ``pause`` s between requests. The load ends at ``stop()``, after ``max_seconds`` or after
    ``max_requests`` in all.
    A request fails when it raises or answers anything but 200 with the app's JSON.
    """

    ns: str
    host: str = LB_ADDR
    port: int = LB_PORT
    keepalive: int = 3
    fresh: int = 2
    slow_every: int = 4
    pause: float = 0.01
    max_seconds: float = 90.0
    max_requests: int = 40000
    records: list[Record] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.deadline = time.monotonic() + self.max_seconds
        kinds = ["keepalive"] * self.keepalive + ["fresh"] * self.fresh
        for index, kind in enumerate(kinds):
            thread = threading.Thread(
                target=self._client, args=(f"{kind}-{index}", kind == "keepalive"), daemon=True
            )
            self.threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=20)
        assert not any(t.is_alive() for t in self.threads), "load clients did not stop"

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _client(self, name: str, keepalive: bool) -> None:
        enter_netns(self.ns)
        conn: http.client.HTTPConnection | None = None
        count = 0
        while (
            not self.halt.is_set()
            and time.monotonic() < self.deadline
            and len(self.records) < self.max_requests
        ):
            count += 1
            path = "/slow" if count % self.slow_every == 0 else "/"
            # Every third request a POST, which a balancer must not send twice.
            method, body = ("POST", b"x" * 100) if count % 3 == 0 else ("GET", None)
            record = Record(start=time.monotonic(), end=0.0, client=name, path=method + path)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
                headers = {} if keepalive else {"Connection": "close"}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    record.error = f"status {resp.status}: {body[:120]!r}"
                else:
                    data = json.loads(body)
                    record.instance, record.pid = data["instance"], data["pid"]
                if resp.will_close or not keepalive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                record.error = repr(exc)
                if conn is not None:
                    conn.close()
                conn = None
            record.end = time.monotonic()
            self.records.append(record)
            self.halt.wait(self.pause)
        if conn is not None:
            conn.close()

    # -- what happened ----------------------------------------------------------------
    def since(self, when: float = 0.0) -> list[Record]:
        return [r for r in list(self.records) if r.start >= when]

    def failures(self) -> list[Record]:
        return [r for r in list(self.records) if r.error is not None]

    def served(self, since: float = 0.0) -> Counter:
        return Counter(r.instance for r in self.since(since) if r.error is None)

    def wait_served(self, instance: str, since: float, timeout: float, count: int = 5) -> None:
        wait_for(
            lambda: self.served(since)[instance] >= count,
            timeout,
            f"{count} requests served by {instance} (served: {self.served(since)})",
        )

    def summary(self) -> str:
        failures = self.failures()
        lines = [f"{len(self.records)} requests, {len(failures)} failed; served {self.served()}"]
        lines += [f"  {r.client} {r.path} [{r.start:.3f}-{r.end:.3f}] {r.error}" for r in failures]
        return "\n".join(lines[:40])


@dataclass
class WsEvent:
    time: float
    kind: str  # "open", "close", "error", "bad-echo"
    instance: str | None = None
    code: int | None = None
    detail: str = ""


class WsClient(threading.Thread):
    """One WebSocket client through the balancer: it echoes a numbered message every
    ``interval`` s, and when the connection closes, records the close code and connects
    again. Every event is kept in ``events``."""

    def __init__(self, ns: str, name: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name=name)
        self.ns = ns
        self.uri = f"ws://{LB_ADDR}:{LB_PORT}/ws"
        self.interval = interval
        self.events: list[WsEvent] = []
        self.echoes: Counter = Counter()
        self.halt = threading.Event()
        self.deadline = time.monotonic() + 120

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake
        from websockets.sync.client import connect

        enter_netns(self.ns)
        count = 0
        while not self.halt.is_set() and time.monotonic() < self.deadline:
            instance = None
            try:
                with connect(self.uri, open_timeout=5, close_timeout=5, ping_interval=None) as ws:
                    ws.send("hello")
                    instance = str(ws.recv(timeout=5)).split(":")[0]
                    self.events.append(WsEvent(time.monotonic(), "open", instance))
                    while not self.halt.is_set():
                        count += 1
                        ws.send(str(count))
                        reply = ws.recv(timeout=5)
                        if reply != f"{instance}:{count}":
                            self.events.append(
                                WsEvent(time.monotonic(), "bad-echo", instance, detail=reply)
                            )
                        self.echoes[instance] += 1
                        self.halt.wait(self.interval)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                self.events.append(
                    WsEvent(time.monotonic(), "close", instance, code=code, detail=repr(exc))
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.events.append(WsEvent(time.monotonic(), "error", detail=repr(exc)))
                self.halt.wait(0.2)

    def current(self) -> str | None:
        opens = [e for e in self.events if e.kind == "open"]
        return opens[-1].instance if opens else None

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=15)
        assert not self.is_alive(), f"WebSocket client {self.name} did not stop"
