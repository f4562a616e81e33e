"""One worker process: the event loop, the lifespan, the Rust core, signals and shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from rsgi import _rsgi, logs
from rsgi.config import Config, ConfigError
from rsgi.lifespan import Lifespan, LifespanFailure

logger = logging.getLogger("rsgi.error")

STARTUP_FAILURE = 3


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop when asked for, or when installed and `auto`; asyncio's loop otherwise."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve(config: Config, fds: list[int] | None = None) -> int:
    """Serve until a signal stops the server; returns the process exit code."""
    app = config.load_app()
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(Server(config, app, fds).run())
    finally:
        loop.close()


class Server:
    """Runs the app on this process's loop with the Rust core doing the I/O."""

    def __init__(self, config: Config, app: Any, fds: list[int] | None = None) -> None:
        self.config = config
        self.app = app
        self.fds = fds
        self.stop = asyncio.Event()
        self.force = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # Before the socket is bound: a signal must never find the default handler.
        self.install_signals(loop)
        logger.info("Started server process [%d]", os.getpid())
        lifespan = Lifespan(self.app, self.config.lifespan, logger)
        try:
            await lifespan.startup()
        except LifespanFailure:
            return STARTUP_FAILURE
        access, prefix = logs.access_target(self.config) or (None, "")
        try:
            core = _rsgi.Core(self.config, self.fds)
            fd = core.start(loop, self.app, logger, access, lifespan.state, prefix)
        except (OSError, ValueError) as exc:
            logger.error("%s", exc)
            await lifespan.shutdown()
            return 1
        loop.add_reader(fd, core.drain)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs, core)
        for address in core.addresses:
            logger.info("rsgi running on %s (Press CTRL+C to quit)", address)
        await self.stop.wait()
        logger.info("Shutting down")
        await self.delay_shutdown(core)
        await self.drain(core)
        loop.remove_reader(fd)
        core.close()
        await self.finish_tasks()
        await lifespan.shutdown()
        logger.info("Finished server process [%d]", os.getpid())
        return 0

    def reopen_logs(self, core: _rsgi.Core) -> None:
        logs.reopen_files()
        try:
            core.reopen_logs()
        except OSError as exc:
            logger.error("Cannot reopen the access log: %s", exc)

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.on_signal)

    def on_signal(self) -> None:
        # A second signal skips the wait for in-flight requests.
        if self.stop.is_set():
            self.force = True
        self.stop.set()

    async def delay_shutdown(self, core: _rsgi.Core) -> None:
        """Serves on for --shutdown-delay seconds with the health path answering 503.

        A load balancer that checks the health path takes the server out of its pool in
        the meantime, so no new request finds the sockets closed. A second signal ends
        the delay.
        """
        core.set_draining()
        delay = self.config.shutdown_delay
        if delay <= 0 or self.force:
            return
        logger.info("Still serving for %gs before closing the sockets (--shutdown-delay)", delay)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while loop.time() < deadline and not self.force:
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))

    async def drain(self, core: _rsgi.Core) -> None:
        """Stops accepting, then waits for in-flight requests within the graceful timeout."""
        core.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_graceful_shutdown
        while (core.connections() or core.running()) and not self.force:
            if loop.time() >= deadline:
                logger.warning(
                    "Timeout graceful shutdown exceeded: closing %d connection(s)",
                    core.connections(),
                )
                break
            await asyncio.sleep(0.02)

    async def finish_tasks(self) -> None:
        """Gives apps woken by the close a moment to end, then cancels what is left."""
        for _ in range(10):
            tasks = [
                t
                for t in asyncio.all_tasks()
                if not t.done() and isinstance(t.get_coro(), _rsgi.AppRunner)
            ]
            if not tasks:
                return
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
