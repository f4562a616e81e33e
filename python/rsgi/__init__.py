"""rsgi: an ASGI server for Python with a Rust core."""

from __future__ import annotations

from typing import Any

from rsgi.config import Config, ConfigError
from rsgi.main import run

__all__ = ["ClientDisconnected", "Config", "ConfigError", "Worker", "__version__", "run"]


def __getattr__(name: str) -> Any:
    # The version is the extension's (maturin takes it from Cargo.toml): reading it there
    # spares every worker importlib.metadata and its imports. Lazy, so that rsgi.config can
    # be imported from a source tree with no extension built (scripts/gen_options.py).
    if name == "__version__":
        from rsgi._rsgi import __version__

        return __version__
    if name == "ClientDisconnected":
        from rsgi._rsgi import ClientDisconnected

        return ClientDisconnected
    # Lazy: rsgi.workers imports gunicorn, which plain `rsgi` users need not have.
    if name == "Worker":
        from rsgi.workers import Worker

        return Worker
    raise AttributeError(f"module 'rsgi' has no attribute {name!r}")
