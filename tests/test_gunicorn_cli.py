"""``rsgi`` in place of ``gunicorn -k uvicorn.workers.UvicornWorker``: gunicorn's command line
and its Python config file, with real processes and sockets (issue 19); and the layout of
the Python package (issue 18: rsgi.config is a leaf, no import cycles)."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import (
    SERVER,
    RawClient,
    Server,
    child_env,
    free_port,
    running_server,
    server_command,
    spawn_process,
    wait_until_accepting,
)
from procfs import children

pytestmark = pytest.mark.skipif(SERVER != "rsgi", reason="rsgi's own command line")

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "rsgi"

APP = """
import json, os, sys

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    print("app saw", scope["path"], flush=True)
    body = json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(), "gid": os.getgid(),
        "cwd": os.getcwd(),
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
"""

# What teams deploy: settings, then gunicorn's hooks writing marker files.
CONF = """
import multiprocessing
import os

MARKERS = {markers!r}

bind = "127.0.0.1:{port}"
workers = 2
worker_class = "uvicorn.workers.UvicornWorker"
preload_app = True
max_requests = 1000
max_requests_jitter = 50
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = {access!r}
errorlog = {error!r}
loglevel = "info"
daemon = False


def mark(name):
    with open(os.path.join(MARKERS, f"{{name}}-{{os.getpid()}}"), "w") as f:
        f.write(str(os.getuid()))


def on_starting(server):
    mark("on_starting")


def when_ready(server):
    server.log.info("when_ready: %d workers", server.num_workers)
    mark("when_ready")


def post_fork(server, worker):
    mark("post_fork")


def worker_exit(server, worker):
    mark("worker_exit")


def on_exit(server):
    mark("on_exit")
"""


@pytest.fixture
def app_dir() -> Iterator[Path]:
    """The app in a directory every user can read (for --user nobody)."""
    path = Path(tempfile.mkdtemp(prefix="rsgi-gunicorn-cli-"))
    path.chmod(0o755)
    (path / "main.py").write_text(APP)
    (path / "main.py").chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, port: int | None = None, uds: str | None = None, **kw) -> Server:
        server = spawn_process(server_command(*args), port=port, uds=uds, **kw)
        started.append(server)
        wait_until_accepting(server)
        return server

    yield start
    for server in started:
        server.stop()


def get(port: int, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def wait_for(predicate: Callable[[], object], timeout: float = 15, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def serving_pids(port: int, count: int) -> set[int]:
    """The pids of ``count`` distinct workers, as they answer."""
    pids: set[int] = set()
    deadline = time.monotonic() + 20
    while len(pids) < count and time.monotonic() < deadline:
        pids.add(get(port).json()["pid"])
    assert len(pids) >= count, pids
    return pids


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


# -- the command line --------------------------------------------------------------------


def test_seed_exec_start_line_serves_reloads_and_stops(servers, app_dir, tmp_path):
    """The seeds' systemd ExecStart, with ``rsgi`` in place of ``gunicorn -k ...``."""
    port = free_port()
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    # gunicorn main:app -w 8 -k uvicorn.workers.UvicornWorker -b 127.0.0.1:8097 --timeout 120
    #   --graceful-timeout 30 --access-logfile ... --error-logfile ... --capture-output
    server = servers(
        "main:app", "-w", "8", "-b", f"127.0.0.1:{port}", "--timeout", "120",
        "--graceful-timeout", "30", "--access-logfile", str(access),
        "--error-logfile", str(error), "--capture-output",
        port=port, cwd=app_dir,
    )  # fmt: skip
    workers = wait_for(lambda: len(children(server.pid)) == 8 and children(server.pid))
    response = get(port)
    assert response.status_code == 200
    assert response.json()["ppid"] == server.pid
    wait_for(lambda: '"GET / HTTP/1.1" 200' in access.read_text(), what="access line")
    # --capture-output: the app's print() goes to the error log, with the server's messages.
    wait_for(lambda: "app saw /" in error.read_text(), what="captured print")
    assert "Booting worker" in error.read_text() or "rsgi running on" in error.read_text()

    server.signal(signal.SIGHUP)
    wait_for(lambda: not (children(server.pid) & workers), what="old workers gone")
    assert len(wait_for(lambda: len(children(server.pid)) == 8 and children(server.pid))) == 8
    assert get(port).status_code == 200

    assert server.stop() == 0
    with pytest.raises(httpx.ConnectError):
        get(port)


def test_gunicorn_flags_are_not_abbreviated_and_map_by_meaning():
    from rsgi.cli import config_from_argv

    config, _ = config_from_argv(
        ["main:app", "--timeout", "120", "--graceful-timeout", "30", "--keep-alive", "3",
         "--max-requests", "1000", "--max-requests-jitter", "50", "--worker-connections", "200",
         "--access-logformat", "%(h)s %(r)s", "-b", "unix:/tmp/x.sock", "--chdir", "/tmp"],
        environ={},
    )  # fmt: skip
    # gunicorn's --timeout is its worker silent timeout: rsgi's --timeout-worker.
    assert config.timeout_worker == 120.0
    assert config.timeout_graceful_shutdown == 30.0
    assert config.timeout_keep_alive == 3.0
    assert (config.limit_max_requests, config.limit_max_requests_jitter) == (1000, 50)
    assert config.limit_concurrency == 200
    assert config.access_log_format == "%(h)s %(r)s"
    assert (config.uds, config.chdir) == ("/tmp/x.sock", "/tmp")
    # gunicorn's 0 turns the timeout and the request limit off.
    config, _ = config_from_argv(["a:b", "-t", "0", "--max-requests", "0"], environ={})
    assert (config.timeout_worker, config.limit_max_requests) == (None, None)
    assert not config.supervised({})
    # No prefix matching: "--time" is not --timeout (nor ambiguous between the timeouts).
    result = subprocess.run(
        server_command("main:app", "--time", "3"), capture_output=True, text=True,
        env=child_env(), timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unrecognized arguments: --time 3" in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_several_binds(servers, app_dir, workers):
    port, other = free_port(), free_port()
    uds = str(app_dir / "app.sock")
    server = servers(
        "main:app", "-w", workers, "-b", f"127.0.0.1:{port}", "--bind", f"127.0.0.1:{other}",
        "-b", f"unix:{uds}", port=port, cwd=app_dir,
    )  # fmt: skip
    wait_for(lambda: not _port_free_to_connect(other), what="the second address")
    assert get(port).status_code == 200
    assert get(other).status_code == 200
    transport = httpx.HTTPTransport(uds=uds)
    with httpx.Client(transport=transport, timeout=10) as client:
        assert client.get("http://localhost/").status_code == 200
    assert server.stop() == 0
    assert not os.path.exists(uds)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_user_drops_privileges_after_binding(servers, app_dir):
    import pwd

    nobody = pwd.getpwnam("nobody")
    # CI's interpreter may live under root's private home: let nobody pass through (not list)
    # the directories above it for this test only.
    with traversable([sys.executable, sys.prefix, rsgi_dir(), str(app_dir)]):
        assert runs_as(nobody.pw_uid, nobody.pw_gid), f"nobody cannot run {sys.executable}"
        drop_privileges(servers, app_dir, nobody)


def drop_privileges(servers, app_dir, nobody) -> None:
    # A privileged port when free: only root can bind it, so binding came before the switch.
    port = 80 if not _port_taken(80) else free_port()
    # A directory the workers' user can reach: each opens the access log by its path.
    access = app_dir / "access.log"
    server = servers(
        "main:app", "-b", f"127.0.0.1:{port}", "--user", "nobody", "--umask", "027",
        "--access-logfile", str(access), port=port, cwd=app_dir,
    )  # fmt: skip
    data = get(port).json()
    # The worker runs as nobody, with nobody's group; the master that bound stays root.
    assert (data["uid"], data["gid"]) == (nobody.pw_uid, nobody.pw_gid)
    assert data["ppid"] == server.pid
    assert uid_of(server.pid) == 0
    assert uid_of(data["pid"]) == nobody.pw_uid
    wait_for(lambda: access.exists() and "GET / HTTP/1.1" in access.read_text())
    assert server.stop() == 0


@contextlib.contextmanager
def traversable(paths: list[str]):
    """Other users may pass through every directory above `paths` while this runs."""
    changed: list[tuple[Path, int]] = []
    try:
        for path in paths:
            for parent in Path(os.path.realpath(path)).parents:
                mode = stat.S_IMODE(parent.stat().st_mode)
                if not mode & stat.S_IXOTH:
                    os.chmod(parent, mode | stat.S_IXOTH)
                    changed.append((parent, mode))
        yield
    finally:
        for parent, mode in reversed(changed):
            os.chmod(parent, mode)


def rsgi_dir() -> str:
    """Where the installed rsgi package is (the worker imports it after switching user)."""
    import rsgi

    return os.path.dirname(rsgi.__file__)


def runs_as(uid: int, gid: int) -> bool:
    """Whether this interpreter and its standard library work for that user: a worker
    imports modules after switching to it."""

    def switch() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    try:
        result = subprocess.run(
            [sys.executable, "-c", "import http, json, asyncio"], preexec_fn=switch,
            capture_output=True, timeout=30, cwd="/",
        )  # fmt: skip
    except OSError:
        return False
    return result.returncode == 0


def _port_free_to_connect(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# -- the config file ---------------------------------------------------------------------


def write_conf(directory: Path, port: int, markers: Path, **extra: str) -> Path:
    text = CONF.format(
        markers=str(markers), port=port, access=str(directory / "access.log"),
        error=str(directory / "error.log"),
    )  # fmt: skip
    text += "".join(f"{name} = {value}\n" for name, value in extra.items())
    path = directory / "gunicorn.conf.py"
    path.write_text(text)
    return path


def markers_named(markers: Path, name: str) -> list[int]:
    return sorted(int(p.name.rsplit("-", 1)[1]) for p in markers.glob(f"{name}-*"))


def test_gunicorn_conf_py_serves_reloads_stops_and_calls_hooks(servers, app_dir, tmp_path):
    port = free_port()
    markers = tmp_path / "markers"
    markers.mkdir()
    conf = write_conf(tmp_path, port, markers)
    server = servers("-c", str(conf), "main:app", port=port, cwd=app_dir)
    errors = tmp_path / "error.log"
    workers = serving_pids(port, 2)
    assert markers_named(markers, "on_starting") == [server.pid]
    assert markers_named(markers, "when_ready") == [server.pid]
    wait_for(lambda: set(markers_named(markers, "post_fork")) >= workers, what="post_fork")
    log = errors.read_text()
    assert "worker_class 'uvicorn.workers.UvicornWorker' is ignored" in log
    assert "when_ready: 2 workers" in log
    # accesslog and max_requests: the access line is written; workers are under a limit.
    wait_for(lambda: "GET / HTTP/1.1" in (tmp_path / "access.log").read_text())

    # HUP with preload_app: the master re-executes itself (same pid) and new workers serve.
    server.signal(signal.SIGHUP)
    wait_for(lambda: not (children(server.pid) & workers), what="old workers replaced")
    assert get(port).status_code == 200
    wait_for(lambda: set(markers_named(markers, "worker_exit")) >= workers, what="worker_exit")

    assert server.stop() == 0
    assert markers_named(markers, "on_exit") == [server.pid]
    assert server.pid not in markers_named(markers, "worker_exit")


def test_config_file_settings_lose_to_flags_and_environment(tmp_path):
    from rsgi.cli import config_from_argv

    conf = write_conf(
        tmp_path,
        8123,
        tmp_path,
        threads="4",
        wsgi_app='"main:app"',
        http2_max_concurrent_streams="50",
    )
    config, warnings = config_from_argv(["-c", str(conf)], environ={})
    assert config.app == "main:app"
    assert (config.host, config.port, config.workers, config.preload) == (
        "127.0.0.1", 8123, 2, True,
    )  # fmt: skip
    assert (config.timeout_worker, config.limit_max_requests) == (120.0, 1000)
    assert config.access_logfile == str(tmp_path / "access.log")
    assert callable(config.post_fork)
    assert config.h2_max_concurrent_streams == 50  # gunicorn 25's http2_max_concurrent_streams
    assert config.threads == 1  # gunicorn's threads are not rsgi's I/O threads
    assert any("threads is ignored" in w for w in warnings)
    config, _ = config_from_argv(
        ["-c", str(conf), "-w", "3", "other:app"], environ={"RSGI_TIMEOUT_WORKER": "7"}
    )
    assert (config.workers, config.app, config.timeout_worker) == (3, "other:app", 7.0)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("syslog = True", "rsgi does not support gunicorn's syslog setting"),
        ("statsd_host = 'localhost:8125'", "gunicorn's statsd_host setting"),
        ("worker_class = 'sync'", "worker_class 'sync' is not an ASGI worker"),
        ("workers = 'many'", "expected an integer"),
        ("http_protocols = 'h2,h3'", "http_protocols: unknown protocol 'h3' (h1, h2)"),
        ("http2_cleartext = 'yes'", "http2_cleartext: 'yes' is not off, prior-knowledge"),
    ],
)
def test_config_file_refuses_what_rsgi_cannot_do(tmp_path, setting, message):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"bind = '127.0.0.1:8000'\nhelper = 1\nimport os\n{setting}\n")
    result = subprocess.run(
        server_command("-c", str(conf), "main:app"), capture_output=True, text=True,
        env=child_env(), timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_every_gunicorn_setting_is_placed():
    """Each setting of the installed gunicorn is mapped, ignored with a reason, or refused
    by name: none is silently dropped because rsgi's list is out of date."""
    gunicorn_config = pytest.importorskip("gunicorn.config")
    from rsgi.configfile import GUNICORN_SETTINGS

    missing = {s.name for s in gunicorn_config.KNOWN_SETTINGS} - GUNICORN_SETTINGS
    assert not missing


# -- the package's layout (issue 18) -------------------------------------------------------


def module_imports(path: Path) -> set[str]:
    """The rsgi modules a module imports when it is imported (not inside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "rsgi":
                found.update(f"rsgi.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return {name for name in found if name.startswith("rsgi.") and name != "rsgi._rsgi"}


def test_no_import_cycles_and_config_is_a_leaf():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = module_imports(path)
    assert graph["rsgi.config"] == set()
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                assert nxt != start, "import cycle: " + " -> ".join((*trail, nxt))
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    # And at run time, from the source tree: the package and its options table import
    # without the Rust core (scripts/gen_options.py relies on it).
    code = "import json, sys, rsgi.config, rsgi.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**child_env(), "PYTHONPATH": str(PACKAGE.parent)}, cwd=str(PACKAGE.parent),
    ).stdout  # fmt: skip
    modules = json.loads(out)
    assert "rsgi._rsgi" not in modules


# -- raw_env, pythonpath, proc_name and the other hooks ------------------------------------

# The app lives in a --pythonpath directory only; it shows the environment it was given.
WEBAPP = """
import json, os, time

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/hang":
        time.sleep(60)
    names = ("GREETING", "EMPTY", "FROM_FLAG")
    body = json.dumps({"pid": os.getpid(), "env": {k: os.environ.get(k) for k in names}})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})
"""

SETTINGS_CONF = """
bind = "127.0.0.1:{port}"
pythonpath = {pythonpath!r}
raw_env = ["GREETING=hello=world", "EMPTY="]
"""

# Every hook appends [pid, name, what it was given] to a file.
HOOKS_CONF = """
import json, os


def record(*fields):
    with open({log!r}, "a") as f:
        f.write(json.dumps([os.getpid(), *fields]) + "\\n")


def nworkers_changed(server, new_value, old_value):
    record("nworkers_changed", new_value, old_value, server.num_workers)


def pre_fork(server, worker):
    record("pre_fork", worker.age, worker.pid)


def child_exit(server, worker):
    record("child_exit", worker.age, worker.pid)


def on_reload(server):
    record("on_reload")


def pre_exec(server):
    record("pre_exec")


def post_worker_init(worker):
    record("post_worker_init", worker.age, os.environ["GREETING"])


def worker_int(worker):
    record("worker_int", worker.age)


def worker_abort(worker):
    record("worker_abort", worker.age)


def pre_request(worker, req):
    record("pre_request", worker.age, req.method, req.path, req.query)


def post_request(worker, req, environ, resp):
    record("post_request", worker.age, environ["QUERY_STRING"], resp.status, resp.response_length)
"""


@pytest.fixture
def conf_file(tmp_path: Path) -> Callable[..., tuple[Path, Path, int]]:
    """Writes the app and a config file with the settings and every hook: returns the
    config, the hooks' record file and the port."""

    def write(**extra: object) -> tuple[Path, Path, int]:
        code = tmp_path / "code"
        code.mkdir(exist_ok=True)
        (code / "webapp.py").write_text(WEBAPP)
        port, log = free_port(), tmp_path / "hooks.jsonl"
        text = SETTINGS_CONF.format(port=port, pythonpath=f"/nonexistent,{code}")
        text += HOOKS_CONF.format(log=str(log))
        text += "".join(f"{name} = {value!r}\n" for name, value in extra.items())
        conf = tmp_path / "gunicorn.conf.py"
        conf.write_text(text)
        return conf, log, port

    return write


def records(log: Path, pid: int | None = None) -> list[list[object]]:
    """The hooks' records, [name, ...], of process ``pid`` or of all ([pid, name, ...])."""
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if pid is None:
        return lines
    return [line[1:] for line in lines if line[0] == pid]


def wait_records(log: Path, pid: int, count: int) -> list[list[object]]:
    """The first ``count`` records of ``pid``, once there are that many."""
    wait_for(lambda: len(records(log, pid)) >= count, what=f"{count} records of {pid}")
    return records(log, pid)[:count]


def worker_pids(log: Path) -> dict[int, int]:
    """Each worker's pid by its serial (age), from its post_worker_init."""
    return {line[2]: line[0] for line in records(log) if line[1] == "post_worker_init"}


def test_raw_env_and_pythonpath_reach_the_workers(servers, conf_file, tmp_path):
    conf, _, port = conf_file(workers=2)
    server = servers("-c", str(conf), "webapp:app", port=port, cwd=tmp_path)
    response = get(port)
    assert response.json()["env"] == {"GREETING": "hello=world", "EMPTY": "", "FROM_FLAG": None}
    assert response.json()["pid"] in children(server.pid)
    assert server.stop() == 0
    # The flags replace the file's raw_env, as they replace every setting (in gunicorn too).
    servers("-c", str(conf), "-e", "FROM_FLAG=x", "webapp:app", port=port, cwd=tmp_path)
    assert get(port).json()["env"] == {"GREETING": None, "EMPTY": None, "FROM_FLAG": "x"}


def test_raw_env_without_a_value_and_pythonpath_order_are_gunicorns(tmp_path):
    from rsgi.cli import config_from_argv
    from rsgi.process import enter

    result = subprocess.run(
        server_command("-e", "NOEQUALS", "main:app"), capture_output=True, text=True,
        env=child_env(), timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2
    assert "env (gunicorn's raw_env): 'NOEQUALS' is not KEY=VALUE" in result.stderr
    config, _ = config_from_argv(["--pythonpath", f"{tmp_path}/a,{tmp_path}/b", "m:app"], {})
    saved = list(sys.path)
    try:
        enter(config)
        assert sys.path[:2] == [f"{tmp_path}/b", f"{tmp_path}/a"]
    finally:
        sys.path[:] = saved


def test_master_hooks_follow_the_workers_through_ttin_ttou_hup_and_quit(
    servers, conf_file, tmp_path
):
    conf, log, port = conf_file(workers=2)
    server = servers("-c", str(conf), "webapp:app", port=port, cwd=tmp_path)
    master = server.pid
    assert wait_records(log, master, 3) == [
        ["nworkers_changed", 2, None, 2],
        ["pre_fork", 1, None],
        ["pre_fork", 2, None],
    ]
    wait_for(lambda: len(worker_pids(log)) == 2, what="post_worker_init")
    pids = worker_pids(log)
    for serial, pid in pids.items():
        assert records(log, pid) == [["post_worker_init", serial, "hello=world"]]

    response = get(port, "/x?q=1")
    pid = response.json()["pid"]
    serial = next(s for s, p in pids.items() if p == pid)
    length = len(response.content)
    wait_for(lambda: len(records(log, pid)) == 3, what="request hooks")
    assert records(log, pid)[1:] == [
        ["pre_request", serial, "GET", "/x", "q=1"],
        ["post_request", serial, "q=1", "200 OK", length],
    ]

    server.signal(signal.SIGTTIN)
    assert wait_records(log, master, 5)[3:] == [
        ["nworkers_changed", 3, 2, 3],
        ["pre_fork", 3, None],
    ]
    wait_for(lambda: 3 in worker_pids(log), what="worker 3")
    server.signal(signal.SIGTTOU)  # the oldest, worker 1, stops
    assert wait_records(log, master, 7)[5:] == [
        ["nworkers_changed", 2, 3, 2],
        ["child_exit", 1, pids[1]],
    ]

    server.signal(signal.SIGHUP)  # workers 4 and 5 replace 2 and 3
    reload = wait_records(log, master, 12)[7:]
    assert reload[:3] == [["on_reload"], ["pre_fork", 4, None], ["pre_fork", 5, None]]
    pids = worker_pids(log)
    assert sorted(reload[3:]) == [["child_exit", 2, pids[2]], ["child_exit", 3, pids[3]]]

    wait_for(lambda: {4, 5} <= set(worker_pids(log)), what="workers 4 and 5")
    pids = worker_pids(log)
    server.signal(signal.SIGQUIT)
    assert server.wait_exit(15) == 0
    assert records(log, pids[4])[-1] == ["worker_int", 4]
    assert records(log, pids[5])[-1] == ["worker_int", 5]
    assert sorted(records(log, master)[12:]) == [
        ["child_exit", 4, pids[4]],
        ["child_exit", 5, pids[5]],
    ]


def test_a_preload_reload_calls_on_reload_then_pre_exec(servers, conf_file, tmp_path):
    conf, log, port = conf_file(workers=1, preload_app=True)
    server = servers("-c", str(conf), "webapp:app", port=port, cwd=tmp_path)
    first = wait_records(log, server.pid, 2)
    server.signal(signal.SIGHUP)
    # The same pid re-executed: its new image starts as the first did.
    assert first == [["nworkers_changed", 1, None, 1], ["pre_fork", 1, None]]
    assert wait_records(log, server.pid, 6)[2:] == [
        ["on_reload"],
        ["pre_exec"],
        ["nworkers_changed", 1, None, 1],
        ["pre_fork", 2, None],
    ]


def test_worker_abort_runs_in_a_hung_worker_before_it_dies(servers, conf_file, tmp_path):
    conf, log, port = conf_file(workers=1, timeout=1)
    server = servers("-c", str(conf), "webapp:app", port=port, cwd=tmp_path)
    wait_for(lambda: 1 in worker_pids(log), what="worker 1")
    victim = worker_pids(log)[1]
    with pytest.raises(httpx.HTTPError):
        get(port, "/hang")
    wait_for(lambda: ["child_exit", 1, victim] in records(log, server.pid), what="child_exit")
    assert records(log, victim)[-1] == ["worker_abort", 1]
    err = server.wait_for_stderr(rf"Worker \[{victim}\] was killed by signal SIGABRT")
    assert re.search(r'File ".*webapp\.py", line \d+ in app', err), err


def test_one_process_calls_the_worker_hooks(servers, conf_file, tmp_path):
    conf, log, port = conf_file()
    server = servers("-c", str(conf), "webapp:app", port=port, cwd=tmp_path)
    response = get(port, "/?a=b")
    assert response.json()["pid"] == server.pid
    server.signal(signal.SIGINT)
    assert server.wait_exit(15) == 0
    assert records(log, server.pid) == [
        ["nworkers_changed", 1, None, 1],
        ["post_worker_init", 1, "hello=world"],
        ["pre_request", 1, "GET", "/", "a=b"],
        ["post_request", 1, "a=b", "200 OK", len(response.content)],
        ["worker_int", 1],
    ]


def test_proc_name_titles_the_master_and_workers(servers, conf_file, tmp_path):
    pytest.importorskip("setproctitle")
    conf, _, port = conf_file(workers=2, proc_name="billing")
    server = servers("-c", str(conf), "webapp:app", port=port, cwd=tmp_path)
    worker = get(port).json()["pid"]

    def title(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip()

    assert title(server.pid) == "rsgi: master [billing]"
    assert re.fullmatch(r"rsgi: worker [12] \[billing\]", title(worker))


@pytest.mark.parametrize(
    ("protocols", "http"), [('"h1"', "1"), ('"h2,h1"', "auto"), ('"h2"', "auto"), ('""', "1")]
)
def test_http_protocols_maps_onto_http(tmp_path, protocols, http):
    """gunicorn 25's http_protocols: with h2 listed gunicorn still serves HTTP/1.1 to clients
    that do not pick h2 (rsgi's "auto"); "h1" alone is HTTP/1.1 only."""
    from rsgi.cli import config_from_argv

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"http_protocols = {protocols}\nhttp2_cleartext = 'off'\n")
    config, warnings = config_from_argv(["-c", str(conf), "main:app"], environ={})
    assert config.http == http
    assert warnings == []


def test_http2_cleartext_upgrade_is_a_warning(tmp_path):
    from rsgi.cli import config_from_argv

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("http_protocols = 'h2,h1'\nhttp2_cleartext = 'upgrade'\n")
    config, warnings = config_from_argv(["-c", str(conf), "main:app"], environ={})
    assert config.http == "auto"
    assert len(warnings) == 1 and "no HTTP/1.1 Upgrade to h2c" in warnings[0], warnings


def test_http_protocols_h1_refuses_the_http2_preface(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("http_protocols = 'h1'\n")
    with running_server("raw_app:app", "-c", str(conf)) as server:
        with RawClient(server.port) as raw:
            raw.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            assert raw.read_until_closed(timeout=5).startswith(b"HTTP/1.1 400 ")
    conf.write_text("http_protocols = 'h2,h1'\n")
    with running_server("raw_app:app", "-c", str(conf)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            head = b""
            while len(head) < 9:
                head += raw.recv(9 - len(head))
            assert head[3] == 4, head  # the server's SETTINGS frame: HTTP/2 it is
