"""The ASGI lifespan protocol: startup, failure, shutdown, and apps without it."""

from __future__ import annotations

import signal

import pytest
from conftest import simple_get, spawn_server, wait_until_accepting


def spawn_events_server(events, *args: str):
    """The app that writes each lifespan event and request it sees to the file ``events``."""
    return spawn_server(
        "lifespan_apps:lifespan_events", *args, env={"ASGI_TEST_EVENTS_FILE": str(events)}
    )


def read_events(path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


@pytest.mark.parametrize(
    ("app", "mode", "logged"),
    [
        ("fail_startup", "on", "boom"),
        ("fail_startup", "auto", "boom"),
        # An exception in startup fails it too when lifespan is "on".
        ("raise_in_startup", "on", "startup exploded"),
    ],
)
def test_startup_failure_exits_with_code_3(app, mode, logged):
    server = spawn_server(f"lifespan_apps:{app}", "--lifespan", mode)
    try:
        code = server.wait_exit(timeout=15)
        assert code == 3, f"exit code {code}\n{server.output()}"
        assert logged in server.stderr(), server.output()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("app", "body"),
    [
        ("no_lifespan", b"no lifespan here"),  # raises on the lifespan scope
        ("returns_on_lifespan", b"returned on lifespan"),  # returns at once on it
    ],
)
def test_app_without_lifespan_serves_in_auto_mode(app, body):
    server = spawn_server(f"lifespan_apps:{app}")
    try:
        wait_until_accepting(server)
        resp = simple_get(server.port, "/")
        assert resp.status == 200
        assert resp.body == body
        server.assert_alive()
        server.signal(signal.SIGTERM)
        server.wait_exit(timeout=15)
    finally:
        server.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_lifespan_startup_before_serving_and_shutdown_on_signal(tmp_path, signum):
    events = tmp_path / "events.txt"
    server = spawn_events_server(events)
    try:
        wait_until_accepting(server)
        assert read_events(events) == ["lifespan.startup"]
        assert simple_get(server.port, "/").body == b"events"
        server.signal(signum)
        server.wait_exit(timeout=15)
        assert read_events(events) == [
            "lifespan.startup",
            "http.request",
            "lifespan.shutdown",
        ], server.output()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "signum",
    [
        # uvicorn re-raises a captured SIGTERM after its graceful shutdown, so its exit
        # status is -15; rsgi exits 0 after a clean shutdown.
        pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.rsgi_only),
        pytest.param(signal.SIGINT, id="SIGINT"),
    ],
)
def test_clean_shutdown_exit_code_zero(tmp_path, signum):
    events = tmp_path / "events.txt"
    server = spawn_events_server(events)
    try:
        wait_until_accepting(server)
        server.signal(signum)
        assert server.wait_exit(timeout=15) == 0, server.output()
        assert read_events(events) == ["lifespan.startup", "lifespan.shutdown"]
    finally:
        server.stop()


def test_lifespan_off_never_runs_lifespan(tmp_path):
    events = tmp_path / "events.txt"
    server = spawn_events_server(events, "--lifespan", "off")
    try:
        wait_until_accepting(server)
        assert simple_get(server.port, "/").body == b"events"
        server.signal(signal.SIGTERM)
        server.wait_exit(timeout=15)
        assert read_events(events) == ["http.request"], server.output()
    finally:
        server.stop()


def test_shutdown_marker_written_on_sigterm(tmp_path):
    marker = tmp_path / "marker.txt"
    server = spawn_server("raw_app:app", env={"ASGI_TEST_SHUTDOWN_MARKER": str(marker)})
    try:
        wait_until_accepting(server)
        assert simple_get(server.port, "/").body == b"hello"
        assert not marker.exists()
        server.signal(signal.SIGTERM)
        server.wait_exit(timeout=15)
        assert marker.read_text() == "shutdown complete", server.output()
    finally:
        server.stop()
