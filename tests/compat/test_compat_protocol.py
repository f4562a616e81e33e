"""HTTP/1.x details on rsgi and uvicorn with a raw ASGI app, compared byte for byte."""

from __future__ import annotations

import json
import time

import pytest
from conftest import ConnectionClosed, RawClient
from differences import allowed
from harness import Observed, Reply, both, compare, observe, reply_from_raw


@pytest.fixture(scope="module")
def servers():
    with both("raw_compat:app") as servers:
        yield servers


def effects(server) -> dict:
    with RawClient(server.port) as client:
        client.request("GET", "/effects", headers=[("Connection", "close")])
        return json.loads(client.read_response().body)


def exchange(server, data: bytes, responses: int, head: bool = False) -> list:
    """Send raw bytes; read up to ``responses`` responses, then whether the server closed."""
    seen: list = []
    with RawClient(server.port, timeout=5) as client:
        client.send(data)
        try:
            for _ in range(responses):
                seen.append(reply_from_raw(client.read_response(head_request=head)))
        except (ConnectionClosed, TimeoutError) as exc:
            seen.append(f"no response: {type(exc).__name__}")
        seen.append("closed" if client.closed_within(0.7) else "open")
    return seen


# case -> (bytes sent, responses to read, HEAD?[, (index, path) of a request without Host])
RAW = {
    # Bug 8: uvicorn answers HTTP/1.0 with an HTTP/1.1 status line.
    "http10-get": (b"GET /a HTTP/1.0\r\n\r\n", 1, False),
    "http10-keepalive": (b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1, False),
    # Bug 7: the first request must be answered before the second (no Host) gets its 400.
    "http10-then-no-host": (
        b"GET /first HTTP/1.0\r\n\r\nGET /second HTTP/1.1\r\n\r\n",
        2,
        False,
        (1, "/second"),
    ),
    "pipelined-two": (
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n",
        2,
        False,
    ),
    "post-chunked": (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        1,
        False,
    ),
    # Bug 6: a malformed chunk size line gets 400 and connection: close.
    "malformed-chunk-size": (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
        1,
        False,
    ),
    "malformed-chunk-data": (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        1,
        False,
    ),
    "missing-host-11": (b"GET /a HTTP/1.1\r\n\r\n", 1, False, (0, "/a")),
    "bad-request-line": (b"GARBAGE\r\n\r\n", 1, False),
    "head-with-body": (b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n", 1, True),  # bug 2
    "no-body-204": (b"GET /no-body?s=204 HTTP/1.1\r\nHost: x\r\n\r\n", 1, False),
    "no-body-304": (b"GET /no-body?s=304 HTTP/1.1\r\nHost: x\r\n\r\n", 1, False),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(RAW))
def test_raw_exchange(servers, case):
    data, responses, head, no_host = (*RAW[case], None)[:4]

    def scenario(server, seen: Observed) -> None:
        seen.replies = exchange(server, data, responses, head)

    observed = observe(servers, scenario)
    if no_host is not None:
        excuse_missing_host(observed, *no_host)
    if data.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0"):
        excuse_http10(observed)
    excuse_error_page(observed)
    compare(observed, expect_problems=None)


def excuse_http10(observed: dict[str, Observed]) -> None:
    """rsgi answers 1.0 as 1.0, and keeps a 1.0 keep-alive connection ("http10")."""
    allowed("http10")
    rs, uv = observed["rsgi"], observed["uvicorn"]
    for a, b in zip(rs.replies, uv.replies, strict=False):
        if isinstance(a, Reply) and isinstance(b, Reply) and a.version == "HTTP/1.0":
            assert b.version == "HTTP/1.1", b
            a.version = b.version
            a.headers = [h for h in a.headers if h[0] != "connection"]
            b.headers = [h for h in b.headers if h != ("connection", "close")]
    if rs.replies[-1:] == ["open"] and uv.replies[-1:] == ["closed"]:
        rs.replies[-1] = "closed"


def excuse_error_page(observed: dict[str, Observed]) -> None:
    """rsgi's 400 page text ("error-page-text"); everything else about it must agree."""
    rs, uv = observed["rsgi"], observed["uvicorn"]
    for a, b in zip(rs.replies, uv.replies, strict=False):
        if isinstance(a, Reply) and isinstance(b, Reply) and a.status == b.status == 400:
            allowed("error-page-text")
            assert a.body == b"Bad Request" and b.body == b"Invalid HTTP request received."
            a.body = b.body
            a.headers = [h for h in a.headers if h[0] != "content-length"]
            b.headers = [h for h in b.headers if h[0] != "content-length"]


def excuse_missing_host(observed: dict[str, Observed], index: int, path: str) -> None:
    """Drop the one reply (and its log lines) that "missing-host" explains, if so shaped."""
    allowed("missing-host")
    rs, uv = observed["rsgi"], observed["uvicorn"]
    if len(rs.replies) <= index or len(uv.replies) <= index:
        return
    rsgi_reply, uvicorn_reply = rs.replies[index], uv.replies[index]
    if getattr(rsgi_reply, "status", None) != 400 or not (
        200 <= getattr(uvicorn_reply, "status", 0) < 300
    ):
        return
    assert ("connection", "close") in rsgi_reply.headers
    # After it rsgi closes; uvicorn may keep the connection: drop what follows too.
    del rs.replies[index:], uv.replies[index:]
    uv.access = [line for line in uv.access if not line.startswith(f"GET {path} ")]
    rs.problems = [p for p in rs.problems if "missing or repeated Host" not in p]


@pytest.mark.timeout(30)
def test_work_after_closing_send_runs(servers):
    """Bug 1: Content-Length bytes with more_body, the empty closing body 50 ms later."""

    def scenario(server, seen: Observed) -> None:
        seen.replies = exchange(server, b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n", 1)
        time.sleep(0.3)
        found = effects(server)
        seen.effects = {k: found.get(k) for k in ("late", "late-after")}

    observed = observe(servers, scenario)
    assert observed["uvicorn"].effects == {"late": "closing send returned", "late-after": "ran"}
    compare(observed)


@pytest.mark.timeout(30)
def test_send_after_client_disconnect(servers):
    """The client goes after the first chunk; then the app sends again."""

    def scenario(server, seen: Observed) -> None:
        with RawClient(server.port) as client:
            client.request("GET", "/after-disconnect")
            seen.replies.append(reply_from_raw(client.read_head()).status)
        time.sleep(0.5)
        seen.effects = {"send": effects(server).get("send after disconnect")}

    observed = observe(servers, scenario)
    assert observed["uvicorn"].effects == {"send": "returned"}
    allowed("client-disconnected")
    assert observed["rsgi"].effects == {"send": "raised ClientDisconnected (OSError)"}
    observed["rsgi"].effects = observed["uvicorn"].effects
    compare(observed)
