"""Raw ASGI app that waits 10 ms (asyncio.sleep) before answering `Hello, world!`.

Measures how many concurrent in-flight requests a server keeps moving (run at 512
connections: the ideal is 512 / 10 ms = 51.2k requests/s). Served as `sleep:app`.
"""

import asyncio

from _fixed import fixed_body_app

DELAY = 0.010
hello = fixed_body_app(b"Hello, world!", b"text/plain")


async def app(scope, receive, send):
    if scope["type"] == "http":
        await asyncio.sleep(DELAY)
    await hello(scope, receive, send)
