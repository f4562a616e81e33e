"""``--reload``: a reloader process restarts the server when watched files change.

The app module is copied into a temporary directory, the server started on it with
``--reload``, the file edited, and the response must change (served by a new process that
imported the new code), on the same port.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import IO_TIMEOUT, RawClient, spawn_server, wait_for, wait_until_accepting
from procfs import alive

pytest.importorskip("watchfiles")

pytestmark = pytest.mark.rsgi_only

APP_SOURCE = """\
import os

MESSAGE = "{message}"


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"{{MESSAGE}} {{os.getpid()}}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": body}})
"""

RELOAD_TIMEOUT = 20.0


def write_app(directory: Path, message: str, name: str = "reload_app.py") -> Path:
    path = directory / name
    path.write_text(APP_SOURCE.format(message=message))
    return path


def fetch(port: int) -> tuple[str, int] | None:
    """(message, server pid), or None while no server answers."""
    try:
        with RawClient(port, timeout=2) as client:
            client.request("GET", "/", headers=[("Connection", "close")])
            resp = client.read_response()
    except (OSError, AssertionError):
        return None
    if resp.status != 200:
        return None
    message, pid = resp.body.decode().rsplit(" ", 1)
    return message, int(pid)


def wait_for_message(port: int, message: str) -> int:
    """Waits until the server answers with ``message``; returns the serving pid."""
    result = wait_for(
        lambda: (r := fetch(port)) and r[0] == message and r,
        timeout=RELOAD_TIMEOUT,
        message=f"server never answered {message!r}",
    )
    return result[1]


def spawn_reloading(app_dir: Path, *args: str, **kwargs):
    """``rsgi --reload`` on reload_app.py in ``app_dir``, watching that directory."""
    return spawn_server(
        "reload_app:app",
        "--reload",
        "--reload-dir",
        str(app_dir),
        "--lifespan",
        "off",
        *args,
        app_dir=app_dir,
        **kwargs,
    )


@pytest.fixture
def reloading(tmp_path):
    """Starts ``rsgi --reload`` on an app in tmp_path; yields (server, app directory)."""
    servers = []

    def start(*args: str, message: str = "one"):
        write_app(tmp_path, message)
        server = spawn_reloading(tmp_path, *args)
        servers.append(server)
        wait_until_accepting(server)
        wait_for_message(server.port, message)
        return server

    yield start
    for server in servers:
        server.stop()


def child_pids(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in children]


def test_restarts_on_change_with_new_code(reloading, tmp_path):
    server = reloading()
    first_pid = wait_for_message(server.port, "one")
    offset = server.stderr_offset()
    write_app(tmp_path, "two")
    second_pid = wait_for_message(server.port, "two")
    assert second_pid != first_pid
    assert not alive(first_pid)
    assert server.pid not in (first_pid, second_pid)
    server.wait_for_stderr(r"WatchFiles detected changes in '.*reload_app\.py'", since=offset)
    # And again: every change gets a fresh process.
    write_app(tmp_path, "three")
    assert wait_for_message(server.port, "three") not in (first_pid, second_pid)
    server.assert_alive()
    text = server.stderr()
    assert "Started reloader process" in text
    assert f"Will watch for changes in these directories: ['{tmp_path}']" in text


def test_new_module_file_counts(reloading, tmp_path):
    server = reloading()
    pid = wait_for_message(server.port, "one")
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    wait_for(lambda: (r := fetch(server.port)) and r[1] != pid, timeout=RELOAD_TIMEOUT)


def test_files_not_included_do_not_restart(reloading, tmp_path):
    server = reloading()
    pid = wait_for_message(server.port, "one")
    (tmp_path / "notes.txt").write_text("not python\n")
    (tmp_path / ".hidden.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "__pycache__" / "cached.py").write_text("x = 1\n")
    time.sleep(2.0)
    assert fetch(server.port) == ("one", pid)


def test_reload_include_and_exclude(reloading, tmp_path):
    server = reloading("--reload-include", "*.txt", "--reload-exclude", "skip_*.py")
    pid = wait_for_message(server.port, "one")
    (tmp_path / "skip_me.py").write_text("x = 1\n")
    time.sleep(2.0)
    assert fetch(server.port) == ("one", pid)
    (tmp_path / "notes.txt").write_text("now included\n")
    wait_for(lambda: (r := fetch(server.port)) and r[1] != pid, timeout=RELOAD_TIMEOUT)


def test_broken_code_then_fixed(reloading, tmp_path):
    server = reloading()
    wait_for_message(server.port, "one")
    offset = server.stderr_offset()
    (tmp_path / "reload_app.py").write_text("def broken(:\n")
    server.wait_for_stderr(r"SyntaxError", since=offset, timeout=RELOAD_TIMEOUT)
    server.assert_alive()
    write_app(tmp_path, "fixed")
    wait_for_message(server.port, "fixed")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_reloader_and_server(reloading, signum):
    server = reloading()
    pid = wait_for_message(server.port, "one")
    assert pid in child_pids(server.pid)
    server.signal(signum)
    assert server.wait_exit(IO_TIMEOUT) == 0
    wait_for(lambda: not alive(pid), message="server process outlived the reloader")
    assert "Stopping reloader process" in server.stderr()


def test_server_stops_when_reloader_is_killed(reloading):
    server = reloading()
    pid = wait_for_message(server.port, "one")
    server.signal(signal.SIGKILL)
    server.wait_exit(IO_TIMEOUT)
    wait_for(lambda: not alive(pid), timeout=10, message="orphaned server kept running")


def test_reload_on_a_unix_socket(tmp_path):
    write_app(tmp_path, "one")
    uds = str(tmp_path / "rsgi.sock")
    server = spawn_reloading(tmp_path, port=False, uds=uds)

    def message() -> str | None:
        try:
            with RawClient(uds=uds, timeout=2) as client:
                client.request("GET", "/", headers=[("Connection", "close")])
                return client.read_response().body.decode().rsplit(" ", 1)[0]
        except (OSError, AssertionError):
            return None

    try:
        wait_until_accepting(server)
        wait_for(lambda: message() == "one", timeout=RELOAD_TIMEOUT)
        write_app(tmp_path, "two")
        wait_for(lambda: message() == "two", timeout=RELOAD_TIMEOUT)
    finally:
        server.stop()


def test_reload_with_workers_is_an_error(tmp_path):
    write_app(tmp_path, "one")
    server = spawn_server("reload_app:app", "--reload", "--workers", "2", app_dir=tmp_path)
    try:
        assert server.wait_exit(IO_TIMEOUT) == 2
        assert "--reload and --workers" in server.stderr()
    finally:
        server.stop()


def test_missing_watchfiles_is_a_clear_error(monkeypatch):
    from rsgi.config import Config, ConfigError
    from rsgi.supervisors.reload import run_reloader

    monkeypatch.setitem(sys.modules, "watchfiles", None)
    with pytest.raises(ConfigError, match=r"pip install 'rsgi\[standard\]'"):
        run_reloader(Config(app="reload_app:app", reload=True))


def test_reload_needs_an_import_string():
    from rsgi.config import Config, ConfigError

    async def app(scope, receive, send):
        pass

    with pytest.raises(ConfigError, match="import string"):
        Config(app=app, reload=True)


HOOKS_CONFIG = """\
import os


def post_worker_init(worker):
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write(f"post_worker_init {os.getpid()}\\n")


def record(name):
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write(name + "\\n")


when_ready = lambda server: record("when_ready")  # noqa: E731
"""


def test_config_file_hooks_run_in_every_reloaded_server(tmp_path):
    """The server process is started with `spawn`, which pickles its config; a config file's
    functions cannot be pickled (the file is no module), so they used to crash the reloader
    (PicklingError). The child runs the file again to find them."""
    conf = tmp_path / "conf" / "rsgi.conf.py"
    conf.parent.mkdir()
    conf.write_text(HOOKS_CONFIG)
    log = tmp_path / "hooks.log"
    write_app(tmp_path, "one")
    env = {"HOOK_LOG": str(log)}
    server = spawn_reloading(tmp_path, "-c", str(conf), env=env)
    try:
        wait_until_accepting(server)
        first = wait_for_message(server.port, "one")
        write_app(tmp_path, "two")
        second = wait_for_message(server.port, "two")
        wait_for(lambda: log.read_text().count("post_worker_init") == 2, timeout=5)
        server.assert_alive()
    finally:
        server.stop()
    lines = log.read_text().splitlines()
    assert f"post_worker_init {first}" in lines, lines
    assert f"post_worker_init {second}" in lines, lines
    assert lines.count("when_ready") == 2, lines
