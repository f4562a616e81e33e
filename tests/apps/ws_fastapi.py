"""FastAPI WebSocket routes for tests/test_websocket.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect, WebSocketException
from fastapi import status as http_status

app = FastAPI()
DISCONNECTS: list[int] = []


async def require_token(token: Annotated[str | None, Query()] = None) -> str:
    if token != "secret":
        raise WebSocketException(code=http_status.WS_1008_POLICY_VIOLATION)
    return token


@app.websocket("/ws/echo")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        async for text in websocket.iter_text():
            await websocket.send_text(f"echo: {text}")
    finally:
        DISCONNECTS.append(websocket.client_state.value)


@app.websocket("/ws/json")
async def json_route(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"got": data, "count": len(data)})
    except WebSocketDisconnect as exc:
        DISCONNECTS.append(exc.code)


@app.websocket("/ws/items/{item_id}")
async def items(websocket: WebSocket, item_id: int, token: Annotated[str, Depends(require_token)]):
    await websocket.accept(subprotocol="v1" if "v1" in websocket.scope["subprotocols"] else None)
    await websocket.send_json({"item_id": item_id, "token": token})
    await websocket.receive_text()
    await websocket.close(code=4000, reason="done")


@app.websocket("/ws/bytes")
async def bytes_route(websocket: WebSocket):
    await websocket.accept()
    data = await websocket.receive_bytes()
    await websocket.send_bytes(data[::-1])
    await websocket.close()


@app.get("/disconnects")
async def disconnects():
    return DISCONNECTS
