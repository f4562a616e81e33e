"""ASGI ``http.response.trailers``: advertised only to clients that sent ``TE: trailers``,
and written as HTTP/1.1 chunked trailer fields. Raw sockets show the exact bytes."""

from __future__ import annotations

import json

import pytest
from conftest import RawClient, simple_get, start_server

pytestmark = pytest.mark.rsgi_only

BODY_AND_TRAILERS = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\nx-count: 2\r\n\r\n"


@pytest.fixture(scope="module")
def server():
    server = start_server("ext_app:app")
    yield server
    server.stop()


def read_all(port: int, request: bytes) -> bytes:
    with RawClient(port) as client:
        client.send(request)
        return client.read_until_closed()


def split(raw: bytes) -> tuple[list[bytes], bytes]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), rest


def extensions(port: int, headers: list[tuple[str, str]], version: str = "HTTP/1.1") -> dict:
    with RawClient(port) as client:
        client.request("GET", "/scope", headers=headers, version=version)
        return json.loads(client.read_response().body)["extensions"]


def test_exact_chunked_bytes_with_trailer_fields(server):
    raw = read_all(
        server.port,
        b"GET /trailers HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    head, rest = split(raw)
    assert head[0] == b"HTTP/1.1 200 OK"
    assert b"transfer-encoding: chunked" in head
    assert b"trailer: x-checksum, x-count" in head
    assert not any(line.startswith(b"content-length") for line in head)
    assert rest == BODY_AND_TRAILERS


def test_trailers_in_two_messages(server):
    raw = read_all(
        server.port,
        b"GET /trailers?split=1 HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    assert split(raw)[1] == BODY_AND_TRAILERS


def test_keep_alive_after_trailers(server):
    with RawClient(server.port) as client:
        for _ in range(2):
            client.request("GET", "/trailers", headers=[("TE", "trailers")])
            resp = client.read_response()
            assert resp.body == b"hello world"
            assert resp.trailers == [(b"x-checksum", b"abc123"), (b"x-count", b"2")]
            assert resp.raw_body == BODY_AND_TRAILERS


def test_advertised_only_with_te_trailers(server):
    assert "http.response.trailers" not in extensions(server.port, [])
    assert "http.response.trailers" not in extensions(server.port, [("TE", "gzip")])
    assert extensions(server.port, [("TE", "trailers")])["http.response.trailers"] == {}
    assert "http.response.trailers" in extensions(server.port, [("TE", "gzip, Trailers")])
    # HTTP/1.0 has no chunked encoding, so no trailers.
    assert "http.response.trailers" not in extensions(
        server.port, [("TE", "trailers")], version="HTTP/1.0"
    )


def test_without_te_the_fields_are_not_sent(server):
    raw = read_all(server.port, b"GET /trailers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert split(raw)[1] == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


def test_undeclared_trailers_are_dropped_with_a_warning(server):
    offset = server.stderr_offset()
    raw = read_all(
        server.port,
        b"GET /trailers?undeclared=1 HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert split(raw)[1] == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server.wait_for_stderr(r"no 'Trailer' header", since=offset)


def test_trailers_message_without_announcement_is_refused(server):
    resp = simple_get(server.port, "/bad-trailers")
    assert resp.status == 200 and resp.body == b"ok"
    errors = json.loads(simple_get(server.port, "/report").body)["errors"]
    assert any("without 'trailers' set in 'http.response.start'" in e for e in errors), errors


def test_app_returning_without_its_trailers_cuts_the_response(server):
    offset = server.stderr_offset()
    raw = read_all(
        server.port,
        b"GET /trailers?forget=1 HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    # The body is not terminated: the client cannot take it for a complete response.
    assert not split(raw)[1].endswith(b"0\r\n\r\n")
    server.wait_for_stderr("returned without completing response", since=offset)
    assert simple_get(server.port, "/scope").status == 200
