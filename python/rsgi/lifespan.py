"""The ASGI lifespan protocol: startup and shutdown events for the app.

https://asgi.readthedocs.io/en/latest/specs/lifespan.html
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

MODES = ("auto", "on", "off")
STARTUP_REPLIES = ("lifespan.startup.complete", "lifespan.startup.failed")
SHUTDOWN_REPLIES = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")


class LifespanFailure(Exception):
    """The app's startup failed; the server should not serve and exit with code 3."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Lifespan:
    """Runs the app's lifespan task on the running event loop.

    ``state`` is given to the app as ``scope["state"]``; the server copies it
    (shallowly) into every request scope.

    Phases: idle -> startup -> running -> shutdown -> done, or startup -> failed.
    """

    def __init__(self, app: Any, mode: str = "auto", logger: logging.Logger | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"lifespan mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.app = app
        self.mode = mode
        self.logger = logger or logging.getLogger("rsgi.error")
        self.state: dict[str, Any] = {}
        self.phase = "idle"
        self.supported = mode != "off"
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._received = False
        self._failure: str | None = None  # the message the app sent with *.failed
        self._error: str | None = None  # what the app raised, for LifespanFailure

    async def startup(self) -> None:
        """Send lifespan.startup and wait for the reply.

        Raises LifespanFailure if the app reports failure, or raises while
        starting up (in "auto" mode only once it has shown it speaks lifespan).
        """
        if self.mode == "off":
            return
        self.logger.info("Waiting for application startup.")
        self.phase = "startup"
        # Keep a reference: the loop holds tasks only weakly.
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self.phase == "failed":
            if self._failure:
                self.logger.error("%s", self._failure)
            self.logger.error("Application startup failed. Exiting.")
            raise LifespanFailure(self._failure or self._error or "Application startup failed.")
        self.logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        """Send lifespan.shutdown and wait for the reply; failures are only logged."""
        task = self._task
        if task is None or task.done():
            return  # lifespan off, unsupported, or the app already returned
        if self.phase == "startup":
            # Startup never finished (the server was interrupted): stop waiting for it.
            task.cancel()
            return
        if self.phase != "running":
            return
        self.logger.info("Waiting for application shutdown.")
        self.phase = "shutdown"
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self.phase == "failed":
            if self._failure:
                self.logger.error("%s", self._failure)
            self.logger.error("Application shutdown failed. Exiting.")
        else:
            self.logger.info("Application shutdown complete.")

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:
            self._app_raised(exc)
        finally:
            # Whatever happened, nobody may wait forever for a reply.
            self._startup_done.set()
            self._shutdown_done.set()

    def _app_raised(self, exc: Exception) -> None:
        if self.phase == "failed":
            return  # the app reported it already, often with this very traceback
        if self.mode == "auto" and not self._received:
            # Typical of apps that assert scope["type"] == "http".
            self.supported = False
            self.logger.info("ASGI 'lifespan' protocol appears unsupported.")
            return
        self.logger.error("Exception in 'lifespan' protocol", exc_info=exc)
        self._error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.phase in ("startup", "shutdown"):
            self.phase = "failed"

    async def _receive(self) -> dict[str, Any]:
        self._received = True
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.phase == "startup" and kind in STARTUP_REPLIES:
            done = self._startup_done
            self.phase = "running"
        elif self.phase == "shutdown" and kind in SHUTDOWN_REPLIES:
            done = self._shutdown_done
            self.phase = "done"
        else:
            raise RuntimeError(
                f"Unexpected ASGI lifespan message {kind!r} in phase {self.phase!r}."
            )
        if kind.endswith(".failed"):
            self.phase = "failed"
            self._failure = str(message.get("message") or "")
        done.set()
