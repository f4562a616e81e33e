"""Minimal ASGI lifespan handling shared by the benchmark apps."""


async def lifespan(receive, send):
    """Acknowledge startup and shutdown; nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
