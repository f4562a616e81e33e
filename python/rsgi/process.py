"""What gunicorn's process settings do: --chdir, --umask, --pythonpath, --env, --user and
--group, and the listening sockets of several --bind addresses."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import sys

from rsgi.config import Config, ConfigError

logger = logging.getLogger("rsgi.error")


def enter(config: Config) -> None:
    """--chdir, --umask and --pythonpath: at startup, before any file or socket is made."""
    if config.chdir is not None:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise ConfigError(f"--chdir {config.chdir}: {exc.strerror}") from None
        path = os.getcwd()
        if path not in sys.path:
            sys.path.insert(0, path)
    if config.umask is not None:
        os.umask(config.umask)
    if config.pythonpath:
        # One at a time to the front, as gunicorn does: the last one listed comes first.
        for path in config.pythonpath.split(","):
            path = os.path.abspath(path)
            if path not in sys.path:
                sys.path.insert(0, path)


def set_env(config: Config) -> None:
    """--env (gunicorn's raw_env): into the master's environment, which the workers inherit."""
    for text in config.env:
        key, _, value = text.partition("=")
        os.environ[key] = value


def drop_privileges(config: Config) -> None:
    """--user and --group: switch the process to them (a worker does, before loading the app).

    The supplementary groups become the user's own (initgroups), so that nothing of root's
    is kept."""
    if config.user is None:
        return
    uid = config.user
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        entry = None
    gid = config.group if config.group is not None else (entry.pw_gid if entry else uid)
    if os.geteuid() == uid and os.getegid() == gid:
        return
    try:
        if entry is not None:
            os.initgroups(entry.pw_name, gid)
        else:
            os.setgroups([gid])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise ConfigError(f"cannot switch to user {uid}, group {gid}: {exc.strerror}") from None


def hand_over(config: Config, path: str | None) -> None:
    """Lets the workers' user write a file the master creates (the access log)."""
    if config.user is None or path in (None, "-") or os.geteuid() != 0:
        return
    gid = config.group if config.group is not None else -1
    try:
        fd = os.open(os.path.abspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.fchown(fd, config.user, gid)
        finally:
            os.close(fd)
    except OSError as exc:
        logger.warning("Cannot give %s to user %d: %s", path, config.user, exc.strerror)


def bind_all(config: Config) -> list[socket.socket]:
    """Listening sockets for several --bind addresses (one is bound by the core itself)."""
    sockets: list[socket.socket] = []
    try:
        for kind, where, port in config.addresses():
            sockets.append(bind_one(kind, where, port, config.backlog))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"cannot bind: {exc}") from None
    return sockets


def bind_one(kind: str, where: object, port: object, backlog: int) -> socket.socket:
    if kind == "fd":
        assert isinstance(where, int)
        sock = socket.socket(fileno=where)
        sock.set_inheritable(False)
        return sock
    if kind == "unix":
        assert isinstance(where, str)
        remove_stale_socket(where)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(where)
        sock.listen(backlog)
        return sock
    assert isinstance(where, str) and isinstance(port, int)
    return bind_tcp(where, port, backlog)


def bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port (an IPv6 one takes IPv4 too); closed again if it
    cannot bind or listen."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def remove_stale_socket(path: str) -> None:
    """Removes a unix socket file that no server listens on any more."""
    import stat

    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


def remove_socket_files(config: Config) -> None:
    """Removes the unix socket files bound by :func:`bind_all`."""
    for kind, where, _ in config.addresses():
        if kind == "unix":
            with contextlib.suppress(OSError):
                os.unlink(str(where))
