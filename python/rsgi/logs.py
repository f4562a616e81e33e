"""Logging setup for the two rsgi loggers.

- ``rsgi.error``: server messages and tracebacks, to stderr.
- ``rsgi.access``: one already-formatted line per request, to stdout.

Both are children of ``rsgi``, which also catches any other ``rsgi.*`` logger.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
from typing import IO, Any

from rsgi.config import ConfigError

TRACE_LEVEL = 5
logging.addLevelName(TRACE_LEVEL, "TRACE")

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE_LEVEL,
}

# ANSI SGR colour codes per level.
COLOURS = {
    TRACE_LEVEL: "34",
    logging.DEBUG: "36",
    logging.INFO: "32",
    logging.WARNING: "33",
    logging.ERROR: "31",
    logging.CRITICAL: "91",
}

DEFAULT_FORMAT = "%(levelprefix)s %(message)s"
SERVER_LOGGERS = ("rsgi", "rsgi.error", "rsgi.access")


def wants_colour(stream: IO[str] | None) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class LevelFormatter(logging.Formatter):
    """A Formatter that also provides ``%(levelprefix)s``, e.g. ``"INFO:    "``.

    The level name and colon are padded to line messages up in one column.
    ``use_colors=None`` colours when stderr is a terminal.
    """

    def __init__(
        self,
        fmt: str | None = DEFAULT_FORMAT,
        datefmt: str | None = None,
        style: str = "%",
        use_colors: bool | None = None,
    ) -> None:
        super().__init__(fmt, datefmt, style)  # type: ignore[arg-type]
        self.use_colors = wants_colour(sys.stderr) if use_colors is None else use_colors

    def formatMessage(self, record: logging.LogRecord) -> str:
        name = record.levelname
        padding = " " * max(0, 8 - len(name))
        if self.use_colors and record.levelno in COLOURS:
            name = f"\x1b[{COLOURS[record.levelno]}m{name}\x1b[0m"
        record.levelprefix = f"{name}:{padding}"
        return super().formatMessage(record)


def default_config() -> dict[str, Any]:
    """The dictConfig used when no --log-config is given."""

    def formatter(stream: IO[str]) -> dict[str, Any]:
        return {"()": LevelFormatter, "fmt": DEFAULT_FORMAT, "use_colors": wants_colour(stream)}

    def handler(formatter_name: str, stream: str) -> dict[str, Any]:
        return {"class": "logging.StreamHandler", "formatter": formatter_name, "stream": stream}

    return {
        "version": 1,
        # The app may have created its loggers already; leave them working.
        "disable_existing_loggers": False,
        "formatters": {"default": formatter(sys.stderr), "access": formatter(sys.stdout)},
        "handlers": {
            "default": handler("default", "ext://sys.stderr"),
            "access": handler("access", "ext://sys.stdout"),
        },
        "loggers": {
            "rsgi": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "rsgi.error": {"level": "INFO", "propagate": True},
            "rsgi.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def configure(config: Any) -> None:
    """Set up logging from a Config: log_config, log_level and access_log."""
    log_config = config.log_config
    if log_config is None:
        logging.config.dictConfig(default_config())
    else:
        try:
            apply_log_config(log_config)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"Unable to configure logging from {log_config!r}: {exc}") from exc
    apply_level(LEVELS[config.log_level], respect_existing=log_config is not None)
    set_access_log(config.access_log)
    if log_config is None:
        use_error_file(config.error_logfile, config.log_format)


def apply_log_config(log_config: str | dict[str, Any]) -> None:
    if isinstance(log_config, dict):
        logging.config.dictConfig(log_config)
        return
    if not os.path.isfile(log_config):
        raise ConfigError(f'Log config file "{log_config}" not found.')
    extension = os.path.splitext(log_config)[1].lower()
    if extension == ".json":
        with open(log_config, encoding="utf-8") as file:
            logging.config.dictConfig(json.load(file))
    elif extension in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f'Log config "{log_config}" is YAML, which needs PyYAML (pip install pyyaml).'
            ) from None
        with open(log_config, encoding="utf-8") as file:
            logging.config.dictConfig(yaml.safe_load(file))
    else:
        logging.config.fileConfig(log_config, disable_existing_loggers=False)


def apply_level(level: int, respect_existing: bool) -> None:
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        # A level the user's log config chose explicitly is more specific than --log-level.
        if respect_existing and logger.level != logging.NOTSET:
            continue
        logger.setLevel(level)


def set_access_log(enabled: bool) -> None:
    access = logging.getLogger("rsgi.access")
    if enabled:
        access.disabled = False
        return
    # Drop the handlers and stop propagation too, so no handler on "rsgi" or the
    # root logger prints access lines; the server can skip formatting them.
    access.handlers.clear()
    access.propagate = False
    access.setLevel(logging.CRITICAL + 1)
    access.disabled = True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the fields log shippers index."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        import datetime

        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class ReopenableFileHandler(logging.FileHandler):
    """A FileHandler that reopens its file on USR1, after logrotate moved it away."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def use_error_file(path: str | None, log_format: str) -> None:
    """Points the server log at ``path`` (None or "-": stderr) and sets its format."""
    server = logging.getLogger("rsgi")
    if path not in (None, "-"):
        handler: logging.Handler = ReopenableFileHandler(os.path.abspath(path), encoding="utf-8")
        handler.setFormatter(LevelFormatter(use_colors=False))
        for old in list(server.handlers):
            server.removeHandler(old)
        server.addHandler(handler)
    if log_format == "json":
        for handler in server.handlers:
            handler.setFormatter(JsonFormatter())


def access_target(config: Any) -> tuple[Any, str] | None:
    """Where the Rust core writes access lines, and the text before each.

    A file or stdout is written by the core's I/O thread, in batches; a custom logging
    configuration gets the lines through the ``rsgi.access`` logger instead.
    """
    access = logging.getLogger("rsgi.access")
    if not config.access_log or not access.isEnabledFor(logging.INFO):
        return None
    if config.log_config is not None:
        return access.info, ""
    if config.access_logfile not in (None, "-"):
        return os.path.abspath(config.access_logfile), ""
    if config.log_format == "json":
        return 1, ""
    return 1, level_prefix("INFO", wants_colour(sys.stdout))


def level_prefix(name: str, colour: bool) -> str:
    """The text LevelFormatter puts before a message of this level."""
    padding = " " * max(0, 8 - len(name))
    if colour:
        name = f"\x1b[{COLOURS[logging.getLevelName(name)]}m{name}\x1b[0m"
    return f"{name}:{padding} "


def reopen_files() -> None:
    """Reopens every log file rsgi opened (USR1)."""
    for name in SERVER_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, ReopenableFileHandler):
                handler.reopen()
    if _captured is not None:
        redirect_output(_captured)


#: The error log file that --capture-output sends stdout and stderr to.
_captured: str | None = None


def capture_output(config: Any) -> None:
    """--capture-output: points file descriptors 1 and 2 at the error log file."""
    global _captured
    if not config.capture_output or config.error_logfile in (None, "-"):
        return
    _captured = os.path.abspath(config.error_logfile)
    redirect_output(_captured)


def redirect_output(path: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
