"""``gunicorn -k rsgi.Worker main:app``: rsgi as a gunicorn worker class.

The arbiter (gunicorn's master process) binds the sockets, forks the workers, watches
their heartbeat and replaces them; each worker serves the app on the inherited sockets
with rsgi's Rust core, exactly as ``rsgi`` itself does (``rsgi.server.Server``).

gunicorn's settings are mapped onto an :class:`rsgi.Config` (see
:meth:`RsgiWorker.config_kwargs`); ``CONFIG_KWARGS`` in a subclass overrides or adds
``Config`` fields::

    class MyWorker(rsgi.workers.RsgiWorker):
        CONFIG_KWARGS = {"loop": "asyncio", "threads": 2}

Signals, as gunicorn's own workers treat them: TERM stops gracefully (in-flight requests
get ``graceful_timeout``), INT and QUIT stop at once (after the ``worker_int`` hook), ABRT
(sent by the arbiter when the heartbeat stops) runs ``worker_abort`` and exits, USR1
reopens the log files. The heartbeat is sent from the event loop, so a loop blocked by
the app stops it and the arbiter's ``--timeout`` replaces the worker.

Logs: rsgi's records go to gunicorn's error log; access lines are formatted by the core in
gunicorn's ``access_log_format`` and written where gunicorn's access log goes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker as GunicornWorker

from rsgi.config import C_INT_MAX, Config, ConfigError, env_values, settings
from rsgi.hooks import with_request_hooks
from rsgi.logs import LEVELS
from rsgi.server import Server, new_event_loop

logger = logging.getLogger("rsgi.error")

__all__ = ["RsgiWorker", "Worker"]


class RsgiWorker(GunicornWorker):
    """A gunicorn worker that serves an ASGI app with rsgi's Rust core."""

    #: Extra ``rsgi.Config`` keyword arguments; they win over the values mapped from
    #: gunicorn's settings. Override in a subclass.
    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "lifespan": "auto"}

    #: Seconds between heartbeats while max_requests is off, and while it is on (the request
    #: count is checked on the same tick, so a shorter one overshoots max_requests less).
    HEARTBEAT = 1.0
    HEARTBEAT_MAX_REQUESTS = 0.1
    #: limit_max_rss: seconds between two looks at the worker's resident memory, and how
    #: many looks in a row must find it over the limit (a short peak is not a leak).
    RSS_EVERY = 1.0
    RSS_SAMPLES = 2

    _rss_next = 0.0
    _rss_over = 0

    server: _WorkerServer | None = None
    _ticker: asyncio.TimerHandle | None = None

    # -- settings ---------------------------------------------------------------

    def config_kwargs(self) -> dict[str, Any]:
        """``rsgi.Config`` keyword arguments from gunicorn's settings, then CONFIG_KWARGS.

        ``app`` is not among them: it is the application gunicorn loaded (``self.wsgi``).
        """
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            # The arbiter already applied bind and backlog to the sockets it hands over.
            "backlog": cfg.backlog,
            "timeout_keep_alive": float(cfg.keepalive),
            "timeout_graceful_shutdown": float(cfg.graceful_timeout),
            **request_limits(cfg),
            "limit_concurrency": cfg.worker_connections or None,
            "forwarded_allow_ips": ",".join(str(ip) for ip in cfg.forwarded_allow_ips),
            "root_path": getattr(cfg, "root_path", "") or os.environ.get("SCRIPT_NAME", ""),
            "log_level": cfg.loglevel.lower() if cfg.loglevel.lower() in LEVELS else "info",
            "access_log": self.access_log_wanted(),
            "access_log_format": cfg.access_log_format,
            **rsgi_only_kwargs(os.environ),
        }
        if cfg.is_ssl:
            kwargs.update(self.ssl_kwargs())
        kwargs.update(self.CONFIG_KWARGS)
        return kwargs

    def ssl_kwargs(self) -> dict[str, Any]:
        """gunicorn's --certfile, --keyfile, --ca-certs and --cert-reqs as Config's ssl_*.

        Without TLS in this rsgi (no ssl_certfile setting), refuse rather than serve plain
        HTTP where HTTPS was asked for.
        """
        if "ssl_certfile" not in {s.name for s in settings()}:
            raise ConfigError(
                "--certfile/--keyfile: this rsgi has no TLS support; not serving plain HTTP"
            )
        ssl = self.cfg.ssl_options
        if ssl.get("ciphers"):
            logger.warning("--ciphers is ignored: rsgi's TLS uses its own cipher suites.")
        return {
            "ssl_certfile": ssl.get("certfile"),
            "ssl_keyfile": ssl.get("keyfile"),
            "ssl_ca_certs": ssl.get("ca_certs"),
            "ssl_cert_reqs": int(ssl.get("cert_reqs") or 0),
        }

    def access_log_wanted(self) -> bool:
        """Whether gunicorn logs access lines: an access log file, or a logging config or
        syslog that may take them (gunicorn logs none by default)."""
        enabled = getattr(self.log, "access_log_enabled", None)
        return bool(self.cfg.accesslog if enabled is None else enabled)

    def access_target(self) -> tuple[Any, str] | None:
        """Where the core writes the access lines it formats in gunicorn's access_log_format.

        When gunicorn's access logger has nothing but its own file or stdout handler with
        its plain ``%(message)s`` format, the core's I/O thread writes that file (or fd 1)
        itself, in batches. Otherwise (syslog, a logging config, a logger class) each line
        goes through gunicorn's access logger, on the loop thread.
        """
        if not self.access_log_wanted():
            return None
        access = getattr(self.log, "access_log", None) or logging.getLogger("gunicorn.access")
        handlers = access.handlers
        if (
            len(handlers) == 1
            and getattr(handlers[0], "_gunicorn", False)
            and not access.filters
            and not handlers[0].filters
            and access.isEnabledFor(logging.INFO)
            and handlers[0].level <= logging.INFO
            and getattr(handlers[0].formatter, "_fmt", None) == "%(message)s"
        ):
            handler = handlers[0]
            if isinstance(handler, logging.FileHandler):
                return handler.baseFilename, ""
            if getattr(handler, "stream", None) is sys.stdout:
                return 1, ""
        return access.info, ""

    # -- process setup -----------------------------------------------------------

    def init_process(self) -> None:
        # In the worker process, before the app is imported: its log records go to
        # gunicorn's error log from the start.
        route_rsgi_logs(self.log, self.cfg)
        super().init_process()

    def run(self) -> None:
        try:
            config = Config(**{"app": self.wsgi, **self.config_kwargs()})
            loop = new_event_loop(config.loop)
        except ConfigError as exc:
            self.log.error("rsgi worker: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        asyncio.set_event_loop(loop)
        try:
            code = loop.run_until_complete(self.serve(config))
        finally:
            if self._ticker is not None:
                self._ticker.cancel()
            loop.close()
        if code:
            # Lifespan startup failed (or the sockets could not be adopted): the arbiter
            # stops with "Worker failed to boot." rather than respawning forever.
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    async def serve(self, config: Config) -> int:
        loop = asyncio.get_running_loop()
        # Duplicates: the core owns (and closes) the descriptors it is given, while
        # gunicorn's socket objects keep theirs.
        fds = [os.dup(s.fileno()) for s in self.sockets]
        app = self.wsgi
        pre, post = self.request_hooks()
        if pre is not None or post is not None:
            app = with_request_hooks(app, self, pre, post)
        self.server = _WorkerServer(self, config, app, fds)
        loop.add_signal_handler(signal.SIGTERM, self.stop_gracefully)
        loop.add_signal_handler(signal.SIGINT, self.stop_quickly)
        loop.add_signal_handler(signal.SIGQUIT, self.stop_quickly)
        # USR1: gunicorn's handler (reopen its files) until the core starts, then the
        # server's (gunicorn's files and the core's access log file).
        # ABRT keeps gunicorn's Python-level handler (handle_abort): it must run even while
        # the app blocks the loop, which is exactly when the arbiter sends it.
        self.tick()
        if not self.alive:  # stopped while the app was being imported
            self.server.request_stop()
        try:
            return await self.server.run()
        finally:
            for fd in fds:
                # Normally the core closed them; a failure before it adopted them did not.
                try:
                    os.close(fd)
                except OSError:
                    pass

    # -- heartbeat -----------------------------------------------------------------

    def tick(self) -> None:
        """The heartbeat: tells the arbiter the loop is alive, and checks max_requests,
        limit_max_rss and the parent process. Runs on the event loop, so a blocked loop
        misses it."""
        self.notify()
        server = self.server
        if server is not None and server.core is not None:
            self.nr = server.core.requests()
            if self.alive and self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            limit = server.config.limit_max_rss
            if self.alive and limit is not None and self.rss_over(limit):
                self.alive = False
        if self.alive and self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False
        if not self.alive and server is not None and not server.stop.is_set():
            # Whoever cleared ``alive`` (the above, gunicorn's reloader thread) meant a stop.
            server.request_stop()
        interval = self.HEARTBEAT_MAX_REQUESTS if self.cfg.max_requests > 0 else self.HEARTBEAT
        if self.timeout:
            # gunicorn passes half its --timeout: beat at least that often.
            interval = min(interval, self.timeout)
        self._ticker = asyncio.get_running_loop().call_later(interval, self.tick)

    def rss_over(self, limit: int) -> bool:
        """Whether the resident memory stayed over ``limit`` MiB for RSS_SAMPLES looks in a
        row, looking once every RSS_EVERY seconds (the heartbeat may come more often). Then
        the worker stops gracefully, as at max_requests, and the arbiter replaces it."""
        now = time.monotonic()
        if now < self._rss_next:
            return False
        self._rss_next = now + self.RSS_EVERY
        rss = resident_bytes()
        if rss is None or rss <= limit * MIB:
            self._rss_over = 0
            return False
        self._rss_over += 1
        if self._rss_over < self.RSS_SAMPLES:
            return False
        self.log.info(
            "Worker [%d] uses %d MiB, over limit_max_rss %d (RSGI_LIMIT_MAX_RSS): "
            "restarting it after its current requests.",
            os.getpid(),
            -(-rss // MIB),
            limit,
        )
        return True

    # -- signals -------------------------------------------------------------------

    def stop_gracefully(self) -> None:
        self.alive = False
        if self.server is not None:
            self.server.request_stop()

    def stop_quickly(self) -> None:
        self.alive = False
        try:
            self.cfg.worker_int(self)
        except Exception:
            self.log.exception("Exception in worker_int hook")
        if self.server is not None:
            self.server.request_stop(force=True)

    # -- access log and request hooks ----------------------------------------------

    def request_hooks(self) -> tuple[Any, Any]:
        """The pre_request and post_request hooks to call, None where calling would do
        nothing (gunicorn's defaults: pre_request logs at debug level, post_request is
        empty)."""
        settings = self.cfg.settings

        def configured(name: str) -> Any:
            hook = settings[name].get()
            return None if hook is settings[name].default else hook

        pre, post = configured("pre_request"), configured("post_request")
        if pre is None and self.log_debug_enabled():
            pre = settings["pre_request"].get()
        return pre, post

    def log_debug_enabled(self) -> bool:
        error_log = getattr(self.log, "error_log", None)
        return error_log is not None and error_log.isEnabledFor(logging.DEBUG)


#: ``gunicorn -k rsgi.Worker``.
Worker = RsgiWorker

MIB = 1 << 20
#: rsgi settings gunicorn has no name for: read from their RSGI_* variables.
RSGI_ONLY = ("limit_max_rss",)


def rsgi_only_kwargs(environ: Mapping[str, str]) -> dict[str, Any]:
    """Config keyword arguments for RSGI_ONLY, from the environment."""
    names = {name for s in settings() if s.name in RSGI_ONLY for name in s.env_names}
    return env_values({key: value for key, value in environ.items() if key in names})


def resident_bytes() -> int | None:
    """This process's resident set size (``/proc/self/statm``); None without /proc."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


# gunicorn's bounds on its request limits (gunicorn/http/message.py).
GUNICORN_MAX_REQUEST_LINE = 8190
GUNICORN_MAX_HEADERS = 32768
GUNICORN_DEFAULT_FIELD_SIZE = 8190


def request_limits(cfg: Any) -> dict[str, int]:
    """gunicorn's request limits, with the meaning gunicorn gives them: a request line of
    0 is unlimited (rsgi's cap on the whole head still applies) and above 8190 is 8190; 0
    or more than 32768 fields is 32768; a field size of 0 is the default, 8190."""
    line = cfg.limit_request_line
    fields = cfg.limit_request_fields
    field_size = cfg.limit_request_field_size
    return {
        "limit_request_line": (
            C_INT_MAX if line == 0 else min(max(line, 1), GUNICORN_MAX_REQUEST_LINE)
        ),
        "limit_request_fields": (
            fields if 0 < fields <= GUNICORN_MAX_HEADERS else GUNICORN_MAX_HEADERS
        ),
        "limit_request_field_size": field_size if field_size > 0 else GUNICORN_DEFAULT_FIELD_SIZE,
    }


class _WorkerServer(Server):
    """``rsgi.server.Server`` as the gunicorn worker drives it."""

    def __init__(self, worker: RsgiWorker, config: Config, app: Any, fds: list[int]) -> None:
        super().__init__(config, app, fds)
        self.worker = worker

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        pass  # the worker installed gunicorn's signal handling before startup

    def access_target(self) -> tuple[Any, str] | None:
        return self.worker.access_target()

    def reopen_logs(self, core: Any) -> None:
        # gunicorn's own files (its error log, its access log handler), then the core's.
        self.worker.log.reopen_files()
        super().reopen_logs(core)

    def started(self, core: Any) -> None:
        for address in core.addresses:
            logger.debug("rsgi worker serving on %s", address)


# -- logging -----------------------------------------------------------------------


class GunicornLogHandler(logging.Handler):
    """Hands log records to gunicorn's logger object (``worker.log``), so that they reach
    its error log: its handlers, files, syslog and logger class (statsd)."""

    def __init__(self, glog: Any) -> None:
        super().__init__()
        self.glog = glog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.glog.log(
                record.levelno,
                "%s",
                record.getMessage(),
                exc_info=record.exc_info,
                stack_info=record.stack_info,
            )
        except Exception:
            self.handleError(record)


def route_rsgi_logs(glog: Any, cfg: Any) -> None:
    """Sends the ``rsgi`` loggers to gunicorn's error log, unless gunicorn's log config
    already gave them handlers."""
    root = logging.getLogger("rsgi")
    level = LEVELS.get(str(cfg.loglevel).lower(), logging.INFO)
    if not root.handlers:
        root.addHandler(GunicornLogHandler(glog))
        root.propagate = False
        root.setLevel(level)
    for name in ("rsgi.error", "rsgi.access"):
        child = logging.getLogger(name)
        child.disabled = False
        if not child.handlers:
            child.propagate = True
