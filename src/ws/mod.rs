//! WebSocket (RFC 6455, with permessage-deflate from RFC 7692) over hyper's upgrade.
//!
//! - `handshake`: recognises and validates upgrade requests on the I/O thread; invalid ones are
//!   answered there (400/426) and never reach the app.
//! - `deflate`: the permessage-deflate negotiation and the per-message compressor/decompressor.
//! - `frame`: the wire format (frame headers, masking).
//! - `protocol`: the rules of one accepted connection, without I/O: frames into messages, the
//!   app's messages into frames, limits, the closing handshake, keep-alive deadlines.
//! - `session`: the I/O side of one accepted connection: moves bytes between the socket and
//!   the protocol, runs its timer, and hands messages to and from the app.
//! - `cycle`: `WebSocketCycle`, the `receive`/`send` pair the app sees (loop thread only).
//!
//! One [`Exchange`](crate::asgi::exchange::Exchange) carries a WebSocket from its handshake to
//! its end: the app's accept (a 101 head) or denial (an HTTP response, streamed like any other)
//! goes through the HTTP fields; messages go through [`Queues`].

pub mod cycle;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod protocol;
pub mod session;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

/// WebSocket settings from the config (`--ws*` options).
#[derive(Clone, Copy, Debug)]
pub struct WsConfig {
    /// `--ws none` turns upgrade requests into plain HTTP requests.
    pub enabled: bool,
    /// Largest message accepted, after decompression; larger ones close with 1009.
    pub max_size: usize,
    /// Incoming messages buffered for the app before the socket stops being read.
    pub max_queue: usize,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
    pub per_message_deflate: bool,
}

/// Close codes (RFC 6455 section 7.4 and the IANA registry).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const NO_STATUS: u16 = 1005;
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;

    /// May this code appear in a close frame on the wire?
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Text whose UTF-8 validity the session checked: the loop thread can make a `str` of it
/// without checking again.
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    pub fn new(bytes: Bytes) -> Result<Self, Bytes> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Utf8Bytes(bytes)),
            Err(_) => Err(bytes),
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: `new` is the only constructor and it checked that the bytes are UTF-8;
        // `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// A complete message from the client.
pub enum Message {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// What the app asked the session to send.
pub enum Outgoing {
    Text(Bytes),
    Binary(Bytes),
    Close(u16, String),
}

impl Outgoing {
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(b) | Outgoing::Binary(b) => b.len(),
            Outgoing::Close(_, r) => r.len(),
        }
    }
}

/// How the connection ended, as `websocket.disconnect` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

/// The WebSocket half of an exchange's shared state (inside its mutex).
#[derive(Default)]
pub struct Queues {
    /// Messages read from the client, not yet taken by the app (at most `max_queue`, the
    /// session stops reading then).
    pub incoming: VecDeque<Message>,
    pub max_queue: usize,
    /// The session stopped reading because `incoming` is full; the app's `receive()` wakes it.
    pub read_paused: bool,
    /// What the app sent, not yet taken by the session.
    pub outgoing: VecDeque<Outgoing>,
    pub out_bytes: usize,
    /// Set once the connection is over for the app.
    pub closed: Option<CloseInfo>,
}
