"""HTTP/1.x wire behaviour, checked byte for byte over raw sockets."""

from __future__ import annotations

import email.utils
import json
import re
import sys
import threading
import time
from datetime import datetime, timezone

import httpx
import pytest
from conftest import (
    SERVER_HEADER,
    RawClient,
    build_request,
    running_server,
    simple_get,
    wait_for,
)

MIB = 1024 * 1024

HTTP_DATE_RE = re.compile(
    rb"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$"
)


@pytest.fixture(scope="module")
def options_server():
    """The raw app with header options changed and a short keep-alive timeout."""
    with running_server(
        "raw_app:app",
        "--no-server-header",
        "--no-date-header",
        "--header",
        "X-Foo:bar",
        "--timeout-keep-alive",
        "1",
        "--no-access-log",
    ) as server:
        yield server


# -- keep-alive and pipelining ---------------------------------------------------------


def test_keep_alive_two_requests_one_connection(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/")
        first = client.read_response()
        client.request("GET", "/")
        second = client.read_response()
    for resp in (first, second):
        assert resp.status_line == b"HTTP/1.1 200 OK"
        assert resp.body == b"hello"
        assert resp.header("content-length") == b"5"
        assert resp.header("connection") != b"close"


def test_pipelining_three_requests_in_one_write(raw_server):
    payload = b"".join(build_request("GET", f"/pipe/{n}") for n in (1, 2, 3))
    with RawClient(raw_server.port) as client:
        client.send(payload)
        responses = [client.read_response() for _ in range(3)]
    assert [r.status_line for r in responses] == [b"HTTP/1.1 200 OK"] * 3
    assert [r.body for r in responses] == [b"pipe-1", b"pipe-2", b"pipe-3"]


def test_pipelining_with_request_bodies(raw_server):
    payload = (
        build_request("POST", "/echo", body=b"first")
        + build_request("POST", "/echo", body=b"second body")
        + build_request("GET", "/pipe/last")
    )
    with RawClient(raw_server.port) as client:
        client.send(payload)
        responses = [client.read_response() for _ in range(3)]
    assert [r.body for r in responses] == [b"first", b"second body", b"pipe-last"]


# -- request and response bodies -------------------------------------------------------


def test_chunked_request_body_is_decoded(raw_server):
    body = b"5\r\nhello\r\n6\r\n world\r\n1a\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n0\r\n\r\n"
    with RawClient(raw_server.port) as client:
        client.request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")], body=body)
        resp = client.read_response()
        # The connection stays usable after a chunked request body.
        client.request("GET", "/")
        after = client.read_response()
    assert resp.status_line == b"HTTP/1.1 200 OK"
    assert resp.body == b"hello worldabcdefghijklmnopqrstuvwxyz"
    assert resp.header("x-body-length") == b"37"
    assert after.body == b"hello"


def test_chunked_request_body_with_extension_and_trailer(raw_server):
    body = b"3;name=value\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n"
    with RawClient(raw_server.port) as client:
        client.request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")], body=body)
        resp = client.read_response()
        client.request("GET", "/")
        after = client.read_response()
    assert resp.body == b"abc"
    assert after.body == b"hello"


def test_chunked_response_framing(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/chunked")
        resp = client.read_response()
        client.request("GET", "/")
        after = client.read_response()
    assert resp.status_line == b"HTTP/1.1 200 OK"
    assert resp.header("transfer-encoding") == b"chunked"
    assert resp.header("content-length") is None
    assert resp.framing == "chunked"
    assert resp.body == b"onetwothree"
    # Strict framing: lower-case hex sizes, no extensions, no empty data chunks, no
    # trailers, and the terminating zero-size chunk.
    chunks = re.findall(rb"([0-9a-f]+)\r\n", resp.raw_body)
    assert chunks, resp.raw_body
    rebuilt = bytearray()
    rest = resp.raw_body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        assert re.fullmatch(rb"[0-9a-f]+", size_line), resp.raw_body
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", resp.raw_body
            break
        rebuilt += rest[:size]
        assert rest[size : size + 2] == b"\r\n", resp.raw_body
        rest = rest[size + 2 :]
    assert bytes(rebuilt) == b"onetwothree"
    assert resp.raw_body.endswith(b"\r\n0\r\n\r\n")
    assert after.body == b"hello"


def test_head_has_headers_but_no_body(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("HEAD", "/")
        head = client.read_response(head_request=True)
        # If the server leaked the body, it would be parsed as the next status line.
        client.request("GET", "/")
        after = client.read_response()
    assert head.status_line == b"HTTP/1.1 200 OK"
    assert head.header("content-length") == b"5"
    assert head.body == b""
    assert after.status_line == b"HTTP/1.1 200 OK"
    assert after.body == b"hello"


def test_head_on_streaming_response_has_no_body(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("HEAD", "/chunked")
        head = client.read_response(head_request=True)
        client.request("GET", "/")
        after = client.read_response()
    assert head.status == 200
    assert after.status_line == b"HTTP/1.1 200 OK"
    assert after.body == b"hello"


# -- connection management -------------------------------------------------------------


def test_http10_request_closes_connection(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/", version="HTTP/1.0")
        resp = client.read_response()
        assert resp.status == 200
        assert resp.version in (b"HTTP/1.0", b"HTTP/1.1")
        assert resp.body == b"hello"
        assert client.closed_within(3.0), "server kept an HTTP/1.0 connection open"
        assert client.buffer == b""


# uvicorn (httptools) answers HTTP/1.0 requests with transfer-encoding: chunked, which
# RFC 9112 section 6.1 forbids ("MUST NOT send ... unless the request indicates HTTP/1.1").
@pytest.mark.rsgi_only
def test_http10_streaming_response_is_not_chunked(raw_server):
    # HTTP/1.0 has no chunked encoding: the body must be delimited by closing.
    with RawClient(raw_server.port) as client:
        client.request("GET", "/chunked", version="HTTP/1.0")
        resp = client.read_response()
    assert resp.status == 200
    assert resp.header("transfer-encoding") is None
    assert resp.body == b"onetwothree"


# uvicorn never keeps HTTP/1.0 connections alive (it answers "connection: close").
@pytest.mark.rsgi_only
def test_http10_keep_alive_keeps_connection_open(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
        first = client.read_response()
        assert first.status == 200
        assert first.body == b"hello"
        assert first.header("connection") is not None
        assert first.header("connection").lower() == b"keep-alive"
        assert not client.closed_within(0.3)
        client.request("GET", "/", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
        second = client.read_response()
    assert second.status == 200
    assert second.body == b"hello"


def test_connection_close_closes_after_response(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/", headers=[("Connection", "close")])
        resp = client.read_response()
        assert resp.status_line == b"HTTP/1.1 200 OK"
        assert resp.body == b"hello"
        assert client.closed_within(3.0), "server kept the connection open after close"
        assert client.buffer == b""


# -- Expect: 100-continue --------------------------------------------------------------


def expect_continue(target: str) -> bytes:
    """The head of a POST announcing a 5-byte body and ``Expect: 100-continue``."""
    return build_request(
        "POST", target, headers=[("Content-Length", "5"), ("Expect", "100-continue")]
    )


def test_expect_100_continue_sent_when_app_reads_body(raw_server):
    with RawClient(raw_server.port) as client:
        client.send(expect_continue("/expect"))
        # The app sleeps 0.5 s before calling receive(): nothing may arrive before that.
        assert client.nothing_within(0.3), f"early bytes: {bytes(client.buffer)!r}"
        interim = client.read_head(timeout=5.0)
        assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"world")
        resp = client.read_response()
    assert resp.status_line == b"HTTP/1.1 200 OK"
    assert resp.body == b"got:world"


def test_expect_100_continue_not_sent_when_app_rejects(raw_server):
    with RawClient(raw_server.port) as client:
        client.send(expect_continue("/reject"))
        resp = client.read_response()
    assert resp.status_line.startswith(b"HTTP/1.1 401 ")
    assert resp.raw_head.startswith(b"HTTP/1.1 401 ")
    assert resp.body == b"denied"


# -- default headers -------------------------------------------------------------------


def test_date_header_is_valid_http_date(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/")
        resp = client.read_response()
    dates = resp.header_values("date")
    assert len(dates) == 1, resp.headers
    assert HTTP_DATE_RE.match(dates[0]), dates[0]
    parsed = email.utils.parsedate_to_datetime(dates[0].decode())
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 60


def test_server_header_default(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/")
        resp = client.read_response()
    assert resp.header_values("server") == [SERVER_HEADER]


def test_no_server_header_no_date_header_and_extra_header(options_server):
    with RawClient(options_server.port) as client:
        client.request("GET", "/")
        resp = client.read_response()
    assert resp.status_line == b"HTTP/1.1 200 OK"
    assert resp.body == b"hello"
    assert resp.header("server") is None, resp.headers
    assert resp.header("date") is None, resp.headers
    assert resp.header_values("x-foo") == [b"bar"]


def test_keep_alive_timeout_closes_idle_connection(options_server):
    with RawClient(options_server.port) as client:
        client.request("GET", "/")
        resp = client.read_response()
        assert resp.body == b"hello"
        start = time.monotonic()
        assert not client.closed_within(0.3), "idle connection closed well before 1 s"
        assert client.closed_within(3.0), "idle connection not closed by the keep-alive timeout"
        elapsed = time.monotonic() - start
        assert client.buffer == b""
    assert elapsed >= 0.3


def test_keep_alive_default_timeout_keeps_connection(raw_server):
    with RawClient(raw_server.port) as client:
        client.request("GET", "/")
        client.read_response()
        assert not client.closed_within(1.5)
        client.request("GET", "/")
        assert client.read_response().body == b"hello"


# -- access log ------------------------------------------------------------------------


def test_access_log_line(raw_server):
    offset = raw_server.stdout_offset()
    with RawClient(raw_server.port) as client:
        client.request("GET", "/pipe/access?x=1")
        assert client.read_response().status == 200
        port = client.local_port
    expected = f'127.0.0.1:{port} - "GET /pipe/access?x=1 HTTP/1.1" 200'
    raw_server.wait_for_stdout(re.escape(expected), since=offset)


def test_no_access_log(options_server):
    with RawClient(options_server.port) as client:
        client.request("GET", "/pipe/quiet")
        assert client.read_response().status == 200
    time.sleep(0.3)
    assert "/pipe/quiet" not in options_server.stdout()
    assert "/pipe/quiet" not in options_server.stderr()


# -- large bodies and memory -----------------------------------------------------------


class RssSampler:
    """Samples the server's RSS in a background thread."""

    def __init__(self, server, interval: float = 0.01) -> None:
        self.server = server
        self.interval = interval
        self.baseline = server.rss_kib()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_kib())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.server.rss_kib())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 1024


@pytest.mark.rsgi_only
def test_idle_connections_are_cheap(raw_server):
    """An open connection that has sent nothing costs the server about 4 KiB: its task, waiting
    for the first bytes before hyper's connection (and its 8 KiB write buffer) is built. The
    bound leaves room for the allocator's rounding."""
    clients = []
    try:
        # One served request first, so that what the first request allocates once is not
        # counted against the idle connections.
        simple_get(raw_server.port, "/")
        time.sleep(0.2)
        baseline = raw_server.rss_kib()
        clients = [RawClient(raw_server.port) for _ in range(400)]
        wait_for(
            lambda: raw_server.rss_kib() - baseline > 400 * 2,
            timeout=5,
            message="the server did not take the connections",
        )
        time.sleep(0.5)
        per_connection = (raw_server.rss_kib() - baseline) / 400
        assert per_connection < 8, f"{per_connection:.1f} KiB per idle connection"
    finally:
        for client in clients:
            client.close()


def test_connections_with_part_of_a_head_are_cheap(server_factory):
    """Slowloris: a connection that sent one byte of a request head costs at most 8 KiB (it
    cost 17: hyper's connection and its 8 KiB buffers were built at the first byte)."""
    server = server_factory("raw_app:app")
    clients = []
    try:
        simple_get(server.port, "/")
        time.sleep(0.5)
        baseline = server.rss_kib()
        clients = [RawClient(server.port) for _ in range(600)]
        for client in clients:
            client.send(b"G")
        # Taken once the last one is: it is answered when its head completes.
        clients[-1].send(b"ET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert clients[-1].read_response().body == b"hello"
        time.sleep(0.5)
        per_connection = (server.rss_kib() - baseline) / 600
        assert per_connection <= 8, f"{per_connection:.1f} KiB per connection"
    finally:
        for client in clients:
            client.close()


@pytest.mark.rsgi_only
def test_memory_of_closed_connections_is_given_back(raw_server):
    """800 keep-alive connections take memory (hyper's buffers, mostly); once they are all
    closed, the server gives it back to the OS instead of keeping the peak resident."""
    baseline = raw_server.rss_kib()
    clients = [RawClient(raw_server.port) for _ in range(800)]
    try:
        for client in clients:
            client.request("GET", "/")
        for client in clients:
            assert client.read_response().body == b"hello"
        grown = raw_server.rss_kib() - baseline
        assert grown > 5 * 1024, f"800 connections took only {grown} KiB: nothing to measure"
    finally:
        for client in clients:
            client.close()
    wait_for(
        lambda: raw_server.rss_kib() - baseline < grown * 0.4,
        timeout=5,
        message=f"RSS stayed up after the connections closed (they took {grown} KiB)",
    )


def test_large_streamed_upload_bounded_memory(raw_server):
    total = 50 * MIB
    piece = b"u" * (256 * 1024)

    def generate():
        for _ in range(total // len(piece)):
            yield piece

    assert raw_server.rss_kib() > 0
    with RssSampler(raw_server) as sampler, httpx.Client(timeout=60) as client:
        resp = client.post(f"{raw_server.base_url}/upload-count", content=generate())
    assert resp.status_code == 200
    assert resp.json()["bytes"] == total
    assert resp.json()["messages"] > 1
    assert sampler.growth_mib < 40, (
        f"server RSS grew by {sampler.growth_mib:.1f} MiB during a 50 MiB upload"
    )


def test_large_streamed_download_backpressure(raw_server):
    total = 50 * MIB
    with RawClient(raw_server.port, rcvbuf=16 * 1024, timeout=60) as client:
        with RssSampler(raw_server) as sampler:
            client.request("GET", f"/download?size={total}")
            head = client.read_head()
            assert head.status == 200
            assert head.header("content-length") == str(total).encode()
            # A slow reader: stop reading for a while.  Without backpressure the whole
            # body would pile up in the server's memory now.
            time.sleep(1.0)
            stalled_growth = (sampler.peak - sampler.baseline) / 1024
            received = len(client.buffer)
            client.buffer.clear()
            deadline = time.monotonic() + 60
            while received < total:
                assert time.monotonic() < deadline, f"download stalled at {received} bytes"
                data = client.sock.recv(256 * 1024)
                assert data, f"connection closed after {received} of {total} bytes"
                received += len(data)
    assert received == total
    assert stalled_growth < 40, f"server RSS grew by {stalled_growth:.1f} MiB while stalled"
    assert sampler.growth_mib < 40, (
        f"server RSS grew by {sampler.growth_mib:.1f} MiB during a 50 MiB slow download"
    )
    # The connection is still in a good state afterwards.
    with RawClient(raw_server.port) as check:
        check.request("GET", "/")
        assert check.read_response().body == b"hello"


# -- receive() and send() --------------------------------------------------------------


def report(server, key: str):
    resp = simple_get(server.port, f"/report?id={key}")
    assert resp.status == 200, resp
    return json.loads(resp.body)


def wait_report(server, key: str, timeout: float = 10.0):
    return wait_for(
        lambda: report(server, key),
        timeout=timeout,
        message=f"app recorded nothing under {key!r} within {timeout}s\n{server.stderr()}",
    )


def test_request_body_arrives_in_messages(raw_server):
    with RawClient(raw_server.port) as client:
        client.request(
            "POST", "/record-body?id=msgs", headers=[("Transfer-Encoding", "chunked")], body=b""
        )
        client.send(b"5\r\nhello\r\n")
        time.sleep(0.2)
        client.send(b"6\r\n world\r\n")
        time.sleep(0.2)
        client.send(b"0\r\n\r\n")
        resp = client.read_response()
    assert resp.status == 200
    assert resp.body == b"complete body"
    messages = report(raw_server, "msgs")
    assert all(m[0] == "http.request" for m in messages), messages
    assert sum(m[1] for m in messages) == 11, messages
    assert [m[2] for m in messages][-1] is False, messages
    assert all(m[2] is True for m in messages[:-1]), messages
    assert len(messages) >= 2, f"streamed body delivered in one message: {messages}"


def test_request_without_body_is_one_empty_message(raw_server):
    resp = simple_get(raw_server.port, "/record-body?id=nobody")
    assert resp.body == b"complete body"
    assert report(raw_server, "nobody") == [["http.request", 0, False]]


def test_http_disconnect_after_body_when_client_closes(raw_server):
    client = RawClient(raw_server.port)
    try:
        client.request("POST", "/wait-disconnect?id=wd1", body=b"abc")
        wait_for(lambda: report(raw_server, "wd1:body") == 3, message="body never read")
        assert report(raw_server, "wd1") is None
    finally:
        client.close()
    assert wait_report(raw_server, "wd1") == "http.disconnect"


@pytest.fixture(scope="module")
def stream_disconnect_record(raw_server):
    """Run once: the client goes away in the middle of a streaming response."""
    client = RawClient(raw_server.port)
    try:
        client.request("GET", "/stream-disconnect?id=sd1")
        head = client.read_head()
        assert head.status == 200
        assert head.header("transfer-encoding") == b"chunked"
        client._recv(time.monotonic() + 5)
    finally:
        client.abort()
    return wait_report(raw_server, "sd1", timeout=20.0)


def test_receive_gives_disconnect_after_client_left_streaming(stream_disconnect_record):
    assert stream_disconnect_record["receive"] == "http.disconnect", stream_disconnect_record


# uvicorn's HTTP send() silently drops messages after a disconnect instead of raising
# (ASGI HTTP spec 2.4+: send on a closed connection raises an OSError subclass).
@pytest.mark.rsgi_only
def test_send_raises_oserror_after_client_left_streaming(stream_disconnect_record):
    record = stream_disconnect_record
    assert record["send_exc"] is not None, record
    assert record["is_oserror"] is True, record


def abort_streaming_response(port: int, target: str) -> None:
    """Start a streaming response, read some of it, then reset the connection."""
    client = RawClient(port)
    try:
        client.request("GET", target)
        assert client.read_head().status == 200
        client._recv(time.monotonic() + 5)
    finally:
        client.abort()


@pytest.mark.parametrize("group", ["0", "1"], ids=["plain", "task-group"])
def test_app_ended_by_a_disconnect_is_not_logged_as_an_error(raw_server, group):
    """An app that lets send()'s ClientDisconnected end it is not at fault: no ERROR line and
    no traceback, whether the exception comes bare or wrapped in an ExceptionGroup."""
    if group == "1" and sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup needs Python 3.11")
    key = f"gone-{group}"
    offset = raw_server.stderr_offset()
    abort_streaming_response(raw_server.port, f"/stream-until-gone?id={key}&group={group}")
    expected = {"0": "ClientDisconnected (rsgi.ClientDisconnected)", "1": "ExceptionGroup"}[group]
    assert wait_report(raw_server, key) == expected
    # A request served after the app ended: any log line of that app is written by now.
    assert simple_get(raw_server.port, "/").status == 200
    text = raw_server.stderr(offset)
    assert "Traceback" not in text, text
    assert "ERROR" not in text, text


@pytest.mark.rsgi_only
def test_app_ended_by_a_disconnect_is_a_debug_line(server_factory):
    server = server_factory("raw_app:app", "--log-level", "debug")
    offset = server.stderr_offset()
    abort_streaming_response(server.port, "/stream-until-gone?id=gone-debug")
    assert wait_report(server, "gone-debug") == "ClientDisconnected (rsgi.ClientDisconnected)"
    text = server.wait_for_stderr(r"the client disconnected", since=offset)
    assert re.search(r"^DEBUG: +ASGI application stopped: the client disconnected$", text, re.M)
    assert "Traceback" not in text, text


def test_server_still_serves_after_disconnects(raw_server):
    raw_server.assert_alive()
    assert simple_get(raw_server.port, "/").body == b"hello"
