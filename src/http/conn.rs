//! Drives one connection: hyper's HTTP/1.1 state machine, plus the timeouts hyper leaves to the
//! server (keep-alive idle, request head read, a response stuck on a client that does not
//! read) and graceful shutdown.
//!
//! One timer per connection serves both timeouts: when it fires, the connection's [`Activity`]
//! says which deadline applies now, and the timer either closes the connection or re-arms.

use std::future::{poll_fn, Future};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::activity::Activity;
use super::context::HttpContext;
use super::limits::Refusal;
use super::sendfile::Sendfile;
use super::service::AsgiService;
use super::stream::Checked;
use super::ConnInfo;
use crate::metrics::Metrics;
use crate::net::clock::now_ms;
use crate::net::SHUTDOWN_GRACE;
use crate::ws;
use http::StatusCode;

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
    S: AsyncRead + AsyncWrite + Sendfile + Unpin + Send + 'static,
{
    // hyper hands body buffers to the socket uncopied only when it writes with writev (its
    // `Queue` strategy), which sendfile's placeholders rely on.
    let activity = Arc::new(if S::PLAIN && stream.is_write_vectored() {
        Activity::with_sendfile(fd)
    } else {
        Activity::new(Some(fd))
    });
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
    S: AsyncRead + AsyncWrite + Sendfile + Unpin + Send + 'static,
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
