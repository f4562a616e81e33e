"""A raw ASGI app for protocol-level comparisons; side effects are read back at /effects."""

from __future__ import annotations

import asyncio
import json

effects: dict[str, str] = {}


async def body_of(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def reply(send, status: int, body: bytes, headers=()) -> None:
    start = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start + list(headers)})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/effects":
        await reply(send, 200, json.dumps(effects, sort_keys=True).encode())
    elif path == "/late":
        # All Content-Length bytes with more_body, then the closing empty body later,
        # as Starlette's http middleware does; then work after the last send().
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await asyncio.sleep(0.05)
        try:
            await send({"type": "http.response.body", "body": b""})
            effects["late"] = "closing send returned"
        except Exception as exc:
            effects["late"] = f"closing send raised {type(exc).__name__}"
        await asyncio.sleep(0.01)
        effects["late-after"] = "ran"
    elif path == "/no-body":
        status = int(scope["query_string"].decode().partition("=")[2] or 204)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/after-disconnect":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x/y")]}
        )
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        try:
            await send({"type": "http.response.body", "body": b"late", "more_body": True})
            effects["send after disconnect"] = "returned"
        except OSError as exc:
            effects["send after disconnect"] = f"raised {type(exc).__name__} (OSError)"
    else:
        body = await body_of(receive)
        text = f"{scope['method']} {path} {scope['http_version']} body={body!r}"
        await reply(send, 200, text.encode())
