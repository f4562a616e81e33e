"""An app built by a factory function (for --factory)."""

from __future__ import annotations

CREATED = {"count": 0}


def create_app():
    CREATED["count"] += 1
    created = CREATED["count"]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = f"from factory #{created}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app
