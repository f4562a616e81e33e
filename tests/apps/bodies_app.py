"""Bodies of every size and buffer type, both ways (issue 17).

- ``POST /echo?kind=bytes|bytearray|memoryview&chunk=N``: reads the whole request body and
  sends it back as that type, in pieces of N bytes (default: one message);
- ``GET /mutated``: sends a ``bytearray`` with ``more_body``, then overwrites it before the
  next message: the client must still get what was sent;
- ``GET /shared``: the same module-level 1 MiB ``bytes`` object for every request;
- ``GET /fresh``: a new 1 MiB ``bytes`` object per request, every page of it written;
- ``POST /count``: reads the body piece by piece, keeping none, and answers its length.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

from _lifespan import lifespan

MIB = 1024 * 1024
SHARED = bytes(range(256)) * (MIB // 256)
KINDS = {"bytes": bytes, "bytearray": bytearray, "memoryview": lambda b: memoryview(bytearray(b))}


async def read_body(receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def echo(scope, receive, send) -> None:
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    body = await read_body(receive)
    make = KINDS[query.get("kind", "bytes")]
    chunk = int(query.get("chunk", "0")) or max(len(body), 1)
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    for n, piece in enumerate(pieces):
        more = n < len(pieces) - 1
        await send({"type": "http.response.body", "body": make(piece), "more_body": more})


async def count(receive, send) -> None:
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await answer(send, str(size).encode())


async def mutated(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    buffer = bytearray(b"a" * 100_000)
    await send({"type": "http.response.body", "body": buffer, "more_body": True})
    buffer[:] = b"b" * 100_000
    await send({"type": "http.response.body", "body": b"end"})


async def answer(send, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["path"] == "/echo":
        await echo(scope, receive, send)
    elif scope["path"] == "/count":
        await count(receive, send)
    elif scope["path"] == "/mutated":
        await mutated(send)
    elif scope["path"] == "/shared":
        await answer(send, SHARED)
    elif scope["path"] == "/fresh":
        await answer(send, os.urandom(16) * (MIB // 16))
