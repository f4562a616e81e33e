"""Request smuggling corpus (issue 6): every ambiguous or malformed request is rejected.

Each case is sent in one ``sendall`` together with a second, pipelined request
``GET /smuggled HTTP/1.1`` (``SMUGGLED``).  For every case the server must

* reject the first request: a 4xx/5xx status (a specific one where the RFC or the issue
  says so), or close the connection without any response -- never a 2xx;
* never answer the pipelined request, and never let it reach the app (the app logs every
  request it sees; ``/smuggled`` answers with a marker the client can spot).

The control cases at the end send valid requests the same way and check that the
pipelined request *is* answered, which proves that the harness can see a smuggled request.

hyper parses the request head and the chunked body; rsgi adds its own checks on top
(src/http/validate.rs).  Several of these cases are let through by hyper on its own.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import time

import pytest
from conftest import RawClient, running_server, simple_get, wait_for

pytestmark = pytest.mark.rsgi_only

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
# The body tests/apps/smuggle_app.py answers /smuggled with.
SMUGGLED_MARKER = b"SMUGGLED-REQUEST-REACHED-THE-APP"

POST = b"POST /echo HTTP/1.1\r\nHost: testserver\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n"
HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"


def _hex(n: int) -> bytes:
    return f"{n:x}".encode()


# name -> (first request bytes, statuses that count as the right rejection or None for
# "any 4xx/5xx, or a close without a response").
CASES: dict[str, tuple[bytes, frozenset[int] | None]] = {
    # -- Content-Length and Transfer-Encoding together -------------------------------
    # Under Content-Length the pipelined request is body; under chunked it is a request.
    "cl-te": (
        POST
        + b"Content-Length: "
        + str(5 + len(SMUGGLED)).encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        frozenset({400}),
    ),
    # Under Content-Length the chunk-size line is the body and the chunk data a request.
    "te-cl": (
        CHUNKED
        + b"Content-Length: "
        + str(len(_hex(len(SMUGGLED)) + b"\r\n")).encode()
        + b"\r\n\r\n"
        + _hex(len(SMUGGLED))
        + b"\r\n"
        + SMUGGLED
        + b"\r\n0\r\n\r\n",
        frozenset({400}),
    ),
    # -- duplicate Content-Length ----------------------------------------------------
    "duplicate-cl-same": (
        POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        frozenset({400}),
    ),
    "duplicate-cl-different": (
        POST
        + b"Content-Length: 5\r\nContent-Length: "
        + str(5 + len(SMUGGLED)).encode()
        + b"\r\n\r\nhello",
        frozenset({400}),
    ),
    "cl-comma-list": (POST + b"Content-Length: 5, 5\r\n\r\nhello", frozenset({400})),
    # -- Transfer-Encoding: chunked more than once -----------------------------------
    "te-chunked-two-lines": (
        CHUNKED + b"Transfer-Encoding: chunked\r\n\r\n" + HELLO_CHUNKED,
        None,
    ),
    "te-chunked-comma-chunked": (
        POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + HELLO_CHUNKED,
        None,
    ),
    # -- final transfer coding not chunked: the length is unknown, 400 (RFC 9112 6.3,
    # issue 16; issue 6 had 501 for gzip and identity) -------------------------------
    "te-gzip": (
        POST + b"Transfer-Encoding: gzip\r\n\r\n" + HELLO_CHUNKED,
        frozenset({400}),
    ),
    "te-identity": (
        POST + b"Transfer-Encoding: identity\r\n\r\n" + HELLO_CHUNKED,
        frozenset({400}),
    ),
    "te-xchunked": (
        POST + b"Transfer-Encoding: xchunked\r\n\r\n" + HELLO_CHUNKED,
        frozenset({400}),
    ),
    "te-chunked-gzip": (
        POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n" + HELLO_CHUNKED,
        frozenset({400}),
    ),
    "te-unknown-chunked": (
        POST + b"Transfer-Encoding: foo, chunked\r\n\r\n" + HELLO_CHUNKED,
        frozenset({400}),
    ),
    # -- a registered coding before a final chunked: framed, not decoded: 501 ---------
    "te-gzip-chunked": (
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + HELLO_CHUNKED,
        frozenset({501}),
    ),
    # -- whitespace in and around the Transfer-Encoding field ------------------------
    "te-value-trailing-space": (
        POST + b"Transfer-Encoding: chunked \r\n\r\n" + HELLO_CHUNKED,
        None,
    ),
    "te-value-leading-space": (
        POST + b"Transfer-Encoding:  chunked\r\n\r\n" + HELLO_CHUNKED,
        None,
    ),
    "te-value-vertical-tab": (
        POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n" + HELLO_CHUNKED,
        None,
    ),
    "te-space-before-colon": (
        POST + b"Transfer-Encoding : chunked\r\n\r\n" + HELLO_CHUNKED,
        frozenset({400}),
    ),
    "cl-space-before-colon": (
        POST + b"Content-Length : 5\r\n\r\nhello",
        frozenset({400}),
    ),
    "te-on-http10": (
        b"POST /echo HTTP/1.0\r\nHost: testserver\r\nTransfer-Encoding: chunked\r\n\r\n"
        + HELLO_CHUNKED,
        frozenset({400}),
    ),
    # -- obs-fold, bare CR, bare LF --------------------------------------------------
    "obs-fold-space": (
        POST + b"Content-Length: 5\r\nX-Folded: a\r\n b\r\n\r\nhello",
        frozenset({400}),
    ),
    "obs-fold-tab": (
        POST + b"Content-Length: 5\r\nX-Folded: a\r\n\tb\r\n\r\nhello",
        frozenset({400}),
    ),
    "obs-fold-transfer-encoding": (
        POST + b"Content-Length: 5\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\n\r\nhello",
        frozenset({400}),
    ),
    "bare-cr-in-header-value": (
        POST + b"Content-Length: 5\r\nX-Bad: a\rb\r\n\r\nhello",
        frozenset({400}),
    ),
    "bare-cr-line-end": (
        POST + b"X-Bad: a\rContent-Length: 5\r\n\r\nhello",
        frozenset({400}),
    ),
    "bare-lf-line-ends": (
        b"POST /echo HTTP/1.1\nHost: testserver\nContent-Length: 5\n\nhello",
        frozenset({400}),
    ),
    "bare-lf-one-header-line": (
        POST + b"Content-Length: 5\nX-After-Bare-Lf: 1\r\n\r\nhello",
        frozenset({400}),
    ),
    "bare-lf-in-chunked-body": (
        CHUNKED + b"\r\n5\nhello\n0\n\n",
        None,
    ),
    # -- chunk sizes -----------------------------------------------------------------
    "chunk-size-not-hex": (CHUNKED + b"\r\nzz\r\nhello\r\n0\r\n\r\n", None),
    "chunk-size-negative": (CHUNKED + b"\r\n-1\r\nhello\r\n0\r\n\r\n", None),
    "chunk-size-overflow": (
        CHUNKED + b"\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        None,
    ),
    "chunk-size-empty": (CHUNKED + b"\r\n\r\nhello\r\n0\r\n\r\n", None),
    "chunk-size-0x-prefix": (CHUNKED + b"\r\n0x5\r\nhello\r\n0\r\n\r\n", None),
    "chunk-size-trailing-space": (CHUNKED + b"\r\n5 \r\nhello\r\n0\r\n\r\n", None),
    "chunk-size-trailing-tab": (CHUNKED + b"\r\n5\t\r\nhello\r\n0\r\n\r\n", None),
    "chunk-data-longer-than-size": (CHUNKED + b"\r\n3\r\nhello\r\n0\r\n\r\n", None),
    # -- chunk extensions with invalid bytes -----------------------------------------
    "chunk-ext-nul": (CHUNKED + b"\r\n5;ext=\x00\r\nhello\r\n0\r\n\r\n", None),
    "chunk-ext-control-char": (CHUNKED + b"\r\n5;\x01\r\nhello\r\n0\r\n\r\n", None),
    "chunk-ext-bare-cr": (CHUNKED + b"\r\n5;a\rb\r\nhello\r\n0\r\n\r\n", None),
    "chunk-ext-unterminated-quote": (
        CHUNKED + b'\r\n5;a="b\r\nhello\r\n0\r\n\r\n',
        None,
    ),
    # -- NUL bytes -------------------------------------------------------------------
    "nul-in-request-line": (
        b"POST /ec\x00ho HTTP/1.1\r\nHost: testserver\r\nContent-Length: 5\r\n\r\nhello",
        frozenset({400}),
    ),
    "nul-in-header-name": (
        POST + b"Content-Length: 5\r\nX-\x00Bad: 1\r\n\r\nhello",
        frozenset({400}),
    ),
    "nul-in-header-value": (
        POST + b"Content-Length: 5\r\nX-Bad: a\x00b\r\n\r\nhello",
        frozenset({400}),
    ),
    # -- forbidden fields in the chunked trailer section -----------------------------
    "trailer-content-length": (
        CHUNKED + b"\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
        None,
    ),
    "trailer-transfer-encoding": (
        CHUNKED + b"\r\n5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        None,
    ),
    "trailer-host": (
        CHUNKED + b"\r\n5\r\nhello\r\n0\r\nHost: evil.example\r\n\r\n",
        None,
    ),
    # -- Host (RFC 9112 section 3.2) -------------------------------------------------
    "missing-host-http11": (
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        frozenset({400}),
    ),
    "repeated-host": (
        POST + b"Host: other.example\r\nContent-Length: 5\r\n\r\nhello",
        frozenset({400}),
    ),
    # -- an Upgrade header that is not acted on changes nothing (issue 16) -------------
    "upgrade-chunk-size-trailing-tab": (
        POST
        + b"Upgrade: foo\r\nConnection: upgrade\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"5\t\r\nhello\r\n0\r\n\r\n",
        frozenset({400}),
    ),
    "upgrade-bare-lf-in-chunked-body": (
        POST + b"Upgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        frozenset({400}),
    ),
    "upgrade-chunk-data-longer-than-size": (
        POST + b"Upgrade: foo\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        frozenset({400}),
    ),
    # -- Content-Length syntax -------------------------------------------------------
    "cl-plus-sign": (POST + b"Content-Length: +5\r\n\r\nhello", frozenset({400})),
    "cl-hex": (POST + b"Content-Length: 0x5\r\n\r\nhello", frozenset({400})),
    "cl-negative": (POST + b"Content-Length: -5\r\n\r\nhello", frozenset({400})),
}

# Valid requests sent the same way: the pipelined request is legitimately answered.
CONTROLS: dict[str, bytes] = {
    "content-length": POST + b"Content-Length: 5\r\n\r\nhello",
    "chunked": CHUNKED + b"\r\n" + HELLO_CHUNKED,
    "chunked-uppercase": POST + b"Transfer-Encoding: CHUNKED\r\n\r\n" + HELLO_CHUNKED,
    "chunk-extension-valid": CHUNKED + b"\r\n5;ext=1\r\nhello\r\n0\r\n\r\n",
    "chunk-extension-quoted": CHUNKED + b'\r\n5;name="v a;l"\r\nhello\r\n0\r\n\r\n',
    "chunked-allowed-trailer": CHUNKED + b"\r\n5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
    "http10-content-length": (
        b"POST /echo HTTP/1.0\r\nHost: testserver\r\nConnection: keep-alive\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    ),
}

_STATUS_RE = re.compile(rb"HTTP/1\.[01] (\d{3})")


@pytest.fixture(scope="module")
def smuggle_server():
    # A short keep-alive bounds the wait when a case leaves the connection open.
    with running_server("smuggle_app:app", "--timeout-keep-alive", "2") as server:
        yield server


def app_log(server) -> list[list]:
    resp = simple_get(server.port, "/log")
    assert resp.status == 200, resp.status_line
    return json.loads(resp.body)


def reset_log(server) -> None:
    assert simple_get(server.port, "/reset").status == 200


def exchange(server, data: bytes, timeout: float = 6.0) -> tuple[bytes, bool]:
    """Send ``data`` + SMUGGLED in one write; return (bytes received, closed by server).

    Reads until the server closes the connection, or until the answer to the pipelined
    request has arrived (no need to wait for the keep-alive timeout then).
    """
    with RawClient(server.port, timeout=timeout) as client:
        try:
            client.send(data + SMUGGLED)
        except OSError:
            pass  # closed before it read everything: what was answered is still readable
        deadline = time.monotonic() + timeout
        closed = False
        while time.monotonic() < deadline:
            try:
                more = client._recv(deadline)
            except TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not more:
                closed = True
                break
            if SMUGGLED_MARKER in client.buffer:
                break
        return bytes(client.buffer), closed


def statuses(data: bytes) -> list[int]:
    """Status codes of the responses in ``data`` (bodies here never contain a status line)."""
    return [int(code) for code in _STATUS_RE.findall(data)]


@pytest.mark.parametrize("case", list(CASES))
def test_smuggling_case_is_rejected(smuggle_server, case):
    data, expected = CASES[case]
    reset_log(smuggle_server)
    received, closed = exchange(smuggle_server, data)
    log = app_log(smuggle_server)
    codes = statuses(received)
    context = (
        f"case {case!r}\n  sent: {data + SMUGGLED!r}\n  received: {received!r}\n"
        f"  closed by server: {closed}\n  requests the app saw: {log}"
    )

    reached = [entry for entry in log if entry[1] == "/smuggled"]
    assert SMUGGLED_MARKER not in received and not reached, (
        f"the pipelined request was answered or reached the app\n{context}"
    )
    assert len(codes) <= 1, f"more than one response on the connection\n{context}"
    if codes:
        assert received.startswith(b"HTTP/1.1 "), context
        code = codes[0]
        assert not 200 <= code < 300, f"the request was accepted ({code})\n{context}"
        if expected is not None:
            assert code in expected, f"expected status {sorted(expected)}, got {code}\n{context}"
        else:
            assert 400 <= code < 600, f"expected a 4xx/5xx status, got {code}\n{context}"
    else:
        assert expected is None, f"expected status {sorted(expected)}, got none\n{context}"
        assert closed, f"no response and the connection was left open\n{context}"
    assert closed, f"the connection was not closed after the rejection\n{context}"
    smuggle_server.assert_alive()


@pytest.mark.parametrize("case", list(CONTROLS))
def test_control_valid_request_and_pipelined_request_are_served(smuggle_server, case):
    reset_log(smuggle_server)
    received, _ = exchange(smuggle_server, CONTROLS[case])
    log = app_log(smuggle_server)
    context = f"case {case!r}\n  received: {received!r}\n  requests the app saw: {log}"
    assert statuses(received) == [200, 200], context
    assert b"first:hello" in received, context
    assert SMUGGLED_MARKER in received, context
    assert [entry[1] for entry in log] == ["/echo", "/smuggled"], context
    assert log[0][2] == "hello", context


def test_server_still_serves_after_the_corpus(smuggle_server):
    smuggle_server.assert_alive()
    resp = simple_get(smuggle_server.port, "/echo")
    assert resp.status == 200 and resp.body == b"first:"
    stderr = smuggle_server.stderr()
    assert "panicked" not in stderr and "Traceback" not in stderr, stderr


# -- a refusal belongs to the request it was found in ------------------------------------
# Valid requests pipelined ahead of a refused one are answered first, by the app, whatever
# way the bytes are cut into segments; then the refusal, and nothing after it.
# name -> (the messages, in order; the responses as (status line, body); what the app saw)
BAD_400 = (b"HTTP/1.1 400 Bad Request", b"Bad Request")
REFUSED_AFTER_VALID: dict[str, tuple[list[bytes], list[tuple[bytes, bytes]], list[list]]] = {
    # HTTP/1.0 without keep-alive: the connection closes after /first's response, before the
    # next request is read (as it does when that request comes later, and as uvicorn does).
    "http10-then-missing-host": (
        [b"GET /first HTTP/1.0\r\n\r\n", b"GET /second HTTP/1.1\r\n\r\n"],
        [(b"HTTP/1.0 200 OK", b"first:")],
        [["GET", "/first", ""]],
    ),
    "http10-keep-alive-then-missing-host": (
        [
            b"GET /first HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"GET /second HTTP/1.1\r\n\r\n",
        ],
        [(b"HTTP/1.0 200 OK", b"first:"), BAD_400],
        [["GET", "/first", ""]],
    ),
    "content-length-body-then-bare-cr": (
        [
            b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /bad HTTP/1.1\r\nHost: x\r\r\n\r\n",
        ],
        [(b"HTTP/1.1 200 OK", b"first:hello"), BAD_400],
        [["POST", "/first", "hello"]],
    ),
    "two-then-missing-host": (
        [
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\n\r\n",
            b"GET /c HTTP/1.1\r\n\r\n",
        ],
        [(b"HTTP/1.1 200 OK", b"first:"), (b"HTTP/1.1 200 OK", b"first:hi"), BAD_400],
        [["GET", "/a", ""], ["POST", "/b", "hi"]],
    ),
    # The refusal is in the second request's body: that request reached the app, which sees
    # a disconnect, and its answer is the 400.
    "chunked-then-bad-chunk-size": (
        [
            CHUNKED.replace(b"/echo", b"/first") + b"\r\n" + HELLO_CHUNKED,
            CHUNKED.replace(b"/echo", b"/second") + b"\r\n5\r\nhello\r\nzz\r\n",
        ],
        [(b"HTTP/1.1 200 OK", b"first:hello"), BAD_400],
        [["POST", "/first", "hello"], ["POST", "/second", "<disconnect>"]],
    ),
}


def segmentations(messages: list[bytes]) -> dict[str, list[bytes]]:
    """The same bytes in one segment, one segment per message, and cut at random
    1-500-byte boundaries (fixed seeds)."""
    data = b"".join(messages)
    ways = {"one-segment": [data], "per-message": messages}
    for seed in range(4):
        rng = random.Random(seed)
        pieces, start = [], 0
        while start < len(data):
            size = rng.randint(1, min(500, len(data)))
            pieces.append(data[start : start + size])
            start += size
        ways[f"random-{seed}"] = pieces
    return ways


def responses_to(server, pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Sends each piece as its own segment; the responses until the server closes."""
    with RawClient(server.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            with contextlib.suppress(OSError):  # closed early: its answers stay readable
                client.send(piece)
            time.sleep(0.02)
        client.buffer += client.read_until_closed(timeout=6)
        answers = []
        while client.buffer:
            resp = client.read_response()
            answers.append((resp.status_line, resp.body))
        return answers


@pytest.mark.parametrize("split", list(segmentations([b"x"])))
@pytest.mark.parametrize("case", list(REFUSED_AFTER_VALID))
def test_requests_before_a_refused_one_are_answered_first(smuggle_server, case, split):
    messages, expected, seen = REFUSED_AFTER_VALID[case]
    pieces = segmentations(messages)[split]
    reset_log(smuggle_server)
    answers = responses_to(smuggle_server, pieces)
    context = f"case {case!r} in {[len(p) for p in pieces]}-byte pieces\n  got: {answers!r}"
    assert answers == expected, context
    wait_for(lambda: app_log(smuggle_server) == seen, message=f"{app_log(smuggle_server)}")
    smuggle_server.assert_alive()


@pytest.mark.parametrize("target", ["/healthz", "/echo"])
def test_a_request_that_is_not_upgraded_closes_its_connection(server_factory, target):
    """What follows an Upgrade request is held back for the protocol it may switch to: a
    response that does not switch (the health path's too) closes the connection, and the
    bytes behind the request are never parsed as a request."""
    server = server_factory("smuggle_app:app", "--health-path", "/healthz")
    reset_log(server)
    head = (
        f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n"
    ).encode()
    with RawClient(server.port) as client:
        client.send(head + SMUGGLED)
        resp = client.read_response()
        assert resp.status == 200, resp.status_line
        assert resp.header("connection") == b"close"
        assert client.read_until_closed(timeout=5) == b""
    assert all(entry[1] != "/smuggled" for entry in app_log(server))
