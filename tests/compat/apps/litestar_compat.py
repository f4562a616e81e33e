"""Litestar: JSON, a streaming response, a WebSocket echo with close codes."""

from __future__ import annotations

import asyncio

from litestar import Litestar, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.response import Stream


@get("/json")
async def json_route() -> dict:
    return {"hello": "world", "n": [1, 2, 3]}


@get("/stream")
async def stream_route() -> Stream:
    async def gen():
        for i in range(5):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)

    return Stream(gen(), media_type="text/plain")


@websocket("/ws")
async def ws_route(socket: WebSocket) -> None:
    await socket.accept()
    try:
        while True:
            text = await socket.receive_text()
            if text.startswith("close:"):
                await socket.close(code=int(text[6:]), reason="bye")
                return
            await socket.send_text("echo:" + text)
    except WebSocketDisconnect:
        pass


app = Litestar([json_route, stream_route, ws_route])
