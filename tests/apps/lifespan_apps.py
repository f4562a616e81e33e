"""Small ASGI apps exercising the lifespan protocol."""

from __future__ import annotations

import os


async def _hello(send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def fail_startup(scope, receive, send):
    """Reports lifespan.startup.failed with the message "boom"."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "boom"})
        return
    await _hello(send, b"should never serve")


async def raise_in_startup(scope, receive, send):
    """Raises while handling lifespan.startup."""
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("startup exploded")
    await _hello(send, b"should never serve")


async def no_lifespan(scope, receive, send):
    """An app that does not support the lifespan protocol at all."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']!r}")
    await _hello(send, b"no lifespan here")


async def lifespan_events(scope, receive, send):
    """Writes every lifespan event to the file named by ASGI_TEST_EVENTS_FILE."""
    path = os.environ["ASGI_TEST_EVENTS_FILE"]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            with open(path, "a") as fh:
                fh.write(message["type"] + "\n")
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    with open(path, "a") as fh:
        fh.write("http.request\n")
    await _hello(send, b"events")


async def returns_on_lifespan(scope, receive, send):
    """Returns at once for any non-HTTP scope, without sending lifespan messages."""
    if scope["type"] != "http":
        return
    await _hello(send, b"returned on lifespan")
