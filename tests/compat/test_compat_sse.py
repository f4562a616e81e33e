"""Starlette + sse-starlette: an open event stream while the server is told to stop."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from conftest import RawClient, simple_get
from differences import allowed
from harness import SERVERS, Logs, Observed, compare, reply_from_raw, start

GRACE = "10"  # --timeout-graceful-shutdown for both; an SSE stream must not wait it out.
PROMPT = 3.0  # seconds within which the stream must end and the server exit
EVENT_RE = re.compile(rb"id: \d+\r\nevent: tick\r\ndata: tick \d+\r\n\r\n")


def open_stream(server) -> tuple[RawClient, bytes]:
    """GET /sse; return the client and the head plus the first three events."""
    client = RawClient(server.port, timeout=10)
    client.request("GET", "/sse", headers=[("Accept", "text/event-stream")])
    head = client.read_head()
    reply = reply_from_raw(head)
    deadline = time.monotonic() + 10
    while len(EVENT_RE.findall(client.buffer)) < 3 and client._recv(deadline):
        pass
    return client, reply


@pytest.mark.timeout(60)
def test_sse_stream_on_sigterm():
    observed = {}
    for name in SERVERS:
        server = start(name, "sse_compat:app", "--timeout-graceful-shutdown", GRACE)
        try:
            logs = Logs(server)
            seen = Observed(name)
            client, head = open_stream(server)
            with client:
                head.headers = [(k, v) for k, v in head.headers if k != "transfer-encoding"]
                seen.replies.append(head)
                seen.replies.append(EVENT_RE.findall(client.buffer)[:3])
                sent = time.monotonic()
                server.signal(signal.SIGTERM)
                ended = client.closed_within(GRACE_PLUS)
                stream_s = time.monotonic() - sent
                code = server.proc.wait(timeout=GRACE_PLUS)
                exit_s = time.monotonic() - sent
            if name == "uvicorn" and code == -signal.SIGTERM:
                allowed("exit-status-after-sigterm")
                code = 0
            seen.effects = {
                "stream ended within 3 s": ended and stream_s < PROMPT,
                "exited within 3 s": exit_s < PROMPT,
                "exit code": code,
            }
            seen.effects_timing = (round(stream_s, 2), round(exit_s, 2))
            logs.settle()
            observed[name] = logs.fill(seen)
        finally:
            server.stop()
    assert observed["uvicorn"].effects["stream ended within 3 s"], observed["uvicorn"].log
    timing = {name: seen.effects_timing for name, seen in observed.items()}
    try:
        compare(observed)
    except AssertionError as exc:
        raise AssertionError(f"seconds after SIGTERM (stream end, exit): {timing}\n{exc}") from None


GRACE_PLUS = float(GRACE) + 5


@pytest.mark.timeout(60)
def test_sse_stream_on_sighup_reload(tmp_path: Path):
    """rsgi only (see "sighup-reload"): HUP replaces the worker; the old worker's open
    stream must end as promptly as uvicorn ends it on SIGTERM, and serving goes on."""
    allowed("sighup-reload")
    server = start(
        "rsgi",
        "sse_compat:app",
        "--timeout-graceful-shutdown",
        GRACE,
        "--pid",
        str(tmp_path / "rsgi.pid"),
    )
    try:
        client, _ = open_stream(server)
        with client:
            sent = time.monotonic()
            server.signal(signal.SIGHUP)
            ended = client.closed_within(GRACE_PLUS)
            stream_s = time.monotonic() - sent
        assert simple_get(server.port, "/ping").body == b"pong"
        server.assert_alive()
        assert ended and stream_s < PROMPT, (
            f"after SIGHUP the open SSE stream ended after {stream_s:.2f} s "
            f"(closed: {ended}); uvicorn ends it within {PROMPT} s of SIGTERM\n{server.output()}"
        )
    finally:
        server.stop(timeout=GRACE_PLUS)
