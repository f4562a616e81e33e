"""Starlette + sse-starlette: an endless event stream."""

from __future__ import annotations

import asyncio

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def events(request):
    async def gen():
        n = 0
        while True:
            yield {"event": "tick", "id": str(n), "data": f"tick {n}"}
            n += 1
            await asyncio.sleep(0.1)

    return EventSourceResponse(gen(), ping=60)


async def ping(request):
    return PlainTextResponse("pong")


app = Starlette(routes=[Route("/sse", events), Route("/ping", ping)])
