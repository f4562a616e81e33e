"""Every rsgi setting, declared once: the options table and :class:`Config`.

Each field of :class:`Config` carries an :class:`Option` in its metadata: its help, its
type, its limits, its validator and every other name it goes by (gunicorn's flags and
config-file names, extra environment variables). The command line (``rsgi.cli``), the
``RSGI_*`` environment variables (:func:`env_values`), ``rsgi.run(**kwargs)``, gunicorn-style
config files (``rsgi.configfile``), the gunicorn worker class (``rsgi.workers``) and the
README's options table are all generated from those fields, so a setting added here shows
up everywhere.

This module imports nothing else from rsgi: every other module may import it.
The Rust core reads the settings by attribute name: keep the names stable.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
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
# uvicorn's h11 and httptools serve HTTP/1.1 only: accepted as "1".
HTTP_VERSIONS = ("auto", "1", "2", "h11", "httptools")
#: The server hooks rsgi calls, with gunicorn's names and arguments (see rsgi.hooks).
HOOKS = (
    "on_starting",
    "when_ready",
    "post_fork",
    "worker_exit",
    "on_exit",
    "nworkers_changed",
    "on_reload",
    "pre_exec",
    "pre_fork",
    "child_exit",
    "post_worker_init",
    "pre_request",
    "post_request",
    "worker_int",
    "worker_abort",
)

# RFC 9110 token characters: anything else in a header name would let a value
# smuggle a second header or break the response head.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEALTH_PATH = re.compile(r"^/[!$%&'()*+,\-./0-9:;=@A-Z_a-z~]*$")


class ConfigError(ValueError):
    """A setting has a bad value. The message is one line, fit for a CLI error."""


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


def parse_octal(text: str) -> int:
    """A umask as gunicorn takes it: "0o027", "027" (octal), "0x17" or a decimal "23"."""
    text = text.strip()
    try:
        if len(text) > 1 and text[0] == "0" and text[1].isdigit():
            return int(text, 8)
        return int(text, 0)
    except ValueError:
        raise ValueError(f"expected an octal mode such as 022 or 0o027, got {text!r}") from None


def parse_lines(parse: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """The environment variable of a repeatable option holds one value per line."""

    def parse_each(text: str) -> list[Any]:
        return [parse(line.strip()) for line in text.splitlines() if line.strip()]

    return parse_each


def parse_bind(text: str) -> tuple[str, Any, Any]:
    """gunicorn's --bind: ``("tcp", host, port)``, ``("unix", path, None)`` or
    ``("fd", fd, None)``. A bare host serves on port 8000, as in gunicorn; IPv6 addresses
    go in brackets ("[::1]:8000")."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):  # "unix:///run/app.sock"
            path = path[2:]
        if not path:
            raise ValueError(f"{text!r} names no socket path")
        return "unix", path, None
    if text.startswith("fd://"):
        fd = parse_int(text[len("fd://") :])
        if not 0 <= fd <= C_INT_MAX:
            raise ValueError(f"{text!r} is not a file descriptor")
        return "fd", fd, None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not [IPv6]:PORT")
        port_text = rest[1:] if rest else "8000"
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            host, port_text = text, "8000"
        elif ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, as [::1]:8000")
    if not host:
        raise ValueError(f"{text!r} names no host (use 0.0.0.0:PORT for every interface)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r} has no valid port") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be between 0 and 65535")
    return "tcp", host, port


# -- validators: a value given from Python (or parsed) to the value kept -------------
#
# Each takes the setting's name and the value and returns the value normalised, or raises
# ConfigError. An Option's default validator follows from its parser (see `validator`).


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_str(name: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def check_strings(name: str, value: Any) -> list[str]:
    """A repeatable option: one string (or path), or a list of them."""
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


def zero_is_off(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """gunicorn's convention for --timeout and --max-requests: 0 turns the feature off."""

    def validate(name: str, value: Any) -> Any:
        value = check(name, value)
        return None if value == 0 else value

    return validate


def check_app(name: str, value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError('app must be "<module>:<attribute>" or an ASGI callable')
        return value.strip()
    if not callable(value):
        raise ConfigError(f'app must be "<module>:<attribute>" or an ASGI callable, got {value!r}')
    return value


def check_headers(name: str, value: Any) -> list[tuple[str, str]]:
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
        header, text = item
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            raise ConfigError(f"header name {header!r} is not a valid HTTP token")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise ConfigError(f"header {header} has a value with a line break or NUL")
        result.append((header, text))
    return result


def check_health_path(name: str, value: Any) -> str:
    value = check_str(name, value)
    # Compared with the request's path as sent: no query, no fragment, no space.
    if not _HEALTH_PATH.match(value):
        raise ConfigError(f'{name} must be a URL path such as "/healthz" (no query), got {value!r}')
    return value


def check_log_config(name: str, value: Any) -> Any:
    # From Python (or a config file's logconfig_dict), a dictConfig mapping is taken as is.
    if isinstance(value, dict):
        return value
    return check_str(name, value)


def check_ip_list(name: str, value: Any) -> str:
    # gunicorn's config files may give a list of addresses.
    if isinstance(value, (list, tuple)):
        value = ",".join(check_strings(name, value))
    return check_str(name, value)


def check_binds(name: str, value: Any) -> list[str]:
    binds = check_strings(name, value)
    for text in binds:
        try:
            parse_bind(text)
        except ValueError as exc:
            raise ConfigError(f"--bind {exc}") from None
    return binds


def check_user(name: str, value: Any) -> int:
    """A user name or uid, as the uid it names."""
    import pwd

    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    value = check_str(name, value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ConfigError(f"{name}: no user named {value!r}") from None


def check_group(name: str, value: Any) -> int:
    """A group name or gid, as the gid it names."""
    import grp

    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    value = check_str(name, value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigError(f"{name}: no group named {value!r}") from None


def check_umask(name: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            value = parse_octal(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return check_int(name, value)


def check_env(name: str, value: Any) -> list[str]:
    """gunicorn's raw_env: KEY=VALUE strings."""
    values = check_strings(name, value)
    for text in values:
        if "=" not in text:
            raise ConfigError(f"{name} (gunicorn's raw_env): {text!r} is not KEY=VALUE")
    return values


def check_hook(name: str, value: Any) -> Any:
    if not callable(value):
        raise ConfigError(f"{name} must be a function, got {value!r}")
    return value


def validator(opt: Option) -> Callable[[str, Any], Any]:
    """The Option's validator: its own, or the one its parser implies."""
    if opt.validate is not None:
        return opt.validate
    if opt.repeat:
        return check_strings
    return {parse_bool: check_bool, parse_int: check_int, parse_float: check_float}.get(
        opt.parse, check_str
    )


# -- the option table ---------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """How one Config field appears on the CLI, in the environment, in config files and in
    the docs, and how its values are checked."""

    help: str
    group: str
    parse: Callable[[str], Any] = parse_str  # text from the CLI or the environment
    validate: Callable[[str, Any], Any] | None = None  # default: follows from parse
    flags: tuple[str, ...] = ()  # default: ("--<field-name>",)
    #: Other spellings of the flag (gunicorn's), accepted on the command line.
    aliases: tuple[str, ...] = ()
    #: gunicorn's names for this setting in a config file (``-c gunicorn.conf.py``).
    gunicorn: tuple[str, ...] = ()
    positional: bool = False
    cli: bool = True  # False: from Python and config files only (the server hooks)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    optional: bool = False  # None is a valid value
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # strictly greater than zero
    repeat: bool = False  # the flag may be given several times; values form a list
    env_aliases: tuple[str, ...] = ()  # read after RSGI_<NAME>, e.g. WEB_CONCURRENCY


#: A server hook: a function, or None.
Hook = Callable[..., Any] | None


def hook(name: str, help: str) -> Any:
    """A server hook, set from a config file or Python; ``name`` is gunicorn's (and rsgi's)."""
    return option(
        None,
        help=help,
        group=HOOKS_GROUP,
        validate=check_hook,
        gunicorn=(name,),
        cli=False,
        optional=True,
    )


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
HOOKS_GROUP = "Server hooks (config file or Python)"
# As Python's ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED (uvicorn's --ssl-cert-reqs values).
CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED = 0, 1, 2


@dataclass
class Config:
    """Settings for one rsgi server. Construct with keyword arguments."""

    app: Any = option(
        help='The ASGI application, as "<module>:<attribute>" (e.g. "main:app"). '
        "From Python it may also be the application object itself.",
        group=APPLICATION,
        validate=check_app,
        gunicorn=("wsgi_app",),
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
    chdir: str | None = option(
        None,
        help="Change to this directory before loading the application (and before "
        "opening files named by relative paths); it is also put first on sys.path.",
        group=APPLICATION,
        gunicorn=("chdir",),
        optional=True,
        metavar="DIR",
    )
    env_file: str | None = option(
        None,
        help="File of KEY=VALUE lines (.env syntax, read by python-dotenv) loaded into the "
        "environment before the app is imported. Variables already set are kept.",
        group=APPLICATION,
        optional=True,
        metavar="PATH",
    )
    env: list[str] = option(
        [],
        help="Set the environment variable KEY to VALUE in the master before the app is "
        "imported (the workers inherit it); it wins over the inherited environment and "
        "--env-file. Repeat for several (one per line in RSGI_ENV).",
        group=APPLICATION,
        validate=check_env,
        gunicorn=("raw_env",),
        flags=("-e", "--env"),
        repeat=True,
        metavar="KEY=VALUE",
    )
    pythonpath: str | None = option(
        None,
        help="Comma-separated directories put first on sys.path before the app is imported "
        "(after --chdir; relative ones are taken from there), as gunicorn does.",
        group=APPLICATION,
        gunicorn=("pythonpath",),
        optional=True,
        metavar="DIRS",
    )
    lifespan: str = option(
        "auto",
        help='ASGI lifespan protocol: "auto" runs it if the app supports it, "on" '
        'requires it, "off" skips it.',
        group=APPLICATION,
        gunicorn=("asgi_lifespan",),
        choices=LIFESPANS,
    )
    loop: str = option(
        "auto",
        help='Event loop: "auto" uses uvloop when it is installed, else asyncio.',
        group=APPLICATION,
        gunicorn=("asgi_loop",),
        choices=LOOPS,
    )
    root_path: str = option(
        "",
        help='ASGI "root_path": the path prefix under which a proxy mounts the app.',
        group=APPLICATION,
        gunicorn=("root_path",),
        metavar="PATH",
    )
    bind: list[str] = option(
        [],
        help='gunicorn\'s spelling of the address: "HOST:PORT", "[IPv6]:PORT", '
        '"unix:PATH" or "fd://N"; repeat to serve several (one per line in RSGI_BIND). '
        "Replaces --host, --port, --uds and --fd.",
        group=BINDING,
        validate=check_binds,
        gunicorn=("bind",),
        flags=("-b", "--bind"),
        repeat=True,
        metavar="ADDRESS",
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
        gunicorn=("backlog",),
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
        gunicorn=("reuse_port",),
        parse=parse_bool,
    )
    headers: list[tuple[str, str]] = option(
        [],
        help="Extra response header, as NAME:VALUE. Repeat for several. "
        "In RSGI_HEADER put one NAME:VALUE per line.",
        group=HTTP,
        parse=parse_header,
        validate=check_headers,
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
    http: str = option(
        "auto",
        help='HTTP versions served: "auto" both (HTTP/2 over TLS when ALPN picks h2, and h2c '
        'with prior knowledge on plain TCP), "1" HTTP/1.1 only, "2" HTTP/2 only. uvicorn\'s '
        '"h11" and "httptools" mean "1".',
        group=HTTP,
        choices=HTTP_VERSIONS,
    )
    h2_max_concurrent_streams: int = option(
        100,
        help="Most HTTP/2 streams a client may have open at once on one connection "
        "(SETTINGS_MAX_CONCURRENT_STREAMS).",
        group=HTTP,
        aliases=("--http2-max-concurrent-streams",),
        gunicorn=("http2_max_concurrent_streams",),
        parse=parse_int,
        minimum=1,
        maximum=2**31 - 1,
        metavar="N",
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
        validate=check_ip_list,
        gunicorn=("forwarded_allow_ips",),
        env_aliases=("FORWARDED_ALLOW_IPS",),
        metavar="LIST",
    )
    limit_request_line: int = option(
        8190,
        help="Longest request line, in bytes; longer gets 414.",
        group=LIMITS,
        gunicorn=("limit_request_line",),
        parse=parse_int,
        minimum=1,
        maximum=C_INT_MAX,
        metavar="BYTES",
    )
    limit_request_fields: int = option(
        100,
        help="Most header fields in a request; more gets 431.",
        group=LIMITS,
        gunicorn=("limit_request_fields",),
        parse=parse_int,
        minimum=1,
        maximum=32768,
        metavar="N",
    )
    limit_request_field_size: int = option(
        8190,
        help="Largest header field (name and value), in bytes; larger gets 431.",
        group=LIMITS,
        aliases=("--limit-request-field_size",),
        gunicorn=("limit_request_field_size",),
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
        aliases=("--worker-connections",),
        gunicorn=("worker_connections",),
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
        gunicorn=("websocket_max_message_size",),
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
        gunicorn=("loglevel",),
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
        aliases=("--access-logformat",),
        gunicorn=("access_log_format",),
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
        gunicorn=("accesslog",),
        optional=True,
        metavar="PATH",
    )
    error_logfile: str | None = option(
        None,
        help="Write server messages to this file ('-' is stderr, the default). Reopened on USR1.",
        group=LOGGING,
        aliases=("--log-file",),
        gunicorn=("errorlog",),
        optional=True,
        metavar="PATH",
    )
    capture_output: bool = option(
        False,
        help="Send everything written to stdout and stderr (print(), tracebacks, "
        "subprocesses) to --error-logfile. Without --access-logfile the access lines go "
        "there too.",
        group=LOGGING,
        gunicorn=("capture_output",),
        parse=parse_bool,
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
        validate=check_log_config,
        gunicorn=("logconfig", "logconfig_dict", "logconfig_json"),
        optional=True,
        metavar="PATH",
    )
    workers: int = option(
        1,
        help="Number of worker processes. Above 1 (or with any of --preload, --reuse-port, "
        "--pid, --limit-max-requests, --limit-max-rss, --timeout-worker, --user, or "
        "NOTIFY_SOCKET set) a master process binds the sockets and supervises the workers.",
        group=PROCESSES,
        parse=parse_int,
        gunicorn=("workers",),
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
        gunicorn=("preload_app",),
        parse=parse_bool,
    )
    pid: str | None = option(
        None,
        help="Write the master process id to this file (removed on exit).",
        group=PROCESSES,
        aliases=("-p",),
        gunicorn=("pidfile",),
        optional=True,
        metavar="FILE",
    )
    limit_max_requests: int | None = option(
        None,
        help="Replace a worker after it has served this many requests; the replacement "
        "starts serving before the old worker stops. 0 is off, as in gunicorn.",
        group=PROCESSES,
        parse=parse_int,
        validate=zero_is_off(check_int),
        aliases=("--max-requests",),
        gunicorn=("max_requests",),
        optional=True,
        minimum=1,
        metavar="N",
    )
    limit_max_requests_jitter: int = option(
        0,
        help="Add a random 0..J to each worker's --limit-max-requests, so that workers "
        "are not all replaced at once.",
        group=PROCESSES,
        aliases=("--max-requests-jitter",),
        gunicorn=("max_requests_jitter",),
        parse=parse_int,
        minimum=0,
        metavar="J",
    )
    limit_max_rss: int | None = option(
        None,
        help="Replace a worker whose resident memory (RSS, sampled once a second) stays above "
        "this many MiB for two samples in a row; the replacement starts serving before the "
        "old worker stops. Pages shared with the master (--preload) count in each worker. "
        "Under gunicorn (rsgi.Worker), set RSGI_LIMIT_MAX_RSS: the worker checks itself and "
        "exits gracefully, and the arbiter replaces it. 0 is off.",
        group=PROCESSES,
        parse=parse_int,
        validate=zero_is_off(check_int),
        optional=True,
        minimum=1,
        metavar="MIB",
    )
    timeout_worker: float | None = option(
        None,
        help="Kill (SIGABRT, then SIGKILL) and replace a serving worker whose event loop "
        "has not run for this many seconds; the blocked stack is written to stderr (a "
        "stopped worker, e.g. by SIGSTOP, has none to write: it gets SIGKILL at once). "
        "gunicorn's --timeout (its worker silent timeout); 0 is off.",
        group=PROCESSES,
        parse=parse_float,
        validate=zero_is_off(check_float),
        aliases=("-t", "--timeout"),
        gunicorn=("timeout",),
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
        aliases=("--keep-alive",),
        gunicorn=("keepalive",),
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
        aliases=("--graceful-timeout",),
        gunicorn=("graceful_timeout",),
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
        validate=check_health_path,
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
    proc_name: str | None = option(
        None,
        help='Name in the process titles, "rsgi: master [NAME]" and "rsgi: worker N [NAME]" '
        "(set when setproctitle is installed, as with rsgi[standard]). Default: APP.",
        group=PROCESSES,
        aliases=("-n", "--name"),
        gunicorn=("proc_name",),
        optional=True,
        metavar="NAME",
    )
    user: int | None = option(
        None,
        help="Run the workers as this user (name or uid), as gunicorn does: the master, "
        "started as root, binds the sockets and stays root; each worker switches user before "
        "loading the app. Implies a master process.",
        group=PROCESSES,
        validate=check_user,
        aliases=("-u",),
        gunicorn=("user",),
        optional=True,
        metavar="USER",
    )
    group: int | None = option(
        None,
        help="Run the workers with this group (name or gid). Default with --user: that "
        "user's primary group.",
        group=PROCESSES,
        validate=check_group,
        aliases=("-g",),
        gunicorn=("group",),
        optional=True,
        metavar="GROUP",
    )
    umask: int | None = option(
        None,
        help="File mode creation mask set at startup, in octal (e.g. 027), before any "
        "socket or file is made. Default: the inherited one.",
        group=PROCESSES,
        parse=parse_octal,
        validate=check_umask,
        aliases=("-m",),
        gunicorn=("umask",),
        optional=True,
        minimum=0,
        maximum=0o777,
        metavar="MASK",
    )

    ssl_certfile: str | None = option(
        None,
        help="PEM file with the server certificate (then its chain): serve HTTPS, TLS 1.2 and "
        "1.3. It may hold the private key too.",
        group=TLS,
        aliases=("--certfile",),
        gunicorn=("certfile",),
        optional=True,
        metavar="PATH",
    )
    ssl_keyfile: str | None = option(
        None,
        help="PEM file with the private key (PKCS#8, RSA or EC; encrypted PKCS#8 with "
        "--ssl-keyfile-password). Default: the key in --ssl-certfile.",
        group=TLS,
        aliases=("--keyfile",),
        gunicorn=("keyfile",),
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
        aliases=("--ca-certs",),
        gunicorn=("ca_certs",),
        optional=True,
        metavar="PATH",
    )
    ssl_cert_reqs: int = option(
        CERT_NONE,
        help="Client certificates, as Python's ssl.CERT_* values: 0 not asked for, 1 optional "
        "(verified when sent), 2 required. 1 and 2 need --ssl-ca-certs.",
        group=TLS,
        aliases=("--cert-reqs",),
        gunicorn=("cert_reqs",),
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
        gunicorn=("reload",),
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
    on_starting: Hook = hook(
        "on_starting",
        "on_starting(server): once, in the master (or the one process), before the "
        "sockets are bound.",
    )
    when_ready: Hook = hook(
        "when_ready",
        "when_ready(server): once the sockets are bound; in the master before the first "
        "worker starts, in a single process once it serves.",
    )
    post_fork: Hook = hook(
        "post_fork",
        "post_fork(server, worker): in each worker, before it switches user (--user) and "
        "loads the app; in a single process, before it loads the app.",
    )
    worker_exit: Hook = hook(
        "worker_exit",
        "worker_exit(server, worker): in each worker once it stopped serving, just before "
        "it exits.",
    )
    on_exit: Hook = hook(
        "on_exit",
        "on_exit(server): once, in the master (or the one process), just before it exits.",
    )
    nworkers_changed: Hook = hook(
        "nworkers_changed",
        "nworkers_changed(server, new_value, old_value): in the master (or the one "
        "process) at start, with old_value None, and on each TTIN and TTOU. rsgi keeps "
        "the worker count across a HUP, so a reload does not call it (gunicorn's does).",
    )
    on_reload: Hook = hook(
        "on_reload",
        "on_reload(server): in the master on HUP, before the new workers are forked (with "
        "--preload, before the master re-executes itself).",
    )
    pre_exec: Hook = hook(
        "pre_exec",
        "pre_exec(server): in the master just before it re-executes itself, which rsgi "
        "does on HUP with --preload (gunicorn does it on USR2, from a forked copy of the "
        "master).",
    )
    pre_fork: Hook = hook(
        "pre_fork",
        "pre_fork(server, worker): in the master just before each worker is forked; "
        "worker.pid is None until then.",
    )
    child_exit: Hook = hook(
        "child_exit",
        "child_exit(server, worker): in the master once a worker exited, whatever the "
        "cause, with worker.pid the pid it had.",
    )
    post_worker_init: Hook = hook(
        "post_worker_init",
        "post_worker_init(worker): in each worker (or the one process) once the app is "
        "imported (with --preload, inherited), before its lifespan startup.",
    )
    pre_request: Hook = hook(
        "pre_request",
        "pre_request(worker, req): before each HTTP request (not WebSocket), on the event "
        "loop; req has gunicorn's fields (method, path, query, uri, headers, version) and "
        "the ASGI scope. If it raises, the request fails with 500.",
    )
    post_request: Hook = hook(
        "post_request",
        "post_request(worker, req, environ, resp): after the app finished each HTTP "
        "request; environ is the request as a WSGI environ, resp has status, status_code, "
        "headers and response_length.",
    )
    worker_int: Hook = hook(
        "worker_int",
        "worker_int(worker): in a worker that got SIGINT or SIGQUIT (Ctrl-C, the master's "
        "quick stop) once its event loop runs, before it stops; in the one process, on "
        "SIGINT.",
    )
    worker_abort: Hook = hook(
        "worker_abort",
        "worker_abort(worker): in a worker that got SIGABRT (--timeout-worker found its "
        "event loop blocked), once its main thread runs Python code again, after the "
        "stack dump; the worker then dies of the SIGABRT (worker_exit is not called). A "
        "worker stuck in C code never runs it: SIGKILL follows 3 s later.",
    )

    def __post_init__(self) -> None:
        for setting in settings():
            value = getattr(self, setting.name)
            setattr(self, setting.name, check_value(setting, value))
        if self.uds is not None and self.fd is not None:
            raise ConfigError("uds and fd cannot both be set")
        check_binds_apply(self)
        if self.reuse_port and (self.uds is not None or self.fd is not None):
            raise ConfigError("reuse_port applies to host/port only, not to uds or fd")
        if self.group is not None and self.user is None:
            raise ConfigError("--group needs --user")
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
            or self.limit_max_rss is not None
            or self.timeout_worker is not None
            or self.user is not None
            or bool(environ.get("NOTIFY_SOCKET"))
        )

    def addresses(self) -> list[tuple[str, Any, Any]]:
        """The parsed --bind values: what rsgi binds itself when there are several."""
        return [parse_bind(text) for text in self.bind]

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
        """Build from command-line arguments; see :func:`rsgi.cli.config_from_argv`."""
        # Imported here: the command line is built on this module, not part of it.
        from rsgi.cli import config_from_argv

        return config_from_argv(argv, environ)[0]


# -- the table, resolved --------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One Config field with its Option and the names derived from it."""

    name: str
    option: Option
    default: Any

    @property
    def flags(self) -> tuple[str, ...]:
        if self.option.positional or not self.option.cli:
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
        if not self.flags:
            return ""
        long_flag = self.flags[-1]
        if self.is_bool:
            return f"{long_flag} / --no-{long_flag[2:]}"
        return ", ".join(self.flags)

    @property
    def env_names(self) -> tuple[str, ...]:
        if not self.option.cli:
            return ()
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


@cache
def gunicorn_names() -> dict[str, Setting]:
    """gunicorn's config-file names of the settings rsgi has, e.g. "preload_app"."""
    return {name: s for s in settings() for name in s.option.gunicorn}


def check_value(setting: Setting, value: Any) -> Any:
    """Validate one value given from Python; return it normalised."""
    opt = setting.option
    if value is None and opt.optional:
        return None
    value = validator(opt)(setting.name, value)
    if value is None and opt.optional:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_range(setting, value)
    if opt.choices is not None:
        value = value.lower()
        if value not in opt.choices:
            choices = ", ".join(opt.choices)
            raise ConfigError(f"{setting.name} must be one of {choices}; got {value!r}")
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


# -- checks across settings -----------------------------------------------------------


def check_binds_apply(config: Config) -> None:
    """One --bind address is the same as --host/--port, --uds or --fd."""
    if not config.bind:
        return
    if config.uds is not None or config.fd is not None:
        raise ConfigError("--bind replaces --uds and --fd: give one or the other")
    if config.reuse_port and len(config.bind) > 1:
        raise ConfigError("--reuse-port binds one address: it cannot be used with several --bind")
    if config.reload and len(config.bind) > 1:
        raise ConfigError("--reload serves one address: it cannot be used with several --bind")
    if len(config.bind) > 1:
        return
    kind, where, port = parse_bind(config.bind[0])
    if kind == "tcp":
        config.host, config.port = where, port
    elif kind == "unix":
        config.uds = where
    else:
        config.fd = where
    config.bind = []


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
    master_only = (
        "preload",
        "reuse_port",
        "pid",
        "limit_max_requests",
        "limit_max_rss",
        "timeout_worker",
        "user",
    )
    given = [name for name in master_only if getattr(config, name) not in (None, False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"--reload runs a single server process: it cannot be used with {flags}")
    if not isinstance(config.app, str):
        raise ConfigError(
            'reload needs the application as an import string, such as "main:app", '
            "so that a new process can import the changed code"
        )


# -- the environment ------------------------------------------------------------------


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


def format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
