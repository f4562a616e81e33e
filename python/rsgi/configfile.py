"""``rsgi -c gunicorn.conf.py``: gunicorn's Python config files, read by rsgi.

The file runs as Python; each top-level name that is a gunicorn setting is mapped onto the
rsgi setting with the same meaning (the ``gunicorn`` names in rsgi.config's options table),
and rsgi's own setting names are taken as well. Other names (imports, helpers) are ignored,
as gunicorn ignores them. A gunicorn setting rsgi does not have is an error that names it,
unless it is off or empty, or its gunicorn meaning does not apply to rsgi (then a warning
says it is ignored).
"""

from __future__ import annotations

import os
import runpy
import types
from typing import Any

from rsgi.config import ConfigError, Setting, gunicorn_names, parse_str, settings

#: gunicorn settings rsgi ignores, with why: they change nothing rsgi does.
IGNORED = {
    "config": "it names the config file itself",
    "threads": "gunicorn's threads are for its gthread worker (uvicorn's worker ignores them); "
    "rsgi's own --threads sets its Rust I/O threads",
    "reload_engine": "rsgi's --reload uses watchfiles",
    "reload_extra_files": "use rsgi's reload_includes",
    "spew": "rsgi has no tracing of every line",
    "check_config": "use rsgi --help",
    "print_config": "use rsgi --help",
    "sendfile": "rsgi sends files through ASGI's pathsend",
    "worker_tmp_dir": "rsgi's workers report to the master through a pipe, not a file",
    "initgroups": "rsgi always sets the --user's own supplementary groups",
    "tmp_upload_dir": "gunicorn itself does not use it",
    "secure_scheme_headers": "it applies to WSGI workers; rsgi reads X-Forwarded-Proto",
    "forwarder_headers": "it applies to WSGI workers",
    "header_map": "it applies to WSGI workers",
    "default_proc_name": "it is gunicorn's internal default; set proc_name",
    "enable_stdio_inheritance": "rsgi leaves stdio as it is",
    "disable_redirect_access_to_syslog": "rsgi does not log to syslog",
    "suppress_ragged_eofs": "rsgi's TLS is rustls",
    "do_handshake_on_connect": "rsgi's TLS is rustls",
    "ssl_version": "rsgi's TLS speaks TLS 1.2 and 1.3",
    "ciphers": "rsgi's TLS uses rustls' cipher suites",
    "http_parser": "rsgi parses HTTP with hyper",
    "asgi_disconnect_grace_period": "it applies to gunicorn's own ASGI worker",
    "enable_backlog_metric": "rsgi's metrics are at --metrics-bind",
    "casefold_http_method": "rsgi passes methods as sent",
}

#: Every gunicorn setting name (gunicorn 23 to 27); the ones rsgi has are in rsgi.config.
GUNICORN_SETTINGS = frozenset(
    """
    config wsgi_app bind backlog workers worker_class threads worker_connections max_requests
    max_requests_jitter timeout graceful_timeout keepalive limit_request_line
    limit_request_fields limit_request_field_size reload reload_engine reload_extra_files spew
    check_config print_config preload_app sendfile reuse_port chdir daemon raw_env pidfile
    worker_tmp_dir user group umask initgroups tmp_upload_dir secure_scheme_headers
    forwarded_allow_ips accesslog disable_redirect_access_to_syslog access_log_format errorlog
    loglevel capture_output logger_class logconfig logconfig_dict logconfig_json syslog_addr
    syslog syslog_prefix syslog_facility enable_stdio_inheritance statsd_host dogstatsd_tags
    statsd_prefix enable_backlog_metric proc_name default_proc_name pythonpath paste
    on_starting on_reload when_ready pre_fork post_fork post_worker_init worker_int
    worker_abort pre_exec pre_request post_request child_exit worker_exit nworkers_changed
    on_exit ssl_context proxy_protocol proxy_allow_ips protocol uwsgi_allow_ips keyfile
    certfile ssl_version cert_reqs ca_certs suppress_ragged_eofs do_handshake_on_connect
    ciphers http_protocols http2_cleartext http2_max_concurrent_streams
    http2_initial_window_size http2_max_frame_size http2_max_header_list_size
    raw_paste_global_conf permit_obsolete_folding strip_header_spaces
    permit_unconventional_http_method permit_unconventional_http_version casefold_http_method
    forwarder_headers header_map asgi_loop asgi_lifespan asgi_disconnect_grace_period
    websocket_max_message_size http_parser root_path dirty_apps dirty_workers dirty_timeout
    dirty_threads dirty_graceful_timeout on_dirty_starting dirty_post_fork dirty_worker_init
    dirty_worker_exit control_socket control_socket_mode control_socket_disable
    """.split()
)

#: The module name a config file runs as: what its functions (hooks) give as ``__module__``.
MODULE = "__config__"

#: Worker classes whose job rsgi does itself: naming one is a warning, not an error.
ASGI_WORKERS = ("uvicorn", "rsgi")


def load(path: str) -> tuple[dict[str, Any], list[str]]:
    """Config keyword arguments from a gunicorn-style config file, and warnings to log."""
    if not os.path.isfile(path):
        raise ConfigError(f'config file "{path}" not found')
    try:
        namespace = runpy.run_path(path, run_name=MODULE)
    except Exception as exc:
        raise ConfigError(f"config file {path}: {type(exc).__name__}: {exc}") from exc
    return from_namespace(namespace, path)


def from_namespace(namespace: dict[str, Any], path: str) -> tuple[dict[str, Any], list[str]]:
    by_gunicorn = gunicorn_names()
    own = {s.name: s for s in settings()}
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        setting = by_gunicorn.get(name)
        if setting is None and name not in GUNICORN_SETTINGS:
            setting = own.get(name)
        if setting is not None:
            values[setting.name] = from_file(setting, value, path, name)
        elif name == "worker_class":
            warnings.extend(check_worker_class(value, path))
        elif name == "http_protocols":
            values["http"] = http_from_protocols(value, path)
        elif name == "http2_cleartext":
            warnings.extend(check_cleartext(value, path))
        elif name in IGNORED:
            if value not in (None, False, "", [], ()):
                warnings.append(f"{path}: {name} is ignored: {IGNORED[name]}")
        elif name in GUNICORN_SETTINGS and value not in (None, False, "", [], (), {}, 0):
            raise ConfigError(f"{path}: rsgi does not support gunicorn's {name} setting")
    return values, warnings


def from_file(setting: Setting, value: Any, path: str, name: str) -> Any:
    """A config file's value as the setting takes it (gunicorn accepts text for numbers)."""
    parse = setting.option.parse
    if isinstance(value, str) and parse is not parse_str and not setting.option.repeat:
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {name}: {exc}") from None
    return value


def http_from_protocols(value: Any, path: str) -> str:
    """gunicorn 25's ``http_protocols`` ("h1", "h2,h1", "h2") as rsgi's ``--http``: with h2
    listed gunicorn offers HTTP/2 and still serves HTTP/1.1 to a client that does not pick
    it, which is rsgi's "auto"; "h1" alone is "1"."""
    protocols = [p.strip().lower() for p in str(value or "").split(",") if p.strip()]
    unknown = sorted(set(protocols) - {"h1", "h2"})
    if unknown:
        raise ConfigError(f"{path}: http_protocols: unknown protocol {unknown[0]!r} (h1, h2)")
    return "auto" if "h2" in protocols else "1"


def check_cleartext(value: Any, path: str) -> list[str]:
    """gunicorn's ``http2_cleartext``: rsgi's "auto" serves h2c with prior knowledge on plain
    TCP (a superset of "off" and what "prior-knowledge" asks); only the upgrade is missing."""
    if value in ("upgrade", "both"):
        return [
            f"{path}: http2_cleartext {value!r}: rsgi has no HTTP/1.1 Upgrade to h2c; with "
            "--http auto it serves h2c to clients that start with the HTTP/2 preface"
        ]
    if value not in (None, False, True, "off", "prior-knowledge"):
        raise ConfigError(
            f"{path}: http2_cleartext: {value!r} is not off, prior-knowledge, upgrade or both"
        )
    return []


def check_worker_class(value: Any, path: str) -> list[str]:
    text = value if isinstance(value, str) else getattr(value, "__module__", repr(value))
    if any(name in text.lower() for name in ASGI_WORKERS):
        return [f"{path}: worker_class {text!r} is ignored: rsgi's workers serve the app"]
    raise ConfigError(
        f"{path}: worker_class {text!r} is not an ASGI worker; rsgi serves ASGI apps only"
    )


class Defined:
    """A function a config file defined, as a process started with ``spawn`` can take it:
    pickle finds functions by module, and a config file is no importable module, so this
    names the file and the name the function has there (see :func:`portable`)."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name

    def load(self, namespaces: dict[str, dict[str, Any]]) -> Any:
        if self.path not in namespaces:
            namespaces[self.path] = runpy.run_path(self.path, run_name=MODULE)
        return namespaces[self.path][self.name]


def portable(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each function a config file defined replaced by its :class:`Defined`."""
    out = dict(values)
    for key, value in values.items():
        if isinstance(value, types.FunctionType) and value.__module__ == MODULE:
            names = [n for n, v in value.__globals__.items() if v is value]
            if names:
                out[key] = Defined(value.__code__.co_filename, names[0])
    return out


def restored(values: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`portable`: runs each config file once more to find them."""
    namespaces: dict[str, dict[str, Any]] = {}
    return {k: v.load(namespaces) if isinstance(v, Defined) else v for k, v in values.items()}
