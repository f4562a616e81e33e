"""ASGI app for the limit tests: the raw app plus an endpoint that holds a request open.

``POST /hold?id=NAME`` (with a request body) creates ``$LIMITS_HOLD_DIR/NAME.started`` as
soon as the app runs, then waits for the request body, so the test decides when the request
finishes by sending it.  Every other request goes to ``raw_app``.
"""

from __future__ import annotations

import os
from pathlib import Path

from raw_app import ClientGone, query, read_body, respond
from raw_app import app as raw_app


async def ep_hold(scope, receive, send):
    key = query(scope)["id"]
    (Path(os.environ["LIMITS_HOLD_DIR"]) / f"{key}.started").touch()
    try:
        await read_body(receive)
    except ClientGone:
        return
    await respond(send, 200, f"held {key}".encode())


async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/hold":
        await ep_hold(scope, receive, send)
        return
    await raw_app(scope, receive, send)
