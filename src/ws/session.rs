//! The I/O side of one accepted WebSocket: a single poll-driven task on the I/O thread that
//! moves bytes between the socket and the [`Protocol`], runs its one timer, watches the
//! shutdown signal, and hands messages to and from the app.
//!
//! It talks to the loop thread only through the exchange: complete messages go into
//! `Queues::incoming` (at most `max_queue`; then the socket is no longer read, which pushes
//! back on the client), the app's messages come out of `Queues::outgoing` (taken only while
//! the write buffer is below [`WRITE_LIMIT`](super::protocol::WRITE_LIMIT), so a client that
//! does not read pushes back on the app through `send()`'s high/low water marks). The
//! protocol's rules (framing, limits, closing, keep-alive) live in [`super::protocol`].

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::close_code::ABNORMAL;
use super::deflate;
use super::protocol::{Protocol, CLOSE_TIMEOUT};
use super::{CloseInfo, Outgoing, WsConfig};
use crate::handoff::bridge::{Bridge, Event};
use crate::handoff::exchange::{Exchange, State, RESPONSE_LOW_WATER};

/// What the HTTP side hands over once the app accepted: the session starts when hyper has
/// written the 101 response and given up the connection.
pub struct Start {
    pub ex: Arc<Exchange>,
    pub on_upgrade: OnUpgrade,
    pub deflate: Option<deflate::Params>,
}

/// Rounds of work in one poll before yielding to the other connections.
const MAX_ROUNDS: usize = 32;

/// Runs the session until the connection is closed; the app learns how it ended.
pub async fn run<S>(
    io: S,
    read_ahead: Bytes,
    ex: Arc<Exchange>,
    deflate: Option<deflate::Params>,
    bridge: Arc<Bridge>,
    cfg: WsConfig,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut proto = Protocol::new(cfg, deflate);
    proto.feed(&read_ahead);
    let mut s = Session::new(io, proto, ex, bridge, shutdown);
    poll_fn(|cx| s.poll(cx)).await;
    // The server closes the TCP connection first (section 7.1.1).
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        poll_fn(|cx| Pin::new(&mut s.io).poll_shutdown(cx)),
    )
    .await;
    // Dropping the session tells the app how it ended.
}

/// The upgrade never happened (the client left first): the app sees a 1006 disconnect.
pub fn abandon(ex: &Arc<Exchange>, bridge: &Bridge) {
    close_for_app(ex, bridge, lost(), true);
}

fn lost() -> CloseInfo {
    CloseInfo {
        code: ABNORMAL,
        reason: String::new(),
    }
}

/// Records how the connection ended for the app (first report wins); `gone` also drops what
/// the app still had queued to send.
fn close_for_app(ex: &Arc<Exchange>, bridge: &Bridge, info: CloseInfo, gone: bool) {
    let notify = {
        let mut st = ex.lock();
        record_close(&mut st, info);
        if gone {
            st.client_gone();
            st.ws.outgoing.clear();
            st.ws.out_bytes = 0;
        }
        st.take_loop_waiting()
    };
    if notify {
        bridge.push(Event::Wake(ex.clone()));
    }
}

fn record_close(st: &mut State, info: CloseInfo) {
    if st.ws.closed.is_none() {
        st.ws.closed = Some(info);
    }
}

/// Moves read messages and the close info into the app's queue; whether it handed any.
/// Inlined: called, it cost ~200 instructions per echoed message (callgrind).
#[inline(always)]
fn hand_over(proto: &mut Protocol, st: &mut State) -> bool {
    let mut handed = false;
    if proto.has_messages() {
        st.ws.incoming.extend(proto.drain_messages());
        handed = true;
    }
    if let Some(info) = proto.take_close_info() {
        record_close(st, info);
        handed = true;
    }
    proto.set_app_queue(st.ws.incoming.len());
    if proto.app_queue_full() {
        st.ws.read_paused = true;
    }
    handed
}

/// Moves the app's messages into `out`, up to `limit` bytes; whether the queue drained below
/// the low-water mark, so that a `send()` waiting for room may go on.
#[inline(always)]
fn take_outgoing(st: &mut State, limit: usize, out: &mut Vec<Outgoing>) -> bool {
    let mut taken = 0usize;
    while taken < limit {
        match st.ws.outgoing.pop_front() {
            Some(m) => {
                taken += m.len().max(1);
                out.push(m);
            }
            None => break,
        }
    }
    if taken == 0 {
        return false;
    }
    st.ws.out_bytes = st.ws.out_bytes.saturating_sub(taken);
    st.ws.out_bytes < RESPONSE_LOW_WATER
}

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Session<S> {
    io: S,
    ex: Arc<Exchange>,
    bridge: Arc<Bridge>,
    proto: Protocol,
    /// The app's messages taken under the lock, framed after it (kept for its capacity).
    out: Vec<Outgoing>,
    /// The socket is done: EOF or an I/O error.
    over: bool,
    /// Set to the protocol's deadline whenever it dates one.
    timer: Pin<Box<Sleep>>,
    shutdown: Option<Shutdown>,
}

/// However the session ends (even by a panic), the app is told: the protocol's close info if
/// it was not handed over yet, else 1006 (the first report wins, so a code the app has stays);
/// what it still had queued to send is dropped.
impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        let info = self.proto.take_close_info().unwrap_or_else(lost);
        close_for_app(&self.ex, &self.bridge, info, true);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn new(
        io: S,
        proto: Protocol,
        ex: Arc<Exchange>,
        bridge: Arc<Bridge>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        let shutdown: Shutdown = Box::pin(async move {
            if !*shutdown.borrow_and_update() {
                let _ = shutdown.changed().await;
            }
        });
        Session {
            io,
            ex,
            bridge,
            proto,
            out: Vec::new(),
            over: false,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            shutdown: Some(shutdown),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..MAX_ROUNDS {
            let mut progress = self.poll_shutdown_signal(cx);
            progress |= self.sync(cx);
            progress |= self.read(cx);
            match self.write(cx) {
                Ok(p) => progress |= p,
                Err(_) => self.over = true,
            }
            progress |= self.poll_timer(cx);
            if self.over || self.proto.is_done() {
                self.hand_over_last();
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_shutdown_signal(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(fut) = self.shutdown.as_mut() else {
            return false;
        };
        if fut.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.shutdown = None;
        self.proto.shutdown();
        true
    }

    // -- the hand-off to and from the app ------------------------------------------------

    /// Hands read messages to the app and takes what it sent. One lock for both.
    /// A pending close takes everything the app queued first, then goes out.
    fn sync(&mut self, cx: &mut Context<'_>) -> bool {
        let progress = self.pull(cx, self.proto.send_budget());
        let closed = self.proto.app_messages_sent();
        progress || closed
    }

    /// The last messages read, and how the connection ended, reach the app before TCP closes.
    fn hand_over_last(&mut self) {
        let notify = {
            let mut st = self.ex.lock();
            hand_over(&mut self.proto, &mut st) && st.take_loop_waiting()
        };
        if notify {
            self.bridge.push(Event::Wake(self.ex.clone()));
        }
    }

    /// Hands over what was read (and how the connection ended), then takes up to `limit`
    /// bytes of the app's messages and frames them.
    fn pull(&mut self, cx: &mut Context<'_>, limit: usize) -> bool {
        let notify = {
            let mut st = self.ex.lock();
            st.set_io_waker(cx.waker());
            let handed = hand_over(&mut self.proto, &mut st);
            let drained = take_outgoing(&mut st, limit, &mut self.out);
            (handed || drained) && st.take_loop_waiting()
        };
        if notify {
            self.bridge.push(Event::Wake(self.ex.clone()));
        }
        let progress = !self.out.is_empty();
        for m in self.out.drain(..) {
            self.proto.send(m);
        }
        progress
    }

    // -- the socket ----------------------------------------------------------------------

    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        // Frames left buffered while reading was paused.
        let mut progress = self.proto.parse();
        while self.proto.wants_read() {
            let mut rb = ReadBuf::new(self.proto.read_buf());
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // EOF without a closing handshake: the connection was lost.
                        self.over = true;
                        return true;
                    }
                    self.proto.filled(n);
                    progress = true;
                }
                Poll::Ready(Err(_)) => {
                    self.over = true;
                    return true;
                }
                Poll::Pending => return progress,
            }
        }
        progress
    }

    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progress = false;
        while !self.proto.to_write().is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, self.proto.to_write()) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.proto.written(n);
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progress),
            }
        }
        if progress {
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(e);
            }
        }
        Ok(progress)
    }

    // -- the timer -----------------------------------------------------------------------

    /// Runs the protocol's deadline once the timer fires. A timer set again is polled in the
    /// next round (progress), so that it holds the waker.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        self.date_timer();
        if self.proto.deadline().is_none() || self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.proto.on_timer(Instant::now().into_std());
        self.date_timer();
        true
    }

    fn date_timer(&mut self) {
        if let Some(at) = self.proto.date_timer(|| Instant::now().into_std()) {
            self.timer.as_mut().reset(Instant::from_std(at));
        }
    }
}
