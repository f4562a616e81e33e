"""ASGI app for the request-smuggling corpus (tests/test_smuggling.py).

Every request that reaches the app is logged as ``[method, path, body or "<disconnect>"]``,
except the two bookkeeping endpoints: ``GET /log`` returns the log as JSON and
``GET /reset`` clears it.  ``/smuggled`` answers with ``SMUGGLED_MARKER`` so that a client
can tell its response apart; every other path reads the body and echoes it.
"""

from __future__ import annotations

from raw_app import ClientGone, lifespan, read_body, respond, respond_json

SMUGGLED_MARKER = b"SMUGGLED-REQUEST-REACHED-THE-APP"
LOG: list[list] = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    path = scope["path"]
    if path == "/log":
        await respond_json(send, LOG)
        return
    if path == "/reset":
        LOG.clear()
        await respond(send, 200, b"reset")
        return
    entry = [scope["method"], path, None]
    LOG.append(entry)
    try:
        body = await read_body(receive)
    except ClientGone:
        entry[2] = "<disconnect>"
        return
    entry[2] = body.decode("latin-1")
    if path == "/smuggled":
        await respond(send, 200, SMUGGLED_MARKER)
    else:
        await respond(send, 200, b"first:" + body)
