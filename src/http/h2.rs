//! HTTP/2 on hyper: h2 over TLS (ALPN `h2`) and h2c with prior knowledge on plain TCP.
//!
//! Each stream is one request through the same [`AsgiService`] as HTTP/1.1, so exchanges,
//! limits, the access log and metrics are shared. What differs lives here: which version a
//! connection speaks, hyper's HTTP/2 settings (the bounds on what a client may make the
//! server hold), and the connection driver, whose only timer closes an idle connection and
//! whose shutdown sends GOAWAY and lets open streams finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::conn::{Activity, Timeouts};
use super::limits::Refusal;
use super::service::{Answer, AsgiService, HttpContext};
use super::ConnInfo;
use crate::net::clock::now_ms;
use crate::net::SHUTDOWN_GRACE;

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
    builder: http2::Builder<TokioExecutor>,
    /// `--limit-request-fields`, which hyper's HTTP/2 does not count.
    max_fields: usize,
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

/// The service of an HTTP/2 connection: the HTTP/1.1 one, after what only HTTP/2 needs.
#[derive(Clone)]
struct H2Service(AsgiService);

impl hyper::service::Service<Request<Incoming>> for H2Service {
    type Response = http::Response<super::body::ResponseBody>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut req: Request<Incoming>) -> Answer {
        let service = &self.0;
        if req.headers().len() > service.ctx.h2.max_fields {
            let too_many = Refusal(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            );
            return Answer::Ready(Some(service.refuse(too_many)));
        }
        add_host(&mut req);
        service.handle(req)
    }
}

/// HTTP/2 names the host in `:authority`; apps (and the proxy headers' logic) read `host`.
fn add_host<B>(req: &mut Request<B>) {
    if req.headers().contains_key(HOST) {
        return;
    }
    let host = req.uri().authority().map(|a| a.as_str());
    if let Some(value) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        req.headers_mut().insert(HOST, value);
    }
}

/// Serves one HTTP/2 connection until the client leaves, it stays idle past the keep-alive
/// timeout, or a graceful shutdown lets its open streams finish.
pub async fn serve_h2<S>(
    stream: S,
    conn: Arc<ConnInfo>,
    ctx: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // No write timeout: hyper's h2 writes behind its own flow control (see DESIGN).
    let activity = Arc::new(Activity::new(None));
    let service = H2Service(AsgiService {
        ctx: ctx.clone(),
        conn: conn.clone(),
        activity: activity.clone(),
        upgrade: Default::default(),
    });
    let driver = ctx
        .h2
        .builder
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(driver);
    let idle = ctx.timeouts;
    let mut closing = *shutdown.borrow_and_update();
    if closing {
        driver.as_mut().graceful_shutdown();
    }
    let timer = tokio::time::sleep(if closing { SHUTDOWN_GRACE } else { idle.idle() });
    tokio::pin!(timer);
    loop {
        tokio::select! {
            result = driver.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("HTTP/2 connection with {} ended: {e}", conn.client.describe());
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                // GOAWAY: streams the client opened before it sees it are still served.
                closing = true;
                driver.as_mut().graceful_shutdown();
                timer.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = timer.as_mut() => {
                let now = now_ms();
                // Closing, hyper ends the connection itself once the client acknowledged the
                // GOAWAY and the last stream is done; one that never answers gets the grace.
                let limits = if closing { grace() } else { idle };
                let wait = match activity.deadline(&limits) {
                    Some(deadline) if now >= deadline && closing => return,
                    Some(deadline) if now >= deadline => {
                        closing = true;
                        driver.as_mut().graceful_shutdown();
                        SHUTDOWN_GRACE
                    }
                    Some(deadline) => Duration::from_millis(deadline - now),
                    // Streams are open: their own bounds apply (pings, body read timeout).
                    None => limits.idle(),
                };
                timer.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// The deadline of a closing connection: [`SHUTDOWN_GRACE`] after its last stream ended (an
/// HTTP/2 connection never has a request head half read: hyper reads whole frames).
fn grace() -> Timeouts {
    Timeouts {
        keep_alive: SHUTDOWN_GRACE,
        header_read: SHUTDOWN_GRACE,
        write: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_http1_by_its_first_bytes() {
        let auto = Versions::Auto;
        assert!(auto.plain_is_h2(PREFACE));
        assert!(auto.plain_is_h2(b"PRI * HTTP/2.0\r\n"));
        assert!(!auto.plain_is_h2(b"PRI"));
        assert!(!auto.plain_is_h2(b"POST / HTTP/1.1\r\n"));
        assert!(!auto.plain_is_h2(b"PRI /x HTTP/1.1\r\n"));
        assert!(!Versions::Http1.plain_is_h2(PREFACE));
        assert!(Versions::Http2.plain_is_h2(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn alpn_follows_the_versions_served() {
        assert_eq!(Versions::parse("auto").alpn(), [&b"h2"[..], b"http/1.1"]);
        assert_eq!(Versions::parse("1").alpn(), [&b"http/1.1"[..]]);
        assert_eq!(Versions::parse("httptools"), Versions::Http1);
        assert_eq!(Versions::parse("2").alpn(), [&b"h2"[..]]);
        assert!(Versions::Auto.tls_is_h2(Some(b"h2")));
        assert!(!Versions::Auto.tls_is_h2(Some(b"http/1.1")));
        assert!(!Versions::Auto.tls_is_h2(None));
        assert!(Versions::Http2.tls_is_h2(None));
    }

    #[test]
    fn authority_becomes_host() {
        let mut req = Request::get("https://example.com:8443/x").body(()).unwrap();
        add_host(&mut req);
        assert_eq!(req.headers()[HOST], "example.com:8443");
        let mut req = Request::get("https://a/x")
            .header(HOST, "b")
            .body(())
            .unwrap();
        add_host(&mut req);
        assert_eq!(req.headers()[HOST], "b");
    }
}
