"""Malformed requests: 400, the connection closed, and the app never sees them."""

from __future__ import annotations

import json
import time

import pytest
from conftest import RawClient, build_request, running_server, simple_get, wait_for

FOLLOW_UP = build_request("GET", "/pipe/after-bad")


def app_calls(server) -> int:
    resp = simple_get(server.port, "/count")
    assert resp.status == 200
    return int(resp.body)


def report(server, key: str):
    return json.loads(simple_get(server.port, f"/report?id={key}").body)


MALFORMED_HEADS = {
    "garbage-request-line": b"THIS IS NOT HTTP\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: testserver\r\nX-Bad : 1\r\n\r\n",
    "invalid-content-length": (
        b"POST /echo HTTP/1.1\r\nHost: testserver\r\nContent-Length: abc\r\n\r\n"
    ),
    "conflicting-content-lengths": (
        b"POST /echo HTTP/1.1\r\nHost: testserver\r\nContent-Length: 3\r\n"
        b"Content-Length: 4\r\n\r\nabcd"
    ),
    "control-char-in-header-value": (
        b"GET / HTTP/1.1\r\nHost: testserver\r\nX-Bad: a\x00b\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_HEADS))
def test_malformed_head_gets_400_and_close(raw_server, case):
    before = app_calls(raw_server)
    with RawClient(raw_server.port) as client:
        # A valid request pipelined right behind the bad one must never be answered.
        client.send(MALFORMED_HEADS[case] + FOLLOW_UP)
        resp = client.read_response()
        assert resp.status_line.startswith(b"HTTP/1.1 400"), resp.status_line
        rest = client.read_until_closed(timeout=5)
    assert rest == b"", f"bytes after the 400 response: {rest!r}"
    assert app_calls(raw_server) == before, "the app was called for a malformed request"
    raw_server.assert_alive()


def test_malformed_head_never_reaches_app_even_without_follow_up(raw_server):
    before = app_calls(raw_server)
    with RawClient(raw_server.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: testserver\r\nBad Header: x\r\n\r\n")
        resp = client.read_response()
        assert resp.status == 400
        assert client.closed_within(5)
    assert app_calls(raw_server) == before


def settled_record(server, key: str, timeout: float = 3.0):
    """What /record-body saw once it is finished: ends in a disconnect or a full body.

    Returns the last value seen if it never got there (None if the app was never called).
    """

    def finished(messages):
        return messages and (
            messages[-1] == ["http.disconnect"]
            or any(m[0] == "http.request" and m[2] is False for m in messages)
        )

    deadline = time.monotonic() + timeout
    while True:
        messages = report(server, key)
        if finished(messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def test_bad_chunk_size_at_body_start(raw_server):
    with RawClient(raw_server.port) as client:
        client.request(
            "POST",
            "/record-body?id=badchunk-start",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"zz\r\nhello\r\n0\r\n\r\n" + FOLLOW_UP,
        )
        data = client.read_until_closed(timeout=10)
    assert b"complete body" not in data
    assert b"pipe-after-bad" not in data
    assert data == b"" or data.startswith(b"HTTP/1.1 400"), data
    assert data.count(b"HTTP/1.1 ") <= 1, data
    # The server may reject the body before calling the app; if the app was called, it
    # must see a disconnect, never a (short) complete body.
    messages = settled_record(raw_server, "badchunk-start", timeout=1.0)
    if messages is not None:
        assert messages and messages[-1] == ["http.disconnect"], messages
        assert not any(m[0] == "http.request" and m[2] is False for m in messages), messages


def test_bad_chunk_size_mid_body_gives_disconnect_not_short_body(raw_server):
    with RawClient(raw_server.port) as client:
        client.request(
            "POST",
            "/record-body?id=badchunk-mid",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"5\r\nhello\r\n",
        )
        # Let the app receive the first part of the body before the corruption arrives.
        wait_for(
            lambda: report(raw_server, "badchunk-mid"),
            message="the app never received the first chunk",
        )
        time.sleep(0.1)
        client.send(b"zz\r\nworld\r\n0\r\n\r\n" + FOLLOW_UP)
        data = client.read_until_closed(timeout=10)
    assert b"complete body" not in data
    assert b"pipe-after-bad" not in data
    assert data == b"" or data.startswith(b"HTTP/1.1 400"), data
    messages = settled_record(raw_server, "badchunk-mid")
    assert messages and messages[-1] == ["http.disconnect"], messages
    assert messages[0] == ["http.request", 5, True], messages
    assert not any(m[0] == "http.request" and m[2] is False for m in messages), messages


BAD_CHUNKED_BODIES = {
    "size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "size-past-64-bits": b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "data-without-crlf": b"5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("split", ["one-segment", "head-then-body"])
@pytest.mark.parametrize("case", sorted(BAD_CHUNKED_BODIES))
def test_malformed_chunked_body_gets_400_and_close(raw_server, case, split):
    """A response not yet started becomes a 400 (never an empty reply, which a proxy turns
    into a 502); the app sees a disconnect; nothing past the error is read."""
    key = f"badbody-{case}-{split}"
    head = build_request(
        "POST", f"/record-body?id={key}", headers=[("Transfer-Encoding", "chunked")]
    )
    with RawClient(raw_server.port) as client:
        if split == "one-segment":
            client.send(head + BAD_CHUNKED_BODIES[case] + FOLLOW_UP)
        else:
            client.send(head)
            wait_for(lambda: report(raw_server, key) is not None, message="app not called")
            client.send(BAD_CHUNKED_BODIES[case] + FOLLOW_UP)
        resp = client.read_response()
        assert resp.status_line == b"HTTP/1.1 400 Bad Request", resp.status_line
        assert resp.header("connection") == b"close"
        rest = client.read_until_closed(timeout=5)
    assert rest == b"", f"bytes after the 400 response: {rest!r}"
    messages = settled_record(raw_server, key)
    assert messages and messages[-1] == ["http.disconnect"], messages
    assert not any(m[0] == "http.request" and m[2] is False for m in messages), messages


def test_server_healthy_after_malformed_requests(raw_server):
    raw_server.assert_alive()
    resp = simple_get(raw_server.port, "/")
    assert resp.status_line == b"HTTP/1.1 200 OK"
    assert resp.body == b"hello"


# A TLS 1.2 ClientHello's first bytes, as a TLS client sends them to the plain port (its
# random bytes chosen without CR or LF, which a bare-line-end check would catch anyway).
TLS_CLIENT_HELLO = (
    bytes.fromhex("16030100c4010000c00303") + bytes(range(0x30, 0x50)) + b"\x00\x00\x02\x13\x01"
)

NOT_HTTP = {
    "tls-client-hello": TLS_CLIENT_HELLO,
    "binary-junk": b"\x00\xff\x13\x37" * 8,
    # No line end: the byte that cannot belong to a method decides.
    "bad-byte-in-method": b"GE(T / HTTP/1.1",
}


@pytest.mark.rsgi_only
@pytest.mark.parametrize("case", sorted(NOT_HTTP))
def test_bytes_that_are_not_http_get_400_at_once(raw_server, case):
    """Not held for the head-read timeout (30 s): answered as soon as the first line cannot
    be a request line, and closed."""
    assert_refused_at_once(raw_server, NOT_HTTP[case])


@pytest.mark.rsgi_only
def test_the_http2_preface_gets_400_where_only_http1_is_served():
    """With `--http 1` the HTTP/2 preface is just bytes that are not HTTP/1.1 (with the
    default `--http auto` it starts an h2c connection: tests/test_http2.py)."""
    with running_server("raw_app:app", "--http", "1") as server:
        assert_refused_at_once(server, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


def assert_refused_at_once(raw_server, data: bytes) -> None:
    before = app_calls(raw_server)
    with RawClient(raw_server.port, timeout=5) as client:
        started = time.monotonic()
        client.send(data)
        resp = client.read_response(timeout=3)
        assert time.monotonic() - started < 3
        assert resp.status_line == b"HTTP/1.1 400 Bad Request", resp.status_line
        assert resp.header("connection") == b"close"
        assert resp.body == b"Bad Request"
        assert client.read_until_closed(timeout=3) == b""
    assert app_calls(raw_server) == before
    raw_server.assert_alive()


INVALID_HOSTS = ["a b", "a@b", "user@example.com", "a/b", "a:b", "[::1", "[::1]x", "a%zz"]


@pytest.mark.rsgi_only
@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_invalid_host_gets_400(raw_server, host):
    """RFC 9112 3.2: a Host that is not `uri-host [":" port]` (RFC 3986) is a 400."""
    before = app_calls(raw_server)
    with RawClient(raw_server.port) as client:
        client.send(build_request("GET", "/", host=host) + FOLLOW_UP)
        resp = client.read_response()
        assert resp.status_line == b"HTTP/1.1 400 Bad Request", resp.status_line
        assert resp.header("connection") == b"close"
        assert client.read_until_closed(timeout=5) == b""
    assert app_calls(raw_server) == before


@pytest.mark.parametrize("host", ["", "example.com:8080", "127.0.0.1", "[::1]:8000", "a%20b"])
def test_valid_host_is_served(raw_server, host):
    with RawClient(raw_server.port) as client:
        client.send(build_request("GET", "/", host=host, headers=[("Connection", "close")]))
        resp = client.read_response()
    assert resp.status == 200 and resp.body == b"hello", resp.status_line
