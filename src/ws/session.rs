//! The I/O side of one accepted WebSocket: a single poll-driven state machine on the I/O
//! thread that reads frames into messages for the app, writes what the app sends, answers
//! pings, sends its own keep-alive pings, and runs the closing handshake.
//!
//! It talks to the loop thread only through the exchange: complete messages go into
//! `Queues::incoming` (at most `max_queue`; then the socket is no longer read, which pushes
//! back on the client), the app's messages come out of `Queues::outgoing` (taken only while
//! the write buffer is below [`WRITE_LIMIT`], so a client that does not read pushes back on
//! the app through `send()`'s high/low water marks).

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

use super::close_code::{self, ABNORMAL, INTERNAL_ERROR, INVALID_DATA, PROTOCOL_ERROR};
use super::deflate::{self, Codec, InflateError};
use super::frame::{self, Header, Invalid};
use super::{CloseInfo, Message, Outgoing, Utf8Bytes, WsConfig};
use crate::handoff::bridge::{Bridge, Event};
use crate::handoff::exchange::{Exchange, RESPONSE_LOW_WATER};

/// What the HTTP side hands over once the app accepted: the session starts when hyper has
/// written the 101 response and given up the connection.
pub struct Start {
    pub ex: Arc<Exchange>,
    pub on_upgrade: OnUpgrade,
    pub deflate: Option<deflate::Params>,
}

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// The app's messages are taken from its queue only while fewer bytes than this wait to be
/// written.
const WRITE_LIMIT: usize = 256 * 1024;
/// How long to wait for the client's close frame (or for it to read ours) after ours is sent.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds of work in one poll before yielding to the other connections.
const MAX_ROUNDS: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Timer {
    Off,
    /// Time to send a keep-alive ping.
    Ping,
    /// The pong to our ping is due.
    Pong,
    /// The client must have answered our close frame by now.
    Close,
}

/// A fragmented (or compressed) message being put together.
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (text messages fail as soon as they go bad).
    checked: usize,
}

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
    let mut s = Session::new(io, read_ahead, ex, deflate, bridge, cfg, shutdown);
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
    close_for_app(ex, bridge, ABNORMAL, String::new(), true);
}

/// Records how the connection ended for the app (first report wins); `gone` also drops what
/// the app still had queued to send.
fn close_for_app(ex: &Arc<Exchange>, bridge: &Bridge, code: u16, reason: String, gone: bool) {
    let notify = {
        let mut st = ex.lock();
        if st.ws.closed.is_none() {
            st.ws.closed = Some(CloseInfo { code, reason });
        }
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

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Session<S> {
    io: S,
    ex: Arc<Exchange>,
    bridge: Arc<Bridge>,
    cfg: WsConfig,
    codec: Option<Codec>,

    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    /// Bytes the next frame needs in the buffer (its header, or all of it).
    need: usize,
    /// Still reading frames: off after EOF, the client's close frame, or a failure.
    reading: bool,
    partial: Option<Partial>,
    /// Messages read since the last hand-off to the app.
    batch: Vec<Message>,
    /// Messages in the app's queue at the last hand-off.
    queued: usize,

    wbuf: Vec<u8>,
    wpos: usize,
    scratch: Vec<u8>,
    out: Vec<Outgoing>,

    close_sent: bool,
    close_received: bool,
    /// Close the TCP connection as soon as our close frame is written (the connection failed).
    fail_fast: bool,
    /// End now: EOF, an I/O error, or the closing handshake timed out.
    over: bool,
    /// A close frame to send once everything the app queued so far is written.
    pending_close: Option<u16>,

    timer: Pin<Box<Sleep>>,
    timer_kind: Timer,
    ping_count: u32,
    shutdown: Option<Shutdown>,
}

/// However the session ends (even by a panic), the app is told: 1006 unless it was told
/// something else already, and what it still had queued to send is dropped.
impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        close_for_app(&self.ex, &self.bridge, ABNORMAL, String::new(), true);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn new(
        io: S,
        read_ahead: Bytes,
        ex: Arc<Exchange>,
        deflate: Option<deflate::Params>,
        bridge: Arc<Bridge>,
        cfg: WsConfig,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut rbuf = vec![0u8; READ_CHUNK.max(read_ahead.len())];
        rbuf[..read_ahead.len()].copy_from_slice(&read_ahead);
        let shutdown: Shutdown = Box::pin(async move {
            if !*shutdown.borrow_and_update() {
                let _ = shutdown.changed().await;
            }
        });
        let mut s = Session {
            io,
            ex,
            bridge,
            cfg,
            codec: deflate.map(Codec::new),
            rbuf,
            rpos: 0,
            rlen: read_ahead.len(),
            need: 2,
            reading: true,
            partial: None,
            batch: Vec::new(),
            queued: 0,
            wbuf: Vec::with_capacity(4096),
            wpos: 0,
            scratch: Vec::new(),
            out: Vec::new(),
            close_sent: false,
            close_received: false,
            fail_fast: false,
            over: false,
            pending_close: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timer_kind: Timer::Off,
            ping_count: 0,
            shutdown: Some(shutdown),
        };
        if let Some(every) = cfg.ping_interval {
            s.arm(Timer::Ping, every);
        }
        s
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
            if self.finished() {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn finished(&self) -> bool {
        self.over
            || (self.close_sent
                && self.wpos == self.wbuf.len()
                && (self.close_received || self.fail_fast))
    }

    fn tell_app(&self, code: u16, reason: String) {
        close_for_app(&self.ex, &self.bridge, code, reason, false);
    }

    // -- graceful shutdown ---------------------------------------------------------------

    fn poll_shutdown_signal(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(fut) = self.shutdown.as_mut() else {
            return false;
        };
        if fut.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.shutdown = None;
        if !self.close_sent && self.pending_close.is_none() {
            // In-flight messages first: everything the app has queued goes out before 1012.
            self.pending_close = Some(close_code::SERVICE_RESTART);
            self.tell_app(close_code::SERVICE_RESTART, String::new());
        }
        true
    }

    // -- the hand-off to and from the app ------------------------------------------------

    /// Hands read messages to the app and takes what it sent. One lock for both.
    /// A pending close takes everything the app queued first, then goes out.
    fn sync(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = if self.pending_close.is_some() {
            usize::MAX
        } else if self.wbuf.len() - self.wpos < WRITE_LIMIT {
            WRITE_LIMIT
        } else {
            0
        };
        let progress = self.pull(cx, limit);
        if let Some(code) = self.pending_close.take() {
            self.send_close(code, "");
            return true;
        }
        progress
    }

    fn pull(&mut self, cx: &mut Context<'_>, limit: usize) -> bool {
        let notify;
        let mut taken = 0usize;
        {
            let mut st = self.ex.lock();
            st.set_io_waker(cx.waker());
            let delivered = !self.batch.is_empty();
            if delivered {
                st.ws.incoming.extend(self.batch.drain(..));
            }
            self.queued = st.ws.incoming.len();
            if self.queued >= self.cfg.max_queue {
                st.ws.read_paused = true;
            }
            while taken < limit {
                match st.ws.outgoing.pop_front() {
                    Some(m) => {
                        taken += m.len().max(1);
                        self.out.push(m);
                    }
                    None => break,
                }
            }
            if taken > 0 {
                st.ws.out_bytes = st.ws.out_bytes.saturating_sub(taken);
            }
            let drained = taken > 0 && st.ws.out_bytes < RESPONSE_LOW_WATER;
            notify = (delivered || drained) && st.take_loop_waiting();
        }
        if notify {
            self.bridge.push(Event::Wake(self.ex.clone()));
        }
        let progress = !self.out.is_empty();
        let mut out = std::mem::take(&mut self.out);
        for m in out.drain(..) {
            self.encode(m);
        }
        self.out = out;
        progress
    }

    fn encode(&mut self, m: Outgoing) {
        if self.close_sent {
            return;
        }
        match m {
            Outgoing::Text(b) => self.write_data(frame::OP_TEXT, &b),
            Outgoing::Binary(b) => self.write_data(frame::OP_BINARY, &b),
            Outgoing::Close(code, reason) => self.send_close(code, &reason),
        }
    }

    fn write_data(&mut self, opcode: u8, payload: &[u8]) {
        match &mut self.codec {
            Some(codec) if codec.should_compress(payload.len()) => {
                codec.compress(payload, &mut self.scratch);
                frame::write_frame(&mut self.wbuf, true, opcode, &self.scratch);
                if self.scratch.capacity() > 1 << 20 {
                    self.scratch = Vec::new();
                }
            }
            _ => frame::write_frame(&mut self.wbuf, false, opcode, payload),
        }
    }

    fn send_close(&mut self, code: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        frame::write_close(&mut self.wbuf, code, reason);
        self.arm(Timer::Close, CLOSE_TIMEOUT);
    }

    /// Fails the connection (section 7.1.7): close frame with `code`, then close the socket.
    fn fail(&mut self, code: u16) {
        self.reading = false;
        self.partial = None;
        self.fail_fast = true;
        self.send_close(code, "");
        self.tell_app(code, String::new());
    }

    // -- reading -------------------------------------------------------------------------

    fn may_read(&self) -> bool {
        // After our close frame, only the client's close matters: its messages are dropped,
        // so a full queue must not stop the read.
        self.reading
            && (self.close_sent || self.queued + self.batch.len() < self.cfg.max_queue)
            && self.wbuf.len() - self.wpos < WRITE_LIMIT
    }

    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        loop {
            if !self.may_read() {
                return progress;
            }
            if self.rlen - self.rpos >= self.need {
                progress |= self.parse();
                // parse() stops when the app's queue is full or the next frame is incomplete.
                if !self.may_read() || self.rlen - self.rpos >= self.need {
                    return progress;
                }
            }
            // Make room for what the next frame needs.
            if self.rpos == self.rlen {
                self.rpos = 0;
                self.rlen = 0;
                if self.rbuf.len() > 4 * READ_CHUNK && self.need <= READ_CHUNK {
                    self.rbuf = vec![0u8; READ_CHUNK];
                }
            }
            let want = self.need.max(READ_CHUNK);
            if self.rbuf.len() - self.rpos < want {
                self.rbuf.copy_within(self.rpos..self.rlen, 0);
                self.rlen -= self.rpos;
                self.rpos = 0;
                if self.rbuf.len() < want {
                    self.rbuf.resize(want, 0);
                }
            }
            let mut rb = ReadBuf::new(&mut self.rbuf[self.rlen..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // EOF without a closing handshake: the connection was lost.
                        self.reading = false;
                        self.over = true;
                        return true;
                    }
                    self.rlen += n;
                    progress = true;
                }
                Poll::Ready(Err(_)) => {
                    self.reading = false;
                    self.over = true;
                    return true;
                }
                Poll::Pending => return progress,
            }
        }
    }

    /// Handles every complete frame in the buffer (while the app's queue has room).
    fn parse(&mut self) -> bool {
        let mut progress = false;
        while self.may_read() {
            let avail = &self.rbuf[self.rpos..self.rlen];
            let h = match frame::parse_header(avail) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    self.need = (avail.len() + 1).max(2);
                    return progress;
                }
                Err(Invalid(code)) => {
                    self.fail(code);
                    return true;
                }
            };
            if !h.is_control() {
                let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
                let compressed = h.rsv1 || self.partial.as_ref().is_some_and(|p| p.compressed);
                if h.payload_len > self.cfg.max_size as u64
                    || (!compressed && so_far + h.payload_len > self.cfg.max_size as u64)
                {
                    self.fail(close_code::TOO_BIG);
                    return true;
                }
            }
            let total = h.header_len + h.payload_len as usize;
            if avail.len() < total {
                self.need = total;
                return progress;
            }
            let start = self.rpos + h.header_len;
            let end = self.rpos + total;
            frame::apply_mask(&mut self.rbuf[start..end], h.mask);
            self.rpos = end;
            self.need = 2;
            let buf = std::mem::take(&mut self.rbuf);
            self.on_frame(h, &buf[start..end]);
            self.rbuf = buf;
            progress = true;
        }
        progress
    }

    fn on_frame(&mut self, h: Header, payload: &[u8]) {
        if self.close_sent && !h.is_control() {
            return;
        }
        if h.rsv1 && (h.is_control() || h.opcode == frame::OP_CONTINUATION || self.codec.is_none())
        {
            return self.fail(PROTOCOL_ERROR);
        }
        match h.opcode {
            frame::OP_TEXT | frame::OP_BINARY => {
                if self.partial.is_some() {
                    return self.fail(PROTOCOL_ERROR);
                }
                let text = h.opcode == frame::OP_TEXT;
                if h.fin && !h.rsv1 {
                    return self.deliver(text, Bytes::copy_from_slice(payload));
                }
                self.partial = Some(Partial {
                    text,
                    compressed: h.rsv1,
                    data: Vec::new(),
                    checked: 0,
                });
                self.append(payload, h.fin);
            }
            frame::OP_CONTINUATION => {
                if self.partial.is_none() {
                    return self.fail(PROTOCOL_ERROR);
                }
                self.append(payload, h.fin);
            }
            frame::OP_CLOSE => self.on_close(payload),
            frame::OP_PING => {
                if !self.close_sent {
                    frame::write_frame(&mut self.wbuf, false, frame::OP_PONG, payload);
                }
            }
            frame::OP_PONG => {
                if self.timer_kind == Timer::Pong {
                    if let Some(every) = self.cfg.ping_interval {
                        self.arm(Timer::Ping, every);
                    }
                }
            }
            _ => self.fail(PROTOCOL_ERROR),
        }
    }

    fn append(&mut self, payload: &[u8], fin: bool) {
        let max = self.cfg.max_size;
        let Some(p) = self.partial.as_mut() else {
            return;
        };
        if p.compressed {
            let Some(codec) = self.codec.as_mut() else {
                return self.fail(PROTOCOL_ERROR);
            };
            match codec.decompress(payload, fin, &mut p.data, max) {
                Ok(()) => {}
                Err(InflateError::TooBig) => return self.fail(close_code::TOO_BIG),
                Err(InflateError::Corrupt) => return self.fail(INVALID_DATA),
            }
        } else {
            p.data.extend_from_slice(payload);
        }
        if p.text {
            match std::str::from_utf8(&p.data[p.checked..]) {
                Ok(_) => p.checked = p.data.len(),
                // An incomplete sequence at the end may be completed by the next fragment.
                Err(e) if e.error_len().is_none() && !fin => p.checked += e.valid_up_to(),
                Err(_) => return self.fail(INVALID_DATA),
            }
        }
        if !fin {
            return;
        }
        let Some(p) = self.partial.take() else {
            return;
        };
        self.deliver(p.text, Bytes::from(p.data));
    }

    /// A complete data message goes to the app; text that is not UTF-8 fails the connection.
    fn deliver(&mut self, text: bool, bytes: Bytes) {
        let msg = if text {
            match Utf8Bytes::new(bytes) {
                Ok(t) => Message::Text(t),
                Err(_) => return self.fail(INVALID_DATA),
            }
        } else {
            Message::Binary(bytes)
        };
        self.batch.push(msg);
    }

    fn on_close(&mut self, payload: &[u8]) {
        let (code, reason) = match payload.len() {
            0 => (close_code::NO_STATUS, String::new()),
            1 => return self.fail(PROTOCOL_ERROR),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !close_code::is_valid(code) {
                    return self.fail(PROTOCOL_ERROR);
                }
                match std::str::from_utf8(&payload[2..]) {
                    Ok(r) => (code, r.to_owned()),
                    Err(_) => return self.fail(INVALID_DATA),
                }
            }
        };
        self.reading = false;
        self.close_received = true;
        self.partial = None;
        if !self.close_sent {
            // The client closes first: what the app already queued goes out, then our echo.
            self.pending_close = Some(code);
        }
        self.tell_app(code, reason);
    }

    // -- writing -------------------------------------------------------------------------

    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progress = false;
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.wpos > 0 {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 4 * WRITE_LIMIT {
                self.wbuf = Vec::with_capacity(4096);
            }
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Err(e);
            }
        }
        Ok(progress)
    }

    // -- timers --------------------------------------------------------------------------

    fn arm(&mut self, kind: Timer, after: Duration) {
        self.timer_kind = kind;
        self.timer.as_mut().reset(Instant::now() + after);
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer_kind == Timer::Off || self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let kind = std::mem::replace(&mut self.timer_kind, Timer::Off);
        let paused = self.queued >= self.cfg.max_queue;
        match kind {
            Timer::Off => {}
            Timer::Ping if self.close_sent => {}
            Timer::Ping | Timer::Pong if paused => {
                // The socket is not being read (the app is behind), so a pong could not be
                // seen: keep-alive waits until reading resumes.
                if let Some(every) = self.cfg.ping_interval {
                    self.arm(Timer::Ping, every);
                }
            }
            Timer::Ping => {
                self.ping_count = self.ping_count.wrapping_add(1);
                let payload = self.ping_count.to_be_bytes();
                frame::write_frame(&mut self.wbuf, false, frame::OP_PING, &payload);
                match (self.cfg.ping_timeout, self.cfg.ping_interval) {
                    (Some(t), _) => self.arm(Timer::Pong, t),
                    (None, Some(every)) => self.arm(Timer::Ping, every),
                    (None, None) => {}
                }
            }
            Timer::Pong => self.fail(INTERNAL_ERROR),
            Timer::Close => self.over = true,
        }
        true
    }
}
