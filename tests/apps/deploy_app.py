"""The app behind nginx in tests/test_deploy.py.

Every HTTP response is JSON naming the instance (``INSTANCE`` in the environment) and the
process, with what the proxy headers made of the request. ``GET /slow`` takes 0.2 s, so that
requests are in flight while an instance shuts down. ``GET /count`` says how many HTTP
requests the app has seen. A WebSocket echoes each text message prefixed with the instance.
"""

from __future__ import annotations

import asyncio
import json
import os

from _lifespan import lifespan

INSTANCE = os.environ.get("INSTANCE", "?")
SEEN = {"http": 0}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await websocket(receive, send)
        return
    SEEN["http"] += 1
    if scope["path"] == "/slow":
        await asyncio.sleep(0.2)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    body = json.dumps(
        {
            "instance": INSTANCE,
            "pid": os.getpid(),
            "path": scope["path"],
            "client": scope["client"][0] if scope.get("client") else None,
            "scheme": scope["scheme"],
            "host": headers.get("host"),
            "request_id": headers.get("x-request-id"),
            "forwarded_proto": headers.get("x-forwarded-proto"),
            "seen": SEEN["http"],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"x-instance", INSTANCE.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def websocket(receive, send):
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode()
        await send({"type": "websocket.send", "text": f"{INSTANCE}:{text}"})
