"""gunicorn's server hooks, called by rsgi itself (``on_starting``, ``when_ready``,
``post_fork``, ``worker_exit`` and ``on_exit``; see rsgi.config.HOOKS).

A hook gets what gunicorn's hooks use of gunicorn's objects: ``server`` (:class:`Master`)
has ``cfg``, ``pid``, ``log``, ``app`` and ``num_workers``; ``worker`` (:class:`Worker`) has
``cfg``, ``pid``, ``ppid``, ``age`` (its serial number) and ``log``. ``cfg`` is the
:class:`rsgi.Config`. A hook that raises is logged with its traceback; the server goes on.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from rsgi.config import Config

logger = logging.getLogger("rsgi.error")


class Master:
    """The ``server`` argument: the master process (or the one server process)."""

    def __init__(self, config: Config, pid: int | None = None) -> None:
        self.cfg = config
        self.pid = os.getpid() if pid is None else pid
        self.log = logger
        self.app = config.app
        self.num_workers = config.workers


class Worker:
    """The ``worker`` argument: one serving process."""

    def __init__(self, config: Config, serial: int = 1) -> None:
        self.cfg = config
        self.pid = os.getpid()
        self.ppid = os.getppid()
        self.age = serial
        self.log = logger


def call(config: Config, name: str, *args: Any) -> None:
    """Calls the hook ``name`` if the config sets it."""
    hook = getattr(config, name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        logger.exception("Exception in the %s hook", name)
