//! A strict check of HTTP/1.1 message framing on the raw byte stream, ahead of hyper.
//!
//! hyper's parser is lenient where request smuggling lives (bare LF, chunk-size whitespace,
//! chunk extensions, trailer fields, a Content-Length next to Transfer-Encoding, which it drops
//! silently). This checker follows every request on a connection byte by byte, knows where each
//! message ends, and stops the connection at the first byte that breaks RFC 9112. Nothing it
//! rejects ever reaches hyper, so no second request can be smuggled behind it.
//!
//! It holds no message: [`Framing::feed`] says how many of the bytes fed so far may go to hyper
//! (a head only once it is complete and valid; body bytes as soon as they are checked).

use http::StatusCode;

use super::limits::Refusal;

/// The largest request head accepted, whatever the limits say.
pub const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    RequestLine,
    Header,
    /// A body of known length: this many bytes left.
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data; the count is how many of its bytes were seen.
    ChunkEnd(u8),
    Trailer,
    /// After an upgrade or CONNECT request: what follows is either another protocol (once
    /// the server switches) or nothing the server reads (a response to such a request that
    /// does not switch closes the connection). Held back, never released unchecked.
    Held,
}

/// What the current request head said about framing.
#[derive(Debug, Default)]
struct Head {
    http10: bool,
    hosts: u32,
    content_length: Option<u64>,
    lengths: u32,
    chunked: bool,
    /// A registered transfer coding (gzip, ...) applied before the final `chunked`: a body
    /// framed as it should be, in a coding rsgi does not decode (501).
    unimplemented_coding: bool,
    codings: u32,
    upgrade: bool,
    connect: bool,
}

/// How far the request line being read has got: which of its three parts, and how many
/// bytes of that part. The line is checked as it arrives, so bytes that cannot be a request
/// (a TLS handshake on the plain port, binary junk) are refused at once, not after the
/// head-read timeout.
#[derive(Debug, Default, Clone, Copy)]
struct LineScan {
    /// 0: method, 1: request target, 2: HTTP version.
    part: u8,
    len: usize,
}

#[derive(Debug)]
pub struct Framing {
    state: State,
    /// The line being read (bounded by [`MAX_HEAD`]), without its CRLF.
    line: Vec<u8>,
    scan: LineScan,
    /// A CR ended the previous byte: the next must be LF.
    after_cr: bool,
    head: Head,
    head_len: usize,
    /// Bytes fed so far that hyper may have.
    released: u64,
    fed: u64,
    /// Request heads released so far: hyper makes one request of each.
    heads: u64,
    /// The longest request line accepted (`--limit-request-line`, at most [`MAX_HEAD`]).
    line_limit: usize,
}

impl Default for Framing {
    fn default() -> Self {
        Framing::new(MAX_HEAD)
    }
}

impl Framing {
    /// A check for a new connection, refusing request lines over `line_limit` bytes.
    pub fn new(line_limit: usize) -> Self {
        Framing {
            state: State::RequestLine,
            // Grown by the first line: a connection that sent a few bytes holds a few bytes.
            line: Vec::new(),
            scan: LineScan::default(),
            after_cr: false,
            head: Head::default(),
            head_len: 0,
            released: 0,
            fed: 0,
            heads: 0,
            line_limit: line_limit.min(MAX_HEAD),
        }
    }

    /// Checks the next bytes of the stream. Returns how many more bytes (counted from the start
    /// of everything fed before) hyper may now have, or the violation that ends the connection.
    pub fn feed(&mut self, data: &[u8]) -> Result<u64, Refusal> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Held => {
                    self.fed += (data.len() - i) as u64;
                    break;
                }
                State::Fixed(left) | State::ChunkData(left) => {
                    let n = left.min((data.len() - i) as u64);
                    i += n as usize;
                    self.fed += n;
                    self.released = self.fed;
                    let left = left - n;
                    self.state = match (self.state, left) {
                        (State::Fixed(_), 0) => self.after_message(),
                        (State::Fixed(_), l) => State::Fixed(l),
                        (_, 0) => State::ChunkEnd(0),
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::ChunkEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if data[i] != want {
                        return Err(bad("chunk data longer than its size"));
                    }
                    i += 1;
                    self.fed += 1;
                    self.released = self.fed;
                    self.state = if seen == 0 {
                        State::ChunkEnd(1)
                    } else {
                        State::ChunkSize
                    };
                }
                _ => {
                    // Bytes up to the next CR or LF only extend the line: take them at once.
                    let rest = &data[i..];
                    let run = if self.after_cr {
                        0
                    } else {
                        memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len())
                    };
                    if run > 0 {
                        self.line_run(&rest[..run])?;
                        i += run;
                        self.fed += run as u64;
                        continue;
                    }
                    let byte = data[i];
                    i += 1;
                    self.fed += 1;
                    self.line_byte(byte)?;
                }
            }
        }
        Ok(self.released)
    }

    /// Bytes of a line that hold no CR or LF, and do not follow a CR.
    fn line_run(&mut self, run: &[u8]) -> Result<(), Refusal> {
        if self.state == State::RequestLine {
            if self.line.len() + run.len() > self.line_limit {
                return Err(LINE_TOO_LONG);
            }
            self.scan_request_line(run)?;
        }
        if self.matches_head() {
            self.head_len += run.len();
            if self.head_len > MAX_HEAD {
                return Err(self.head_too_large());
            }
        }
        if self.line.len() + run.len() > MAX_HEAD {
            return Err(Refusal(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "line too long",
            ));
        }
        self.line.extend_from_slice(run);
        Ok(())
    }

    /// Checks the next bytes of a request line (no CR or LF among them) as they arrive: each
    /// must be able to continue `method SP request-target SP HTTP/1.x`.
    fn scan_request_line(&mut self, mut run: &[u8]) -> Result<(), Refusal> {
        loop {
            let scan = &mut self.scan;
            // How many bytes of `run` the current part takes; a space ends it.
            let (taken, why) = match scan.part {
                0 => (
                    run.iter().take_while(|&&b| is_tchar(b)).count(),
                    "malformed method",
                ),
                1 => (
                    run.iter().take_while(|&&b| is_target_byte(b)).count(),
                    "malformed request target",
                ),
                _ => {
                    let n = run.iter().position(|&b| b == b' ').unwrap_or(run.len());
                    if !version_fits(scan.len, &run[..n]) {
                        return Err(bad("unsupported HTTP version"));
                    }
                    (n, "malformed request line")
                }
            };
            scan.len += taken;
            match run.get(taken) {
                None => return Ok(()),
                // A space ends a part, which must not be empty; only two may come.
                Some(b' ') if scan.len > 0 && scan.part < 2 => {
                    scan.part += 1;
                    scan.len = 0;
                    run = &run[taken + 1..];
                }
                Some(b' ') => return Err(bad("malformed request line")),
                Some(_) => return Err(bad(why)),
            }
        }
    }

    /// One byte of a line-oriented part: the head, a chunk-size line, a trailer line.
    fn line_byte(&mut self, byte: u8) -> Result<(), Refusal> {
        if self.matches_head() {
            self.head_len += 1;
            if self.head_len > MAX_HEAD {
                return Err(self.head_too_large());
            }
        }
        if self.after_cr {
            if byte != b'\n' {
                return Err(bad("bare CR"));
            }
            self.after_cr = false;
            let line = std::mem::take(&mut self.line);
            let result = self.end_line(&line);
            self.line = line;
            self.line.clear();
            return result;
        }
        match byte {
            b'\r' => self.after_cr = true,
            b'\n' => return Err(bad("bare LF")),
            _ if self.state == State::RequestLine && self.line.len() >= self.line_limit => {
                return Err(LINE_TOO_LONG);
            }
            _ if self.line.len() < MAX_HEAD => {
                if self.state == State::RequestLine {
                    self.scan_request_line(&[byte])?;
                }
                self.line.push(byte);
            }
            _ => {
                return Err(Refusal(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "line too long",
                ))
            }
        }
        Ok(())
    }

    /// How many bytes hyper may have. After a violation, these are the bytes before the
    /// message it broke: whole requests (or, inside a body, its checked part), which are
    /// answered before the refusal.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// How many request heads have been released; after a violation in a head, also the
    /// index (from 0) of the refused one.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Inside a request body (chunked framing), where hyper reads body bytes.
    pub fn in_body(&self) -> bool {
        matches!(
            self.state,
            State::ChunkSize | State::ChunkData(_) | State::ChunkEnd(_) | State::Trailer
        )
    }

    /// What a head past [`MAX_HEAD`] is refused with: while its request line is still being
    /// read, only the line can be too long (414); once the line is complete, it is the
    /// header fields (431).
    fn head_too_large(&self) -> Refusal {
        if self.state == State::RequestLine {
            LINE_TOO_LONG
        } else {
            Refusal(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            )
        }
    }

    fn matches_head(&self) -> bool {
        matches!(self.state, State::RequestLine | State::Header)
    }

    fn end_line(&mut self, line: &[u8]) -> Result<(), Refusal> {
        match self.state {
            State::RequestLine if line.is_empty() => {
                // RFC 9112 2.2: empty lines before a request line are ignored.
                self.released = self.fed;
                self.head_len = 0;
                Ok(())
            }
            State::RequestLine => {
                let scan = std::mem::take(&mut self.scan);
                self.head = Head::default();
                request_line(line, scan, &mut self.head)?;
                self.state = State::Header;
                Ok(())
            }
            State::Header if line.is_empty() => self.end_head(),
            State::Header => header(line, &mut self.head),
            State::ChunkSize => {
                let size = chunk_size(line)?;
                self.released = self.fed;
                self.state = if size == 0 {
                    State::Trailer
                } else {
                    State::ChunkData(size)
                };
                Ok(())
            }
            State::Trailer if line.is_empty() => {
                self.released = self.fed;
                self.state = self.after_message();
                Ok(())
            }
            State::Trailer => {
                trailer(line)?;
                self.released = self.fed;
                Ok(())
            }
            _ => unreachable!("line_byte only runs in line states"),
        }
    }

    /// The head is complete: decide how the body is framed.
    fn end_head(&mut self) -> Result<(), Refusal> {
        let h = &self.head;
        if h.codings > 1 || (h.codings == 1 && (h.lengths > 0 || h.http10)) {
            return Err(bad("ambiguous Transfer-Encoding"));
        }
        if h.unimplemented_coding {
            return Err(Refusal(
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than chunked",
            ));
        }
        if h.lengths > 1 {
            return Err(bad("duplicate Content-Length"));
        }
        if h.hosts > 1 || (h.hosts == 0 && !h.http10) {
            return Err(bad("missing or repeated Host"));
        }
        self.released = self.fed;
        self.heads += 1;
        self.head_len = 0;
        // The body of an upgrade request is framed and checked like any other: only a
        // switch the server makes ends HTTP on this connection.
        self.state = if h.chunked {
            State::ChunkSize
        } else {
            match h.content_length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => self.after_message(),
            }
        };
        Ok(())
    }

    /// Where the stream goes once a request (head and body) is complete.
    fn after_message(&self) -> State {
        if self.head.upgrade || self.head.connect {
            State::Held
        } else {
            State::RequestLine
        }
    }

    /// Past an upgrade or CONNECT request: bytes are kept back unchecked, for the protocol
    /// the connection may switch to.
    pub fn held(&self) -> bool {
        self.state == State::Held
    }
}

const LINE_TOO_LONG: Refusal = Refusal(StatusCode::URI_TOO_LONG, "request line too long");

fn bad(why: &'static str) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, why)
}

/// Which bytes belong to a class: ASCII letters and digits, and `others`. A lookup per byte
/// where a chain of comparisons would cost several (every head goes through these).
const fn byte_class(others: &[u8]) -> [bool; 256] {
    let mut class = [false; 256];
    let mut b = 0;
    while b < 256 {
        class[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < others.len() {
        class[others[i] as usize] = true;
        i += 1;
    }
    class
}

static TCHAR: [bool; 256] = byte_class(b"!#$%&'*+-.^_`|~");
/// unreserved and sub-delims (RFC 3986 2.2-2.3): what a reg-name holds besides `%XX`.
static REG_NAME: [bool; 256] = byte_class(b"-._~!$&'()*+,;=");

fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Field-value bytes: visible ASCII, SP, HTAB, and obs-text.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Request-target bytes: visible ASCII and obs-text.
fn is_target_byte(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) || b >= 0x80
}

/// Whether `part`, from offset `at` of the version part, can belong to `HTTP/1.1` or
/// `HTTP/1.0`.
fn version_fits(at: usize, part: &[u8]) -> bool {
    let Some(want) = b"HTTP/1.1".get(at..at + part.len()) else {
        return false;
    };
    match (part.split_last(), want.split_last()) {
        (Some((&b'0', head)), Some((_, want_head))) if at + part.len() == 8 => head == want_head,
        _ => part == want,
    }
}

/// The whole request line, whose bytes [`Framing::scan_request_line`] checked as they came.
fn request_line(line: &[u8], scan: LineScan, head: &mut Head) -> Result<(), Refusal> {
    if scan.part != 2 {
        return Err(bad("malformed request line"));
    }
    if scan.len != 8 {
        return Err(bad("unsupported HTTP version"));
    }
    head.http10 = line.ends_with(b"1.0");
    head.connect = line.starts_with(b"CONNECT ");
    Ok(())
}

fn header(line: &[u8], head: &mut Head) -> Result<(), Refusal> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(bad("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(bad("header line without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad("malformed header name"));
    }
    if !value.iter().all(|&b| is_field_byte(b)) {
        return Err(bad("control character in a header value"));
    }
    let value = trim_ows(value);
    if name.eq_ignore_ascii_case(b"host") {
        head.hosts += 1;
        if !is_valid_host(value) {
            return Err(bad("invalid Host"));
        }
    } else if name.eq_ignore_ascii_case(b"content-length") {
        head.lengths += 1;
        if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
            return Err(bad("malformed Content-Length"));
        }
        head.content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        head.codings += 1;
        transfer_encoding(&line[colon + 1..], head)?;
    } else if name.eq_ignore_ascii_case(b"upgrade") {
        head.upgrade = true;
    }
    Ok(())
}

/// Strict on purpose: `chunked` after one optional space, nothing around it, so that no proxy
/// in front can read this field differently. A list whose final coding is not `chunked` leaves
/// the body length unknown: 400 (RFC 9112 6.3). A registered coding before the final
/// `chunked` is framed right but not decoded here: 501 when the head ends.
fn transfer_encoding(after_colon: &[u8], head: &mut Head) -> Result<(), Refusal> {
    let raw = after_colon.strip_prefix(b" ").unwrap_or(after_colon);
    if raw.eq_ignore_ascii_case(b"chunked") {
        head.chunked = true;
        return Ok(());
    }
    let codings: Vec<&[u8]> = raw.split(|&b| b == b',').map(trim_ows).collect();
    let tidy =
        raw.first().is_some_and(|&b| is_tchar(b)) && raw.last().is_some_and(|&b| is_tchar(b));
    if !tidy
        || codings
            .iter()
            .any(|c| c.is_empty() || !c.iter().all(|&b| is_tchar(b)))
    {
        return Err(bad("malformed Transfer-Encoding"));
    }
    let Some((last, before)) = codings.split_last() else {
        return Err(bad("malformed Transfer-Encoding"));
    };
    if !last.eq_ignore_ascii_case(b"chunked") {
        return Err(bad("final transfer coding is not chunked"));
    }
    if before.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) {
        return Err(bad("chunked applied twice"));
    }
    if !before.iter().all(|c| is_registered_coding(c)) {
        return Err(bad("unknown transfer coding"));
    }
    head.unimplemented_coding = true;
    Ok(())
}

/// Transfer codings of the IANA registry besides `chunked` (RFC 9112 7).
fn is_registered_coding(c: &[u8]) -> bool {
    ["gzip", "deflate", "compress", "x-gzip", "x-compress"]
        .iter()
        .any(|k| c.eq_ignore_ascii_case(k.as_bytes()))
}

/// `uri-host [ ":" port ]` (RFC 9112 3.2, RFC 3986 3.2.2-3.2.3): a bracketed IP literal, or
/// a reg-name (which IPv4 addresses are too), then digits after an optional colon. An empty
/// value is what a client sends for a target without an authority.
fn is_valid_host(v: &[u8]) -> bool {
    let port = if let Some(literal) = v.strip_prefix(b"[") {
        let Some(close) = memchr::memchr(b']', literal) else {
            return false;
        };
        if !is_ip_literal(&literal[..close]) {
            return false;
        }
        &literal[close + 1..]
    } else {
        // One pass over the common name; `%XX` escapes take the slower, exact one.
        let plain = v.iter().take_while(|&&b| REG_NAME[b as usize]).count();
        let end = if v.get(plain) == Some(&b'%') {
            let colon = memchr::memchr(b':', v).unwrap_or(v.len());
            if !is_reg_name(&v[..colon]) {
                return false;
            }
            colon
        } else {
            plain
        };
        &v[end..]
    };
    match port.split_first() {
        None => true,
        Some((&b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// `*( unreserved / pct-encoded / sub-delims )`
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                let hex = name.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if REG_NAME[b as usize] => i += 1,
            _ => return false,
        }
    }
    true
}

/// Inside the brackets: an IPv6 address, or `"v" 1*HEXDIG "." 1*( unreserved / sub-delims /
/// ":" )` (IPvFuture).
fn is_ip_literal(inner: &[u8]) -> bool {
    if let Some(future) = inner.strip_prefix(b"v").or(inner.strip_prefix(b"V")) {
        let digits = future.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        return match future[digits..].split_first() {
            Some((&b'.', rest)) if digits > 0 && !rest.is_empty() => {
                rest.iter().all(|&b| REG_NAME[b as usize] || b == b':')
            }
            _ => false,
        };
    }
    std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// `1*HEXDIG *( ";" token [ "=" ( token / quoted-string ) ] )`, no whitespace anywhere.
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad("invalid chunk size"));
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap_or("x"), 16)
        .map_err(|_| bad("invalid chunk size"))?;
    chunk_extensions(&line[digits..])?;
    Ok(size)
}

fn chunk_extensions(mut rest: &[u8]) -> Result<(), Refusal> {
    let invalid = || bad("invalid chunk extension");
    while !rest.is_empty() {
        rest = rest.strip_prefix(b";").ok_or_else(invalid)?;
        let name = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 {
            return Err(invalid());
        }
        rest = &rest[name..];
        if let Some(value) = rest.strip_prefix(b"=") {
            rest = if let Some(quoted) = value.strip_prefix(b"\"") {
                let end = quoted_end(quoted).ok_or_else(invalid)?;
                &quoted[end + 1..]
            } else {
                let n = value.iter().take_while(|&&b| is_tchar(b)).count();
                if n == 0 {
                    return Err(invalid());
                }
                &value[n..]
            };
        }
    }
    Ok(())
}

/// Index of the closing quote of a quoted-string body, honouring backslash escapes.
fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i),
            b'\\' => i += 2,
            b if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 => i += 1,
            _ => return None,
        }
    }
    None
}

/// Fields that must not appear in a chunked trailer (RFC 9110 6.5.1): framing, routing,
/// authentication and control data the message was already processed with.
const FORBIDDEN_TRAILERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "content-type",
    "content-encoding",
    "content-range",
    "trailer",
    "te",
    "connection",
    "keep-alive",
    "upgrade",
    "expect",
    "range",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "cache-control",
    "max-forwards",
];

fn trailer(line: &[u8]) -> Result<(), Refusal> {
    let mut ignored = Head::default();
    header(line, &mut ignored)?;
    let colon = line.iter().position(|&b| b == b':').unwrap_or(0);
    let name = &line[..colon];
    if FORBIDDEN_TRAILERS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
    {
        return Err(bad("forbidden trailer field"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stream: &[u8]) -> Result<u64, Refusal> {
        Framing::default().feed(stream)
    }

    fn status(stream: &[u8]) -> u16 {
        check(stream).expect_err("should be refused").0.as_u16()
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn pipelined_requests_are_released_whole() {
        let mut stream = GET.to_vec();
        stream.extend_from_slice(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        stream.extend_from_slice(b"GET / HT");
        assert_eq!(check(&stream).unwrap(), (stream.len() - 8) as u64);
    }

    /// Feeds `stream` in reads of `size` bytes; the verdict after the last read.
    fn in_reads(stream: &[u8], size: usize) -> Result<u64, Refusal> {
        in_reads_with(Framing::default(), stream, size)
    }

    fn in_reads_with(mut f: Framing, stream: &[u8], size: usize) -> Result<u64, Refusal> {
        let mut released = Ok(0);
        for part in stream.chunks(size) {
            released = f.feed(part);
            if released.is_err() {
                break;
            }
        }
        released
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_verdict() {
        let long_line = [b"GET /".as_slice(), &[b'a'; MAX_HEAD], b" HTTP/1.1\r\n\r\n"].concat();
        let many_fields = [
            b"GET / HTTP/1.1\r\nHost: a\r\n".as_slice(),
            &b"X-Field: 0123456789012345678901234567890123456789\r\n".repeat(MAX_HEAD / 48),
            b"\r\n",
        ]
        .concat();
        let streams: [&[u8]; 8] = [
            GET,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HT",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            &long_line,
            &many_fields,
        ];
        for stream in streams {
            let whole = check(stream);
            for size in [1, 2, 3, 7, 64, 4096] {
                assert_eq!(in_reads(stream, size), whole, "reads of {size} bytes");
            }
        }
        assert_eq!(check(&long_line).unwrap_err().0, 414);
        assert_eq!(check(&many_fields).unwrap_err().0, 431);
    }

    /// The status says what is too long, at every size: the request line (414, past
    /// `--limit-request-line` or 64 KiB), or the header fields (431, past 64 KiB in all).
    #[test]
    fn request_line_or_fields_too_long() {
        let line = |n: usize| {
            let target = "a".repeat(n - "GET / HTTP/1.1".len());
            format!("GET /{target} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes()
        };
        let limited = |stream: &[u8]| Framing::new(40).feed(stream);
        // What the limit in `Limits` checked once hyper had parsed the head.
        assert!(limited(&line(40)).is_ok());
        assert_eq!(limited(&line(41)).unwrap_err().0, 414);
        for size in [8191, 60_000, MAX_HEAD - 1, MAX_HEAD, MAX_HEAD + 1, 200_000] {
            let mut f = Framing::new(8190);
            assert_eq!(f.feed(&line(size)).unwrap_err().0, 414, "{size}");
            for reads in [1, 1000] {
                let verdict = in_reads_with(Framing::new(8190), &line(size), reads);
                assert_eq!(verdict.unwrap_err().0, 414, "{size} in reads of {reads}");
            }
        }
        // Not over the limit, but with fields the head passes 64 KiB: the fields are too long.
        let long_line_then_fields = [
            &line(8000)[..8000],
            b"\r\nHost: a\r\n",
            &b"X-F: 0123456789012345678901234567890123456789012345\r\n".repeat(1300),
            b"\r\n",
        ]
        .concat();
        assert_eq!(
            Framing::new(8190)
                .feed(&long_line_then_fields)
                .unwrap_err()
                .0,
            431
        );
        // With no limit set, a line of exactly 64 KiB still cannot fit a head: 414 too.
        assert_eq!(
            Framing::new(usize::MAX)
                .feed(&line(MAX_HEAD))
                .unwrap_err()
                .0,
            414
        );
    }

    #[test]
    fn a_violation_keeps_what_was_released_before_it() {
        let mut stream = GET.to_vec();
        stream.extend_from_slice(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
        let good = stream.len() as u64;
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let mut f = Framing::default();
        assert_eq!(f.feed(&stream).unwrap_err().0, 400);
        assert_eq!(f.released(), good);
        assert_eq!(f.heads(), 2, "the refused head is the third");
        assert!(!f.in_body());

        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut f = Framing::default();
        assert!(f
            .feed(&[&head[..], b"3\r\nabc\r\nzz\r\n"].concat())
            .is_err());
        assert_eq!(f.released(), head.len() as u64 + 8);
        assert_eq!(f.heads(), 1);
        assert!(f.in_body());
    }

    #[test]
    fn heads_split_across_reads() {
        let mut f = Framing::default();
        assert_eq!(f.feed(&GET[..1]).unwrap(), 0);
        assert!(f.line.capacity() < 64, "a byte of a head holds a few bytes");
        assert_eq!(f.feed(&GET[1..10]).unwrap(), 0);
        assert_eq!(f.feed(&GET[10..]).unwrap(), GET.len() as u64);
    }

    #[test]
    fn chunked_body_and_trailer() {
        let s = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d e\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(check(s).unwrap(), s.len() as u64);
    }

    #[test]
    fn framing_conflicts() {
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            400
        );
        assert_eq!(status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        for final_not_chunked in [
            &b"gzip"[..],
            b"identity",
            b"xchunked",
            b"chunked, gzip",
            b"chunkedx",
        ] {
            let s = [
                &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "[..],
                final_not_chunked,
                b"\r\n\r\n",
            ]
            .concat();
            assert_eq!(status(&s), 400, "{}", String::from_utf8_lossy(&s));
        }
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo, chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-gzip, deflate, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"),
            400
        );
    }

    #[test]
    fn line_endings_and_bytes() {
        assert_eq!(status(b"GET / HTTP/1.1\nHost: a\n\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
            400
        );
        assert_eq!(status(b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn chunk_lines() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for bad in [
            &b"zz\r\n"[..],
            b"5 \r\n",
            b"5\t\r\n",
            b"\r\n",
            b"ffffffffffffffffff\r\n",
            b"5;\x01\r\n",
            b"5;a=\"b\r\n",
            b"3\r\nhello\r\n",
            b"0\r\nHost: x\r\n\r\n",
        ] {
            let mut s = head.clone();
            s.extend_from_slice(bad);
            assert_eq!(status(&s), 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn what_cannot_start_a_request_is_refused_at_once() {
        // No line end needed: the first byte that cannot continue a request line decides.
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"\x00\x01\x02",
            b"GE(T",
            b" GET",
            b"GET  /",
            b"GET /a\x7f",
            b"GET /\tb",
            b"GET / HTTP/2",
            b"GET / http/1.1",
            b"GET / HTTP/1.10",
            b"GET / HTTP/1.1 ",
        ] {
            let what = String::from_utf8_lossy(junk);
            assert_eq!(status(junk), 400, "{what}");
            for size in [1, 2, 3] {
                assert_eq!(
                    in_reads(junk, size).unwrap_err().0,
                    400,
                    "{what} in {size}s"
                );
            }
        }
        // Beginnings of a request wait for the rest.
        for start in [
            &b"G"[..],
            b"\r\nGET",
            b"M-SEARCH * HTTP/1.",
            b"GET /\xc3\xa9?q=%20 HTTP/1.0",
        ] {
            assert!(check(start).is_ok(), "{}", String::from_utf8_lossy(start));
        }
        // Parts missing when the line ends.
        assert_eq!(status(b"GET /\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.\r\n"), 400);
    }

    #[test]
    fn host_values() {
        let head = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        for good in [
            "",
            "a",
            "example.com:8080",
            "127.0.0.1",
            "h:",
            "[::1]",
            "[2001:db8::7]:443",
            "[::ffff:192.0.2.1]",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a%20b",
            "sub_delims!$&'()*+,;=~",
        ] {
            assert!(check(&head(good)).is_ok(), "{good:?}");
        }
        for bad in [
            "a b", "a@b", "a/b", "a?b", "a#b", "a:b", "a:80:80", "[::1", "[::1]x", "[::1]:8a",
            "[1.2.3]", "[v1.]", "[vz.a]", "a%2", "a%zz", "a\"b", "a\\b", "a{b}", "\u{e9}",
        ] {
            assert_eq!(status(&head(bad)), 400, "{bad:?}");
        }
    }

    #[test]
    fn bytes_after_an_upgrade_request_are_held_back() {
        let head: &[u8] =
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let mut f = Framing::default();
        assert_eq!(
            f.feed(&[head, b"\x81\x05\x00\n\n"].concat()).unwrap(),
            head.len() as u64
        );
        assert!(f.held());
        assert_eq!(f.feed(b"\r\n\x00").unwrap(), head.len() as u64);
    }

    #[test]
    fn an_upgrade_request_body_is_checked_like_any_other() {
        let head =
            b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            status(&[&head[..], b"5\t\r\nhello\r\n0\r\n\r\n"].concat()),
            400
        );
        let good = [&head[..], b"5\r\nhello\r\n0\r\n\r\n"].concat();
        let mut f = Framing::default();
        assert_eq!(
            f.feed(&[&good[..], b"GET / HT"].concat()).unwrap(),
            good.len() as u64
        );
        assert!(f.held());
        let connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 2\r\n\r\nab";
        let mut f = Framing::default();
        assert_eq!(
            f.feed(&[&connect[..], b"\x16\x03"].concat()).unwrap(),
            connect.len() as u64
        );
        assert!(f.held());
    }
}
