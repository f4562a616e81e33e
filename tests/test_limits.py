"""Request limits and timeouts (issue 6), over raw sockets.

Every limit answers with its status code before the app runs (or, for a body that breaks a
limit while the app reads it, the app sees ``http.disconnect``), logs one line on stderr
naming the client (``WARNING:  414 request line too long (127.0.0.1:PORT)``), and leaves
the server serving.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from conftest import RawClient, build_request, running_server, simple_get, wait_for

pytestmark = pytest.mark.rsgi_only

LINE_LIMIT = 200
FIELDS_LIMIT = 20
FIELD_SIZE_LIMIT = 500
BODY_LIMIT = 1000


# --------------------------------------------------------------------------------------
# Servers and helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hold_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hold")


@pytest.fixture(scope="module")
def limited(hold_dir):
    """Small limits and one-second head and body timeouts; keep-alive stays at its default."""
    with running_server(
        "limits_app:app",
        "--limit-request-line",
        str(LINE_LIMIT),
        "--limit-request-fields",
        str(FIELDS_LIMIT),
        "--limit-request-field-size",
        str(FIELD_SIZE_LIMIT),
        "--limit-request-body",
        str(BODY_LIMIT),
        "--timeout-header-read",
        "1",
        "--timeout-body-read",
        "1",
        env={"LIMITS_HOLD_DIR": str(hold_dir)},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def default_limits():
    with running_server("raw_app:app") as server:
        yield server


def send_and_read(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, int]:
    """Send ``data`` on a new connection; return everything received until the server
    closes it, and the client's port (for the log line)."""
    with RawClient(port, timeout=timeout) as client:
        client_port = client.local_port
        try:
            client.send(data)
        except OSError:
            pass  # refused before everything was sent; the answer is still readable
        return client.read_until_closed(timeout=timeout), client_port


def status_of(data: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    assert match, f"not an HTTP/1.1 response: {data[:300]!r}"
    return int(match.group(1))


def assert_one_log_line(server, since: int, client_port: int, status: int | None) -> str:
    """Exactly one stderr line names this client; with ``status``, a WARNING with it."""
    who = re.escape(f"127.0.0.1:{client_port}")
    pattern = rf"WARNING:.*\b{status}\b.*{who}" if status else who
    text = server.wait_for_stderr(pattern, since=since, timeout=1.5)
    lines = [line for line in text.splitlines() if re.search(who, line)]
    assert len(lines) == 1, f"expected one log line for 127.0.0.1:{client_port}, got {lines}"
    return lines[0]


def assert_still_serves(server) -> None:
    server.assert_alive()
    resp = simple_get(server.port, "/")
    assert resp.status == 200 and resp.body == b"hello", resp.raw_head


def app_calls(server) -> int:
    return int(simple_get(server.port, "/count").body)


def report(server, key: str):
    return json.loads(simple_get(server.port, f"/report?id={key}").body)


def settled_record(server, key: str, timeout: float = 5.0):
    """What /record-body saw, once it ended with a disconnect or a complete body."""

    def finished():
        messages = report(server, key)
        if messages and (
            messages[-1] == ["http.disconnect"]
            or any(m[0] == "http.request" and m[2] is False for m in messages)
        ):
            return messages
        return None

    return wait_for(finished, timeout=timeout, message=f"/record-body {key} never finished")


def request_line_of_length(n: int) -> bytes:
    """``GET /aaa... HTTP/1.1`` with exactly ``n`` bytes before its CRLF."""
    target = "/" + "a" * (n - len("GET / HTTP/1.1"))
    line = f"GET {target} HTTP/1.1"
    assert len(line) == n
    return line.encode()


# --------------------------------------------------------------------------------------
# Request line: 414
# --------------------------------------------------------------------------------------


def test_request_line_at_limit_is_served(limited):
    data = request_line_of_length(LINE_LIMIT) + b"\r\nHost: t\r\nConnection: close\r\n\r\n"
    received, _ = send_and_read(limited.port, data)
    assert status_of(received) == 404, received[:300]  # reached the app: no such path


def test_request_line_too_long_is_414(limited):
    data = request_line_of_length(LINE_LIMIT + 1) + b"\r\nHost: t\r\n\r\n"
    assert_refused_before_the_app(limited, data, 414)


def assert_refused_before_the_app(server, data: bytes, status: int) -> None:
    """`data` gets `status` with one log line, never reaches the app, and the server goes on."""
    since = server.stderr_offset()
    before = app_calls(server)
    received, client_port = send_and_read(server.port, data)
    assert status_of(received) == status, received[:300]
    assert_one_log_line(server, since, client_port, status)
    assert app_calls(server) == before
    assert_still_serves(server)


def test_default_request_line_limit_is_414(default_limits):
    since = default_limits.stderr_offset()
    received, client_port = send_and_read(
        default_limits.port, build_request("GET", "/" + "a" * 9000)
    )
    assert status_of(received) == 414, received[:300]
    assert_one_log_line(default_limits, since, client_port, 414)
    assert_still_serves(default_limits)


# --------------------------------------------------------------------------------------
# Header fields: 431
# --------------------------------------------------------------------------------------


def test_header_field_too_large_is_431(limited):
    data = build_request("GET", "/", headers=[("X-Big", "v" * (FIELD_SIZE_LIMIT + 10))])
    assert_refused_before_the_app(limited, data, 431)


def test_header_field_under_limit_is_served(limited):
    headers = [("X-Big", "v" * (FIELD_SIZE_LIMIT - 50)), ("Connection", "close")]
    received, _ = send_and_read(limited.port, build_request("GET", "/", headers=headers))
    assert status_of(received) == 200, received[:300]


def test_fields_at_limit_are_served(limited):
    # Host + Connection + the rest: exactly FIELDS_LIMIT fields.
    headers = [("Connection", "close")]
    headers += [(f"X-F{i}", "1") for i in range(FIELDS_LIMIT - 2)]
    received, _ = send_and_read(limited.port, build_request("GET", "/", headers=headers))
    assert status_of(received) == 200, received[:300]


def test_too_many_fields_is_431(limited):
    since = limited.stderr_offset()
    before = app_calls(limited)
    headers = [(f"X-F{i}", "1") for i in range(FIELDS_LIMIT)]  # + Host: one too many
    received, client_port = send_and_read(limited.port, build_request("GET", "/", headers=headers))
    assert status_of(received) == 431, received[:300]
    assert_one_log_line(limited, since, client_port, 431)
    assert app_calls(limited) == before
    assert_still_serves(limited)


def test_default_field_limits_are_431(default_limits):
    # 100 fields is the default limit: Host + 100 is one too many.
    many = [(f"X-F{i}", "1") for i in range(100)]
    received, _ = send_and_read(default_limits.port, build_request("GET", "/", headers=many))
    assert status_of(received) == 431, received[:300]
    big = [("X-Big", "v" * 8200)]
    received, _ = send_and_read(default_limits.port, build_request("GET", "/", headers=big))
    assert status_of(received) == 431, received[:300]
    assert_still_serves(default_limits)


def test_200kb_header_is_431_not_200(default_limits):
    since = default_limits.stderr_offset()
    data = build_request("GET", "/", headers=[("X-Huge", "h" * 200_000)])
    received, client_port = send_and_read(default_limits.port, data)
    assert received, "connection closed without a response"
    assert status_of(received) == 431, received[:300]
    assert_one_log_line(default_limits, since, client_port, 431)
    assert_still_serves(default_limits)


def test_head_size_is_capped_whatever_the_options(server_factory):
    server = server_factory(
        "raw_app:app",
        "--limit-request-field-size",
        "1000000",
        "--limit-request-fields",
        "10000",
        "--limit-request-line",
        "1000000",
    )
    # One huge field, many fields of 1 KiB, a huge request line: all well over 64 KiB.
    heads = {
        "one field": build_request("GET", "/", headers=[("X-Huge", "h" * 200_000)]),
        "many fields": build_request(
            "GET", "/", headers=[(f"X-F{i}", "v" * 1000) for i in range(200)]
        ),
        "request line": build_request("GET", "/" + "a" * 200_000),
    }
    for name, data in heads.items():
        received, _ = send_and_read(server.port, data)
        assert received, f"{name}: connection closed without a response"
        allowed = (414, 431) if name == "request line" else (431,)
        assert status_of(received) in allowed, f"{name}: got {received[:300]!r}"
    assert_still_serves(server)


@pytest.mark.parametrize("size", [8191, 60_000, 65_535, 65_536, 65_537, 70_000, 200_000])
def test_request_line_too_long_is_414_at_every_size(default_limits, size):
    """The status names what is too long: past 64 KiB the request line is still a 414."""
    data = request_line_of_length(size) + b"\r\nHost: t\r\n\r\n"
    received, _ = send_and_read(default_limits.port, data)
    assert received.startswith(b"HTTP/1.1 414 URI Too Long\r\n"), received[:300]
    assert b"\r\nconnection: close\r\n" in received


def test_header_fields_past_64k_are_431_even_behind_a_long_request_line(server_factory):
    server = server_factory(
        "raw_app:app", "--limit-request-line", "1000000", "--limit-request-field-size", "100000"
    )
    fields = [(f"X-F{i}", "v" * 1000) for i in range(70)]
    for line in (100, 8000, 60_000):
        data = request_line_of_length(line) + b"\r\nHost: t\r\n"
        data += b"".join(f"{name}: {value}\r\n".encode() for name, value in fields) + b"\r\n"
        received, _ = send_and_read(server.port, data)
        assert status_of(received) == 431, (line, received[:300])
    for line in (65_536, 100_000):
        received, _ = send_and_read(server.port, request_line_of_length(line) + b"\r\n")
        assert status_of(received) == 414, (line, received[:300])
    assert_still_serves(server)


# --------------------------------------------------------------------------------------
# Request body: 413
# --------------------------------------------------------------------------------------


def test_declared_body_over_limit_is_413_before_the_app_runs(limited):
    since = limited.stderr_offset()
    before = app_calls(limited)
    head = build_request("POST", "/echo", headers=[("Content-Length", str(BODY_LIMIT * 2))])
    # Only the head: the answer must not wait for the body.
    received, client_port = send_and_read(limited.port, head)
    assert status_of(received) == 413, received[:300]
    assert_one_log_line(limited, since, client_port, 413)
    assert app_calls(limited) == before, "the app ran for a request refused with 413"
    assert_still_serves(limited)


def test_body_at_limit_is_accepted(limited):
    body = b"b" * BODY_LIMIT
    data = build_request("POST", "/echo", headers=[("Connection", "close")], body=body)
    received, _ = send_and_read(limited.port, data)
    assert status_of(received) == 200, received[:300]
    assert received.endswith(body)


def test_chunked_body_over_limit_in_one_write_is_413(limited):
    since = limited.stderr_offset()
    size = BODY_LIMIT + 200
    body = f"{size:x}\r\n".encode() + b"c" * size + b"\r\n0\r\n\r\n"
    data = build_request(
        "POST", "/record-body?id=chunked-one-write", headers=[("Transfer-Encoding", "chunked")]
    )
    received, client_port = send_and_read(limited.port, data + body)
    assert status_of(received) == 413, received[:300]
    assert b"complete body" not in received
    assert_one_log_line(limited, since, client_port, 413)
    # If the app ran at all it must have seen a disconnect, never a complete body.
    messages = report(limited, "chunked-one-write")
    if messages is not None:
        assert settled_record(limited, "chunked-one-write")[-1] == ["http.disconnect"]
    assert_still_serves(limited)


def test_chunked_body_growing_past_limit_is_413_and_app_sees_disconnect(limited):
    key = "chunked-growing"
    since = limited.stderr_offset()
    with RawClient(limited.port) as client:
        client_port = client.local_port
        client.request("POST", f"/record-body?id={key}", headers=[("Transfer-Encoding", "chunked")])
        first = BODY_LIMIT // 2
        client.send(f"{first:x}\r\n".encode() + b"a" * first + b"\r\n")
        # The app runs and takes the first part while the body is within the limit.
        wait_for(lambda: report(limited, key), message="the app never got the first chunk")
        second = BODY_LIMIT
        client.send(f"{second:x}\r\n".encode() + b"b" * second + b"\r\n0\r\n\r\n")
        resp = client.read_response()
        assert resp.status == 413, resp.raw_head
        assert client.closed_within(5), "connection left open after 413"
    messages = settled_record(limited, key)
    assert messages[0] == ["http.request", first, True], messages
    assert messages[-1] == ["http.disconnect"], messages
    assert not any(m[0] == "http.request" and m[2] is False for m in messages), messages
    assert sum(m[1] for m in messages if m[0] == "http.request") <= BODY_LIMIT, messages
    assert_one_log_line(limited, since, client_port, 413)
    assert_still_serves(limited)


# --------------------------------------------------------------------------------------
# Timeouts: header read (slowloris), body read, keep-alive
# --------------------------------------------------------------------------------------

DRIP_HEAD = build_request("GET", "/", headers=[("X-Drip", "d" * 60)])


def drip(client: RawClient, data: bytes, interval: float, give_up: float) -> float | None:
    """Send ``data`` one byte every ``interval`` s; return when (s after the first byte)
    the server closed the connection, or None if it had not after ``give_up`` s."""
    start = time.monotonic()
    for byte in data:
        try:
            client.send(bytes([byte]))
        except OSError:
            return time.monotonic() - start
        if client.closed_within(interval):
            return time.monotonic() - start
        if time.monotonic() - start > give_up:
            return None
    return None


def test_dripping_client_is_cut_after_header_read_timeout(limited):
    since = limited.stderr_offset()
    with RawClient(limited.port) as client:
        client_port = client.local_port
        closed_after = drip(client, DRIP_HEAD, interval=0.2, give_up=4.0)
        received = bytes(client.buffer)
    assert closed_after is not None, "a client dripping its head was never disconnected"
    assert 0.8 <= closed_after <= 2.5, f"disconnected {closed_after:.2f}s after its first byte"
    assert received == b"" or status_of(received) == 408, received[:300]
    assert_one_log_line(limited, since, client_port, None)
    assert_still_serves(limited)


def test_header_read_timeout_counts_from_the_first_byte(limited):
    with RawClient(limited.port) as client:
        # Idle, but well within the keep-alive timeout (5 s): not a slow head yet.
        assert client.nothing_within(0.7), "an idle new connection was closed early"
        closed_after = drip(client, DRIP_HEAD, interval=0.2, give_up=4.0)
    assert closed_after is not None, "a client dripping its head was never disconnected"
    assert 0.8 <= closed_after <= 2.5, f"disconnected {closed_after:.2f}s after its first byte"


def test_complete_head_within_timeout_is_served_even_if_slow(limited):
    data = build_request("GET", "/", headers=[("Connection", "close")])
    with RawClient(limited.port) as client:
        # Two halves, 0.5 s apart: slow, but complete within one second.
        client.send(data[:10])
        assert client.nothing_within(0.5)
        client.send(data[10:])
        resp = client.read_response()
    assert resp.status == 200


def test_stalled_body_is_408_and_app_sees_disconnect(limited):
    key = "stalled-body"
    since = limited.stderr_offset()
    with RawClient(limited.port) as client:
        client_port = client.local_port
        client.request(
            "POST",
            f"/record-body?id={key}",
            headers=[("Content-Length", "100")],
            body=None,
        )
        client.send(b"s" * 10)
        wait_for(lambda: report(limited, key), message="the app never got the first bytes")
        stalled_at = time.monotonic()
        try:
            resp = client.read_response(timeout=5)
        except AssertionError:  # ConnectionClosed: a close without a response is allowed
            resp = None
        waited = time.monotonic() - stalled_at
        if resp is not None:
            assert resp.status == 408, resp.raw_head
            assert client.closed_within(5), "connection left open after 408"
    assert 0.5 <= waited <= 3.0, f"the stalled body was cut after {waited:.2f}s"
    messages = settled_record(limited, key)
    assert messages[0] == ["http.request", 10, True], messages
    assert messages[-1] == ["http.disconnect"], messages
    assert_one_log_line(limited, since, client_port, 408)
    assert_still_serves(limited)


def test_keep_alive_timeout_closes_idle_connection(server_factory):
    server = server_factory("raw_app:app", "--timeout-keep-alive", "1")
    with RawClient(server.port) as client:
        client.request("GET", "/")
        assert client.read_response().status == 200
        idle_from = time.monotonic()
        assert client.closed_within(4), "idle keep-alive connection never closed"
        idle = time.monotonic() - idle_from
        assert client.buffer == b"", bytes(client.buffer)
    assert 0.8 <= idle <= 2.5, f"idle connection closed after {idle:.2f}s"
    assert_still_serves(server)


def test_client_that_never_reads_is_closed_after_the_write_timeout(server_factory):
    """A response stuck on a client that stopped reading is dropped once writing has made
    no progress for --timeout-write; the app's send() raises ClientDisconnected and its
    receive() gets http.disconnect."""
    server = server_factory("raw_app:app", "--timeout-write", "1", "--timeout-keep-alive", "1")
    since = server.stderr_offset()
    with RawClient(server.port, rcvbuf=4096, timeout=20) as client:
        who = f"127.0.0.1:{client.local_port}"
        client.request("GET", "/stream-disconnect?id=never-reads")
        record = wait_for(
            lambda: report(server, "never-reads"),
            timeout=15,
            message="the app never learnt that the client does not read",
        )
        assert record == {
            "send_exc": "ClientDisconnected",
            "is_oserror": True,
            "receive": "http.disconnect",
        }, record
        # What the kernel buffered, then the end of the connection.
        client.read_until_closed(timeout=10)
    server.wait_for_stderr(rf"WARNING:.*Response not read by {re.escape(who)}", since=since)
    assert_still_serves(server)


def test_slow_reader_is_not_cut_by_the_write_timeout(server_factory):
    server = server_factory("raw_app:app", "--timeout-write", "1")
    size = 8 * 1024 * 1024
    with RawClient(server.port, rcvbuf=65536, timeout=20) as client:
        client.request("GET", f"/download?size={size}")
        head = client.read_head()
        assert head.status == 200
        got = len(client.buffer)
        client.buffer.clear()
        while got < size:
            time.sleep(0.1)  # writes block for a while, never for a second
            chunk = client.sock.recv(256 * 1024)
            assert chunk, f"closed after {got} of {size} bytes"
            got += len(chunk)
    assert got == size


# --------------------------------------------------------------------------------------
# Concurrency: 503 with Retry-After
# --------------------------------------------------------------------------------------


def test_limit_concurrency_sheds_load_with_503(server_factory, tmp_path):
    server = server_factory(
        "limits_app:app", "--limit-concurrency", "2", env={"LIMITS_HOLD_DIR": str(tmp_path)}
    )
    held = {name: RawClient(server.port) for name in ("a", "b")}
    try:
        for name, client in held.items():
            client.send(
                build_request("POST", f"/hold?id={name}", headers=[("Content-Length", "1")])
            )
        wait_for(
            lambda: all((tmp_path / f"{name}.started").exists() for name in held),
            message="the two held requests never reached the app",
        )

        since = server.stderr_offset()
        for _ in range(2):
            started = time.monotonic()
            with RawClient(server.port) as extra:
                extra_port = extra.local_port
                extra.request("GET", "/", headers=[("Connection", "close")])
                resp = extra.read_response()
                assert resp.status == 503, resp.raw_head
                retry_after = resp.header("retry-after")
                assert retry_after is not None and retry_after.isdigit(), resp.raw_head
                assert extra.closed_within(5)
            assert time.monotonic() - started < 1.0, "503 was not immediate"
        assert_one_log_line(server, since, extra_port, 503)

        # The accepted requests complete normally.
        for name, client in held.items():
            client.send(b"x")
            resp = client.read_response()
            assert resp.status == 200 and resp.body == f"held {name}".encode()
    finally:
        for client in held.values():
            client.close()

    # Their places are free again.
    def served():
        resp = simple_get(server.port, "/")
        return resp if resp.status == 200 else None

    wait_for(served, timeout=3.0, message="requests still refused after the load went away")
    server.assert_alive()


def test_refused_connections_do_not_leak_concurrency(server_factory, tmp_path):
    server = server_factory(
        "limits_app:app", "--limit-concurrency", "1", env={"LIMITS_HOLD_DIR": str(tmp_path)}
    )
    # Many requests one after the other: each completes before the next, none is refused.
    for _ in range(20):
        assert simple_get(server.port, "/").status == 200
    # Clients that leave mid-request give their place back too.
    for i in range(5):
        with RawClient(server.port) as client:
            client.send(
                build_request("POST", f"/hold?id=gone{i}", headers=[("Content-Length", "1")])
            )
            wait_for(lambda i=i: (tmp_path / f"gone{i}.started").exists())
            client.sock.shutdown(socket.SHUT_RDWR)

        def served():
            return simple_get(server.port, "/").status == 200

        wait_for(served, timeout=3.0, message="a client that left still holds its place")
