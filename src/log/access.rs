//! One access-log line per completed request, in one of three formats: uvicorn's default,
//! gunicorn's `%(atom)s` format, or JSON lines.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use super::{time, X_REQUEST_ID};

/// One piece of a gunicorn-style format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Atom(char),
    RequestHeader(HeaderName),
    ResponseHeader(HeaderName),
    /// `%({name}e)s`: a process environment variable.
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// uvicorn's line: `127.0.0.1:5555 - "GET / HTTP/1.1" 200`.
    Default,
    /// gunicorn's `--access-logformat` atoms.
    Atoms(Vec<Piece>),
    /// One JSON object per line.
    Json,
}

const ATOMS: &str = "hlutrmUqHsbBfaTDMLp";

impl Format {
    /// Parses a gunicorn access log format such as `%(h)s %(l)s "%(r)s" %(s)s %({x-id}i)s`.
    pub fn parse_atoms(text: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('%') {
                literal.push('%');
                rest = after;
                continue;
            }
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.find(")s").map(|end| (&r[..end], &r[end + 2..])));
            let Some((name, after)) = inner else {
                return Err(format!(
                    "access log format: expected %(name)s near {:?}",
                    truncate(rest)
                ));
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece(name)?);
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Format::Atoms(pieces))
    }

    /// Request headers a line may need, besides the ones every format may use.
    fn wanted_request_headers(&self) -> Vec<HeaderName> {
        match self {
            Format::Atoms(pieces) => pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::RequestHeader(h) => Some(h.clone()),
                    // %(u)s: the user of Basic authentication.
                    Piece::Atom('u') => Some(http::header::AUTHORIZATION),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn wanted_response_headers(&self) -> Vec<HeaderName> {
        match self {
            Format::Atoms(pieces) => pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::ResponseHeader(h) => Some(h.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn truncate(s: &str) -> &str {
    s.get(..20).unwrap_or(s)
}

fn piece(name: &str) -> Result<Piece, String> {
    if let Some(inner) = name.strip_prefix('{') {
        let (key, kind) = inner
            .rsplit_once('}')
            .ok_or_else(|| format!("access log format: bad atom %({name})s"))?;
        let header = || {
            HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("access log format: bad header name {key:?}"))
        };
        return match kind {
            "i" => Ok(Piece::RequestHeader(header()?)),
            "o" => Ok(Piece::ResponseHeader(header()?)),
            "e" => Ok(Piece::Env(key.to_owned())),
            _ => Err(format!("access log format: unknown atom %({name})s")),
        };
    }
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if ATOMS.contains(c) => Ok(Piece::Atom(c)),
        _ => Err(format!("access log format: unknown atom %({name})s")),
    }
}

/// What the I/O thread keeps of a request for its access line.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub client: String,
    pub client_host: String,
    pub method: Method,
    pub target: String,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub started: SystemTime,
}

/// A completed request, ready to format.
#[derive(Debug, Clone)]
pub struct Record {
    pub request: RequestFacts,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The access log's format and the headers it needs.
pub struct AccessLog {
    pub format: Format,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    pid: u32,
    /// Reason phrases by status, as the running Python names them (`http.HTTPStatus`, what
    /// uvicorn's line shows; they changed between Python versions). Empty: hyper's names.
    reasons: Vec<Box<str>>,
}

impl AccessLog {
    pub fn new(format: Format) -> Self {
        AccessLog {
            request_headers: format.wanted_request_headers(),
            response_headers: format.wanted_response_headers(),
            format,
            pid: std::process::id(),
            reasons: Vec::new(),
        }
    }

    /// The reason phrase of each status `(code, phrase)` for the default line.
    pub fn with_reasons(mut self, reasons: impl IntoIterator<Item = (u16, String)>) -> Self {
        for (code, phrase) in reasons {
            let at = usize::from(code);
            if at >= self.reasons.len() {
                self.reasons.resize(at + 1, Box::from(""));
            }
            self.reasons[at] = phrase.into_boxed_str();
        }
        self
    }

    fn reason(&self, status: u16) -> &str {
        match self.reasons.get(usize::from(status)) {
            Some(phrase) => phrase,
            None if self.reasons.is_empty() => http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
            None => "",
        }
    }

    /// Keeps what the line will need of the request head.
    pub fn capture(
        &self,
        client: String,
        client_host: String,
        method: &Method,
        target: &str,
        version: Version,
        headers: &HeaderMap,
    ) -> RequestFacts {
        let get = |name: &HeaderName| headers.get(name).cloned();
        RequestFacts {
            client,
            client_host,
            method: method.clone(),
            target: target.to_owned(),
            version,
            referer: get(&http::header::REFERER),
            user_agent: get(&http::header::USER_AGENT),
            request_id: headers.get(X_REQUEST_ID).cloned(),
            headers: self
                .request_headers
                .iter()
                .filter_map(|n| headers.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
            started: SystemTime::now(),
        }
    }

    pub fn capture_response(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        self.response_headers
            .iter()
            .filter_map(|n| headers.get(n).map(|v| (n.clone(), v.clone())))
            .collect()
    }

    /// Appends the line for `r` to `out`, without a line end.
    pub fn format(&self, r: &Record, out: &mut String) {
        match &self.format {
            Format::Default => {
                // uvicorn's line, reason phrase included: log parsers written for it match.
                let _ = write!(
                    out,
                    "{} - \"{} {} {}\" {}",
                    r.request.client,
                    r.request.method,
                    r.request.target,
                    version(r.request.version),
                    r.status
                );
                let reason = self.reason(r.status);
                if !reason.is_empty() {
                    out.push(' ');
                    out.push_str(reason);
                }
            }
            Format::Atoms(pieces) => {
                for p in pieces {
                    self.piece(p, r, out);
                }
            }
            Format::Json => json_line(r, out),
        }
    }

    fn piece(&self, p: &Piece, r: &Record, out: &mut String) {
        let q = &r.request;
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::RequestHeader(n) => {
                let _ = header_or_dash(find(&q.headers, n), out);
            }
            Piece::ResponseHeader(n) => {
                let _ = header_or_dash(find(&r.response_headers, n), out);
            }
            Piece::Env(name) => out.push_str(&std::env::var(name).unwrap_or_else(|_| "-".into())),
            Piece::Atom(c) => {
                let _ = match c {
                    'h' => write!(out, "{}", q.client_host),
                    'l' => write!(out, "-"),
                    'u' => {
                        let auth = find(&q.headers, &http::header::AUTHORIZATION);
                        match auth.and_then(basic_user) {
                            Some(user) => write!(out, "{user}"),
                            None => write!(out, "-"),
                        }
                    }
                    't' => write!(out, "{}", time::common_log(q.started)),
                    'r' => write!(out, "{} {} {}", q.method, q.target, version(q.version)),
                    'm' => write!(out, "{}", q.method),
                    'U' => write!(out, "{}", q.target.split('?').next().unwrap_or("")),
                    'q' => write!(out, "{}", q.target.split_once('?').map_or("", |(_, qs)| qs)),
                    'H' => write!(out, "{}", version(q.version)),
                    's' => write!(out, "{}", r.status),
                    'b' if r.bytes == 0 => write!(out, "-"),
                    'b' | 'B' => write!(out, "{}", r.bytes),
                    'f' => header_or_dash(q.referer.as_ref(), out),
                    'a' => header_or_dash(q.user_agent.as_ref(), out),
                    'T' => write!(out, "{}", r.duration.as_secs()),
                    'D' => write!(out, "{}", r.duration.as_micros()),
                    'M' => write!(out, "{}", r.duration.as_millis()),
                    // As gunicorn: whole seconds and microseconds, truncated like %(D)s.
                    'L' => write!(
                        out,
                        "{}.{:06}",
                        r.duration.as_secs(),
                        r.duration.subsec_micros()
                    ),
                    'p' => write!(out, "<{}>", self.pid),
                    _ => write!(out, "-"),
                };
            }
        }
    }
}

/// The user name of `Authorization: Basic <base64 of user:password>`, as gunicorn's %(u)s.
fn basic_user(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let user = decoded.split(|&b| b == b':').next()?;
    String::from_utf8(user.to_vec()).ok()
}

/// Standard base64, padded or not (clients differ); None on any other byte.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    base64::Engine::decode(&LENIENT, text).ok()
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

fn find<'a>(
    headers: &'a [(HeaderName, HeaderValue)],
    name: &HeaderName,
) -> Option<&'a HeaderValue> {
    headers.iter().find(|(h, _)| h == name).map(|(_, v)| v)
}

fn header_or_dash(v: Option<&HeaderValue>, out: &mut String) -> std::fmt::Result {
    match v {
        Some(v) => out.push_str(&String::from_utf8_lossy(v.as_bytes())),
        None => out.push('-'),
    }
    Ok(())
}

fn json_line(r: &Record, out: &mut String) {
    let q = &r.request;
    let (path, query) = q.target.split_once('?').unwrap_or((&q.target, ""));
    out.push('{');
    json_field(out, "timestamp", &time::iso8601(q.started), true);
    json_field(out, "level", "INFO", false);
    json_field(out, "logger", "rsgi.access", false);
    json_field(out, "client", &q.client, false);
    json_field(out, "method", q.method.as_str(), false);
    json_field(out, "path", path, false);
    json_field(out, "query", query, false);
    json_field(out, "http_version", &version(q.version)[5..], false);
    let _ = write!(
        out,
        ",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3}",
        r.status,
        r.bytes,
        r.duration.as_secs_f64() * 1000.0
    );
    let text = |v: &Option<HeaderValue>| {
        v.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    json_opt(out, "user_agent", text(&q.user_agent));
    json_opt(out, "referer", text(&q.referer));
    json_opt(out, "request_id", text(&q.request_id));
    out.push('}');
}

fn json_opt(out: &mut String, key: &str, value: Option<String>) {
    match value {
        Some(v) => json_field(out, key, &v, false),
        None => {
            let _ = write!(out, ",\"{key}\":null");
        }
    }
}

fn json_field(out: &mut String, key: &str, value: &str, first: bool) {
    if !first {
        out.push(',');
    }
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    json_string(value, out);
}

/// A JSON string literal, escaped per RFC 8259.
pub fn json_string(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("curl/8"));
        headers.insert("x-trace", HeaderValue::from_static("abc"));
        let log = AccessLog::new(Format::Default);
        let mut request = log.capture(
            "127.0.0.1:5555".into(),
            "127.0.0.1".into(),
            &Method::GET,
            "/a?b=1",
            Version::HTTP_11,
            &headers,
        );
        request.headers.push((
            HeaderName::from_static("x-trace"),
            HeaderValue::from_static("abc"),
        ));
        request.started = std::time::UNIX_EPOCH + Duration::from_secs(1_795_385_100);
        Record {
            request,
            status: 200,
            bytes: 13,
            duration: Duration::from_micros(1500),
            response_headers: vec![(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("text/plain"),
            )],
        }
    }

    fn line(log: &AccessLog) -> String {
        let mut out = String::new();
        log.format(&record(), &mut out);
        out
    }

    #[test]
    fn default_is_uvicorns_line() {
        assert_eq!(
            line(&AccessLog::new(Format::Default)),
            "127.0.0.1:5555 - \"GET /a?b=1 HTTP/1.1\" 200 OK"
        );
        // Python's phrases win, and a status Python does not name has none.
        let log = AccessLog::new(Format::Default).with_reasons([(200, "Fine".to_owned())]);
        assert_eq!(
            line(&log),
            "127.0.0.1:5555 - \"GET /a?b=1 HTTP/1.1\" 200 Fine"
        );
        let log = AccessLog::new(Format::Default).with_reasons([(404, "Gone".to_owned())]);
        assert_eq!(line(&log), "127.0.0.1:5555 - \"GET /a?b=1 HTTP/1.1\" 200");
    }

    #[test]
    fn gunicorn_atoms() {
        let f = Format::parse_atoms(r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %(L)s %({x-trace}i)s %({content-type}o)s %%"#).unwrap();
        assert_eq!(
            line(&AccessLog::new(f)),
            "127.0.0.1 - - [22/Nov/2026:22:05:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 13 \"-\" \"curl/8\" 1500 0.001500 abc text/plain %"
        );
    }

    #[test]
    fn remote_user_from_basic_auth() {
        let f = Format::parse_atoms("%(u)s").unwrap();
        let log = AccessLog::new(f);
        let mut headers = HeaderMap::new();
        // "alice:secret"
        headers.insert(
            "authorization",
            HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0"),
        );
        let mut r = record();
        r.request = log.capture(
            "-".into(),
            "-".into(),
            &Method::GET,
            "/",
            Version::HTTP_11,
            &headers,
        );
        let mut out = String::new();
        log.format(&r, &mut out);
        assert_eq!(out, "alice");
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI"), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("*"), None);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert_eq!(basic_user(&bearer), None);
    }

    #[test]
    fn bad_formats_are_errors() {
        assert!(Format::parse_atoms("%(zz)s").is_err());
        assert!(Format::parse_atoms("%(h)").is_err());
        assert!(Format::parse_atoms("%({bad header}i)s").is_err());
    }

    #[test]
    fn json_is_escaped() {
        let mut out = String::new();
        json_string("a\"b\\c\n\u{1}", &mut out);
        assert_eq!(out, r#""a\"b\\c\n\u0001""#);
        let l = line(&AccessLog::new(Format::Json));
        assert!(
            l.starts_with(r#"{"timestamp":"2026-11-22T22:05:00.000000Z","level":"INFO""#),
            "{l}"
        );
        assert!(
            l.contains(r#""status":200,"bytes":13,"duration_ms":1.500"#),
            "{l}"
        );
        assert!(
            l.ends_with(r#""user_agent":"curl/8","referer":null,"request_id":null}"#),
            "{l}"
        );
    }
}
