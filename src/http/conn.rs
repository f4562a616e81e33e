//! Drives one connection: hyper's HTTP/1.1 state machine, plus the keep-alive idle timeout
//! and graceful shutdown, which hyper leaves to the server.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::service::{AsgiService, HttpContext};
use super::ConnInfo;

/// When a connection last did something, for the keep-alive timeout.
pub struct Activity {
    in_flight: AtomicU32,
    /// Milliseconds since [`epoch`] of the last read or completed response.
    last: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicU32::new(0),
            last: AtomicU64::new(now_ms()),
        }
    }

    fn touch(&self) {
        self.last.store(now_ms(), Ordering::Relaxed);
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// How long the connection has been idle, or `None` while a request is in flight.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.last.load(Ordering::Relaxed);
        Some(Duration::from_millis(now_ms().saturating_sub(last)))
    }
}

/// The socket, noting every read that brings bytes.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves one connection until the client leaves, the keep-alive timeout closes it, or a
/// graceful shutdown lets its in-flight request finish.
pub async fn serve_connection<S>(
    stream: S,
    conn: Arc<ConnInfo>,
    ctx: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = AsgiService {
        ctx: ctx.clone(),
        conn,
        activity: activity.clone(),
    };
    let driver = ctx.http1.serve_connection(io, service);
    tokio::pin!(driver);

    let keep_alive = ctx.keep_alive;
    let timer = tokio::time::sleep(keep_alive);
    tokio::pin!(timer);
    let mut closing = *shutdown.borrow();
    if closing {
        driver.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            biased;
            _ = driver.as_mut() => break,
            _ = shutdown.changed(), if !closing => {
                closing = true;
                driver.as_mut().graceful_shutdown();
            }
            _ = timer.as_mut(), if !closing => match activity.idle_for() {
                Some(idle) if idle >= keep_alive => {
                    closing = true;
                    driver.as_mut().graceful_shutdown();
                }
                idle => {
                    let left = keep_alive - idle.unwrap_or_default();
                    timer.as_mut().reset(tokio::time::Instant::now() + left);
                }
            },
        }
    }
}
