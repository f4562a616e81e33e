"""Raw ASGI WebSocket application for tests/test_websocket.py.

WebSocket routes are chosen by ``scope["path"]``; the ``id`` query parameter names the slot
in ``RECORDS`` where a route stores what the client cannot see (the disconnect message, the
exception ``send()`` raised). Plain HTTP: ``GET /report?id=...`` returns a record as JSON,
``GET /count`` the number of websocket scopes the app has seen, anything else answers
``http <path>`` (how an upgrade request is served with ``--ws none``).
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import parse_qs

from raw_app import describe_scope, jsonable, lifespan, respond, respond_json

RECORDS: dict[str, object] = {}
WAITERS: dict[str, asyncio.Event] = {}
COUNT = {"websocket": 0}


def query(scope) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[-1] for key, values in parsed.items()}


def record(key: str | None, value) -> None:
    if key:
        RECORDS[key] = jsonable(value)
        WAITERS.setdefault(key, asyncio.Event()).set()


async def wait_record(key: str, timeout: float) -> object:
    event = WAITERS.setdefault(key, asyncio.Event())
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before 3.11
        pass
    return RECORDS.get(key)


async def echo_until_disconnect(receive, send, key):
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            record(key, message)
            return message
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def ws_echo(scope, receive, send, q):
    await send({"type": "websocket.accept"})
    await echo_until_disconnect(receive, send, q.get("id"))


async def ws_scope(scope, receive, send, q):
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(describe_scope(scope))})
    await echo_until_disconnect(receive, send, q.get("id"))


async def ws_subprotocol(scope, receive, send, q):
    chosen = scope["subprotocols"][-1] if scope["subprotocols"] else None
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": chosen,
            "headers": [(b"x-extra", b"yes"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
        }
    )
    await send({"type": "websocket.send", "text": json.dumps(scope["subprotocols"])})
    await echo_until_disconnect(receive, send, q.get("id"))


async def ws_close(scope, receive, send, q):
    await send({"type": "websocket.accept"})
    message: dict = {"type": "websocket.close"}
    if "code" in q:
        message["code"] = int(q["code"])
    if "reason" in q:
        message["reason"] = q["reason"]
    await send(message)
    record(q.get("id"), await receive())


async def ws_reject(scope, receive, send, q):
    await send({"type": "websocket.close", "code": 1008})
    record(q.get("id"), await receive())


async def ws_deny(scope, receive, send, q):
    assert "websocket.http.response" in scope["extensions"]
    await send(
        {
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Token")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"entry"})


async def ws_send_after_close(scope, receive, send, q):
    await send({"type": "websocket.accept"})
    message = await receive()
    assert message["type"] == "websocket.disconnect", message
    try:
        await send({"type": "websocket.send", "text": "too late"})
    except Exception as exc:
        record(
            q.get("id"),
            {"raised": type(exc).__name__, "oserror": isinstance(exc, OSError)},
        )
    else:
        record(q.get("id"), {"raised": None})


async def ws_burst(scope, receive, send, q):
    """On "go": sends `n` numbered messages, then "sent", then waits for the disconnect."""
    await send({"type": "websocket.accept"})
    message = await receive()
    assert message.get("text") == "go", message
    for i in range(int(q.get("n", "100"))):
        await send({"type": "websocket.send", "text": f"{i}"})
    await send({"type": "websocket.send", "text": "sent"})
    record(q.get("id"), "sent")
    message = await receive()
    marker = os.environ.get("WS_TEST_DISCONNECT_FILE")
    if marker:
        with open(marker, "w") as fh:
            json.dump(message, fh)


async def ws_slow_reader(scope, receive, send, q):
    """Accepts, then reads nothing until told over HTTP (GET /release?id=...)."""
    await send({"type": "websocket.accept"})
    record(q.get("id"), "accepted")
    await wait_record(f"release-{q.get('id')}", 30)
    received = []
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            break
        received.append(len(message.get("bytes") or message.get("text") or ""))
        if len(received) == int(q.get("n", "0")):
            await send({"type": "websocket.send", "text": json.dumps(received)})
    record(q.get("id") + "-done", received)


async def ws_flood(scope, receive, send, q):
    """Sends `n` messages of `size` bytes to a client that may not read them."""
    await send({"type": "websocket.accept"})
    payload = b"x" * int(q.get("size", "65536"))
    sent = 0
    try:
        for _ in range(int(q.get("n", "1000"))):
            await send({"type": "websocket.send", "bytes": payload})
            sent += 1
            record(q.get("id"), sent)
    except OSError:
        pass
    record(q.get("id") + "-done", sent)


async def ws_no_handshake(scope, receive, send, q):
    return


async def ws_raise(scope, receive, send, q):
    if q.get("after") == "accept":
        await send({"type": "websocket.accept"})
    raise RuntimeError("boom")


async def ws_bad_message(scope, receive, send, q):
    try:
        await send({"type": "websocket.send", "text": "before accept"})
    except RuntimeError as exc:
        record(q.get("id"), str(exc))
    await send({"type": "websocket.close"})


ROUTES = {
    "/echo": ws_echo,
    "/scope": ws_scope,
    "/subprotocol": ws_subprotocol,
    "/close": ws_close,
    "/reject": ws_reject,
    "/deny": ws_deny,
    "/send-after-close": ws_send_after_close,
    "/burst": ws_burst,
    "/slow-reader": ws_slow_reader,
    "/flood": ws_flood,
    "/no-handshake": ws_no_handshake,
    "/raise": ws_raise,
    "/bad-message": ws_bad_message,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    q = query(scope)
    if scope["type"] == "websocket":
        COUNT["websocket"] += 1
        message = await receive()
        assert message == {"type": "websocket.connect"}, message
        route = ROUTES.get(scope["path"].removeprefix(scope.get("root_path", "")), ws_echo)
        await route(scope, receive, send, q)
        return
    path = scope["path"]
    if path == "/report":
        await respond_json(send, await wait_record(q["id"], float(q.get("wait", "0"))))
    elif path == "/release":
        record(f"release-{q['id']}", True)
        await respond_json(send, True)
    elif path == "/count":
        await respond_json(send, COUNT["websocket"])
    else:
        await respond(send, 200, f"http {path}".encode())
