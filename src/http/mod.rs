//! HTTP/1.1 on hyper: one connection driver, one service per connection, and the response body
//! that streams what the app sends.

mod body;
mod conn;
mod file;
pub mod framing;
pub mod limits;
pub mod proxy;
mod service;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri, Version};

use crate::tls::TlsInfo;

pub use body::ResponseBody;
pub use conn::{serve_connection, Timeouts, SHUTDOWN_GRACE};
pub use limits::{InFlight, Limits};
pub use proxy::TrustedProxies;
pub use service::{Access, HttpContext};

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
    pub forwarded: Option<proxy::Forwarded>,
}

impl RequestHead {
    pub fn new(
        parts: http::request::Parts,
        conn: Arc<ConnInfo>,
        forwarded: Option<proxy::Forwarded>,
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
