"""Quart: JSON, a streaming response, a WebSocket echo with close codes."""

from __future__ import annotations

import asyncio

from quart import Quart, websocket

app = Quart(__name__)


@app.get("/json")
async def json_route():
    return {"hello": "world", "n": [1, 2, 3]}


@app.get("/stream")
async def stream_route():
    async def gen():
        for i in range(5):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)

    return gen(), 200, {"content-type": "text/plain"}


@app.websocket("/ws")
async def ws_route():
    await websocket.accept()
    while True:
        text = await websocket.receive()
        if text.startswith("close:"):
            await websocket.close(int(text[6:]), "bye")
            return
        await websocket.send("echo:" + text)
