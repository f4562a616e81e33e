"""Access and error logs: formats checked field by field against real requests, log files
reopened on USR1, request ids (issue 7)."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from conftest import RawClient, running_server, simple_get, wait_for

pytestmark = pytest.mark.rsgi_only

GUNICORN_FORMAT = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %(L)s '
    "%({x-trace}i)s %({content-type}o)s %(m)s %(U)s %(q)s %(H)s %(p)s"
)


def get(port: int, target: str, headers: list[tuple[str, str]] = ()) -> tuple[int, bytes]:
    with RawClient(port) as client:
        client.request("GET", target, headers=list(headers))
        response = client.read_response()
        return client.local_port, response


def lines_of(path, count: int) -> list[str]:
    def ready():
        if not os.path.exists(path):
            return None
        found = open(path, encoding="utf-8").read().splitlines()
        return found if len(found) >= count else None

    return wait_for(ready, timeout=5, message=f"{count} line(s) in {path}")


def test_default_line_is_uvicorns(tmp_path):
    log = tmp_path / "access.log"
    with running_server("raw_app:app", "--access-logfile", str(log)) as server:
        port, response = get(server.port, "/?a=1")
    assert response.status == 200
    [line] = lines_of(log, 1)
    assert line == f'127.0.0.1:{port} - "GET /?a=1 HTTP/1.1" 200 OK'


def test_default_line_on_stdout_has_level_prefix():
    with running_server("raw_app:app") as server:
        port, _ = get(server.port, "/")
        server.wait_for_stdout(rf'INFO: +127\.0\.0\.1:{port} - "GET / HTTP/1\.1" 200')


def test_gunicorn_atoms_field_by_field(tmp_path):
    log = tmp_path / "access.log"
    with running_server(
        "raw_app:app", "--access-logfile", str(log), "--access-log-format", GUNICORN_FORMAT
    ) as server:
        started = time.time()
        get(
            server.port,
            "/?x=1",
            [("Referer", "http://ref/"), ("User-Agent", "probe/1"), ("X-Trace", "t-42")],
        )
        [line] = lines_of(log, 1)
        pid = server.pid
    pattern = re.compile(
        r'^127\.0\.0\.1 - - \[(?P<t>[^\]]+)\] "GET /\?x=1 HTTP/1\.1" 200 (?P<b>\d+) '
        r'"http://ref/" "probe/1" (?P<D>\d+) (?P<L>\d+\.\d{6}) t-42 text/plain '
        r"GET / x=1 HTTP/1\.1 <(?P<p>\d+)>$"
    )
    match = pattern.match(line)
    assert match, line
    assert int(match["b"]) == len(b"hello")
    assert int(match["D"]) == pytest.approx(float(match["L"]) * 1e6, abs=1)
    assert 0 < int(match["D"]) < 5_000_000
    assert int(match["p"]) == pid
    logged = time.mktime(time.strptime(match["t"], "%d/%b/%Y:%H:%M:%S +0000")) - time.timezone
    assert abs(logged - started) < 5


def test_missing_atoms_are_dashes(tmp_path):
    log = tmp_path / "access.log"
    with running_server(
        "raw_app:app", "--access-logfile", str(log), "--access-log-format", '"%(f)s" %({x-none}i)s'
    ) as server:
        get(server.port, "/")
        [line] = lines_of(log, 1)
    assert line == '"-" -'


def test_bad_format_is_a_startup_error():
    from conftest import spawn_server

    server = spawn_server("raw_app:app", "--access-log-format", "%(zz)s")
    try:
        assert server.wait_exit(timeout=15) != 0
        assert "unknown atom" in server.stderr()
    finally:
        server.stop()


def test_json_access_and_error_lines(tmp_path):
    access = tmp_path / "access.log"
    error = tmp_path / "error.log"
    with running_server(
        "raw_app:app",
        "--log-format",
        "json",
        "--access-logfile",
        str(access),
        "--error-logfile",
        str(error),
    ) as server:
        port, _ = get(server.port, "/?q=1", [("User-Agent", "probe/2"), ("X-Request-ID", "rid-1")])
        [line] = lines_of(access, 1)
        errors = lines_of(error, 1)
    entry = json.loads(line)
    assert entry["client"] == f"127.0.0.1:{port}"
    assert (entry["method"], entry["path"], entry["query"]) == ("GET", "/", "q=1")
    assert (entry["status"], entry["bytes"]) == (200, len(b"hello"))
    assert entry["user_agent"] == "probe/2"
    assert entry["request_id"] == "rid-1"
    assert entry["http_version"] == "1.1"
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", entry["timestamp"])
    parsed = [json.loads(e) for e in errors]
    assert any("Started server process" in e["message"] for e in parsed), parsed
    assert all(e["logger"].startswith("rsgi") and "level" in e for e in parsed)


def test_access_log_reopens_on_usr1(tmp_path):
    log = tmp_path / "access.log"
    moved = tmp_path / "access.log.1"
    with running_server("raw_app:app", "--access-logfile", str(log)) as server:
        get(server.port, "/first")
        lines_of(log, 1)
        os.rename(log, moved)
        server.signal(signal.SIGUSR1)
        wait_for(lambda: log.exists(), timeout=5, message="access log reopened")
        get(server.port, "/second")
        [line] = lines_of(log, 1)
    assert '"GET /second HTTP/1.1"' in line
    assert '"GET /first HTTP/1.1"' in moved.read_text()
    assert "/second" not in moved.read_text()


def test_error_log_reopens_on_usr1(tmp_path):
    log = tmp_path / "error.log"
    moved = tmp_path / "error.log.1"
    with running_server("raw_app:app", "--error-logfile", str(log)) as server:
        lines_of(log, 1)
        os.rename(log, moved)
        server.signal(signal.SIGUSR1)
        wait_for(lambda: log.exists(), timeout=5, message="error log reopened")
        simple_get(server.port, "/error/before-start")
        wait_for(lambda: "Exception in ASGI application" in log.read_text(), timeout=5)
    assert "Exception in ASGI application" not in moved.read_text()


def test_request_id_made_echoed_and_seen_by_app():
    with running_server("raw_app:app") as server:
        _, response = get(server.port, "/scope")
        made = response.header("x-request-id")
        assert made is not None and re.fullmatch(rb"[0-9a-f]{32}", made)
        scope = json.loads(response.body)
        assert [made.decode()] == [v for k, v in scope["scope"]["headers"] if k == "x-request-id"]
        _, response = get(server.port, "/", [("X-Request-ID", "given-7")])
        assert response.header("x-request-id") == b"given-7"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_made_request_id_is_logged_and_is_the_last_header(tmp_path, log_format):
    log = tmp_path / "access.log"
    options = ["--access-logfile", str(log)]
    if log_format == "json":
        options += ["--log-format", "json"]
    else:
        options += ["--access-log-format", "%({x-request-id}i)s %({x-request-id}o)s"]
    with running_server("raw_app:app", *options) as server:
        _, response = get(server.port, "/scope", [("X-Trace", "t-1")])
        [line] = lines_of(log, 1)
    made = response.header("x-request-id").decode()
    headers = json.loads(response.body)["scope"]["headers"]
    assert headers[-2:] == [["x-trace", "t-1"], ["x-request-id", made]]
    if log_format == "json":
        assert json.loads(line)["request_id"] == made
    else:
        assert line == f"{made} {made}"


def test_no_request_id():
    with running_server("raw_app:app", "--no-request-id") as server:
        _, response = get(server.port, "/")
        assert response.header("x-request-id") is None
