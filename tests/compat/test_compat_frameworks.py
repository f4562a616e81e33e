"""Litestar, Quart and python-socketio on rsgi and uvicorn."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import socketio
from differences import allowed
from harness import Observed, both, compare, observe, reply_from_httpx, websocket_exchange

APPS = {"litestar": "litestar_compat:app", "quart": "quart_compat:app"}


@pytest.fixture(scope="module", params=list(APPS))
def servers(request):
    with both(APPS[request.param]) as servers:
        yield servers


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/json", "/stream", "/nope"])
def test_http(servers, path):
    def scenario(server, seen: Observed) -> None:
        seen.replies.append(reply_from_httpx(httpx.get(server.base_url + path, timeout=15)))
        head = httpx.head(server.base_url + path, timeout=15)
        seen.replies.append(reply_from_httpx(head))

    compare(observe(servers, scenario))


WEBSOCKETS = {
    "echo": ["hello", "wörld", "x" * 70_000],
    "close-code": ["one", "close:4001"],
    "close-normal": ["close:1000"],
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(WEBSOCKETS))
def test_websocket(servers, case):
    def scenario(server, seen: Observed) -> None:
        seen.replies = websocket_exchange(server, "/ws", WEBSOCKETS[case])

    allowed("websocket-access-line")
    compare(observe(servers, scenario), access=False, expect_problems=None)


@pytest.fixture(scope="module")
def sio_servers():
    with both("socketio_compat:app") as servers:
        yield servers


async def socketio_session(url: str, transport: str) -> list:
    client = socketio.AsyncClient()
    greeted = asyncio.get_running_loop().create_future()
    client.on("greeting", lambda data: greeted.done() or greeted.set_result(data))
    await client.connect(url, transports=[transport], wait_timeout=10)
    try:
        seen = [client.transport(), await asyncio.wait_for(greeted, 10)]
        for data in ({"x": 1}, "text", [1, 2, 3]):
            seen.append(await client.call("echo", data, timeout=10))
    finally:
        await client.disconnect()
    return seen


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_socketio(sio_servers, transport):
    def scenario(server, seen: Observed) -> None:
        seen.replies = asyncio.run(socketio_session(server.base_url, transport))

    observed = observe(sio_servers, scenario)
    # Long-polling makes a number of requests that depends on timing: compare which
    # kinds of request were logged (without the sid and timestamp query), not how many.
    for seen in observed.values():
        seen.effects["logged"] = sorted({re.sub(r"\?\S*", "", line) for line in seen.access})
    if transport == "websocket":
        allowed("websocket-access-line")
        for seen in observed.values():
            seen.effects["logged"] = [x for x in seen.effects["logged"] if " 101" not in x]
    compare(observed, access=False)
