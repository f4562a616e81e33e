//! The opening handshake (RFC 6455 section 4.2), checked on the I/O thread: an invalid upgrade
//! request is answered here and never reaches the app.

use http::header::{
    CONNECTION, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use sha1::{Digest, Sha1};

use super::deflate;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the server will answer a valid upgrade request with, once the app accepts it.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: HeaderValue,
    /// The negotiated permessage-deflate parameters, if any.
    pub deflate: Option<deflate::Params>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Not a WebSocket upgrade request: plain HTTP.
    NotUpgrade,
    /// A broken upgrade request: answer with this status. `426` carries
    /// `Sec-WebSocket-Version: 13`.
    Reject(StatusCode),
    Upgrade(Upgrade),
}

/// Whether the request asks for a WebSocket: `Connection: upgrade` and `Upgrade: websocket`
/// (the same test as uvicorn's).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, CONNECTION, "upgrade") && has_token(headers, UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Checks an upgrade request; `deflate` is whether permessage-deflate may be negotiated.
pub fn check(method: &Method, version: Version, headers: &HeaderMap, deflate: bool) -> Check {
    if !is_upgrade(headers) {
        return Check::NotUpgrade;
    }
    if method != Method::GET || version != Version::HTTP_11 {
        return Check::Reject(StatusCode::BAD_REQUEST);
    }
    let mut versions = headers.get_all(SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (None, _) => return Check::Reject(StatusCode::BAD_REQUEST),
        (Some(v), None) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Check::Reject(StatusCode::UPGRADE_REQUIRED),
    }
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.as_bytes().trim_ascii(),
        _ => return Check::Reject(StatusCode::BAD_REQUEST),
    };
    if base64_decoded_len(key) != Some(16) {
        return Check::Reject(StatusCode::BAD_REQUEST);
    }
    let deflate = if deflate {
        deflate::negotiate(
            headers
                .get_all(SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    } else {
        None
    };
    Check::Upgrade(Upgrade {
        accept: accept_key(key),
        deflate,
    })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let encoded = base64_encode(&sha.finalize());
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn base64_encode(data: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data)
}

/// The length of what canonical, padded base64 `s` decodes to; `None` if it is not that.
fn base64_decoded_len(s: &[u8]) -> Option<usize> {
    // The standard engine insists on canonical padding and zero leftover bits.
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s)
        .ok()
        .map(|v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn valid() -> Vec<(&'static str, &'static str)> {
        vec![
            ("host", "x"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ]
    }

    fn run(pairs: &[(&str, &str)]) -> Check {
        check(&Method::GET, Version::HTTP_11, &headers(pairs), true)
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn valid_request() {
        match run(&valid()) {
            Check::Upgrade(u) => {
                assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
                assert_eq!(u.deflate, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deflate_offer_negotiated_only_when_enabled() {
        let mut h = valid();
        h.push(("sec-websocket-extensions", "permessage-deflate"));
        let Check::Upgrade(u) = run(&h) else { panic!() };
        assert!(u.deflate.is_some());
        let Check::Upgrade(u) = check(&Method::GET, Version::HTTP_11, &headers(&h), false) else {
            panic!()
        };
        assert!(u.deflate.is_none());
    }

    #[test]
    fn not_an_upgrade() {
        assert_eq!(run(&[("host", "x")]), Check::NotUpgrade);
        assert_eq!(
            run(&[("upgrade", "websocket"), ("sec-websocket-key", KEY)]),
            Check::NotUpgrade,
            "Upgrade without Connection: upgrade"
        );
        assert_eq!(
            run(&[("connection", "upgrade"), ("upgrade", "h2c")]),
            Check::NotUpgrade
        );
    }

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        valid().into_iter().filter(|(k, _)| *k != name).collect()
    }

    fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut h = without(name);
        h.push((name, value));
        h
    }

    #[test]
    fn invalid_requests() {
        let bad = Check::Reject(StatusCode::BAD_REQUEST);
        assert_eq!(run(&without("sec-websocket-key")), bad);
        assert_eq!(run(&without("sec-websocket-version")), bad);
        assert_eq!(run(&with("sec-websocket-key", "short")), bad);
        assert_eq!(
            run(&with("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZR==")),
            bad
        );
        assert_eq!(run(&with("sec-websocket-key", "dGhlIHNhbXBsZSBub25j")), bad);
        let mut two_keys = valid();
        two_keys.push(("sec-websocket-key", KEY));
        assert_eq!(run(&two_keys), bad);
        let h = headers(&valid());
        assert_eq!(check(&Method::POST, Version::HTTP_11, &h, true), bad);
        assert_eq!(check(&Method::GET, Version::HTTP_10, &h, true), bad);
    }

    #[test]
    fn wrong_version_is_426() {
        let up = Check::Reject(StatusCode::UPGRADE_REQUIRED);
        assert_eq!(run(&with("sec-websocket-version", "8")), up);
        assert_eq!(run(&with("sec-websocket-version", "13, 8")), up);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_decoded_len(b"Zg=="), Some(1));
        assert_eq!(base64_decoded_len(b"Zh=="), None);
        assert_eq!(base64_decoded_len(b"Zm8="), Some(2));
        assert_eq!(base64_decoded_len(b"Zm9v"), Some(3));
        assert_eq!(base64_decoded_len(b"Zm9"), None);
        assert_eq!(base64_decoded_len(b"Z!9v"), None);
    }
}
