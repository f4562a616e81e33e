//! The HTTP versions served (`--http`) and the HTTP/2 settings every connection shares.

use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// What a client speaking HTTP/2 with prior knowledge sends first (RFC 9113, 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The bytes of the preface that tell it from any HTTP/1.1 request line.
const PREFACE_SIGN: usize = 4;

/// How often a connection with open streams is pinged, and how long the answer may take,
/// so that a vanished client's streams do not stay open forever.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams the client opened and reset before the server took them, before the connection
/// is closed (CVE-2023-44487, "rapid reset"); h2's own default.
const MAX_PENDING_RESETS: usize = 20;
/// Streams the server reset for the client's errors, before the connection is closed.
const MAX_ERROR_RESETS: usize = 256;
/// Request body bytes a client may send ahead of the app, per stream and per connection:
/// the server holds at most this much unread (see `REQUEST_READ_AHEAD` for the app's side).
const STREAM_WINDOW: u32 = 256 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
/// Response bytes hyper queues per stream before it stops taking the app's body.
const SEND_BUFFER: usize = 256 * 1024;

/// The HTTP versions served (`--http`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    Auto,
    Http1,
    Http2,
}

impl Versions {
    /// `--http`'s value; the Python side allows only these. uvicorn's HTTP/1.1 parsers name
    /// HTTP/1.1 alone.
    pub fn parse(text: &str) -> Self {
        match text {
            "1" | "h11" | "httptools" => Versions::Http1,
            "2" => Versions::Http2,
            _ => Versions::Auto,
        }
    }

    /// The protocols TLS offers through ALPN, preferred first.
    pub fn alpn(self) -> Vec<Vec<u8>> {
        let (h2, h1) = (b"h2".to_vec(), b"http/1.1".to_vec());
        match self {
            Versions::Auto => vec![h2, h1],
            Versions::Http1 => vec![h1],
            Versions::Http2 => vec![h2],
        }
    }

    /// Whether a plain connection whose first bytes (peeked, maybe not all yet) are `peeked`
    /// speaks HTTP/2.
    pub fn plain_is_h2(self, peeked: &[u8]) -> bool {
        match self {
            Versions::Auto => peeked.len() >= PREFACE_SIGN && PREFACE.starts_with(peeked),
            Versions::Http1 => false,
            Versions::Http2 => true,
        }
    }

    /// Whether a TLS connection speaks HTTP/2, by the protocol ALPN agreed on. A client that
    /// offered no ALPN speaks HTTP/1.1, unless only HTTP/2 is served.
    pub fn tls_is_h2(self, alpn: Option<&[u8]>) -> bool {
        self == Versions::Http2 || alpn == Some(b"h2")
    }
}

/// What HTTP/2 connections share: the versions served and hyper's settings.
pub struct H2 {
    pub versions: Versions,
    pub(super) builder: http2::Builder<TokioExecutor>,
    /// `--limit-request-fields`, which hyper's HTTP/2 does not count.
    pub(super) max_fields: usize,
}

/// The settings [`H2::new`] takes from the config.
pub struct H2Settings {
    pub versions: Versions,
    pub max_concurrent_streams: u32,
    pub max_fields: usize,
    /// Bytes of the decoded header list (HPACK bombs and CONTINUATION floods end there).
    pub max_header_list: u32,
    pub date_header: bool,
}

impl H2 {
    pub fn new(settings: &H2Settings) -> Self {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(settings.max_header_list)
            .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
            .max_local_error_reset_streams(MAX_ERROR_RESETS)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_send_buf_size(SEND_BUFFER)
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .auto_date_header(settings.date_header);
        H2 {
            versions: settings.versions,
            builder,
            max_fields: settings.max_fields,
        }
    }
}

/// The defaults of `rsgi.Config`, for tests that build a context by hand.
#[cfg(test)]
impl Default for H2 {
    fn default() -> Self {
        H2::new(&H2Settings {
            versions: Versions::Auto,
            max_concurrent_streams: 100,
            max_fields: 100,
            max_header_list: 64 * 1024,
            date_header: true,
        })
    }
}
