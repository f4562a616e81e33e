"""The Python half of ``rsgi -w N``.

The master is ``rsgi._rsgi.Supervisor`` (Rust, src/supervisor/): it binds the sockets,
forks the workers, watches them and handles the signals. :func:`run` starts it; each
forked worker runs :func:`worker_main`, which serves with :func:`rsgi.server.serve` on
the inherited sockets and tells the master, through a pipe, that it serves (``R``),
that its event loop runs (``.``, with ``--timeout-worker``) and that it reached its
request limit (``M``).

The master stops a worker gracefully with TERM when the whole server stops (the worker
serves on for ``--shutdown-delay`` first), and with USR2 when another worker replaces it
(reload, request limit, TTOU): the server goes on serving, so there is no delay.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import faulthandler
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from rsgi import _rsgi, hooks, process
from rsgi.config import Config, ConfigError
from rsgi.importer import load_app
from rsgi.server import Server, serve

logger = logging.getLogger("rsgi.error")

# What a worker tells its master, defined once in Rust (src/supervisor/protocol.rs).
#: Exit code of a worker that cannot boot; the master then stops with it too.
BOOT_FAILURE = _rsgi.BOOT_FAILURE
READY = _rsgi.READY
BEAT = _rsgi.BEAT
RETIRE = _rsgi.RETIRE

# Variables meant for the master process alone (see src/supervisor/state.rs).
MASTER_ONLY_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "RSGI_MASTER_STATE")


def run(config: Config, environ: Mapping[str, str] | None = None) -> int:
    """Run the master until it stops; returns the exit code.

    ``environ`` is the environment a HUP with ``--preload`` re-executes the master
    with (by default the current one): the caller passes it from before the env file
    was loaded, so that a reload reads the env file again.
    """
    set_title("master", config)
    # Several --bind addresses are bound here and handed over; a master image that a HUP
    # re-executed takes over its predecessor's sockets instead.
    fds = None
    if config.bind and not reexecuted():
        fds = [sock.detach() for sock in process.bind_all(config)]
    try:
        supervisor = _rsgi.Supervisor(config, fds) if fds else _rsgi.Supervisor(config)
    except OSError as exc:
        logger.error("%s", exc)
        return 1
    try:
        return supervise(supervisor, config, environ)
    finally:
        if config.bind:
            process.remove_socket_files(config)


def reexecuted() -> bool:
    """Whether this process is a master image that a HUP (with --preload) re-executed."""
    state = os.environ.get("RSGI_MASTER_STATE", "")
    return state.startswith(f"pid={os.getpid()};")


def supervise(supervisor: Any, config: Config, environ: Mapping[str, str] | None) -> int:
    # The Rust side took these from the process environment; os.environ is a copy.
    for name in MASTER_ONLY_ENV:
        os.environ.pop(name, None)
    master = hooks.Master(config)
    # The workers' user must be able to write the access log the master creates.
    process.hand_over(config, config.access_logfile)
    app = None
    if config.preload:
        try:
            app = load_app(config)
        except BaseException as exc:
            if not supervisor.adopted:
                supervisor.close(logger, 1)
                raise
            # A HUP re-executed this master, and the new code does not import: the
            # previous image's workers are all there is, and they cannot be replaced.
            logger.error("Reload failed: cannot load the application", exc_info=exc)
            return supervisor.close(logger, BOOT_FAILURE)
    env = dict(os.environ if environ is None else environ)
    for name in MASTER_ONLY_ENV:
        env.pop(name, None)
    main = functools.partial(worker_main, config, app)
    server_hook = functools.partial(master_hook, config, master)
    hooks.call(config, "when_ready", master)
    try:
        return supervisor.run(main, logger, env, server_hook)
    except OSError as exc:  # e.g. the pid file
        logger.error("%s", exc)
        return 1


def master_hook(config: Config, master: hooks.Master, name: str, *numbers: int) -> None:
    """Calls the master's server hook ``name`` with what the Rust master passes: a worker's
    serial (and, once forked, its pid), or nworkers_changed's new and old counts."""
    if name in ("pre_fork", "child_exit"):
        serial, *pid = numbers
        worker = hooks.Worker.in_master(config, serial, pid[0] if pid else None)
        hooks.call(config, name, master, worker)
        return
    if name == "nworkers_changed":
        master.num_workers = numbers[0]
    hooks.call(config, name, master, *numbers)


def worker_main(
    config: Config,
    app: Any,
    fds: list[int],
    channel: int,
    max_requests: int | None,
    serial: int,
) -> NoReturn:
    """A forked worker's whole life; ends the process with the worker's exit code."""
    code = 1
    master = hooks.Master(config, os.getppid())
    factory = functools.partial(
        WorkerServer, channel=channel, max_requests=max_requests, serial=serial
    )
    try:
        code = run_worker(config, app, fds, factory, serial, master)
    except SystemExit as exc:
        code = exit_code(exc.code)
    except BaseException:
        logger.exception("Worker [%d] failed", os.getpid())
    finally:
        hooks.call(config, "worker_exit", master, hooks.Worker(config, serial))
        exit_now(code)


def run_worker(
    config: Config,
    app: Any,
    fds: list[int],
    factory: Callable[..., WorkerServer],
    serial: int,
    master: hooks.Master,
) -> int:
    # The master handles the terminal's Ctrl-C and Ctrl-\ and the control signals; the
    # event loop installs the worker's own handlers once it serves. Until then the master's
    # TERM and USR2 (stop, see the module's docstring) end the worker.
    for signum in (
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGUSR1,
    ):
        signal.signal(signum, signal.SIG_IGN)
    set_title(f"worker {serial}", config)
    handle_abort(config, serial)
    # --timeout-worker ends a hung worker with SIGABRT: write every thread's stack first.
    with contextlib.suppress(Exception):
        faulthandler.enable(file=sys.stderr, all_threads=True)
    hooks.call(config, "post_fork", master, hooks.Worker(config, serial))
    # --user and --group: after the sockets were bound (by the master) and before the app
    # is loaded, as gunicorn's workers do.
    try:
        process.drop_privileges(config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return BOOT_FAILURE
    if app is None:
        try:
            app = load_app(config)
        except ConfigError as exc:
            logger.error("%s", exc)
            return BOOT_FAILURE
        except Exception as exc:
            logger.error("Error loading the application", exc_info=exc)
            return BOOT_FAILURE
    app = hooks.serving_app(config, hooks.Worker(config, serial), app)
    try:
        return serve(config, fds, app=app, factory=factory)
    except ConfigError as exc:
        logger.error("%s", exc)
        return BOOT_FAILURE


def handle_abort(config: Config, serial: int) -> None:
    """gunicorn's worker_abort hook, on the SIGABRT of --timeout-worker. Installed before
    faulthandler, which writes the stacks at once and then hands the signal on to this
    handler: it runs once the main thread runs Python code, then the worker dies of the
    SIGABRT as it would without the hook."""
    if config.worker_abort is None:
        return

    def aborted(signum: int, frame: Any) -> None:
        hooks.call(config, "worker_abort", hooks.Worker(config, serial))
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGABRT)

    signal.signal(signal.SIGABRT, aborted)


class WorkerServer(Server):
    """A worker under the master: reports that it serves, heartbeats and its request
    count through its pipe, and takes its stop signals from the master."""

    # The master answers --metrics-bind for every worker.
    SERVE_METRICS = False

    def __init__(
        self,
        config: Config,
        app: Any,
        fds: list[int] | None,
        *,
        channel: int,
        max_requests: int | None,
        serial: int,
    ) -> None:
        super().__init__(config, app, fds)
        self.serial = serial
        self.channel = channel
        self.max_requests = max_requests
        self.master = os.getppid()
        self.retiring = False
        timeout = config.timeout_worker
        # Heartbeats often enough that a late one is not mistaken for a hung loop.
        self.beat_every = min(1.0, timeout / 4) if timeout else None
        self.tick_every = self.beat_every or 1.0
        if max_requests is not None:
            self.tick_every = min(self.tick_every, 0.1)
        self.next_beat = 0.0

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        # TERM (from the master) and INT both stop gracefully, and a second one does not
        # escalate: the terminal's Ctrl-C reaches the worker as well as the master, which
        # forwards it. USR2 (the master replaces this worker) stops gracefully without
        # --shutdown-delay. QUIT (the master's quick stop) does not wait for requests. USR1
        # (reopen the log files) is the server's own, installed once its core exists. INT
        # and QUIT call the worker_int hook first, as in gunicorn's workers.
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.interrupted, False)
        loop.add_signal_handler(signal.SIGUSR2, functools.partial(self.request_stop, delay=False))
        loop.add_signal_handler(signal.SIGQUIT, self.interrupted, True)

    def interrupted(self, force: bool) -> None:
        self.worker_int()
        self.request_stop(force)

    def started(self, core: _rsgi.Core) -> None:
        # The master logged the addresses.
        self.send(READY)
        self.tick()

    def tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.beat_every is not None and now >= self.next_beat:
            self.send(BEAT)
            self.next_beat = now + self.beat_every
        if self.max_requests is not None and not self.retiring and self.core is not None:
            served = self.core.requests()
            if served >= self.max_requests:
                self.retiring = True
                logger.info(
                    "Worker [%d] served %d requests: asking for a replacement",
                    os.getpid(),
                    served,
                )
                self.send(RETIRE)
        if os.getppid() != self.master:
            logger.warning("The master process [%d] is gone: shutting down", self.master)
            self.master = os.getppid()
            self.request_stop()
        loop.call_later(self.tick_every, self.tick)

    def send(self, message: bytes) -> None:
        try:
            os.write(self.channel, message)
        except OSError:
            # A full pipe (the master is behind; a heartbeat can be dropped) or a dead master.
            pass


def set_title(role: str, config: Config) -> None:
    """Name the process in ps and top, when setproctitle is installed."""
    try:
        import setproctitle
    except ImportError:
        return
    name = config.proc_name
    if name is None:
        name = config.app if isinstance(config.app, str) else type(config.app).__name__
    setproctitle.setproctitle(f"rsgi: {role} [{name}]")


def exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: int) -> NoReturn:
    """Run the atexit functions and flush, then leave without unwinding into the master's
    stack frames, which a forked worker also has."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
