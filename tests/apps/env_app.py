"""Answers with the value of ASGI_TEST_GREETING, read when the module is imported."""

from __future__ import annotations

import os

GREETING = os.environ.get("ASGI_TEST_GREETING", "<unset>")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = GREETING.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
