//! HTTP/1.1 and HTTP/2 on hyper: a connection driver for each, one service per connection,
//! and the response body that streams what the app sends.

//!
//! Within it, modules depend on those below them only: `conn` and `h2` (the drivers) ->
//! `service` -> `body` -> (`context`, `activity`, `stream`, `file`, `framing`, `limits`,
//! `settings`) -> `sendfile`.

mod activity;
mod body;
mod conn;
mod context;
mod file;
pub mod framing;
pub mod h2;
pub mod limits;
pub mod proxy;
mod sendfile;
mod service;
pub mod settings;
mod stream;

pub use activity::Timeouts;
pub use conn::serve_connection;
pub use context::{Access, HttpContext};
pub use h2::serve_h2;
pub use limits::{InFlight, Limits};
pub use proxy::TrustedProxies;
pub use sendfile::Sendfile;
pub use settings::{Versions, H2};

pub use crate::handoff::head::{ConnInfo, Endpoint, RequestHead};
