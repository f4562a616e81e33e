"""Lifespan handling for the test apps that need nothing set up (the same as
benches/apps/_lifespan.py, which stays apart so that the benchmarks need nothing of tests/)."""


async def lifespan(receive, send):
    """Acknowledge startup and shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
