"""gunicorn's server hooks, called by rsgi itself (see rsgi.config.HOOKS), and the request
objects of ``pre_request`` and ``post_request`` (which rsgi.Worker passes under gunicorn too).

A hook gets what gunicorn's hooks use of gunicorn's objects: ``server`` (:class:`Master`)
has ``cfg``, ``pid``, ``log``, ``app`` and ``num_workers``; ``worker`` (:class:`Worker`) has
``cfg``, ``pid``, ``ppid``, ``age`` (its serial number) and ``log``. ``cfg`` is the
:class:`rsgi.Config`. A hook that raises is logged with its traceback; the server goes on.
"""

from __future__ import annotations

import http
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
    """The ``worker`` argument: one serving process (by default, this one)."""

    def __init__(self, config: Config, serial: int = 1) -> None:
        self.cfg = config
        self.pid: int | None = os.getpid()
        self.ppid = os.getppid()
        self.age = serial
        self.log = logger

    @classmethod
    def in_master(cls, config: Config, serial: int, pid: int | None) -> Worker:
        """A worker as the master's hooks see it: ``pid`` is None before the fork."""
        worker = cls(config, serial)
        worker.pid, worker.ppid = pid, os.getpid()
        return worker


def call(config: Config, name: str, *args: Any) -> None:
    """Calls the hook ``name`` if the config sets it."""
    hook = getattr(config, name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        logger.exception("Exception in the %s hook", name)


def serving_app(config: Config, worker: Worker, app: Any) -> Any:
    """In a serving process once the app is loaded: calls ``post_worker_init`` and returns
    the app, wrapped to call ``pre_request`` and ``post_request`` when they are set."""
    call(config, "post_worker_init", worker)
    if config.pre_request is None and config.post_request is None:
        return app
    return with_request_hooks(app, worker, config.pre_request, config.post_request)


# -- what gunicorn's access log and request hooks read ---------------------------------


class RequestInfo:
    """The request as gunicorn's hooks and access log atoms read it: the fields of
    ``gunicorn.http.Request`` they use, plus the ASGI ``scope``."""

    __slots__ = ("scope", "uri", "method", "path", "query", "fragment", "version", "headers")

    def __init__(self, scope: dict[str, Any], target: str | None = None) -> None:
        self.scope = scope
        query = scope.get("query_string", b"").decode("latin-1")
        if target is None:
            raw = scope.get("raw_path") or scope.get("path", "/").encode()
            target = raw.decode("latin-1") + ("?" + query if query else "")
        self.uri = target
        self.method = scope.get("method", "GET")
        self.path = scope.get("path", "/")
        self.query = query
        self.fragment = ""
        major, _, minor = scope.get("http_version", "1.1").partition(".")
        self.version = (int(major), int(minor or 0))
        self.headers = [
            (name.decode("latin-1").upper(), value.decode("latin-1"))
            for name, value in scope.get("headers", ())
        ]

    @property
    def scheme(self) -> str:
        return self.scope.get("scheme", "http")

    @property
    def peer_addr(self) -> Any:
        return self.scope.get("client")

    @property
    def remote_addr(self) -> Any:
        return self.scope.get("client")

    def environ(self) -> dict[str, Any]:
        """A WSGI-style environ (PEP 3333 names), for the ``%({name}e)s`` atoms and hooks."""
        scope = self.scope
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "RAW_URI": self.uri,
            "SCRIPT_NAME": scope.get("root_path", ""),
            "PATH_INFO": self.path,
            "QUERY_STRING": self.query,
            "SERVER_PROTOCOL": f"HTTP/{self.version[0]}.{self.version[1]}",
            "wsgi.url_scheme": self.scheme,
        }
        client = scope.get("client")
        if client:
            environ["REMOTE_ADDR"] = str(client[0])
            environ["REMOTE_PORT"] = str(client[1])
        server = scope.get("server")
        if server:
            environ["SERVER_NAME"] = str(server[0])
            environ["SERVER_PORT"] = str(server[1]) if server[1] is not None else ""
        for name, value in self.headers:
            key = name.replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            if key in environ:
                value = environ[key] + "," + value
            environ[key] = value
        return environ


class ResponseInfo:
    """The response as gunicorn's access log and post_request hook read it."""

    __slots__ = ("status_code", "raw_headers", "sent")

    def __init__(self, status: int, headers: Any, sent: int) -> None:
        self.status_code = status
        self.raw_headers = headers
        self.sent = sent

    @property
    def status(self) -> str:
        try:
            reason = http.HTTPStatus(self.status_code).phrase
        except ValueError:
            reason = ""
        return f"{self.status_code} {reason}".rstrip()

    @property
    def response_length(self) -> int:
        return self.sent

    @property
    def headers(self) -> list[tuple[str, str]]:
        if not self.raw_headers:
            return []
        return [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in self.raw_headers
        ]


def with_request_hooks(app: Any, worker: Any, pre: Any, post: Any) -> Any:
    """Wraps the app to call gunicorn's ``pre_request(worker, req)`` before each HTTP
    request and ``post_request(worker, req, environ, resp)`` after it. ``worker`` is a
    :class:`Worker`, or gunicorn's under rsgi.Worker."""

    async def hooked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        req = RequestInfo(scope)
        if pre is not None:
            pre(worker, req)
        if post is None:
            await app(scope, receive, send)
            return
        resp = ResponseInfo(0, None, 0)

        async def noting_send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                resp.status_code = message["status"]
                resp.raw_headers = message.get("headers")
            elif kind == "http.response.body":
                resp.sent += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, receive, noting_send)
        finally:
            try:
                post(worker, req, req.environ(), resp)
            except Exception:
                worker.log.exception("Exception in post_request hook")

    return hooked
