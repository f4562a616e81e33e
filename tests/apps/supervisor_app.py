"""ASGI app for the supervisor tests (``rsgi -w N``).

- ``GET /``: the worker's pid, as text.
- ``GET /slow?t=S``: sleeps S seconds on the event loop, then answers its pid.
- ``GET /block?t=S``: blocks the event loop with time.sleep(S) (a hung worker).
- ``GET /hog?mib=N``: allocates N MiB, touched so that it is resident, and keeps it (a leak).
- ``SUP_VERSION`` (environment) or the module ``supervisor_version`` next to the app,
  when present, is sent in the ``x-version`` header: reload tests change it.
- ``GET /listen-env``: the ``LISTEN_*`` variables the worker's app sees, and those a child
  process it starts sees, as ``app|child`` (names, comma-separated).
- ``SUP_FAIL_STARTUP=1``: lifespan startup fails; ``SUP_FAIL_IMPORT=1``: import fails.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from urllib.parse import parse_qs

if os.environ.get("SUP_FAIL_IMPORT"):
    raise RuntimeError("SUP_FAIL_IMPORT is set")

try:
    from supervisor_version import VERSION
except ImportError:
    VERSION = os.environ.get("SUP_VERSION", "none")

# What /hog keeps.
LEAKED: list[bytes] = []


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("SUP_FAIL_STARTUP"):
                await send({"type": "lifespan.startup.failed", "message": "SUP_FAIL_STARTUP"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    seconds = float(query.get("t", "0"))
    if scope["path"] == "/slow":
        await asyncio.sleep(seconds)
    elif scope["path"] == "/block":
        time.sleep(seconds)
    elif scope["path"] == "/hog":
        LEAKED.append(b"\x01" * (int(query.get("mib", "0")) << 20))
    body = str(os.getpid()).encode()
    if scope["path"] == "/listen-env":
        body = listen_env().encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
                (b"x-version", VERSION.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def listen_env() -> str:
    mine = sorted(name for name in os.environ if name.startswith("LISTEN_"))
    env = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
    child = sorted(line.split("=", 1)[0] for line in env.splitlines() if line.startswith("LISTEN_"))
    return f"{','.join(mine)}|{','.join(child)}"
