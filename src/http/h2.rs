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
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::activity::{Activity, Timeouts};
use super::context::HttpContext;
use super::limits::Refusal;
use super::service::{Answer, AsgiService};
use super::ConnInfo;
use crate::net::clock::now_ms;
use crate::net::SHUTDOWN_GRACE;

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
    use crate::http::settings::{Versions, PREFACE};

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
