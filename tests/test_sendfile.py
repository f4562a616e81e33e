"""``http.response.pathsend`` with sendfile(2) on plain HTTP/1.1 (src/http/sendfile.rs).

Real server, real sockets, random (non-repeating) file contents: byte-exact bodies of many
sizes with Content-Length and chunked, HEAD, keep-alive and pipelined requests after a file,
16 downloads at once, a slow reader, a client that leaves mid-file, a file truncated while
it is sent, a client that never reads (the write timeout), a Unix socket, and TLS (which
keeps the read path). That sendfile is used is checked by the server's own count of bytes
sendfile(2) returned (``rsgi_sendfile_bytes_total``) and, where strace is available, by the
system calls themselves.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
import re
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import (
    RUN_DIR,
    RawClient,
    _descendants,
    free_port,
    simple_get,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.rsgi_only

KIB = 1024
MIB = 1024 * KIB
FILE_CHUNK = 256 * KIB
SIZES = [0, 1, 64 * KIB, FILE_CHUNK - 1, FILE_CHUNK, FILE_CHUNK + 1, MIB, 16 * MIB]
BIG = 16 * MIB


def content(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[int, str]:
    directory = tmp_path_factory.mktemp("sendfile")
    paths = {}
    for size in SIZES:
        path = directory / f"file-{size}.bin"
        path.write_bytes(content(size))
        paths[size] = str(path)
    return paths


class Served:
    """A server with its metrics endpoint."""

    def __init__(self, *args: str, uds: str | None = None) -> None:
        self.metrics_port = free_port()
        metrics = ("--metrics-bind", f"127.0.0.1:{self.metrics_port}")
        kwargs = {"uds": uds, "port": False} if uds else {}
        self.server = start_server("ext_app:app", *metrics, *args, **kwargs)

    def sendfile_bytes(self) -> int:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        match = re.search(r"^rsgi_sendfile_bytes_total (\d+)$", text, re.MULTILINE)
        assert match, text
        return int(match.group(1))

    def open_files(self, path: str) -> int:
        """How many descriptors the server's processes hold on `path`."""
        count = 0
        for pid in _descendants(self.server.pid):
            for fd in Path(f"/proc/{pid}/fd").glob("*"):
                try:
                    count += os.readlink(fd) == path
                except OSError:
                    pass
        return count


@pytest.fixture(scope="module")
def plain():
    served = Served("--timeout-write", "2")
    yield served
    served.server.stop()


def get_file(client: RawClient, path: str, chunked: bool = False, method: str = "GET"):
    client.request(method, f"/file?path={path}" + ("&length=0" if chunked else ""))
    return client.read_response(head_request=method == "HEAD")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_sizes_byte_exact_on_one_connection_with_sendfile(plain, files, chunked):
    before = plain.sendfile_bytes()
    with RawClient(plain.server.port, timeout=30) as client:
        for size in SIZES:
            resp = get_file(client, files[size], chunked)
            assert resp.status == 200, resp.body[:200]
            if size:
                assert resp.framing == ("chunked" if chunked else "length"), size
            assert len(resp.body) == size
            assert resp.body == content(size), size
        # The connection is still in step after the files.
        client.request("GET", "/scope")
        assert client.read_response().status == 200
    # Every body byte went out through sendfile, none twice.
    assert plain.sendfile_bytes() - before == sum(SIZES)
    assert plain.open_files(files[BIG]) == 0, "the file stays open after its response"


def test_head_sends_no_body(plain, files):
    before = plain.sendfile_bytes()
    with RawClient(plain.server.port) as client:
        resp = get_file(client, files[MIB], method="HEAD")
        assert resp.status == 200
        assert resp.header("content-length") == str(MIB).encode()
        assert client.nothing_within(0.3), bytes(client.buffer[:100])
        assert get_file(client, files[FILE_CHUNK + 1]).body == content(FILE_CHUNK + 1)
    assert plain.sendfile_bytes() - before == FILE_CHUNK + 1


def test_pipelined_requests_after_files(plain, files):
    targets = [
        f"/file?path={files[MIB]}",
        f"/file?path={files[1]}&length=0",
        f"/file?path={files[FILE_CHUNK - 1]}",
        "/scope",
    ]
    with RawClient(plain.server.port) as client:
        client.send(b"".join(f"GET {t} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for t in targets))
        assert client.read_response().body == content(MIB)
        assert client.read_response().body == content(1)
        assert client.read_response().body == content(FILE_CHUNK - 1)
        assert client.read_response().status == 200


def test_sixteen_downloads_at_once(plain, files):
    results: dict[int, bool] = {}

    def fetch(index: int) -> None:
        size = [MIB, FILE_CHUNK + 1, BIG, 64 * KIB][index % 4]
        with RawClient(plain.server.port, timeout=60) as client:
            resp = get_file(client, files[size], chunked=index % 2 == 1)
            results[index] = resp.body == content(size)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert results == {i: True for i in range(16)}


def read_slowly(client: RawClient, size: int, pause: float) -> bytes:
    """The body of a Content-Length response, read in small bites with pauses."""
    head = client.read_head()
    assert head.status == 200
    assert head.header("content-length") == str(size).encode()
    body = bytearray(client.buffer)
    client.buffer.clear()
    while len(body) < size:
        data = client.sock.recv(min(128 * KIB, size - len(body)))
        assert data, f"closed after {len(body)} of {size} bytes"
        body += data
        time.sleep(pause)
    return bytes(body)


def test_slow_reader_gets_every_byte_within_the_write_timeout(plain, files):
    # The server's --timeout-write is 2 s: writes wait often, never that long.
    with RawClient(plain.server.port, rcvbuf=64 * KIB, timeout=60) as client:
        client.request("GET", f"/file?path={files[BIG]}")
        body = read_slowly(client, BIG, pause=0.005)
    assert hashlib.sha256(body).digest() == hashlib.sha256(content(BIG)).digest()
    plain.server.assert_alive()


def test_client_leaving_mid_file(plain, files):
    for _ in range(3):
        with RawClient(plain.server.port, rcvbuf=64 * KIB) as client:
            client.request("GET", f"/file?path={files[BIG]}")
            client.read_head()
            client.sock.recv(64 * KIB)
            client.abort()
    wait_for(lambda: plain.open_files(files[BIG]) == 0, message="file left open")
    with RawClient(plain.server.port) as client:
        assert get_file(client, files[MIB]).body == content(MIB)
    plain.server.assert_alive()


@pytest.mark.parametrize("cut", [4 * MIB, None], ids=["folio-aligned", "inside-a-queued-page"])
def test_file_truncated_while_sent(plain, files, tmp_path, cut):
    path = tmp_path / "shrinking.bin"
    shutil.copyfile(files[BIG], path)
    original = content(BIG)
    since = plain.server.stderr_offset()
    with RawClient(plain.server.port, rcvbuf=64 * KIB, timeout=20) as client:
        client.request("GET", f"/file?path={path}")
        head = client.read_head()
        assert head.header("content-length") == str(BIG).encode()
        while len(client.buffer) < 256 * KIB:
            client.buffer += client.sock.recv(64 * KIB)
        # Unaligned: inside the pages the server has queued on the socket, but not sent yet.
        cut = cut or len(client.buffer) + 100 * KIB + 123
        os.truncate(path, cut)
        body = client.read_until_closed()  # what the buffer held, then the rest
    # The response is always cut short, so the client cannot take it for the file.
    assert 256 * KIB <= len(body) < BIG, len(body)
    # sendfile queues references to the file's pages, not copies: truncating inside a page
    # still queued zeroes its tail in flight (see src/http/sendfile.rs). Up to the new end
    # of the file, and past it when the cut is on a page cache folio boundary (folios are at
    # most 2 MiB on x86-64 with 4 KiB pages), the bytes are the file's.
    exact = len(body) if cut == 4 * MIB else min(cut, len(body))
    assert body[:exact] == original[:exact], "bytes other than the file's were sent"
    plain.server.wait_for_stderr(r"the file became shorter while it was sent", since=since)
    with RawClient(plain.server.port) as client:
        assert get_file(client, files[MIB]).body == content(MIB)


def test_client_that_never_reads_is_closed_by_the_write_timeout(plain, files):
    since = plain.server.stderr_offset()
    with RawClient(plain.server.port, rcvbuf=4096, timeout=20) as client:
        client.request("GET", f"/file?path={files[BIG]}")
        started = time.monotonic()
        # Nothing read: the kernel's buffers fill, sendfile waits, then the server gives up.
        wait_for(
            lambda: "Response not read by" in plain.server.stderr(since),
            timeout=15,
            message="the stalled sendfile response was never timed out",
        )
        assert time.monotonic() - started >= 2
    wait_for(lambda: plain.open_files(files[BIG]) == 0, message="file left open")
    with RawClient(plain.server.port) as client:
        assert get_file(client, files[1]).body == content(1)


def test_unix_socket_uses_sendfile(files):
    uds = str(RUN_DIR / f"sendfile-{os.getpid()}.sock")
    served = Served(uds=uds)
    try:
        before = served.sendfile_bytes()
        with RawClient(uds=uds, timeout=30) as client:
            for size in (MIB, BIG):
                assert get_file(client, files[size], chunked=size == BIG).body == content(size)
        assert served.sendfile_bytes() - before == MIB + BIG
    finally:
        served.server.stop()


def tls_server(tmp_path) -> tuple[Served, ssl.SSLContext]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    served = Served("--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    return served, ctx


def tls_client(served: Served, ctx: ssl.SSLContext) -> RawClient:
    client = RawClient(served.server.port, timeout=30)
    client.sock = ctx.wrap_socket(client.sock, server_hostname="localhost")
    return client


def test_tls_keeps_the_read_path_byte_exact(files, tmp_path):
    served, ctx = tls_server(tmp_path)
    try:
        with tls_client(served, ctx) as client:
            for size in SIZES:
                for chunked in (False, True):
                    assert get_file(client, files[size], chunked).body == content(size)
        assert served.sendfile_bytes() == 0, "sendfile cannot work under TLS"
    finally:
        served.server.stop()


def test_read_path_memory_stays_bounded(plain, files):
    """6,000 downloads of a 1 MiB file by 64 HTTP/2 clients (h2c: the read path) leave RSS
    within 32 MiB of where it started, once the worker has given back what it may. The chunks
    were once allocated on the blocking pool's threads and freed on the I/O thread, and each
    idle pool thread (up to 512 of them) kept what was freed: +297 MB after this load."""
    if shutil.which("h2load") is None:
        pytest.skip("h2load (nghttp2-client) is not installed")
    url = f"http://127.0.0.1:{plain.server.port}/file?path={files[MIB]}"
    start = plain.server.rss_kib()
    for _ in range(2):
        load = subprocess.run(
            ["h2load", "-c64", "-m2", "-n3000", url], capture_output=True, text=True, timeout=120
        )
        assert "3000 succeeded, 0 failed" in load.stdout, load.stdout + load.stderr
    # The worker gives memory back once its last connection closes, at most once a second:
    # allow it 3 s (the idle pool threads that held the leak lived 10 s).
    deadline = time.monotonic() + 3
    while (grown := plain.server.rss_kib() - start) > 32 * 1024 and time.monotonic() < deadline:
        time.sleep(0.1)
    plain.server.assert_alive()
    assert grown <= 32 * 1024, f"RSS grew by {grown} KiB"


def test_strace_sees_sendfile(plain, files, tmp_path):
    """The kernel's view: the body goes out in sendfile(2) calls, not writev."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    log = tmp_path / "strace.log"
    pids = [arg for pid in _descendants(plain.server.pid) for arg in ("-p", str(pid))]
    tracer = subprocess.Popen(
        ["strace", "-f", "-e", "trace=sendfile", "-o", str(log), *pids],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        attached = tracer.stderr.readline()
        if "attached" not in attached:
            pytest.skip(f"strace cannot attach: {attached.strip()}")
        time.sleep(0.2)
        assert simple_get(plain.server.port, f"/file?path={files[MIB]}").body == content(MIB)
    finally:
        tracer.terminate()
        tracer.wait(10)
    sent = [int(n) for n in re.findall(r"sendfile\(\d+, \d+, .*\) = (\d+)", log.read_text())]
    assert sum(sent) == MIB, log.read_text()[-2000:]


def cached_pages(path: str) -> int:
    """How many of the file's pages are in the page cache (cachestat(2), Linux 6.5+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    stat = (ctypes.c_uint64 * 5)()
    whole = (ctypes.c_uint64 * 2)(0, 0)
    fd = os.open(path, os.O_RDONLY)
    try:
        done = libc.syscall(451, fd, ctypes.byref(whole), ctypes.byref(stat), 0)
    finally:
        os.close(fd)
    assert done == 0, f"cachestat: {os.strerror(ctypes.get_errno())} (Linux 6.5+ has it)"
    return stat[0]


def test_a_file_not_in_the_page_cache_is_read_not_sent_from_the_disk(plain, tmp_path):
    """sendfile on the I/O thread would wait for the disk, and every connection with it: a
    chunk whose pages are not all cached is read on the blocking pool (which caches it), so
    the first download of an evicted file is not all sendfile, and the second one is."""
    path = tmp_path / "cold.bin"
    size = 4 * MIB
    with open(path, "wb") as out:
        out.write(content(size))
        out.flush()
        os.fsync(out.fileno())
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    assert cached_pages(str(path)) == 0, "the file system keeps the file cached (tmpfs?)"
    before = plain.sendfile_bytes()
    assert simple_get(plain.server.port, f"/file?path={path}").body == content(size)
    cold = plain.sendfile_bytes() - before
    assert cold < size, "the evicted file went out with sendfile"
    assert cached_pages(str(path)) == size // os.sysconf("SC_PAGE_SIZE")
    before = plain.sendfile_bytes()
    assert simple_get(plain.server.port, f"/file?path={path}").body == content(size)
    assert plain.sendfile_bytes() - before == size
    print("sendfile bytes of the evicted file", cold)
