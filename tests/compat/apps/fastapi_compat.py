"""FastAPI app for the compat suite: middleware, background tasks, files, WebSockets.

COMPAT_DATA_DIR names a directory the test fills with ``data.bin`` and ``static/``, the
same for both servers, so that ETags and Last-Modified agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import (
    BackgroundTasks,
    FastAPI,
    HTTPException,
    Request,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

DATA = Path(os.environ["COMPAT_DATA_DIR"])
done: list[int] = []


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "from lifespan"}


app = FastAPI(lifespan=lifespan)
app.mount("/static", StaticFiles(directory=DATA / "static"), name="static")


class Teapot(Exception):
    pass


@app.exception_handler(Teapot)
async def teapot_handler(request: Request, exc: Teapot):
    return JSONResponse({"error": "teapot", "path": request.url.path}, status_code=418)


@app.middleware("http")
async def add_header(request: Request, call_next):
    response = await call_next(request)
    response.headers["x-mw"] = "1"
    return response


async def record(n: int) -> None:
    await asyncio.sleep(0.001)
    done.append(n)


@app.get("/bg/{n}")
async def with_background(n: int, tasks: BackgroundTasks):
    tasks.add_task(record, n)
    return {"n": n}


@app.get("/bg-done")
async def background_done():
    return {"count": len(done), "distinct": len(set(done))}


@app.get("/sync")
def sync_route(x: int = 1):
    return {"x": x * 2, "in_thread": threading.current_thread() is not threading.main_thread()}


@app.post("/upload")
async def upload(file: UploadFile):
    digest = hashlib.sha256()
    size = 0
    while chunk := await file.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return {"name": file.filename, "size": size, "sha256": digest.hexdigest()}


@app.get("/stream")
async def stream(n: int = 5):
    async def gen():
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/file")
async def file():
    return FileResponse(DATA / "data.bin", filename="data.bin")


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting}


@app.get("/teapot")
async def teapot():
    raise Teapot()


@app.get("/missing")
async def missing():
    raise HTTPException(status_code=404, detail="nothing here", headers={"x-why": "test"})


@app.get("/boom")
async def boom():
    raise RuntimeError("boom from the app")


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text.startswith("close:"):
                await websocket.close(code=int(text[6:]), reason="bye")
                return
            await websocket.send_text("echo:" + text)
    except WebSocketDisconnect:
        pass


@app.websocket("/ws-reject")
async def ws_reject(websocket: WebSocket):
    await websocket.close(code=4403)
