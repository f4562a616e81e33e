"""Typed stub of rsgi's Rust extension module."""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__version__: str

# The worker -> master protocol (src/supervisor/protocol.rs): the bytes a worker writes
# to its status pipe, and the exit code of a worker that could not boot.
READY: bytes
"""The worker serves."""
BEAT: bytes
"""The worker's event loop runs (``--timeout-worker``)."""
RETIRE: bytes
"""The worker reached its request limit and asks for a replacement."""
BOOT_FAILURE: int
"""Exit code of a worker that could not boot; the master then stops with it too."""

class ClientDisconnected(OSError):
    """Raised by ``send()`` once the client has closed the connection."""

class Ready:
    """An awaitable that completes at once, without suspending the caller."""

    def __await__(self) -> Ready: ...
    def __iter__(self) -> Ready: ...
    def __next__(self) -> Any: ...

class HttpCycle:
    """The ``receive``/``send`` pair of one HTTP request. Made by the core only."""

    def receive(self) -> Awaitable[dict[str, Any]]: ...
    def send(self, message: Mapping[str, Any]) -> Awaitable[None]: ...
    def finish(self, failed: bool) -> str | None:
        """Ends the exchange after the app returned (or raised, when ``failed``).

        Sends a 500 if no response started, or cuts the connection if one is
        unfinished. Returns the complaint to log when the app misbehaved.
        """

class WebSocketCycle:
    """The ``receive``/``send`` pair of one WebSocket. Made by the core only."""

    def receive(self) -> Awaitable[dict[str, Any]]: ...
    def send(self, message: Mapping[str, Any]) -> Awaitable[None]: ...
    def finish(self, failed: bool) -> str | None:
        """Ends the WebSocket after the app returned (or raised, when ``failed``).

        Answers 500 if the app neither accepted nor denied it, closes it (1000, or 1011
        after an exception) if it is still open. Returns the complaint to log, if any.
        """

class AppRunner:
    """The coroutine a request's Task runs: drives the app and finishes the exchange."""

    def send(self, value: Any) -> Any: ...
    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any: ...
    def close(self) -> None: ...
    def __await__(self) -> AppRunner: ...
    def __iter__(self) -> AppRunner: ...
    def __next__(self) -> Any: ...

class Core:
    """One worker's HTTP server: listening sockets, the Rust I/O thread, the bridge."""

    def __init__(
        self, config: Any, fds: list[int] | None = None, serve_metrics: bool = True
    ) -> None:
        """Binds the sockets named by ``config`` (an ``rsgi.Config``), or adopts ``fds``.

        ``serve_metrics``: answer ``--metrics-bind`` in this process (a supervised worker
        passes False; its master serves every worker's metrics).
        """
    @property
    def addresses(self) -> list[str]: ...
    def start(
        self,
        event_loop: Any,
        app: Callable[..., Awaitable[None]],
        error_log: Any,
        access_log: int | str | Callable[[str], None] | None,
        state: dict[str, Any] | None,
        access_prefix: str = "",
    ) -> int:
        """Starts the I/O thread; returns the fd to watch with ``loop.add_reader(fd, drain)``."""
    def drain(self) -> None:
        """Handles every event the I/O thread queued."""
    def flush(self) -> None:
        """Wakes the I/O thread for the responses queued during this loop turn."""
    def set_draining(self) -> None:
        """Turns the --health-path answer to 503; serving goes on (shutdown() implies it)."""
    def shutdown(self) -> None:
        """Stops accepting; connections close once their in-flight request is done.
        Returns once nothing more can be accepted: connections() then counts them all."""
    def reopen_logs(self) -> None:
        """Reopens the access log file (USR1, after log rotation)."""
    def connections(self) -> int: ...
    def running(self) -> int: ...
    def requests(self) -> int:
        """Requests ended on the I/O side since the start: a response written, or the
        client gone first. A relaxed atomic load, cheap enough to poll."""
    def close(self) -> None:
        """Stops the I/O thread at once and waits for it."""

class Supervisor:
    """The pre-fork master: binds the sockets, forks and watches the workers."""

    def __init__(self, config: Any) -> None:
        """Binds the sockets named by ``config``, or takes over a previous image's."""
    @property
    def addresses(self) -> list[str]: ...
    @property
    def adopted(self) -> int:
        """Workers left running by the master image this process replaced (HUP)."""
    def run(
        self,
        worker_main: Callable[[list[int], int, int | None, int], Any],
        logger: Any,
        environ: Mapping[str, str] | None = None,
        server_hook: Callable[..., Any] | None = None,
    ) -> int:
        """Runs the master until it stops; returns the exit code."""
    def close(self, logger: Any, code: int) -> int:
        """Gives up without serving (stops adopted workers); returns ``code``."""
