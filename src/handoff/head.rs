//! What the I/O thread knows of a request and its connection, handed to the loop thread as
//! plain data when the request starts.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri, Version};

/// One side of a connection, as the ASGI scope reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Host text made once per connection, so requests need not format the address again.
    Tcp(Box<str>, u16),
    Unix(String),
    Unknown,
}

impl Endpoint {
    /// `host:port`, a unix socket path, or `-`, for log lines.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Tcp(host, port) => format!("{host}:{port}"),
            Endpoint::Unix(path) => path.clone(),
            Endpoint::Unknown => "-".into(),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Tcp(addr.ip().to_string().into_boxed_str(), addr.port())
    }
}

/// Facts about a connection that every request on it shares.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: Endpoint,
    pub server: Endpoint,
    /// The connection is TLS: the scope's scheme is "https" (or "wss").
    pub tls: bool,
    /// What the ASGI `tls` extension reports; `Some` exactly when `tls`.
    pub tls_info: Option<Box<TlsInfo>>,
}

impl ConnInfo {
    pub fn new(client: Endpoint, server: Endpoint, tls_info: Option<TlsInfo>) -> Self {
        ConnInfo {
            client,
            server,
            tls: tls_info.is_some(),
            tls_info: tls_info.map(Box::new),
        }
    }
}

/// A request head handed to the loop thread: plain data, moved out of hyper's request.
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub conn: Arc<ConnInfo>,
    /// What a trusted proxy reported about the client, if anything.
    pub forwarded: Option<Forwarded>,
}

impl RequestHead {
    pub fn new(
        parts: http::request::Parts,
        conn: Arc<ConnInfo>,
        forwarded: Option<Forwarded>,
    ) -> Box<Self> {
        Box::new(RequestHead {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            conn,
            forwarded,
        })
    }
}

/// What a trusted proxy told us about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// `None`: the proxy named no client, so the peer address stands.
    pub client: Option<Endpoint>,
    /// `http` or `https`, when the proxy said.
    pub scheme: Option<&'static str>,
}

/// What the ASGI `tls` extension reports about one connection: plain data, gathered on the
/// I/O thread once the handshake is done.
#[derive(Debug)]
pub struct TlsInfo {
    /// The server's own certificate, PEM; shared by every connection.
    pub server_cert: Arc<str>,
    /// The client's certificate first, then the rest of the chain it sent; PEM each.
    pub client_cert_chain: Vec<String>,
    /// The client certificate's subject as an RFC 4514 string.
    pub client_cert_name: Option<String>,
    /// 0x0303 for TLS 1.2, 0x0304 for TLS 1.3.
    pub tls_version: Option<u16>,
    /// The IANA number of the cipher suite, e.g. 0x1301 for TLS_AES_128_GCM_SHA256.
    pub cipher_suite: Option<u16>,
}
