"""A small FastAPI app to try rsgi with:

    rsgi examples.main:app --port 8000
    curl localhost:8000/items/3?q=hi
    curl -X POST localhost:8000/items -H 'content-type: application/json' \
        -d '{"name": "pen", "price": 1.5}'
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI(title="rsgi example")


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(ge=0)
    tags: list[str] = []


class StoredItem(Item):
    id: int


items: list[StoredItem] = []


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "Hello from rsgi"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, int | str | None]:
    return {"item_id": item_id, "q": q}


@app.post("/items", status_code=201)
async def create_item(item: Item) -> StoredItem:
    stored = StoredItem(id=len(items) + 1, **item.model_dump())
    items.append(stored)
    return stored
