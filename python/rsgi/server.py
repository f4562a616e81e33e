"""One worker process: the event loop, the lifespan, the Rust core, signals and shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from rsgi import _rsgi, hooks, logs
from rsgi.config import Config, ConfigError
from rsgi.importer import load_app
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


def serve(
    config: Config,
    fds: list[int] | None = None,
    *,
    app: Any = None,
    factory: Callable[[Config, Any, list[int] | None], Server] | None = None,
) -> int:
    """Serve until a signal stops the server; returns the process exit code.

    ``app`` is the loaded application (loaded from ``config`` when None); ``factory``
    makes the ``Server`` (a subclass, such as the master's workers use).
    """
    if app is None:
        app = load_app(config)
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete((factory or Server)(config, app, fds).run())
    finally:
        loop.close()


class Server:
    """Runs the app on this process's loop with the Rust core doing the I/O.

    Subclasses (the gunicorn worker) adapt it through ``install_signals``,
    ``access_target``, ``started`` and ``reopen_logs``, and stop it with ``request_stop``.
    """

    #: Seconds the app's lifespan shutdown may take after a forced (quick) stop.
    FORCED_LIFESPAN_TIMEOUT = 2.0
    #: Answer --metrics-bind in this process (a master that serves them all says no).
    SERVE_METRICS = True
    #: The worker's serial number, for the hooks (a master's workers count from 1).
    serial = 1

    def __init__(self, config: Config, app: Any, fds: list[int] | None = None) -> None:
        self.config = config
        self.app = app
        self.fds = fds
        self.stop = asyncio.Event()
        self.force = False
        #: Skip --shutdown-delay: the stop is not the whole server's (see ``request_stop``).
        self.no_delay = False
        #: The Rust core, once the lifespan startup succeeded.
        self.core: _rsgi.Core | None = None

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
        # What the app built at import and startup lives as long as the process: keep it out
        # of the collector's generations, so collections triggered by per-request garbage
        # do not walk the whole app again and again.
        gc.freeze()
        access, prefix = self.access_target() or (None, "")
        try:
            core = _rsgi.Core(self.config, self.fds, self.SERVE_METRICS)
            fd = core.start(loop, self.app, logger, access, lifespan.state, prefix)
        except (OSError, ValueError) as exc:
            logger.error("%s", exc)
            await lifespan.shutdown()
            return 1
        self.core = core
        loop.add_reader(fd, core.drain)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs, core)
        self.started(core)
        await self.stop.wait()
        logger.info("Shutting down")
        await self.delay_shutdown(core)
        await self.drain(core)
        loop.remove_reader(fd)
        core.close()
        await self.finish_tasks()
        await self.shutdown_lifespan(lifespan)
        logger.info("Finished server process [%d]", os.getpid())
        return 0

    # -- extension points -----------------------------------------------------

    def access_target(self) -> tuple[Any, str] | None:
        """Where the core writes access lines (a file descriptor, a path, or a callable
        taking each line), and the text before each line; None for no access log."""
        return logs.access_target(self.config)

    def started(self, core: _rsgi.Core) -> None:
        """Called once the core serves."""
        for address in core.addresses:
            logger.info("rsgi running on %s (Press CTRL+C to quit)", address)
        hooks.call(self.config, "when_ready", hooks.Master(self.config))

    def request_stop(self, force: bool = False, *, delay: bool = True) -> None:
        """Stops the server: gracefully, or with ``force`` without waiting for requests.

        ``delay=False`` skips --shutdown-delay: for a worker that another one replaces,
        since the server itself goes on serving and no load balancer has to notice.
        """
        if force:
            self.force = True
        if not delay:
            self.no_delay = True
        self.stop.set()

    def reopen_logs(self, core: _rsgi.Core) -> None:
        logs.reopen_files()
        try:
            core.reopen_logs()
        except OSError as exc:
            logger.error("Cannot reopen the access log: %s", exc)

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGINT, self.on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, self.on_signal)

    def worker_int(self) -> None:
        hooks.call(self.config, "worker_int", hooks.Worker(self.config, self.serial))

    def on_interrupt(self) -> None:
        self.worker_int()
        self.on_signal()

    def on_signal(self) -> None:
        # A second signal skips the wait for in-flight requests.
        self.request_stop(force=self.stop.is_set())

    async def delay_shutdown(self, core: _rsgi.Core) -> None:
        """Serves on for --shutdown-delay seconds with the health path answering 503.

        A load balancer that checks the health path takes the server out of its pool in
        the meantime, so no new request finds the sockets closed. A second signal ends
        the delay.
        """
        core.set_draining()
        delay = self.config.shutdown_delay
        if delay <= 0 or self.force or self.no_delay:
            return
        logger.info("Still serving for %gs before closing the sockets (--shutdown-delay)", delay)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while loop.time() < deadline and not (self.force or self.no_delay):
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

    async def shutdown_lifespan(self, lifespan: Lifespan) -> None:
        """Runs the app's lifespan shutdown; bounded after a forced stop."""
        if not self.force:
            await lifespan.shutdown()
            return
        try:
            await asyncio.wait_for(lifespan.shutdown(), self.FORCED_LIFESPAN_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("Application shutdown cut short after a quick stop.")
