"""ASGI patterns that real frameworks use and that a server must not break (issue 15).

Each route is the raw shape of something a framework does:
- ``/late-close``: all ``content-length`` bytes with ``more_body: True``, the closing empty
  body a moment later, then more work (Starlette's ``@app.middleware("http")`` in front of
  FastAPI ``BackgroundTasks``);
- ``/body``: a body for any method, HEAD included (FastAPI, Starlette's static files);
- ``/thread-drop``: hands ``receive`` and ``send`` to a thread that drops them there after the
  request (Django runs sync views in threads; the garbage collector runs anywhere);
- ``/stream-then-500``: streams until the client leaves, then tries to send a 500 page
  (datasette's CSV export);
- ``/events``: an endless ``text/event-stream`` (sse-starlette);
- ``/slow-stream``: a finite streamed download that takes about 1.5 s;
- ``/wrong-length/{long,short}``: a body longer or shorter than its ``content-length``.

``GET /report`` returns what the routes observed as JSON.
"""

from __future__ import annotations

import asyncio
import json
import threading

REPORT: dict[str, object] = {
    "late_close_done": 0,
    "late_close_errors": [],
    "send_errors": [],
    "length_errors": [],
}


async def respond(send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def late_close(send) -> None:
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
            }
        )
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception as exc:
        REPORT["late_close_errors"].append(repr(exc))
        raise
    # The background task: runs after the response, as Starlette runs BackgroundTasks.
    await asyncio.sleep(0.001)
    REPORT["late_close_done"] += 1


async def thread_drop(receive, send) -> None:
    done = threading.Event()
    handed = [receive, send]

    def hold_then_drop():
        done.wait(10)
        handed.clear()

    threading.Thread(target=hold_then_drop).start()
    await respond(send, 200, b"ok")
    del receive, send
    done.set()


async def stream_then_500(send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/csv")],
        }
    )
    try:
        while True:
            await send({"type": "http.response.body", "body": b"a,b,c\n" * 1000, "more_body": True})
            await asyncio.sleep(0.005)
    except OSError:
        try:
            # What datasette does: the error page for a failed export.
            await respond(send, 500, b"export failed")
        except OSError as exc:
            REPORT["send_errors"].append(type(exc).__name__)
            raise


async def events(send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    n = 0
    while True:
        await send({"type": "http.response.body", "body": b"data: %d\n\n" % n, "more_body": True})
        n += 1
        await asyncio.sleep(0.1)


async def slow_stream(send) -> None:
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for n in range(15):
        await send({"type": "http.response.body", "body": b"%d\n" % n, "more_body": True})
        await asyncio.sleep(0.1)
    await send({"type": "http.response.body", "body": b"end\n"})


async def wrong_length(send, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    try:
        await send({"type": "http.response.body", "body": body})
    except RuntimeError as exc:
        REPORT["length_errors"].append(str(exc))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/late-close":
        await late_close(send)
    elif path == "/body":
        await respond(send, 200, b"x" * 1000)
    elif path == "/thread-drop":
        await thread_drop(receive, send)
    elif path == "/stream-then-500":
        await stream_then_500(send)
    elif path == "/events":
        await events(send)
    elif path == "/slow-stream":
        await slow_stream(send)
    elif path == "/wrong-length/long":
        await wrong_length(send, b"hello world")
    elif path == "/wrong-length/short":
        await wrong_length(send, b"hel")
    elif path == "/report":
        await respond(send, 200, json.dumps(REPORT).encode(), b"application/json")
    else:
        await respond(send, 404, b"not found")
