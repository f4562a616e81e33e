"""Patterns real frameworks use, which a server must serve as uvicorn does (issue 15): late
closing messages, HEAD with a body, ASGI objects dropped on other threads, errors sent after a
disconnect, and event streams at shutdown. The app is tests/apps/fidelity_app.py; each test
also runs against uvicorn (RSGI_TEST_SERVER=uvicorn) unless marked rsgi_only."""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest
from conftest import SERVER, ConnectionClosed, RawClient, running_server, wait_for

APP = "fidelity_app:app"


def access_lines(server, request_line: str) -> int:
    return len(re.findall(re.escape(f'"{request_line}" '), server.stdout()))


def report(server) -> dict:
    return httpx.get(f"{server.base_url}/report", timeout=5).json()


def assert_quiet(server) -> None:
    """Nothing at WARNING or above, no traceback."""
    err = server.stderr()
    for bad in ("Traceback", "ERROR", "WARNING", "unsendable", "Unexpected ASGI message"):
        assert bad not in err, server.output()


@pytest.mark.timeout(60)
def test_work_after_a_late_closing_message_runs_and_is_logged():
    """All content-length bytes with more_body, then the closing message 20 ms later: the
    send succeeds, the work after it runs, and every request gets its access line."""
    clients, per_client = 4, 40
    with running_server(APP) as server:

        def run():
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                for _ in range(per_client):
                    response = client.get("/late-close")
                    assert response.status_code == 200
                    assert response.content == b"hello"

        threads = [threading.Thread(target=run) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = clients * per_client
        wait_for(lambda: report(server)["late_close_done"] == total, timeout=5)
        assert report(server)["late_close_errors"] == []
        wait_for(lambda: access_lines(server, "GET /late-close HTTP/1.1") == total, timeout=5)
        assert_quiet(server)


@pytest.mark.timeout(30)
def test_head_with_a_body_is_answered_logged_and_keeps_the_connection():
    with running_server(APP) as server:
        with RawClient(server.port) as client:
            client.request("HEAD", "/body")
            head = client.read_response(head_request=True)
            assert head.status == 200
            assert head.header("content-length") == b"1000"
            client.request("GET", "/body")
            response = client.read_response()
            assert response.status == 200
            assert response.body == b"x" * 1000
        # Access lines are written by the I/O thread in batches: wait for each.
        wait_for(lambda: access_lines(server, "HEAD /body HTTP/1.1") == 1, timeout=5)
        wait_for(lambda: access_lines(server, "GET /body HTTP/1.1") == 1, timeout=5)
        assert access_lines(server, "GET /body HTTP/1.1") == 1
        assert_quiet(server)


@pytest.mark.timeout(60)
def test_receive_and_send_dropped_on_another_thread():
    """Django's sync views run in threads, and the garbage collector runs anywhere: the
    objects behind receive and send must be droppable on any thread."""
    with running_server(APP) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(200):
                assert client.get("/thread-drop").content == b"ok"
        time.sleep(0.3)
        assert_quiet(server)
        assert server.alive()


@pytest.mark.timeout(30)
def test_an_error_page_after_a_disconnect_is_quiet_and_the_request_is_logged():
    """datasette catches the disconnect of an aborted export and sends a 500 page."""
    with running_server(APP) as server:
        with RawClient(server.port) as client:
            client.request("GET", "/stream-then-500")
            head = client.read_head()
            assert head.status == 200
            client.sock.recv(1000)
            client.abort()
        wait_for(lambda: access_lines(server, "GET /stream-then-500 HTTP/1.1") == 1, timeout=5)
        if SERVER == "rsgi":
            # uvicorn's send() returns quietly after a disconnect, so its app streams on.
            wait_for(lambda: report(server)["send_errors"] == ["ClientDisconnected"], timeout=5)
        assert_quiet(server)
        assert re.search(r'"GET /stream-then-500 HTTP/1.1" 200', server.stdout())


@pytest.mark.timeout(30)
def test_a_body_that_breaks_its_content_length_is_the_apps_error():
    """uvicorn raises in send() rather than cut or pad the body; so does rsgi. The client
    gets a response that ends early, never one that looks complete."""
    with running_server(APP) as server:
        for kind in ("long", "short"):
            with RawClient(server.port) as client:
                client.request("GET", f"/wrong-length/{kind}")
                with pytest.raises(ConnectionClosed):
                    client.read_response()
        assert report(server)["length_errors"] == [
            "Response content longer than Content-Length",
            "Response content shorter than Content-Length",
        ]


def read_until(client: RawClient, marker: bytes, timeout: float) -> bytes:
    """Everything the client has read of the body once `marker` is in it."""
    deadline = time.monotonic() + timeout
    while marker not in client.buffer:
        assert client._recv(deadline), f"closed before {marker!r}: {bytes(client.buffer[-200:])!r}"
    return bytes(client.buffer)


@pytest.mark.rsgi_only
@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", ["TERM", "INT"])
def test_an_event_stream_ends_promptly_at_shutdown(stop):
    """An endless text/event-stream would hold the stop for the whole graceful timeout; it
    ends cleanly (last chunk) within a second or two, so EventSource reconnects elsewhere,
    while a finite streamed download in flight at the same time still completes."""
    with running_server(APP, "--timeout-graceful-shutdown", "20") as server:
        with RawClient(server.port) as events, RawClient(server.port) as download:
            events.request("GET", "/events")
            assert events.read_head().status == 200
            read_until(events, b"data: 1\n", timeout=5)
            download.request("GET", "/slow-stream")
            assert download.read_head().status == 200
            started = time.monotonic()
            server.signal(getattr(signal, f"SIG{stop}"))
            rest = read_until(events, b"\r\n0\r\n\r\n", timeout=5)
            assert rest.endswith(b"\r\n0\r\n\r\n"), rest[-100:]
            ended = time.monotonic() - started
            assert ended < 3, f"the event stream took {ended:.1f}s to end"
            body = read_until(download, b"\r\n0\r\n\r\n", timeout=10)
            assert body.endswith(b"end\n\r\n0\r\n\r\n"), body[-100:]
        assert server.wait_exit(10) == 0
        assert time.monotonic() - started < 5
    assert access_lines(server, "GET /events HTTP/1.1") == 1
    assert access_lines(server, "GET /slow-stream HTTP/1.1") == 1
    assert "Traceback" not in server.stderr(), server.output()
    assert "ERROR" not in server.stderr(), server.output()
