"""Entry points shared by the CLI and Python callers."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from rsgi.config import Config, ConfigError


def run(app: Any, **kwargs: Any) -> None:
    """Serve ``app`` (an ASGI callable or "module:attr") until stopped.

    Keyword arguments are the fields of :class:`rsgi.Config`; an unknown one
    raises TypeError and a bad value raises ConfigError before anything starts.
    """
    run_config(Config(app=app, **kwargs))


def run_config(config: Config) -> None:
    """Set up logging and the environment, then serve; exit non-zero on failure.

    Exit codes: 1 when the app cannot be loaded (or logging/env file setup
    fails), otherwise whatever ``serve`` returns (3 for a failed startup). With a
    master process (``config.supervised()``), 3 when a worker cannot boot.
    """
    try:
        config.setup_logging()
        environ = dict(os.environ)
        # Before serve(): the app is imported there and may read the environment.
        config.load_env_file()
        if config.reload:
            from rsgi.supervisors.reload import run_reloader

            code = run_reloader(config)
        elif config.supervised():
            from rsgi.supervisors import prefork

            code = prefork.run(config, environ)
        else:
            from rsgi.server import serve

            code = serve(config)
    except ConfigError as exc:
        logging.getLogger("rsgi.error").error("%s", exc)
        code = 1
    if code:
        sys.exit(code)
