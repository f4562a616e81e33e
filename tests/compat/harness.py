"""Start rsgi or uvicorn with an app from tests/compat/apps, observe, and compare.

Two helpers carry the suite:

* ``start(name, app, ...)`` runs ``python -m rsgi`` or ``python -m uvicorn`` (httptools,
  uvloop) on a free port, with stdout/stderr captured to files (``conftest.spawn_process``).
* ``compare(observed)`` takes what the same scenario produced on both servers and fails on
  any difference that ``differences.py`` does not excuse.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conftest import Server, free_port, spawn_process, wait_until_accepting
from differences import allowed

SERVERS = ("rsgi", "uvicorn")
COMPAT_APPS = Path(__file__).resolve().parent / "apps"

# An access line of either server: 'INFO:     127.0.0.1:5555 - "GET / HTTP/1.1" 200 OK'.
ACCESS_RE = re.compile(r'^INFO: +\S+ - "([^"]*)" (\d{3}(?: [^\n]*)?)$', re.MULTILINE)
# A line that means something went wrong: a level at WARNING or above, a traceback, an
# exception Python could not raise ("Exception ignored in"), a Rust panic, "SomeError: ...".
PROBLEM_RE = re.compile(
    r"^.*(WARNING|ERROR|CRITICAL|Traceback|Exception in ASGI application|Exception ignored"
    r"|panicked|^\w*(Error|Exception)\b:).*$",
    re.MULTILINE,
)


def command(name: str, app: str, port: int, *args: str, app_dir: Path = COMPAT_APPS) -> list[str]:
    cmd = [sys.executable, "-m", name, app, "--app-dir", str(app_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if name == "uvicorn":
        cmd += ["--http", "httptools", "--loop", "uvloop"]
    return cmd + list(args)


def start(
    name: str,
    app: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    app_dir: Path = COMPAT_APPS,
    attempts: int = 2,
) -> Server:
    """Start server ``name`` ("rsgi" or "uvicorn") serving ``app`` and wait until it accepts.

    A failed start is retried once: another engineer may be reinstalling rsgi meanwhile.
    """
    assert name in SERVERS, name
    for attempt in range(attempts):
        port = free_port()
        server = spawn_process(
            command(name, app, port, *args, app_dir=app_dir), port=port, env=env, cwd=cwd
        )
        try:
            wait_until_accepting(server, timeout=30)
            return server
        except AssertionError:
            server.stop()
            if attempt == attempts - 1:
                raise
            time.sleep(3)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def both(app: str, *args: str, env_for: Callable[[str], dict] | None = None, **kwargs):
    """Both servers serving ``app``, as {"rsgi": Server, "uvicorn": Server}; stopped after.

    ``env_for(name)`` gives extra environment variables for one server.
    """
    servers: dict[str, Server] = {}
    try:
        for name in SERVERS:
            if env_for is not None:
                kwargs["env"] = {**kwargs.get("env", {}), **env_for(name)}
            servers[name] = start(name, app, *args, **kwargs)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# --------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A response reduced to what both servers must agree on."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "HTTP/1.1"
    length: int | None = None  # of the body as received, before any body filter

    def __post_init__(self) -> None:
        if self.length is None:
            self.length = len(self.body)


@dataclass
class Observed:
    """Everything one server showed for one scenario."""

    name: str
    replies: list = field(default_factory=list)
    effects: dict = field(default_factory=dict)
    access: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    log: str = ""


class Logs:
    """Log offsets of a server, so that a scenario sees only the lines it caused."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.out = server.stdout_offset()
        self.err = server.stderr_offset()

    def settle(self, quiet: float = 0.3, limit: float = 3.0) -> None:
        """Wait until the log files stop growing (access lines are written after replies)."""
        deadline = time.monotonic() + limit
        last = None
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            sizes = (self.server.stdout_offset(), self.server.stderr_offset())
            if sizes != last:
                last, stable_since = sizes, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                return
            time.sleep(0.05)

    def text(self) -> str:
        return self.server.stdout(self.out) + self.server.stderr(self.err)

    def fill(self, observed: Observed) -> Observed:
        text = self.text()
        observed.log = text
        observed.access = sorted(
            f"{line} {status}" for line, status in ACCESS_RE.findall(self.server.stdout(self.out))
        )
        observed.problems = [m.group(0) for m in PROBLEM_RE.finditer(text)]
        return observed


def observe(
    servers: dict[str, Server], scenario: Callable[[Server, Observed], None], settle: bool = True
) -> dict[str, Observed]:
    """Run ``scenario(server, observed)`` on each server and collect its logs too."""
    results = {}
    for name, server in servers.items():
        logs = Logs(server)
        observed = Observed(name)
        scenario(server, observed)
        if settle:
            logs.settle()
        results[name] = logs.fill(observed)
    return results


# --------------------------------------------------------------------------------------
# Normalisation and comparison
# --------------------------------------------------------------------------------------

#: Response headers whose value legitimately differs, and the difference that excuses it.
VARYING_HEADERS = {
    "date": "date-header",
    "server": "server-header",
    "x-request-id": "x-request-id",
}


def reply_from_httpx(resp, body_filter: Callable[[bytes], bytes] | None = None) -> Reply:
    headers = [(k.decode().lower(), v.decode("latin-1")) for k, v in resp.headers.raw]
    body = resp.content
    filtered = body_filter(body) if body_filter else body
    return Reply(resp.status_code, headers, filtered, length=len(body))


def reply_from_raw(resp, body_filter: Callable[[bytes], bytes] | None = None) -> Reply:
    headers = [(k.decode(), v.decode("latin-1")) for k, v in resp.headers]
    body = body_filter(resp.body) if body_filter else resp.body
    return Reply(resp.status, headers, body, resp.version.decode(), len(resp.body))


def _headers(reply: Reply) -> list[tuple[str, str]]:
    """The reply's headers, sorted, without those whose value legitimately varies."""
    varying = {name for name, reason in VARYING_HEADERS.items() if allowed(reason)}
    return sorted((k, v) for k, v in reply.headers if k not in varying)


def _framing_excused(rsgi: list, uvicorn: list, length: int) -> tuple[list, list]:
    """Drop the one framing difference differences.py excuses, in exactly its shape."""
    if ("transfer-encoding", "chunked") in uvicorn and ("content-length", str(length)) in rsgi:
        allowed("single-message-framing")
        rsgi = [h for h in rsgi if h[0] != "content-length"]
        uvicorn = [h for h in uvicorn if h != ("transfer-encoding", "chunked")]
    return rsgi, uvicorn


def diff_replies(rsgi: Reply, uvicorn: Reply) -> list[str]:
    problems = []
    if (rsgi.version, rsgi.status) != (uvicorn.version, uvicorn.status):
        problems.append(
            f"status: rsgi {rsgi.version} {rsgi.status}, uvicorn {uvicorn.version} {uvicorn.status}"
        )
    if rsgi.body != uvicorn.body:
        problems.append(
            f"body ({len(rsgi.body)} vs {len(uvicorn.body)} bytes): "
            f"rsgi {rsgi.body[:300]!r}, uvicorn {uvicorn.body[:300]!r}"
        )
    rh, uh = _headers(rsgi), _headers(uvicorn)
    rh, uh = _framing_excused(rh, uh, rsgi.length)
    if rh != uh:
        only_r = [h for h in rh if h not in uh]
        only_u = [h for h in uh if h not in rh]
        problems.append(f"headers: only rsgi {only_r}, only uvicorn {only_u}")
    return problems


def compare(
    observed: dict[str, Observed],
    *,
    access: bool = True,
    access_key: Callable[[str], str] | None = None,
    expect_problems: bool | None = False,
) -> None:
    """Fail with every difference between the two servers' observations.

    ``access``: compare the access lines (request line, status and reason phrase, as a
    multiset). ``access_key`` maps
    each line first (for example to drop a varying query string). ``expect_problems``:
    besides both servers agreeing on whether anything was logged at WARNING or above, that
    is what must have happened (None: only agree).
    """
    rs, uv = observed["rsgi"], observed["uvicorn"]
    problems: list[str] = []
    if len(rs.replies) != len(uv.replies):
        problems.append(f"reply count: rsgi {len(rs.replies)}, uvicorn {len(uv.replies)}")
    for index, (a, b) in enumerate(zip(rs.replies, uv.replies, strict=False)):
        if isinstance(a, Reply) and isinstance(b, Reply):
            problems += [f"reply {index}: {p}" for p in diff_replies(a, b)]
        elif a != b:
            problems.append(f"reply {index}: rsgi {a!r}, uvicorn {b!r}")
    if rs.effects != uv.effects:
        problems.append(f"side effects: rsgi {rs.effects}, uvicorn {uv.effects}")
    if access:
        key = access_key or (lambda line: line)
        ra, ua = sorted(map(key, rs.access)), sorted(map(key, uv.access))
        if ra != ua:
            problems.append(
                f"access lines ({len(ra)} vs {len(ua)}): only rsgi {_minus(ra, ua)[:10]}, "
                f"only uvicorn {_minus(ua, ra)[:10]}"
            )
    if bool(rs.problems) != bool(uv.problems):
        problems.append(f"logged at WARNING+: rsgi {rs.problems[:8]}, uvicorn {uv.problems[:8]}")
    elif expect_problems is not None and bool(rs.problems) != expect_problems:
        problems.append(f"expected problems={expect_problems}: rsgi {rs.problems[:8]}")
    if problems:
        raise AssertionError(
            "rsgi differs from uvicorn:\n  "
            + "\n  ".join(problems)
            + f"\n--- rsgi log:\n{rs.log[-1500:]}\n--- uvicorn log:\n{uv.log[-1500:]}"
        )


def _minus(a: list[str], b: list[str]) -> list[str]:
    rest = list(b)
    out = []
    for item in a:
        if item in rest:
            rest.remove(item)
        else:
            out.append(item)
    return out


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------


def websocket_exchange(server: Server, path: str, messages: list[str]) -> list:
    """Send ``messages`` one at a time, each followed by one receive; note what happened.

    The result lists each reply, then ("closed", code, reason) once the server closes, or
    ("refused", status, body) if the handshake is refused.
    """
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    seen: list = []
    try:
        ws = connect(f"ws://127.0.0.1:{server.port}{path}", open_timeout=10, close_timeout=5)
    except InvalidStatus as exc:
        return [("refused", exc.response.status_code, bytes(exc.response.body or b""))]
    with ws:
        try:
            for message in messages:
                ws.send(message)
                seen.append(ws.recv(timeout=10))
        except ConnectionClosed as exc:
            close = exc.rcvd
            seen.append(("closed", close.code if close else None, close.reason if close else None))
    return seen
