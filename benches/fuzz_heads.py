"""Mutation fuzzing of the request-head-to-scope path, against a real rsgi server.

Starts rsgi on a scope-echo app, then for a fixed time sends mutated request heads (bytes
flipped, inserted, deleted, lines duplicated, separators swapped) over raw sockets. After every
case the server must still answer a valid request with 200, and a case may never get two
responses (a smuggled second request). Findings are written to benches/results/fuzz-*.txt.

    python benches/fuzz_heads.py --seconds 60

This is black-box fuzzing over the wire. (`cargo fuzz` needs a nightly toolchain and
libFuzzer; run it on `src/http/framing.rs` where those are at hand.)
"""

from __future__ import annotations

import argparse
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = [
    b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
]
# Line ends, separators and a NUL: the bytes every framing rule is about (tests/test_fuzz.py too).
SEPARATORS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"\x00"]
TOKENS = [
    *SEPARATORS,
    b"\x7f",
    b"\xff",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Host: x\r\n",
    b"0\r\n\r\n",
    b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"%",
    b"%ff",
    b"?",
    b"#",
    b"\xc3\x28",
]


def mutate(
    rng: random.Random,
    data: bytes,
    tokens: list[bytes] = TOKENS,
    max_ops: int = 4,
    max_junk: int = 16,
) -> bytes:
    """Up to `max_ops` random edits: a flipped byte, an inserted token, deleted bytes, a
    repeated line, or up to `max_junk` random bytes. tests/test_fuzz.py uses it too."""
    out = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[at:at] = rng.choice(tokens)
        elif op == 2 and out:
            del out[at : at + rng.randint(1, 8)]
        elif op == 3:
            lines = bytes(out).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            out = bytearray(b"\r\n".join(lines))
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, max_junk)))
    return bytes(out)


def exchange(port: int, data: bytes, timeout: float = 2.0, half_close: bool = True) -> bytes:
    """Sends `data`, then reads until the server closes (or `timeout` passes in silence).
    `half_close` also ends our side, as a client done sending would; servers may take that
    for a client that left (hyper and uvicorn do), so the health check keeps it open."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def healthy(port: int) -> bool:
    request = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    return exchange(port, request, half_close=False).startswith(b"HTTP/1.1 200 ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    apps = str(HERE.parent / "tests" / "apps")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rsgi",
            "raw_app:app",
            "--app-dir",
            apps,
            "--port",
            str(args.port),
            "--no-access-log",
            "--timeout-header-read",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    findings: list[str] = []
    cases = 0
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                exchange(args.port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                break
            except OSError:
                if time.monotonic() > deadline:
                    print("server did not start", file=sys.stderr)
                    return 2
                time.sleep(0.1)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            case = mutate(rng, rng.choice(SEEDS))
            cases += 1
            try:
                reply = exchange(args.port, case)
            except OSError as exc:
                reply = repr(exc).encode()
            if reply.count(b"HTTP/1.") > 2 or b"/smuggled" in reply:
                findings.append(f"two responses to {case!r}: {reply[:300]!r}")
            if server.poll() is not None:
                findings.append(f"server died after {case!r}")
                break
            if not healthy(args.port):
                findings.append(f"server stopped answering after {case!r}")
                break
    finally:
        server.terminate()
        server.wait(10)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    report = out / f"fuzz-{args.seed}.txt"
    report.write_text("\n".join(findings) + "\n")
    print(f"{cases} cases in {args.seconds:.0f} s (seed {args.seed}): {len(findings)} finding(s)")
    for f in findings[:10]:
        print("  " + f)
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
