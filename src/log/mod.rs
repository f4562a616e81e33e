//! Access logging on the I/O thread: each completed request becomes one line, formatted in
//! Rust and written in batches, so the event loop never pays for it. When the user's logging
//! configuration needs Python handlers, lines go through the bridge to the `rsgi.access` logger
//! instead.

pub mod access;
pub mod events;
pub mod sink;
mod time;

pub use access::{AccessLog, Format, Record};
pub use sink::{Sink, Target};

use std::cell::Cell;

use http::HeaderValue;

/// The header that carries a request's id, taken from the client or made by
/// [`new_request_id`].
pub const X_REQUEST_ID: http::header::HeaderName =
    http::header::HeaderName::from_static("x-request-id");

/// A new request id: 32 hex digits, unique enough to correlate log lines.
pub fn new_request_id() -> HeaderValue {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    let mut bits = [0u64; 2];
    STATE.with(|s| {
        for b in &mut bits {
            *b = splitmix(s);
        }
    });
    hex_id(bits)
}

/// 32 lower-case hex digits of two words, without the formatting machinery.
fn hex_id(bits: [u64; 2]) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    let bytes = bits[0]
        .to_be_bytes()
        .into_iter()
        .chain(bits[1].to_be_bytes());
    for (pair, byte) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    nanos ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64)
}

/// SplitMix64: a fast generator whose outputs are well spread for any seed.
fn splitmix(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_differ() {
        let a = super::new_request_id();
        let b = super::new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn request_id_digits_follow_the_bits() {
        let state = std::cell::Cell::new(7);
        let (hi, lo) = (super::splitmix(&state), super::splitmix(&state));
        let expected = format!("{hi:016x}{lo:016x}");
        assert_eq!(super::hex_id([hi, lo]).as_bytes(), expected.as_bytes());
    }
}
