//! What a bucket is keyed by: the parts a limit names, taken from the verified principal, the
//! route, the MCP operation and the client's address — never from a header the client
//! writes, except `X-Forwarded-For` as written by a proxy in `limits.trusted_proxies`.
//!
//! Every part has a value for every request. A part the request does not have (no `sub` and
//! no client, an anonymous caller, no API key, an operation naming nothing) is one fixed
//! "absent" value, distinct from every real one: all such requests share that bucket rather
//! than escape the limit. Parts are written length-prefixed and tagged, so no two different
//! part lists write the same bytes.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

use crate::principal::{AuthMethod, Principal};

/// One part of a limit's `key`.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The token's `iss` (API keys have none).
    Issuer,
    /// The token's `sub`; for a token without one, its client (`client_id`/`azp`); an
    /// API key's `subject`.
    Subject,
    /// The token's `client_id` (or `azp`); an API key's `id`.
    ClientId,
    /// The route's name.
    Route,
    /// What the MCP operation names: the tool of `tools/call`, the URI of a resource
    /// operation, the prompt of `prompts/get` (each tagged with its kind).
    Tool,
    /// The client's IP address (IPv6: its /64), through `trusted_proxies`.
    ClientAddress,
    /// The API key's `id` (absent for OAuth).
    ApiKeyId,
}

impl KeyPart {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPart::Issuer => "issuer",
            KeyPart::Subject => "subject",
            KeyPart::ClientId => "client_id",
            KeyPart::Route => "route",
            KeyPart::Tool => "tool",
            KeyPart::ClientAddress => "client_address",
            KeyPart::ApiKeyId => "api_key_id",
        }
    }
}

/// What an MCP operation names, for `tools:`/`resources:`/`prompts:` and the `tool` part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tool,
    Resource,
    Prompt,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Tool => b't',
            Kind::Resource => b'r',
            Kind::Prompt => b'p',
        }
    }
}

/// A named target of an operation: its kind and name (a resource in canonical spelling).
pub type Target<'a> = (Kind, &'a str);

/// What the key parts of one request are read from.
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub principal: Option<&'a Principal>,
    pub route: &'a str,
    /// The client's address, as keyed ([`client_address`]).
    pub address: Option<IpAddr>,
}

/// Write the value of `part` for request `who` and operation target `target` to `out`,
/// tagged and length-prefixed.
pub fn write(part: KeyPart, who: &Who<'_>, target: Option<Target<'_>>, out: &mut impl Sink) {
    let p = who.principal;
    let text = |out: &mut dyn Sink, tag: u8, v: Option<&str>| match v {
        Some(v) => {
            out.put(&[tag]);
            out.put(&(v.len() as u64).to_le_bytes());
            out.put(v.as_bytes());
        }
        None => out.put(&[tag, 0xff]),
    };
    match part {
        KeyPart::Issuer => text(out, b'I', p.map(|p| &*p.iss).filter(|i| !i.is_empty())),
        KeyPart::Subject => match p {
            Some(p) if p.subject.is_some() => text(out, b'S', p.subject.as_deref()),
            Some(p) => text(out, b's', p.client_id.as_deref()),
            None => text(out, b'S', None),
        },
        KeyPart::ClientId => text(out, b'C', p.and_then(|p| p.client_id.as_deref())),
        KeyPart::Route => text(out, b'R', Some(who.route)),
        KeyPart::Tool => match target {
            Some((kind, name)) => {
                out.put(b"T");
                text(out, kind.tag(), Some(name));
            }
            None => text(out, b'T', None),
        },
        KeyPart::ClientAddress => match who.address {
            Some(IpAddr::V4(a)) => {
                out.put(&[b'A', 4]);
                out.put(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                out.put(&[b'A', 6]);
                out.put(&a.octets());
            }
            None => out.put(&[b'A', 0xff]),
        },
        KeyPart::ApiKeyId => text(
            out,
            b'K',
            p.filter(|p| p.method == AuthMethod::ApiKey)
                .and_then(|p| p.client_id.as_deref()),
        ),
    }
}

/// Where key bytes go: a keyed hasher for the local buckets, SHA-256 for Redis keys.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for std::hash::DefaultHasher {
    fn put(&mut self, bytes: &[u8]) {
        std::hash::Hasher::write(self, bytes);
    }
}

impl Sink for sha2::Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

/// The identity of a caller for `streams_per_subject`: its issuer and subject (its client
/// without a subject); an anonymous caller's address.
pub fn write_subject(who: &Who<'_>, out: &mut impl Sink) {
    match who.principal {
        Some(_) => {
            write(KeyPart::Issuer, who, None, out);
            write(KeyPart::Subject, who, None, out);
        }
        None => write(KeyPart::ClientAddress, who, None, out),
    }
}

// ---------------------------------------------------------------------------------------------
// The client's address
// ---------------------------------------------------------------------------------------------

/// `limits.trusted_proxies`: the proxies whose `X-Forwarded-For` names the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    pub fn compile(list: &[String]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::with_capacity(list.len());
        for s in list {
            let net = match s.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match s.parse::<IpAddr>() {
                    Ok(a) => IpNet::from(a),
                    Err(_) => {
                        return Err(format!(
                            "limits.trusted_proxies: {s:?} is not an IP address or CIDR"
                        ))
                    }
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, a: IpAddr) -> bool {
        let a = canonical(a);
        self.0.iter().any(|n| n.contains(&a))
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => a,
        },
        v4 => v4,
    }
}

/// The client's address as a bucket sees it: the peer, or, when the peer is a trusted
/// proxy, the `X-Forwarded-For` hop nearest to us that is not one (read right to left over
/// every `X-Forwarded-For` line in order; an entry that is not an address stops the walk at
/// the last trusted hop, so a malformed header never makes a new key). IPv6 addresses are
/// keyed by their /64: one subscriber's network, not each of its 2^64 addresses.
pub fn client_address(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let mut client = canonical(peer?);
    if !trusted.is_empty() && trusted.trusts(client) {
        let lines: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        'walk: for line in lines.iter().rev() {
            for hop in line.rsplit(|b| *b == b',') {
                let Some(addr) = parse_hop(hop) else {
                    break 'walk;
                };
                client = canonical(addr);
                if !trusted.trusts(client) {
                    break 'walk;
                }
            }
        }
    }
    Some(prefix(client))
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(a) = s.parse::<IpAddr>() {
        return Some(a);
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// IPv6 addresses are keyed by their /64.
fn prefix(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::Arc;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let trusted = TrustedProxies::compile(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let from = |peer: &str, xff: &[&str]| {
            client_address(Some(ip(peer)), &headers(xff), &trusted).map(|a| a.to_string())
        };
        // An untrusted peer's header is ignored: spoofing it changes nothing.
        assert_eq!(from("192.0.2.7", &["203.0.113.9"]).unwrap(), "192.0.2.7");
        // Through one trusted proxy.
        assert_eq!(from("10.1.2.3", &["203.0.113.9"]).unwrap(), "203.0.113.9");
        // The client wrote its own entry first: the proxy appended the real one.
        assert_eq!(
            from("10.1.2.3", &["1.1.1.1, 203.0.113.9"]).unwrap(),
            "203.0.113.9"
        );
        // Two trusted hops, over two header lines; ports and brackets.
        assert_eq!(
            from("10.1.2.3", &["6.6.6.6, 203.0.113.9:4711", "10.9.9.9"]).unwrap(),
            "203.0.113.9"
        );
        assert_eq!(
            from("::1", &["[2001:db8:1:2:3:4:5:6]:80"]).unwrap(),
            "2001:db8:1:2::",
            "IPv6 keyed by its /64"
        );
        // A malformed entry behind a trusted hop stops at that hop.
        assert_eq!(
            from("10.1.2.3", &["nonsense, 10.2.2.2"]).unwrap(),
            "10.2.2.2"
        );
        assert_eq!(from("10.1.2.3", &["unknown"]).unwrap(), "10.1.2.3");
        assert_eq!(from("10.1.2.3", &[]).unwrap(), "10.1.2.3");
        // IPv4-mapped peers are their IPv4 address.
        assert_eq!(
            from("::ffff:10.1.2.3", &["198.51.100.1"]).unwrap(),
            "198.51.100.1"
        );
        // Without trusted proxies the header is never read.
        let none = TrustedProxies::default();
        assert_eq!(
            client_address(Some(ip("10.1.2.3")), &headers(&["1.1.1.1"]), &none),
            Some(ip("10.1.2.3"))
        );
        assert!(TrustedProxies::compile(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::compile(&["example.com".into()]).is_err());
    }

    fn principal(sub: Option<&str>, client: Option<&str>, method: AuthMethod) -> Principal {
        Principal {
            method,
            any_audience: false,
            iss: Arc::from(if method == AuthMethod::ApiKey {
                ""
            } else {
                "https://as"
            }),
            issuer_name: Arc::from("a"),
            subject: sub.map(Box::from),
            client_id: client.map(Arc::from),
            scopes: crate::scope::ScopeSet::parse(""),
            audiences: Arc::from(Vec::new()),
            exp: 0,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: None,
            iat: None,
            azp: None,
        }
    }

    fn bytes(part: KeyPart, who: &Who<'_>, target: Option<Target<'_>>) -> Vec<u8> {
        struct V(Vec<u8>);
        impl Sink for V {
            fn put(&mut self, b: &[u8]) {
                self.0.extend_from_slice(b);
            }
        }
        let mut v = V(Vec::new());
        write(part, who, target, &mut v);
        v.0
    }

    /// Parts never collide across kinds, absent is its own value, and a subject-less token
    /// is keyed by its client rather than shared with every other subject-less one.
    #[test]
    fn parts_are_unambiguous() {
        let alice = principal(Some("alice"), Some("app"), AuthMethod::Jwt);
        let machine = principal(None, Some("alice"), AuthMethod::Jwt);
        let key = principal(Some("bot"), Some("ci"), AuthMethod::ApiKey);
        let who = |p| Who {
            principal: p,
            route: "mcp",
            address: None,
        };
        let sub = |p| bytes(KeyPart::Subject, &who(p), None);
        assert_ne!(sub(Some(&alice)), sub(Some(&machine)), "sub vs client");
        assert_ne!(sub(Some(&machine)), sub(None));
        let tool = |t| bytes(KeyPart::Tool, &who(Some(&alice)), t);
        assert_ne!(
            tool(Some((Kind::Tool, "x"))),
            tool(Some((Kind::Prompt, "x")))
        );
        assert_ne!(tool(Some((Kind::Tool, "x"))), tool(None));
        let api = |p| bytes(KeyPart::ApiKeyId, &who(p), None);
        assert_eq!(api(Some(&alice)), api(None), "OAuth has no API key id");
        assert_ne!(api(Some(&key)), api(None));
        let iss = |p| bytes(KeyPart::Issuer, &who(p), None);
        assert_eq!(iss(Some(&key)), iss(None), "API keys have no issuer");
    }
}
