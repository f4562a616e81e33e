//! The RFC 6455 wire format: frame headers (section 5.2) and masking (section 5.3).

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A parsed frame header. The payload follows it in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    pub payload_len: u64,
    /// Bytes the header itself takes.
    pub header_len: usize,
}

impl Header {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// A frame the server must refuse, with the close code to refuse it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub u16);

/// Parses a client frame's header from the start of `buf`. `Ok(None)`: more bytes are needed.
/// Checks what does not depend on the connection's state: reserved bits 2 and 3, the opcode,
/// control frame rules, the masking of client frames and the length encoding.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, Invalid> {
    use super::close_code::PROTOCOL_ERROR;
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x30 != 0 {
        return Err(Invalid(PROTOCOL_ERROR));
    }
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(Invalid(PROTOCOL_ERROR));
    }
    if b1 & 0x80 == 0 {
        // Section 5.1: a server must close on an unmasked client frame.
        return Err(Invalid(PROTOCOL_ERROR));
    }
    let len7 = b1 & 0x7F;
    let (payload_len, at) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(Invalid(PROTOCOL_ERROR));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    if opcode & 0x8 != 0 && (!fin || payload_len > 125) {
        return Err(Invalid(PROTOCOL_ERROR));
    }
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    Ok(Some(Header {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len,
        header_len: at + 4,
    }))
}

/// Appends an unmasked (server) frame header.
pub fn write_header(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: u8, len: usize) {
    let b0 = (if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | opcode;
    if len < 126 {
        out.extend_from_slice(&[b0, len as u8]);
    } else if len <= u16::MAX as usize {
        let l = (len as u16).to_be_bytes();
        out.extend_from_slice(&[b0, 126, l[0], l[1]]);
    } else {
        out.extend_from_slice(&[b0, 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a whole unfragmented server frame.
pub fn write_frame(out: &mut Vec<u8>, rsv1: bool, opcode: u8, payload: &[u8]) {
    write_header(out, true, rsv1, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame; `code` 1005 (none) sends an empty payload.
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    if code == super::close_code::NO_STATUS {
        write_frame(out, false, OP_CLOSE, b"");
        return;
    }
    let reason = truncate_utf8(reason, 123);
    write_header(out, true, false, OP_CLOSE, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Unmasks (or masks) `buf` in place with `key`, starting at key offset 0.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(b) ^ wide).to_ne_bytes());
    }
    // Chunks of 8 keep the key's phase, so the tail starts again at key[0].
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// A client's frame (masked with `key`), as tests send it: first byte `b0`, then the length.
#[cfg(test)]
pub(crate) fn client_frame(b0: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let mut p = payload.to_vec();
    apply_mask(&mut p, key);
    out.extend_from_slice(&p);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(b0, payload, [1, 2, 3, 4])
    }

    #[test]
    fn parses_masked_text_frame() {
        let buf = masked(0x81, b"hello");
        let h = parse_header(&buf).unwrap().unwrap();
        assert!(h.fin && !h.rsv1);
        assert_eq!(h.opcode, OP_TEXT);
        assert_eq!(h.payload_len, 5);
        assert_eq!(h.header_len, 6);
        let mut p = buf[6..].to_vec();
        apply_mask(&mut p, h.mask);
        assert_eq!(p, b"hello");
    }

    #[test]
    fn extended_lengths() {
        let buf = masked(0x82, &[7u8; 300]);
        let h = parse_header(&buf).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (300, 8));
        let buf = masked(0x82, &vec![7u8; 70_000]);
        let h = parse_header(&buf).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (70_000, 14));
    }

    #[test]
    fn incomplete_headers_wait_for_more() {
        let buf = masked(0x82, &[7u8; 300]);
        for n in 0..8 {
            assert_eq!(parse_header(&buf[..n]), Ok(None), "{n} bytes");
        }
    }

    #[test]
    fn rejects_protocol_violations() {
        let bad = Err(Invalid(1002));
        assert_eq!(parse_header(&[0x81, 0x05]), bad, "unmasked");
        assert_eq!(parse_header(&masked(0xA1, b"x")), bad, "rsv2");
        assert_eq!(parse_header(&masked(0x83, b"x")), bad, "opcode 3");
        assert_eq!(parse_header(&masked(0x09, b"x")), bad, "fragmented ping");
        assert_eq!(parse_header(&masked(0x89, &[0; 126])), bad, "long ping");
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(parse_header(&huge), bad, "64-bit length with MSB set");
    }

    #[test]
    fn mask_roundtrip_all_lengths() {
        for len in 0..40 {
            let orig: Vec<u8> = (0..len as u8).collect();
            let mut b = orig.clone();
            apply_mask(&mut b, [9, 8, 7, 6]);
            for (i, (x, y)) in b.iter().zip(&orig).enumerate() {
                assert_eq!(*x, y ^ [9, 8, 7, 6][i % 4]);
            }
            apply_mask(&mut b, [9, 8, 7, 6]);
            assert_eq!(b, orig);
        }
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        write_close(&mut out, 1000, "bye");
        assert_eq!(out, [0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
        out.clear();
        write_close(&mut out, 1005, "ignored");
        assert_eq!(out, [0x88, 0]);
        out.clear();
        write_close(&mut out, 1000, &"é".repeat(100));
        assert_eq!(
            out[1],
            2 + 122,
            "reason cut to 123 bytes on a char boundary"
        );
    }
}
