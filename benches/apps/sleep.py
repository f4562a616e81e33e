"""Raw ASGI app that waits 10 ms (asyncio.sleep) before answering `Hello, world!`.

Measures how many concurrent in-flight requests a server keeps moving (run at 512
connections: the ideal is 512 / 10 ms = 51.2k requests/s). Served as `sleep:app`.
"""

import asyncio

from _lifespan import lifespan

DELAY = 0.010
BODY = b"Hello, world!"
CONTENT_LENGTH = str(len(BODY)).encode()


async def app(scope, receive, send):
    if scope["type"] == "http":
        await asyncio.sleep(DELAY)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", CONTENT_LENGTH)],
            }
        )
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
