"""WebSocket: RFC 6455 handshake and framing, the ASGI websocket protocol, the --ws options.

Clients: the `websockets` library (sync API) and a raw-socket client (`RawWs`) for what a
conforming client cannot do: broken handshakes, unanswered pings, hand-made frames.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import signal
import struct
import time
import zlib

import pytest
from conftest import SERVER, RawClient, build_request, running_server, simple_get, wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

KEY = base64.b64encode(os.urandom(16)).decode()
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

rsgi_only = pytest.mark.rsgi_only


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def upgrade_headers(key: str | None = KEY, version: str | None = "13", extra=()):
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
    if key is not None:
        headers.append(("Sec-WebSocket-Key", key))
    if version is not None:
        headers.append(("Sec-WebSocket-Version", version))
    return headers + list(extra)


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class RawWs:
    """A WebSocket client over a plain socket: masked frames in, frames out, nothing automatic."""

    def __init__(
        self, port: int, path: str = "/echo", extra=(), timeout: float = 10.0, early: bytes = b""
    ):
        self.client = RawClient(port, timeout=timeout)
        # `early`: bytes sent in the same write as the request, before the 101 came back.
        request = build_request("GET", path, headers=upgrade_headers(extra=extra))
        self.client.send(request + early)
        self.response = self.client.read_head()
        assert self.response.status == 101, self.response.raw_head
        expected = base64.b64encode(hashlib.sha1(KEY.encode() + GUID).digest())
        assert self.response.header("sec-websocket-accept") == expected

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False):
        self.client.send(frame(opcode, payload, fin, rsv1))

    def read_frame(self, timeout: float = 10.0) -> tuple[bool, bool, int, bytes]:
        deadline = time.monotonic() + timeout
        b0, b1 = self.client._read_exact(2, deadline)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.client._read_exact(2, deadline))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.client._read_exact(8, deadline))
        payload = self.client._read_exact(n, deadline)
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload

    def read_close(self, timeout: float = 10.0) -> tuple[int | None, bytes]:
        """Reads frames until a close frame; returns its code (None if empty) and reason."""
        while True:
            _, _, opcode, payload = self.read_frame(timeout)
            if opcode == OP_CLOSE:
                if not payload:
                    return None, b""
                return struct.unpack("!H", payload[:2])[0], payload[2:]

    def close(self):
        self.client.close()


def report(server, key: str, wait: float = 5.0):
    return json.loads(simple_get(server.port, f"/report?id={key}&wait={wait}").body)


def ws_url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=-15).decompress(data + b"\x00\x00\xff\xff")


@pytest.fixture(scope="module")
def server():
    with running_server("ws_app:app") as s:
        yield s


@pytest.fixture(scope="module")
def tight_server():
    """Small limits and fast keep-alive pings."""
    with running_server(
        "ws_app:app",
        "--ws-max-size",
        "1024",
        "--ws-ping-interval",
        "0.2",
        "--ws-ping-timeout",
        "0.3",
    ) as s:
        yield s


# --------------------------------------------------------------------------------------
# handshake
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "version", "status"),
    [
        (None, "13", 400),
        ("not-base64!", "13", 400),
        (base64.b64encode(b"x" * 15).decode(), "13", 400),
        (KEY, None, 400),
        # uvicorn answers 400 here; RFC 6455 section 4.2.2 asks for 426.
        pytest.param(KEY, "8", 426, marks=rsgi_only),
    ],
    ids=["no-key", "bad-key", "short-key", "no-version", "version-8"],
)
def test_invalid_handshake_is_refused_before_the_app(server, key, version, status):
    before = json.loads(simple_get(server.port, "/count").body)
    with RawClient(server.port) as client:
        client.send(build_request("GET", "/echo", headers=upgrade_headers(key, version)))
        resp = client.read_response()
    assert resp.status == status, resp.raw_head
    if status == 426:
        assert resp.header("sec-websocket-version") == b"13"
    assert json.loads(simple_get(server.port, "/count").body) == before


@rsgi_only
def test_ws_none_serves_upgrade_as_plain_http():
    with running_server("ws_app:app", "--ws", "none") as s:
        with RawClient(s.port) as client:
            client.send(build_request("GET", "/echo", headers=upgrade_headers()))
            resp = client.read_response()
        assert resp.status == 200
        assert resp.body == b"http /echo"


@rsgi_only
def test_uvicorn_ws_values_are_accepted():
    with running_server("ws_app:app", "--ws", "wsproto") as s:
        with connect(ws_url(s, "/echo")) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"


# --------------------------------------------------------------------------------------
# the ASGI websocket protocol
# --------------------------------------------------------------------------------------


def test_echo_text_and_bytes(server):
    with connect(ws_url(server, "/echo"), compression=None) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"
        big = os.urandom(300_000)
        ws.send(big)
        assert ws.recv(timeout=5) == big
        ws.send("")
        assert ws.recv(timeout=5) == ""


def test_scope(server):
    with connect(
        ws_url(server, "/scope?a=1&b=%20"), subprotocols=["one", "two"], compression=None
    ) as ws:
        info = json.loads(ws.recv(timeout=5))
    scope = info["scope"]
    assert scope["type"] == "websocket"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["scheme"] == "ws"
    assert scope["http_version"] == "1.1"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", server.port]
    headers = dict(scope["headers"])
    assert headers["upgrade"] == "websocket"
    assert "sec-websocket-key" in headers
    assert info["headers_all_bytes"] and info["headers_pairs"]
    assert info["types"]["query_string"] == "bytes" and info["types"]["raw_path"] == "bytes"
    assert info["state_keys"] == ["counter", "shared_list"]
    assert "websocket.http.response" in scope["extensions"]


def test_subprotocol_and_accept_headers(server):
    with connect(
        ws_url(server, "/subprotocol"), subprotocols=["chat", "superchat"], compression=None
    ) as ws:
        assert ws.subprotocol == "superchat"
        assert json.loads(ws.recv(timeout=5)) == ["chat", "superchat"]
        assert ws.response.headers["x-extra"] == "yes"
        assert ws.response.headers.get_all("set-cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize(
    ("query", "code", "reason"),
    [("code=4001&reason=bye", 4001, "bye"), ("", 1000, "")],
    ids=["code-and-reason", "default"],
)
def test_app_close(server, query, code, reason):
    with connect(ws_url(server, f"/close?id=close-{code}&{query}")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == code
    assert info.value.rcvd.reason == reason
    # After its close, the app's receive() reports the client's answer.
    assert report(server, f"close-{code}")["type"] == "websocket.disconnect"


def test_client_close_code_and_reason_reach_the_app(server):
    with connect(ws_url(server, "/echo?id=client-close")) as ws:
        ws.send("x")
        ws.recv(timeout=5)
        ws.close(4002, "bye now")
    assert report(server, "client-close") == {
        "type": "websocket.disconnect",
        "code": 4002,
        "reason": "bye now",
    }


def test_close_frame_without_code_is_1005(server):
    ws = RawWs(server.port, "/echo?id=close-1005")
    try:
        ws.send_frame(OP_CLOSE)
        code, _ = ws.read_close()
        assert code is None, "an empty close frame is answered with an empty one"
        assert ws.client.closed_within(5), "the server closes the TCP connection"
    finally:
        ws.close()
    message = report(server, "close-1005")
    assert message["code"] == 1005


@rsgi_only
def test_connection_lost_is_1006(server):
    ws = RawWs(server.port, "/echo?id=lost")
    ws.send_frame(OP_TEXT, b"x")
    assert ws.read_frame()[3] == b"x"
    ws.client.abort()
    assert report(server, "lost")["code"] == 1006


def test_close_before_accept_is_403(server):
    with RawClient(server.port) as client:
        client.send(build_request("GET", "/reject?id=rejected", headers=upgrade_headers()))
        resp = client.read_response()
    assert resp.status == 403
    if SERVER == "rsgi":
        server.wait_for_stdout(r'"GET /reject\?id=rejected HTTP/1.1" 403')
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/reject"))
    assert info.value.response.status_code == 403
    assert report(server, "rejected")["type"] == "websocket.disconnect"


def test_http_response_extension_denies_with_a_real_response(server):
    with RawClient(server.port) as client:
        client.send(build_request("GET", "/deny", headers=upgrade_headers()))
        resp = client.read_response()
    assert resp.status == 401
    assert resp.body == b"no entry"
    assert resp.header("www-authenticate") == b"Token"


def test_send_after_disconnect_raises_oserror(server):
    with connect(ws_url(server, "/send-after-close?id=late-send")) as ws:
        ws.close()
    assert report(server, "late-send") == {"raised": "ClientDisconnected", "oserror": True}


def test_frames_sent_with_the_handshake_are_not_lost(server):
    early = frame(OP_TEXT, b"early") + frame(OP_BINARY, b"x" * 70_000)
    ws = RawWs(server.port, "/echo", early=early)
    try:
        assert ws.read_frame()[2:] == (OP_TEXT, b"early")
        assert ws.read_frame()[2:] == (OP_BINARY, b"x" * 70_000)
    finally:
        ws.close()


def test_fragmented_messages_are_reassembled(server):
    ws = RawWs(server.port, "/echo")
    try:
        ws.send_frame(OP_TEXT, b"frag", fin=False)
        ws.send_frame(OP_PING, b"between")  # control frames may come between fragments
        ws.send_frame(OP_CONT, b"ment", fin=False)
        ws.send_frame(OP_CONT, "ed é".encode())
        assert ws.read_frame() == (True, False, OP_PONG, b"between")
        assert ws.read_frame() == (True, False, OP_TEXT, "fragmented é".encode())
    finally:
        ws.close()
    with connect(ws_url(server, "/echo"), compression=None) as ws:
        ws.send([b"a" * 1000, b"b" * 1000, b"c"])
        assert ws.recv(timeout=5) == b"a" * 1000 + b"b" * 1000 + b"c"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ((OP_TEXT, b"\xff\xfe"), 1007),
        ((3, b"x"), 1002),
        ((OP_CONT, b"x"), 1002),
    ],
    ids=["invalid-utf8", "reserved-opcode", "continuation-first"],
)
def test_protocol_errors_fail_the_connection(server, frame, code):
    ws = RawWs(server.port, f"/echo?id=err-{code}")
    try:
        ws.send_frame(*frame)
        assert ws.read_close()[0] == code
        assert ws.client.closed_within(5)
    finally:
        ws.close()


# --------------------------------------------------------------------------------------
# limits, keep-alive, backpressure
# --------------------------------------------------------------------------------------


def test_max_size(tight_server):
    with connect(ws_url(tight_server, "/echo"), compression=None) as ws:
        ws.send(b"x" * 1024)
        assert ws.recv(timeout=5) == b"x" * 1024
        ws.send(b"x" * 1025)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd.code == 1009
    # Fragments count together.
    raw = RawWs(tight_server.port, "/echo")
    try:
        raw.send_frame(OP_BINARY, b"x" * 600, fin=False)
        raw.send_frame(OP_CONT, b"x" * 600)
        assert raw.read_close()[0] == 1009
    finally:
        raw.close()


@rsgi_only
def test_max_size_counts_decompressed_bytes(tight_server):
    ws = RawWs(
        tight_server.port, "/echo", extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]
    )
    try:
        compressed = deflate(b"a" * 5000)
        assert len(compressed) < 1024
        ws.send_frame(OP_BINARY, compressed, rsv1=True)
        assert ws.read_close()[0] == 1009
    finally:
        ws.close()


@rsgi_only
def test_keepalive_timeout_closes_with_1011(tight_server):
    ws = RawWs(tight_server.port, "/echo?id=dead-peer")
    try:
        fin, _, opcode, payload = ws.read_frame(timeout=5)
        assert opcode == OP_PING
        # No pong: the server gives up after the ping timeout.
        assert ws.read_close(timeout=5)[0] == 1011
        assert ws.client.closed_within(5)
    finally:
        ws.close()
    assert report(tight_server, "dead-peer")["code"] == 1011


@rsgi_only
def test_answered_pings_keep_the_connection_open(tight_server):
    ws = RawWs(tight_server.port, "/echo")
    try:
        for _ in range(4):  # well past one interval + timeout
            _, _, opcode, payload = ws.read_frame(timeout=5)
            assert opcode == OP_PING
            ws.send_frame(OP_PONG, payload)
        ws.send_frame(OP_TEXT, b"still here")
        while True:
            _, _, opcode, payload = ws.read_frame(timeout=5)
            if opcode != OP_PING:
                break
        assert (opcode, payload) == (OP_TEXT, b"still here")
    finally:
        ws.close()


def send_until_blocked(sock, data: memoryview, quiet: float) -> int:
    """Sends from `data` until the socket stays unwritable for `quiet` seconds."""
    sent = 0
    sock.setblocking(False)
    while sent < len(data):
        _, writable, _ = select.select([], [sock], [], quiet)
        if not writable:
            break
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            continue
    return sent


@rsgi_only
def test_incoming_backpressure_stops_reading(server):
    ws = RawWs(server.port, "/slow-reader?id=slow&n=600")
    try:
        wait_for(lambda: report(server, "slow", 0) == "accepted", message="not accepted")
        frames = bytearray()
        payload = b"y" * 65536
        for _ in range(600):
            mask = b"\x00\x00\x00\x00"
            frames += bytes([0x82, 0x80 | 127]) + struct.pack("!Q", len(payload)) + mask + payload
        data = memoryview(bytes(frames))
        sent = send_until_blocked(ws.client.sock, data, quiet=0.5)
        # 32 queued messages (2 MiB) + the read buffer + the kernel's socket buffers (a few
        # MiB each way): far less than the 37.5 MiB offered.
        assert sent < 16 * 2**20, f"server kept reading: {sent} of {len(data)} bytes taken"
        simple_get(server.port, "/release?id=slow")
        rest = send_until_blocked(ws.client.sock, data[sent:], quiet=5)
        assert sent + rest == len(data)
        ws.client.sock.setblocking(True)
        _, _, opcode, body = ws.read_frame(timeout=10)
        assert opcode == OP_TEXT and json.loads(body) == [65536] * 600
    finally:
        ws.close()


@rsgi_only
def test_outgoing_backpressure_suspends_send(server):
    ws = RawWs(server.port, "/flood?id=flood&n=1000&size=65536")
    try:

        def stalled():
            first = report(server, "flood", 0)
            second = report(server, "flood", 0)
            return first is not None and first == second and report(server, "flood", 0) == first

        wait_for(stalled, timeout=10, interval=0.2, message="send() never suspended")
        count = report(server, "flood", 0)
        assert count < 300, f"{count} x 64 KiB queued for a client that reads nothing"
        total = 0
        for _ in range(1000):
            _, _, opcode, payload = ws.read_frame(timeout=10)
            assert opcode == OP_BINARY
            total += len(payload)
        assert total == 1000 * 65536
        assert report(server, "flood-done") == 1000
    finally:
        ws.close()


# --------------------------------------------------------------------------------------
# permessage-deflate
# --------------------------------------------------------------------------------------


def test_deflate_with_websockets_client(server):
    with connect(ws_url(server, "/echo")) as ws:
        assert ws.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
        text = "compress me " * 10_000
        for _ in range(3):
            ws.send(text)
            assert ws.recv(timeout=5) == text


@rsgi_only
@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate; client_max_window_bits", b"permessage-deflate"),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            b"permessage-deflate; server_max_window_bits=10",
        ),
        ("permessage-deflate; bogus, permessage-deflate", b"permessage-deflate"),
        ("x-webkit-deflate-frame", None),
    ],
)
def test_deflate_negotiation(server, offer, answer):
    ws = RawWs(server.port, "/echo", extra=[("Sec-WebSocket-Extensions", offer)])
    try:
        assert ws.response.header("sec-websocket-extensions") == answer
        message = b"abcabcabc" * 200
        if answer is None:
            ws.send_frame(OP_BINARY, message)
            assert ws.read_frame()[1:] == (False, OP_BINARY, message)
            return
        for _ in range(2):
            ws.send_frame(OP_BINARY, deflate(message), rsv1=True)
            _, rsv1, opcode, payload = ws.read_frame()
            assert rsv1 and opcode == OP_BINARY
            # Each reply decompresses on its own: a fresh decompressor per message works
            # when the server resets its context, and for the first message in any case.
            if b"server_no_context_takeover" in answer:
                assert inflate(payload) == message
        assert len(payload) < len(message) // 4
    finally:
        ws.close()


# --------------------------------------------------------------------------------------
# graceful shutdown, app errors
# --------------------------------------------------------------------------------------


@rsgi_only
def test_graceful_shutdown_closes_with_1012_after_in_flight_messages(tmp_path):
    marker = tmp_path / "disconnect.json"
    with running_server(
        "ws_app:app", "--no-ws-per-message-deflate", env={"WS_TEST_DISCONNECT_FILE": str(marker)}
    ) as s:
        with connect(ws_url(s, "/burst?id=burst&n=200"), max_queue=None) as ws:
            assert "sec-websocket-extensions" not in ws.response.headers
            ws.send("go")
            assert report(s, "burst") == "sent"
            s.signal(signal.SIGTERM)
            received = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    received.append(ws.recv(timeout=10))
        assert received == [str(i) for i in range(200)] + ["sent"]
        assert info.value.rcvd.code == 1012
        assert s.wait_exit(15) == (0 if SERVER == "rsgi" else s.proc.returncode)
    assert json.loads(marker.read_text())["code"] == 1012


def test_app_without_handshake_gets_500(server):
    for path in ("/no-handshake", "/raise"):
        with RawClient(server.port) as client:
            client.send(build_request("GET", path, headers=upgrade_headers()))
            assert client.read_response().status == 500, path


@rsgi_only
def test_app_error_after_accept_closes_with_1011(server):
    with connect(ws_url(server, "/raise?after=accept")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1011


def test_send_before_accept_is_a_runtime_error(server):
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/bad-message?id=bad"))
    assert info.value.response.status_code == 403
    assert "websocket.accept" in report(server, "bad")


# --------------------------------------------------------------------------------------
# FastAPI
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastapi_server():
    with running_server("ws_fastapi:app") as s:
        yield s


def test_fastapi_iter_text(fastapi_server):
    with connect(ws_url(fastapi_server, "/ws/echo")) as ws:
        for word in ("one", "two", "ünï"):
            ws.send(word)
            assert ws.recv(timeout=5) == f"echo: {word}"


def test_fastapi_send_json_and_disconnect_code(fastapi_server):
    with connect(ws_url(fastapi_server, "/ws/json")) as ws:
        ws.send(json.dumps([1, 2, 3]))
        assert json.loads(ws.recv(timeout=5)) == {"got": [1, 2, 3], "count": 3}
        ws.close(4100)
    wait_for(
        lambda: 4100 in json.loads(simple_get(fastapi_server.port, "/disconnects").body),
        message="WebSocketDisconnect(4100) not seen by the route",
    )


def test_fastapi_dependency_injection_and_close_code(fastapi_server):
    with connect(ws_url(fastapi_server, "/ws/items/7?token=secret"), subprotocols=["v1"]) as ws:
        assert ws.subprotocol == "v1"
        assert json.loads(ws.recv(timeout=5)) == {"item_id": 7, "token": "secret"}
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "done")


def test_fastapi_dependency_rejects_before_accept(fastapi_server):
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(fastapi_server, "/ws/items/7"))
    assert info.value.response.status_code == 403


def test_fastapi_bytes(fastapi_server):
    with connect(ws_url(fastapi_server, "/ws/bytes")) as ws:
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=5) == b"\x03\x02\x01"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd.code == 1000


# --------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------


@rsgi_only
def test_ws_options_from_cli_and_environment():
    from rsgi.config import Config, ConfigError

    config = Config.from_argv(
        ["app:app", "--ws", "WebSockets", "--ws-max-size", "1024", "--ws-ping-interval", "0"],
        environ={"RSGI_WS_MAX_QUEUE": "8", "RSGI_WS_PER_MESSAGE_DEFLATE": "false"},
    )
    assert config.ws == "websockets"
    assert (config.ws_max_size, config.ws_max_queue) == (1024, 8)
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (0.0, 20.0)
    assert config.ws_per_message_deflate is False
    defaults = Config(app="app:app")
    assert (defaults.ws, defaults.ws_max_size, defaults.ws_max_queue) == ("auto", 16 * 2**20, 32)
    assert (defaults.ws_ping_interval, defaults.ws_ping_timeout) == (20.0, 20.0)
    assert defaults.ws_per_message_deflate is True
    assert Config(app="app:app", ws_ping_timeout=None).ws_ping_timeout is None
    for bad in ({"ws": "tornado"}, {"ws_max_size": 0}, {"ws_ping_interval": -1}):
        with pytest.raises(ConfigError):
            Config(app="app:app", **bad)


@rsgi_only
def test_wss_over_tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "chain.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    keyfile.write_bytes(cert.private_key_pem.bytes())
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    args = ("--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile))
    with running_server("ws_app:app", *args) as s:
        url = f"wss://127.0.0.1:{s.port}/scope"
        with connect(url, ssl=ctx, server_hostname="127.0.0.1") as ws:
            scope = json.loads(ws.recv(timeout=5))["scope"]
            assert scope["scheme"] == "wss"
            assert "tls" in scope["extensions"]
            assert "websocket.http.response" in scope["extensions"]
            big = "é" * 100_000
            ws.send(big)
            assert ws.recv(timeout=5) == big
