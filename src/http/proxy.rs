//! Proxy headers: the client address and scheme a trusted proxy reports, from RFC 7239
//! `Forwarded` or from `X-Forwarded-For` / `X-Forwarded-Proto`.
//!
//! Trust is decided per hop: starting from the connection's peer, hops are walked from the
//! right (nearest) to the left, and the first hop that is not a trusted proxy is the client.
//! A header that cannot be parsed is ignored as a whole, so the peer address stands.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use super::Endpoint;
pub use crate::handoff::head::Forwarded;

/// Who may send proxy headers (`--forwarded-allow-ips`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    any: bool,
    unix: bool,
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses a comma list of IPs, CIDRs, `*` and `unix`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut trusted = TrustedProxies::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "*" => trusted.any = true,
                "unix" => trusted.unix = true,
                _ => trusted.nets.push(parse_net(item).ok_or_else(|| {
                    format!(
                        "forwarded_allow_ips: {item:?} is not an IP address, a CIDR, '*' or 'unix'"
                    )
                })?),
            }
        }
        Ok(trusted)
    }

    fn trusts_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.any || self.nets.iter().any(|&(net, bits)| in_net(ip, net, bits))
    }

    fn trusts_peer(&self, peer: &Endpoint) -> bool {
        match peer {
            Endpoint::Tcp(host, _) => host.parse().is_ok_and(|ip| self.trusts_ip(ip)),
            Endpoint::Unix(_) | Endpoint::Unknown => self.any || self.unix,
        }
    }

    /// The forwarded client and scheme, when `peer` is trusted and says so.
    pub fn resolve(&self, peer: &Endpoint, headers: &HeaderMap) -> Option<Forwarded> {
        // Most requests carry no proxy header: skip parsing the peer's address for them.
        if !has_proxy_header(headers) || !self.trusts_peer(peer) {
            return None;
        }
        if headers.contains_key(FORWARDED) {
            if let Some(hops) = forwarded_hops(headers) {
                return self.pick(hops);
            }
        }
        let hops = x_forwarded_hops(headers)?;
        self.pick(hops)
    }

    fn pick(&self, hops: Vec<Hop>) -> Option<Forwarded> {
        let chosen = hops
            .iter()
            .rev()
            .find(|h| h.ip.is_none_or(|ip| !self.trusts_ip(ip)))
            .or_else(|| hops.first())?;
        let client = match (chosen.ip, chosen.from_for) {
            (Some(ip), _) => Some(Endpoint::Tcp(ip.to_string().into_boxed_str(), chosen.port)),
            (None, true) => Some(Endpoint::Unknown),
            (None, false) => None,
        };
        Some(Forwarded {
            client,
            scheme: chosen.scheme,
        })
    }
}

/// One hop of a forwarded chain: the address it reports and the scheme it received.
#[derive(Debug)]
struct Hop {
    /// `None` for `unknown` or an obfuscated identifier, which is never trusted.
    ip: Option<IpAddr>,
    port: u16,
    scheme: Option<&'static str>,
    /// The hop names a client (possibly `unknown`), rather than only a scheme.
    from_for: bool,
}

/// Whether any of the headers a proxy sets is present.
fn has_proxy_header(headers: &HeaderMap) -> bool {
    [FORWARDED, X_FORWARDED_FOR, X_FORWARDED_PROTO]
        .iter()
        .any(|name| headers.contains_key(name))
}

const FORWARDED: HeaderName = http::header::FORWARDED;
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn header_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out = String::new();
    for value in headers.get_all(name) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(value.to_str().ok()?);
    }
    (!out.is_empty()).then_some(out)
}

/// Hops from `X-Forwarded-For`, with schemes from `X-Forwarded-Proto`. `None` when neither
/// header is usable. A scheme without addresses applies to the peer itself: one hop, no address.
fn x_forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let schemes: Vec<&'static str> = header_text(headers, &X_FORWARDED_PROTO)
        .and_then(|p| p.split(',').map(|s| scheme(s.trim())).collect())
        .unwrap_or_default();
    let hops: Option<Vec<Hop>> = header_text(headers, &X_FORWARDED_FOR).and_then(|xff| {
        xff.split(',')
            .map(|item| {
                parse_node(item.trim()).map(|(ip, port)| Hop {
                    ip: Some(ip),
                    port,
                    scheme: None,
                    from_for: true,
                })
            })
            .collect()
    });
    let Some(mut hops) = hops else {
        return schemes.last().map(|&s| {
            vec![Hop {
                ip: None,
                port: 0,
                scheme: Some(s),
                from_for: false,
            }]
        });
    };
    // Schemes line up with hops when each proxy appended one; otherwise the nearest stands.
    if schemes.len() == hops.len() {
        for (hop, s) in hops.iter_mut().zip(schemes) {
            hop.scheme = Some(s);
        }
    } else if let Some(&s) = schemes.last() {
        for hop in &mut hops {
            hop.scheme = Some(s);
        }
    }
    Some(hops)
}

fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let text = header_text(headers, &FORWARDED)?;
    let mut hops = Vec::new();
    for element in split_outside_quotes(&text, ',') {
        let mut hop = Hop {
            ip: None,
            port: 0,
            scheme: None,
            from_for: true,
        };
        let mut has_for = false;
        for pair in split_outside_quotes(element, ';') {
            let (key, value) = pair.trim().split_once('=')?;
            let value = unquote(value.trim())?;
            match key.trim().to_ascii_lowercase().as_str() {
                "for" => {
                    has_for = true;
                    if let Some((ip, port)) = parse_node(value) {
                        hop.ip = Some(ip);
                        hop.port = port;
                    } else if !(value.eq_ignore_ascii_case("unknown") || value.starts_with('_')) {
                        return None;
                    }
                }
                "proto" => hop.scheme = Some(scheme(value)?),
                _ => {}
            }
        }
        if !has_for {
            return None;
        }
        hops.push(hop);
    }
    (!hops.is_empty()).then_some(hops)
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => (!v.contains('"')).then_some(v),
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(s: &str) -> Option<(IpAddr, u16)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((canonical(ip), 0));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, tail) = rest.split_once(']')?;
        let ip = ip.parse::<IpAddr>().ok()?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => 0,
            None => return None,
        };
        return Some((canonical(ip), port));
    }
    let (ip, port) = s.rsplit_once(':')?;
    Some((
        canonical(ip.parse::<std::net::Ipv4Addr>().ok()?.into()),
        port.parse().ok()?,
    ))
}

fn scheme(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some("http"),
        "https" | "wss" => Some("https"),
        _ => None,
    }
}

fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let ip = canonical(ip);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((ip, bits))
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            prefix_eq(u32::from(a).into(), u32::from(b).into(), bits, 32)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => prefix_eq(u128::from(a), u128::from(b), bits, 128),
        _ => false,
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8, width: u32) -> bool {
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::headers;

    fn peer(ip: &str) -> Endpoint {
        Endpoint::Tcp(ip.into(), 5000)
    }

    fn client(f: Option<Forwarded>) -> Option<String> {
        match f?.client? {
            Endpoint::Tcp(h, p) => Some(format!("{h}:{p}")),
            Endpoint::Unknown => Some("unknown".into()),
            Endpoint::Unix(p) => Some(p),
        }
    }

    #[test]
    fn proxy_headers_are_found_among_few_fields_and_many() {
        for name in ["forwarded", "x-forwarded-for", "x-forwarded-proto"] {
            for before in [0, 40] {
                let mut h = HeaderMap::new();
                for i in 0..before {
                    h.insert(
                        HeaderName::from_bytes(format!("x-field-{i}").as_bytes()).unwrap(),
                        http::HeaderValue::from_static("v"),
                    );
                }
                assert!(!has_proxy_header(&h), "{before} fields, none a proxy's");
                h.insert(name, http::HeaderValue::from_static("for=1.2.3.4"));
                assert!(has_proxy_header(&h), "{name} after {before} fields");
            }
        }
    }

    #[test]
    fn untrusted_peer_is_ignored() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.resolve(&peer("10.0.0.1"), &h), None);
    }

    #[test]
    fn trusted_peer_gives_client_and_scheme() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let f = t.resolve(&peer("127.0.0.1"), &h).unwrap();
        assert_eq!(f.scheme, Some("https"));
        assert_eq!(client(Some(f)).unwrap(), "1.2.3.4:0");
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.2.3")]);
        assert_eq!(
            client(t.resolve(&peer("127.0.0.1"), &h)).unwrap(),
            "1.2.3.4:0"
        );
    }

    #[test]
    fn all_trusted_takes_leftmost() {
        let t = TrustedProxies::parse("*").unwrap();
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2")]);
        assert_eq!(
            client(t.resolve(&peer("9.9.9.9"), &h)).unwrap(),
            "1.1.1.1:0"
        );
    }

    #[test]
    fn malformed_xff_is_ignored() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(t.resolve(&peer("127.0.0.1"), &h), None);
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(t.resolve(&peer("127.0.0.1"), &h), None);
    }

    #[test]
    fn proto_alone_keeps_peer() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let f = t
            .resolve(
                &peer("127.0.0.1"),
                &headers(&[("x-forwarded-proto", "https")]),
            )
            .unwrap();
        assert_eq!(
            f,
            Forwarded {
                client: None,
                scheme: Some("https")
            }
        );
    }

    #[test]
    fn rfc7239_forwarded() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=https;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        let f = t.resolve(&peer("127.0.0.1"), &h).unwrap();
        assert_eq!(client(Some(f.clone())).unwrap(), "2001:db8:cafe::17:4711");
        let t = TrustedProxies::parse("127.0.0.1, 2001:db8::/32").unwrap();
        let f = t.resolve(&peer("127.0.0.1"), &h).unwrap();
        assert_eq!(client(Some(f.clone())).unwrap(), "192.0.2.60:0");
        assert_eq!(f.scheme, Some("https"));
    }

    #[test]
    fn malformed_forwarded_falls_back_to_x_forwarded() {
        let t = TrustedProxies::parse("127.0.0.1").unwrap();
        let h = headers(&[
            ("forwarded", "for=300.1.1.1"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        assert_eq!(
            client(t.resolve(&peer("127.0.0.1"), &h)).unwrap(),
            "1.2.3.4:0"
        );
    }

    #[test]
    fn unix_peers_need_unix() {
        let unix = Endpoint::Unix("/tmp/s".into());
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            TrustedProxies::parse("127.0.0.1")
                .unwrap()
                .resolve(&unix, &h),
            None
        );
        assert!(TrustedProxies::parse("unix")
            .unwrap()
            .resolve(&unix, &h)
            .is_some());
    }

    #[test]
    fn bad_lists_are_errors() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("localhost").is_err());
        assert!(TrustedProxies::parse("").is_ok());
    }
}
