//! Request → target: host checks, path normalization, metadata paths and route lookup.
//!
//! The first decision of the request flow, before credentials: it refuses requests
//! that are malformed at the HTTP level (duplicate or conflicting Host, protocol
//! upgrades, paths that cannot be normalized), answers RFC 9728 metadata paths, and
//! otherwise picks the route by longest whole-segment prefix (a route with a matching
//! `host` wins over a host-less one with the same prefix).

use std::sync::Arc;

use http::Method;
use pingora_http::RequestHeader;

use crate::config::{Config, Route};
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

/// The host a request is for, lower-cased, without port.
fn host_of(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

fn request_host(req: &RequestHeader) -> Result<Option<String>, Refusal> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("more than one Host header"));
    }
    let host_header = match host_header {
        Some(h) => Some(
            h.to_str()
                .map_err(|_| Refusal::BadRequest("Host header is not ASCII"))?
                .to_string(),
        ),
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
    match (target_authority, host_header) {
        (Some(t), Some(h)) if !t.eq_ignore_ascii_case(&h) => Err(Refusal::BadRequest(
            "request target authority and Host header differ",
        )),
        (Some(t), _) => Ok(Some(host_of(&t))),
        (None, Some(h)) => Ok(Some(host_of(&h))),
        (None, None) if req.version == http::Version::HTTP_11 => Err(Refusal::BadRequest(
            "HTTP/1.1 request without a Host header",
        )),
        (None, None) => Ok(None),
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
    if header_bytes > config.max_header_bytes {
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
        .is_some_and(|n| n > config.max_body_bytes)
}

pub fn classify(config: &Config, req: &RequestHeader) -> Result<Target, Refusal> {
    check_limits(config, req)?;
    let host = request_host(req)?;
    if req.headers.contains_key(http::header::UPGRADE) {
        return Err(Refusal::BadRequest("protocol upgrades are not supported"));
    }
    if !req.raw_path_is_utf8() {
        return Err(Refusal::BadPath(path::PathError::NotUtf8));
    }
    let normalized = path::normalize(req.uri.path()).map_err(Refusal::BadPath)?;

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
        let host_ok = match (&r.host, &host) {
            (None, _) => true,
            (Some(rh), Some(h)) => rh == h,
            (Some(_), None) => false,
        };
        if !host_ok || !path::has_prefix(&normalized, &r.path_prefix) {
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

fn lookup_metadata(config: &Config, host: &Option<String>, path: &str) -> Option<usize> {
    if let Some(h) = host {
        if let Some(&i) = config
            .metadata_paths
            .get(&(Some(h.clone()), path.to_string()))
        {
            return Some(i);
        }
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
        assert_eq!(
            route_name(classify(&c, &req("GET", "/ADMIN/mcp", Some("h")))),
            "err:404"
        );
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
    }
}
