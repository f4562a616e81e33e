"""Graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from conftest import ConnectionClosed, RawClient, simple_get, start_server, wait_for


def connect_refused(port: int) -> bool:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    except ConnectionRefusedError:
        return True
    sock.close()
    return False


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """SIGTERM while one request is in flight and another connection is idle."""
    marker = tmp_path_factory.mktemp("shutdown") / "marker.txt"
    server = start_server(
        "raw_app:app",
        "--timeout-keep-alive",
        "30",
        env={"ASGI_TEST_SHUTDOWN_MARKER": str(marker)},
    )
    result: dict = {"server": server, "marker": marker}
    idle = RawClient(server.port)
    busy = RawClient(server.port)
    try:
        idle.request("GET", "/")
        assert idle.read_response().body == b"hello"
        busy.request("GET", "/slow?t=2&id=inflight")
        wait_for(
            lambda: json.loads(simple_get(server.port, "/report?id=inflight").body) == "started",
            message="slow request never started",
        )
        server.signal(signal.SIGTERM)
        sent_at = time.monotonic()
        refused = False
        while time.monotonic() - sent_at < 1.5:
            if connect_refused(server.port):
                refused = True
                break
            time.sleep(0.02)
        result["refused"] = refused
        # Was the in-flight response still pending when new connections were refused?
        result["refused_while_in_flight"] = refused and busy.nothing_within(0)
        try:
            result["response"] = busy.read_response(timeout=10)
        except (ConnectionClosed, TimeoutError) as exc:
            result["response"] = exc
        result["busy_closed"] = busy.closed_within(5)
        result["idle_closed"] = idle.closed_within(5)
        try:
            result["returncode"] = server.wait_exit(timeout=15)
        except AssertionError as exc:
            result["returncode"] = exc
        result["exit_seconds"] = time.monotonic() - sent_at
        yield result
    finally:
        idle.close()
        busy.close()
        server.stop()


def test_inflight_response_completes(scenario):
    resp = scenario["response"]
    assert not isinstance(resp, Exception), f"{resp!r}\n{scenario['server'].output()}"
    assert resp.status_line == b"HTTP/1.1 200 OK"
    assert resp.body == b"slow done"


def test_new_connections_refused_after_sigterm(scenario):
    assert scenario["refused"], "new connections still accepted 1.5 s after SIGTERM"
    assert scenario["refused_while_in_flight"], (
        "the listener was closed only after the in-flight request finished"
    )


def test_connections_closed_after_shutdown(scenario):
    assert scenario["busy_closed"], "connection with the finished request left open"
    assert scenario["idle_closed"], "idle keep-alive connection left open"


def test_process_exits_without_waiting_for_keep_alive(scenario):
    code = scenario["returncode"]
    assert not isinstance(code, Exception), code
    # The idle connection has a 30 s keep-alive timeout; shutdown must not wait for it.
    assert scenario["exit_seconds"] < 15


def test_lifespan_shutdown_ran(scenario):
    assert scenario["marker"].read_text() == "shutdown complete"


# uvicorn re-raises SIGTERM after shutting down (exit status -15).
@pytest.mark.rsgi_only
def test_exit_code_zero(scenario):
    assert scenario["returncode"] == 0, scenario["server"].output()


def test_graceful_shutdown_timeout_cuts_long_requests():
    server = start_server("raw_app:app", "--timeout-graceful-shutdown", "1")
    try:
        with RawClient(server.port) as client:
            client.request("GET", "/slow?t=30&id=stuck")
            wait_for(
                lambda: json.loads(simple_get(server.port, "/report?id=stuck").body) == "started",
                message="slow request never started",
            )
            server.signal(signal.SIGTERM)
            data = client.read_until_closed(timeout=15)
            assert b"slow done" not in data
        server.wait_exit(timeout=15)
    finally:
        server.stop()
