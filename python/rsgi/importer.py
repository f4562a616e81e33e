"""Loading the ASGI application named on the command line ("<module>:<attribute>")."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from rsgi.config import Config, ConfigError


class AppLoadError(ConfigError):
    """The ASGI application could not be imported or built."""


def load_app(config: Config) -> Callable[..., Any]:
    """Return the ASGI callable, importing and building it if needed."""
    target = config.app
    if isinstance(target, str):
        insert_path(config.app_dir)
        target = import_from_string(target)
    if config.factory:
        if not callable(target):
            raise AppLoadError(f"Error loading ASGI app factory: {target!r} is not callable.")
        target = target()
    if not callable(target):
        raise AppLoadError(f"Error loading ASGI app. {describe(config.app)} is not callable.")
    return target


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
