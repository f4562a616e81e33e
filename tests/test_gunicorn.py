"""``gunicorn -k rsgi.Worker``: real gunicorn arbiters and workers, over real sockets.

Each test starts ``python -m gunicorn -k rsgi.Worker`` with tests/apps/gunicorn_app.py and,
for the server hooks, tests/apps/gunicorn_hooks.py as its config file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    APPS_DIR,
    RawClient,
    Server,
    free_port,
    spawn_process,
    wait_for,
    wait_until_accepting,
)

pytest.importorskip("gunicorn")
pytestmark = pytest.mark.rsgi_only

HOOKS = str(APPS_DIR / "gunicorn_hooks.py")
ACCESS_FORMAT = "|".join(
    f"%({atom})s"
    for atom in [
        "h", "l", "u", "t", "r", "s", "b", "B", "f", "a", "T", "D", "M", "L",
        "m", "U", "q", "H", "p", "{x-req}i", "{x-resp}o", "{GUNICORN_TEST_DIR}e", "{x-missing}i",
    ]
)  # fmt: skip


def start_gunicorn(
    tmp_path: Path,
    app: str = "gunicorn_app:app",
    *args: str,
    uds: bool = False,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> Server:
    """Starts an arbiter bound to a free TCP port (and a unix socket with ``uds``)."""
    port = free_port()
    binds = ["-b", f"127.0.0.1:{port}"]
    socket_path = None
    if uds:
        socket_path = str(tmp_path / "g.sock")
        binds += ["-b", f"unix:{socket_path}"]
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "rsgi.Worker",
        "--chdir",
        str(APPS_DIR),
        "--no-control-socket",
        "-c",
        HOOKS,
        *binds,
        *args,
        app,
    ]
    env = {"GUNICORN_TEST_DIR": str(tmp_path), **(env or {})}
    server = spawn_process(cmd, port=port, env=env)
    if wait:
        # The arbiter listens before its workers boot: wait for a worker's answer.
        wait_until_accepting(server)
        assert get(server).status == 200, server.output()
    return server


def get(server: Server, target: str = "/", headers=None, uds: str | None = None, timeout=10.0):
    with RawClient(server.port, uds=uds, timeout=timeout) as client:
        client.request("GET", target, headers=[("Connection", "close"), *(headers or [])])
        return client.read_response()


def worker_pids(server: Server) -> set[int]:
    try:
        text = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
    except OSError:
        return set()
    return {int(pid) for pid in text.split()}


def hook_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "hooks.log"
    return path.read_text().splitlines() if path.exists() else []


class Load:
    """Clients sending GET / on fresh connections in a loop, counting what went wrong."""

    def __init__(self, server: Server, clients: int = 4) -> None:
        self.server = server
        self.running = True
        self.ok = 0
        self.failures: list[str] = []
        self.pids: list[int] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def client(self) -> None:
        while self.running:
            try:
                resp = get(self.server, timeout=15)
                outcome = None if resp.status == 200 else f"status {resp.status}"
            except Exception as exc:  # a failed request, whatever the cause
                resp, outcome = None, repr(exc)
            with self.lock:
                if outcome is None:
                    self.ok += 1
                    self.pids.append(int(resp.body))
                else:
                    self.failures.append(outcome)

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(timeout=20)


# -- serving, logs and hooks -----------------------------------------------------------


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    """One arbiter with one worker on TCP and unix sockets, with a custom access log."""
    tmp_path = tmp_path_factory.mktemp("gunicorn-main")
    access = tmp_path / "access.log"
    server = start_gunicorn(
        tmp_path,
        "gunicorn_app:app",
        "--access-logfile",
        str(access),
        "--access-logformat",
        ACCESS_FORMAT,
        uds=True,
    )
    server.dir = tmp_path
    server.access = access
    try:
        yield server
    finally:
        server.stop()


def test_serves_tcp_and_unix(main):
    (worker,) = worker_pids(main)
    resp = get(main)
    assert resp.status == 200 and resp.body == str(worker).encode()
    resp = get(main, uds=str(main.dir / "g.sock"))
    assert resp.status == 200 and resp.body == str(worker).encode()


def test_errors_go_to_gunicorns_error_log(main):
    # rsgi's own records (logger rsgi.error) come out in gunicorn's error log format.
    text = main.wait_for_stderr(r"Application startup complete")
    assert re.search(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[INFO\] "
        r"Application startup complete\.$",
        text,
        re.MULTILINE,
    ), text


def test_app_tracebacks_go_to_gunicorns_error_log(main):
    since = main.stderr_offset()
    assert get(main, "/raise").status == 500
    text = main.wait_for_stderr(r"RuntimeError: boom from the app", since=since)
    assert re.search(r"\[\d+\] \[ERROR\] Exception in ASGI application", text), text
    assert "Traceback (most recent call last)" in text


def test_access_log_in_gunicorn_format(main):
    user = base64.b64encode(b"alice:secret").decode()
    headers = [
        ("X-Req", "req-42"),
        ("Referer", "http://example.com/from"),
        ("User-Agent", "probe/1.0"),
        ("Authorization", f"Basic {user}"),
    ]
    started = time.monotonic()
    resp = get(main, "/headers?delay=0.05&n=1", headers=headers)
    elapsed = time.monotonic() - started
    assert resp.status == 200 and resp.header("x-resp") == b"out-value"

    def line() -> str | None:
        text = main.access.read_text() if main.access.exists() else ""
        found = [ln for ln in text.splitlines() if "|req-42|" in ln]
        return found[-1] if found else None

    fields = wait_for(line, message="no access log line").split("|")
    names = ACCESS_FORMAT.replace("%(", "").replace(")s", "").split("|")
    atoms = dict(zip(names, fields, strict=True))
    pid = resp.body.decode().removeprefix("pid=")
    assert atoms["h"] == "127.0.0.1"
    assert atoms["l"] == "-"
    assert atoms["u"] == "alice"
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", atoms["t"]), atoms["t"]
    assert atoms["r"] == "GET /headers?delay=0.05&n=1 HTTP/1.1"
    assert atoms["s"] == "200"
    assert atoms["b"] == atoms["B"] == str(len(resp.body))
    assert atoms["f"] == "http://example.com/from"
    assert atoms["a"] == "probe/1.0"
    assert atoms["T"] == "0"
    micros = int(atoms["D"])
    assert 50_000 <= micros <= elapsed * 1_000_000, (micros, elapsed)
    assert atoms["M"] == str(micros // 1000)
    assert atoms["L"] == f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
    assert atoms["m"] == "GET"
    assert atoms["U"] == "/headers"
    assert atoms["q"] == "delay=0.05&n=1"
    assert atoms["H"] == "HTTP/1.1"
    assert atoms["p"] == f"<{pid}>"
    assert atoms["{x-req}i"] == "req-42"
    assert atoms["{x-resp}o"] == "out-value"
    # No WSGI environ under ASGI: %({NAME}e)s is the worker's environment variable.
    assert atoms["{GUNICORN_TEST_DIR}e"] == str(main.dir)
    assert atoms["{x-missing}i"] == "-"


def test_access_log_to_stdout(tmp_path):
    server = start_gunicorn(tmp_path, "gunicorn_app:app", "--access-logfile", "-")
    try:
        assert get(server, "/to-stdout").status == 200
        server.wait_for_stdout(r'(?m)^127\.0\.0\.1 - - \[[^\]]+\] "GET /to-stdout HTTP/1\.1" 200 ')
    finally:
        server.stop()


def test_access_log_through_gunicorns_logging_config(tmp_path):
    # A logging config gives gunicorn.access its own handler and format: lines go through it.
    log = tmp_path / "tagged.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tagged": {"format": "ACCESS %(message)s"}},
        "handlers": {
            "tagged": {"class": "logging.FileHandler", "filename": str(log), "formatter": "tagged"}
        },
        "loggers": {
            "gunicorn.access": {"handlers": ["tagged"], "level": "INFO", "propagate": False}
        },
        # gunicorn merges its defaults, whose root logger names a handler replaced here.
        "root": {"level": "INFO", "handlers": []},
    }
    (tmp_path / "logging.json").write_text(json.dumps(config))
    server = start_gunicorn(
        tmp_path, "gunicorn_app:app", "--log-config-json", str(tmp_path / "logging.json")
    )
    try:
        assert get(server, "/tagged").status == 200
        wait_for(
            lambda: log.exists() and '"GET /tagged HTTP/1.1" 200' in log.read_text(),
            message="no access line through the logging config",
        )
        assert all(line.startswith("ACCESS ") for line in log.read_text().splitlines())
    finally:
        server.stop()


def test_request_hooks_and_post_worker_init(main):
    (worker,) = worker_pids(main)
    assert get(main, "/hooked").status == 200
    lines = wait_for(
        lambda: [ln for ln in hook_lines(main.dir) if "/hooked" in ln] or None,
        message="no request hook ran",
    )
    wait_for(lambda: len([ln for ln in hook_lines(main.dir) if "/hooked" in ln]) == 2)
    lines = [ln for ln in hook_lines(main.dir) if "/hooked" in ln]
    assert lines == [
        f"pre_request {worker} GET /hooked",
        f"post_request {worker} /hooked 200 OK GET",
    ]
    assert f"post_worker_init {worker}" in hook_lines(main.dir)


def test_usr1_reopens_log_files(main):
    moved = main.access.with_name("access.log.1")
    os.replace(main.access, moved)
    main.signal(signal.SIGUSR1)

    # The arbiter reopens its own files, then passes USR1 on to the worker: once the worker
    # has reopened gunicorn's log files, its access lines land in a new file at the old path.
    def logged_in_new_file() -> bool:
        assert get(main, "/after-usr1").status == 200
        return main.access.exists() and "/after-usr1" in main.access.read_text()

    wait_for(logged_in_new_file, timeout=5, interval=0.1, message="access log not reopened")
    assert "/hooked" not in main.access.read_text()  # older lines stayed in the moved file


# -- the arbiter's signals -----------------------------------------------------------------


def test_hup_under_load_and_ttin_ttou(tmp_path):
    server = start_gunicorn(tmp_path, "gunicorn_app:app", "-w", "2")
    try:
        wait_for(lambda: len(worker_pids(server)) == 2)
        before = worker_pids(server)
        load = Load(server)
        try:
            wait_for(lambda: load.ok >= 50, timeout=10)
            server.signal(signal.SIGHUP)
            wait_for(
                lambda: len(worker_pids(server)) == 2 and not worker_pids(server) & before,
                timeout=15,
                message="old workers not replaced after HUP",
            )
            served = load.ok
            wait_for(lambda: load.ok >= served + 50, timeout=10)
        finally:
            load.stop()
        assert load.failures == [], load.failures[:5]
        after = worker_pids(server)
        assert set(load.pids[-20:]) <= after
        assert set(load.pids) & before, "no request reached the first workers"

        server.signal(signal.SIGTTIN)
        wait_for(lambda: len(worker_pids(server)) == 3, message="TTIN added no worker")
        server.signal(signal.SIGTTOU)
        wait_for(lambda: len(worker_pids(server)) == 2, message="TTOU removed no worker")
        assert get(server).status == 200
    finally:
        server.stop()


def test_max_requests_recycles_without_failures(tmp_path):
    server = start_gunicorn(
        tmp_path, "gunicorn_app:app", "--max-requests", "30", "--max-requests-jitter", "10"
    )
    try:
        load = Load(server, clients=3)
        try:
            wait_for(lambda: len(set(load.pids)) >= 3, timeout=20, message="no recycling")
        finally:
            load.stop()
        assert load.failures == [], load.failures[:5]
        assert "Autorestarting worker after current request." in server.stderr()
        # Each recycled worker ran its exit hook.
        exits = [ln for ln in hook_lines(tmp_path) if ln.startswith("worker_exit")]
        assert len(exits) >= 2
    finally:
        server.stop()


def test_blocked_worker_is_killed_after_timeout(tmp_path):
    server = start_gunicorn(tmp_path, "gunicorn_app:app", "--timeout", "2")
    try:
        (blocked,) = worker_pids(server)
        client = RawClient(server.port, timeout=20)
        client.request("GET", "/block?t=60")
        started = time.monotonic()
        # The heartbeat stops with the loop: the arbiter aborts the worker and replaces it.
        text = server.wait_for_stderr(rf"WORKER TIMEOUT \(pid:{blocked}\)", timeout=10)
        # Not before --timeout since the last heartbeat, which came at most 1s before.
        assert time.monotonic() - started >= 1.0, text
        wait_for(
            lambda: worker_pids(server) and blocked not in worker_pids(server),
            timeout=10,
            message="blocked worker still there",
        )
        assert client.closed_within(5)
        client.close()
        resp = get(server)
        assert resp.status == 200 and int(resp.body) != blocked
        assert f"worker_abort {blocked}" in hook_lines(tmp_path)
        assert f"worker_exit {blocked}" in hook_lines(tmp_path)
    finally:
        server.stop()


def test_worker_over_limit_max_rss_is_replaced_without_failures(tmp_path):
    server = start_gunicorn(tmp_path, env={"RSGI_LIMIT_MAX_RSS": "60"})
    try:
        (hog,) = worker_pids(server)
        load = Load(server, clients=2)
        try:
            assert get(server, "/hog?mib=80").status == 200
            server.wait_for_stderr(
                rf"Worker \[{hog}\] uses \d+ MiB, over limit_max_rss 60", timeout=10
            )
            wait_for(
                lambda: worker_pids(server) and hog not in worker_pids(server),
                timeout=20,
                message="the hog still runs",
            )
            wait_for(lambda: set(load.pids) - {hog}, timeout=10, message="no new worker served")
        finally:
            load.stop()
        assert load.failures == [], load.failures[:5]
        assert f"worker_exit {hog}" in hook_lines(tmp_path)
    finally:
        server.stop()


def test_quit_stops_at_once(tmp_path):
    server = start_gunicorn(tmp_path, "gunicorn_app:app", "--graceful-timeout", "30")
    try:
        (worker,) = worker_pids(server)
        client = RawClient(server.port, timeout=20)
        client.request("GET", "/slow?t=60")
        wait_for((tmp_path / "slow-started").exists, message="slow request never started")
        sent = time.monotonic()
        server.signal(signal.SIGQUIT)
        code = server.wait_exit(timeout=10)
        took = time.monotonic() - sent
        client.close()
        assert code == 0, server.output()
        assert took < 3, f"QUIT took {took:.1f}s"
        assert f"worker_int {worker}" in hook_lines(tmp_path)
        assert f"worker_exit {worker}" in hook_lines(tmp_path)
    finally:
        server.stop()


def test_term_lets_in_flight_request_finish(tmp_path):
    server = start_gunicorn(tmp_path, "gunicorn_app:app", "--graceful-timeout", "15")
    try:
        client = RawClient(server.port, timeout=20)
        client.request("GET", "/slow?t=1.5")
        wait_for((tmp_path / "slow-started").exists, message="slow request never started")
        server.signal(signal.SIGTERM)
        resp = client.read_response(timeout=10)
        client.close()
        assert resp.status == 200 and resp.body == b"slow done"
        assert server.wait_exit(timeout=10) == 0, server.output()
        assert "Application shutdown complete." in server.stderr()
    finally:
        server.stop()


def test_lifespan_failure_is_a_boot_error(tmp_path):
    server = start_gunicorn(tmp_path, "lifespan_apps:fail_startup", wait=False)
    try:
        code = server.wait_exit(timeout=20)
    finally:
        server.stop()
    text = server.stderr()
    assert code == 3, server.output()
    assert "Application startup failed. Exiting." in text
    assert "Worker failed to boot." in text


# -- settings -------------------------------------------------------------------------------


def test_limits_and_proxy_settings_reach_the_core(tmp_path):
    server = start_gunicorn(
        tmp_path,
        "gunicorn_app:app",
        "--limit-request-line", "100",
        "--worker-connections", "1",
        "--forwarded-allow-ips", "10.9.9.9",
    )  # fmt: skip
    try:
        assert get(server, "/" + "x" * 200).status == 414
        # One request in flight at most: the second gets 503 at once.
        slow = RawClient(server.port, timeout=20)
        slow.request("GET", "/slow?t=1.5")
        wait_for((tmp_path / "slow-started").exists, message="slow request never started")
        assert get(server).status == 503
        assert slow.read_response().status == 200
        slow.close()
        # 127.0.0.1 is not among the trusted proxies: its X-Forwarded-For is ignored.
        forwarded = [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")]
        assert get(server, "/client", headers=forwarded).body == b"127.0.0.1 http"
    finally:
        server.stop()
    server = start_gunicorn(tmp_path, "gunicorn_app:app", "--forwarded-allow-ips", "*")
    try:
        assert get(server, "/client", headers=forwarded).body == b"1.2.3.4 https"
    finally:
        server.stop()


def make_worker(argv: list[str], worker_class=None):
    from gunicorn.config import Config as GunicornConfig
    from gunicorn.glogging import Logger
    from rsgi.workers import RsgiWorker

    cfg = GunicornConfig()
    parsed = cfg.parser().parse_args([*argv, "app:app"])
    for name, value in vars(parsed).items():
        if value is not None and name in cfg.settings:
            cfg.set(name.lower(), value)
    cls = worker_class or RsgiWorker
    return cls(1, os.getpid(), [], None, cfg.timeout / 2, cfg, Logger(cfg))


def test_settings_map_onto_rsgi_config(monkeypatch):
    from rsgi import Config

    monkeypatch.delenv("SCRIPT_NAME", raising=False)
    worker = make_worker(
        [
            "--keep-alive", "7",
            "--graceful-timeout", "12",
            "--limit-request-line", "1000",
            "--limit-request-fields", "50",
            "--limit-request-field_size", "2000",
            "--worker-connections", "77",
            "--forwarded-allow-ips", "10.0.0.1,192.168.0.0/16",
            "--backlog", "64",
            "--root-path", "/api",
            "--log-level", "debug",
        ]
    )  # fmt: skip
    config = Config(app=lambda *a: None, **worker.config_kwargs())
    assert config.timeout_keep_alive == 7.0
    assert config.timeout_graceful_shutdown == 12.0
    assert config.limit_request_line == 1000
    assert config.limit_request_fields == 50
    assert config.limit_request_field_size == 2000
    assert config.limit_concurrency == 77
    assert config.forwarded_allow_ips == "10.0.0.1,192.168.0.0/16"
    assert config.backlog == 64
    assert config.root_path == "/api"
    assert config.log_level == "debug"
    assert config.access_log is False  # gunicorn logs no access by default


def test_settings_defaults_script_name_and_config_kwargs(monkeypatch):
    from rsgi import Config
    from rsgi.workers import RsgiWorker

    class Custom(RsgiWorker):
        CONFIG_KWARGS = {"loop": "asyncio", "threads": 2, "timeout_keep_alive": 9}

    monkeypatch.setenv("SCRIPT_NAME", "/mounted")
    worker = make_worker(["--keep-alive", "0"], Custom)
    config = Config(app=lambda *a: None, **worker.config_kwargs())
    assert config.root_path == "/mounted"
    assert config.loop == "asyncio" and config.threads == 2
    assert config.timeout_keep_alive == 9.0  # CONFIG_KWARGS wins
    worker = make_worker(["--keep-alive", "0"])
    config = Config(app=lambda *a: None, **worker.config_kwargs())
    assert config.timeout_keep_alive == 0.0
    assert config.limit_concurrency == 1000  # gunicorn's default worker_connections
    assert config.limit_request_line == 4094  # gunicorn's default


def test_limit_max_rss_comes_from_rsgis_environment(monkeypatch):
    from rsgi import Config
    from rsgi.workers import RsgiWorker

    monkeypatch.setenv("RSGI_LIMIT_MAX_RSS", "512")
    monkeypatch.setenv("RSGI_THREADS", "not read: gunicorn's settings map onto the rest")
    config = Config(app=lambda *a: None, **make_worker([]).config_kwargs())
    assert config.limit_max_rss == 512

    class Custom(RsgiWorker):
        CONFIG_KWARGS = {"limit_max_rss": 100}

    config = Config(app=lambda *a: None, **make_worker([], Custom).config_kwargs())
    assert config.limit_max_rss == 100  # CONFIG_KWARGS wins
    monkeypatch.delenv("RSGI_LIMIT_MAX_RSS")
    assert Config(app=lambda *a: None, **make_worker([]).config_kwargs()).limit_max_rss is None


def test_rss_over_the_limit_twice_in_a_row_restarts_the_worker(monkeypatch):
    from rsgi import workers

    samples = iter([600, 600, 100, 600, 100, 600, 612])
    monkeypatch.setattr(workers, "resident_bytes", lambda: next(samples) << 20)
    worker = make_worker([])
    worker.RSS_EVERY = 0.0
    seen = [worker.rss_over(512) for _ in range(6)]
    worker.RSS_EVERY = 3600.0
    seen.append(worker.rss_over(512))
    # Over once, then again: restart. Under in between starts the count again.
    assert seen == [False, True, False, False, False, False, True]
    # The next look is RSS_EVERY away, not at the next heartbeat (no sample is left).
    assert worker.rss_over(512) is False


def test_request_limits_keep_gunicorns_meaning():
    from rsgi import Config
    from rsgi.config import C_INT_MAX

    def limits(*argv: str) -> tuple[int, int, int]:
        config = Config(app=lambda *a: None, **make_worker(list(argv)).config_kwargs())
        return (
            config.limit_request_line,
            config.limit_request_fields,
            config.limit_request_field_size,
        )

    # 0 means unlimited, the default and the maximum, as in gunicorn/http/message.py.
    assert limits(
        "--limit-request-line", "0",
        "--limit-request-fields", "0",
        "--limit-request-field_size", "0",
    ) == (C_INT_MAX, 32768, 8190)  # fmt: skip
    assert limits("--limit-request-line", "9000", "--limit-request-fields", "40000") == (
        8190,
        32768,
        8190,
    )


def rsgi_has_tls() -> bool:
    from rsgi.config import settings

    return "ssl_certfile" in {s.name for s in settings()}


@pytest.mark.skipif(not rsgi_has_tls(), reason="this rsgi has no TLS support")
def test_ssl_settings_map_onto_rsgi_config(tmp_path):
    trustme = pytest.importorskip("trustme")
    from rsgi import Config

    ca = trustme.CA()
    cert, key, cas = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(cas))
    worker = make_worker(
        ["--certfile", str(cert), "--keyfile", str(key), "--ca-certs", str(cas), "--cert-reqs", "1"]
    )
    config = Config(app=lambda *a: None, **worker.config_kwargs())
    assert (config.ssl_certfile, config.ssl_keyfile) == (str(cert), str(key))
    assert (config.ssl_ca_certs, config.ssl_cert_reqs) == (str(cas), 1)


@pytest.mark.skipif(not rsgi_has_tls(), reason="this rsgi has no TLS support")
def test_serves_https_with_gunicorns_certfile(tmp_path):
    trustme = pytest.importorskip("trustme")
    import http.client
    import ssl

    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    server = start_gunicorn(
        tmp_path, "gunicorn_app:app", "--certfile", str(cert), "--keyfile", str(key), wait=False
    )
    try:
        wait_until_accepting(server)
        context = ssl.create_default_context()
        ca.configure_trust(context)

        def answer() -> bytes | None:
            conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context)
            try:
                conn.request("GET", "/client")
                return conn.getresponse().read()
            except OSError:
                return None
            finally:
                conn.close()

        assert wait_for(answer, timeout=10, message="no HTTPS answer") == b"127.0.0.1 https"
    finally:
        server.stop()


@pytest.mark.skipif(rsgi_has_tls(), reason="this rsgi serves TLS")
def test_tls_settings_refuse_to_serve_without_tls_support(tmp_path):
    # Never serve plain HTTP where HTTPS was asked for: the worker does not boot.
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    for path in (cert, key):
        path.write_text("not used\n")
    server = start_gunicorn(
        tmp_path, "gunicorn_app:app", "--certfile", str(cert), "--keyfile", str(key), wait=False
    )
    try:
        code = server.wait_exit(timeout=20)
    finally:
        server.stop()
    assert code == 3, server.output()
    assert "this rsgi has no TLS support" in server.stderr()


def test_worker_is_exported():
    import rsgi
    import rsgi.workers

    assert rsgi.Worker is rsgi.workers.RsgiWorker is rsgi.workers.Worker
    from gunicorn.workers.base import Worker

    assert issubclass(rsgi.Worker, Worker)
