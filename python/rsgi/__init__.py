"""rsgi: an ASGI server for Python with a Rust core."""

from __future__ import annotations

from typing import Any

# The package's version is the extension's (maturin takes it from Cargo.toml); reading it
# there spares every worker importlib.metadata and its imports.
from rsgi._rsgi import __version__
from rsgi.config import Config, ConfigError
from rsgi.main import run

__all__ = ["Config", "ConfigError", "Worker", "__version__", "run"]


def __getattr__(name: str) -> Any:
    # Lazy: rsgi.workers imports gunicorn, which plain `rsgi` users need not have.
    if name == "Worker":
        from rsgi.workers import Worker

        return Worker
    raise AttributeError(f"module 'rsgi' has no attribute {name!r}")
