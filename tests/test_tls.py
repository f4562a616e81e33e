"""TLS with rustls: certificates made at test time by a test CA (trustme), real clients
(httpx and ssl sockets) over real sockets.

Covers TLS 1.2 and 1.3, ALPN, the "https" scheme and the ASGI ``tls`` scope extension,
client certificates (none, optional, required; absent, trusted, untrusted), an encrypted
PKCS#8 key, bad TLS settings, and clients that do not speak TLS.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import time

import httpx
import pytest
from conftest import RawClient, start_server, wait_for

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.rsgi_only

HOSTNAME = "localhost"
CLIENT_NAME = "rsgi test client"

# IANA numbers of the cipher suites Python's ssl may negotiate with rustls, by OpenSSL name.
CIPHER_SUITES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
}


class Pki:
    """A test CA, the server's certificate, and client certificates (one from another CA)."""

    def __init__(self, directory) -> None:
        self.dir = directory
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert(HOSTNAME, "127.0.0.1")
        self.client = self.ca.issue_cert("client.example", common_name=CLIENT_NAME)
        self.stranger = trustme.CA().issue_cert("stranger.example", common_name="stranger")
        self.certfile = self.write("server-chain.pem", *self.server.cert_chain_pems)
        self.keyfile = self.write("server-key.pem", self.server.private_key_pem)
        self.combined = self.write(
            "server-combined.pem", self.server.private_key_and_cert_chain_pem
        )
        self.ca_file = self.write("ca.pem", self.ca.cert_pem)
        self.client_file = self.write("client.pem", self.client.private_key_and_cert_chain_pem)
        self.stranger_file = self.write(
            "stranger.pem", self.stranger.private_key_and_cert_chain_pem
        )

    def write(self, name: str, *blobs) -> str:
        path = self.dir / name
        path.write_bytes(b"".join(blob.bytes() for blob in blobs))
        return str(path)

    def server_args(self, *extra: str) -> tuple[str, ...]:
        return ("--ssl-certfile", self.certfile, "--ssl-keyfile", self.keyfile, *extra)

    def context(
        self, *, version: ssl.TLSVersion | None = None, client_cert: str | None = None
    ) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if version is not None:
            ctx.minimum_version = version
            ctx.maximum_version = version
        if client_cert is not None:
            ctx.load_cert_chain(client_cert)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki):
    server = start_server("ext_app:app", *pki.server_args())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(pki):
    """Client certificates required."""
    args = pki.server_args("--ssl-ca-certs", pki.ca_file, "--ssl-cert-reqs", "2")
    server = start_server("ext_app:app", *args)
    yield server
    server.stop()


def pem_certificates(path: str) -> list[str]:
    """The certificates of a PEM file, each as ssl.DER_cert_to_PEM_cert writes it."""
    text = open(path).read()
    end = "-----END CERTIFICATE-----"
    blocks = [b[b.index("-----BEGIN CERTIFICATE-----") :] + end for b in text.split(end)[:-1]]
    return [ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(b)) for b in blocks]


def client_chains(pki: Pki) -> list[list[str]]:
    """What the client may send: its certificate file, to which OpenSSL may add the CA
    certificate from its trust store."""
    sent = pem_certificates(pki.client_file)
    return [sent, sent + pem_certificates(pki.ca_file)]


def tls_client(port: int, ctx: ssl.SSLContext) -> RawClient:
    client = RawClient(port)
    client.sock = ctx.wrap_socket(client.sock, server_hostname=HOSTNAME)
    return client


def get_json(client: RawClient, target: str) -> dict:
    client.request("GET", target)
    resp = client.read_response()
    assert resp.status == 200, resp.body
    return json.loads(resp.body)


def https_get(port: int, ctx: ssl.SSLContext, target: str = "/scope") -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=10) as client:
        return client.get(f"https://{HOSTNAME}:{port}{target}")


def handshake_rejected(port: int, ctx: ssl.SSLContext) -> bool:
    """True when the server refuses the client's TLS handshake.

    With TLS 1.3 the client may finish its side before the server checks the client
    certificate; the refusal then shows on the first read.
    """
    try:
        client = tls_client(port, ctx)
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        client.request("GET", "/scope", headers=[("Connection", "close")])
        data = client.sock.recv(65536)
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        client.close()
    return data == b""


@pytest.mark.parametrize(
    "version, number",
    [(ssl.TLSVersion.TLSv1_2, 0x0303), (ssl.TLSVersion.TLSv1_3, 0x0304)],
    ids=["tls1.2", "tls1.3"],
)
def test_tls_versions_and_scope(tls_server, pki, version, number):
    with tls_client(tls_server.port, pki.context(version=version)) as client:
        assert client.sock.version() == version.name.replace("_", ".")
        assert client.sock.selected_alpn_protocol() == "http/1.1"
        cipher_name = client.sock.cipher()[0]
        info = get_json(client, "/scope")
    assert info["scheme"] == "https"
    tls = info["extensions"]["tls"]
    assert tls["tls_version"] == number
    assert tls["cipher_suite"] == CIPHER_SUITES[cipher_name]
    assert tls["server_cert"] == pki.server.cert_chain_pems[0].bytes().decode()
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    assert set(tls) == {
        "server_cert",
        "client_cert_chain",
        "client_cert_name",
        "client_cert_error",
        "tls_version",
        "cipher_suite",
    }


def test_httpx_over_https_keep_alive(tls_server, pki):
    with httpx.Client(verify=pki.context(), timeout=10) as client:
        for _ in range(3):
            resp = client.get(f"https://{HOSTNAME}:{tls_server.port}/scope")
            assert resp.status_code == 200
            assert resp.json()["scheme"] == "https"
            assert resp.http_version == "HTTP/1.1"
    tls_server.assert_alive()


def test_startup_line_says_https(tls_server):
    tls_server.wait_for_stderr(rf"running on https://127\.0\.0\.1:{tls_server.port}")


def test_plain_http_scope_has_no_tls(server_factory):
    server = server_factory("ext_app:app")
    with RawClient(server.port) as client:
        info = get_json(client, "/scope")
    assert info["scheme"] == "http"
    assert "tls" not in info["extensions"]


def test_key_in_the_certificate_file(server_factory, pki):
    server = server_factory("ext_app:app", "--ssl-certfile", pki.combined)
    assert https_get(server.port, pki.context()).json()["scheme"] == "https"


def test_client_certificate_required_and_absent(mtls_server, pki):
    assert handshake_rejected(mtls_server.port, pki.context())
    assert handshake_rejected(mtls_server.port, pki.context(version=ssl.TLSVersion.TLSv1_2))
    mtls_server.assert_alive()


def test_client_certificate_required_and_untrusted(mtls_server, pki):
    assert handshake_rejected(mtls_server.port, pki.context(client_cert=pki.stranger_file))
    mtls_server.assert_alive()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_certificate_required_and_present(mtls_server, pki, version):
    ctx = pki.context(version=version, client_cert=pki.client_file)
    tls = https_get(mtls_server.port, ctx).json()["extensions"]["tls"]
    sent = client_chains(pki)
    assert tls["client_cert_chain"] in sent
    assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----\n")
    from cryptography import x509

    leaf = tls["client_cert_chain"][0]
    subject = x509.load_pem_x509_certificate(leaf.encode()).subject
    assert tls["client_cert_name"] == subject.rfc4514_string()
    assert tls["client_cert_name"].startswith(f"CN={CLIENT_NAME},")
    assert tls["client_cert_error"] is None


def test_client_certificate_optional(server_factory, pki):
    args = pki.server_args("--ssl-ca-certs", pki.ca_file, "--ssl-cert-reqs", "1")
    server = server_factory("ext_app:app", *args)
    without = https_get(server.port, pki.context()).json()["extensions"]["tls"]
    assert without["client_cert_chain"] == [] and without["client_cert_name"] is None
    ctx = pki.context(client_cert=pki.client_file)
    with_cert = https_get(server.port, ctx).json()["extensions"]["tls"]
    assert with_cert["client_cert_chain"] in client_chains(pki)
    assert with_cert["client_cert_name"].startswith(f"CN={CLIENT_NAME},")
    # Optional still means verified when sent.
    assert handshake_rejected(server.port, pki.context(client_cert=pki.stranger_file))
    server.assert_alive()


def test_cert_reqs_none_ignores_client_certificates(server_factory, pki):
    args = pki.server_args("--ssl-ca-certs", pki.ca_file, "--ssl-cert-reqs", "0")
    server = server_factory("ext_app:app", *args)
    ctx = pki.context(client_cert=pki.client_file)
    assert https_get(server.port, ctx).json()["extensions"]["tls"]["client_cert_chain"] == []


def encrypted_key(pki: Pki, password: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.server.private_key_pem.bytes(), None)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    path = pki.dir / "server-key-encrypted.pem"
    path.write_bytes(pem)
    return str(path)


@pytest.mark.parametrize("by", ["option", "environment"])
def test_encrypted_key_with_password(server_factory, pki, by):
    password = "s3cret pass" if by == "option" else "from-env"
    keyfile = encrypted_key(pki, password.encode())
    args = ["--ssl-certfile", pki.certfile, "--ssl-keyfile", keyfile]
    if by == "option":
        server = server_factory("ext_app:app", *args, "--ssl-keyfile-password", password)
    else:
        server = server_factory("ext_app:app", *args, env={"RSGI_SSL_KEYFILE_PASSWORD": password})
    response = https_get(server.port, pki.context())
    assert response.status_code == 200
    assert response.json()["scheme"] == "https"


@pytest.mark.parametrize(
    "password, message",
    [("wrong", "cannot decrypt the key"), (None, "is encrypted: give its password")],
)
def test_encrypted_key_bad_password_fails_at_startup(server_factory, pki, password, message):
    keyfile = encrypted_key(pki, b"right")
    args = ["--ssl-certfile", pki.certfile, "--ssl-keyfile", keyfile]
    if password is not None:
        args += ["--ssl-keyfile-password", password]
    server = server_factory("ext_app:app", *args, wait=False)
    assert server.wait_exit(15) == 1
    assert message in server.stderr()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ssl-keyfile", "k.pem"], "--ssl-keyfile needs --ssl-certfile"),
        (["--ssl-certfile", "c.pem", "--ssl-cert-reqs", "2"], "needs --ssl-ca-certs"),
        (["--ssl-certfile", "c.pem", "--ssl-cert-reqs", "3"], "between 0 and 2"),
    ],
)
def test_bad_tls_options_are_usage_errors(server_factory, args, message):
    server = server_factory("ext_app:app", *args, wait=False)
    assert server.wait_exit(15) == 2
    assert message in server.stderr()


def test_unreadable_certificate_fails_at_startup(server_factory, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    server = server_factory("ext_app:app", "--ssl-certfile", str(bogus), wait=False)
    assert server.wait_exit(15) == 1
    assert "no PEM certificate" in server.stderr()


def test_plain_http_client_on_tls_port(tls_server, pki):
    with RawClient(tls_server.port) as client:
        client.request("GET", "/scope")
        assert client.closed_within(5)
        assert not client.buffer.startswith(b"HTTP/1.1 200")
    assert https_get(tls_server.port, pki.context()).status_code == 200


def test_silent_client_is_cut_after_handshake_timeout(server_factory, pki):
    server = server_factory("ext_app:app", *pki.server_args("--timeout-header-read", "1"))
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(10)
    started = time.monotonic()
    try:
        assert sock.recv(1024) == b""
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    assert time.monotonic() - started < 5
    wait_for(lambda: https_get(server.port, pki.context()).status_code == 200)


def test_a_stop_lets_an_accepted_connection_finish_its_handshake(server_factory, pki):
    """A connection accepted before the stop is answered, though its handshake had not
    begun: with workers sharing the listening socket, no other one can take it back."""
    server = server_factory("ext_app:app", *pki.server_args())
    client = RawClient(server.port)
    time.sleep(0.2)  # accepted, no ClientHello yet
    server.signal(signal.SIGTERM)
    time.sleep(0.3)
    client.sock = pki.context().wrap_socket(client.sock, server_hostname=HOSTNAME)
    with client:
        client.request("GET", "/scope")
        resp = client.read_response()
        assert resp.status == 200 and json.loads(resp.body)["scheme"] == "https"
        assert resp.header("connection") == b"close"
    assert server.wait_exit(10) == 0


def test_ambiguous_framing_is_refused_over_tls(tls_server, pki):
    with tls_client(tls_server.port, pki.context()) as client:
        client.send(
            b"POST /scope HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /scope HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        resp = client.read_response()
        assert resp.status == 400
        assert client.closed_within(5)


def test_pathsend_over_tls(tls_server, pki, tmp_path):
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    resp = https_get(tls_server.port, pki.context(), f"/file?path={path}")
    assert resp.status_code == 200
    assert resp.content == data
