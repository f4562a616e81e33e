"""Shared fixtures and helpers for the rsgi end-to-end test suite.

Every test talks to a real server process over real sockets.  The server command is
pluggable: ``RSGI_TEST_SERVER=uvicorn`` runs the same tests against ``python -m uvicorn``
(used to validate the tests themselves); tests marked ``rsgi_only`` are then deselected.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
REPO_ROOT = TESTS_DIR.parent

SERVER = os.environ.get("RSGI_TEST_SERVER", "rsgi").strip().lower() or "rsgi"
if SERVER not in ("rsgi", "uvicorn"):
    raise RuntimeError(f"RSGI_TEST_SERVER must be 'rsgi' or 'uvicorn', not {SERVER!r}")

#: ``python -m <SERVER_MODULE>`` starts the server under test.
SERVER_MODULE = SERVER
#: Prefix of the environment variables the server reads its options from.
ENV_PREFIX = "RSGI_" if SERVER == "rsgi" else "UVICORN_"
#: Value of the default ``server`` response header.
SERVER_HEADER = SERVER.encode()

STARTUP_TIMEOUT = 15.0
IO_TIMEOUT = 10.0

# Server logs of this test run; removed when the run ends.
RUN_DIR = Path(tempfile.mkdtemp(prefix="rsgi-tests-"))
atexit.register(shutil.rmtree, RUN_DIR, ignore_errors=True)


# --------------------------------------------------------------------------------------
# pytest hooks
# --------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "rsgi_only: behaviour specific to rsgi; deselected when RSGI_TEST_SERVER=uvicorn",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"server under test: {sys.executable} -m {SERVER_MODULE}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SERVER == "rsgi":
        return
    deselected = [item for item in items if item.get_closest_marker("rsgi_only")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("rsgi_only")]


# --------------------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------------------


_ISSUED_PORTS: set[int] = set()


def free_port() -> int:
    """A TCP port that is free now and was not handed out before in this test process.

    Ports come from below the kernel's ephemeral range, so that the clients' own outgoing
    connections cannot take one between this call and the server's bind; and never twice,
    so that two servers started together cannot be given the same port (the second would
    fail to bind while the first answered in its place).
    """
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        if port in _ISSUED_PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ISSUED_PORTS.add(port)
        return port


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", SERVER_MODULE, *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for server processes: no leaked server options, unbuffered output."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("RSGI_", "UVICORN_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


def _descendants(pid: int) -> list[int]:
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        task_dir = Path(f"/proc/{current}/task")
        try:
            tids = list(task_dir.iterdir())
        except OSError:
            continue
        for tid in tids:
            try:
                children = (tid / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(c) for c in children if int(c) not in found)
    return found


def _proc_status_kib(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _read_from(path: Path, since: int) -> str:
    """A captured output file from byte offset ``since``, decoded."""
    return path.read_bytes()[since:].decode("utf-8", "replace")


@dataclass
class Server:
    """A running server process with its output captured in files."""

    proc: subprocess.Popen
    args: list[str]
    port: int | None
    uds: str | None
    stdout_path: Path
    stderr_path: Path
    workdir: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self, since: int = 0) -> str:
        return _read_from(self.stderr_path, since)

    def stdout(self, since: int = 0) -> str:
        return _read_from(self.stdout_path, since)

    def stderr_offset(self) -> int:
        return self.stderr_path.stat().st_size

    def stdout_offset(self) -> int:
        return self.stdout_path.stat().st_size

    def output(self) -> str:
        return (
            f"--- command: {' '.join(self.args)}\n"
            f"--- returncode: {self.proc.poll()}\n"
            f"--- stderr:\n{self.stderr()}\n--- stdout:\n{self.stdout()}"
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_alive(self) -> None:
        assert self.alive(), f"server process died unexpectedly\n{self.output()}"

    def wait_for_stderr(self, pattern: str, since: int = 0, timeout: float = 5.0) -> str:
        """Wait until ``pattern`` (a regex) appears in stderr after byte offset ``since``."""
        return self._wait_for_output("stderr", pattern, since, timeout)

    def wait_for_stdout(self, pattern: str, since: int = 0, timeout: float = 5.0) -> str:
        """Wait until ``pattern`` (a regex) appears in stdout after byte offset ``since``."""
        return self._wait_for_output("stdout", pattern, since, timeout)

    def _wait_for_output(self, stream: str, pattern: str, since: int, timeout: float) -> str:
        read = getattr(self, stream)
        deadline = time.monotonic() + timeout
        while True:
            text = read(since)
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pattern {pattern!r} not found in server {stream} within {timeout}s; "
                    f"new {stream} was:\n{text}"
                )
            time.sleep(0.05)

    def rss_kib(self) -> int:
        """Resident set size of the server process and all its descendants, in KiB."""
        return sum(_proc_status_kib(pid, "VmRSS") for pid in _descendants(self.pid))

    def main_thread_faults(self) -> int:
        """Page faults the server process's main thread took so far (minflt): in a single
        worker, the thread that runs the event loop and the app."""
        stat = Path(f"/proc/{self.pid}/task/{self.pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[7])

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"server did not exit within {timeout}s\n{self.output()}") from exc

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL) and return its exit code."""
        if self._stopped:
            return self.proc.returncode
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def spawn_server(
    app: str | None,
    *args: str,
    port: int | None | bool = True,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    app_dir: Path | None = APPS_DIR,
    cwd: Path | None = None,
    pass_fds: tuple[int, ...] = (),
    uds: str | None = None,
) -> Server:
    """Start a server process without waiting for it to be ready."""
    cmd_args: list[str] = []
    if app is not None:
        cmd_args.append(app)
    if app_dir is not None:
        cmd_args += ["--app-dir", str(app_dir)]
    chosen_port: int | None = None
    if port is True:
        chosen_port = free_port()
    elif isinstance(port, int) and port is not False:
        chosen_port = port
    if chosen_port is not None:
        cmd_args += ["--host", host, "--port", str(chosen_port)]
    if uds is not None:
        cmd_args += ["--uds", uds]
    cmd_args += list(args)
    return spawn_process(
        server_command(*cmd_args), port=chosen_port, uds=uds, env=env, cwd=cwd, pass_fds=pass_fds
    )


def spawn_process(
    cmd: list[str],
    *,
    port: int | None = None,
    uds: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Server:
    """Start any server command with output captured to files."""
    workdir = Path(tempfile.mkdtemp(prefix="server-", dir=RUN_DIR))
    stdout_path = workdir / "stdout.log"
    stderr_path = workdir / "stderr.log"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=child_env(env),
            cwd=str(cwd or workdir),
            pass_fds=pass_fds,
        )
    return Server(
        proc=proc,
        args=cmd,
        port=port,
        uds=uds,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        workdir=workdir,
    )


def wait_until_accepting(server: Server, timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll the server's TCP port or unix socket until it accepts a connection."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited during startup\n{server.output()}")
        try:
            if server.uds is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(1.0)
                sock.connect(server.uds)
            else:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=1.0)
        except OSError as exc:
            last_error = exc
            time.sleep(0.05)
            continue
        sock.close()
        return
    server.stop()
    raise AssertionError(
        f"server did not accept connections within {timeout}s ({last_error!r})\n{server.output()}"
    )


def start_server(app: str, *args: str, **kwargs) -> Server:
    """Start a server and wait until it accepts connections."""
    server = spawn_server(app, *args, **kwargs)
    wait_until_accepting(server)
    return server


@contextlib.contextmanager
def running_server(app: str, *args: str, **kwargs):
    server = start_server(app, *args, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory():
    """Function-scoped factory; every server it started is stopped at teardown."""
    started: list[Server] = []

    def factory(app: str, *args: str, wait: bool = True, **kwargs) -> Server:
        server = spawn_server(app, *args, **kwargs)
        started.append(server)
        if wait:
            wait_until_accepting(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def raw_server():
    """The raw ASGI test app (tests/apps/raw_app.py) with default options."""
    with running_server("raw_app:app") as server:
        yield server


# --------------------------------------------------------------------------------------
# Raw HTTP/1.x client
# --------------------------------------------------------------------------------------


class ConnectionClosed(AssertionError):
    """The peer closed the connection before a complete message was read."""


@dataclass
class Response:
    status_line: bytes
    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    raw_head: bytes
    body: bytes = b""
    raw_body: bytes = b""
    framing: str = "none"  # "length", "chunked", "close" or "none"
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: str | bytes) -> bytes | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str | bytes) -> list[bytes]:
        key = name.encode() if isinstance(name, str) else name
        key = key.lower()
        return [value for hname, value in self.headers if hname == key]

    def has_header(self, name: str | bytes) -> bool:
        return bool(self.header_values(name))


_CHUNK_SIZE_RE = re.compile(rb"^([0-9A-Fa-f]+)(;[^\r\n]*)?$")


class RawClient:
    """A minimal HTTP/1.x client over a plain socket that frames responses correctly."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        uds: str | None = None,
        timeout: float = IO_TIMEOUT,
        rcvbuf: int | None = None,
    ) -> None:
        family = socket.AF_UNIX if uds else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(uds if uds else (host, port))
        self.timeout = timeout
        self.buffer = bytearray()
        self.eof = False

    # -- context manager --------------------------------------------------------------
    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self) -> None:
        """Close with RST (SO_LINGER 0)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    # -- sending ----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str = "GET",
        target: str = "/",
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        version: str = "HTTP/1.1",
        host: str = "testserver",
    ) -> None:
        self.send(
            build_request(method, target, headers=headers, body=body, version=version, host=host)
        )

    # -- receiving --------------------------------------------------------------------
    def _recv(self, deadline: float) -> bool:
        """Receive more bytes into the buffer.  Returns False on EOF."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data from the server")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError as exc:
            raise TimeoutError("timed out waiting for data from the server") from exc
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            if not self._recv(deadline):
                raise ConnectionClosed(
                    f"connection closed after {len(self.buffer)} of {n} bytes; "
                    f"buffer={bytes(self.buffer[:200])!r}"
                )
        return self._take(n)

    def _read_line(self, deadline: float) -> bytes:
        while True:
            index = self.buffer.find(b"\r\n")
            if index >= 0:
                return self._take(index + 2)
            if not self._recv(deadline):
                raise ConnectionClosed(
                    f"connection closed in the middle of a line: {bytes(self.buffer)!r}"
                )

    def read_head(self, timeout: float | None = None) -> Response:
        """Read a status line and headers (up to and including the blank line)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            index = self.buffer.find(b"\r\n\r\n")
            if index >= 0:
                raw_head = self._take(index + 4)
                break
            if not self._recv(deadline):
                raise ConnectionClosed(
                    f"connection closed before a complete response head; got {bytes(self.buffer)!r}"
                )
        lines = raw_head[:-4].split(b"\r\n")
        status_line = lines[0]
        parts = status_line.split(b" ", 2)
        assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1."), (
            f"bad status line {status_line!r}"
        )
        version = parts[0]
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else b""
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and name and name == name.strip(), f"bad header line {line!r}"
            headers.append((name.lower(), value.strip(b" \t")))
        return Response(
            status_line=status_line,
            version=version,
            status=status,
            reason=reason,
            headers=headers,
            raw_head=raw_head,
        )

    def read_response(
        self, *, head_request: bool = False, timeout: float | None = None
    ) -> Response:
        """Read one complete response, framed by its headers."""
        deadline = time.monotonic() + (timeout or self.timeout)
        resp = self.read_head(timeout=timeout)
        if head_request or 100 <= resp.status < 200 or resp.status in (204, 304):
            resp.framing = "none"
            return resp
        transfer_encoding = b",".join(resp.header_values("transfer-encoding")).lower()
        if transfer_encoding:
            assert transfer_encoding.split(b",")[-1].strip() == b"chunked", (
                f"unexpected transfer-encoding {transfer_encoding!r}"
            )
            assert not resp.has_header("content-length"), (
                "response has both transfer-encoding and content-length"
            )
            resp.framing = "chunked"
            raw = bytearray()
            body = bytearray()
            while True:
                line = self._read_line(deadline)
                raw += line
                match = _CHUNK_SIZE_RE.match(line[:-2])
                assert match, f"bad chunk size line {line!r}"
                size = int(match.group(1), 16)
                if size == 0:
                    break
                data = self._read_exact(size + 2, deadline)
                assert data.endswith(b"\r\n"), f"chunk data not followed by CRLF: {data[-10:]!r}"
                raw += data
                body += data[:-2]
            while True:
                line = self._read_line(deadline)
                raw += line
                if line == b"\r\n":
                    break
                name, _, value = line[:-2].partition(b":")
                resp.trailers.append((name.strip().lower(), value.strip()))
            resp.body = bytes(body)
            resp.raw_body = bytes(raw)
            return resp
        lengths = resp.header_values("content-length")
        if lengths:
            assert len(set(lengths)) == 1, f"conflicting content-length headers {lengths!r}"
            length = int(lengths[0])
            resp.framing = "length"
            resp.body = resp.raw_body = self._read_exact(length, deadline)
            return resp
        resp.framing = "close"
        while self._recv(deadline):
            pass
        resp.body = resp.raw_body = self._take(len(self.buffer))
        return resp

    def read_until_closed(self, timeout: float | None = None) -> bytes:
        """Read everything until the server closes the connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while self._recv(deadline):
                pass
        except TimeoutError as exc:
            raise AssertionError(
                f"server did not close the connection within {timeout or self.timeout}s; "
                f"received {bytes(self.buffer[:500])!r}"
            ) from exc
        return self._take(len(self.buffer))

    def closed_within(self, timeout: float) -> bool:
        """True if the server closes the connection within ``timeout`` seconds.

        Bytes that arrive meanwhile are kept in the buffer.
        """
        deadline = time.monotonic() + timeout
        try:
            while self._recv(deadline):
                pass
        except TimeoutError:
            return False
        return True

    def nothing_within(self, timeout: float) -> bool:
        """True if no byte (and no EOF) arrives within ``timeout`` seconds."""
        if self.buffer or self.eof:
            return False
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return not ready


def build_request(
    method: str = "GET",
    target: str = "/",
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    version: str = "HTTP/1.1",
    host: str | None = "testserver",
) -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    header_list = list(headers or [])
    names = {name.lower() for name, _ in header_list}
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        header_list.append(("Content-Length", str(len(body))))
    for name, value in header_list:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05, message: str = ""):
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)


def simple_get(port: int, target: str = "/", timeout: float = IO_TIMEOUT) -> Response:
    """One GET on a fresh connection with ``Connection: close``."""
    with RawClient(port, timeout=timeout) as client:
        client.request("GET", target, headers=[("Connection", "close")])
        return client.read_response()
