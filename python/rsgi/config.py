"""Every rsgi setting, declared once.

Each field of :class:`Config` carries an :class:`Option` in its metadata. The
command line (:func:`build_parser`), the ``RSGI_*`` environment variables
(:func:`env_values`), ``rsgi.run(**kwargs)`` and the README's options table are
all generated from those fields, so a setting added here shows up everywhere.

The Rust core reads the settings by attribute name: keep the names stable.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import math
import os
import platform
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

ENV_PREFIX = "RSGI_"
C_INT_MAX = 2**31 - 1  # fd and backlog are C ints in the Rust core
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOOPS = ("auto", "asyncio", "uvloop")
LIFESPANS = ("auto", "on", "off")
# uvicorn's --ws values: every one but "none" selects rsgi's own (Rust) implementation.
WS_IMPLEMENTATIONS = ("auto", "none", "websockets", "websockets-sansio", "wsproto")

# RFC 9110 token characters: anything else in a header name would let a value
# smuggle a second header or break the response head.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class ConfigError(ValueError):
    """A setting has a bad value. The message is one line, fit for a CLI error."""


class AppLoadError(ConfigError):
    """The ASGI application could not be imported or built."""


# -- parsers: text (from the CLI or the environment) to a value -------------


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def parse_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def parse_str(text: str) -> str:
    return text


def parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon:
        raise ValueError(f'header {text!r} must be in the form "NAME:VALUE"')
    return name.strip(), value.strip()


def parse_header_lines(text: str) -> list[tuple[str, str]]:
    """Parse RSGI_HEADER: one NAME:VALUE per line.

    Lines rather than ";" because the headers people set server-wide
    (Strict-Transport-Security, Content-Security-Policy) have ";" in them.
    """
    return parse_lines(parse_header)(text)


def parse_lines(parse: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """The environment variable of a repeatable option holds one value per line."""

    def parse_each(text: str) -> list[Any]:
        return [parse(line.strip()) for line in text.splitlines() if line.strip()]

    return parse_each


# -- the option table ---------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """How one Config field appears on the CLI, in the environment and in docs."""

    help: str
    group: str
    parse: Callable[[str], Any] = parse_str
    flags: tuple[str, ...] = ()  # default: ("--<field-name>",)
    positional: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    optional: bool = False  # None is a valid value
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # strictly greater than zero
    repeat: bool = False  # the flag may be given several times; values form a list
    env_aliases: tuple[str, ...] = ()  # read after RSGI_<NAME>, e.g. WEB_CONCURRENCY


def option(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    if isinstance(default, list):
        # Dataclasses refuse mutable defaults; give every Config its own list.
        items = list(default)
        return field(default_factory=lambda: list(items), metadata={"option": Option(**meta)})
    return field(default=default, metadata={"option": Option(**meta)})


APPLICATION = "Application"
BINDING = "Socket binding"
HTTP = "HTTP"
PROXY = "Proxies"
LIMITS = "Limits"
WEBSOCKET = "WebSocket"
LOGGING = "Logging"
PROCESSES = "Processes and timeouts"
TLS = "TLS"
DEVELOPMENT = "Development"
# As Python's ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED (uvicorn's --ssl-cert-reqs values).
CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED = 0, 1, 2


@dataclass
class Config:
    """Settings for one rsgi server. Construct with keyword arguments."""

    app: Any = option(
        help='The ASGI application, as "<module>:<attribute>" (e.g. "main:app"). '
        "From Python it may also be the application object itself.",
        group=APPLICATION,
        positional=True,
        metavar="APP",
    )
    factory: bool = option(
        False,
        help="Treat APP as a factory: call it with no arguments to get the application.",
        group=APPLICATION,
        parse=parse_bool,
    )
    app_dir: str = option(
        ".",
        help="Directory put first on sys.path before importing APP.",
        group=APPLICATION,
        metavar="DIR",
    )
    env_file: str | None = option(
        None,
        help="File of KEY=VALUE lines loaded into the environment before the app is "
        "imported. Variables already set are kept.",
        group=APPLICATION,
        optional=True,
        metavar="PATH",
    )
    lifespan: str = option(
        "auto",
        help='ASGI lifespan protocol: "auto" runs it if the app supports it, "on" '
        'requires it, "off" skips it.',
        group=APPLICATION,
        choices=LIFESPANS,
    )
    loop: str = option(
        "auto",
        help='Event loop: "auto" uses uvloop when it is installed, else asyncio.',
        group=APPLICATION,
        choices=LOOPS,
    )
    root_path: str = option(
        "",
        help='ASGI "root_path": the path prefix under which a proxy mounts the app.',
        group=APPLICATION,
        metavar="PATH",
    )
    host: str = option(
        "127.0.0.1",
        help='Address to bind. Use "0.0.0.0" for all IPv4 interfaces, "::" for IPv6.',
        group=BINDING,
    )
    port: int = option(
        8000,
        help="TCP port to bind; 0 picks a free port.",
        group=BINDING,
        parse=parse_int,
        minimum=0,
        maximum=65535,
    )
    uds: str | None = option(
        None,
        help="Bind a Unix domain socket at this path instead of host/port.",
        group=BINDING,
        optional=True,
        metavar="PATH",
    )
    fd: int | None = option(
        None,
        help="Serve on an already-listening socket inherited as this file descriptor.",
        group=BINDING,
        parse=parse_int,
        optional=True,
        minimum=0,
        maximum=C_INT_MAX,
    )
    backlog: int = option(
        2048,
        help="Maximum number of connections waiting to be accepted.",
        group=BINDING,
        parse=parse_int,
        minimum=1,
        maximum=C_INT_MAX,
    )
    reuse_port: bool = option(
        False,
        help="With several workers, give each worker its own SO_REUSEPORT socket on "
        "host/port instead of one shared socket: the kernel spreads connections evenly, "
        "but connections queued on a worker that stops can be reset.",
        group=BINDING,
        parse=parse_bool,
    )
    headers: list[tuple[str, str]] = option(
        [],
        help="Extra response header, as NAME:VALUE. Repeat for several. "
        "In RSGI_HEADER put one NAME:VALUE per line.",
        group=HTTP,
        parse=parse_header,
        flags=("--header",),
        repeat=True,
        metavar="NAME:VALUE",
    )
    server_header: bool = option(
        True,
        help='Send "Server: rsgi" in responses.',
        group=HTTP,
        parse=parse_bool,
    )
    date_header: bool = option(
        True,
        help='Send a "Date" header in responses.',
        group=HTTP,
        parse=parse_bool,
    )
    proxy_headers: bool = option(
        True,
        help="Take the client address and scheme from X-Forwarded-For/X-Forwarded-Proto "
        "and Forwarded (RFC 7239), from trusted peers only (see --forwarded-allow-ips).",
        group=PROXY,
        parse=parse_bool,
    )
    forwarded_allow_ips: str = option(
        "127.0.0.1",
        help="Peers trusted to send proxy headers: a comma list of IPs and CIDRs, '*' for "
        "all, 'unix' for unix-socket peers.",
        group=PROXY,
        env_aliases=("FORWARDED_ALLOW_IPS",),
        metavar="LIST",
    )
    limit_request_line: int = option(
        8190,
        help="Longest request line, in bytes; longer gets 414.",
        group=LIMITS,
        parse=parse_int,
        minimum=1,
        maximum=C_INT_MAX,
        metavar="BYTES",
    )
    limit_request_fields: int = option(
        100,
        help="Most header fields in a request; more gets 431.",
        group=LIMITS,
        parse=parse_int,
        minimum=1,
        maximum=32768,
        metavar="N",
    )
    limit_request_field_size: int = option(
        8190,
        help="Largest header field (name and value), in bytes; larger gets 431.",
        group=LIMITS,
        parse=parse_int,
        minimum=1,
        maximum=C_INT_MAX,
        metavar="BYTES",
    )
    limit_request_body: int | None = option(
        None,
        help="Largest request body, in bytes; larger gets 413. Default: no limit.",
        group=LIMITS,
        parse=parse_int,
        optional=True,
        minimum=0,
        metavar="BYTES",
    )
    limit_concurrency: int | None = option(
        None,
        help="Most requests in flight per process; beyond it, 503 at once with Retry-After.",
        group=LIMITS,
        parse=parse_int,
        optional=True,
        minimum=1,
        metavar="N",
    )
    ws: str = option(
        "auto",
        help='WebSocket support: "none" serves upgrade requests as plain HTTP; any other '
        "value (uvicorn's websockets, websockets-sansio and wsproto are accepted as aliases) "
        "uses rsgi's built-in implementation.",
        group=WEBSOCKET,
        choices=WS_IMPLEMENTATIONS,
    )
    ws_max_size: int = option(
        16 * 1024 * 1024,
        help="Largest WebSocket message accepted, in bytes; a larger one closes the "
        "connection with code 1009.",
        group=WEBSOCKET,
        parse=parse_int,
        minimum=1,
        metavar="BYTES",
    )
    ws_max_queue: int = option(
        32,
        help="Incoming WebSocket messages buffered for the app; when it is this far behind, "
        "the server stops reading from the client.",
        group=WEBSOCKET,
        parse=parse_int,
        minimum=1,
    )
    ws_ping_interval: float | None = option(
        20.0,
        help="Seconds between the server's keep-alive pings; 0 disables them.",
        group=WEBSOCKET,
        parse=parse_float,
        optional=True,
        minimum=0,
        metavar="SECONDS",
    )
    ws_ping_timeout: float | None = option(
        20.0,
        help="Seconds to wait for the pong to a keep-alive ping before closing the "
        "connection with code 1011; 0 disables the timeout.",
        group=WEBSOCKET,
        parse=parse_float,
        optional=True,
        minimum=0,
        metavar="SECONDS",
    )
    ws_per_message_deflate: bool = option(
        True,
        help="Offer the permessage-deflate extension (RFC 7692) to WebSocket clients.",
        group=WEBSOCKET,
        parse=parse_bool,
    )
    log_level: str = option(
        "info",
        help="Level of the rsgi.error and rsgi.access loggers.",
        group=LOGGING,
        choices=LOG_LEVELS,
    )
    access_log: bool = option(
        True,
        help="Log one line per request to stdout (logger rsgi.access).",
        group=LOGGING,
        parse=parse_bool,
    )
    access_log_format: str | None = option(
        None,
        help="Access line format with gunicorn's atoms, e.g. "
        '\'%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s\'. '
        "Default: uvicorn's line, '127.0.0.1:5555 - \"GET / HTTP/1.1\" 200'.",
        group=LOGGING,
        optional=True,
        metavar="FORMAT",
    )
    log_format: str = option(
        "text",
        help='"json" writes access and error logs as JSON lines (for ELK, Loki).',
        group=LOGGING,
        choices=("text", "json"),
    )
    access_logfile: str | None = option(
        None,
        help="Write access lines to this file ('-' is stdout, the default). Reopened on USR1.",
        group=LOGGING,
        optional=True,
        metavar="PATH",
    )
    error_logfile: str | None = option(
        None,
        help="Write server messages to this file ('-' is stderr, the default). Reopened on USR1.",
        group=LOGGING,
        optional=True,
        metavar="PATH",
    )
    request_id: bool = option(
        True,
        help="Take each request's X-Request-ID, or make one; the app sees it, the response "
        "echoes it, the access log records it.",
        group=HTTP,
        parse=parse_bool,
    )
    metrics_bind: str | None = option(
        None,
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (summed over all workers, "
        "served by the master with -w N). Keep it on a private address.",
        group=LOGGING,
        optional=True,
        metavar="HOST:PORT",
    )
    log_config: str | None = option(
        None,
        help="Logging configuration file: .json or .yaml/.yml for logging.config.dictConfig "
        "(YAML needs PyYAML), anything else for logging.config.fileConfig. "
        "Levels it sets on rsgi loggers win over --log-level.",
        group=LOGGING,
        optional=True,
        metavar="PATH",
    )
    workers: int = option(
        1,
        help="Number of worker processes. Above 1 (or with any of --preload, --reuse-port, "
        "--pid, --limit-max-requests, --timeout-worker, or NOTIFY_SOCKET set) a master "
        "process binds the sockets and supervises the workers.",
        group=PROCESSES,
        parse=parse_int,
        flags=("-w", "--workers"),
        minimum=1,
        env_aliases=("WEB_CONCURRENCY",),
    )
    preload: bool = option(
        False,
        help="Import the application in the master process before forking the workers, "
        "so that they share its memory copy-on-write. A HUP then re-executes the master "
        "to load new code.",
        group=PROCESSES,
        parse=parse_bool,
    )
    pid: str | None = option(
        None,
        help="Write the master process id to this file (removed on exit).",
        group=PROCESSES,
        optional=True,
        metavar="FILE",
    )
    limit_max_requests: int | None = option(
        None,
        help="Replace a worker after it has served this many requests; the replacement "
        "starts serving before the old worker stops.",
        group=PROCESSES,
        parse=parse_int,
        optional=True,
        minimum=1,
        metavar="N",
    )
    limit_max_requests_jitter: int = option(
        0,
        help="Add a random 0..J to each worker's --limit-max-requests, so that workers "
        "are not all replaced at once.",
        group=PROCESSES,
        parse=parse_int,
        minimum=0,
        metavar="J",
    )
    timeout_worker: float | None = option(
        None,
        help="Kill (SIGABRT, then SIGKILL) and replace a serving worker whose event loop "
        "has not run for this many seconds; the blocked stack is written to stderr.",
        group=PROCESSES,
        parse=parse_float,
        optional=True,
        positive=True,
        metavar="SECONDS",
    )
    threads: int = option(
        1,
        help="Rust I/O threads per worker process.",
        group=PROCESSES,
        parse=parse_int,
        minimum=1,
    )
    timeout_keep_alive: float = option(
        5.0,
        help="Seconds an idle keep-alive connection stays open; 0 turns keep-alive off "
        "(one request per connection).",
        group=PROCESSES,
        parse=parse_float,
        minimum=0,
        metavar="SECONDS",
    )
    timeout_header_read: float = option(
        30.0,
        help="Seconds a client has to send a complete request head, counted from its first "
        "byte; slower clients (slowloris) are disconnected.",
        group=PROCESSES,
        parse=parse_float,
        positive=True,
        metavar="SECONDS",
    )
    timeout_body_read: float = option(
        60.0,
        help="Seconds a request body may stall (no bytes while the app waits for them) before "
        "the request is answered 408 and the app sees http.disconnect.",
        group=PROCESSES,
        parse=parse_float,
        positive=True,
        metavar="SECONDS",
    )
    timeout_write: float = option(
        60.0,
        help="Seconds a response may make no progress on the socket (a client that stopped "
        "reading) before the connection is closed and the app sees http.disconnect; "
        "0 turns the timeout off.",
        group=PROCESSES,
        parse=parse_float,
        minimum=0,
        metavar="SECONDS",
    )
    timeout_graceful_shutdown: float = option(
        30.0,
        help="Seconds to let in-flight requests finish on shutdown before closing them; "
        "0 closes at once.",
        group=PROCESSES,
        parse=parse_float,
        minimum=0,
        metavar="SECONDS",
    )
    health_path: str | None = option(
        None,
        help="Answer GET and HEAD on this path (e.g. /healthz) in the server itself, without "
        "the app: 200 while serving, 503 once shutting down. For load balancer health "
        "checks; never passed to the app nor written to the access log.",
        group=PROCESSES,
        optional=True,
        metavar="PATH",
    )
    shutdown_delay: float = option(
        0.0,
        help="On TERM or INT, seconds to keep serving normally, with --health-path already "
        "answering 503, before the listening sockets close and the graceful shutdown "
        "begins: time for load balancers to stop sending requests. A second signal stops "
        "at once. Workers that the master replaces (HUP, TTOU, --limit-max-requests) stop "
        "without it.",
        group=PROCESSES,
        parse=parse_float,
        minimum=0,
        metavar="SECONDS",
    )

    ssl_certfile: str | None = option(
        None,
        help="PEM file with the server certificate (then its chain): serve HTTPS, TLS 1.2 and "
        "1.3. It may hold the private key too.",
        group=TLS,
        optional=True,
        metavar="PATH",
    )
    ssl_keyfile: str | None = option(
        None,
        help="PEM file with the private key (PKCS#8, RSA or EC; encrypted PKCS#8 with "
        "--ssl-keyfile-password). Default: the key in --ssl-certfile.",
        group=TLS,
        optional=True,
        metavar="PATH",
    )
    ssl_keyfile_password: str | None = option(
        None,
        help='Password of an encrypted key ("BEGIN ENCRYPTED PRIVATE KEY", PKCS#8 with PBES2).',
        group=TLS,
        optional=True,
        metavar="PASSWORD",
    )
    ssl_ca_certs: str | None = option(
        None,
        help="PEM file of the CA certificates that client certificates must chain to.",
        group=TLS,
        optional=True,
        metavar="PATH",
    )
    ssl_cert_reqs: int = option(
        CERT_NONE,
        help="Client certificates, as Python's ssl.CERT_* values: 0 not asked for, 1 optional "
        "(verified when sent), 2 required. 1 and 2 need --ssl-ca-certs.",
        group=TLS,
        parse=parse_int,
        metavar="LEVEL",
        minimum=CERT_NONE,
        maximum=CERT_REQUIRED,
    )
    reload: bool = option(
        False,
        help="Restart the server when watched files change. For development; needs "
        "watchfiles (pip install 'rsgi[standard]') and APP as an import string.",
        group=DEVELOPMENT,
        parse=parse_bool,
    )
    reload_dirs: list[str] = option(
        [],
        help="Directory to watch with --reload; repeat for several (in the environment "
        "variable, one per line). Default: the current directory.",
        group=DEVELOPMENT,
        flags=("--reload-dir",),
        repeat=True,
        metavar="DIR",
    )
    reload_includes: list[str] = option(
        [],
        help='Glob of files whose change restarts the server, besides "*.py"; repeat for '
        "several (one per line in the environment variable).",
        group=DEVELOPMENT,
        flags=("--reload-include",),
        repeat=True,
        metavar="GLOB",
    )
    reload_excludes: list[str] = option(
        [],
        help='Glob of files (or a directory) to ignore, besides ".*", ".py[cod]", ".sw.*" and '
        '"~*"; repeat for several (one per line in the environment variable).',
        group=DEVELOPMENT,
        flags=("--reload-exclude",),
        repeat=True,
        metavar="GLOB",
    )
    reload_delay: float = option(
        0.25,
        help="With --reload: seconds without further changes before the server restarts.",
        group=DEVELOPMENT,
        parse=parse_float,
        positive=True,
        metavar="SECONDS",
    )

    def __post_init__(self) -> None:
        for setting in settings():
            value = getattr(self, setting.name)
            setattr(self, setting.name, check_value(setting, value))
        if self.uds is not None and self.fd is not None:
            raise ConfigError("uds and fd cannot both be set")
        if self.reuse_port and (self.uds is not None or self.fd is not None):
            raise ConfigError("reuse_port applies to host/port only, not to uds or fd")
        check_tls(self)
        check_reload(self)

    def supervised(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether a master process supervises the workers (see the workers option)."""
        environ = os.environ if environ is None else environ
        return (
            self.workers > 1
            or self.preload
            or self.reuse_port
            or self.pid is not None
            or self.limit_max_requests is not None
            or self.timeout_worker is not None
            or bool(environ.get("NOTIFY_SOCKET"))
        )

    # -- construction -------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build from RSGI_* variables; keyword arguments take precedence."""
        values = env_values(os.environ if environ is None else environ)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_argv(
        cls, argv: list[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Build from command-line arguments, falling back to RSGI_* variables.

        Bad values end the process with argparse's usage error (exit code 2).
        """
        parser = build_parser()
        given = vars(parser.parse_args(argv))
        try:
            values = env_values(os.environ if environ is None else environ)
            values.update(given)
            if "app" not in values:
                parser.error("the following arguments are required: APP")
            return cls(**values)
        except ConfigError as exc:
            parser.error(str(exc))

    # -- actions ------------------------------------------------------------

    def load_app(self) -> Callable[..., Any]:
        """Return the ASGI callable, importing and building it if needed."""
        target = self.app
        if isinstance(target, str):
            insert_path(self.app_dir)
            target = import_from_string(target)
        if self.factory:
            if not callable(target):
                raise AppLoadError(f"Error loading ASGI app factory: {target!r} is not callable.")
            target = target()
        if not callable(target):
            raise AppLoadError(f"Error loading ASGI app. {describe(self.app)} is not callable.")
        return target

    def load_env_file(self) -> None:
        """Load env_file into os.environ without overriding variables already set."""
        if self.env_file is None:
            return
        path = self.env_file
        if not os.path.isfile(path):
            raise ConfigError(f'Environment file "{path}" not found.')
        logging.getLogger("rsgi.error").info("Loading environment from '%s'", path)
        for key, value in read_env_file(path).items():
            if value is not None:
                os.environ.setdefault(key, value)

    def setup_logging(self) -> None:
        from rsgi import logs

        logs.configure(self)


# -- the table, resolved --------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One Config field with its Option and the names derived from it."""

    name: str
    option: Option
    default: Any

    @property
    def flags(self) -> tuple[str, ...]:
        if self.option.positional:
            return ()
        return self.option.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def is_bool(self) -> bool:
        return self.option.parse is parse_bool

    @property
    def cli_spelling(self) -> str:
        """The flag as help and docs show it, e.g. "--access-log / --no-access-log"."""
        if self.option.positional:
            return self.option.metavar or self.name.upper()
        long_flag = self.flags[-1]
        if self.is_bool:
            return f"{long_flag} / --no-{long_flag[2:]}"
        return ", ".join(self.flags)

    @property
    def env_names(self) -> tuple[str, ...]:
        # Named after the flag, not the field, so --header reads RSGI_HEADER.
        base = self.flags[-1][2:] if self.flags else self.name
        return (ENV_PREFIX + base.upper().replace("-", "_"), *self.option.env_aliases)


@cache
def settings() -> tuple[Setting, ...]:
    found = []
    for f in dataclasses.fields(Config):
        default = None if f.default is dataclasses.MISSING else f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        found.append(Setting(f.name, f.metadata["option"], default))
    return tuple(found)


def check_value(setting: Setting, value: Any) -> Any:
    """Validate one value given from Python; return it normalised."""
    opt, name = setting.option, setting.name
    if value is None and opt.optional:
        return None
    if name == "app":
        return check_app(value)
    if name == "headers":
        return check_headers(value)
    if opt.repeat:
        return check_strings(name, value)
    if name == "log_config" and isinstance(value, dict):
        return value  # from Python, a dictConfig mapping is accepted as is
    if opt.parse is parse_bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
        return value
    if opt.parse is parse_int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif opt.parse is parse_float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        value = float(value)
    else:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    check_range(setting, value)
    if opt.choices is not None:
        value = value.lower()
        if value not in opt.choices:
            choices = ", ".join(opt.choices)
            raise ConfigError(f"{name} must be one of {choices}; got {value!r}")
    if name == "health_path":
        check_health_path(value)
    return value


def check_range(setting: Setting, value: Any) -> None:
    opt, name = setting.option, setting.name
    if opt.positive and value <= 0:
        raise ConfigError(f"{name} must be greater than 0, got {value!r}")
    low, high = opt.minimum, opt.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise ConfigError(f"{name} must be at least {low}, got {value!r}")
        raise ConfigError(f"{name} must be between {low} and {high}, got {value!r}")


def check_health_path(value: str) -> None:
    # Compared with the request's path as sent: no query, no fragment, no space.
    if not _HEALTH_PATH.match(value):
        raise ConfigError(
            f'health_path must be a URL path such as "/healthz" (no query), got {value!r}'
        )


_HEALTH_PATH = re.compile(r"^/[!$%&'()*+,\-./0-9:;=@A-Z_a-z~]*$")


def check_app(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError('app must be "<module>:<attribute>" or an ASGI callable')
        return value.strip()
    if not callable(value):
        raise ConfigError(f'app must be "<module>:<attribute>" or an ASGI callable, got {value!r}')
    return value


def check_strings(name: str, value: Any) -> list[str]:
    """A repeatable option given from Python: one string (or path), or a list of them."""
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    result = []
    for item in value:
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{name} must be a list of non-empty strings, got {item!r}")
        result.append(item)
    return result


def check_tls(config: Config) -> None:
    if config.ssl_certfile is None:
        for name in ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs"):
            if getattr(config, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} needs --ssl-certfile")
        if config.ssl_cert_reqs != CERT_NONE:
            raise ConfigError("--ssl-cert-reqs needs --ssl-certfile")
    elif config.ssl_cert_reqs != CERT_NONE and config.ssl_ca_certs is None:
        raise ConfigError(
            "--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs: the CA certificates that client "
            "certificates are verified against"
        )


def check_reload(config: Config) -> None:
    if not config.reload:
        return
    if config.workers > 1:
        raise ConfigError("--reload and --workers greater than 1 cannot be used together")
    master_only = ("preload", "reuse_port", "pid", "limit_max_requests", "timeout_worker")
    given = [name for name in master_only if getattr(config, name) not in (None, False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"--reload runs a single server process: it cannot be used with {flags}")
    if not isinstance(config.app, str):
        raise ConfigError(
            'reload needs the application as an import string, such as "main:app", '
            "so that a new process can import the changed code"
        )


def check_headers(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError("headers must be a list of (name, value) pairs or NAME:VALUE strings")
    result = []
    for item in value:
        if isinstance(item, str):
            try:
                item = parse_header(item)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ConfigError(f"header {item!r} must be a (name, value) pair")
        name, text = item
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ConfigError(f"header name {name!r} is not a valid HTTP token")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise ConfigError(f"header {name} has a value with a line break or NUL")
        result.append((name, text))
    return result


# -- environment and command line ----------------------------------------------


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Config keyword arguments from RSGI_* variables that are set and non-empty."""
    values: dict[str, Any] = {}
    for setting in settings():
        for env_name in setting.env_names:
            text = environ.get(env_name, "")
            if not text.strip():
                continue
            parse = setting.option.parse
            if setting.option.repeat:
                parse = parse_lines(parse)
            try:
                values[setting.name] = parse(text)
            except ValueError as exc:
                raise ConfigError(f"{env_name}: {exc}") from None
            break
    return values


def version_line() -> str:
    from rsgi import __version__

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"rsgi {__version__} (Rust core, {python} on {platform.system()})"


def build_parser() -> argparse.ArgumentParser:
    """The rsgi command line. Only options actually given appear in the result."""
    parser = argparse.ArgumentParser(
        prog="rsgi",
        description="Serve an ASGI application with rsgi.",
        epilog="Every option can also be set with the environment variable shown; "
        "a command-line flag wins over the environment.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=version_line())
    groups: dict[str, Any] = {}
    for setting in settings():
        if setting.option.group not in groups:
            groups[setting.option.group] = parser.add_argument_group(setting.option.group)
        add_argument(groups[setting.option.group], setting)
    return parser


def add_argument(group: Any, setting: Setting) -> None:
    opt = setting.option
    kwargs: dict[str, Any] = {"help": help_text(setting), "default": argparse.SUPPRESS}
    if opt.choices is not None:
        kwargs["choices"] = opt.choices
        kwargs["type"] = str.lower
    elif not setting.is_bool:
        kwargs["type"] = cli_type(opt.parse)
    if opt.metavar and not opt.positional:
        kwargs["metavar"] = opt.metavar
    if setting.is_bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif opt.repeat:
        kwargs["action"] = "append"
    if opt.positional:
        group.add_argument(setting.name, nargs="?", metavar=opt.metavar, **kwargs)
    else:
        group.add_argument(*setting.flags, dest=setting.name, **kwargs)


def cli_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            # ArgumentTypeError keeps our message instead of "invalid convert value".
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def help_text(setting: Setting) -> str:
    notes = []
    if setting.default not in (None, [], ""):
        notes.append(f"default: {format_default(setting.default)}")
    notes.append("env: " + " or ".join(setting.env_names))
    text = f"{setting.option.help} [{'; '.join(notes)}]"
    return text.replace("%", "%%")  # argparse %-formats help strings


def format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- loading the app --------------------------------------------------------------


def insert_path(directory: str) -> None:
    path = os.path.abspath(directory)
    if not sys.path or sys.path[0] != path:
        sys.path.insert(0, path)


def import_from_string(text: str) -> Any:
    """Import "<module>:<attribute>", where attribute may be dotted."""
    module_name, _, attrs = text.partition(":")
    if not module_name or not attrs:
        raise AppLoadError(
            f'Error loading ASGI app. Import string "{text}" '
            'must be in format "<module>:<attribute>".'
        )
    try:
        target = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module named on the command line being absent is a usage
        # error; a missing dependency of the app must keep its traceback.
        if not is_same_or_parent(exc.name, module_name):
            raise
        raise AppLoadError(
            f'Error loading ASGI app. Could not import module "{module_name}".'
        ) from None
    for attr in attrs.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise AppLoadError(
                f'Error loading ASGI app. Attribute "{attrs}" not found in module "{module_name}".'
            ) from None
    return target


def is_same_or_parent(missing: str | None, module_name: str) -> bool:
    if not missing:
        return False
    return module_name == missing or module_name.startswith(missing + ".")


def describe(app: Any) -> str:
    if isinstance(app, str):
        return f'"{app}"'
    return repr(app)


# -- env files ---------------------------------------------------------------------


def read_env_file(path: str) -> dict[str, str | None]:
    try:
        from dotenv import dotenv_values
    except ImportError:
        with open(path, encoding="utf-8") as file:
            return dict(parse_env_text(file.read()))
    return dict(dotenv_values(path))


_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def parse_env_text(text: str) -> Iterable[tuple[str, str]]:
    """Yield KEY, VALUE pairs from .env text.

    Understands comments, an "export " prefix, single quotes (literal), double
    quotes (with backslash escapes) and quoted values spanning lines. Unlike
    python-dotenv it does not expand ${VARIABLES}.
    """
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, equals, rest = line.partition("=")
        key = key.strip()
        if not equals or not _ENV_KEY.match(key):
            logging.getLogger("rsgi.error").warning(
                "Environment file: could not parse line %d", number
            )
            continue
        rest = rest.lstrip()
        quote = rest[:1]
        if quote not in ("'", '"'):
            yield key, strip_comment(rest)
            continue
        body = rest[1:]
        # A quoted value may continue on the following lines until its quote closes.
        while closing_quote(body, quote) < 0 and index < len(lines):
            body += "\n" + lines[index]
            index += 1
        end = closing_quote(body, quote)
        value = body if end < 0 else body[:end]
        yield key, unescape(value) if quote == '"' else value


def closing_quote(body: str, quote: str) -> int:
    position = 0
    while position < len(body):
        char = body[position]
        if char == "\\" and quote == '"':
            position += 2
            continue
        if char == quote:
            return position
        position += 1
    return -1


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value, flags=re.S)


def strip_comment(value: str) -> str:
    # "#" starts a comment only after whitespace, so URL fragments survive.
    match = re.search(r"\s#", value)
    if match:
        value = value[: match.start()]
    return value.strip()
