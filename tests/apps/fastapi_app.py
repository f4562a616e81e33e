"""A FastAPI application exercising the common framework features."""

from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

BACKGROUND_MARKERS: dict[str, str] = {}


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield {"db_name": "fake-db", "startup_count": 1}


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def add_marker_header(request: Request, call_next):
    response = await call_next(request)
    response.headers["x-middleware"] = "applied"
    return response


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, limit: int = 10):
    return {"item_id": item_id, "q": q, "limit": limit}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"name": item.name, "price": item.price, "tags": item.tags, "double": item.price * 2}


@app.get("/sync")
def sync_route():
    return {
        "sync": True,
        "in_worker_thread": threading.current_thread() is not threading.main_thread(),
    }


@app.get("/stream")
async def stream():
    async def lines():
        for i in range(5):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(lines(), media_type="text/plain")


def write_marker(key: str, value: str) -> None:
    BACKGROUND_MARKERS[key] = value


@app.post("/background/{key}")
async def schedule_background(key: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(write_marker, key, f"done:{key}")
    return {"scheduled": key}


@app.get("/background/{key}")
async def read_background(key: str):
    return {"marker": BACKGROUND_MARKERS.get(key)}


@app.post("/upload")
async def upload(request: Request):
    total = 0
    chunks = 0
    async for chunk in request.stream():
        total += len(chunk)
        chunks += 1
    return {"bytes": total, "chunks": chunks}


@app.get("/state")
async def state(request: Request):
    return {"db_name": request.state.db_name, "startup_count": request.state.startup_count}


@app.get("/boom")
async def boom():
    raise RuntimeError("fastapi endpoint exploded")
