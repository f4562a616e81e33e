"""ASGI app for the gunicorn worker tests (tests/test_gunicorn.py).

Every response body starts with the worker's pid, so a test can tell workers apart.
``GUNICORN_TEST_DIR`` names a directory where ``/slow`` notes that it started.
``/hog?mib=N`` allocates N MiB, touched so that it is resident, and keeps it (a leak).
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import parse_qs

from _lifespan import lifespan

# What /hog keeps.
LEAKED: list[bytes] = []


def query(scope) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[-1] for key, values in parsed.items()}


async def respond(send, body: bytes, headers=()) -> None:
    head = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": head + list(headers)})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path, params = scope["path"], query(scope)
    pid = str(os.getpid()).encode()
    if path == "/headers":
        # For the access log: a response header, a known body size and a known duration.
        await asyncio.sleep(float(params.get("delay", "0")))
        await respond(send, b"pid=" + pid, headers=[(b"x-resp", b"out-value")])
    elif path == "/slow":
        directory = os.environ.get("GUNICORN_TEST_DIR")
        if directory:
            with open(os.path.join(directory, "slow-started"), "w") as fh:
                fh.write(pid.decode())
        await asyncio.sleep(float(params.get("t", "2")))
        await respond(send, b"slow done")
    elif path == "/client":
        client = scope.get("client") or ("-", 0)
        await respond(send, f"{client[0]} {scope['scheme']}".encode())
    elif path == "/hog":
        LEAKED.append(b"\x01" * (int(params.get("mib", "0")) << 20))
        await respond(send, pid)
    elif path == "/raise":
        raise RuntimeError("boom from the app")
    elif path == "/block":
        # Blocks the event loop, and with it the worker's heartbeat.
        time.sleep(float(params.get("t", "30")))
        await respond(send, b"blocked done")
    else:
        await respond(send, pid)
