"""python-socketio's ASGI app with an echo event and a server-pushed greeting."""

from __future__ import annotations

import socketio

# A short ping interval: a long-polling client's disconnect waits for its pending poll,
# which the server answers at the next ping.
sio = socketio.AsyncServer(async_mode="asgi", ping_interval=0.5, ping_timeout=5)


@sio.event
async def connect(sid, environ):
    await sio.emit("greeting", {"hello": "client"}, to=sid)


@sio.event
async def echo(sid, data):
    return {"echo": data}


app = socketio.ASGIApp(sio)
