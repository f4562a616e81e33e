"""FastAPI app: `GET /items/{item_id}?q=x` -> `{"item_id":5,"q":"x"}`.

Served as `fastapi_app:app`.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}
