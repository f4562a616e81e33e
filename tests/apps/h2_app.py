"""ASGI app for the HTTP/2 tests (tests/test_http2.py).

- ``/``: ``hello``.
- ``/scope``: the scope's http_version, scheme, path, host header and extension names, as JSON.
- ``POST /echo``: the request body, sent back in pieces of 64 KiB.
- ``/stream?n=N``: N chunks ``chunk-i;``, one per loop turn, no Content-Length.
- ``/trailers``: a body and the trailers ``x-checksum`` and ``x-count``.
- ``/file?path=...``: ``http.response.pathsend`` of that file.
- ``/connection-headers``: a response with HTTP/1.1's connection-specific headers.
- ``/hold?id=X``: sends the head and a first chunk, then waits for ``http.disconnect``,
  which it records under X for ``/events``.
- ``/big?mib=N``: N MiB of zeros, in 64 KiB chunks.
- ``/slow?s=S``: answers ``done`` after S seconds.
- ``/events``: what ``/hold`` recorded, as JSON.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from _lifespan import lifespan

EVENTS: dict[str, str] = {}


def query(scope) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def read_body(receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def text(send, body: bytes, status: int = 200, headers=()) -> None:
    head = [(b"content-type", b"text/plain"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def scope_info(scope, send) -> None:
    host = dict(scope["headers"]).get(b"host", b"").decode()
    info = {
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "host": host,
        "extensions": sorted(scope.get("extensions") or {}),
    }
    await text(send, json.dumps(info).encode())


async def echo(receive, send) -> None:
    body = await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    step = 64 * 1024
    for start in range(0, len(body), step):
        piece = body[start : start + step]
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def stream(scope, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(int(query(scope).get("n", "5"))):
        await send({"type": "http.response.body", "body": b"chunk-%d;" % i, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b""})


async def trailers(send) -> None:
    head = {"type": "http.response.start", "status": 200, "headers": [], "trailers": True}
    await send(head)
    await send({"type": "http.response.body", "body": b"hello", "more_body": False})
    fields = [(b"x-checksum", b"abc123"), (b"x-count", b"2")]
    await send({"type": "http.response.trailers", "headers": fields, "more_trailers": False})


async def pathsend(scope, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.pathsend", "path": query(scope)["path"]})


async def hold(scope, receive, send) -> None:
    key = query(scope)["id"]
    EVENTS[key] = "holding"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first", "more_body": True})
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            EVENTS[key] = "disconnect"
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/scope":
        await scope_info(scope, send)
    elif path == "/echo":
        await echo(receive, send)
    elif path == "/stream":
        await stream(scope, send)
    elif path == "/trailers":
        await trailers(send)
    elif path == "/file":
        await pathsend(scope, send)
    elif path == "/connection-headers":
        extra = [(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5")]
        await text(send, b"fine", headers=[*extra, (b"transfer-encoding", b"chunked")])
    elif path == "/hold":
        await hold(scope, receive, send)
    elif path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = bytes(64 * 1024)
        for _ in range(int(query(scope)["mib"]) * 16):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/slow":
        await asyncio.sleep(float(query(scope).get("s", "1")))
        await text(send, b"done")
    elif path == "/events":
        await text(send, json.dumps(EVENTS).encode())
    else:
        await text(send, b"hello")
