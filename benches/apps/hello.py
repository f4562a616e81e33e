"""Raw ASGI "hello" app: 13 bytes, text/plain, content-length set.

Served from this directory as `hello:app`.
"""

from _lifespan import lifespan

BODY = b"Hello, world!"
CONTENT_LENGTH = str(len(BODY)).encode()


async def app(scope, receive, send):
    if scope["type"] == "http":
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
