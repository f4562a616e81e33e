"""``--reload``: restart the server when source files change (for development).

The parent process binds the listening socket once, watches the directories with
watchfiles, and runs the server in a child process made with the ``spawn`` start method,
so that every child imports the application afresh. After a change it stops the child
(SIGTERM, then SIGKILL after the graceful timeout) and starts a new one on the same socket,
so clients never find the port closed. SIGINT and SIGTERM sent to the parent are passed on
to the child, and the parent exits once the child has. A child that fails (a syntax error
in the edited file) is started again at the next change.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from rsgi import configfile, hooks, logs, process
from rsgi.config import Config, ConfigError
from rsgi.importer import load_app

logger = logging.getLogger("rsgi.error")

DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")
# Directories whose files never trigger a restart.
IGNORED_DIRS = frozenset(
    ("__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", ".mypy_cache", ".pytest_cache")
)
# Seconds a stopped child gets beyond the graceful shutdown timeout before SIGKILL.
KILL_GRACE = 5.0


def run_reloader(config: Config) -> int:
    """Serve with restarts on change until SIGINT or SIGTERM; returns the exit code."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--reload needs the watchfiles package: pip install 'rsgi[standard]' "
            "(or pip install watchfiles)"
        ) from None
    dirs = watched_dirs(config.reload_dirs)
    changes = ChangeFilter(config.reload_includes, config.reload_excludes)
    sockets = listening_sockets(config)
    try:
        return Reloader(config, sockets, dirs, changes).run()
    finally:
        for sock in sockets:
            sock.close()


def watched_dirs(given: Iterable[str]) -> list[Path]:
    dirs: list[Path] = []
    for text in list(given) or [os.getcwd()]:
        path = Path(text).resolve()
        if not path.is_dir():
            logger.warning("Not watching %s for --reload: no such directory", text)
            continue
        # A directory inside another one already watched adds nothing.
        if not any(path == d or d in path.parents for d in dirs):
            dirs = [d for d in dirs if path not in d.parents] + [path]
    if not dirs:
        raise ConfigError("--reload: none of the --reload-dir directories exists")
    return dirs


class ChangeFilter:
    """Which changed paths restart the server: those matching an include glob and no
    exclude glob, outside excluded directories. Globs match from the right of the path,
    as ``pathlib.PurePath.match`` does ("*.py" matches any Python file)."""

    def __init__(self, includes: Iterable[str], excludes: Iterable[str]) -> None:
        includes, excludes = list(includes), list(excludes)
        # A default that the user names on the other side gives way.
        self.includes = [g for g in DEFAULT_INCLUDES if g not in excludes] + includes
        self.excludes: list[str] = []
        self.exclude_dirs: list[Path] = []
        for pattern in [g for g in DEFAULT_EXCLUDES if g not in includes] + excludes:
            if Path(pattern).is_dir():
                self.exclude_dirs.append(Path(pattern).resolve())
            else:
                self.excludes.append(pattern)

    def __call__(self, change: Any, path: str) -> bool:
        return self.matches(Path(path))

    def matches(self, path: Path) -> bool:
        if IGNORED_DIRS.intersection(path.parts[:-1]):
            return False
        if not any(path.match(g) for g in self.includes):
            return False
        if any(path.match(g) for g in self.excludes):
            return False
        return not any(d == path or d in path.parents for d in self.exclude_dirs)


def listening_sockets(config: Config) -> list[socket.socket]:
    """The socket every child serves on, made once by the parent."""
    if config.fd is not None:
        return [socket.socket(fileno=os.dup(config.fd))]
    if config.uds is not None:
        return [bind_unix(config.uds, config.backlog)]
    try:
        return [process.bind_tcp(config.host, config.port, config.backlog)]
    except OSError as exc:
        raise ConfigError(f"cannot bind {config.host}:{config.port}: {exc}") from None


def bind_unix(path: str, backlog: int) -> socket.socket:
    # A socket file left by a dead server would make bind fail; a live one accepts.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        if os.path.exists(path):
            os.unlink(path)
    finally:
        probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {path}: {exc}") from None
    return sock


class Reloader:
    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        dirs: list[Path],
        changes: ChangeFilter,
    ) -> None:
        self.config = config
        self.sockets = sockets
        self.dirs = dirs
        self.changes = changes
        self.context = multiprocessing.get_context("spawn")
        self.child: Any = None
        self.should_exit = threading.Event()
        self.exit_signal = signal.SIGTERM

    def run(self) -> int:
        import watchfiles

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        logger.info("Will watch for changes in these directories: %s", [str(d) for d in self.dirs])
        logger.info("Started reloader process [%d] using WatchFiles", os.getpid())
        self.start_child()
        watcher = watchfiles.watch(
            *self.dirs,
            watch_filter=self.changes,
            stop_event=self.should_exit,
            step=int(self.config.reload_delay * 1000),
            raise_interrupt=False,
        )
        for changed in watcher:
            if self.should_exit.is_set():
                break
            names = sorted({display_path(path) for _, path in changed})
            logger.warning(
                "WatchFiles detected changes in %s. Reloading...", ", ".join(map(repr, names))
            )
            self.stop_child(signal.SIGTERM)
            self.start_child()
        self.stop_child(self.exit_signal)
        logger.info("Stopping reloader process [%d]", os.getpid())
        return 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.exit_signal = signal.Signals(signum)
        self.should_exit.set()

    def start_child(self) -> None:
        self.child = self.context.Process(
            target=run_child,
            args=(configfile.portable(vars(self.config)), self.sockets, os.getpid()),
            name="rsgi-server",
        )
        self.child.start()

    def stop_child(self, sig: int) -> None:
        child = self.child
        if child is None or not child.is_alive():
            return
        os.kill(child.pid, sig)
        child.join(self.config.timeout_graceful_shutdown + KILL_GRACE)
        if child.is_alive():
            logger.warning("Server process [%d] did not stop in time: killing it", child.pid)
            child.kill()
            child.join()


def display_path(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def run_child(values: dict[str, Any], sockets: list[socket.socket], parent: int) -> None:
    """The server process: serves on the parent's socket with the code as it is now.
    ``values`` are the config's fields, with the config file's hooks as where to find them."""
    from rsgi.server import serve

    config = Config.__new__(Config)
    vars(config).update(configfile.restored(values))
    # The core takes ownership of the descriptors.
    fds = [sock.detach() for sock in sockets]
    watch_parent(parent)
    logs.configure(config)
    try:
        app = hooks.serving_app(config, hooks.Worker(config), load_app(config))
        code = serve(config, fds, app=app)
    except ConfigError as exc:
        logger.error("%s", exc)
        code = 1
    sys.exit(code)


def watch_parent(parent: int) -> None:
    """Stops this server if the reloader dies without stopping it (SIGKILL)."""

    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=poll, name="rsgi-parent-watch", daemon=True).start()
