//! A WebSocket's messages as the I/O thread and the loop thread hand them to each other.

use std::collections::VecDeque;

use bytes::Bytes;

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
