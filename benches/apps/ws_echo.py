"""Raw ASGI WebSocket echo app (text and binary), for benches/ws-load.

Plain HTTP requests get `ok` so a harness can probe readiness. Served as `ws_echo:app`.
"""

from _fixed import respond
from _lifespan import lifespan


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    await send({"type": "websocket.send", "text": text})
                else:
                    await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
            elif message["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "http":
        await respond(send, b"ok")
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
