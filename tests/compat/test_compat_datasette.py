"""datasette: HTML, JSON, streaming CSV, curl -I, and a CSV download the client abandons."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time

import httpx
import pytest
from conftest import RawClient
from differences import allowed
from harness import Observed, Reply, both, compare, observe, reply_from_httpx

HOST = {"Host": "compat.test"}  # pages print absolute URLs built from Host
# Query times, and the index page's row counts (shown once a background count finished).
TIMING_RE = re.compile(rb'took [0-9.]+ms|"query_ms": [0-9.]+|[0-9,]+ rows in | title="[0-9]+ rows"')


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    db = tmp_path_factory.mktemp("datasette") / "ds.db"
    with sqlite3.connect(db) as con:
        con.execute("create table t (id integer primary key, name text, n integer)")
        rows = ((f"row {i} " + "x" * 40, i) for i in range(100_000))
        con.executemany("insert into t (name, n) values (?, ?)", rows)
    with both("datasette_compat:app", env={"COMPAT_DB": str(db)}) as servers:
        yield servers


PAGES = [
    "/",
    "/ds",
    "/ds/t?_size=5",
    "/ds/t.json?_shape=array&_size=5",
    "/ds/t.json?_size=2",
    "/ds/t.csv?_stream=on&_size=max",
    "/ds/t.csv?_size=max",
    "/-/static/app.css",
    "/nope",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", PAGES)
def test_page(servers, path):
    def scenario(server, seen: Observed) -> None:
        resp = httpx.get(server.base_url + path, headers=HOST, timeout=30)
        seen.replies.append(reply_from_httpx(resp, lambda body: TIMING_RE.sub(b"<t>", body)))

    # datasette itself prints a traceback for its 404 page, under both servers.
    compare(observe(servers, scenario), expect_problems=True if path == "/nope" else False)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/-/static/app.css", "/ds/t.csv?_size=3"])
def test_curl_head(servers, path):
    """`curl -I`: a HEAD request, as curl sends it."""

    def scenario(server, seen: Observed) -> None:
        out = subprocess.run(
            ["curl", "-sS", "-I", "--max-time", "10", server.base_url + path],
            capture_output=True,
            timeout=20,
        )
        lines = out.stdout.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines[0] else 0
        headers = [
            (k.strip().lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:] if x)
        ]
        seen.replies.append(Reply(status, headers, b""))
        seen.effects["curl exit"] = out.returncode

    observed = observe(servers, scenario)
    rsgi, uvicorn = observed["rsgi"].replies[0], observed["uvicorn"].replies[0]
    framing = {"content-length", "transfer-encoding"}
    if not any(name in framing for name, _ in uvicorn.headers):
        allowed("head-length")
        rsgi.headers = [(k, v) for k, v in rsgi.headers if k != "content-length"]
    compare(observed)


@pytest.mark.timeout(30)
def test_csv_download_aborted_by_client(servers):
    """The client reads 64 KiB of a streaming CSV, then closes its socket (RST)."""

    def scenario(server, seen: Observed) -> None:
        client = RawClient(server.port, rcvbuf=16384)
        client.request("GET", "/ds/t.csv?_stream=on&_size=max")
        seen.replies.append(client.read_head().status)
        deadline = time.monotonic() + 10
        while len(client.buffer) < 65536 and client._recv(deadline):
            pass
        client.abort()
        time.sleep(1.0)  # let the server notice and finish
        # The server must go on serving.
        seen.replies.append(httpx.get(server.base_url + "/ds.json", timeout=10).status_code)

    observed = observe(servers, scenario)
    # rsgi's send() raised ClientDisconnected; datasette prints what it caught itself. rsgi
    # must log nothing of its own, and every traceback must end in the disconnect.
    allowed("client-disconnected")
    rsgi = observed["rsgi"]
    assert "Exception in ASGI application" not in rsgi.log, rsgi.log
    assert not re.search(r"^(ERROR|WARNING):", rsgi.log, re.MULTILINE), rsgi.log
    final = r"^([A-Za-z_][\w.]*(?:Error|Exception|Disconnected)): "
    raised = {name.rsplit(".", 1)[-1] for name in re.findall(final, rsgi.log, re.MULTILINE)}
    assert raised <= {"ClientDisconnected"}, rsgi.log
    rsgi.problems = []
    compare(observed)
