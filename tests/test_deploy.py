"""The deployment kit (deploy/), tested: the health path, the shutdown delay, a real nginx
in front of two rsgi instances configured from deploy/nginx, and the systemd units.

The nginx tests need the nginx binary (Debian's nginx-light, which .ci/run installs); where
it is missing they skip, saying so. The systemd test needs systemd-analyze.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    RawClient,
    Server,
    free_port,
    spawn_server,
    wait_for,
    wait_until_accepting,
)

pytestmark = pytest.mark.rsgi_only

DEPLOY = REPO_ROOT / "deploy"
APP = "deploy_app:app"
HEALTH = ("--health-path", "/healthz")


def skip_with_reason(reason: str) -> None:
    # A warning shows in the summary of every pytest run, -q included, so that a skip for a
    # missing tool is seen rather than buried in the skip count.
    warnings.warn(f"test_deploy: {reason}", stacklevel=2)
    pytest.skip(reason)


def get(server: Server, target: str, method: str = "GET", headers=()) -> tuple[int, dict, bytes]:
    """One request on a fresh connection to a server's TCP port or unix socket."""
    with RawClient(server.port, uds=server.uds, timeout=5) as client:
        client.request(method, target, headers=[("Connection", "close"), *headers])
        resp = client.read_response(head_request=method == "HEAD")
    heads = {k.decode(): v.decode() for k, v in resp.headers}
    return resp.status, heads, resp.body


def health(server: Server) -> int | None:
    """The status of GET /healthz, or None when the server accepts no connection."""
    try:
        return get(server, "/healthz")[0]
    except (OSError, AssertionError):
        return None


# --------------------------------------------------------------------------------------
# --health-path and --shutdown-delay, without a proxy
# --------------------------------------------------------------------------------------


def test_health_path_is_answered_without_the_app(server_factory):
    server = server_factory(APP, *HEALTH)
    status, headers, body = get(server, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"].startswith("text/plain")
    assert "x-request-id" not in headers  # not an app request: no request id either
    status, headers, body = get(server, "/healthz?probe=1", method="HEAD")
    assert (status, headers["content-length"], body) == (200, "3", b"")
    status, headers, _ = get(server, "/healthz", method="POST")
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    # Only the exact path: anything else is the app's.
    assert json.loads(get(server, "/healthz/x")[2])["path"] == "/healthz/x"
    # The app saw two requests (/healthz/x and this one), none of the health checks;
    # the access log has only the app's requests.
    assert json.loads(get(server, "/")[2])["seen"] == 2
    log = server.wait_for_stdout(r'"GET / HTTP/1.1" 200')
    assert "/healthz/x" in log and "/healthz " not in log and "/healthz?" not in log


def test_health_path_is_off_by_default(server_factory):
    server = server_factory(APP)
    status, _, body = get(server, "/healthz")
    assert status == 200 and json.loads(body)["path"] == "/healthz"


def test_health_path_must_be_a_path(server_factory):
    server = server_factory(APP, "--health-path", "healthz", wait=False)
    assert server.wait_exit(15) == 2
    assert "health_path must be a URL path" in server.stderr()


def test_health_turns_503_during_the_shutdown_delay_while_requests_are_served(server_factory):
    server = server_factory(APP, *HEALTH, "--shutdown-delay", "3")
    # A keep-alive connection opened before the signal.
    client = RawClient(server.port, timeout=5)
    client.request("GET", "/")
    assert client.read_response().status == 200
    assert health(server) == 200
    server.signal(signal.SIGTERM)
    wait_for(lambda: health(server) == 503, timeout=2, message="health never turned 503")
    status, headers, body = get(server, "/healthz")
    assert (status, body, headers["cache-control"]) == (503, b"draining\n", "no-store")
    # Still serving: new connections and the old keep-alive one, whose response now closes
    # it, so that the client's next request opens a connection a load balancer can steer.
    status, headers, _ = get(server, "/slow")
    assert status == 200
    client.request("GET", "/")
    resp = client.read_response()
    assert resp.status == 200 and resp.header("connection") == b"close"
    assert client.closed_within(2)
    assert server.alive()
    server.wait_for_stderr(r"Still serving for 3s")
    # Then the sockets close and the server ends.
    assert server.wait_exit(10) == 0
    assert health(server) is None


def test_second_signal_ends_the_shutdown_delay(server_factory):
    server = server_factory(APP, *HEALTH, "--shutdown-delay", "30")
    server.signal(signal.SIGTERM)
    wait_for(lambda: health(server) == 503, timeout=2)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - started < 5


def test_no_shutdown_delay_by_default(server_factory):
    server = server_factory(APP, *HEALTH)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - started < 3
    assert "Still serving" not in server.stderr()


# --------------------------------------------------------------------------------------
# nginx (deploy/nginx) in front of two rsgi instances
# --------------------------------------------------------------------------------------


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(path, os.X_OK):
            return path
    return None


class Instance:
    """One rsgi process behind nginx, stopped and started again under the same address."""

    def __init__(self, name: str, workdir: Path, *, uds: bool) -> None:
        self.name = name
        self.uds = str(workdir / f"{name}.sock") if uds else None
        self.port = None if uds else free_port()
        # Behind nginx as deploy/systemd/rsgi.service runs it: trust the proxy's headers
        # (from the unix socket's peers, or from 127.0.0.1), keep connections open longer
        # than nginx does, health path, shutdown delay.
        trusted = "unix" if uds else "127.0.0.1"
        self.args = (
            *HEALTH,
            "--shutdown-delay",
            "2",
            "--timeout-graceful-shutdown",
            "5",
            "--timeout-keep-alive",
            "75",
            "--forwarded-allow-ips",
            trusted,
            "--no-access-log",
        )
        self.server: Server | None = None

    @property
    def upstream(self) -> str:
        return f"unix:{self.uds}" if self.uds else f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = spawn_server(
            APP,
            *self.args,
            port=self.port if self.port else False,
            uds=self.uds,
            env={"INSTANCE": self.name},
        )
        wait_until_accepting(self.server)
        wait_for(lambda: health(self.server) == 200, timeout=5)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def nginx_config(workdir: Path, port: int, instances: list[Instance], build: str) -> str:
    """nginx.conf for the test, built from deploy/nginx/rsgi.conf and upstream.conf.

    The test changes only addresses and paths: the site listens on a free port of
    127.0.0.1, upstream.conf's example hosts become the two instances (with the same
    server parameters), and upstream.conf's block replaces the site's own one-socket
    upstream, as both files say to do for several hosts. pid, logs and temporary files go
    into ``workdir``. ``build`` is what ``nginx -V`` says about how nginx was built.
    """
    site = (DEPLOY / "nginx" / "rsgi.conf").read_text()
    upstream = (DEPLOY / "nginx" / "upstream.conf").read_text()

    site_upstream = re.compile(r"^upstream rsgi \{\n.*?^\}\n", re.M | re.S)
    local = site_upstream.search(site)
    assert local and "server unix:/run/rsgi/rsgi.sock;" in local.group(0)
    site = site_upstream.sub("", site)
    assert "listen 80;" in site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = re.sub(r"^\s*listen \[::\]:80;\n", "", site, flags=re.M)

    hosts = re.findall(r"^    server (\d[\d.]*:\d+)( [^;]*)?;$", upstream, re.M)
    assert len(hosts) >= 2, "upstream.conf should list several hosts"
    params = hosts[0][1]
    lines = "".join(f"    server {i.upstream}{params};\n" for i in instances)
    first = upstream.index(f"    server {hosts[0][0]}")
    last = upstream.index("\n", upstream.index(f"    server {hosts[-1][0]}")) + 1
    upstream = upstream[:first] + lines + upstream[last:]

    temp_paths = "".join(
        f"    {kind}_temp_path {workdir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if kind in ("client_body", "proxy") or f"--without-http_{kind}_module" not in build
    )
    # Run as root (CI), nginx's workers would switch to "nobody", which may not enter
    # pytest's private temporary directory where the sockets and temp files are.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    log_format upstream '$request $status upstream=$upstream_addr/$upstream_status';
    access_log {workdir / "access.log"} upstream;
{temp_paths}
{upstream}
{site}
}}
"""


class Nginx:
    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.conf = workdir / "nginx.conf"
        self.proc: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.workdir), "-c", str(self.conf), *extra]

    def start(self) -> None:
        test = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        assert test.returncode == 0, f"nginx -t failed:\n{test.stderr}\n{self.conf.read_text()}"
        with open(self.workdir / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"nginx exited:\n{self.logs()}"
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            assert time.monotonic() < deadline, f"nginx did not start:\n{self.logs()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def logs(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- nginx {name}:\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """nginx on a free port in front of instance "a" (TCP) and instance "b" (unix socket)."""
    binary = find_nginx()
    if binary is None:
        skip_with_reason("nginx is not installed (Debian: apt-get install nginx-light)")
    version = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10)
    workdir = tmp_path_factory.mktemp("nginx")
    instances = [Instance("a", workdir, uds=False), Instance("b", workdir, uds=True)]
    nginx = Nginx(binary, workdir, free_port())
    try:
        for instance in instances:
            instance.start()
        config = nginx_config(workdir, nginx.port, instances, version.stderr + version.stdout)
        nginx.conf.write_text(config)
        nginx.start()
        yield nginx, instances
    finally:
        nginx.stop()
        # TERM to both at once; stop() sends a second TERM, which skips the shutdown delay.
        for instance in instances:
            if instance.server is not None and instance.server.alive():
                instance.server.signal(signal.SIGTERM)
        time.sleep(0.2)
        for instance in instances:
            instance.stop()


def through(nginx: Nginx, target: str = "/", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_nginx_spreads_requests_over_both_instances(cluster):
    nginx, instances = cluster
    seen = Counter()
    pids = set()
    for _ in range(20):
        status, _, body = through(nginx)
        assert status == 200, nginx.logs()
        data = json.loads(body)
        seen[data["instance"]] += 1
        pids.add(data["pid"])
    assert set(seen) == {"a", "b"} and min(seen.values()) >= 5, seen
    assert pids == {i.server.pid for i in instances}


def test_nginx_passes_the_forwarded_headers(cluster):
    nginx, _ = cluster
    by_instance = {}
    for _ in range(10):
        status, headers, body = through(nginx, "/x", {"Host": "app.example"})
        assert status == 200
        data = json.loads(body)
        by_instance[data["instance"]] = data
        # rsgi echoes the request id nginx made, and the app saw the same one.
        assert re.fullmatch(r"[0-9a-f]{32}", data["request_id"])
        assert headers["x-request-id"] == data["request_id"]
    assert set(by_instance) == {"a", "b"}
    for data in by_instance.values():
        # Over the unix socket rsgi has no peer address: 127.0.0.1 comes from
        # X-Forwarded-For, trusted because of --forwarded-allow-ips unix.
        assert data["client"] == "127.0.0.1"
        assert (data["scheme"], data["forwarded_proto"]) == ("http", "http")
        assert data["host"] == "app.example"
    # A client's own request id is kept end to end.
    _, headers, body = through(nginx, "/", {"X-Request-ID": "trace-42"})
    assert json.loads(body)["request_id"] == headers["x-request-id"] == "trace-42"


def rsgi_has_websocket() -> bool:
    from rsgi.config import settings

    return any(setting.name == "ws" for setting in settings())


def test_websocket_through_nginx(cluster):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    nginx, _ = cluster
    names = set()
    for _ in range(4):
        try:
            ws = connect(f"ws://127.0.0.1:{nginx.port}/ws", open_timeout=10, close_timeout=5)
        except InvalidStatus as exc:
            # Only an rsgi built without WebSocket support (before branch ws) may skip.
            if rsgi_has_websocket():
                raise
            status = exc.response.status_code
            pytest.skip(f"this rsgi has no WebSocket support: the upgrade got {status}")
        with ws:
            ws.send("hello")
            reply = ws.recv(timeout=10)
            name, _, text = reply.partition(":")
            assert text == "hello"
            names.add(name)
            ws.send("again")
            assert ws.recv(timeout=10) == f"{name}:again"
    assert names <= {"a", "b"} and names


class Load(threading.Thread):
    """Sends requests through nginx until stopped, over keep-alive connections like a
    browser, counting the answers per instance and every failure."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def count(self, name: str) -> int:
        with self.lock:
            return self.counts[name]

    def run(self) -> None:
        conn = None
        sent = 0
        while not self.halt.is_set():
            target = "/slow" if sent % 5 == 0 else "/"
            sent += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", target)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self.failures.append(f"{target}: {resp.status} {body[:200]!r}")
                else:
                    with self.lock:
                        self.counts[json.loads(body)["instance"]] += 1
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(f"{target}: {exc!r}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def test_rolling_restart_under_load_fails_no_request(cluster):
    nginx, instances = cluster
    loads = [Load(nginx.port) for _ in range(3)]
    for load in loads:
        load.start()

    def served_by(name: str) -> int:
        return sum(load.count(name) for load in loads)

    try:
        wait_for(lambda: served_by("a") and served_by("b"), timeout=5)
        for instance in instances:
            other = next(i for i in instances if i is not instance)
            server = instance.server
            assert health(server) == 200
            # TERM: the health path turns 503 at once, while requests are still served for
            # --shutdown-delay; then the instance stops accepting, finishes and exits.
            server.signal(signal.SIGTERM)
            wait_for(lambda s=server: health(s) == 503, timeout=1.5, message="no 503 in time")
            assert health(other.server) == 200
            assert server.wait_exit(15) == 0, server.output()
            # While it is gone, the other instance serves everything.
            during = served_by(other.name)
            wait_for(lambda o=other.name, d=during: served_by(o) > d + 10, timeout=5)
            # Started again under the same address; nginx sends it requests again once its
            # fail_timeout has passed.
            instance.start()
            back = served_by(instance.name)
            wait_for(
                lambda n=instance.name, b=back: served_by(n) > b,
                timeout=15,
                message=f"nginx sent no request to the restarted instance {instance.name}",
            )
    finally:
        for load in loads:
            load.halt.set()
        for load in loads:
            load.join(timeout=15)
    failures = [f for load in loads for f in load.failures]
    total = sum(sum(load.counts.values()) for load in loads)
    assert not failures, f"{len(failures)} failed of {total}: {failures[:10]}\n{nginx.logs()}"
    assert total > 100
    # The restarted instances are new processes, and both serve through nginx.
    status, _, body = through(nginx)
    assert status == 200


# --------------------------------------------------------------------------------------
# systemd units (deploy/systemd)
# --------------------------------------------------------------------------------------


def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        skip_with_reason("systemd-analyze is not installed (Debian: apt-get install systemd)")
    units = sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
        (DEPLOY / "systemd").glob("*.socket")
    )
    assert {u.name for u in units} == {"rsgi.service", "rsgi-socket.service", "rsgi.socket"}
    # verify checks that ExecStart= names an executable: the units' /opt/app/venv/bin/rsgi
    # becomes a stand-in; nothing else is changed.
    rsgi = tmp_path / "bin" / "rsgi"
    rsgi.parent.mkdir()
    rsgi.write_text("#!/bin/sh\nexit 0\n")
    rsgi.chmod(0o755)
    for unit in units:
        text = unit.read_text()
        assert "/opt/app/venv/bin/rsgi " in text or unit.suffix == ".socket"
        (tmp_path / unit.name).write_text(text.replace("/opt/app/venv/bin/rsgi", str(rsgi)))
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and re.search(r"(?i)bus|not booted|Operation not permitted", output):
        skip_with_reason(f"systemd-analyze verify cannot run here: {output[:300]}")
    # verify returns 0 for unknown keys and bad values too, only warning: none may appear.
    assert result.returncode == 0 and not output, output

    service = (DEPLOY / "systemd" / "rsgi.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
    ):
        assert re.search(rf"^{re.escape(line)}$", service, re.M), line
    assert re.search(r"^User=(?!root)\w+$", service, re.M)
    socket_unit = (DEPLOY / "systemd" / "rsgi.socket").read_text()
    assert "Service=rsgi-socket.service" in socket_unit
    activated = (DEPLOY / "systemd" / "rsgi-socket.service").read_text()
    assert "Requires=rsgi.socket" in activated
    assert "--uds" in exec_start(service) and "--uds" not in exec_start(activated)


def exec_start(unit: str) -> str:
    """The ExecStart= command of a unit, its continuation lines joined."""
    match = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", unit, re.M)
    assert match
    return match.group(1)


def test_systemd_timeout_stop_covers_the_shutdown(tmp_path):
    """TimeoutStopSec leaves rsgi the time its options give it to stop."""
    for name in ("rsgi.service", "rsgi-socket.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        delay = float(re.search(r"--shutdown-delay (\d+)", text).group(1))
        graceful = float(re.search(r"--timeout-graceful-shutdown (\d+)", text).group(1))
        stop = float(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))
        assert stop > delay + graceful, name
        keep_alive = float(re.search(r"--timeout-keep-alive (\d+)", text).group(1))
        nginx_keep_alive = re.search(
            r"keepalive_timeout (\d+)s;", (DEPLOY / "nginx" / "rsgi.conf").read_text()
        )
        assert keep_alive > float(nginx_keep_alive.group(1)), name


def test_haproxy_config_is_valid():
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    cfg = DEPLOY / "haproxy" / "haproxy.cfg"
    text = cfg.read_text()
    assert "option httpchk" in text and "uri /healthz" in text
    assert "http-check expect status 200" in text
    if haproxy is None:
        pytest.skip("haproxy is not installed: only the text of haproxy.cfg was checked")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
