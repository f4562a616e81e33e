//! permessage-deflate (RFC 7692): the negotiation in the handshake, and the compressor and
//! decompressor of one connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What the server agreed to, from the client's first acceptable offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client said it resets its compressor after each message (echoed back).
    pub client_no_context_takeover: bool,
    /// The window the server's compressor may use (8..=15). 8 cannot be honoured by zlib's raw
    /// deflate; the server then sends its messages uncompressed, which the extension allows.
    pub server_max_window_bits: u8,
}

impl Params {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response_header(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        s
    }
}

/// Picks the first acceptable permessage-deflate offer among the `Sec-WebSocket-Extensions`
/// header values; `None` when there is none (the connection then runs uncompressed).
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Params> {
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in split_outside_quotes(text, ',') {
            if let Some(params) = accept_offer(offer) {
                return Some(params);
            }
        }
    }
    None
}

/// One offer: `permessage-deflate; param; param=value`. Unknown, repeated or malformed
/// parameters make the whole offer unacceptable (RFC 7692 section 7.1).
fn accept_offer(offer: &str) -> Option<Params> {
    let mut parts = split_outside_quotes(offer, ';').into_iter();
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("permessage-deflate")
    {
        return None;
    }
    let mut params = Params {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
    };
    let (mut seen_snct, mut seen_cnct, mut seen_smwb, mut seen_cmwb) = (false, false, false, false);
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (part.trim(), None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if !seen_snct && value.is_none() => {
                seen_snct = true;
                params.server_no_context_takeover = true;
            }
            "client_no_context_takeover" if !seen_cnct && value.is_none() => {
                seen_cnct = true;
                params.client_no_context_takeover = true;
            }
            "server_max_window_bits" if !seen_smwb => {
                seen_smwb = true;
                params.server_max_window_bits = window_bits(value?)?;
            }
            // The client may limit its own window: our decompressor's 15-bit window reads any
            // smaller one, so nothing is sent back.
            "client_max_window_bits" if !seen_cmwb => {
                seen_cmwb = true;
                if let Some(v) = value {
                    window_bits(v)?;
                }
            }
            _ => return None,
        }
    }
    Some(params)
}

fn window_bits(v: &str) -> Option<u8> {
    // A decimal integer without leading zeros (RFC 7692 section 7.1.2.1).
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

fn unquote(v: &str) -> Option<&str> {
    if let Some(inner) = v.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        (!inner.contains(['"', '\\'])).then_some(inner)
    } else {
        Some(v)
    }
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Empty stored block that a sync flush ends with; stripped by the sender, re-appended by the
/// receiver (RFC 7692 section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Messages shorter than this go out uncompressed: deflate would not make them smaller.
const MIN_COMPRESS: usize = 32;

/// A connection's compression state. The zlib streams are made on first use: a connection
/// that never sends (or receives) a compressed message never pays for them.
pub struct Codec {
    params: Params,
    deflate: Option<Compress>,
    inflate: Option<Decompress>,
}

/// The decompressed message would exceed the size limit.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    TooBig,
    Corrupt,
}

impl Codec {
    pub fn new(params: Params) -> Self {
        Codec {
            params,
            deflate: None,
            inflate: None,
        }
    }

    /// Whether to compress an outgoing payload of `len` bytes.
    pub fn should_compress(&self, len: usize) -> bool {
        len >= MIN_COMPRESS && self.params.server_max_window_bits > 8
    }

    /// Compresses one whole message into `out` (cleared first), without the sync-flush tail.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let bits = self.params.server_max_window_bits;
        let z = self.deflate.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::default(), false, bits)
        });
        let mut input = input;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(input.len() / 2 + 256);
            }
            let before = z.total_in();
            let res = z.compress_vec(input, out, FlushCompress::Sync);
            input = &input[(z.total_in() - before) as usize..];
            // The flush is complete once zlib returns with output space left over.
            if res.is_err() || (input.is_empty() && out.len() < out.capacity()) {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.params.server_no_context_takeover {
            z.reset();
        }
    }

    /// Decompresses one frame's payload of a compressed message, appending to `out`. `fin`
    /// marks the message's last frame. Fails when `out` would grow past `max` bytes.
    pub fn decompress(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), InflateError> {
        let z = self
            .inflate
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        feed(z, input, out, max)?;
        if fin {
            feed(z, &TAIL, out, max)?;
        }
        Ok(())
    }
}

fn feed(
    z: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), InflateError> {
    let mut input = input;
    loop {
        if out.len() > max {
            return Err(InflateError::TooBig);
        }
        if out.capacity() - out.len() < 1024 {
            // Grow geometrically, but never far past the limit.
            let room = max.saturating_add(1).saturating_sub(out.len());
            let want = (input.len() * 4).max(out.len()).max(4096).min(room);
            out.reserve(want.max(1024));
        }
        let (in0, out0) = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let consumed = (z.total_in() - in0) as usize;
        let produced = z.total_out() - out0;
        input = &input[consumed..];
        if status == Status::StreamEnd {
            // The client ended its deflate stream (a final block): start a new one.
            z.reset(false);
            if !input.is_empty() {
                continue;
            }
        }
        if out.len() > max {
            return Err(InflateError::TooBig);
        }
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if consumed == 0 && produced == 0 && out.len() < out.capacity() {
            return Err(InflateError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(values: &[&str]) -> Option<Params> {
        negotiate(values.iter().map(|v| v.as_bytes()))
    }

    fn plain() -> Params {
        Params {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
        }
    }

    #[test]
    fn plain_offer() {
        let p = neg(&["permessage-deflate"]).unwrap();
        assert_eq!(p, plain());
        assert_eq!(p.response_header(), "permessage-deflate");
    }

    #[test]
    fn browser_offer() {
        let p = neg(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(p, plain());
    }

    #[test]
    fn all_parameters() {
        let p = neg(&[
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9",
        ])
        .unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(
            p.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        );
        let p = neg(&["permessage-deflate; server_max_window_bits=\"12\""]).unwrap();
        assert_eq!(p.server_max_window_bits, 12);
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=20",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(neg(&[bad]), None, "{bad}");
            let p = neg(&[&format!(
                "{bad}, permessage-deflate; server_no_context_takeover"
            )]);
            assert!(p.unwrap().server_no_context_takeover, "{bad}");
        }
        assert_eq!(neg(&["foo", "bar"]), None);
        let p = neg(&["foo", "permessage-deflate"]);
        assert_eq!(p, Some(plain()), "offers may span header lines");
    }

    #[test]
    fn roundtrip_with_context_takeover() {
        for params in [
            plain(),
            Params {
                server_no_context_takeover: true,
                server_max_window_bits: 9,
                ..plain()
            },
        ] {
            let mut tx = Codec::new(params);
            let mut rx = Codec::new(plain());
            let mut wire = Vec::new();
            for i in 0..5 {
                let msg = format!("message {i} ").repeat(50 + i * 100);
                tx.compress(msg.as_bytes(), &mut wire);
                assert!(wire.len() < msg.len() / 4);
                let mut out = Vec::new();
                // Split the payload as fragments would.
                let (a, b) = wire.split_at(wire.len() / 2);
                rx.decompress(a, false, &mut out, 1 << 20).unwrap();
                rx.decompress(b, true, &mut out, 1 << 20).unwrap();
                assert_eq!(out, msg.as_bytes());
            }
        }
    }

    #[test]
    fn empty_message() {
        let mut c = Codec::new(plain());
        let mut wire = Vec::new();
        c.compress(b"", &mut wire);
        let mut out = Vec::new();
        c.decompress(&wire, true, &mut out, 10).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn size_limit_applies_to_decompressed_size() {
        let mut tx = Codec::new(plain());
        let mut wire = Vec::new();
        tx.compress(&vec![b'a'; 100_000], &mut wire);
        let mut rx = Codec::new(plain());
        let mut out = Vec::new();
        assert_eq!(
            rx.decompress(&wire, true, &mut out, 50_000),
            Err(InflateError::TooBig)
        );
        assert!(out.len() < 200_000);
    }

    #[test]
    fn corrupt_input() {
        let mut rx = Codec::new(plain());
        let mut out = Vec::new();
        assert_eq!(
            rx.decompress(&[0xFF; 16], true, &mut out, 1000),
            Err(InflateError::Corrupt)
        );
    }
}
