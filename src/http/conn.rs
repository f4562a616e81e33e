//! Drives one connection: hyper's HTTP/1.1 state machine, plus the timeouts hyper leaves to the
//! server (keep-alive idle, request head read) and graceful shutdown.
//!
//! One timer per connection serves both timeouts: when it fires, the connection's [`Activity`]
//! says which deadline applies now, and the timer either closes the connection or re-arms.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::framing::Violation;
use super::service::{AsgiService, HttpContext};
use super::stream::Checked;
use super::ConnInfo;
use crate::metrics::Metrics;
use crate::net::clock::now_ms;
use crate::net::SHUTDOWN_GRACE;
use crate::ws;
use http::StatusCode;

/// A request head the framing check refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Which request of the connection it is (from 0). hyper parses the heads released before
    /// it first, and answers each of them before this one's stand-in.
    pub head: u64,
    pub violation: Violation,
}

/// What a connection is doing, as far as its timeouts care.
pub struct Activity {
    /// Set when the framing check refused a request head: the request the service sees in
    /// that head's place is a stand-in, to be answered with the violation.
    pub refusal: OnceLock<Refused>,
    /// Requests the service has seen on this connection.
    requests: AtomicU64,
    in_flight: AtomicU32,
    /// When the connection last became idle (accepted, or a response completed).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived; 0 while none has.
    head_since: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            refusal: OnceLock::new(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now_ms()),
            head_since: AtomicU64::new(0),
        }
    }

    /// Counts a request the service got from hyper; the violation to answer it with when it is
    /// the stand-in of a refused head. Requests parsed from heads released before the refused
    /// one are served normally, however the bytes were split into reads.
    pub fn next_request(&self) -> Option<Violation> {
        // Only the connection's task calls this: a plain load and store are enough.
        let index = self.requests.load(Ordering::Relaxed);
        self.requests.store(index + 1, Ordering::Relaxed);
        let refused = self.refusal.get()?;
        (refused.head == index).then_some(refused.violation)
    }

    /// No request is being handled: the connection is fresh, or idle between keep-alive
    /// requests, or has only part of a request head.
    fn waiting(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Part of a request head has arrived, and no request started since.
    fn head_started(&self) -> bool {
        self.head_since.load(Ordering::Relaxed) != 0
    }

    /// Whether a shutdown held back for [`SHUTDOWN_GRACE`] (until `until`) may now go to
    /// hyper, which closes a connection with no request running. Not while a request head is
    /// arriving: that request is already on its way, and gets until the head-read deadline.
    fn grace_over(&self, until: u64, now: u64) -> bool {
        now >= until && !self.head_started()
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

    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.idle_since.store(now_ms(), Ordering::Relaxed);
    }

    /// The time (ms) at which the connection must be closed, or `None` while a request is in
    /// flight (its own timeouts apply then).
    pub(super) fn deadline(&self, limits: &Timeouts) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 {
            Some(head + limits.header_read.as_millis() as u64)
        } else {
            Some(self.idle_since.load(Ordering::Relaxed) + limits.idle().as_millis() as u64)
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long an idle keep-alive connection stays open; zero turns keep-alive off.
    pub keep_alive: Duration,
    /// How long a client may take to send a request head, from its first byte.
    pub header_read: Duration,
}

impl Timeouts {
    /// How long a connection may stay idle. Without keep-alive, hyper closes the connection
    /// after its one response, so this only bounds the wait for the first request.
    pub fn idle(&self) -> Duration {
        if self.keep_alive.is_zero() {
            self.header_read
        } else {
            self.keep_alive
        }
    }
}

/// Serves one connection until the client leaves, a timeout closes it, or a graceful shutdown
/// lets its in-flight request finish.
pub async fn serve_connection<S>(
    stream: S,
    conn: Arc<ConnInfo>,
    ctx: Arc<HttpContext>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Checked::new(stream, activity.clone()));
    let upgrade = Arc::new(parking_lot::Mutex::new(None));
    let service = AsgiService {
        ctx: ctx.clone(),
        conn: conn.clone(),
        activity: activity.clone(),
        upgrade: upgrade.clone(),
    };
    let driver = ctx.http1.serve_connection(io, service).with_upgrades();
    tokio::pin!(driver);

    let limits = ctx.timeouts;
    let timer = std::pin::pin!(tokio::time::sleep(limits.idle().min(limits.header_read)));
    let mut stop_rx = shutdown.clone();
    let stop = std::pin::pin!(stop_rx.changed());
    let mut wakeups = Wakeups::new(stop, &shutdown, timer);
    // Shutting down, but waiting for a request to start (until the deadline, in ms) before
    // telling hyper.
    let mut deferred: Option<u64> = None;
    let mut closing = false;
    // hyper closes a connection with no request running as soon as it is told to shut down.
    macro_rules! begin_shutdown {
        () => {{
            closing = true;
            if activity.waiting() {
                let grace = SHUTDOWN_GRACE.min(limits.idle());
                deferred = Some(now_ms() + grace.as_millis() as u64);
                wakeups.reset_timer(grace);
            } else {
                driver.as_mut().graceful_shutdown();
            }
        }};
    }
    if *shutdown.borrow() {
        begin_shutdown!();
    }
    let mut served = false;
    loop {
        let woke = poll_fn(|cx| {
            if let Poll::Ready(result) = driver.as_mut().poll(cx) {
                return Poll::Ready(Woke::Done(result));
            }
            if deferred.is_some() && !activity.waiting() {
                // A request started: hyper now finishes it, then closes.
                deferred = None;
                driver.as_mut().graceful_shutdown();
                cx.waker().wake_by_ref();
            }
            wakeups.poll(cx, !closing)
        })
        .await;
        match woke {
            Woke::Done(result) => {
                if let Err(e) = result {
                    log_parse_error(&ctx, &conn, &e);
                }
                served = true;
                break;
            }
            Woke::Shutdown => begin_shutdown!(),
            Woke::Timer => {
                let now = now_ms();
                if deferred.is_some_and(|until| activity.grace_over(until, now)) {
                    // Nothing came: let hyper close it.
                    deferred = None;
                    driver.as_mut().graceful_shutdown();
                }
                let mut wait = match activity.deadline(&limits) {
                    // Idle too long, or too slow to send a head: drop the connection.
                    Some(deadline) if now >= deadline => {
                        if activity.head_started() {
                            let why = (
                                StatusCode::REQUEST_TIMEOUT,
                                "request head not received in time",
                            );
                            ctx.log_refusal(why, &conn.client);
                        }
                        break;
                    }
                    Some(deadline) => Duration::from_millis(deadline - now),
                    None => limits.idle(),
                };
                if let Some(until) = deferred.filter(|&until| until > now) {
                    // The coarse clock may lag the timer: come back when it has caught up.
                    wait = wait.min(Duration::from_millis(until - now));
                }
                wakeups.reset_timer(wait);
            }
        }
    }
    let start = upgrade.lock().take();
    if let Some(start) = start {
        if served {
            websocket::<S>(start, &ctx, shutdown).await;
        } else {
            ws::session::abandon(&start.ex, &ctx.bridge);
        }
    }
}

/// Runs an accepted WebSocket on the connection hyper handed back after the 101, in this
/// connection's task (so it counts as open, and sees the shutdown signal).
async fn websocket<S>(start: ws::session::Start, ctx: &HttpContext, shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws::session::Start {
        ex,
        on_upgrade,
        deflate,
    } = start;
    let parts = match on_upgrade.await {
        Ok(upgraded) => upgraded.downcast::<TokioIo<Checked<S>>>().ok(),
        Err(_) => None,
    };
    let Some(parts) = parts else {
        ws::session::abandon(&ex, &ctx.bridge);
        return;
    };
    // Back to the bare socket. Frames the client sent right behind its request may sit in
    // hyper's buffer (`read_buf`) and, after those, in the framing check's.
    let (io, unchecked) = parts.io.into_inner().into_parts();
    let read_ahead = if unchecked.is_empty() {
        parts.read_buf
    } else {
        let mut all = bytes::BytesMut::from(&parts.read_buf[..]);
        all.extend_from_slice(&unchecked);
        all.freeze()
    };
    let bridge = ctx.bridge.clone();
    let open = &ctx.metrics.websockets;
    Metrics::add(open, 1);
    ws::session::run(io, read_ahead, ex, deflate, bridge, ctx.ws, shutdown).await;
    Metrics::sub(open, 1);
}

/// Why the connection task woke up and stopped waiting.
enum Woke {
    /// hyper finished with the connection.
    Done(Result<(), hyper::Error>),
    Shutdown,
    Timer,
}

/// The shutdown signal and the timer, polled only when they may have fired.
///
/// Once polled, each holds this task's waker and wakes it when it fires, and a task's waker
/// does not change. Polling them again on every wake-up of the connection (two per request)
/// would only register the same waker again, so a cheap check comes first: the watch's
/// version, and whether the timer has elapsed. After each reset the timer is polled again
/// before it is trusted to wake the task: a fire that was not polled took its waker.
struct Wakeups<'a, F> {
    /// `changed()` of a clone of `shutdown`; never polled again once ready.
    stop: Pin<&'a mut F>,
    shutdown: &'a watch::Receiver<bool>,
    stop_armed: bool,
    /// The connection's one timer (see the module's doc); reset only by [`Self::reset_timer`].
    timer: Pin<&'a mut Sleep>,
    timer_armed: bool,
}

impl<'a, F: Future> Wakeups<'a, F> {
    fn new(
        stop: Pin<&'a mut F>,
        shutdown: &'a watch::Receiver<bool>,
        timer: Pin<&'a mut Sleep>,
    ) -> Self {
        Wakeups {
            stop,
            shutdown,
            stop_armed: false,
            timer,
            timer_armed: false,
        }
    }

    /// Sets the timer to fire `after` from now; it is polled again on the next wake-up.
    fn reset_timer(&mut self, after: Duration) {
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + after);
        self.timer_armed = false;
    }

    /// `watch_stop`: false once the connection is closing, when the signal no longer matters.
    fn poll(&mut self, cx: &mut Context<'_>, watch_stop: bool) -> Poll<Woke> {
        let stop_may_have_fired = !self.stop_armed || self.shutdown.has_changed().unwrap_or(true);
        if watch_stop && stop_may_have_fired {
            if self.stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Shutdown);
            }
            self.stop_armed = true;
        }
        if !self.timer_armed || self.timer.is_elapsed() {
            if self.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Timer);
            }
            self.timer_armed = true;
        }
        Poll::Pending
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_ends_unless_a_request_head_is_arriving() {
        let activity = Activity::new();
        assert!(!activity.grace_over(1000, 999));
        assert!(activity.grace_over(1000, 1000));
        // Bytes of a head came: that request is waited for, past the grace.
        activity.bytes_arrived();
        assert!(activity.head_started());
        assert!(!activity.grace_over(1000, 5000));
        // Once it is served, the connection is idle again: the grace applies.
        activity.request_started();
        activity.request_done();
        assert!(activity.grace_over(1000, 5000));
    }

    #[test]
    fn only_the_refused_heads_request_is_refused() {
        let activity = Activity::new();
        let violation = (StatusCode::BAD_REQUEST, "missing or repeated Host");
        activity
            .refusal
            .set(Refused { head: 2, violation })
            .unwrap();
        // Requests 0 and 1 came from heads released before the refused one.
        assert_eq!(activity.next_request(), None);
        assert_eq!(activity.next_request(), None);
        assert_eq!(activity.next_request(), Some(violation));
    }

    #[test]
    fn a_head_arriving_past_the_grace_is_bounded_by_the_head_read_timeout() {
        let limits = Timeouts {
            keep_alive: Duration::from_secs(5),
            header_read: Duration::from_secs(30),
        };
        let activity = Activity::new();
        activity.bytes_arrived();
        let since = activity.head_since.load(Ordering::Relaxed);
        assert_eq!(activity.deadline(&limits), Some(since + 30_000));
        activity.request_started();
        assert_eq!(activity.deadline(&limits), None);
    }

    /// Once armed, the shutdown signal and the timer are not polled on the connection's other
    /// wake-ups, yet each still ends the wait when it fires, a reset timer included.
    #[test]
    fn armed_wakeups_fire_through_other_wakeups() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (tx, rx) = watch::channel(false);
        let (ping_tx, mut pings) = tokio::sync::mpsc::unbounded_channel::<()>();
        rt.block_on(async {
            let mut stop_rx = rx.clone();
            let stop = std::pin::pin!(stop_rx.changed());
            let timer = std::pin::pin!(tokio::time::sleep(Duration::from_millis(40)));
            let mut wakeups = Wakeups::new(stop, &rx, timer);
            // Other wake-ups meanwhile, as the connection's I/O makes.
            tokio::spawn(async move {
                for _ in 0..20 {
                    let _ = ping_tx.send(());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            let woke = wait(&mut wakeups, &mut pings).await;
            assert!(matches!(woke, Some(Woke::Timer)));

            // A fire that nobody polled takes the timer's waker: after a reset, the timer
            // must be polled again. Its next fire comes after the last of the other
            // wake-ups, so only its own waker can end the wait.
            wakeups.reset_timer(Duration::from_millis(10));
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(wakeups.timer.is_elapsed());
            wakeups.reset_timer(Duration::from_millis(150));
            let woke = wait(&mut wakeups, &mut pings).await;
            assert!(
                matches!(woke, Some(Woke::Timer)),
                "a reset timer fires again"
            );

            wakeups.reset_timer(Duration::from_secs(60));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = tx.send(true);
            });
            let woke = wait(&mut wakeups, &mut pings).await;
            assert!(matches!(woke, Some(Woke::Shutdown)));
        });
    }

    /// Waits as the connection does, with the other wake-ups `pings` makes.
    async fn wait<F: Future>(
        wakeups: &mut Wakeups<'_, F>,
        pings: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    ) -> Option<Woke> {
        let woke = poll_fn(|cx| {
            while let Poll::Ready(Some(())) = pings.poll_recv(cx) {}
            wakeups.poll(cx, true)
        });
        let started = std::time::Instant::now();
        let woke = tokio::time::timeout(Duration::from_secs(5), woke)
            .await
            .ok()?;
        // Not found on the wake-up that the timeout itself made.
        (started.elapsed() < Duration::from_secs(2)).then_some(woke)
    }
}
