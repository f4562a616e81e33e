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
//! One [`Exchange`](crate::handoff::exchange::Exchange) carries a WebSocket from its handshake to
//! its end: the app's accept (a 101 head) or denial (an HTTP response, streamed like any other)
//! goes through the HTTP fields; messages go through [`Queues`].

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod protocol;
pub mod session;

use std::time::Duration;

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

pub use crate::handoff::ws::{CloseInfo, Message, Outgoing, Utf8Bytes};
