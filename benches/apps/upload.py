"""Raw ASGI app reading the whole request body and answering its length in decimal.

Used with a 1 MiB POST (benches/lua/upload.lua). Served as `upload:app`.
"""

from _lifespan import lifespan


async def app(scope, receive, send):
    if scope["type"] == "http":
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(size).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
