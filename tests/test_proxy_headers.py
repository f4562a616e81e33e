"""Proxy headers (issue 6): client address and scheme from trusted peers only.

A table of cases against tests/apps/scope_app.py, which echoes the ASGI scope.  Each case
names the server's options (and environment), the request headers, and the ``client`` and
``scheme`` the app must see.  ``PEER`` stands for the connection's own address, i.e. the
proxy headers were ignored.  X-Forwarded-For gives port 0.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass

import pytest
from conftest import RawClient, Server, spawn_server, wait_until_accepting

pytestmark = pytest.mark.rsgi_only

PEER = "peer"


@dataclass(frozen=True)
class Case:
    headers: tuple[tuple[str, str], ...]
    client: object  # PEER, None, or [host, port]
    scheme: str = "http"
    options: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    uds: bool = False


XFF = "X-Forwarded-For"
XFP = "X-Forwarded-Proto"
FWD = "Forwarded"
ALLOW = "--forwarded-allow-ips"

CASES: dict[str, Case] = {
    # -- the default trust list is 127.0.0.1, which is where the tests connect from ------
    "no-proxy-headers": Case((), PEER),
    "trusted-default-xff": Case(((XFF, "1.2.3.4"),), ["1.2.3.4", 0]),
    "trusted-default-xff-and-proto": Case(
        ((XFF, "1.2.3.4"), (XFP, "https")), ["1.2.3.4", 0], "https"
    ),
    "proto-alone-keeps-peer": Case(((XFP, "https"),), PEER, "https"),
    "proto-uppercase": Case(((XFF, "1.2.3.4"), (XFP, "HTTPS")), ["1.2.3.4", 0], "https"),
    "proto-http": Case(((XFF, "1.2.3.4"), (XFP, "http")), ["1.2.3.4", 0], "http"),
    "proto-invalid-ignored": Case(((XFP, "gopher"),), PEER, "http"),
    "proto-invalid-ignored-client-kept": Case(
        ((XFF, "1.2.3.4"), (XFP, "javascript")), ["1.2.3.4", 0], "http"
    ),
    "xff-ipv6": Case(((XFF, "2001:db8::1"),), ["2001:db8::1", 0]),
    # -- untrusted peers: everything ignored ------------------------------------------
    "untrusted-peer": Case(
        ((XFF, "1.2.3.4"), (XFP, "https")), PEER, "http", options=(ALLOW, "10.0.0.1")
    ),
    "untrusted-peer-forwarded": Case(
        ((FWD, "for=1.2.3.4;proto=https"),), PEER, "http", options=(ALLOW, "10.0.0.1")
    ),
    "untrusted-peer-empty-list": Case(((XFF, "1.2.3.4"),), PEER, options=(ALLOW, "")),
    # -- CIDRs, *, lists ----------------------------------------------------------------
    "cidr-trusted": Case(
        ((XFF, "1.2.3.4"), (XFP, "https")), ["1.2.3.4", 0], "https", options=(ALLOW, "127.0.0.0/8")
    ),
    "cidr-not-matching": Case(((XFF, "1.2.3.4"),), PEER, options=(ALLOW, "10.0.0.0/8")),
    "star-trusts-all": Case(
        ((XFF, "1.2.3.4"), (XFP, "https")), ["1.2.3.4", 0], "https", options=(ALLOW, "*")
    ),
    "list-with-spaces": Case(
        ((XFF, "1.2.3.4"),), ["1.2.3.4", 0], options=(ALLOW, "10.0.0.1, 127.0.0.1")
    ),
    "ipv6-entries-only-untrusted": Case(
        ((XFF, "1.2.3.4"),), PEER, options=(ALLOW, "::1,2001:db8::/32")
    ),
    # -- several hops: the right-most untrusted one is the client -----------------------
    "hops-rightmost-untrusted": Case(
        ((XFF, "6.6.6.6, 1.2.3.4, 10.1.2.3"),),
        ["1.2.3.4", 0],
        options=(ALLOW, "127.0.0.1,10.0.0.0/8"),
    ),
    "hops-untrusted-nearest": Case(((XFF, "6.6.6.6, 1.2.3.4"),), ["1.2.3.4", 0]),
    "hops-spoofed-left-ignored": Case(((XFF, "127.0.0.1, 5.6.7.8"),), ["5.6.7.8", 0]),
    "hops-all-trusted-leftmost": Case(
        ((XFF, "10.0.0.5, 10.0.0.6"),),
        ["10.0.0.5", 0],
        options=(ALLOW, "127.0.0.1,10.0.0.0/8"),
    ),
    "hops-star-leftmost": Case(((XFF, "1.1.1.1, 2.2.2.2"),), ["1.1.1.1", 0], options=(ALLOW, "*")),
    "hops-two-header-lines": Case(
        ((XFF, "6.6.6.6"), (XFF, "1.2.3.4, 10.0.0.9")),
        ["1.2.3.4", 0],
        options=(ALLOW, "127.0.0.1,10.0.0.0/8"),
    ),
    "hops-ipv6-trusted-middle": Case(
        ((XFF, "1.2.3.4, 2001:db8::5"),),
        ["1.2.3.4", 0],
        options=(ALLOW, "127.0.0.1,2001:db8::/32"),
    ),
    "hops-ipv6-client": Case(
        ((XFF, "2001:db9::7, 10.0.0.1"),),
        ["2001:db9::7", 0],
        options=(ALLOW, "127.0.0.1,10.0.0.1"),
    ),
    # -- malformed X-Forwarded-For: ignored as a whole, the peer stands -----------------
    "xff-not-an-ip": Case(((XFF, "not-an-ip"),), PEER),
    "xff-one-bad-hop": Case(((XFF, "1.2.3.4, not-an-ip"),), PEER),
    "xff-empty-hop": Case(((XFF, "1.2.3.4,,5.6.7.8"),), PEER),
    "xff-octet-out-of-range": Case(((XFF, "300.1.1.1"),), PEER),
    "xff-hostname": Case(((XFF, "evil.example"),), PEER),
    # -- RFC 7239 Forwarded -------------------------------------------------------------
    "forwarded-for": Case(((FWD, "for=192.0.2.60"),), ["192.0.2.60", 0]),
    "forwarded-for-proto": Case(
        ((FWD, "for=192.0.2.60;proto=https;by=203.0.113.43"),), ["192.0.2.60", 0], "https"
    ),
    "forwarded-quoted-ipv6-port": Case(((FWD, 'for="[2001:db8::1]:4711"'),), ["2001:db8::1", 4711]),
    "forwarded-case-insensitive-keys": Case(
        ((FWD, "For=192.0.2.60;Proto=https"),), ["192.0.2.60", 0], "https"
    ),
    "forwarded-hops-rightmost-untrusted": Case(
        ((FWD, "for=192.0.2.60, for=198.51.100.17;proto=https"),),
        ["198.51.100.17", 0],
        "https",
    ),
    "forwarded-hops-trusted-middle": Case(
        ((FWD, 'for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711"'),),
        ["192.0.2.60", 0],
        "https",
        options=(ALLOW, "127.0.0.1,2001:db8::/32"),
    ),
    "forwarded-preferred-over-xff": Case(
        ((FWD, "for=192.0.2.60;proto=https"), (XFF, "1.2.3.4"), (XFP, "http")),
        ["192.0.2.60", 0],
        "https",
    ),
    "forwarded-malformed-falls-back-to-xff": Case(
        ((FWD, "for=300.1.1.1"), (XFF, "1.2.3.4"), (XFP, "https")), ["1.2.3.4", 0], "https"
    ),
    "forwarded-garbage-falls-back-to-xff": Case(
        ((FWD, "this is not; a forwarded header"), (XFF, "1.2.3.4")), ["1.2.3.4", 0]
    ),
    "forwarded-bad-proto-falls-back-to-xff": Case(
        ((FWD, "for=192.0.2.60;proto=gopher"), (XFF, "1.2.3.4")), ["1.2.3.4", 0]
    ),
    "forwarded-malformed-alone-peer-stands": Case(((FWD, 'for="192.0.2.60'),), PEER),
    # -- --no-proxy-headers ---------------------------------------------------------------
    "no-proxy-headers-option": Case(
        ((XFF, "1.2.3.4"), (XFP, "https"), (FWD, "for=192.0.2.60;proto=https")),
        PEER,
        "http",
        options=("--no-proxy-headers",),
    ),
    "no-proxy-headers-even-with-star": Case(
        ((XFF, "1.2.3.4"), (XFP, "https")),
        PEER,
        "http",
        options=("--no-proxy-headers", ALLOW, "*"),
    ),
    # -- $FORWARDED_ALLOW_IPS -------------------------------------------------------------
    "env-untrusts-default": Case(
        ((XFF, "1.2.3.4"), (XFP, "https")), PEER, "http", env=(("FORWARDED_ALLOW_IPS", "10.0.0.1"),)
    ),
    "env-cidr-trusted": Case(
        ((XFF, "1.2.3.4"),), ["1.2.3.4", 0], env=(("FORWARDED_ALLOW_IPS", "127.0.0.0/8"),)
    ),
    "env-rsgi-prefixed": Case(
        ((XFF, "1.2.3.4"),), PEER, env=(("RSGI_FORWARDED_ALLOW_IPS", "10.0.0.1"),)
    ),
    "cli-wins-over-env": Case(
        ((XFF, "1.2.3.4"),),
        ["1.2.3.4", 0],
        options=(ALLOW, "127.0.0.1"),
        env=(("FORWARDED_ALLOW_IPS", "10.0.0.1"),),
    ),
    # -- unix sockets: trusted only with `unix` (or `*`) in the list ----------------------
    "uds-default-untrusted": Case(((XFF, "1.2.3.4"), (XFP, "https")), PEER, "http", uds=True),
    "uds-unix-trusted": Case(
        ((XFF, "1.2.3.4"), (XFP, "https")),
        ["1.2.3.4", 0],
        "https",
        options=(ALLOW, "unix"),
        uds=True,
    ),
    "uds-unix-forwarded": Case(
        ((FWD, 'for="[2001:db8::1]:4711";proto=https'),),
        ["2001:db8::1", 4711],
        "https",
        options=(ALLOW, "127.0.0.1,unix"),
        uds=True,
    ),
    "uds-star-trusted": Case(((XFF, "1.2.3.4"),), ["1.2.3.4", 0], options=(ALLOW, "*"), uds=True),
    "uds-ip-list-untrusted": Case(
        ((XFF, "1.2.3.4"),), PEER, options=(ALLOW, "127.0.0.1,0.0.0.0/0"), uds=True
    ),
}


def server_key(case: Case) -> tuple:
    return (case.options, case.env, case.uds)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One server per distinct (options, env, uds) in the table, all started at once."""
    sock_dir = tmp_path_factory.mktemp("uds")
    started: dict[tuple, Server] = {}
    try:
        for case in CASES.values():
            key = server_key(case)
            if key in started:
                continue
            kwargs: dict = {"env": dict(case.env)}
            if case.uds:
                kwargs.update(port=False, uds=str(sock_dir / f"s{len(started)}.sock"))
            started[key] = spawn_server("scope_app:app", *case.options, **kwargs)
        for server in started.values():
            wait_until_accepting(server)
        yield lambda case: started[server_key(case)]
    finally:
        for server in started.values():
            if server.alive():
                server.signal(signal.SIGTERM)
        for server in started.values():
            server.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_proxy_headers(servers, name):
    case = CASES[name]
    server = servers(case)
    with RawClient(server.port, uds=server.uds) as client:
        local = None if case.uds else ["127.0.0.1", client.local_port]
        client.request("GET", "/", headers=[*case.headers, ("Connection", "close")])
        resp = client.read_response()
    assert resp.status == 200, resp.raw_head
    scope = json.loads(resp.body)["scope"]
    expected_client = local if case.client == PEER else case.client
    assert (scope["client"], scope["scheme"]) == (expected_client, case.scheme), (
        f"case {name}: headers {case.headers}, options {case.options}, env {case.env}"
    )
    server.assert_alive()


def test_server_address_is_never_rewritten(servers):
    """Proxy headers change the client and scheme, never the server address."""
    server = servers(CASES["trusted-default-xff"])
    with RawClient(server.port) as client:
        client.request(
            "GET",
            "/",
            headers=[
                (XFF, "1.2.3.4"),
                (FWD, "for=1.2.3.4;host=evil.example;by=9.9.9.9"),
                ("Connection", "close"),
            ],
        )
        scope = json.loads(client.read_response().body)["scope"]
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["client"] == ["1.2.3.4", 0]


def test_invalid_allow_list_is_a_startup_error(server_factory):
    server = server_factory("scope_app:app", ALLOW, "localhost", wait=False)
    code = server.wait_exit(10)
    assert code != 0
    assert "localhost" in server.stderr() + server.stdout()
