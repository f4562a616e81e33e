"""HTTP/2 (issue 20): h2 over TLS (ALPN) and h2c with prior knowledge, with real clients.

httpx (``http2=True``), curl (``--http2`` over TLS, ``--http2-prior-knowledge``), h2load for a
short load, and a raw client built on the ``h2`` package for what the others cannot do:
resetting a stream, reading trailers, and the abuse HTTP/2 servers met in the wild (rapid
reset, CONTINUATION and PING floods, HPACK bombs, idle connections).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time

import httpx
import pytest
from conftest import (
    IO_TIMEOUT,
    RawClient,
    free_port,
    running_server,
    start_server,
    wait_for,
)

h2_connection = pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402
import hpack  # noqa: E402
import hyperframe.frame  # noqa: E402

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.rsgi_only

APP = "h2_app:app"
HOSTNAME = "localhost"
MIB = 1024 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Pki:
    """A test CA and the server's certificate."""

    def __init__(self, directory) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert(HOSTNAME, "127.0.0.1")
        self.certfile = str(directory / "chain.pem")
        self.keyfile = str(directory / "key.pem")
        self.cafile = str(directory / "ca.pem")
        cert.private_key_pem.write_to_path(self.keyfile)
        with open(self.certfile, "wb") as out:
            out.write(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        self.ca.cert_pem.write_to_path(self.cafile)

    def args(self, *extra: str) -> tuple[str, ...]:
        return ("--ssl-certfile", self.certfile, "--ssl-keyfile", self.keyfile, *extra)

    def context(self, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        ctx.set_alpn_protocols(alpn)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def h2c_server():
    server = start_server(APP, "--timeout-keep-alive", "30")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_server(pki):
    server = start_server(APP, *pki.args())
    yield server
    server.stop()


def h2c(server) -> httpx.Client:
    """httpx speaking HTTP/2 with prior knowledge on plain TCP."""
    return httpx.Client(base_url=server.base_url, http1=False, http2=True, timeout=IO_TIMEOUT)


def https(server, pki: Pki) -> httpx.Client:
    ctx = ssl.create_default_context()
    pki.ca.configure_trust(ctx)
    url = f"https://{HOSTNAME}:{server.port}"
    return httpx.Client(base_url=url, http2=True, verify=ctx, timeout=IO_TIMEOUT)


class H2Client:
    """One HTTP/2 connection driven frame by frame with the ``h2`` package."""

    def __init__(self, port: int, settings: dict | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2_connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings or {})
        self.conn.initiate_connection()
        self.flush()
        self.closed = False
        self.heads: dict[int, dict[str, str]] = {}
        self.bodies: dict[int, bytearray] = {}
        self.trailers: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self, path: str, method: str = "GET", body: bytes | None = None, length: bool = False
    ) -> int:
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":path", path),
            (":scheme", "http"),
            (":authority", "localhost"),
        ]
        if length:
            headers.append(("content-length", str(len(body or b""))))
        self.conn.send_headers(stream, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(stream, body, end_stream=True)
        self.flush()
        return stream

    def pump(self, timeout: float = IO_TIMEOUT) -> bool:
        """Reads and handles what arrives within ``timeout``; False once the server closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self.handle(event)
        self.flush()
        return True

    def handle(self, event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.heads[event.stream_id] = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers[event.stream_id] = dict(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.remote_settings[code] = change.new_value

    def wait(self, predicate, timeout: float = IO_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting on the HTTP/2 connection"
            if not self.pump(min(left, 0.5)) and not predicate():
                raise AssertionError("the server closed the connection")

    def response(self, stream: int) -> tuple[dict[str, str], bytes]:
        self.wait(lambda: stream in self.ended or stream in self.resets)
        return self.heads.get(stream, {}), bytes(self.bodies.get(stream, b""))

    def close(self) -> None:
        self.sock.close()


# -- the protocol, the scope and the versions -------------------------------------------


def test_h2c_scope(h2c_server):
    with h2c(h2c_server) as client:
        resp = client.get("/scope")
    assert resp.http_version == "HTTP/2"
    info = resp.json()
    assert info["http_version"] == "2"
    assert info["scheme"] == "http"
    assert info["host"] == f"127.0.0.1:{h2c_server.port}"
    assert "http.response.trailers" in info["extensions"]


def test_tls_alpn_h2_scope(tls_server, pki):
    with https(tls_server, pki) as client:
        resp = client.get("/scope")
    assert resp.http_version == "HTTP/2"
    info = resp.json()
    assert (info["http_version"], info["scheme"]) == ("2", "https")
    assert "tls" in info["extensions"]


def test_http1_is_still_served_beside_h2(h2c_server, tls_server, pki):
    resp = httpx.get(h2c_server.base_url + "/scope", timeout=IO_TIMEOUT)
    assert (resp.http_version, resp.json()["http_version"]) == ("HTTP/1.1", "1.1")
    ctx = pki.context(["http/1.1"])
    with httpx.Client(verify=ctx, timeout=IO_TIMEOUT) as client:
        resp = client.get(f"https://{HOSTNAME}:{tls_server.port}/scope")
    assert resp.json()["http_version"] == "1.1"


def alpn_chosen(port: int, ctx: ssl.SSLContext) -> str | None:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            return tls.selected_alpn_protocol()


def test_http_1_offers_no_h2(pki):
    with running_server(APP, *pki.args("--http", "1")) as server:
        assert alpn_chosen(server.port, pki.context(["h2", "http/1.1"])) == "http/1.1"
    with running_server(APP, "--http", "1") as server:
        # The preface is an HTTP/1.1 request, refused.
        with RawClient(server.port) as raw:
            raw.send(PREFACE)
            answer = raw.read_until_closed(timeout=5)
            assert answer.startswith(b"HTTP/1.1 ") and not answer.startswith(b"HTTP/1.1 2")


def test_http_2_serves_only_h2(pki):
    with running_server(APP, *pki.args("--http", "2")) as server:
        assert alpn_chosen(server.port, pki.context(["h2", "http/1.1"])) == "h2"
        with pytest.raises(ssl.SSLError):
            alpn_chosen(server.port, pki.context(["http/1.1"]))
    with running_server(APP, "--http", "2") as server:
        with h2c(server) as client:
            assert client.get("/").text == "hello"


# -- ASGI over HTTP/2 -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["h2c", "tls"])
@pytest.mark.parametrize("size", [0, 1, 1000, 65_535, 300_000, MIB])
def test_bodies_both_ways(request, transport, size, pki):
    if transport == "h2c":
        client = h2c(request.getfixturevalue("h2c_server"))
    else:
        client = https(request.getfixturevalue("tls_server"), pki)
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with client:
        resp = client.post("/echo", content=body)
    assert (resp.status_code, resp.http_version) == (200, "HTTP/2")
    assert resp.content == body


def test_streamed_request_body_over_tls(tls_server, pki):
    def chunks():
        for i in range(64):
            yield bytes([i]) * 16384

    with https(tls_server, pki) as client:
        resp = client.post("/echo", content=chunks())
    assert resp.content == b"".join(chunks())


def test_streaming_response(h2c_server):
    with h2c(h2c_server) as client:
        with client.stream("GET", "/stream?n=200") as resp:
            pieces = list(resp.iter_bytes())
    assert b"".join(pieces) == b"".join(b"chunk-%d;" % i for i in range(200))


def test_trailers(h2c_server):
    client = H2Client(h2c_server.port)
    stream = client.request("/trailers")
    head, body = client.response(stream)
    client.close()
    assert (head[":status"], body) == ("200", b"hello")
    assert client.trailers[stream] == {"x-checksum": "abc123", "x-count": "2"}


def test_pathsend(h2c_server, tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 2000
    path.write_bytes(data)
    with h2c(h2c_server) as client:
        resp = client.get("/file", params={"path": str(path)})
    assert resp.content == data


def test_connection_specific_headers_are_dropped(h2c_server):
    with h2c(h2c_server) as client:
        resp = client.get("/connection-headers")
    assert (resp.status_code, resp.text) == (200, "fine")
    for name in ("connection", "keep-alive", "transfer-encoding"):
        assert name not in resp.headers


def test_client_reset_is_a_disconnect(h2c_server):
    client = H2Client(h2c_server.port)
    stream = client.request("/hold?id=reset")
    client.wait(lambda: client.bodies.get(stream) == bytearray(b"first"))
    client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
    client.flush()
    with h2c(h2c_server) as other:
        wait_for(lambda: other.get("/events").json().get("reset") == "disconnect")
        # The connection goes on serving other streams.
        again = client.request("/")
        assert client.response(again)[1] == b"hello"
    client.close()


def test_many_streams_at_once(h2c_server):
    client = H2Client(h2c_server.port)
    streams = [client.request(f"/stream?n={i}") for i in range(50)]
    for i, stream in enumerate(streams):
        assert client.response(stream)[1] == b"".join(b"chunk-%d;" % j for j in range(i))
    client.close()


def test_body_limit_is_per_stream(server_factory):
    server = server_factory(APP, "--limit-request-body", "1000")
    client = H2Client(server.port)
    declared = client.request("/echo", "POST", b"a" * 2000, length=True)
    undeclared = client.request("/echo", "POST", b"a" * 2000)
    small = client.request("/echo", "POST", b"b" * 1000)
    assert client.response(declared)[0][":status"] == "413"
    assert client.response(undeclared)[0][":status"] == "413"
    head, body = client.response(small)
    assert (head[":status"], body) == ("200", b"b" * 1000)
    client.close()
    with h2c(server) as httpx_client:

        def streamed():
            yield b"c" * 800
            yield b"c" * 800

        assert httpx_client.post("/echo", content=streamed()).status_code == 413


def test_concurrency_limit_is_per_stream(server_factory):
    server = server_factory(APP, "--limit-concurrency", "1")
    client = H2Client(server.port)
    held = client.request("/hold?id=limit")
    client.wait(lambda: held in client.bodies)
    refused = client.request("/")
    assert client.response(refused)[0][":status"] == "503"
    client.close()


def test_too_many_header_fields_is_431(server_factory):
    server = server_factory(APP, "--limit-request-fields", "10")
    with h2c(server) as client:
        headers = {f"x-field-{i}": "v" for i in range(20)}
        assert client.get("/", headers=headers).status_code == 431
        assert client.get("/").status_code == 200


def test_header_list_past_the_bound_is_431(server_factory):
    # 40 fields of 200 bytes: an 8000-byte list for HPACK (which counts 32 more per field),
    # and h2 answers 431 past it; each field and their count are within the limits.
    server = server_factory(
        APP, "--limit-request-fields", "40", "--limit-request-field-size", "200"
    )
    with h2c(server) as client:
        headers = {f"x-{i:02}": "v" * 190 for i in range(36)}
        assert client.get("/", headers=headers).status_code == 431
        assert client.get("/", headers={"x-long": "v" * 300}).status_code == 431
        assert client.get("/").status_code == 200


def test_metrics_count_streams(server_factory):
    metrics_port = free_port()
    server = server_factory(APP, "--metrics-bind", f"127.0.0.1:{metrics_port}")
    client = H2Client(server.port)
    for stream in [client.request("/") for _ in range(5)]:
        client.response(stream)
    reset = client.request("/hold?id=metrics")
    client.wait(lambda: reset in client.bodies)
    client.conn.reset_stream(reset, h2.errors.ErrorCodes.CANCEL)
    client.flush()
    client.close()
    # The reset stream counts too: its 200 head went out.
    done = ("rsgi_requests_total", (("status", "2xx"),))
    wait_for(lambda: scrape(metrics_port).get(done) == 6)
    assert scrape(metrics_port)[("rsgi_requests_in_flight", ())] == 0


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    parser = pytest.importorskip("prometheus_client.parser")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=IO_TIMEOUT).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_access_line(server_factory):
    server = server_factory(APP)
    with h2c(server) as client:
        client.get("/scope")
    server.wait_for_stdout(r'"GET /scope HTTP/2" 200')


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_graceful_shutdown_lets_an_open_stream_finish(server_factory):
    # curl, not the h2 package: that one takes no frame after a GOAWAY, not even the rest
    # of the streams the GOAWAY lets finish.
    server = server_factory(APP)
    open_stream_finishes(server, signal.SIGTERM)
    assert server.wait_exit(10) == 0


def open_stream_finishes(server, signum: int) -> None:
    """A stream open at `signum` is answered, and an idle connection gets GOAWAY (no error)
    and is closed although it never answers the server's PING."""
    url = server.base_url + "/slow?s=1.5"
    curl = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", url], stdout=subprocess.PIPE)
    idle = raw_h2(server.port)
    time.sleep(0.5)
    server.signal(signum)
    out, _ = curl.communicate(timeout=20)
    assert out == b"done"
    assert goaway_code(read_until_closed(idle, 5)) == h2.errors.ErrorCodes.NO_ERROR
    idle.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_reload_lets_an_open_stream_finish(server_factory):
    """A reload (SIGHUP to the master) stops the old worker as a shutdown does: GOAWAY, and
    the stream under way is answered; the new worker serves HTTP/2."""
    server = server_factory(APP, "--workers", "2")
    # Both workers up: a worker still booting ends at the signal, as on HTTP/1.1.
    server.wait_for_stderr(r"(?s)(Application startup complete.*){2}", timeout=15)
    served_after(server)
    open_stream_finishes(server, signal.SIGHUP)
    served_after(server)


def test_max_concurrent_streams_setting(server_factory):
    server = server_factory(APP, "--h2-max-concurrent-streams", "7")
    client = H2Client(server.port)
    client.wait(lambda: h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in client.remote_settings)
    assert client.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    client.close()


# -- real clients -------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http2_over_tls(tls_server, pki):
    url = f"https://{HOSTNAME}:{tls_server.port}/scope"
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", pki.cafile, "-w", "\n%{http_version}", url],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    assert json.loads(body)["http_version"] == "2"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http2_prior_knowledge(h2c_server):
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-d", "x" * 5000, h2c_server.base_url + "/echo"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    assert out == b"x" * 5000


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_all_2xx(h2c_server):
    result = subprocess.run(
        ["h2load", "-n", "3000", "-c", "8", "-m", "16", h2c_server.base_url + "/"],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3000 2xx, 0 3xx, 0 4xx, 0 5xx" in result.stdout, result.stdout
    assert "3000 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout


# -- abuse --------------------------------------------------------------------------------


def frame_bytes(frame) -> bytes:
    return frame.serialize()


def raw_h2(port: int) -> socket.socket:
    """A socket that has sent the preface and empty SETTINGS, nothing else."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.sendall(PREFACE + hyperframe.frame.SettingsFrame(0).serialize())
    return sock


def headers_block(path: str = "/") -> bytes:
    fields = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
    return hpack.Encoder().encode(fields)


def served_after(server) -> None:
    server.assert_alive()
    with h2c(server) as client:
        assert client.get("/").text == "hello"


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes, within ``timeout``; fails if it does not."""
    sock.settimeout(timeout)
    got = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return bytes(got)
        except TimeoutError:
            break
        if not data:
            return bytes(got)
        got.extend(data)
    raise AssertionError("the server did not close the connection")


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY frame in ``data``."""
    offset = 0
    while offset + 9 <= len(data):
        frame, length = hyperframe.frame.Frame.parse_frame_header(
            memoryview(data[offset : offset + 9])
        )
        body = data[offset + 9 : offset + 9 + length]
        if isinstance(frame, hyperframe.frame.GoAwayFrame) and len(body) >= 8:
            return int.from_bytes(body[4:8], "big")
        offset += 9 + length
    return None


def test_rapid_reset_closes_the_connection(h2c_server):
    sock = raw_h2(h2c_server.port)
    block = headers_block()
    burst = bytearray()
    for stream in range(1, 2001, 2):
        burst += hyperframe.frame.HeadersFrame(stream, block, flags=["END_HEADERS"]).serialize()
        burst += hyperframe.frame.RstStreamFrame(stream, error_code=8).serialize()
    try:
        sock.sendall(burst)
    except (ConnectionResetError, BrokenPipeError):
        pass
    data = read_until_closed(sock, 10)
    sock.close()
    # h2 counts the streams reset before hyper took them, and gives up after 20.
    assert goaway_code(data) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    served_after(h2c_server)


def test_continuation_flood_closes_the_connection(h2c_server):
    sock = raw_h2(h2c_server.port)
    sock.sendall(hyperframe.frame.HeadersFrame(1, headers_block()).serialize())
    junk = hpack.Encoder().encode([("x-flood", "a" * 1000)] * 16)
    sent = 0
    try:
        for _ in range(2000):
            sock.sendall(hyperframe.frame.ContinuationFrame(1, junk).serialize())
            sent += len(junk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    data = read_until_closed(sock, 10)
    sock.close()
    assert sent < 2000 * len(junk), "the whole flood was taken"
    assert goaway_code(data) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    served_after(h2c_server)


def test_hpack_bomb_is_refused(h2c_server):
    client = H2Client(h2c_server.port)
    stream = client.conn.get_next_available_stream_id()
    # One 4 KiB field, then references to it: a few bytes each on the wire, 4 KiB decoded.
    bomb = [("x-bomb", "b" * 4000)] * 200
    fields = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    client.conn.send_headers(stream, fields + bomb, end_stream=True)
    client.flush()
    client.wait(lambda: stream in client.resets or stream in client.heads or client.closed)
    # 800 KB decoded, far past the 64 KiB list: h2 closes the connection (a list just past
    # the bound gets 431).
    refused = client.heads.get(stream, {}).get(":status") == "431"
    calmed = client.goaway is not None and client.goaway.error_code == 11
    assert refused or calmed, (client.heads, client.goaway)
    client.close()
    served_after(h2c_server)


def test_ping_and_settings_floods_stay_bounded(h2c_server):
    before = h2c_server.rss_kib()
    sock = raw_h2(h2c_server.port)
    ping = hyperframe.frame.PingFrame(0, opaque_data=b"12345678").serialize()
    settings = hyperframe.frame.SettingsFrame(0, settings={4: 65535}).serialize()
    burst = (ping + settings) * 5000
    sent = 0
    sock.settimeout(2)
    try:
        # The client never reads: the server's answers back up, and it must stop reading
        # (or close) rather than queue them without end.
        for _ in range(200):
            sock.sendall(burst)
            sent += len(burst)
    except (TimeoutError, ConnectionResetError, BrokenPipeError):
        pass
    grown = h2c_server.rss_kib() - before
    sock.close()
    assert grown < 32 * 1024, f"RSS grew by {grown} KiB after {sent} bytes of PING/SETTINGS"
    served_after(h2c_server)


def test_idle_connection_is_closed_after_keep_alive(server_factory):
    server = server_factory(APP, "--timeout-keep-alive", "1")
    sock = raw_h2(server.port)
    started = time.monotonic()
    assert goaway_code(read_until_closed(sock, 5)) == h2.errors.ErrorCodes.NO_ERROR
    assert time.monotonic() - started >= 0.8
    sock.close()


def test_zero_window_client_is_bounded(server_factory):
    """A client that opens no window: the app's send() suspends, memory stays bounded."""
    server = server_factory(APP)
    before = server.rss_kib()
    client = H2Client(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    stream = client.request("/big?mib=64")
    client.wait(lambda: stream in client.heads)
    time.sleep(1.5)
    assert server.rss_kib() - before < 48 * 1024
    assert stream not in client.ended
    client.close()
    served_after(server)
