"""A real FastAPI application served end to end (tests/apps/fastapi_app.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import RawClient, running_server, wait_for

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def fastapi_server():
    with running_server("fastapi_app:app") as server:
        yield server


@pytest.fixture(scope="module")
def client(fastapi_server):
    with httpx.Client(base_url=fastapi_server.base_url, timeout=30) as http:
        yield http


def test_get_with_path_and_query_params(client):
    resp = client.get("/items/5", params={"q": "foo"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == b'{"item_id":5,"q":"foo","limit":10}'
    assert resp.headers["x-middleware"] == "applied"


def test_post_pydantic_model(client):
    resp = client.post("/items", json={"name": "widget", "price": 2.5, "tags": ["a", "b"]})
    assert resp.status_code == 201
    assert resp.json() == {"name": "widget", "price": 2.5, "tags": ["a", "b"], "double": 5.0}


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        (
            "POST",
            "/items",
            {"price": "abc"},
            b'{"detail":[{"type":"missing","loc":["body","name"],"msg":"Field required",'
            b'"input":{"price":"abc"}},{"type":"float_parsing","loc":["body","price"],'
            b'"msg":"Input should be a valid number, unable to parse string as a number",'
            b'"input":"abc"}]}',
        ),
        (
            "GET",
            "/items/notint",
            None,
            b'{"detail":[{"type":"int_parsing","loc":["path","item_id"],'
            b'"msg":"Input should be a valid integer, unable to parse string as an integer",'
            b'"input":"notint"}]}',
        ),
    ],
    ids=["validation_error_body", "path_param_validation_error"],
)
def test_validation_error(client, method, path, body, expected):
    resp = client.request(method, path, json=body)
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/json"
    assert resp.content == expected


def test_sync_route_runs_in_thread(client):
    resp = client.get("/sync")
    assert resp.status_code == 200
    assert resp.json() == {"sync": True, "in_worker_thread": True}


def test_streaming_response_is_chunked(fastapi_server):
    with RawClient(fastapi_server.port) as raw:
        raw.request("GET", "/stream")
        resp = raw.read_response()
    assert resp.status == 200
    assert resp.header("transfer-encoding") == b"chunked"
    assert resp.header("x-middleware") == b"applied"
    assert resp.body == b"".join(f"line {i}\n".encode() for i in range(5))


def test_background_task_runs_after_response(client):
    resp = client.post("/background/k1")
    assert resp.status_code == 200
    assert resp.json() == {"scheduled": "k1"}
    marker = wait_for(
        lambda: client.get("/background/k1").json()["marker"],
        message="background task never ran",
    )
    assert marker == "done:k1"


def test_large_streamed_upload(client):
    total = 20 * MIB
    piece = b"f" * (128 * 1024)

    def generate():
        for _ in range(total // len(piece)):
            yield piece

    resp = client.post("/upload", content=generate())
    assert resp.status_code == 200
    data = resp.json()
    assert data["bytes"] == total
    assert data["chunks"] > 1


def test_lifespan_state_reaches_request_state(client):
    resp = client.get("/state")
    assert resp.status_code == 200
    assert resp.json() == {"db_name": "fake-db", "startup_count": 1}


def test_endpoint_exception_gives_500(client, fastapi_server):
    offset = fastapi_server.stderr_offset()
    resp = client.get("/boom")
    assert resp.status_code == 500
    assert resp.content == b"Internal Server Error"
    fastapi_server.wait_for_stderr(r"RuntimeError: fastapi endpoint exploded", since=offset)
    # The server keeps serving.
    again = client.get("/items/1")
    assert again.status_code == 200
    assert json.loads(again.content)["item_id"] == 1
    fastapi_server.assert_alive()


def test_not_found(client):
    resp = client.get("/does-not-exist")
    assert resp.status_code == 404
    assert resp.content == b'{"detail":"Not Found"}'
