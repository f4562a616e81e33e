"""ASGI app for the extension tests: TLS scope, pathsend and trailers.

- ``/scope``: the scope's scheme and extensions as JSON.
- ``/file?path=...``: ``http.response.pathsend`` of that file, with its Content-Length
  (``&length=0`` leaves Content-Length out, ``&chunks=N`` sends N small body chunks first
  without Content-Length).
- ``/starlette?path=...``: a Starlette ``FileResponse`` of that file; the types of the
  messages it sent are kept for ``/report``.
- ``/trailers``: a chunked body in two messages and trailers, announced with ``Trailer``;
  ``?split=1`` sends the trailers in two messages, ``?undeclared=1`` leaves out the
  ``Trailer`` header, ``?forget=1`` returns without sending the trailers.
- ``/bad-trailers``: ``http.response.trailers`` without ``trailers`` in the start.
- ``/misuse?case=...``: pathsend sent out of order; the error ``send()`` raised is kept.
- ``/report``: ``{"errors": [...], "messages": [...]}`` kept by the endpoints above.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

from _lifespan import lifespan

ERRORS: list[str] = []
MESSAGES: list[str] = []


def query(scope) -> dict[str, str]:
    parsed = parse_qs(scope["query_string"].decode("latin-1"))
    return {key: values[-1] for key, values in parsed.items()}


async def send_json(send, value) -> None:
    body = json.dumps(value).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def scope_info(scope, send) -> None:
    await send_json(
        send,
        {
            "scheme": scope["scheme"],
            "extensions": scope.get("extensions"),
            "http_version": scope["http_version"],
        },
    )


async def pathsend(scope, send) -> None:
    args = query(scope)
    path = args["path"]
    headers = [(b"content-type", b"application/octet-stream")]
    chunks = int(args.get("chunks", "0"))
    if args.get("length", "1") == "1" and not chunks and os.path.exists(path):
        headers.append((b"content-length", str(os.path.getsize(path)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for index in range(chunks):
        await send({"type": "http.response.body", "body": b"%d;" % index, "more_body": True})
    await send({"type": "http.response.pathsend", "path": path})


async def starlette_file(scope, receive, send) -> None:
    from starlette.responses import FileResponse

    MESSAGES.clear()

    async def recording_send(message) -> None:
        MESSAGES.append(message["type"])
        await send(message)

    await FileResponse(query(scope)["path"])(scope, receive, recording_send)


async def misuse(scope, send) -> None:
    case = query(scope)["case"]
    pathsend = {"type": "http.response.pathsend", "path": __file__}
    try:
        if case == "before-start":
            await send(pathsend)
        elif case == "body-after":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send(pathsend)
            await send({"type": "http.response.body", "body": b"more"})
        elif case == "no-path":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.pathsend"})
    except (RuntimeError, TypeError) as exc:
        ERRORS.append(f"{case}: {type(exc).__name__}: {exc}")
        raise


async def trailers(scope, send) -> None:
    args = query(scope)
    headers = [(b"content-type", b"text/plain")]
    if args.get("undeclared") != "1":
        headers.append((b"trailer", b"x-checksum, x-count"))
    await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
    await send({"type": "http.response.body", "body": b"hello", "more_body": True})
    await send({"type": "http.response.body", "body": b" world", "more_body": False})
    if args.get("forget") == "1":
        return
    if args.get("split") == "1":
        first = [(b"x-checksum", b"abc123")]
        await send({"type": "http.response.trailers", "headers": first, "more_trailers": True})
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-count", b"2")],
                "more_trailers": False,
            }
        )
    else:
        fields = [(b"x-checksum", b"abc123"), (b"x-count", b"2")]
        await send({"type": "http.response.trailers", "headers": fields, "more_trailers": False})


async def bad_trailers(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    try:
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
    except RuntimeError as exc:
        ERRORS.append(str(exc))
    await send({"type": "http.response.body", "body": b"ok"})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/scope":
        await scope_info(scope, send)
    elif path == "/file":
        await pathsend(scope, send)
    elif path == "/starlette":
        await starlette_file(scope, receive, send)
    elif path == "/trailers":
        await trailers(scope, send)
    elif path == "/bad-trailers":
        await bad_trailers(send)
    elif path == "/misuse":
        await misuse(scope, send)
    elif path == "/report":
        await send_json(send, {"errors": ERRORS, "messages": MESSAGES})
    else:
        await send_json(send, {"path": path})
