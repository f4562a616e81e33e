"""rsgi: an ASGI server for Python with a Rust core."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from rsgi.config import Config, ConfigError
from rsgi.main import run

try:
    __version__ = metadata.version("rsgi")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["Config", "ConfigError", "Worker", "__version__", "run"]


def __getattr__(name: str) -> Any:
    # Lazy: rsgi.workers imports gunicorn, which plain `rsgi` users need not have.
    if name == "Worker":
        from rsgi.workers import Worker

        return Worker
    raise AttributeError(f"module 'rsgi' has no attribute {name!r}")
