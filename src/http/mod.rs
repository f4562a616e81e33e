//! HTTP/1.1 on hyper: one connection driver, one service per connection, and the response body
//! that streams what the app sends.

mod body;
mod conn;
pub mod framing;
pub mod limits;
pub mod proxy;
mod service;
mod stream;
mod validate;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri, Version};

pub use conn::{serve_connection, Timeouts};
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
