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
    let text = format!("{:016x}{:016x}", bits[0], bits[1]);
    HeaderValue::from_str(&text).expect("hex digits are a valid header value")
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
    }
}
