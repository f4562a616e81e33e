"""The pre-fork master (``rsgi -w N``): real processes, real signals, real sockets."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    APPS_DIR,
    ConnectionClosed,
    RawClient,
    Server,
    free_port,
    server_command,
    simple_get,
    spawn_process,
    wait_for,
    wait_until_accepting,
)
from procfs import children

pytestmark = pytest.mark.rsgi_only

APP = "supervisor_app:app"
HEALTH = ("--health-path", "/healthz")
# Longer than any replacement takes.
DELAY = ("--shutdown-delay", "10", *HEALTH)


def get(server: Server, target: str = "/", timeout: float = 10.0):
    if server.uds is not None:
        with RawClient(uds=server.uds, timeout=timeout) as client:
            client.request("GET", target, headers=[("Connection", "close")])
            return client.read_response()
    return simple_get(server.port, target, timeout=timeout)


def pid_of_response(server: Server) -> int:
    response = get(server)
    assert response.status == 200, response
    return int(response.body)


def health(server: Server) -> int:
    return simple_get(server.port, "/healthz").status


def serving_pids(server: Server, count: int, timeout: float = 10.0) -> set[int]:
    """Pids seen answering until ``count`` distinct ones have, all children of the master."""
    seen: set[int] = set()

    def enough() -> bool:
        seen.add(pid_of_response(server))
        return len(seen & children(server.pid)) >= count

    wait_for(enough, timeout=timeout, interval=0.01, message=f"saw only {seen}")
    return seen & children(server.pid)


def start(*args: str, app: str = APP, app_dir: Path = APPS_DIR, env=None, uds=None) -> Server:
    cmd_args = [app, "--app-dir", str(app_dir), "--no-access-log"]
    port = None
    if uds is None:
        port = free_port()
        cmd_args += ["--port", str(port)]
    else:
        cmd_args += ["--uds", uds]
    server = spawn_process(server_command(*cmd_args, *args), port=port, uds=uds, env=env)
    wait_until_accepting(server)
    return server


@pytest.fixture
def servers():
    started: list[Server] = []

    def factory(*args: str, **kwargs) -> Server:
        server = start(*args, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


class Hammer:
    """A client thread sending GET / on a new connection each time, counting failures.

    ``fetch(server)`` makes the request and returns the response (by default :func:`get`).
    """

    def __init__(self, server: Server, fetch=None) -> None:
        self.server = server
        self.fetch = fetch or functools.partial(get, timeout=5)
        self.ok = 0
        self.failures: list[str] = []
        self.retries = 0
        self.pids: list[int] = []
        self.versions: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> Hammer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.running = False
        self.thread.join(timeout=15)

    def run(self) -> None:
        while self.running:
            try:
                response = self.get_once_retried()
                if response.status != 200:
                    raise AssertionError(f"status {response.status}")
                self.pids.append(int(response.body))
                self.versions.append((response.header("x-version") or b"").decode())
                self.ok += 1
            except Exception as exc:  # every failure counts
                self.failures.append(repr(exc))

    def get_once_retried(self):
        """GET /, retried once when a new connection closed before a single response byte:
        the retry RFC 9112 section 9.3.1 allows clients (and nginx's proxy_next_upstream does)
        for a connection a stopping worker accepted but never answered. Counted in `retries`,
        which the tests require to stay 0: a worker answers every connection it accepted.
        A request that fails twice is a failure."""
        try:
            return self.fetch(self.server)
        except ConnectionClosed as exc:
            if "got b''" not in str(exc):
                raise
            self.retries += 1
            return self.fetch(self.server)

    def wait_for_count(self, count: int, timeout: float = 10.0) -> None:
        start_count = self.ok
        wait_for(lambda: self.ok - start_count >= count, timeout=timeout, interval=0.01)

    def assert_all_answered(self) -> None:
        assert self.failures == [], self.failures[:5]
        assert self.retries == 0, f"{self.retries} connection(s) closed unanswered"


def children_when(server: Server, count: int) -> set[int]:
    """The master's children, once there are ``count``."""
    return wait_for(lambda: len(now := children(server.pid)) == count and now, interval=0.005)


def tls_client_setup(tmp_path: Path):
    """The server's TLS options with a certificate from a test CA, and a ``fetch`` for
    :class:`Hammer` that trusts it."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    keyfile.write_bytes(cert.private_key_pem.bytes())
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def fetch(server: Server):
        client = RawClient(server.port, timeout=5)
        client.sock = context.wrap_socket(client.sock, server_hostname="localhost")
        with client:
            client.request("GET", "/", headers=[("Connection", "close")])
            return client.read_response()

    return ("--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)), fetch


def reload_app_dir(tmp_path: Path, version: str) -> Path:
    shutil.copy(APPS_DIR / "supervisor_app.py", tmp_path / "supervisor_app.py")
    (tmp_path / "supervisor_version.py").write_text(f"VERSION = {version!r}\n")
    return tmp_path


# --------------------------------------------------------------------------------------


def test_workers_serve_with_distinct_pids(servers, tmp_path):
    pid_file = tmp_path / "rsgi.pid"
    server = servers("-w", "3", "--pid", str(pid_file))
    pids = serving_pids(server, 3)
    assert len(pids) == 3 and server.pid not in pids
    # The master forks from a single thread: it starts none of its own.
    assert len(os.listdir(f"/proc/{server.pid}/task")) == 1
    assert children(server.pid) == pids
    assert pid_file.read_text().strip() == str(server.pid)
    # Process titles (setproctitle, from the `standard` extra; the tests install it).
    assert b"rsgi: master" in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    for pid in pids:
        assert b"rsgi: worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert server.stop() == 0
    assert not pid_file.exists()


def test_killed_worker_is_replaced(servers):
    server = servers("-w", "2")
    before = serving_pids(server, 2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    server.wait_for_stderr(rf"Worker \[{victim}\] was killed by signal SIGKILL")

    def replaced() -> set[int] | None:
        now = children(server.pid)
        return now if len(now) == 2 and victim not in now else None

    after = wait_for(replaced, message="the killed worker was not replaced")
    assert serving_pids(server, 2) == after


def hup_under_load(server: Server, app_dir: Path) -> Hammer:
    """Deploys version 'two' of the app with SIGHUP while a Hammer runs; returns the Hammer
    once 'two' answers, the old workers are gone and 50 more requests went through. No
    request may fail, and the last 20 must come from new workers."""
    old = serving_pids(server, 2)
    with Hammer(server) as hammer:
        hammer.wait_for_count(50)
        (app_dir / "supervisor_version.py").write_text("VERSION = 'two'\n")
        server.signal(signal.SIGHUP)
        wait_for(lambda: hammer.versions and hammer.versions[-1] == "two", timeout=15)
        wait_for(lambda: not (children(server.pid) & old), timeout=15, message="old workers left")
        hammer.wait_for_count(50)
    hammer.assert_all_answered()
    assert set(hammer.pids[-20:]).isdisjoint(old)
    return hammer


def test_hup_reloads_code_under_load_without_failures(servers, tmp_path):
    app_dir = reload_app_dir(tmp_path, "one")
    server = servers("-w", "2", app_dir=app_dir)
    hammer = hup_under_load(server, app_dir)
    assert hammer.versions[-20:] == ["two"] * 20
    assert "Reload complete" in server.stderr()
    assert server.stop() == 0


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_reloads_under_load_answer_every_connection(servers, tmp_path, scheme):
    """HUP after HUP under load: a stopping worker answers every connection it accepted.

    Two ways it did not: the accept loop, told to stop, could take one more connection from
    the shared backlog after the worker had counted none open, and the worker exited with it
    (rare per stop, hence many stops); and a TLS handshake under way was cut by the stop.
    """
    tls_args, fetch = tls_client_setup(tmp_path) if scheme == "https" else ((), None)
    server = servers("-w", "2", *tls_args)
    workers = children_when(server, 2)
    hammers = [Hammer(server, fetch) for _ in range(4)]
    reloads = 0
    with contextlib.ExitStack() as stack:
        for hammer in hammers:
            stack.enter_context(hammer)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            server.signal(signal.SIGHUP)
            reloads += 1
            wait_for(
                lambda old=workers: not (children(server.pid) & old), timeout=15, interval=0.005
            )
            workers = children_when(server, 2)
    assert reloads >= 5, reloads
    for hammer in hammers:
        hammer.assert_all_answered()
    assert sum(hammer.ok for hammer in hammers) > 100


def test_a_stopping_worker_answers_a_request_already_arriving(servers):
    """A request whose head has begun to arrive when a worker stops is answered, however
    long after the stop it ends (within --timeout-header-read), on a new connection as on a
    keep-alive one; an idle keep-alive connection is closed once the short grace is over."""
    server = servers("-w", "2")
    old = serving_pids(server, 2)
    fresh = RawClient(server.port)
    kept = RawClient(server.port)
    idle = RawClient(server.port)
    for client in (kept, idle):
        client.request("GET", "/")
        assert int(client.read_response().body) in old
    for client in (fresh, kept):
        client.send(b"GET / HTTP/1.1\r\nHost: testserver\r\n")
    since = server.stderr_offset()
    server.signal(signal.SIGHUP)
    wait_for(
        lambda: server.stderr(since).count("]: reloaded") == len(old),
        timeout=15,
        message="the old workers were not stopped",
    )
    assert idle.closed_within(5)
    # Now well past the grace that a connection with nothing on its way gets.
    time.sleep(1)
    for client in (fresh, kept):
        client.send(b"\r\n")
        response = client.read_response()
        assert response.status == 200 and int(response.body) in old
        assert response.header("connection") == b"close"
        assert client.closed_within(5)
        client.close()
    wait_for(lambda: not (children(server.pid) & old), timeout=10, message="old workers left")


def test_hup_with_preload_reexecutes_the_master(servers, tmp_path):
    app_dir = reload_app_dir(tmp_path, "one")
    server = servers("-w", "2", "--preload", app_dir=app_dir)
    hup_under_load(server, app_dir)
    assert server.stderr().count("Started master process") == 2
    assert server.alive() and server.stop() == 0


def test_term_lets_a_slow_request_finish(servers):
    server = servers("-w", "2")
    serving_pids(server, 2)
    result: dict = {}

    def slow() -> None:
        result["response"] = simple_get(server.port, "/slow?t=2", timeout=15)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    # The master and the workers let go of the socket: new connections are refused.
    wait_for(lambda: connect_refused(server.port), timeout=3, message="still accepting")
    thread.join(timeout=15)
    assert result["response"].status == 200
    assert server.wait_exit(15) == 0
    assert server.stderr().count("Application shutdown complete") == 2


def connect_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_ttin_and_ttou_change_the_worker_count(servers):
    server = servers("-w", "2")
    serving_pids(server, 2)
    server.signal(signal.SIGTTIN)
    serving_pids(server, 3)
    wait_for(lambda: len(children(server.pid)) == 3)
    server.signal(signal.SIGTTOU)
    time.sleep(0.1)
    server.signal(signal.SIGTTOU)
    wait_for(lambda: len(children(server.pid)) == 1, message="workers not stopped")
    assert pid_of_response(server) in children(server.pid)


def test_ttou_under_load_fails_no_request(servers):
    server = servers("-w", "3")
    serving_pids(server, 3)
    with Hammer(server) as hammer:
        hammer.wait_for_count(50)
        for count in (2, 1):
            server.signal(signal.SIGTTOU)
            wait_for(lambda n=count: len(children(server.pid)) == n, message="no worker stopped")
        hammer.wait_for_count(50)
    hammer.assert_all_answered()


def test_max_requests_recycles_workers_without_failures(servers):
    server = servers("-w", "2", "--limit-max-requests", "40", "--limit-max-requests-jitter", "10")
    first = serving_pids(server, 2)
    with Hammer(server) as hammer:
        wait_for(lambda: len(set(hammer.pids) - first) >= 4, timeout=20, message="no recycling")
    hammer.assert_all_answered()
    assert "reached its request limit" in server.stderr()
    limits = [int(n) for n in re.findall(r"request limit (\d+)\)", server.stderr())]
    assert limits and all(40 <= n <= 50 for n in limits)
    # Recycled workers left gracefully.
    assert not re.search(r"Worker \[\d+\] was killed", server.stderr())


def test_blocked_worker_is_killed_and_replaced(servers):
    server = servers("-w", "1", "--timeout-worker", "1")
    (victim,) = serving_pids(server, 1)
    with RawClient(server.port) as client:
        client.request("GET", "/block?t=60")
        server.wait_for_stderr(rf"Worker \[{victim}\] timed out", timeout=10)
        assert client.closed_within(10)
    err = server.wait_for_stderr(r"Worker \[\d+\] was killed by signal (SIGABRT|SIGKILL)")
    # faulthandler wrote the blocked thread's stack.
    assert re.search(r'File ".*supervisor_app\.py", line \d+ in app', err), err
    wait_for(lambda: children(server.pid) and victim not in children(server.pid))
    assert pid_of_response(server) != victim


def test_a_stopped_worker_that_times_out_is_killed_without_a_stack(servers):
    server = servers("-w", "1", "--timeout-worker", "2")
    (victim,) = serving_pids(server, 1)
    started = time.monotonic()
    os.kill(victim, signal.SIGSTOP)
    try:
        err = server.wait_for_stderr(
            rf"Worker \[{victim}\] timed out: .* is stopped \(SIGSTOP or a debugger\)", timeout=10
        )
        # Not before --timeout-worker; no SIGABRT, whose stack could never come.
        assert time.monotonic() - started >= 1.5, err
        assert not re.search(rf"Worker \[{victim}\] .*sending SIGABRT", err), err
        err = server.wait_for_stderr(
            rf"Worker \[{victim}\] was killed by signal SIGKILL", timeout=5
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    assert "after timing out" in err
    wait_for(lambda: children(server.pid) and victim not in children(server.pid), timeout=10)
    assert pid_of_response(server) != victim


def test_a_worker_over_the_rss_limit_is_replaced_without_failures(servers):
    metrics_port = free_port()
    server = servers(
        "-w", "1", "--limit-max-rss", "60", "--metrics-bind", f"127.0.0.1:{metrics_port}"
    )
    (hog,) = serving_pids(server, 1)
    with Hammer(server) as hammer:
        hammer.wait_for_count(20)
        assert get(server, "/hog?mib=80").status == 200
        started = time.monotonic()
        server.wait_for_stderr(
            rf"Worker 1 \[{hog}\] uses \d+ MiB, over --limit-max-rss 60: starting its replacement",
            timeout=10,
        )
        # Two samples a second apart: not at the first one.
        assert time.monotonic() - started >= 0.5
        wait_for(lambda: hog not in children(server.pid), timeout=20, message="the hog still runs")
        hammer.wait_for_count(20)
    hammer.assert_all_answered()
    assert set(hammer.pids) - {hog}, "no new worker served"
    assert pid_of_response(server) != hog
    # It left gracefully, and the metrics say why.
    server.wait_for_stderr(rf"Worker \[{hog}\] exited with code 0")
    with RawClient(metrics_port) as client:
        client.request("GET", "/metrics")
        body = client.read_response().body.decode()
    assert 'rsgi_worker_exits_total{reason="max_rss"} 1' in body, body


def test_systemd_notify(servers, tmp_path):
    path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    notify.settimeout(15)
    try:
        server = servers("-w", "2", env={"NOTIFY_SOCKET": path})

        def next_message(key: str) -> str:
            while True:
                message = notify.recv(4096).decode()
                if key in message.splitlines():
                    return message

        assert "STATUS=Serving with 2 workers" in next_message("READY=1")
        serving_pids(server, 2)
        server.signal(signal.SIGHUP)
        reloading = next_message("RELOADING=1")
        assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.M)
        next_message("READY=1")
        server.signal(signal.SIGTERM)
        next_message("STOPPING=1")
        assert server.wait_exit(15) == 0
    finally:
        notify.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_socket_activation(workers):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # systemd's side of the protocol: the socket as fd 3, LISTEN_PID set after the fork.
    wrapper = (
        "import os, sys\n"
        "fd = int(os.environ.pop('TEST_FD'))\n"
        "os.dup2(fd, 3)\n"
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES='web')\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'rsgi', *sys.argv[1:]])\n"
    )
    cmd = [sys.executable, "-c", wrapper, APP, "--app-dir", str(APPS_DIR), "-w", workers]
    # Whatever --port says, the activated socket wins.
    cmd += ["--port", str(free_port())]
    server = spawn_process(
        cmd, port=port, env={"TEST_FD": str(listener.fileno())}, pass_fds=(listener.fileno(),)
    )
    listener.close()
    try:
        wait_until_accepting(server)
        if workers == "1":  # single-process mode reads LISTEN_FDS too
            assert pid_of_response(server) == server.pid
            return
        assert len(serving_pids(server, 2)) == 2
        # Neither a worker's app nor a process it starts may take the sockets for its own.
        for _ in range(4):
            resp = get(server, "/listen-env")
            assert (resp.status, resp.body) == (200, b"|")
    finally:
        assert server.stop() == 0


def test_unix_socket(servers, tmp_path):
    path = str(tmp_path / "rsgi.sock")
    server = servers("-w", "2", uds=path)
    assert len(serving_pids(server, 2)) == 2
    assert server.stop() == 0
    assert not os.path.exists(path)


def test_reuse_port(servers):
    server = servers("-w", "2", "--reuse-port")
    assert len(serving_pids(server, 2)) == 2


@pytest.mark.parametrize("failure", ["SUP_FAIL_STARTUP", "SUP_FAIL_IMPORT"])
def test_worker_boot_failure_stops_the_server_with_code_3(failure):
    port = free_port()
    cmd = server_command(APP, "--app-dir", str(APPS_DIR), "--port", str(port), "-w", "2")
    server = spawn_process(cmd, port=port, env={failure: "1"})
    try:
        assert server.wait_exit(15) == 3, server.output()
        assert "Worker failed to boot" in server.stderr()
    finally:
        server.stop()


def test_failed_reload_keeps_the_running_workers(servers, tmp_path):
    app_dir = reload_app_dir(tmp_path, "one")
    server = servers("-w", "2", app_dir=app_dir)
    old = serving_pids(server, 2)
    (app_dir / "supervisor_version.py").write_text("raise RuntimeError('broken deploy')\n")
    server.signal(signal.SIGHUP)
    server.wait_for_stderr("Reload failed", timeout=15)
    assert server.alive()
    assert serving_pids(server, 2) == old
    wait_for(lambda: children(server.pid) == old, message="the new workers were not stopped")


def test_failed_preload_reload_stops_with_code_3(servers, tmp_path):
    app_dir = reload_app_dir(tmp_path, "one")
    server = servers("-w", "2", "--preload", app_dir=app_dir)
    old = serving_pids(server, 2)
    (app_dir / "supervisor_version.py").write_text("raise RuntimeError('broken deploy')\n")
    server.signal(signal.SIGHUP)
    assert server.wait_exit(15) == 3
    assert "broken deploy" in server.stderr()
    assert not any(Path(f"/proc/{pid}").exists() for pid in old)


def test_quit_is_a_quick_stop(servers):
    server = servers("-w", "2", "--timeout-graceful-shutdown", "30")
    serving_pids(server, 2)
    with RawClient(server.port) as client:
        client.request("GET", "/slow?t=20")
        time.sleep(0.3)
        started = time.monotonic()
        server.signal(signal.SIGQUIT)
        assert server.wait_exit(10) == 0
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("how", ["HUP", "TTOU", "request limit"])
def test_replaced_workers_skip_the_shutdown_delay(servers, how):
    """--shutdown-delay gives load balancers time to take a stopping server out; a worker
    that another replaces leaves a server that goes on serving, and stops at once."""
    if how == "request limit":
        server = servers("-w", "1", "--limit-max-requests", "10", *DELAY)
    else:
        server = servers("-w", "2", *DELAY)
        serving_pids(server, 2)
        server.signal(signal.SIGHUP if how == "HUP" else signal.SIGTTOU)

    def stopped() -> set[int]:
        if how == "request limit":
            pid_of_response(server)
        return {int(pid) for pid in re.findall(r"Stopping worker \[(\d+)\]", server.stderr())}

    pids = wait_for(stopped, timeout=15, interval=0.01, message="no worker was stopped")
    since = time.monotonic()
    wait_for(lambda: not (children(server.pid) & pids), timeout=6, message="still serving")
    assert time.monotonic() - since < 5
    assert "Still serving" not in server.stderr()
    assert health(server) == 200
    # The whole server's stop still waits: skip it.
    server.signal(signal.SIGQUIT)
    assert server.wait_exit(10) == 0


def test_term_with_workers_serves_on_for_the_shutdown_delay(servers):
    server = servers("-w", "2", "--shutdown-delay", "3", *HEALTH)
    serving_pids(server, 2)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    wait_for(lambda: health(server) == 503, timeout=2.5, message="health never turned 503")
    assert pid_of_response(server) in children(server.pid)
    assert server.wait_exit(15) == 0
    assert time.monotonic() - started >= 3
    assert server.stderr().count("Still serving for 3s") == 2


def test_single_worker_without_supervisor_options_runs_alone(servers):
    server = servers()
    assert pid_of_response(server) == server.pid
    assert not children(server.pid)


def test_usr1_reopens_log_files(servers, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    server = servers(
        "-w",
        "2",
        "--error-logfile",
        str(error_log),
        "--access-logfile",
        str(access_log),
        "--access-log",
    )
    serving_pids(server, 2)
    for path in (error_log, access_log):
        path.rename(path.with_suffix(".old"))
    server.signal(signal.SIGUSR1)
    # The master reopened its log; every worker reopened its access log.
    wait_for(lambda: error_log.exists() and "reopened the log files" in error_log.read_text())

    old_access = access_log.with_suffix(".old")

    def all_workers_reopened() -> bool:
        size = old_access.stat().st_size
        pids = {pid_of_response(server) for _ in range(20)}
        time.sleep(0.1)  # the access lines are written in batches
        return len(pids) == 2 and old_access.stat().st_size == size and access_log.exists()

    wait_for(all_workers_reopened, message="a worker still writes to the old access log")
    assert "reopened the log files" not in error_log.with_suffix(".old").read_text()


def test_master_serves_metrics_of_every_worker(servers):
    from prometheus_client.parser import text_string_to_metric_families

    metrics_port = free_port()
    server = servers("-w", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}")

    def scrape() -> dict[tuple, float]:
        with RawClient(metrics_port) as client:
            client.request("GET", "/metrics")
            response = client.read_response()
        assert response.status == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.body.decode())
            for sample in family.samples
        }

    ok = ("rsgi_requests_total", (("status", "2xx"),))
    pids = serving_pids(server, 2)  # GET / until both workers answered
    wait_for(lambda: scrape()[ok] >= len(pids), message="requests not counted")
    for _ in range(20):
        pid_of_response(server)
    counted = wait_for(lambda: (n := scrape()[ok]) >= 22 and n)
    assert scrape()[("rsgi_workers", ())] == 2
    # A worker's counts outlive it: the master keeps them when it exits.
    os.kill(min(pids), signal.SIGKILL)
    wait_for(lambda: len(children(server.pid) - pids) == 1)
    assert scrape()[ok] >= counted
    assert scrape()[("rsgi_worker_exits_total", (("reason", "crashed"),))] == 1
    assert scrape()[("rsgi_worker_exits_total", (("reason", "stopped"),))] == 0


def test_run_from_python_with_workers(tmp_path):
    port = free_port()
    code = (
        "import rsgi\n"
        f"rsgi.run({APP!r}, app_dir={str(APPS_DIR)!r}, port={port}, workers=2, "
        "access_log=False)\n"
    )
    server = spawn_process([sys.executable, "-c", code], port=port)
    try:
        wait_until_accepting(server)
        assert len(serving_pids(server, 2)) == 2
    finally:
        assert server.stop() == 0


def test_bad_pid_file_is_an_error(tmp_path):
    busy = tmp_path / "busy.pid"
    busy.write_text(f"{os.getpid()}\n")  # a live process that is not the server
    port = free_port()
    cmd = server_command(APP, "--app-dir", str(APPS_DIR), "--port", str(port))
    server = spawn_process([*cmd, "--pid", str(busy)], port=port)
    try:
        assert server.wait_exit(15) == 1
        assert "which is running" in server.stderr()
    finally:
        server.stop()
