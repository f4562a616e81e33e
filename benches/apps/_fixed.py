"""The benchmark apps that answer every request with the same body."""

from _lifespan import lifespan


def fixed_body_app(body: bytes, content_type: bytes):
    """A raw ASGI app answering ``body`` (status 200, content-length set) to every request.

    The response is sent from the app itself, not through a helper: the hello and download
    workloads measure the server, and an extra call per request would be the app's cost."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    return app


async def respond(send, body: bytes) -> None:
    """Answers ``body`` as text/plain, for the apps whose body differs per request."""
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
