//! Drives one connection: hyper's HTTP/1.1 state machine, plus the timeouts hyper leaves to the
//! server (keep-alive idle, request head read, a response stuck on a client that does not
//! read) and graceful shutdown.
//!
//! One timer per connection serves both timeouts: when it fires, the connection's [`Activity`]
//! says which deadline applies now, and the timer either closes the connection or re-arms.

use std::future::{poll_fn, Future};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::limits::Refusal;
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
    pub violation: Refusal,
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
    /// Since when writing to the socket has made no progress (it would block); 0 while
    /// writes go through.
    write_blocked_since: AtomicU64,
    /// What the kernel still had to send when that stall was last looked at.
    unsent_at_stall: AtomicU64,
    /// The socket, to ask the kernel how much it still has to send; `None` in unit tests.
    fd: Option<RawFd>,
}

impl Activity {
    /// `fd`: the connection's socket (under TLS too), which outlives every use made of it
    /// here: the connection's task owns both.
    pub(super) fn new(fd: Option<RawFd>) -> Self {
        Activity {
            refusal: OnceLock::new(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now_ms()),
            head_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            unsent_at_stall: AtomicU64::new(0),
            fd,
        }
    }

    /// A write to the socket would block. Only the connection's task writes: a plain load
    /// and store are enough.
    pub(super) fn write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == 0 {
            self.write_blocked_since
                .store(now_ms().max(1), Ordering::Relaxed);
            self.unsent_at_stall
                .store(unsent(self.fd).unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// A write to the socket went through. After a stall, hyper may be writing the end of a
    /// response the app is done with: the connection is not idle before that is written.
    pub(super) fn write_progressed(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != 0 {
            self.write_blocked_since.store(0, Ordering::Relaxed);
            self.idle_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A write to the socket is waiting for room.
    fn write_waiting(&self) -> bool {
        self.write_blocked_since.load(Ordering::Relaxed) != 0
    }

    /// Past the write deadline: whether the kernel sent some of what it held since the stall
    /// was last looked at. Its send buffer grows to megabytes, and a write waits until much
    /// of it has drained: a client that reads, slowly, can leave writes blocked for longer
    /// than the timeout. That counts as progress, and the stall is timed again from now.
    fn still_draining(&self, now: u64) -> bool {
        if !self.write_waiting() {
            return false;
        }
        let Some(left) = unsent(self.fd) else {
            return false;
        };
        if left >= self.unsent_at_stall.load(Ordering::Relaxed) {
            return false;
        }
        self.unsent_at_stall.store(left, Ordering::Relaxed);
        self.write_blocked_since
            .store(now.max(1), Ordering::Relaxed);
        true
    }

    /// Counts a request the service got from hyper; the violation to answer it with when it is
    /// the stand-in of a refused head. Requests parsed from heads released before the refused
    /// one are served normally, however the bytes were split into reads.
    pub fn next_request(&self) -> Option<Refusal> {
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
    /// flight and its response is not stuck (its own timeouts apply then).
    pub(super) fn deadline(&self, limits: &Timeouts) -> Option<u64> {
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != 0 {
            // Whether a request is in flight or not: hyper may still be writing the end of a
            // response that is over for the app. Never the idle timeout then.
            return limits.write.map(|w| blocked + w.as_millis() as u64);
        }
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
    /// How long writing to the socket may make no progress; `None`: as long as it takes.
    pub write: Option<Duration>,
}

/// Bytes the kernel holds for the socket and the peer has not taken yet (TIOCOUTQ: unsent or
/// unacknowledged for TCP, unread for a unix socket); `None` when it cannot tell.
fn unsent(fd: Option<RawFd>) -> Option<u64> {
    let fd = fd?;
    let mut bytes: libc::c_int = 0;
    // SAFETY: TIOCOUTQ stores one c_int through the pointer, which points to `bytes`; on an
    // fd it does not apply to, the call fails and stores nothing.
    let done = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut bytes) };
    (done == 0).then(|| bytes.max(0) as u64)
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
///
/// `fd` is the socket under `stream` (under TLS too), for the write timeout.
pub async fn serve_connection<S>(
    stream: S,
    fd: RawFd,
    conn: Arc<ConnInfo>,
    ctx: Arc<HttpContext>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(Some(fd)));
    // Until its first request head is whole, the connection is only the framing check and
    // the few bytes it holds: hyper's connection, with its 8 KiB read and write buffers, is
    // built then (a slowloris client that sent part of a head costs ~4 KiB, not ~16).
    let mut head_io = Some(Checked::new(
        stream,
        activity.clone(),
        ctx.limits.request_line,
    ));
    let upgrade = Arc::new(parking_lot::Mutex::new(None));
    let service = AsgiService {
        ctx: ctx.clone(),
        conn: conn.clone(),
        activity: activity.clone(),
        upgrade: upgrade.clone(),
    };
    let mut driver = std::pin::pin!(None::<Driver<S>>);

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
            } else if let Some(driver) = driver.as_mut().as_pin_mut() {
                driver.graceful_shutdown();
            }
        }};
    }
    if *shutdown.borrow() {
        begin_shutdown!();
    }
    let mut served = false;
    loop {
        let woke = poll_fn(|cx| {
            if let Some(io) = head_io.as_mut() {
                if io.poll_first_head(cx).is_pending() {
                    return wakeups.poll(cx, !closing);
                }
                if let Some(io) = head_io.take() {
                    let hyper = ctx
                        .http1
                        .serve_connection(TokioIo::new(io), service.clone());
                    driver.set(Some(hyper.with_upgrades()));
                }
            }
            let Some(mut hyper) = driver.as_mut().as_pin_mut() else {
                return wakeups.poll(cx, !closing);
            };
            if let Poll::Ready(result) = hyper.as_mut().poll(cx) {
                return Poll::Ready(Woke::Done(result));
            }
            if deferred.is_some() && !activity.waiting() {
                // A request started: hyper now finishes it, then closes.
                deferred = None;
                hyper.graceful_shutdown();
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
                    deferred = None;
                    match driver.as_mut().as_pin_mut() {
                        // Nothing came: let hyper close it.
                        Some(hyper) => hyper.graceful_shutdown(),
                        // Not a byte came: there is only the socket to close.
                        None => break,
                    }
                }
                let mut wait = match activity.deadline(&limits) {
                    // Idle too long, too slow to send a head, or not reading the response:
                    // drop the connection (and with it the response, so the app sees a
                    // disconnect).
                    Some(deadline) if now >= deadline && activity.still_draining(now) => {
                        limits.write.unwrap_or(limits.idle())
                    }
                    Some(deadline) if now >= deadline => {
                        if activity.write_waiting() {
                            tracing::warn!(
                                "Response not read by {} for {:?}: connection closed",
                                conn.client.describe(),
                                limits.write.unwrap_or_default()
                            );
                        } else if activity.head_started() {
                            let why = Refusal(
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

/// hyper's side of a connection.
type Driver<S> =
    hyper::server::conn::http1::UpgradeableConnection<TokioIo<Checked<S>>, AsgiService>;

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
        Refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        )
    } else if e.is_parse() {
        Refusal(StatusCode::BAD_REQUEST, "malformed request")
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
        let activity = Activity::new(None);
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
        let activity = Activity::new(None);
        let violation = Refusal(StatusCode::BAD_REQUEST, "missing or repeated Host");
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
            write: None,
        };
        let activity = Activity::new(None);
        activity.bytes_arrived();
        let since = activity.head_since.load(Ordering::Relaxed);
        assert_eq!(activity.deadline(&limits), Some(since + 30_000));
        activity.request_started();
        assert_eq!(activity.deadline(&limits), None);
    }

    #[test]
    fn a_response_making_no_progress_has_a_deadline() {
        let mut limits = Timeouts {
            keep_alive: Duration::from_secs(5),
            header_read: Duration::from_secs(30),
            write: Some(Duration::from_secs(60)),
        };
        let activity = Activity::new(None);
        activity.bytes_arrived();
        activity.request_started();
        assert_eq!(activity.deadline(&limits), None);
        activity.write_blocked();
        let since = activity.write_blocked_since.load(Ordering::Relaxed);
        // Another blocked write later does not move it.
        activity.write_blocked();
        assert!(activity.write_waiting());
        assert_eq!(activity.deadline(&limits), Some(since + 60_000));
        // Without a socket to ask, nothing says the kernel is still sending.
        assert!(!activity.still_draining(since + 60_000));
        // Once the request is over for the app, hyper may still be stuck on its last bytes.
        activity.request_done();
        assert_eq!(activity.deadline(&limits), Some(since + 60_000));
        activity.write_progressed();
        assert!(!activity.write_waiting());
        // Idle from the end of the stall, not from the end of the app's response.
        let idle_from = activity.idle_since.load(Ordering::Relaxed);
        assert_eq!(activity.deadline(&limits), Some(idle_from + 5_000));
        // With the timeout off, a stalled write has no deadline at all.
        activity.write_blocked();
        limits.write = None;
        assert_eq!(activity.deadline(&limits), None);
    }

    /// A stall is progress while the kernel's queue for the socket goes down: the peer reads.
    #[test]
    fn a_stall_still_draining_is_timed_again() {
        use std::io::{Read, Write};
        let (mut ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let chunk = [7u8; 4096];
        while ours.write(&chunk).is_ok() {}
        let activity = Activity::new(Some(std::os::fd::AsRawFd::as_raw_fd(&ours)));
        activity.write_blocked();
        assert!(!activity.still_draining(100_000), "nothing was read yet");
        let mut sink = [0u8; 65536];
        peer.read_exact(&mut sink).unwrap();
        assert!(activity.still_draining(100_000));
        assert_eq!(
            activity.write_blocked_since.load(Ordering::Relaxed),
            100_000
        );
        assert!(
            !activity.still_draining(200_000),
            "and not again without another read"
        );
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
