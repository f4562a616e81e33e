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

pub use conn::{serve_connection, Timeouts};
pub use limits::{InFlight, Limits};
pub use proxy::TrustedProxies;
pub use service::{Access, HttpContext};

pub use crate::handoff::head::{ConnInfo, Endpoint, RequestHead};
