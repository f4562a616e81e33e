"""Entry points shared by the CLI and Python callers."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from rsgi import hooks, logs, process
from rsgi.config import Config, ConfigError
from rsgi.importer import load_app

logger = logging.getLogger("rsgi.error")


def run(app: Any, **kwargs: Any) -> None:
    """Serve ``app`` (an ASGI callable or "module:attr") until stopped.

    Keyword arguments are the fields of :class:`rsgi.Config`; an unknown one
    raises TypeError and a bad value raises ConfigError before anything starts.
    """
    run_config(Config(app=app, **kwargs))


def run_config(config: Config, warnings: Iterable[str] = ()) -> None:
    """Set up the process, logging and the environment, then serve; exit non-zero on
    failure. ``warnings`` (from reading a config file) are logged once logging is set up.

    Exit codes: 1 when the app cannot be loaded (or logging/env file setup
    fails), otherwise whatever ``serve`` returns (3 for a failed startup). With a
    master process (``config.supervised()``), 3 when a worker cannot boot.
    """
    master = None
    try:
        # --chdir first: relative paths (log files, the env file) are taken from there.
        process.enter(config)
        logs.configure(config)
        for warning in warnings:
            logger.warning("%s", warning)
        logs.capture_output(config)
        # What a re-executed master starts from: it sets --env and reads the env file again.
        environ = dict(os.environ)
        # Before serve(): the app is imported there and may read the environment.
        process.set_env(config)
        load_env_file(config.env_file)
        master = hooks.Master(config)
        hooks.call(config, "nworkers_changed", master, config.workers, None)
        hooks.call(config, "on_starting", master)
        if config.reload:
            from rsgi.supervisors.reload import run_reloader

            code = run_reloader(config)
        elif config.supervised():
            from rsgi.supervisors import prefork

            code = prefork.run(config, environ)
        else:
            code = serve_alone(config, master)
    except ConfigError as exc:
        logger.error("%s", exc)
        code = 1
    if master is not None:
        hooks.call(config, "on_exit", master)
    if code:
        sys.exit(code)


def serve_alone(config: Config, master: hooks.Master) -> int:
    """One process, no master: it is its own worker for the hooks."""
    from rsgi.server import serve

    fds = [sock.detach() for sock in process.bind_all(config)] or None
    try:
        hooks.call(config, "post_fork", master, hooks.Worker(config))
        app = hooks.serving_app(config, hooks.Worker(config), load_app(config))
        code = serve(config, fds, app=app)
        hooks.call(config, "worker_exit", master, hooks.Worker(config))
        return code
    finally:
        process.remove_socket_files(config)


def load_env_file(path: str | None) -> None:
    """Load a .env file (python-dotenv's syntax) into os.environ, without overriding
    variables already set."""
    if path is None:
        return
    if not os.path.isfile(path):
        raise ConfigError(f'Environment file "{path}" not found.')
    from dotenv import dotenv_values

    logger.info("Loading environment from '%s'", path)
    for key, value in dotenv_values(path).items():
        if value is not None:
            os.environ.setdefault(key, value)
