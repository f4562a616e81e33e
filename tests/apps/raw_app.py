"""Raw ASGI application used by the protocol, error and malformed-request tests.

Routes on ``scope["path"]``.  Endpoints that observe something the client cannot see
directly (disconnects, exceptions raised by ``send``) store it in ``RECORDS`` under the
``id`` query parameter; ``GET /report?id=...`` returns it as JSON (``null`` if absent).
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import parse_qs

# Number of HTTP requests that reached the app, not counting /count and /report.
CALLS = {"count": 0}
RECORDS: dict[str, object] = {}
CHUNK_64K = b"x" * 65536


class ClientGone(Exception):
    pass


def jsonable(value):
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def query(scope) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[-1] for key, values in parsed.items()}


async def read_body(receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def respond(send, status: int, body: bytes, headers=None, content_type=b"text/plain"):
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    head += list(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send, value, status: int = 200):
    await respond(send, status, json.dumps(value).encode(), content_type=b"application/json")


def describe_scope(scope) -> dict:
    headers = scope.get("headers")
    return {
        "scope": jsonable(scope),
        "types": {key: type(value).__name__ for key, value in scope.items()},
        "headers_all_bytes": all(
            isinstance(name, bytes) and isinstance(value, bytes) for name, value in headers
        ),
        "headers_pairs": all(len(tuple(pair)) == 2 for pair in headers),
        "state_keys": sorted(scope["state"]) if isinstance(scope.get("state"), dict) else None,
    }


# --------------------------------------------------------------------------------------
# Lifespan
# --------------------------------------------------------------------------------------


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            state = scope.get("state")
            if state is not None:
                state["counter"] = 42
                state["shared_list"] = []
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            marker = os.environ.get("ASGI_TEST_SHUTDOWN_MARKER")
            if marker:
                with open(marker, "w") as fh:
                    fh.write("shutdown complete")
            await send({"type": "lifespan.shutdown.complete"})
            return


# --------------------------------------------------------------------------------------
# HTTP endpoints
# --------------------------------------------------------------------------------------


async def ep_hello(scope, receive, send):
    await respond(send, 200, b"hello")


async def ep_echo(scope, receive, send):
    body = await read_body(receive)
    await respond(send, 200, body, headers=[(b"x-body-length", str(len(body)).encode())])


async def ep_pipe(scope, receive, send):
    await read_body(receive)
    name = scope["path"].rsplit("/", 1)[-1]
    await respond(send, 200, f"pipe-{name}".encode())


async def ep_chunked(scope, receive, send):
    await read_body(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    for part in (b"one", b"two", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
        await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def ep_scope(scope, receive, send):
    await read_body(receive)
    await respond_json(send, describe_scope(scope))


async def ep_expect(scope, receive, send):
    await asyncio.sleep(0.5)
    body = await read_body(receive)
    await respond(send, 200, b"got:" + body)


async def ep_reject(scope, receive, send):
    await respond(send, 401, b"denied")


async def ep_upload_count(scope, receive, send):
    count = 0
    messages = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        count += len(message.get("body", b""))
        messages += 1
        if not message.get("more_body", False):
            break
    await respond_json(send, {"bytes": count, "messages": messages})


async def ep_download(scope, receive, send):
    await read_body(receive)
    size = int(query(scope).get("size", "0"))
    headers = [(b"content-type", b"application/octet-stream")]
    if query(scope).get("chunked") != "1":
        headers.append((b"content-length", str(size).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    remaining = size
    while remaining > 0:
        part = CHUNK_64K if remaining >= len(CHUNK_64K) else CHUNK_64K[:remaining]
        remaining -= len(part)
        await send({"type": "http.response.body", "body": part, "more_body": remaining > 0})
    if size == 0:
        await send({"type": "http.response.body", "body": b""})


async def ep_wait_disconnect(scope, receive, send):
    key = query(scope)["id"]
    body = await read_body(receive)
    RECORDS[key + ":body"] = len(body)
    message = await receive()
    RECORDS[key] = message["type"]


async def ep_stream_disconnect(scope, receive, send):
    """Stream until the client goes away, then record what send()/receive() do."""
    key = query(scope)["id"]
    await read_body(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    receiver = asyncio.ensure_future(receive())
    record: dict[str, object] = {"send_exc": None, "is_oserror": None, "receive": None}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    try:
        while not receiver.done() and loop.time() < deadline:
            await send({"type": "http.response.body", "body": b"y" * 4096, "more_body": True})
            await asyncio.sleep(0.005)
        # The client is gone (or the deadline passed): the next send must fail.
        await send({"type": "http.response.body", "body": b"z" * 4096, "more_body": True})
    except Exception as exc:
        record["send_exc"] = type(exc).__name__
        record["is_oserror"] = isinstance(exc, OSError)
    try:
        message = await asyncio.wait_for(receiver, 5.0)
        record["receive"] = message["type"]
    except asyncio.TimeoutError:
        record["receive"] = "timeout"
    RECORDS[key] = record


async def ep_stream_until_gone(scope, receive, send):
    """Stream until send() raises, and let that exception end the app, as most apps do.

    With ``group=1`` the streaming runs in a task group, which wraps what it raises in an
    ExceptionGroup. RECORDS holds the exception's type name, and whether it is the public
    `rsgi.ClientDisconnected`; then the app re-raises it.
    """
    params = query(scope)
    await send({"type": "http.response.start", "status": 200, "headers": []})

    async def stream():
        while True:
            await send({"type": "http.response.body", "body": b"y" * 4096, "more_body": True})
            await asyncio.sleep(0.005)

    try:
        if params.get("group") == "1":
            async with asyncio.TaskGroup() as group:
                group.create_task(stream())
        else:
            await stream()
    except BaseException as exc:
        import rsgi

        public = isinstance(exc, rsgi.ClientDisconnected) and isinstance(exc, OSError)
        suffix = " (rsgi.ClientDisconnected)" if public else ""
        RECORDS[params["id"]] = type(exc).__name__ + suffix
        raise


async def ep_slow(scope, receive, send):
    params = query(scope)
    if "id" in params:
        RECORDS[params["id"]] = "started"
    await read_body(receive)
    await asyncio.sleep(float(params.get("t", "1")))
    await respond(send, 200, b"slow done")


async def ep_loop(scope, receive, send):
    loop_type = type(asyncio.get_running_loop())
    await respond(send, 200, f"{loop_type.__module__}.{loop_type.__qualname__}".encode())


async def ep_count(scope, receive, send):
    await respond(send, 200, str(CALLS["count"]).encode())


async def ep_report(scope, receive, send):
    await respond_json(send, RECORDS.get(query(scope)["id"]))


async def ep_record_body(scope, receive, send):
    """Record every message received; answer only if the body arrived complete."""
    key = query(scope)["id"]
    seen: list[list] = []
    RECORDS[key] = seen
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            seen.append(["http.disconnect"])
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        seen.append([message["type"], len(body), more])
        if not more:
            break
    await respond(send, 200, b"complete body")


# -- misbehaving endpoints ------------------------------------------------------------


async def err_before_start(scope, receive, send):
    raise RuntimeError("kaboom-before-start")


async def err_after_start(scope, receive, send):
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    await asyncio.sleep(0.05)
    raise RuntimeError("kaboom-after-start")


async def err_no_response(scope, receive, send):
    return None


async def err_body_before_start(scope, receive, send):
    await send({"type": "http.response.body", "body": b"oops"})


async def err_double_start(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"should not get here"})


async def err_status_not_int(scope, receive, send):
    await send({"type": "http.response.start", "status": "200", "headers": []})
    await send({"type": "http.response.body", "body": b"should not get here"})


async def err_header_not_bytes(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", "text")]})
    await send({"type": "http.response.body", "body": b"should not get here"})


ROUTES = {
    "/": ep_hello,
    "/echo": ep_echo,
    "/chunked": ep_chunked,
    "/scope": ep_scope,
    "/expect": ep_expect,
    "/reject": ep_reject,
    "/upload-count": ep_upload_count,
    "/download": ep_download,
    "/wait-disconnect": ep_wait_disconnect,
    "/stream-disconnect": ep_stream_disconnect,
    "/stream-until-gone": ep_stream_until_gone,
    "/slow": ep_slow,
    "/count": ep_count,
    "/loop": ep_loop,
    "/report": ep_report,
    "/record-body": ep_record_body,
    "/error/before-start": err_before_start,
    "/error/after-start": err_after_start,
    "/error/no-response": err_no_response,
    "/error/body-before-start": err_body_before_start,
    "/error/double-start": err_double_start,
    "/error/status-not-int": err_status_not_int,
    "/error/header-not-bytes": err_header_not_bytes,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http", scope["type"]
    path = scope["path"]
    if path not in ("/count", "/report"):
        CALLS["count"] += 1
    handler = ROUTES.get(path)
    if handler is None and path.startswith("/pipe/"):
        handler = ep_pipe
    if handler is None:
        await respond(send, 404, b"not found")
        return
    try:
        await handler(scope, receive, send)
    except ClientGone:
        return
