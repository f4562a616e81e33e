"""FastAPI on rsgi and on uvicorn: the same requests, the same observable results."""

from __future__ import annotations

import hashlib
import random
import re
import threading

import httpx
import pytest
from differences import allowed
from harness import (
    Observed,
    Reply,
    both,
    compare,
    observe,
    reply_from_httpx,
    websocket_exchange,
)

FILE_SIZE = 100_000
UPLOAD = random.Random(5).randbytes(5 * 1024 * 1024)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    data = tmp_path_factory.mktemp("fastapi-data")
    (data / "data.bin").write_bytes(random.Random(1).randbytes(FILE_SIZE))
    (data / "static").mkdir()
    (data / "static" / "style.css").write_text("body { color: teal; }\n" * 50)
    with both("fastapi_compat:app", env={"COMPAT_DATA_DIR": str(data)}) as servers:
        yield servers


def get(server, path, **kwargs) -> httpx.Response:
    return httpx.request(kwargs.pop("method", "GET"), server.base_url + path, timeout=15, **kwargs)


@pytest.mark.timeout(60)
def test_middleware_background_tasks_under_keepalive_load(servers):
    """@app.middleware("http") + BackgroundTasks, 4 keep-alive clients x 50 requests."""

    def scenario(server, seen: Observed) -> None:
        replies: dict[int, Reply] = {}

        def client(start: int) -> None:
            with httpx.Client(base_url=server.base_url, timeout=15) as http:
                for n in range(start, 200, 4):
                    replies[n] = reply_from_httpx(http.get(f"/bg/{n}"))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
        seen.replies = [replies.get(n) for n in range(200)]
        # Background tasks run after the response; give them a moment, then ask once.
        threading.Event().wait(1.0)
        seen.effects["background tasks done"] = get(server, "/bg-done").json()

    observed = observe(servers, scenario)
    assert observed["uvicorn"].effects["background tasks done"]["distinct"] >= 200
    compare(observed)


REQUESTS = {
    "sync-def-route": ("GET", "/sync?x=21", {}),
    "lifespan-state": ("GET", "/state", {}),
    "exception-handler": ("GET", "/teapot", {}),
    "http-exception": ("GET", "/missing", {}),
    "unknown-route": ("GET", "/nope", {}),
    "method-not-allowed": ("DELETE", "/sync", {}),
    "validation-error": ("GET", "/sync?x=abc", {}),
    "streaming-response": ("GET", "/stream?n=20", {}),
    "file": ("GET", "/file", {}),
    "file-head": ("HEAD", "/file", {}),
    "file-range": ("GET", "/file", {"Range": "bytes=100-199"}),
    "file-open-range": ("GET", "/file", {"Range": "bytes=99000-"}),
    "file-suffix-range": ("GET", "/file", {"Range": "bytes=-10"}),
    "file-multi-range": ("GET", "/file", {"Range": "bytes=0-9,20-29"}),  # random boundary
    "file-bad-range": ("GET", "/file", {"Range": "bytes=200000-"}),
    "file-range-head": ("HEAD", "/file", {"Range": "bytes=0-9"}),
    "static": ("GET", "/static/style.css", {}),
    "static-head": ("HEAD", "/static/style.css", {}),
    "static-missing": ("GET", "/static/nope.css", {}),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(REQUESTS))
def test_request(servers, case):
    method, path, headers = REQUESTS[case]

    def scenario(server, seen: Observed) -> None:
        resp = get(server, path, method=method, headers=headers)
        reply = reply_from_httpx(resp)
        # Starlette draws a random multipart/byteranges boundary per response.
        boundary = re.search(r"boundary=(\w+)", resp.headers.get("content-type", ""))
        if boundary:
            token = boundary.group(1)
            reply.body = reply.body.replace(token.encode(), b"BOUNDARY")
            reply.headers = [(k, v.replace(token, "BOUNDARY")) for k, v in reply.headers]
        seen.replies.append(reply)

    compare(observe(servers, scenario))


@pytest.mark.timeout(30)
def test_static_if_none_match_304(servers):
    def scenario(server, seen: Observed) -> None:
        first = get(server, "/static/style.css")
        seen.replies.append(reply_from_httpx(first))
        again = get(server, "/static/style.css", headers={"If-None-Match": first.headers["etag"]})
        seen.replies.append(reply_from_httpx(again))
        seen.effects["304"] = again.status_code

    observed = observe(servers, scenario)
    assert observed["uvicorn"].effects["304"] == 304
    compare(observed)


@pytest.mark.timeout(30)
def test_unhandled_exception_is_500_and_logged(servers):
    def scenario(server, seen: Observed) -> None:
        seen.replies.append(reply_from_httpx(get(server, "/boom")))

    observed = observe(servers, scenario)
    for seen in observed.values():
        seen.effects["traceback logged"] = "RuntimeError: boom from the app" in seen.log
    compare(observed, expect_problems=True)


@pytest.mark.timeout(60)
def test_upload_file_5mib_multipart(servers):
    def scenario(server, seen: Observed) -> None:
        resp = get(server, "/upload", method="POST", files={"file": ("blob.bin", UPLOAD, "x/y")})
        seen.replies.append(reply_from_httpx(resp))

    observed = observe(servers, scenario)
    digest = hashlib.sha256(UPLOAD).hexdigest()
    expected = {"name": "blob.bin", "size": len(UPLOAD), "sha256": digest}
    assert observed["uvicorn"].replies[0].body == httpx.Response(200, json=expected).content
    compare(observed)


WEBSOCKETS = {
    "echo": ("/ws", ["hello", "wörld", "x" * 70_000]),
    "close-code": ("/ws", ["one", "close:4001"]),
    "close-normal": ("/ws", ["close:1000"]),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(WEBSOCKETS))
def test_websocket(servers, case):
    path, messages = WEBSOCKETS[case]

    def scenario(server, seen: Observed) -> None:
        seen.replies = websocket_exchange(server, path, messages)

    allowed("websocket-access-line")
    compare(observe(servers, scenario), access=False)


@pytest.mark.timeout(30)
def test_websocket_refused_handshake(servers):
    """A close before accept: both answer 403; compare the full HTTP response."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    def scenario(server, seen: Observed) -> None:
        try:
            connect(f"ws://127.0.0.1:{server.port}/ws-reject", open_timeout=10).close()
        except InvalidStatus as exc:
            r = exc.response
            headers = [(k.lower(), v) for k, v in r.headers.raw_items()]
            seen.replies.append(Reply(r.status_code, headers, bytes(r.body or b"")))

    allowed("websocket-access-line")
    compare(observe(servers, scenario), access=False)
