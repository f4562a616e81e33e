//! The WebSocket protocol of one accepted connection (RFC 6455 with RFC 7692), without I/O.
//!
//! [`Protocol`] is a state machine over plain bytes and `Instant`s: no socket, no tokio, no
//! exchange, so every rule is unit-tested below. The session drives it:
//! - bytes in: it reads into [`Protocol::read_buf`] and reports [`Protocol::filled`] (or hands
//!   over bytes with [`Protocol::feed`]); complete frames are handled at once;
//! - messages out: complete messages ([`Protocol::drain_messages`]) and how the connection
//!   ended for the app ([`Protocol::take_close_info`]);
//! - the app's messages in: [`Protocol::send`], as much as [`Protocol::send_budget`] allows;
//! - frames out: [`Protocol::to_write`], drained with [`Protocol::written`];
//! - time: one timer (ping due, pong due, close timeout). A rule arms it with a delay, the
//!   session dates it ([`Protocol::date_timer`]) and calls [`Protocol::on_timer`] once it is
//!   due, so the hot path reads no clock.

use std::time::{Duration, Instant};

use super::close_code::{self, INTERNAL_ERROR, INVALID_DATA, PROTOCOL_ERROR, TOO_BIG};
use super::deflate::{self, Codec, InflateError};
use super::frame::{self, Header, Invalid};
use super::{CloseInfo, Message, Outgoing, Utf8Bytes, WsConfig};
use bytes::Bytes;

/// Bytes of room offered to each read.
pub const READ_CHUNK: usize = 16 * 1024;
/// The app's messages are taken, and frames read, only while fewer bytes than this wait to be
/// written: a client that does not read pushes back on the app and stops being read.
pub const WRITE_LIMIT: usize = 256 * 1024;
/// How long to wait for the client's close frame (or for it to read ours) after ours is sent.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Time to send a keep-alive ping.
    Ping,
    /// The pong to our ping is due.
    Pong,
    /// The client must have answered our close frame by now.
    Close,
}

/// When the timer fires: armed with a delay by a rule, dated by the session.
#[derive(Clone, Copy, Debug)]
enum Due {
    After(Duration),
    At(Instant),
}

/// A fragmented (or compressed) message being put together.
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (text messages fail as soon as they go bad).
    checked: usize,
}

/// The protocol state of one connection.
///
/// The small methods the session calls every round are `#[inline]`: called, their prologues
/// and epilogues cost more than their bodies (about 350 instructions per echoed message under
/// callgrind).
pub struct Protocol {
    cfg: WsConfig,
    codec: Option<Codec>,

    /// Read buffer: `rbuf[rpos..rlen]` is read and not yet handled.
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    /// Bytes the next frame needs in the buffer (its header, or all of it); always more than
    /// are buffered once `parse` has stopped for want of bytes.
    need: usize,
    /// Still reading frames: off after the client's close frame or a failure.
    reading: bool,
    partial: Option<Partial>,
    /// Messages read since the session last took them.
    messages: Vec<Message>,
    /// Messages in the app's queue, as the session last saw it.
    app_queued: usize,

    /// Write buffer: `wbuf[wpos..]` is still to be written.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Compression output, kept for its capacity.
    scratch: Vec<u8>,

    close_sent: bool,
    close_received: bool,
    /// Close the TCP connection as soon as our close frame is written (the connection failed).
    fail_fast: bool,
    /// The closing handshake timed out.
    timed_out: bool,
    /// A close frame to send once everything the app queued so far is sent.
    pending_close: Option<u16>,
    /// How the connection ended, for the app; only the first report counts (`app_told`).
    app_close: Option<CloseInfo>,
    app_told: bool,

    timer: Option<(Deadline, Due)>,
    ping_count: u32,
}

impl Protocol {
    pub fn new(cfg: WsConfig, deflate: Option<deflate::Params>) -> Self {
        let mut p = Protocol {
            cfg,
            codec: deflate.map(Codec::new),
            rbuf: vec![0u8; READ_CHUNK],
            rpos: 0,
            rlen: 0,
            need: 2,
            reading: true,
            partial: None,
            messages: Vec::new(),
            app_queued: 0,
            wbuf: Vec::with_capacity(4096),
            wpos: 0,
            scratch: Vec::new(),
            close_sent: false,
            close_received: false,
            fail_fast: false,
            timed_out: false,
            pending_close: None,
            app_close: None,
            app_told: false,
            timer: None,
            ping_count: 0,
        };
        p.keep_alive_later();
        p
    }

    // -- bytes in ------------------------------------------------------------------------

    /// Whether the session should read: frames are wanted, and the next one is incomplete.
    #[inline]
    pub fn wants_read(&self) -> bool {
        self.may_read() && self.rlen - self.rpos < self.need
    }

    /// Room for the next read: from the first unhandled byte, the buffer holds the whole next
    /// frame and at least [`READ_CHUNK`] bytes. Not empty while [`Protocol::wants_read`] holds.
    #[inline(always)]
    pub fn read_buf(&mut self) -> &mut [u8] {
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
            // A big frame's buffer is not kept once it has been handled.
            if self.rbuf.len() > 4 * READ_CHUNK && self.need <= READ_CHUNK {
                self.rbuf = vec![0u8; READ_CHUNK];
            }
        }
        let want = self.need.max(READ_CHUNK);
        if self.rbuf.len() - self.rpos < want {
            self.compact();
            if self.rbuf.len() < want {
                self.rbuf.resize(want, 0);
            }
        }
        &mut self.rbuf[self.rlen..]
    }

    /// The session read `n` bytes into [`Protocol::read_buf`]; handles the frames completed
    /// (as [`Protocol::parse`]).
    #[inline]
    pub fn filled(&mut self, n: usize) -> bool {
        self.rlen = (self.rlen + n).min(self.rbuf.len());
        self.parse()
    }

    /// Copies `data` in (bytes read before the session started) and handles what it can (as
    /// [`Protocol::parse`]).
    pub fn feed(&mut self, data: &[u8]) -> bool {
        self.compact();
        let end = self.rlen + data.len();
        if self.rbuf.len() < end {
            self.rbuf.resize(end, 0);
        }
        self.rbuf[self.rlen..end].copy_from_slice(data);
        self.rlen = end;
        self.parse()
    }

    fn compact(&mut self) {
        self.rbuf.copy_within(self.rpos..self.rlen, 0);
        self.rlen -= self.rpos;
        self.rpos = 0;
    }

    /// Handles every complete frame in the buffer, while frames are wanted (the app's queue
    /// has room, the write buffer is below its limit). Whether it handled any (or failed).
    #[inline]
    pub fn parse(&mut self) -> bool {
        // Most calls find no complete frame: that is decided without a call.
        self.rlen - self.rpos >= self.need && self.parse_frames()
    }

    fn parse_frames(&mut self) -> bool {
        let mut progress = false;
        while self.rlen - self.rpos >= self.need && self.may_read() {
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
            // Checked on the header, so that a frame too big is never buffered.
            if self.too_big(&h) {
                self.fail(TOO_BIG);
                return true;
            }
            let total = h.header_len + h.payload_len as usize;
            if avail.len() < total {
                self.need = total;
                return progress;
            }
            let (start, end) = (self.rpos + h.header_len, self.rpos + total);
            frame::apply_mask(&mut self.rbuf[start..end], h.mask);
            self.rpos = end;
            self.need = 2;
            // Lent out so that the payload is read in place while the state changes.
            let buf = std::mem::take(&mut self.rbuf);
            self.on_frame(h, &buf[start..end]);
            self.rbuf = buf;
            progress = true;
        }
        progress
    }

    /// After our close frame, only the client's close matters: its messages are dropped, so
    /// a full app queue must not stop the read.
    #[inline]
    fn may_read(&self) -> bool {
        self.reading
            && (self.close_sent || self.app_queued + self.messages.len() < self.cfg.max_queue)
            && self.unwritten() < WRITE_LIMIT
    }

    /// A data frame that takes the message past `max_size`. A compressed one counts its
    /// decompressed bytes, which `append` checks.
    fn too_big(&self, h: &Header) -> bool {
        if h.is_control() {
            return false;
        }
        let max = self.cfg.max_size as u64;
        let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
        let compressed = h.rsv1 || self.partial.as_ref().is_some_and(|p| p.compressed);
        h.payload_len > max || (!compressed && so_far + h.payload_len > max)
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
            frame::OP_TEXT | frame::OP_BINARY => self.on_data(h, payload),
            frame::OP_CONTINUATION if self.partial.is_some() => self.append(payload, h.fin),
            frame::OP_CLOSE => self.on_close(payload),
            frame::OP_PING if !self.close_sent => {
                frame::write_frame(&mut self.wbuf, false, frame::OP_PONG, payload);
            }
            frame::OP_PING => {}
            frame::OP_PONG => self.on_pong(),
            // A continuation with no message to continue (frame.rs refuses other opcodes).
            _ => self.fail(PROTOCOL_ERROR),
        }
    }

    fn on_data(&mut self, h: Header, payload: &[u8]) {
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
                Err(InflateError::TooBig) => return self.fail(TOO_BIG),
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
        if let Some(p) = self.partial.take() {
            self.deliver(p.text, Bytes::from(p.data));
        }
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
        self.messages.push(msg);
    }

    fn on_close(&mut self, payload: &[u8]) {
        let (code, reason) = match payload {
            [] => (close_code::NO_STATUS, String::new()),
            [_] => return self.fail(PROTOCOL_ERROR),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !close_code::is_valid(code) {
                    return self.fail(PROTOCOL_ERROR);
                }
                match std::str::from_utf8(reason) {
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

    fn on_pong(&mut self) {
        if matches!(self.timer, Some((Deadline::Pong, _))) {
            self.timer = None;
            self.keep_alive_later();
        }
    }

    /// Fails the connection (section 7.1.7): close frame with `code`, then close the socket.
    fn fail(&mut self, code: u16) {
        self.reading = false;
        self.partial = None;
        self.fail_fast = true;
        self.send_close(code, "");
        self.tell_app(code, String::new());
    }

    fn tell_app(&mut self, code: u16, reason: String) {
        if !self.app_told {
            self.app_told = true;
            self.app_close = Some(CloseInfo { code, reason });
        }
    }

    // -- what the app gets ---------------------------------------------------------------

    #[inline]
    pub fn has_messages(&self) -> bool {
        !self.messages.is_empty()
    }

    /// The complete messages read since the last call, oldest first.
    #[inline]
    pub fn drain_messages(&mut self) -> std::vec::Drain<'_, Message> {
        self.messages.drain(..)
    }

    /// How the connection ended for the app, once (the first cause wins).
    #[inline]
    pub fn take_close_info(&mut self) -> Option<CloseInfo> {
        self.app_close.take()
    }

    /// The session saw `len` messages in the app's queue: frames are read only while the
    /// queue and what was read since stay under `max_queue`.
    #[inline]
    pub fn set_app_queue(&mut self, len: usize) {
        self.app_queued = len;
    }

    #[inline]
    pub fn app_queue_full(&self) -> bool {
        self.app_queued >= self.cfg.max_queue
    }

    // -- what the app sends --------------------------------------------------------------

    /// Bytes of the app's messages to pass to [`Protocol::send`] now: none while the write
    /// buffer is at its limit, and all of them while a close waits for them.
    #[inline]
    pub fn send_budget(&self) -> usize {
        if self.pending_close.is_some() {
            usize::MAX
        } else if self.unwritten() < WRITE_LIMIT {
            WRITE_LIMIT
        } else {
            0
        }
    }

    /// Frames one of the app's messages; nothing goes out after our close frame.
    pub fn send(&mut self, m: Outgoing) {
        if self.close_sent {
            return;
        }
        match m {
            Outgoing::Text(b) => self.write_data(frame::OP_TEXT, &b),
            Outgoing::Binary(b) => self.write_data(frame::OP_BINARY, &b),
            Outgoing::Close(code, reason) => self.send_close(code, &reason),
        }
    }

    /// The session passed on the app's messages up to [`Protocol::send_budget`]: all of them
    /// when a close was pending, which now goes out behind them. Whether it did.
    #[inline]
    pub fn app_messages_sent(&mut self) -> bool {
        let Some(code) = self.pending_close.take() else {
            return false;
        };
        self.send_close(code, "");
        true
    }

    /// Graceful shutdown: what the app queued goes out, then 1012, which the app is told now.
    pub fn shutdown(&mut self) {
        if !self.close_sent && self.pending_close.is_none() {
            self.pending_close = Some(close_code::SERVICE_RESTART);
            self.tell_app(close_code::SERVICE_RESTART, String::new());
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
        self.arm(Deadline::Close, CLOSE_TIMEOUT);
    }

    // -- bytes out -----------------------------------------------------------------------

    /// The frames still to be written, in order.
    #[inline]
    pub fn to_write(&self) -> &[u8] {
        &self.wbuf[self.wpos..]
    }

    /// The session wrote the first `n` bytes of [`Protocol::to_write`].
    #[inline]
    pub fn written(&mut self, n: usize) {
        self.wpos = (self.wpos + n).min(self.wbuf.len());
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > 4 * WRITE_LIMIT {
                self.wbuf = Vec::with_capacity(4096);
            }
        }
    }

    #[inline]
    fn unwritten(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// The connection is over: the closing handshake is complete (our close frame written,
    /// and the client's received or the connection failed), or it timed out.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.timed_out
            || (self.close_sent && self.unwritten() == 0 && (self.close_received || self.fail_fast))
    }

    // -- time ----------------------------------------------------------------------------

    fn arm(&mut self, kind: Deadline, after: Duration) {
        self.timer = Some((kind, Due::After(after)));
    }

    /// Sets the timer to the next keep-alive ping, if pings are on.
    fn keep_alive_later(&mut self) {
        if let Some(every) = self.cfg.ping_interval {
            self.arm(Deadline::Ping, every);
        }
    }

    /// Dates a timer armed since the last call from `now` (read only then). Returns its
    /// deadline, for the session to set its timer to.
    #[inline]
    pub fn date_timer(&mut self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        let Some((kind, Due::After(after))) = self.timer else {
            return None;
        };
        let at = now() + after;
        self.timer = Some((kind, Due::At(at)));
        Some(at)
    }

    /// The next dated deadline and what it is for.
    #[inline]
    pub fn deadline(&self) -> Option<(Deadline, Instant)> {
        match self.timer {
            Some((kind, Due::At(at))) => Some((kind, at)),
            _ => None,
        }
    }

    /// Runs the deadline if it is due at `now`; it may arm the timer again.
    pub fn on_timer(&mut self, now: Instant) {
        let Some((kind, at)) = self.deadline() else {
            return;
        };
        if now < at {
            return;
        }
        self.timer = None;
        match kind {
            Deadline::Ping if self.close_sent => {}
            // The socket is not being read (the app is behind), so a pong could not be seen:
            // keep-alive waits until reading resumes.
            Deadline::Ping | Deadline::Pong if self.app_queue_full() => self.keep_alive_later(),
            Deadline::Ping => self.ping(),
            Deadline::Pong => self.fail(INTERNAL_ERROR),
            Deadline::Close => self.timed_out = true,
        }
    }

    fn ping(&mut self) {
        self.ping_count = self.ping_count.wrapping_add(1);
        let payload = self.ping_count.to_be_bytes();
        frame::write_frame(&mut self.wbuf, false, frame::OP_PING, &payload);
        match self.cfg.ping_timeout {
            Some(timeout) => self.arm(Deadline::Pong, timeout),
            None => self.keep_alive_later(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::Params;

    const TEXT: u8 = 0x81;
    const BINARY: u8 = 0x82;
    const CLOSE: u8 = 0x88;
    const PING: u8 = 0x89;
    const PONG: u8 = 0x8A;
    /// FIN off: the first frame of a fragmented message, or a continuation.
    const FIRST_TEXT: u8 = 0x01;
    const MORE: u8 = 0x00;
    const LAST: u8 = 0x80;
    const RSV1: u8 = 0x40;

    fn cfg() -> WsConfig {
        WsConfig {
            enabled: true,
            max_size: 1000,
            max_queue: 16,
            ping_interval: None,
            ping_timeout: None,
            per_message_deflate: false,
        }
    }

    fn deflate() -> Params {
        Params {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
        }
    }

    fn proto() -> Protocol {
        Protocol::new(cfg(), None)
    }

    /// A masked client frame.
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        frame::client_frame(b0, payload, [0x37, 0xFA, 0x21, 0x3D])
    }

    fn client_close(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        client(CLOSE, &payload)
    }

    /// What the server sends: an unmasked frame.
    fn server(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_header(
            &mut out,
            b0 & 0x80 != 0,
            b0 & 0x40 != 0,
            b0 & 0x0F,
            payload.len(),
        );
        out.extend_from_slice(payload);
        out
    }

    fn server_close(code: u16) -> Vec<u8> {
        server(CLOSE, &code.to_be_bytes())
    }

    /// Everything written so far, as the session would write it.
    fn written(p: &mut Protocol) -> Vec<u8> {
        let out = p.to_write().to_vec();
        p.written(out.len());
        out
    }

    fn messages(p: &mut Protocol) -> Vec<String> {
        p.drain_messages()
            .map(|m| match m {
                Message::Text(t) => format!("text:{}", t.as_str()),
                Message::Binary(b) => format!("binary:{b:?}"),
            })
            .collect()
    }

    fn info(code: u16, reason: &str) -> Option<CloseInfo> {
        Some(CloseInfo {
            code,
            reason: reason.to_owned(),
        })
    }

    /// The connection failed with `code`: the app is told, the close frame goes out, and the
    /// connection is over once it is written.
    fn assert_failed(p: &mut Protocol, code: u16) {
        assert_eq!(p.take_close_info(), info(code, ""));
        assert!(!p.is_done(), "the close frame must be written first");
        assert!(written(p).ends_with(&server_close(code)));
        assert!(p.is_done());
        assert!(!p.wants_read());
    }

    fn fails_with(bytes: &[u8], code: u16) {
        let mut p = proto();
        p.feed(bytes);
        assert_failed(&mut p, code);
    }

    /// Dates the timer at `now` and returns its deadline.
    fn dated(p: &mut Protocol, now: Instant) -> Option<(Deadline, Instant)> {
        p.date_timer(|| now);
        p.deadline()
    }

    // -- messages ------------------------------------------------------------------------

    #[test]
    fn text_and_binary_messages() {
        let mut p = proto();
        let mut wire = client(TEXT, b"hello");
        wire.extend(client(BINARY, &[1, 2, 3]));
        p.feed(&wire);
        assert_eq!(
            messages(&mut p),
            ["text:hello", "binary:b\"\\x01\\x02\\x03\""]
        );
        assert!(p.wants_read());
        assert!(p.to_write().is_empty());
    }

    #[test]
    fn frames_split_anywhere_are_put_together() {
        let mut wire = client(TEXT, &[b'a'; 300]);
        wire.extend(client(FIRST_TEXT, "é".as_bytes()));
        wire.extend(client(LAST, b"!"));
        for chunk in [1, 2, 7, 100] {
            let mut p = proto();
            for piece in wire.chunks(chunk) {
                assert!(p.wants_read());
                let buf = p.read_buf();
                assert!(buf.len() >= piece.len());
                buf[..piece.len()].copy_from_slice(piece);
                p.filled(piece.len());
            }
            let want = [format!("text:{}", "a".repeat(300)), "text:é!".to_owned()];
            assert_eq!(messages(&mut p), want, "chunks of {chunk}");
        }
    }

    #[test]
    fn fragmented_binary_message() {
        let mut p = proto();
        let mut wire = client(0x02, b"ab");
        wire.extend(client(MORE, b"cd"));
        wire.extend(client(LAST, b"ef"));
        p.feed(&wire);
        assert_eq!(messages(&mut p), ["binary:b\"abcdef\""]);
    }

    #[test]
    fn valid_multibyte_char_split_across_fragments() {
        let mut p = proto();
        let euro = "€".as_bytes();
        let mut wire = client(FIRST_TEXT, &euro[..1]);
        wire.extend(client(MORE, &euro[1..2]));
        wire.extend(client(LAST, &euro[2..]));
        p.feed(&wire);
        assert_eq!(messages(&mut p), ["text:€"]);
        assert_eq!(p.take_close_info(), None);
    }

    // -- the closing handshake -------------------------------------------------------------

    #[test]
    fn client_close_is_echoed_with_its_code() {
        for (code, reason) in [(1000, ""), (1001, ""), (1000, "bye"), (4000, "app: done")] {
            let mut p = proto();
            p.feed(&client_close(code, reason.as_bytes()));
            assert_eq!(p.take_close_info(), info(code, reason));
            assert!(!p.wants_read(), "nothing is read after the client's close");
            assert!(
                p.to_write().is_empty(),
                "the echo waits for the app's messages"
            );
            assert_eq!(p.send_budget(), usize::MAX);
            assert!(p.app_messages_sent());
            assert_eq!(written(&mut p), server_close(code), "{code} {reason}");
            assert!(p.is_done());
        }
    }

    #[test]
    fn empty_close_is_1005_for_the_app_and_echoed_empty() {
        let mut p = proto();
        p.feed(&client(CLOSE, b""));
        assert_eq!(p.take_close_info(), info(1005, ""));
        p.app_messages_sent();
        assert_eq!(written(&mut p), [0x88, 0]);
        assert!(p.is_done());
    }

    #[test]
    fn echo_goes_out_after_what_the_app_queued() {
        let mut p = proto();
        let mut wire = client(TEXT, b"last words");
        wire.extend(client_close(1000, b""));
        p.feed(&wire);
        assert_eq!(messages(&mut p), ["text:last words"]);
        p.send(Outgoing::Text(Bytes::from_static(b"reply")));
        p.app_messages_sent();
        let mut want = server(TEXT, b"reply");
        want.extend(server_close(1000));
        assert_eq!(written(&mut p), want);
    }

    #[test]
    fn app_close_then_client_answer() {
        let mut p = proto();
        let t0 = Instant::now();
        p.send(Outgoing::Close(4001, "gone fishing".into()));
        assert_eq!(
            dated(&mut p, t0),
            Some((Deadline::Close, t0 + CLOSE_TIMEOUT))
        );
        let mut want = server(CLOSE, &4001u16.to_be_bytes());
        want.pop();
        want.pop();
        want[1] = 14;
        want.extend_from_slice(&4001u16.to_be_bytes());
        want.extend_from_slice(b"gone fishing");
        assert_eq!(written(&mut p), want);
        assert!(!p.is_done(), "waits for the client's close");
        p.send(Outgoing::Text(Bytes::from_static(b"too late")));
        assert!(p.to_write().is_empty(), "nothing goes out after our close");
        p.feed(&client_close(4001, b""));
        assert!(!p.app_messages_sent(), "our close was sent already");
        assert!(p.to_write().is_empty());
        assert!(p.is_done());
        assert_eq!(p.take_close_info(), info(4001, ""));
    }

    #[test]
    fn messages_after_our_close_are_dropped() {
        let mut p = Protocol::new(
            WsConfig {
                max_queue: 1,
                ..cfg()
            },
            None,
        );
        p.send(Outgoing::Close(1000, String::new()));
        written(&mut p);
        let mut wire = client(TEXT, b"one");
        wire.extend(client(TEXT, b"two"));
        wire.extend(client(PING, b"p"));
        wire.extend(client_close(1000, b""));
        p.feed(&wire);
        assert!(!p.has_messages());
        assert!(p.to_write().is_empty(), "no pong after our close");
        assert!(p.is_done());
    }

    #[test]
    fn close_timeout_ends_the_connection() {
        let mut p = proto();
        let t0 = Instant::now();
        p.send(Outgoing::Close(1000, String::new()));
        written(&mut p);
        let (kind, at) = dated(&mut p, t0).unwrap();
        assert_eq!((kind, at), (Deadline::Close, t0 + CLOSE_TIMEOUT));
        p.on_timer(at - Duration::from_millis(1));
        assert!(!p.is_done(), "not due yet");
        p.on_timer(at);
        assert!(p.is_done());
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn graceful_shutdown_sends_1012_after_what_the_app_queued() {
        let mut p = proto();
        p.shutdown();
        assert_eq!(p.take_close_info(), info(1012, ""));
        assert_eq!(p.send_budget(), usize::MAX);
        p.send(Outgoing::Text(Bytes::from_static(b"in flight")));
        p.app_messages_sent();
        let mut want = server(TEXT, b"in flight");
        want.extend(server_close(1012));
        assert_eq!(written(&mut p), want);
        p.shutdown();
        assert!(p.to_write().is_empty(), "one close only");
    }

    #[test]
    fn close_payload_of_one_byte_is_1002() {
        fails_with(&client(CLOSE, &[0x03]), 1002);
    }

    #[test]
    fn invalid_close_codes_are_1002() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let mut p = proto();
            p.feed(&client_close(code, b""));
            assert_eq!(p.take_close_info(), info(1002, ""), "{code}");
            assert_eq!(written(&mut p), server_close(1002), "{code}");
        }
    }

    #[test]
    fn invalid_utf8_close_reason_is_1007() {
        fails_with(&client_close(1000, b"\xff\xfe"), 1007);
        fails_with(
            &client_close(1000, "€".as_bytes().split_last().unwrap().1),
            1007,
        );
    }

    // -- failing the connection ------------------------------------------------------------

    #[test]
    fn invalid_utf8_text_is_1007() {
        fails_with(&client(TEXT, b"ab\xc3\x28"), 1007);
        // Cut short at the end of the message.
        fails_with(&client(TEXT, &"€".as_bytes()[..2]), 1007);
    }

    #[test]
    fn invalid_utf8_in_a_fragment_fails_before_the_message_ends() {
        let mut p = proto();
        p.feed(&client(FIRST_TEXT, b"ok \xff"));
        assert_failed(&mut p, 1007);
        let mut p = proto();
        let mut wire = client(FIRST_TEXT, "é".as_bytes().split_first().unwrap().1);
        wire.extend(client(LAST, b"x"));
        p.feed(&wire);
        assert_failed(&mut p, 1007);
    }

    #[test]
    fn incomplete_char_at_the_end_of_the_last_fragment_is_1007() {
        let mut p = proto();
        let euro = "€".as_bytes();
        let mut wire = client(FIRST_TEXT, b"a");
        wire.extend(client(LAST, &euro[..2]));
        p.feed(&wire);
        assert_failed(&mut p, 1007);
        assert!(!p.has_messages());
    }

    #[test]
    fn messages_over_max_size_are_1009() {
        fails_with(&client(TEXT, &[b'a'; 1001]), 1009);
        fails_with(&client(BINARY, &vec![0; 70_000]), 1009);
        let mut wire = client(0x02, &[0; 600]);
        wire.extend(client(LAST, &[0; 401]));
        fails_with(&wire, 1009);
        let mut p = proto();
        p.feed(&client(BINARY, &[0; 1000]));
        assert_eq!(p.drain_messages().count(), 1, "max_size itself is allowed");
    }

    #[test]
    fn too_big_is_refused_on_the_header_alone() {
        let mut p = proto();
        let header = &client(BINARY, &vec![0; 70_000])[..14];
        p.feed(header);
        assert_failed(&mut p, 1009);
    }

    #[test]
    fn compressed_messages_over_max_size_are_1009() {
        let mut tx = Codec::new(deflate());
        let mut wire = Vec::new();
        tx.compress(&[b'a'; 5000], &mut wire);
        assert!(wire.len() < 1000);
        let mut p = Protocol::new(cfg(), Some(deflate()));
        p.feed(&client(TEXT | RSV1, &wire));
        assert_failed(&mut p, 1009);
    }

    #[test]
    fn rsv1_without_deflate_is_1002() {
        fails_with(&client(TEXT | RSV1, b"x"), 1002);
    }

    #[test]
    fn rsv1_on_control_or_continuation_is_1002() {
        for wire in [client(PING | RSV1, b""), {
            let mut w = client(FIRST_TEXT | RSV1, b"");
            w.extend(client(LAST | RSV1, b""));
            w
        }] {
            let mut p = Protocol::new(cfg(), Some(deflate()));
            p.feed(&wire);
            assert_failed(&mut p, 1002);
        }
    }

    #[test]
    fn continuation_without_a_start_is_1002() {
        fails_with(&client(LAST, b"x"), 1002);
    }

    #[test]
    fn new_data_frame_during_fragmentation_is_1002() {
        for second in [TEXT, BINARY, FIRST_TEXT] {
            let mut wire = client(FIRST_TEXT, b"a");
            wire.extend(client(second, b"b"));
            fails_with(&wire, 1002);
        }
    }

    #[test]
    fn unknown_opcodes_are_1002() {
        for op in [0x3, 0x7, 0xB, 0xF] {
            fails_with(&client(0x80 | op, b""), 1002);
        }
    }

    #[test]
    fn fragmented_or_long_control_frames_are_1002() {
        fails_with(&client(0x09, b""), 1002);
        fails_with(&client(0x08, b""), 1002);
        fails_with(&client(PING, &[0; 126]), 1002);
        fails_with(&client_close(1000, &[b'a'; 124]), 1002);
    }

    #[test]
    fn unmasked_client_frames_are_1002() {
        fails_with(&[0x81, 0x02, b'h', b'i'], 1002);
    }

    #[test]
    fn nothing_is_read_after_a_failure() {
        let mut p = proto();
        let mut wire = client(LAST, b"x");
        wire.extend(client(TEXT, b"ignored"));
        wire.extend(client_close(1000, b""));
        p.feed(&wire);
        assert!(!p.has_messages());
        assert_failed(&mut p, 1002);
    }

    // -- ping and pong ---------------------------------------------------------------------

    #[test]
    fn ping_is_answered_with_the_same_payload() {
        let mut p = proto();
        let mut wire = client(FIRST_TEXT, b"a");
        wire.extend(client(PING, b"are you there?"));
        wire.extend(client(LAST, b"b"));
        p.feed(&wire);
        assert_eq!(written(&mut p), server(PONG, b"are you there?"));
        assert_eq!(
            messages(&mut p),
            ["text:ab"],
            "a ping may come between fragments"
        );
    }

    fn keep_alive() -> Protocol {
        Protocol::new(
            WsConfig {
                ping_interval: Some(Duration::from_secs(20)),
                ping_timeout: Some(Duration::from_secs(10)),
                ..cfg()
            },
            None,
        )
    }

    #[test]
    fn pong_clears_the_pong_deadline() {
        let mut p = keep_alive();
        let t0 = Instant::now();
        let (kind, at) = dated(&mut p, t0).unwrap();
        assert_eq!((kind, at), (Deadline::Ping, t0 + Duration::from_secs(20)));
        p.on_timer(at);
        assert_eq!(written(&mut p), server(PING, &1u32.to_be_bytes()));
        let pong_due = dated(&mut p, at).unwrap();
        assert_eq!(pong_due, (Deadline::Pong, at + Duration::from_secs(10)));
        let t1 = at + Duration::from_secs(1);
        p.feed(&client(PONG, &1u32.to_be_bytes()));
        assert_eq!(p.deadline(), None, "armed again, not dated yet");
        assert_eq!(
            dated(&mut p, t1),
            Some((Deadline::Ping, t1 + Duration::from_secs(20)))
        );
        p.on_timer(pong_due.1);
        assert_eq!(p.take_close_info(), None);
        assert!(p.to_write().is_empty());
    }

    #[test]
    fn unsolicited_pong_changes_nothing() {
        let mut p = keep_alive();
        let t0 = Instant::now();
        let before = dated(&mut p, t0);
        p.feed(&client(PONG, b"x"));
        assert_eq!(p.deadline(), before);
        assert!(p.to_write().is_empty());
    }

    #[test]
    fn ping_timeout_is_1011() {
        let mut p = keep_alive();
        let t0 = Instant::now();
        let (_, ping_at) = dated(&mut p, t0).unwrap();
        p.on_timer(ping_at);
        written(&mut p);
        let (kind, pong_at) = dated(&mut p, ping_at).unwrap();
        assert_eq!(kind, Deadline::Pong);
        p.on_timer(pong_at);
        assert_failed(&mut p, 1011);
        assert_eq!(dated(&mut p, pong_at).unwrap().0, Deadline::Close);
    }

    #[test]
    fn pings_without_timeout_repeat() {
        let mut p = Protocol::new(
            WsConfig {
                ping_interval: Some(Duration::from_secs(5)),
                ..cfg()
            },
            None,
        );
        let mut now = Instant::now();
        for n in 1..=3u32 {
            let (kind, at) = dated(&mut p, now).unwrap();
            assert_eq!((kind, at), (Deadline::Ping, now + Duration::from_secs(5)));
            p.on_timer(at);
            assert_eq!(written(&mut p), server(PING, &n.to_be_bytes()));
            now = at;
        }
    }

    #[test]
    fn no_keep_alive_without_interval() {
        let mut p = proto();
        assert_eq!(dated(&mut p, Instant::now()), None);
    }

    #[test]
    fn keep_alive_waits_while_the_app_is_behind() {
        let mut p = keep_alive();
        let t0 = Instant::now();
        let (_, at) = dated(&mut p, t0).unwrap();
        p.set_app_queue(16);
        p.on_timer(at);
        assert!(
            p.to_write().is_empty(),
            "no ping while the socket is not read"
        );
        assert_eq!(dated(&mut p, at).unwrap().0, Deadline::Ping);
    }

    #[test]
    fn no_ping_after_our_close() {
        let mut p = keep_alive();
        let t0 = Instant::now();
        let (_, at) = dated(&mut p, t0).unwrap();
        p.send(Outgoing::Close(1000, String::new()));
        written(&mut p);
        // Our close replaced the ping deadline with the close timeout.
        assert_eq!(dated(&mut p, t0).unwrap().0, Deadline::Close);
        p.on_timer(at);
        assert!(p.to_write().is_empty());
    }

    // -- limits ----------------------------------------------------------------------------

    #[test]
    fn reading_stops_while_the_app_queue_is_full() {
        let mut p = Protocol::new(
            WsConfig {
                max_queue: 2,
                ..cfg()
            },
            None,
        );
        let mut wire = Vec::new();
        for m in [b"1", b"2", b"3"] {
            wire.extend(client(TEXT, m));
        }
        p.feed(&wire);
        assert_eq!(messages(&mut p), ["text:1", "text:2"]);
        p.set_app_queue(2);
        assert!(p.app_queue_full());
        assert!(!p.wants_read());
        assert!(!p.parse());
        p.set_app_queue(1);
        assert!(p.parse());
        assert_eq!(messages(&mut p), ["text:3"]);
        assert!(p.wants_read());
    }

    #[test]
    fn a_full_write_buffer_stops_reading_and_taking() {
        let mut p = proto();
        assert_eq!(p.send_budget(), WRITE_LIMIT);
        p.send(Outgoing::Binary(Bytes::from(vec![0; WRITE_LIMIT])));
        assert_eq!(p.send_budget(), 0);
        assert!(!p.wants_read());
        p.feed(&client(TEXT, b"waits"));
        assert!(!p.has_messages());
        let n = p.to_write().len();
        p.written(n - 10);
        assert_eq!(p.send_budget(), WRITE_LIMIT);
        assert!(p.parse());
        assert_eq!(messages(&mut p), ["text:waits"]);
    }

    #[test]
    fn big_frames_grow_the_read_buffer_and_it_shrinks_back() {
        let mut p = Protocol::new(
            WsConfig {
                max_size: 1 << 20,
                ..cfg()
            },
            None,
        );
        let wire = client(BINARY, &vec![7; 100_000]);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let buf = p.read_buf();
            let n = buf.len().min(rest.len()).min(READ_CHUNK);
            buf[..n].copy_from_slice(&rest[..n]);
            p.filled(n);
            rest = &rest[n..];
        }
        assert_eq!(p.drain_messages().count(), 1);
        assert_eq!(p.read_buf().len(), READ_CHUNK);
    }

    // -- permessage-deflate ----------------------------------------------------------------

    #[test]
    fn deflate_round_trip() {
        let mut p = Protocol::new(cfg(), Some(deflate()));
        let mut client_codec = Codec::new(deflate());
        let text = "compress me ".repeat(40);
        let mut wire = Vec::new();
        client_codec.compress(text.as_bytes(), &mut wire);
        let (a, b) = wire.split_at(wire.len() / 2);
        let mut frames = client(TEXT | RSV1, &wire);
        frames.extend(client(FIRST_TEXT | RSV1, a));
        frames.extend(client(LAST, b));
        p.feed(&frames);
        let want = format!("text:{text}");
        assert_eq!(messages(&mut p), [want.clone(), want]);

        p.send(Outgoing::Text(Bytes::from(text.clone())));
        p.send(Outgoing::Text(Bytes::from_static(b"short")));
        let out = written(&mut p);
        let h = out[0];
        assert_eq!(h, 0x80 | RSV1 | 0x1, "compressed text frame");
        let len = out[1] as usize;
        assert!(len < 126 && len < text.len() / 4);
        let mut inflated = Vec::new();
        client_codec
            .decompress(&out[2..2 + len], true, &mut inflated, 1 << 20)
            .unwrap();
        assert_eq!(inflated, text.as_bytes());
        assert_eq!(
            &out[2 + len..],
            server(TEXT, b"short"),
            "short ones go plain"
        );
    }

    #[test]
    fn corrupt_compressed_data_is_1007() {
        let mut p = Protocol::new(cfg(), Some(deflate()));
        p.feed(&client(BINARY | RSV1, &[0xFF; 16]));
        assert_failed(&mut p, 1007);
    }
}
