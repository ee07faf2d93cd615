//! Request → target: host checks, path normalization, metadata paths and route lookup.
//!
//! The first decision of the request flow, before credentials: it refuses requests
//! that are malformed at the HTTP level (duplicate or conflicting Host, protocol
//! upgrades, paths that cannot be normalized), answers RFC 9728 metadata paths, and
//! otherwise picks the route by longest whole-segment prefix (a route with a matching
//! `host` wins over a host-less one with the same prefix).

pub mod cors;

use std::sync::Arc;

use http::Method;
use pingora_http::RequestHeader;

use crate::config::{AuthMode, Config, DpopMode, Route};
use crate::error::Refusal;
use crate::metadata;
use crate::path;

#[derive(Debug)]
pub enum Target {
    /// Serve the route's metadata document (GET/HEAD).
    Metadata(Arc<Route>),
    /// CORS preflight for a metadata document.
    MetadataPreflight,
    /// Proxy to a route; `path` is the normalized path that was matched.
    Route { route: Arc<Route>, path: String },
}

/// An authority (`Host`, `:authority`, or that of an absolute-form target) reduced to
/// what routing compares: the host lower-cased, without port and without the one
/// trailing dot of an absolute domain name (`mcp.example.com.` is `mcp.example.com`),
/// and the port as written. Anything but `host[:port]` with a plain host name, an IPv4
/// address or a bracketed IPv6 literal is refused: userinfo, percent-encoding, spaces,
/// empty labels, an empty or non-numeric port.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

fn parse_authority(a: &str) -> Result<Authority, Refusal> {
    const BAD: Refusal = Refusal::BadRequest("the request's host is not host[:port]");
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(BAD)?;
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(BAD);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(BAD)?),
        };
        (format!("[{}]", literal.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !host.split('.').all(label_ok) {
            return Err(BAD);
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| BAD)?)
        }
        Some(_) => return Err(BAD),
    };
    Ok(Authority { host, port })
}

/// The host a request is for (see [`Authority`]). Every request must name one: HTTP/1.x
/// in exactly one `Host` header (RFC 9112 §3.2, also with an absolute-form target, whose
/// authority must then be the same), HTTP/2 in `:authority` or `Host`.
fn request_host(req: &RequestHeader) -> Result<String, Refusal> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("more than one Host header"));
    }
    let host_header = match host_header {
        Some(h) => {
            Some(parse_authority(h.to_str().map_err(|_| {
                Refusal::BadRequest("Host header is not ASCII")
            })?)?)
        }
        None => None,
    };
    // The authority from an h2 :authority or an absolute-form request target.
    let raw = req.raw_path();
    let target_authority = if let Some(a) = req.uri.authority() {
        Some(a.as_str().to_string())
    } else if !raw.starts_with(b"/") && raw != b"*" {
        let s = std::str::from_utf8(raw)
            .map_err(|_| Refusal::BadRequest("request target is not ASCII"))?;
        let after = s
            .split_once("://")
            .map(|(_, a)| a)
            .ok_or(Refusal::BadRequest(
                "request target is neither a path nor an absolute URL",
            ))?;
        Some(after.split(['/', '?']).next().unwrap_or("").to_string())
    } else {
        None
    };
    let target_authority = target_authority
        .as_deref()
        .map(parse_authority)
        .transpose()?;
    let h2 = req.version == http::Version::HTTP_2;
    match (target_authority, host_header) {
        (Some(t), Some(h)) if t != h => Err(Refusal::BadRequest(
            "request target authority and Host header differ",
        )),
        (_, Some(h)) => Ok(h.host),
        (Some(t), None) if h2 => Ok(t.host),
        (Some(_), None) => Err(Refusal::BadRequest(
            "an absolute-form request target needs a Host header too",
        )),
        (None, None) => Err(Refusal::BadRequest("the request has no Host header")),
    }
}

/// Size and framing limits, checked before anything else.
fn check_limits(config: &Config, req: &RequestHeader) -> Result<(), Refusal> {
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.raw_path().len();
    if header_bytes > config.requests.max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(cl) = lengths.next() {
        if content_length(cl).is_none() {
            return Err(Refusal::BadRequest("invalid Content-Length"));
        }
        if lengths.next().is_some() {
            return Err(Refusal::BadRequest("more than one Content-Length header"));
        }
    }
    Ok(())
}

fn content_length(v: &http::HeaderValue) -> Option<u64> {
    v.to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
}

/// A declared body over `limits.max_body_bytes`. Checked after authentication, so that
/// an unauthenticated upload gets its 401 first (SPEC-CHECKLIST §7.10).
pub fn body_too_large(config: &Config, req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(content_length)
        .is_some_and(|n| n > config.requests.max_body_bytes)
}

pub fn classify(config: &Config, req: &RequestHeader) -> Result<Target, Refusal> {
    check_limits(config, req)?;
    let host = request_host(req)?;
    if req.headers.contains_key(http::header::UPGRADE) {
        return Err(Refusal::BadRequest("protocol upgrades are not supported"));
    }
    if !req.raw_path_is_utf8() {
        return Err(Refusal::BadPath(path::PathError::NotUtf8.describe()));
    }
    let normalized = path::normalize(req.uri.path()).map_err(|e| Refusal::BadPath(e.describe()))?;

    if metadata::is_well_known(&normalized) {
        let mut key = normalized.clone();
        if let Some(q) = req.uri.query() {
            // A resource with a query keeps it after the metadata path (RFC 9728 §3.1).
            let with_query = format!("{normalized}?{q}");
            if lookup_metadata(config, &host, &with_query).is_some() {
                key = with_query;
            }
        }
        let Some(idx) = lookup_metadata(config, &host, &key) else {
            return Err(Refusal::NotFound);
        };
        return match req.method {
            Method::GET | Method::HEAD => Ok(Target::Metadata(config.routes[idx].clone())),
            Method::OPTIONS => Ok(Target::MetadataPreflight),
            _ => Err(Refusal::BadRequest("metadata documents are read with GET")),
        };
    }

    let mut best: Option<&Arc<Route>> = None;
    for r in &config.routes {
        let host_ok = r.host.as_ref().is_none_or(|rh| *rh == host);
        if !host_ok || !prefix_matches(r, &normalized) {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => {
                r.path_prefix.len() > b.path_prefix.len()
                    || (r.path_prefix.len() == b.path_prefix.len()
                        && r.host.is_some()
                        && b.host.is_none())
            }
        };
        if better {
            best = Some(r);
        }
    }
    match best {
        Some(route) => Ok(Target::Route {
            route: route.clone(),
            path: normalized,
        }),
        None => Err(Refusal::NotFound),
    }
}

/// Whether `path` (normalized) is under the route's prefix: ASCII-case-insensitively
/// unless the route says `case_sensitive_prefix`.
pub fn prefix_matches(route: &Route, path: &str) -> bool {
    if route.case_sensitive_prefix {
        path::has_prefix(path, &route.path_prefix)
    } else {
        path::has_prefix_ignore_ascii_case(path, &route.path_prefix)
    }
}

/// Log [`case_warnings`] (at start and at every reload).
pub fn log_warnings(config: &Config) {
    for w in case_warnings(&config.routes) {
        tracing::warn!(warning = %w, "configuration warning");
    }
}

/// `mcpgate check` warnings: a `case_sensitive_prefix` route that requires credentials,
/// some letter-case variant of whose prefix reaches another route (host-less or on the
/// same host) that does not protect at least as much. Such a variant is forwarded under
/// the other route's rules, which is safe only if the upstream really is case-sensitive.
pub fn case_warnings(routes: &[Arc<Route>]) -> Vec<String> {
    let mut out = Vec::new();
    for b in routes
        .iter()
        .filter(|b| b.case_sensitive_prefix && b.auth != AuthMode::None)
    {
        for a in routes {
            let same_host = a.host.is_none() || b.host.is_none() || a.host == b.host;
            if Arc::ptr_eq(a, b)
                || !same_host
                || !path::has_prefix_ignore_ascii_case(&b.path_prefix, &a.path_prefix)
                || !case_variant_reaches(a, &b.path_prefix)
            {
                continue;
            }
            if let Some(why) = less_protected(a, b) {
                out.push(format!(
                    "route {:?} has case_sensitive_prefix, so other letter cases of {} go to route {:?} ({}), which {why}",
                    b.name, b.path_prefix, a.name, a.path_prefix
                ));
            }
        }
    }
    out
}

/// Whether some spelling of `prefix` differing only in letter case matches route `a`.
fn case_variant_reaches(a: &Route, prefix: &str) -> bool {
    // Letters outside `%XX` escapes (whose hex case is normalized away).
    let letters = |s: &str| {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                i += 3;
                continue;
            }
            if b[i].is_ascii_alphabetic() {
                return true;
            }
            i += 1;
        }
        false
    };
    if a.path_prefix == "/" {
        return letters(prefix);
    }
    let (head, tail) = prefix.split_at(a.path_prefix.len().min(prefix.len()));
    letters(tail)
        || if a.case_sensitive_prefix {
            head != a.path_prefix
        } else {
            letters(head)
        }
}

/// Why route `a` protects less than route `b`, if it does.
fn less_protected(a: &Route, b: &Route) -> Option<String> {
    let mode = |m: AuthMode| match m {
        AuthMode::Oauth => "oauth",
        AuthMode::None => "none",
        AuthMode::ApiKey => "api_key",
        AuthMode::Both => "both",
    };
    if a.auth != b.auth {
        return Some(format!("has auth: {}", mode(a.auth)));
    }
    if let Some(s) = b
        .scopes
        .iter()
        .find(|s| !a.scopes.iter().any(|t| t.name == s.name))
    {
        return Some(format!("does not require scope {}", s.name));
    }
    if a.issuers.iter().any(|i| !b.issuers.contains(i)) {
        return Some("accepts tokens from issuers the other does not".into());
    }
    if b.mcp.inspects() && !a.mcp.inspects() {
        return Some("has no MCP tool policy".into());
    }
    if b.dpop == DpopMode::Required && a.dpop != DpopMode::Required {
        return Some("does not require DPoP".into());
    }
    None
}

fn lookup_metadata(config: &Config, host: &str, path: &str) -> Option<usize> {
    if let Some(&i) = config
        .metadata_paths
        .get(&(Some(host.to_string()), path.to_string()))
    {
        return Some(i);
    }
    config
        .metadata_paths
        .get(&(None, path.to_string()))
        .copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn config() -> Config {
        Config::from_yaml(
            "t",
            "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as'}]\nroutes:\n- {name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3'}\n- {name: am, path_prefix: /admin/mcp, upstream: 'http://127.0.0.1:3'}\n- {name: v, path_prefix: /mcp, host: other.example, upstream: 'http://127.0.0.1:3'}\n",
        )
        .unwrap()
    }

    fn req(method: &str, target: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    fn route_name(t: Result<Target, Refusal>) -> String {
        match t {
            Ok(Target::Route { route, .. }) => route.name.to_string(),
            Ok(Target::Metadata(r)) => format!("prm:{}", r.name),
            Ok(Target::MetadataPreflight) => "preflight".into(),
            Err(e) => format!("err:{}", e.status()),
        }
    }

    #[test]
    fn longest_prefix_and_hosts() {
        let c = config();
        assert_eq!(
            route_name(classify(&c, &req("GET", "/mcp", Some("mcp.example.com")))),
            "m"
        );
        assert_eq!(
            route_name(classify(&c, &req("GET", "/admin/mcp/x", Some("h")))),
            "am"
        );
        assert_eq!(
            route_name(classify(&c, &req("GET", "/mcp", Some("OTHER.example:443")))),
            "v"
        );
        assert_eq!(
            route_name(classify(&c, &req("GET", "/nope", Some("h")))),
            "err:404"
        );
        // Prefixes match in any letter case by default.
        assert_eq!(
            route_name(classify(&c, &req("GET", "/ADMIN/mcp", Some("h")))),
            "am"
        );
        assert_eq!(
            route_name(classify(&c, &req("GET", "/Admin/MCP/x", Some("h")))),
            "am"
        );
        assert_eq!(
            route_name(classify(&c, &req("GET", "/ADM%49N/mcp", Some("h")))),
            "am"
        );
        for p in [
            "/admin./mcp",
            "/admin%2e/mcp",
            "/admin%20/mcp",
            "/admin/mcp.",
        ] {
            assert_eq!(
                route_name(classify(&c, &req("GET", p, Some("h")))),
                "err:400"
            );
        }
        assert_eq!(
            route_name(classify(&c, &req("GET", "/%61dmin/mcp", Some("h")))),
            "am"
        );
        assert_eq!(
            route_name(classify(&c, &req("GET", "/mcp/../admin/mcp", Some("h")))),
            "err:400"
        );
    }

    #[test]
    fn metadata_paths() {
        let c = config();
        let t = classify(
            &c,
            &req(
                "GET",
                "/.well-known/oauth-protected-resource/admin/mcp",
                Some("h"),
            ),
        );
        assert_eq!(route_name(t), "prm:am");
        let t = classify(
            &c,
            &req("GET", "/.well-known/oauth-protected-resource", Some("h")),
        );
        assert_eq!(route_name(t), "err:404");
        let t = classify(
            &c,
            &req("GET", "/.well-known/openid-configuration", Some("h")),
        );
        assert_eq!(route_name(t), "err:404");
        let t = classify(
            &c,
            &req(
                "OPTIONS",
                "/.well-known/oauth-protected-resource/mcp",
                Some("h"),
            ),
        );
        assert_eq!(route_name(t), "preflight");
    }

    #[test]
    fn host_confusion() {
        let c = config();
        let mut r = req("GET", "/mcp", Some("a"));
        r.append_header("host", "b").unwrap();
        assert_eq!(route_name(classify(&c, &r)), "err:400");
        assert_eq!(
            route_name(classify(&c, &req("GET", "/mcp", None))),
            "err:400"
        );
        let r = req("GET", "http://evil.example/mcp", Some("mcp.example.com"));
        assert_eq!(route_name(classify(&c, &r)), "err:400");
        let mut r = req("GET", "/mcp", Some("h"));
        r.insert_header("upgrade", "websocket").unwrap();
        assert_eq!(route_name(classify(&c, &r)), "err:400");
        // No Host: refused, also with an absolute-form target and on HTTP/1.0.
        let r = req("GET", "http://other.example/mcp", None);
        assert_eq!(route_name(classify(&c, &r)), "err:400");
        let mut r = req("GET", "/mcp", None);
        r.set_version(http::Version::HTTP_10);
        assert_eq!(route_name(classify(&c, &r)), "err:400");
        // With Host, an absolute-form target must name the same authority.
        let r = req("GET", "http://other.example/mcp", Some("OTHER.example."));
        assert_eq!(route_name(classify(&c, &r)), "v");
        let r = req(
            "GET",
            "http://other.example:8080/mcp",
            Some("other.example"),
        );
        assert_eq!(route_name(classify(&c, &r)), "err:400");
        let r = req(
            "GET",
            "http://user@other.example/mcp",
            Some("other.example"),
        );
        assert_eq!(route_name(classify(&c, &r)), "err:400");
    }

    #[test]
    fn hosts_match_without_case_or_the_trailing_dot() {
        let c = config();
        for h in [
            "other.example",
            "OTHER.EXAMPLE",
            "other.example.",
            "Other.Example.:443",
            "other.example:8443",
        ] {
            assert_eq!(
                route_name(classify(&c, &req("GET", "/mcp", Some(h)))),
                "v",
                "{h}"
            );
        }
        for h in [
            "other.example..",
            ".other.example",
            "other..example",
            "",
            " ",
            "other.example:",
            "other.example:x",
            "other.example:99999",
            "other.example:443:443",
            "user@other.example",
            "other%2eexample",
            "other.example/x",
            "other.example\\x",
            "[::1",
            "[::1]x",
            "[zz]",
        ] {
            assert_eq!(
                route_name(classify(&c, &req("GET", "/mcp", Some(h)))),
                "err:400",
                "{h:?}"
            );
        }
        for (h, want) in [("[::1]:8080", "[::1]"), ("127.0.0.1:80", "127.0.0.1")] {
            assert_eq!(parse_authority(h).map(|a| a.host), Ok(want.to_string()));
        }
    }

    #[test]
    fn case_sensitive_prefix_and_its_warning() {
        let yaml = |admin_extra: &str| {
            format!(
                "listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}\nadmin: {{address: '127.0.0.1:2'}}\nissuers: [{{name: a, issuer: 'https://as'}}]\nroutes:\n- {{name: open, path_prefix: /, upstream: 'http://127.0.0.1:3', auth: none}}\n- {{name: admin, path_prefix: /admin, upstream: 'http://127.0.0.1:3', scopes: [admin]{admin_extra}}}\n"
            )
        };
        let c = Config::from_yaml("t", &yaml("")).unwrap();
        assert!(case_warnings(&c.routes).is_empty());
        assert_eq!(
            route_name(classify(&c, &req("GET", "/ADMIN", Some("h")))),
            "admin"
        );
        let c = Config::from_yaml("t", &yaml(", case_sensitive_prefix: true")).unwrap();
        assert_eq!(
            route_name(classify(&c, &req("GET", "/ADMIN", Some("h")))),
            "open"
        );
        assert_eq!(
            route_name(classify(&c, &req("GET", "/admin/x", Some("h")))),
            "admin"
        );
        let w = case_warnings(&c.routes);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"admin\" has case_sensitive_prefix"));
        assert!(w[0].contains("route \"open\" (/), which has auth: none"));

        // A prefix without letters has no case variants.
        let digits = yaml(", case_sensitive_prefix: true").replace("/admin,", "/42,");
        assert!(case_warnings(&Config::from_yaml("t", &digits).unwrap().routes).is_empty());
        // Under a route that protects as much, no warning.
        let same =
            yaml(", case_sensitive_prefix: true").replace("auth: none", "scopes: [admin, more]");
        assert!(case_warnings(&Config::from_yaml("t", &same).unwrap().routes).is_empty());
        // Under one that needs fewer scopes, a warning.
        let fewer = yaml(", case_sensitive_prefix: true").replace("auth: none", "scopes: [x]");
        let w = case_warnings(&Config::from_yaml("t", &fewer).unwrap().routes);
        assert!(w[0].contains("does not require scope admin"), "{w:?}");
    }

    #[test]
    fn prefixes_differing_in_case_are_one_prefix() {
        let yaml = "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as'}]\nroutes:\n- {name: a, path_prefix: /admin, upstream: 'http://127.0.0.1:3'}\n- {name: b, path_prefix: /Admin, upstream: 'http://127.0.0.1:3', case_sensitive_prefix: true, auth: none}\n";
        let e = Config::from_yaml("t", yaml).unwrap_err();
        assert!(e.reason.contains("already claimed"), "{e}");
        let yaml = "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as'}]\nroutes:\n- {name: a, path_prefix: /mcp, host: 'mcp.example.com.', upstream: 'http://127.0.0.1:3'}\n";
        let e = Config::from_yaml("t", yaml).unwrap_err();
        assert!(e.reason.contains("must not end with '.'"), "{e}");
    }
}
