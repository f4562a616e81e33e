"""Bounded mutation fuzzing of request framing, against a real server (issue 16).

A few thousand requests are made from a fixed seed by mutating valid ones (bytes flipped,
inserted, deleted, lines duplicated, framing fields inserted); a sentinel request follows
each. Every case is sent twice, in one write and split into random segments, and must get:

* no crash, no hang (an answer or a close within a bound), no 500;
* nothing smuggled: the app sees a request only where a strict reading of the bytes
  (``oracle`` below, RFC 9112) finds one, with the same body;
* a refusal for every message RFC 9112 says must be refused (see ``MustRefuse``);
* the same first status whatever the segmentation.

The oracle flags only what RFC 9112 requires a server to refuse (or cannot be parsed at
all); where the RFC lets a server choose (bare LF, obs-fold, NUL, Content-Length next to
Transfer-Encoding, other versions), it stops judging that stream.
"""

from __future__ import annotations

import json
import random
import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from conftest import REPO_ROOT, running_server, simple_get

sys.path.insert(0, str(REPO_ROOT / "benches"))
import fuzz_heads  # noqa: E402  (the mutations benches/fuzz_heads.py makes)

pytestmark = pytest.mark.rsgi_only

SEED = 20261205
CASES = 4000
THREADS = 24
#: How long an exchange may take: the server's head, body and idle timeouts are 1 s.
EXCHANGE_BOUND = 4.0

TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = re.compile(TCHAR + rb"+")
REQUEST_LINE = re.compile(rb"(" + TCHAR + rb"+) ([\x21-\x7e\x80-\xff]+) HTTP/(\d)\.(\d)")
QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_EXT = (
    rb"(?:[ \t]*;[ \t]*" + TCHAR + rb"+(?:[ \t]*=[ \t]*(?:" + TCHAR + rb"+|" + QUOTED + rb"))?)*"
)
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(" + CHUNK_EXT + rb")")
REG_NAME = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


class MustRefuse(Exception):
    """RFC 9112 requires a 400 (or the bytes cannot be a request at all)."""


class Unsure(Exception):
    """The RFC leaves the choice to the server: judge no further."""


class Incomplete(Exception):
    pass


@dataclass
class Verdict:
    #: (target, body) of each message a strict reader finds, in order.
    messages: list[tuple[bytes, bytes]]
    #: What stopped the reading after them: "end", "refuse", "unsure" or "incomplete".
    stop: str
    #: The refused message's head is complete and valid: the app may see it, cut short.
    body_refused: bool = False


def valid_host(value: bytes) -> bool:
    if value.startswith(b"["):
        close = value.find(b"]")
        if close < 0:
            return False
        inner, port = value[1:close], value[close + 1 :]
        try:
            socket.inet_pton(socket.AF_INET6, inner.decode("ascii"))
        except (OSError, UnicodeDecodeError, ValueError):
            if not re.fullmatch(rb"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+", inner):
                return False
    else:
        host, _, rest = value.partition(b":")
        port = b":" + rest if _ else b""
        if not REG_NAME.fullmatch(host):
            return False
    return port == b"" or re.fullmatch(rb":\d*", port) is not None


def field_lines(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise Unsure("obs-fold")
        name, colon, value = line.partition(b":")
        if not colon:
            raise MustRefuse("field line without a colon")
        if name != name.rstrip(b" \t"):
            raise MustRefuse("whitespace between field name and colon")
        if not TOKEN.fullmatch(name):
            raise MustRefuse("field name not a token")
        if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
            raise Unsure("control character in a field value")
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


def read_message(data: bytes, pos: int) -> tuple[tuple[bytes, bytes], int, bool]:
    """One request from ``data[pos:]``: ((target, body), end, whether the server may switch
    protocols after it, so that what follows is not HTTP)."""
    while data.startswith(b"\r\n", pos):
        pos += 2
    # The request line ends at the first LF, whichever line end the server accepts; a bare
    # CR in it is invalid or read as a space (RFC 9112 2.2): either way it cannot match.
    line_end = data.find(b"\n", pos)
    if line_end < 0:
        raise Incomplete()
    request_line = data[pos:line_end].removesuffix(b"\r").replace(b"\r", b" ")
    match = REQUEST_LINE.fullmatch(request_line)
    if not match:
        raise MustRefuse("invalid request line")
    method, target, major, minor = match.groups()
    if re.search(rb"[\x80-\xff]", target):
        raise Unsure("non-ASCII request target")
    end = data.find(b"\r\n\r\n", pos)
    head = data[pos:] if end < 0 else data[pos : end + 2]
    if re.search(rb"\r(?!\n)|(?<!\r)\n", head):
        raise Unsure("bare CR or LF")
    if end < 0:
        raise Incomplete()
    lines = head[:-2].split(b"\r\n")
    if (major, minor) not in ((b"1", b"0"), (b"1", b"1")):
        raise Unsure("other HTTP version")
    if method == b"CONNECT" or target == b"*":
        raise Unsure("CONNECT or asterisk form")
    fields = field_lines(lines[1:])
    http10 = minor == b"0"
    hosts = [v for n, v in fields if n == b"host"]
    if (not http10 and not hosts) or len(hosts) > 1 or not all(map(valid_host, hosts)):
        raise MustRefuse("missing, repeated or invalid Host")
    upgrade = any(n == b"upgrade" for n, _ in fields)
    te = [v for n, v in fields if n == b"transfer-encoding"]
    cl = [v for n, v in fields if n == b"content-length"]
    pos = end + 4
    if te:
        if http10 or cl:
            raise Unsure("Transfer-Encoding on HTTP/1.0 or with Content-Length")
        codings = [c.strip(b" \t").lower() for c in b",".join(te).split(b",")]
        if codings[-1] != b"chunked":
            raise MustRefuse("final transfer coding is not chunked")
        if len(codings) > 1:
            raise Unsure("codings before chunked")
        return read_chunked(data, pos, target, upgrade)
    if cl:
        values = {v.strip(b" \t") for c in cl for v in c.split(b",")}
        if len(values) != 1 or not re.fullmatch(rb"\d+", next(iter(values))):
            raise MustRefuse("invalid Content-Length")
        if len(cl) > 1 or b"," in cl[0]:
            raise Unsure("repeated Content-Length")
        length = int(next(iter(values)))
        if len(data) - pos < length:
            raise Incomplete()
        return (target, data[pos : pos + length]), pos + length, upgrade
    return (target, b""), pos, upgrade


def read_chunked(data: bytes, pos: int, target: bytes, upgrade: bool):
    body = b""
    try:
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                raise Incomplete()
            match = CHUNK_LINE.fullmatch(data[pos:eol])
            if not match:
                raise MustRefuse("invalid chunk-size line")
            size = int(match.group(1), 16)
            if size > 1 << 40:
                raise Unsure("huge chunk")
            pos = eol + 2
            if size == 0:
                break
            if len(data) - pos < size + 2:
                raise Incomplete()
            body += data[pos : pos + size]
            if data[pos + size : pos + size + 2] != b"\r\n":
                raise MustRefuse("chunk data longer than its size")
            pos += size + 2
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                raise Incomplete()
            line, pos = data[pos:eol], eol + 2
            if not line:
                return (target, body), pos, upgrade
            field_lines([line])
    except (MustRefuse, Incomplete, Unsure) as exc:
        exc.head_done = True
        raise


def oracle(data: bytes) -> Verdict:
    messages: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(data):
        try:
            message, pos, switch = read_message(data, pos)
        except MustRefuse as exc:
            return Verdict(messages, "refuse", getattr(exc, "head_done", False))
        except Unsure:
            return Verdict(messages, "unsure")
        except Incomplete:
            return Verdict(messages, "incomplete")
        messages.append(message)
        if switch:
            return Verdict(messages, "unsure")
        if not data[pos:].strip(b"\r\n"):
            break
    return Verdict(messages, "end")


# -- cases ----------------------------------------------------------------------------

SEEDS = [
    (b"GET", b"HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n"),
    (b"POST", b"HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"),
    (
        b"POST",
        b"HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    ),
    (b"GET", b"HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
    (b"PUT", b"HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\n\r\n"),
]
TOKENS = [
    *fuzz_heads.SEPARATORS,
    b"\x16\x03\x01",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, gzip\r\n",
    b"Transfer-Encoding: xchunked\r\n",
    b"Host: x\r\n",
    b"Host: a b\r\n",
    b"Host: a@b\r\n",
    b"Upgrade: foo\r\n",
    b"0\r\n\r\n",
    b"5\t\r\n",
    b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"%ff",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    return fuzz_heads.mutate(rng, data, TOKENS, max_ops=3, max_junk=8)


def make_cases(rng: random.Random) -> list[bytes]:
    """Mutated requests whose target ``/t/ID`` is left whole, so that what the app logs can
    be traced to its case; each followed by the sentinel ``GET /s/ID``."""
    cases = []
    for i in range(CASES):
        method, rest = rng.choice(SEEDS)
        if rng.random() < 0.1:
            method = mutate(rng, method)
        rest = mutate(rng, rest) if rng.random() < 0.95 else rest
        sentinel = f"GET /s/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        cases.append(method + f" /t/{i} ".encode() + rest + sentinel)
    return cases


def segments(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# -- the exchange ------------------------------------------------------------------------


@dataclass
class Outcome:
    statuses: list[int]
    closed: bool
    seconds: float


def statuses_in(data: bytes) -> list[int]:
    """Statuses of the responses in ``data``, framed by their Content-Length."""
    found = []
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        match = re.match(rb"HTTP/1\.[01] (\d{3})", data[pos:])
        if end < 0 or not match:
            return found
        found.append(int(match.group(1)))
        length = re.search(rb"\r\ncontent-length: *(\d+)", data[pos:end].lower())
        pos = end + 4 + (int(length.group(1)) if length else 0)


def exchange(port: int, parts: list[bytes]) -> Outcome:
    started = time.monotonic()
    received = bytearray()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_BOUND) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i, part in enumerate(parts):
                if i:
                    time.sleep(0.003)
                sock.sendall(part)
        except OSError:
            pass  # refused before the rest was sent
        deadline = started + EXCHANGE_BOUND
        while time.monotonic() < deadline:
            # Once an answer came, a short silence ends the wait: the connection is idle.
            wait = 0.3 if received else deadline - time.monotonic()
            sock.settimeout(max(0.01, min(wait, deadline - time.monotonic())))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    return Outcome(statuses_in(bytes(received)), closed, time.monotonic() - started)


def app_log(port: int) -> list[list]:
    return json.loads(simple_get(port, "/log").body)


def run_all(port: int, sends: list[list[bytes]]) -> tuple[list[Outcome], list[list]]:
    assert simple_get(port, "/reset").status == 200
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(lambda parts: exchange(port, parts), sends))
    return outcomes, app_log(port)


def check(i: int, data: bytes, verdict: Verdict, outcome: Outcome, seen: list[list]) -> list:
    problems = []
    if 500 in outcome.statuses:
        problems.append("500")
    if not outcome.statuses and not outcome.closed:
        problems.append(f"no answer and no close in {outcome.seconds:.1f} s")
    targets = [target for target, _ in verdict.messages]
    for method, path, body in seen:
        target = path.encode("latin-1")
        if target not in targets and verdict.stop in ("refuse", "incomplete", "end"):
            if not (verdict.body_refused and body == "<disconnect>"):
                problems.append(f"the app saw {method} {path} {body!r}: not in the stream")
        if target in targets and verdict.stop != "unsure" and body != "<disconnect>":
            expected = dict(verdict.messages)[target].decode("latin-1")
            if body != expected:
                problems.append(f"the app got body {body!r} for {path}, not {expected!r}")
    if verdict.stop == "refuse":
        refused = len(verdict.messages)
        late = [s for s in outcome.statuses[refused:] if s < 400]
        if late:
            problems.append(f"message {refused} must be refused; statuses {outcome.statuses}")
    return [f"case {i} {data!r}: {p}" for p in problems]


def test_mutated_requests_in_any_segmentation(tmp_path):
    rng = random.Random(SEED)
    cases = make_cases(rng)
    split = [segments(rng, data) for data in cases]
    verdicts = [oracle(data) for data in cases]
    # The oracle judges a good share of the cases, and finds refusals among them.
    stops = [v.stop for v in verdicts]
    assert stops.count("refuse") > CASES // 5, {s: stops.count(s) for s in set(stops)}
    assert stops.count("end") > CASES // 10, {s: stops.count(s) for s in set(stops)}
    started = time.monotonic()
    with running_server(
        "smuggle_app:app",
        "--no-access-log",
        "--timeout-header-read",
        "1",
        "--timeout-body-read",
        "1",
        "--timeout-keep-alive",
        "1",
    ) as server:
        problems = []
        first_statuses = []
        for sends in ([[data] for data in cases], split):
            outcomes, log = run_all(server.port, sends)
            by_case: dict[int, list[list]] = {}
            for method, path, body in log:
                match = re.match(r"/[ts]/(\d+)$", path)
                if match:
                    by_case.setdefault(int(match.group(1)), []).append([method, path, body])
            for i, (data, outcome) in enumerate(zip(cases, outcomes, strict=True)):
                problems += check(i, data, verdicts[i], outcome, by_case.get(i, []))
            first_statuses.append([o.statuses[:1] for o in outcomes])
            server.assert_alive()
        for i, (whole, parts) in enumerate(zip(*first_statuses, strict=True)):
            if whole != parts:
                problems.append(f"case {i} {cases[i]!r}: first status {whole} whole, {parts} split")
        assert simple_get(server.port, "/reset").status == 200
    elapsed = time.monotonic() - started
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:30])
    assert elapsed < 90, f"the fuzz run took {elapsed:.0f} s"
