"""ASGI ``http.response.pathsend``: the Rust side streams the file the app names.

Real server, real sockets: byte-exact bodies for a range of sizes (with Content-Length,
chunked, and after body chunks), a 20 MiB file with the server's memory bounded while a
slow client reads it, Starlette's FileResponse (which uses the extension when advertised),
HEAD, a missing file, and messages sent out of order.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
from conftest import APPS_DIR, RawClient, simple_get, start_server

pytestmark = pytest.mark.rsgi_only

KIB = 1024
MIB = 1024 * KIB
# The Rust side reads files in chunks of this size (src/http/file.rs).
FILE_CHUNK = 256 * KIB
SIZES = [
    0,
    1,
    4095,
    4096,
    4097,
    65535,
    65536,
    65537,
    FILE_CHUNK - 1,
    FILE_CHUNK,
    FILE_CHUNK + 1,
    MIB + 3,
]
LARGE = 20 * MIB


def pattern(size: int) -> bytes:
    """Position-dependent bytes (251 is prime, so no power-of-two alignment repeats)."""
    block = bytes(range(251))
    return (block * (size // 251 + 1))[:size]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[int, str]:
    directory = tmp_path_factory.mktemp("pathsend")
    paths = {}
    for size in [*SIZES, LARGE]:
        path = directory / f"file-{size}.bin"
        path.write_bytes(pattern(size))
        paths[size] = str(path)
    return paths


@pytest.fixture(scope="module")
def server():
    server = start_server("ext_app:app")
    yield server
    server.stop()


def report(port: int) -> dict:
    return json.loads(simple_get(port, "/report").body)


def test_extension_is_advertised(server):
    info = json.loads(simple_get(server.port, "/scope").body)
    assert info["extensions"]["http.response.pathsend"] == {}


@pytest.mark.parametrize(
    "mode, query, framing",
    [
        ("content-length", "", "length"),
        ("chunked", "&length=0", "chunked"),
        ("after-body-chunks", "&chunks=3", "chunked"),
    ],
)
def test_sizes_on_one_keep_alive_connection(server, files, mode, query, framing):
    with RawClient(server.port) as client:
        for size in SIZES:
            client.request("GET", f"/file?path={files[size]}{query}")
            resp = client.read_response()
            assert resp.status == 200, (size, resp.body[:200])
            expected = pattern(size)
            if mode == "after-body-chunks":
                expected = b"0;1;2;" + expected
            assert resp.framing == framing or (size == 0 and framing == "length")
            assert len(resp.body) == len(expected), size
            assert resp.body == expected, size
            if mode == "content-length":
                assert resp.header("content-length") == str(size).encode()
    server.assert_alive()


def test_large_file_byte_exact_with_bounded_memory(server, files):
    # Warm up: the first file response starts the blocking-pool thread.
    assert simple_get(server.port, f"/file?path={files[MIB + 3]}").body == pattern(MIB + 3)
    time.sleep(0.3)
    baseline = server.rss_kib()
    digest = hashlib.sha256()
    received = 0
    peak = baseline
    with RawClient(server.port, rcvbuf=64 * KIB) as client:
        client.request("GET", f"/file?path={files[LARGE]}")
        resp = client.read_head()
        assert resp.status == 200
        assert resp.header("content-length") == str(LARGE).encode()
        body = bytes(client.buffer)
        client.buffer.clear()
        digest.update(body)
        received += len(body)
        # A slow reader: the server must wait on the socket, not read the file ahead.
        next_sample = 0
        while received < LARGE:
            data = client.sock.recv(min(256 * KIB, LARGE - received))
            assert data, f"connection closed after {received} bytes"
            digest.update(data)
            received += len(data)
            if received >= next_sample:
                peak = max(peak, server.rss_kib())
                next_sample += 2 * MIB
                time.sleep(0.05)
    assert received == LARGE
    assert digest.hexdigest() == hashlib.sha256(pattern(LARGE)).hexdigest()
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 8, f"server RSS grew by {growth_mib:.1f} MiB for a 20 MiB file"
    server.assert_alive()


def test_parallel_downloads(server, files):
    results: dict[int, bytes] = {}

    def fetch(index: int) -> None:
        results[index] = simple_get(server.port, f"/file?path={files[MIB + 3]}").body

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6
    assert all(body == pattern(MIB + 3) for body in results.values())


def test_client_leaving_mid_file(server, files):
    with RawClient(server.port, rcvbuf=64 * KIB) as client:
        client.request("GET", f"/file?path={files[LARGE]}")
        client.read_head()
        client.sock.recv(64 * KIB)
        client.abort()
    time.sleep(0.2)
    assert simple_get(server.port, f"/file?path={files[4097]}").body == pattern(4097)


def test_starlette_file_response_uses_pathsend(server, files):
    size = MIB + 3
    with RawClient(server.port) as client:
        client.request("GET", f"/starlette?path={files[size]}")
        resp = client.read_response()
        assert resp.status == 200
        assert resp.header("content-length") == str(size).encode()
        assert resp.has_header("etag") and resp.has_header("last-modified")
        assert resp.body == pattern(size)
    assert report(server.port)["messages"] == ["http.response.start", "http.response.pathsend"]


def test_head_with_starlette_and_raw_pathsend(server, files):
    size = 65537
    with RawClient(server.port) as client:
        for target in (f"/starlette?path={files[size]}", f"/file?path={files[size]}"):
            client.request("HEAD", target)
            resp = client.read_response(head_request=True)
            assert resp.status == 200
            assert resp.header("content-length") == str(size).encode()
            assert client.nothing_within(0.3), bytes(client.buffer[:100])
        # The connection is still in step: no body bytes were left behind.
        client.request("GET", f"/file?path={files[4096]}")
        assert client.read_response().body == pattern(4096)


def test_missing_file_closes_the_connection_and_logs(server):
    offset = server.stderr_offset()
    with RawClient(server.port) as client:
        client.request("GET", "/file?path=/nonexistent/rsgi-missing.bin")
        data = client.read_until_closed()
        assert b"\r\n0\r\n\r\n" not in data
    server.wait_for_stderr(
        r"http\.response\.pathsend: cannot send /nonexistent/rsgi-missing\.bin", since=offset
    )
    assert simple_get(server.port, "/scope").status == 200


def test_directory_is_not_a_file(server, tmp_path):
    with RawClient(server.port) as client:
        client.request("GET", f"/file?path={tmp_path}&length=0")
        client.read_until_closed()
    assert simple_get(server.port, "/scope").status == 200


def test_messages_out_of_order(server):
    resp = simple_get(server.port, "/misuse?case=before-start")
    assert resp.status == 500
    with RawClient(server.port) as client:
        client.request("GET", "/misuse?case=no-path")
        data = client.read_until_closed()
        assert data.startswith(b"HTTP/1.1 200") or data == b""
    # A body after pathsend is refused, and the file still goes out whole.
    resp = simple_get(server.port, "/misuse?case=body-after")
    assert resp.status == 200
    assert resp.body == (APPS_DIR / "ext_app.py").read_bytes()
    errors = report(server.port)["errors"]
    assert any(
        e.startswith("before-start: RuntimeError: Expected ASGI message 'http.response.start'")
        for e in errors
    ), errors
    assert any(e.startswith("no-path: TypeError") for e in errors), errors
    assert any(e.startswith("body-after: RuntimeError: Unexpected ASGI message") for e in errors)
