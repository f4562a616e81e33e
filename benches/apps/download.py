"""Raw ASGI app answering a 1 MiB body (one `http.response.body` message).

Served as `download:app`.
"""

from _lifespan import lifespan

BODY = b"x" * (1024 * 1024)
CONTENT_LENGTH = str(len(BODY)).encode()


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", CONTENT_LENGTH),
                ],
            }
        )
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
