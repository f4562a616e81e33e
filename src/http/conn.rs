//! Drives one connection: hyper's HTTP/1.1 state machine, plus the timeouts hyper leaves to the
//! server (keep-alive idle, request head read) and graceful shutdown.
//!
//! One timer per connection serves both timeouts: when it fires, the connection's [`Activity`]
//! says which deadline applies now, and the timer either closes the connection or re-arms.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::framing::Violation;
use super::service::{AsgiService, HttpContext};
use super::stream::Checked;
use super::ConnInfo;
use crate::net::clock::now_ms;
use http::StatusCode;

/// What a connection is doing, as far as its timeouts care.
pub struct Activity {
    /// Set when the framing check refused the stream: the next request the service sees is a
    /// stand-in, to be answered with this.
    pub refusal: OnceLock<Violation>,
    in_flight: AtomicU32,
    /// When the connection last became idle (accepted, or a response completed).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived; 0 while none has.
    head_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            refusal: OnceLock::new(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now_ms()),
            head_since: AtomicU64::new(0),
        }
    }

    pub(super) fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            // `max(1)`: 0 means "no head started".
            self.head_since.store(now_ms().max(1), Ordering::Relaxed);
        }
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    fn has_request(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.idle_since.store(now_ms(), Ordering::Relaxed);
    }

    /// The time (ms) at which the connection must be closed, or `None` while a request is in
    /// flight (its own timeouts apply then).
    fn deadline(&self, limits: &Timeouts) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 {
            Some(head + limits.header_read.as_millis() as u64)
        } else {
            Some(self.idle_since.load(Ordering::Relaxed) + limits.keep_alive.as_millis() as u64)
        }
    }
}

/// How long an idle connection stays open after a graceful shutdown began, in case a request
/// is on its way (see `serve_connection`).
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
    /// How long a client may take to send a request head, from its first byte.
    pub header_read: Duration,
}

/// Serves one connection until the client leaves, a timeout closes it, or a graceful shutdown
/// lets its in-flight request finish.
pub async fn serve_connection<S>(
    stream: S,
    conn: Arc<ConnInfo>,
    ctx: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Checked::new(stream, activity.clone()));
    let service = AsgiService {
        ctx: ctx.clone(),
        conn: conn.clone(),
        activity: activity.clone(),
    };
    let driver = ctx.http1.serve_connection(io, service);
    tokio::pin!(driver);

    let limits = ctx.timeouts;
    let timer = tokio::time::sleep(limits.keep_alive.min(limits.header_read));
    tokio::pin!(timer);
    // Graceful shutdown, in two steps. Told to shut down, the connection first lingers: an
    // idle one (just accepted, or between keep-alive requests) may be about to receive a
    // request, and closing it then would fail that request. A request that arrives while it
    // lingers is served with `connection: close`; without one, the connection closes when
    // the linger ends.
    let mut closing = false;
    let mut shut = false;
    let linger = tokio::time::sleep(SHUTDOWN_LINGER);
    tokio::pin!(linger);
    if *shutdown.borrow() {
        closing = true;
    }
    loop {
        if closing && !shut && activity.has_request() {
            shut = true;
            driver.as_mut().graceful_shutdown();
        }
        // The driver, or a wake-up as soon as a request starts on a lingering connection.
        let step = poll_fn(|cx| match driver.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending if closing && !shut && activity.has_request() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        });
        tokio::select! {
            biased;
            done = step => if let Some(result) = done {
                if let Err(e) = result {
                    log_parse_error(&ctx, &conn, &e);
                }
                break;
            },
            _ = shutdown.changed(), if !closing => {
                closing = true;
                linger.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_LINGER);
            }
            _ = linger.as_mut(), if closing && !shut => {
                shut = true;
                driver.as_mut().graceful_shutdown();
            }
            _ = timer.as_mut() => {
                let now = now_ms();
                let wait = match activity.deadline(&limits) {
                    // Idle too long, or too slow to send a head: drop the connection.
                    Some(deadline) if now >= deadline => {
                        if activity.head_since.load(Ordering::Relaxed) != 0 {
                            let why = (StatusCode::REQUEST_TIMEOUT, "request head not received in time");
                            ctx.log_refusal(why, &conn.client);
                        }
                        break;
                    }
                    Some(deadline) => Duration::from_millis(deadline - now),
                    None => limits.keep_alive,
                };
                timer.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// hyper answered a request it could not parse (400, 414 or 431); say so in the log.
fn log_parse_error(ctx: &HttpContext, conn: &ConnInfo, e: &hyper::Error) {
    let refusal = if e.is_parse_too_large() {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        )
    } else if e.is_parse() {
        (StatusCode::BAD_REQUEST, "malformed request")
    } else {
        return;
    };
    ctx.log_refusal(refusal, &conn.client);
}
