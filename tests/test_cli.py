"""Command line, environment variables, sockets and the Python entry point."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import (
    APPS_DIR,
    ENV_PREFIX,
    SERVER,
    child_env,
    free_port,
    server_command,
    simple_get,
    spawn_process,
    wait_until_accepting,
)


def run_cli(*args: str, timeout: float = 30, env: dict[str, str] | None = None, cwd=None):
    return subprocess.run(
        server_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(env),
        stdin=subprocess.DEVNULL,
    )


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# -- one-shot commands -----------------------------------------------------------------


@pytest.mark.rsgi_only
def test_version():
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("rsgi "), result.stdout
    assert any(ch.isdigit() for ch in first), first


def test_help():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--uds", "--fd", "--factory", "--lifespan", "--root-path"):
        assert option in result.stdout, option


def test_unknown_option_is_a_one_line_error():
    result = run_cli("raw_app:app", "--bogus-option", "1")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output
    assert len(lines_with(output, "--bogus-option")) == 1, output


@pytest.mark.parametrize(
    "target",
    ["no_such_module_xyz:app", "raw_app:no_such_attribute", "raw_app"],
    ids=["missing-module", "missing-attribute", "no-colon"],
)
def test_app_that_cannot_be_loaded(target):
    result = run_cli(target, "--app-dir", str(APPS_DIR), "--port", str(free_port()))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(lines_with(output, "Error loading ASGI app")) == 1, output


# -- ways to listen --------------------------------------------------------------------


def test_unix_socket(server_factory, tmp_path):
    uds = str(tmp_path / "s.sock")
    server = server_factory("raw_app:app", port=False, uds=uds)
    transport = httpx.HTTPTransport(uds=uds)
    with httpx.Client(transport=transport, base_url="http://localhost") as client:
        resp = client.get("/")
        assert resp.status_code == 200, server.output()
        assert resp.content == b"hello"
        echoed = client.post("/echo", content=b"over unix")
        assert echoed.content == b"over unix"
    assert Path(uds).is_socket()


def test_inherited_fd(server_factory):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    try:
        server = server_factory(
            "raw_app:app",
            "--fd",
            str(fd),
            "--header",
            "X-One:1",
            "--header",
            "X-Two:two",
            port=False,
            pass_fds=(fd,),
            wait=False,
        )
        # The socket already listens, so connecting succeeds at once; the request is
        # answered once the server has adopted the socket.
        with httpx.Client(timeout=15) as client:
            try:
                resp = client.get(f"http://127.0.0.1:{port}/")
            except httpx.HTTPError as exc:
                raise AssertionError(f"{exc!r}\n{server.output()}") from exc
    finally:
        sock.close()
    assert resp.status_code == 200, server.output()
    assert resp.content == b"hello"
    assert resp.headers.get_list("x-one") == ["1"]
    assert resp.headers.get_list("x-two") == ["two"]


def test_port_from_environment(server_factory):
    port = free_port()
    server = server_factory(
        "raw_app:app", port=False, env={f"{ENV_PREFIX}PORT": str(port)}, wait=False
    )
    server.port = port
    wait_until_accepting(server)
    assert simple_get(port, "/").body == b"hello"


def test_command_line_beats_environment(server_factory):
    env_port = free_port()
    server = server_factory("raw_app:app", env={f"{ENV_PREFIX}PORT": str(env_port)})
    assert server.port != env_port
    assert simple_get(server.port, "/").body == b"hello"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", env_port), timeout=2).close()


# -- app loading -----------------------------------------------------------------------


def test_factory(server_factory):
    server = server_factory("factory_app:create_app", "--factory")
    resp = simple_get(server.port, "/")
    assert resp.status == 200
    assert resp.body == b"from factory #1"


def test_env_file(server_factory, tmp_path):
    env_file = tmp_path / "test.env"
    env_file.write_text("# comment\nASGI_TEST_GREETING=hello-from-env-file\n")
    server = server_factory("env_app:app", "--env-file", str(env_file))
    assert simple_get(server.port, "/").body == b"hello-from-env-file"


def test_app_dir_is_required_for_imports_outside_cwd(tmp_path):
    result = run_cli("raw_app:app", "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode != 0
    assert len(lines_with(result.stdout + result.stderr, "Error loading ASGI app")) == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_loop_option(server_factory, loop):
    server = server_factory("raw_app:app", "--loop", loop)
    body = simple_get(server.port, "/loop").body.decode()
    if loop == "uvloop":
        assert body.startswith("uvloop"), body
    else:
        assert body.startswith("asyncio"), body


@pytest.mark.rsgi_only
def test_threads_option(server_factory):
    server = server_factory("raw_app:app", "--threads", "2", "--backlog", "64")
    for _ in range(5):
        assert simple_get(server.port, "/").body == b"hello"


def test_python_api_run(tmp_path):
    port = free_port()
    code = (
        f"import {SERVER}\n"
        f"{SERVER}.run('raw_app:app', host='127.0.0.1', port={port}, log_level='info')\n"
    )
    server = spawn_process([sys.executable, "-c", code], port=port, cwd=APPS_DIR)
    try:
        wait_until_accepting(server)
        assert simple_get(port, "/").body == b"hello"
    finally:
        server.stop()


# -- logging options -------------------------------------------------------------------


def test_log_level_warning_hides_info(server_factory):
    server = server_factory("raw_app:app", "--log-level", "warning")
    assert simple_get(server.port, "/").body == b"hello"
    server.stop()
    assert "INFO" not in server.stderr(), server.stderr()
    assert "INFO" not in server.stdout(), server.stdout()


def test_default_log_level_reports_startup(server_factory):
    server = server_factory("raw_app:app")
    server.wait_for_stderr(r"(?m)^INFO: ")


def test_log_config_file(server_factory, tmp_path):
    log_file = tmp_path / "access.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "CUSTOM %(name)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "plain",
                "filename": str(log_file),
            }
        },
        "loggers": {
            f"{SERVER}.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }
    config_path = tmp_path / "logging.json"
    config_path.write_text(json.dumps(config))
    server = server_factory("raw_app:app", "--log-config", str(config_path))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET /pipe/logcfg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
    server.stop()
    text = log_file.read_text()
    expected = f'CUSTOM {SERVER}.access 127.0.0.1:{client_port} - "GET /pipe/logcfg HTTP/1.1" 200'
    assert expected in text, text
