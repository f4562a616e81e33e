"""A misbehaving app never kills the server nor produces a response that looks complete."""

from __future__ import annotations

import re

import pytest
from conftest import ConnectionClosed, RawClient, Response, simple_get


def fetch_outcome(port: int, target: str) -> tuple[Response | None, bytes]:
    """Send one GET; return (complete response or None, bytes left when the server closed)."""
    with RawClient(port, timeout=10) as client:
        client.request("GET", target)
        try:
            resp = client.read_response()
        except ConnectionClosed:
            return None, bytes(client.buffer)
        return resp, b""


def assert_server_healthy(server) -> None:
    server.assert_alive()
    resp = simple_get(server.port, "/")
    assert resp.status_line == b"HTTP/1.1 200 OK"
    assert resp.body == b"hello"


def assert_500_or_closed(resp: Response | None, server) -> None:
    if resp is None:
        # Closed before a complete response (read_response() frames strictly, so whatever
        # was sent did not look complete): acceptable.
        return
    assert resp.status == 500, f"expected 500, got {resp.status_line!r}\n{server.stderr()}"


def test_exception_before_start_gives_500_and_traceback(raw_server):
    offset = raw_server.stderr_offset()
    resp, _ = fetch_outcome(raw_server.port, "/error/before-start")
    assert resp is not None, "no response for an exception before response start"
    assert resp.status_line == b"HTTP/1.1 500 Internal Server Error"
    assert resp.body == b"Internal Server Error"
    text = raw_server.wait_for_stderr(r"RuntimeError: kaboom-before-start", since=offset)
    assert "Traceback (most recent call last)" in text
    assert re.search(r"^ERROR:", text, re.MULTILINE), text
    assert_server_healthy(raw_server)


def test_exception_after_start_closes_without_terminating_chunk(raw_server):
    offset = raw_server.stderr_offset()
    with RawClient(raw_server.port, timeout=10) as client:
        client.request("GET", "/error/after-start")
        head = client.read_head()
        assert head.status == 200
        assert head.header("transfer-encoding") == b"chunked"
        rest = client.read_until_closed(timeout=10)
    # The body must not be terminated: the client has to see a truncated response.
    assert not rest.endswith(b"0\r\n\r\n"), rest
    assert b"\r\n0\r\n\r\n" not in rest, rest
    assert rest in (b"", b"7\r\npartial\r\n"), rest
    raw_server.wait_for_stderr(r"RuntimeError: kaboom-after-start", since=offset)
    assert_server_healthy(raw_server)


def test_return_without_response_gives_500(raw_server):
    offset = raw_server.stderr_offset()
    resp, _ = fetch_outcome(raw_server.port, "/error/no-response")
    assert resp is not None
    assert resp.status_line == b"HTTP/1.1 500 Internal Server Error"
    raw_server.wait_for_stderr(r"(?m)^ERROR:", since=offset)
    assert_server_healthy(raw_server)


INVALID_MESSAGE_CASES = [
    "body-before-start",
    "double-start",
    "status-not-int",
    "header-not-bytes",
]


@pytest.mark.parametrize("case", INVALID_MESSAGE_CASES)
def test_invalid_messages_give_500_or_close(raw_server, case):
    offset = raw_server.stderr_offset()
    resp, _ = fetch_outcome(raw_server.port, f"/error/{case}")
    assert_500_or_closed(resp, raw_server)
    if resp is not None:
        assert b"should not get here" not in resp.body
    raw_server.wait_for_stderr(r"(?m)^ERROR:", since=offset)
    assert_server_healthy(raw_server)


# The wording of these messages is rsgi's; each names what was wrong.
ERROR_KEYWORDS = {
    "no-response": r"(?i)without|no response|not (started|sent)",
    "body-before-start": r"http\.response\.start",
    "double-start": r"http\.response\.start",
    "status-not-int": r"(?i)status",
    "header-not-bytes": r"(?i)header",
}


@pytest.mark.rsgi_only
@pytest.mark.parametrize("case", sorted(ERROR_KEYWORDS))
def test_invalid_message_error_text(raw_server, case):
    offset = raw_server.stderr_offset()
    fetch_outcome(raw_server.port, f"/error/{case}")
    text = raw_server.wait_for_stderr(r"(?m)^ERROR:", since=offset)
    error_lines = "\n".join(
        line for line in text.splitlines() if not line.startswith(("  ", "Traceback"))
    )
    assert re.search(ERROR_KEYWORDS[case], error_lines), text
    assert_server_healthy(raw_server)


def test_many_failures_in_a_row_then_normal_requests(raw_server):
    for case in ["before-start", "no-response", *INVALID_MESSAGE_CASES, "after-start"] * 3:
        resp, _ = fetch_outcome(raw_server.port, f"/error/{case}")
        assert resp is None or resp.status == 500, (case, resp)
    for _ in range(3):
        assert_server_healthy(raw_server)
