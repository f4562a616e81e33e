"""Bodies of 0 B to 16 MiB round-trip byte-exact through the server, as bytes, bytearray and
memoryview, whole or in pieces; a buffer the app changes after send() returns does not change
what the client gets (issue 17: large bodies are lent to the I/O thread, not copied)."""

from __future__ import annotations

import hashlib
import os
import threading

import httpx
import pytest
from conftest import running_server

SIZES = [0, 1, 64 * 1024, 1024 * 1024, 16 * 1024 * 1024]


@pytest.fixture(scope="module")
def server():
    with running_server("bodies_app:app") as server:
        yield server


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
@pytest.mark.parametrize("chunk", [0, 100_000])
def test_round_trip_is_byte_exact(server, kind, chunk):
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for size in SIZES:
            body = os.urandom(size)
            response = client.post(f"/echo?kind={kind}&chunk={chunk}", content=body)
            assert response.status_code == 200
            assert response.headers["content-length"] == str(size)
            assert len(response.content) == size
            assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()


@pytest.mark.timeout(60)
def test_concurrent_large_bodies_stay_exact(server):
    """Many lent buffers in flight at once, on several connections."""
    bodies = [os.urandom(1024 * 1024 + n) for n in range(8)]

    def run(body):
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for _ in range(4):
                assert client.post("/echo", content=body).content == body

    threads = [threading.Thread(target=run, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.alive()


@pytest.mark.timeout(30)
def test_a_bytearray_changed_after_send_is_sent_as_it_was(server):
    response = httpx.get(f"{server.base_url}/mutated", timeout=10)
    assert response.status_code == 200
    assert response.content == b"a" * 100_000 + b"end"
