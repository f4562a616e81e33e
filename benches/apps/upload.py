"""Raw ASGI app reading the whole request body and answering its length in decimal.

Used with a 1 MiB POST (benches/lua/upload.lua). Served as `upload:app`.
"""

from _fixed import respond
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
        await respond(send, str(size).encode())
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
