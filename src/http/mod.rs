//! HTTP/1.1 and HTTP/2 on hyper: a connection driver for each, one service per connection,
//! and the response body that streams what the app sends.

mod body;
mod conn;
mod file;
pub mod framing;
pub mod h2;
pub mod limits;
pub mod proxy;
mod service;
mod stream;

pub use conn::{serve_connection, Timeouts};
pub use h2::{serve_h2, Versions, H2};
pub use limits::{InFlight, Limits};
pub use proxy::TrustedProxies;
pub use service::{Access, HttpContext};

pub use crate::handoff::head::{ConnInfo, Endpoint, RequestHead};
