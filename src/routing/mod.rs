//! Request → target: host checks, path normalization, metadata paths and route lookup.
//!
//! The first decision of the request flow, before credentials: it refuses requests
//! that are malformed at the HTTP level (duplicate or conflicting Host, protocol
//! upgrades, paths that cannot be normalized), answers RFC 9728 metadata paths, and
//! otherwise picks the route by longest whole-segment prefix (a route with a matching
//! `host` wins over a host-less one with the same prefix).
//!
//! It owns the matching part of each route (`host`, `path_prefix`,
//! `case_sensitive_prefix`: [`RouteMatch`]) and the table built from them ([`Table`]),
//! which also says which route serves each metadata path. Lookups return route indices;
//! the caller holds the routes.
//!
//! The lookup is indexed: routes are keyed by their lower-cased prefix (host-less ones,
//! and per host), and a request tries the path's own whole-segment prefixes, longest
//! first, so its cost grows with the path's segments, not with the number of routes.

pub mod cors;
pub mod host;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use http::Method;
use pingora_http::RequestHeader;

use crate::compile::CompileError;
use crate::connections::RequestLimits;
use crate::error::Refusal;
use crate::metadata;
use crate::path;

/// What a request is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Serve the metadata document of route `index` (GET/HEAD).
    Metadata(usize),
    /// CORS preflight for a metadata document.
    MetadataPreflight,
    /// Proxy to route `index`; `path` is the normalized path that was matched.
    Route { index: usize, path: String },
}

/// How a route matches requests: its `host`, `path_prefix` and `case_sensitive_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Lower-cased; `None` matches every host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// `path_prefix` matches only in its own case (see [`RouteMatch::matches`]).
    pub case_sensitive: bool,
}

impl RouteMatch {
    /// Check and compile a route's matching settings.
    pub fn compile(
        host: Option<&str>,
        path_prefix: &str,
        case_sensitive: bool,
    ) -> Result<RouteMatch, CompileError> {
        path::check_prefix(path_prefix, "path_prefix")
            .map_err(|e| CompileError::new("path_prefix", e))?;
        if let Some(h) = host {
            if h.is_empty() || h.contains(['/', ':', ' ']) {
                return Err(CompileError::new(
                    "host",
                    format!("host {h:?} must be a bare host name (no scheme or port)"),
                ));
            }
            if h.ends_with('.') {
                return Err(CompileError::new(
                    "host",
                    format!(
                        "host {h:?} must not end with '.' (requests for {h:?} match it without the dot)"
                    ),
                ));
            }
        }
        Ok(RouteMatch {
            host: host.map(|h| h.to_ascii_lowercase()),
            path_prefix: path_prefix.to_string(),
            case_sensitive,
        })
    }

    /// Whether `path` (normalized) is under the route's prefix: ASCII-case-insensitively
    /// unless the route says `case_sensitive_prefix`.
    pub fn matches(&self, path: &str) -> bool {
        if self.case_sensitive {
            path::has_prefix(path, &self.path_prefix)
        } else {
            path::has_prefix_ignore_ascii_case(path, &self.path_prefix)
        }
    }
}

/// The routes' matching parts, in config order, and the metadata paths they serve.
#[derive(Debug, Default)]
pub struct Table {
    routes: Vec<RouteMatch>,
    /// Route name → its index.
    names: HashMap<String, usize>,
    /// (host, lower-cased prefix) → the route claiming it: case variants of one prefix
    /// would tie.
    prefixes: HashMap<(Option<String>, String), String>,
    /// PRM path (path-inserted well-known URL path) → route index.
    metadata: HashMap<(Option<String>, String), usize>,
    /// Hosts with a `root_metadata` route.
    root_hosts: HashSet<Option<String>>,
    /// Lower-cased prefix → the host-less route with it (one per prefix: `prefixes`).
    any_host: HashMap<String, usize>,
    /// Host → lower-cased prefix → the route on that host with it.
    by_host: HashMap<String, HashMap<String, usize>>,
}

impl Table {
    /// Add route `name` (the next index); refused when its name or prefix is taken.
    pub fn add(&mut self, name: &str, m: RouteMatch) -> Result<usize, CompileError> {
        if let Some(other) = self.names.get(name) {
            return Err(CompileError::new(
                "name",
                format!("route name {name:?} is already the name of routes[{other}]"),
            ));
        }
        // Case variants of one prefix would tie: one route per prefix in any case.
        let key = (m.host.clone(), m.path_prefix.to_ascii_lowercase());
        if let Some(other) = self.prefixes.get(&key) {
            let host = match &m.host {
                Some(h) => format!("host {h:?}"),
                None => "any host".to_string(),
            };
            return Err(CompileError::new(
                "path_prefix",
                format!(
                    "path_prefix {:?} is already claimed by route {other:?} (on {host}, in any letter case)",
                    m.path_prefix
                ),
            ));
        }
        let (host, lower) = key.clone();
        let index = self.routes.len();
        match host {
            Some(h) => self.by_host.entry(h).or_default().insert(lower, index),
            None => self.any_host.insert(lower, index),
        };
        self.prefixes.insert(key, name.to_string());
        self.names.insert(name.to_string(), index);
        self.routes.push(m);
        Ok(self.routes.len() - 1)
    }

    /// Route `index` serves its metadata at `path` (and at the root with `root`).
    pub fn serve_metadata(
        &mut self,
        index: usize,
        path: &str,
        root: bool,
    ) -> Result<(), CompileError> {
        let host = self.routes.get(index).and_then(|m| m.host.clone());
        if let Some(other) = self
            .metadata
            .insert((host.clone(), path.to_string()), index)
        {
            let other = self.names.iter().find(|(_, &i)| i == other).map_or_else(
                || format!("routes[{other}]"),
                |(n, _)| format!("route {n:?}"),
            );
            return Err(CompileError::new(
                "resource",
                format!("its metadata path {path} is already served for {other}"),
            ));
        }
        if root && path != metadata::WELL_KNOWN {
            if !self.root_hosts.insert(host.clone()) {
                return Err(CompileError::new(
                    "root_metadata",
                    "root_metadata is set on more than one route for the same host",
                ));
            }
            if self
                .metadata
                .insert((host, metadata::WELL_KNOWN.to_string()), index)
                .is_some()
            {
                return Err(CompileError::new(
                    "root_metadata",
                    "root_metadata conflicts with a route whose resource is at the root",
                ));
            }
        }
        Ok(())
    }

    /// Indices of the routes whose metadata is served (at any path).
    pub fn metadata_routes(&self) -> HashSet<usize> {
        self.metadata.values().copied().collect()
    }

    fn lookup_metadata(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(&i) = self
            .metadata
            .get(&(Some(host.to_string()), path.to_string()))
        {
            return Some(i);
        }
        self.metadata.get(&(None, path.to_string())).copied()
    }

    /// The route for `path` (normalized) on `host`: the longest matching prefix, a route
    /// naming the host winning over a host-less one with the same prefix.
    ///
    /// A prefix matches at a segment boundary (or is `/`), so the only prefixes that can
    /// match are the path itself, the path up to each later `/`, and `/`: tried longest
    /// first, the host's route before the host-less one at each length. At most one route
    /// has a given lower-cased prefix on a host, and it still has to match the path in
    /// its own way (`case_sensitive_prefix`).
    fn lookup(&self, host: &str, path: &str) -> Option<usize> {
        let lower: Cow<'_, str> = if path.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(path.to_ascii_lowercase())
        } else {
            Cow::Borrowed(path)
        };
        let hosted = self.by_host.get(host);
        let hit = |i: Option<&usize>| i.copied().filter(|&i| self.routes[i].matches(path));
        let boundaries = lower
            .bytes()
            .enumerate()
            .skip(1)
            .filter(|&(_, b)| b == b'/')
            .map(|(i, _)| i)
            .rev();
        std::iter::once(lower.len())
            .chain(boundaries)
            .chain(std::iter::once(1))
            .find_map(|end| {
                let candidate = lower.get(..end)?;
                hosted
                    .and_then(|h| hit(h.get(candidate)))
                    .or_else(|| hit(self.any_host.get(candidate)))
            })
    }

    /// The linear scan the index replaced: the test oracle of [`Table::lookup`].
    #[cfg(test)]
    fn lookup_by_scan(&self, host: &str, path: &str) -> Option<usize> {
        let mut best: Option<(usize, &RouteMatch)> = None;
        for (i, r) in self.routes.iter().enumerate() {
            let host_ok = r.host.as_ref().is_none_or(|rh| *rh == host);
            if !host_ok || !r.matches(path) {
                continue;
            }
            let better = match best {
                None => true,
                Some((_, b)) => {
                    r.path_prefix.len() > b.path_prefix.len()
                        || (r.path_prefix.len() == b.path_prefix.len()
                            && r.host.is_some()
                            && b.host.is_none())
                }
            };
            if better {
                best = Some((i, r));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Size and framing limits, checked before anything else.
fn check_limits(limits: &RequestLimits, req: &RequestHeader) -> Result<(), Refusal> {
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.raw_path().len();
    if header_bytes > limits.max_header_bytes {
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
pub fn body_too_large(limits: &RequestLimits, headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(content_length)
        .is_some_and(|n| n > limits.max_body_bytes)
}

/// What a request is for, or why it is refused before any route applies.
pub fn classify(
    table: &Table,
    limits: &RequestLimits,
    req: &RequestHeader,
) -> Result<Target, Refusal> {
    check_limits(limits, req)?;
    let host = host::request_host(req)?;
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
            if table.lookup_metadata(&host, &with_query).is_some() {
                key = with_query;
            }
        }
        let Some(idx) = table.lookup_metadata(&host, &key) else {
            return Err(Refusal::NotFound);
        };
        return match req.method {
            Method::GET | Method::HEAD => Ok(Target::Metadata(idx)),
            Method::OPTIONS => Ok(Target::MetadataPreflight),
            _ => Err(Refusal::BadRequest("metadata documents are read with GET")),
        };
    }
    match table.lookup(&host, &normalized) {
        Some(index) => Ok(Target::Route {
            index,
            path: normalized,
        }),
        None => Err(Refusal::NotFound),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::{case_warnings, Config};
    use host::parse_authority;

    /// `classify` against a compiled config.
    fn classify<'c>(c: &'c Config, req: &RequestHeader) -> (&'c Config, Result<Target, Refusal>) {
        (c, super::classify(&c.table, &c.requests, req))
    }

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

    fn route_name((c, t): (&Config, Result<Target, Refusal>)) -> String {
        match t {
            Ok(Target::Route { index, .. }) => c.routes[index].name.to_string(),
            Ok(Target::Metadata(i)) => format!("prm:{}", c.routes[i].name),
            Ok(Target::MetadataPreflight) => "preflight".into(),
            Err(e) => format!("err:{}", e.status()),
        }
    }

    /// The indexed lookup answers what a scan of every route answers, for paths and
    /// hosts around a table with nested, case-sensitive, host-bound and root prefixes.
    #[test]
    fn indexed_lookup_agrees_with_a_scan() {
        let mut t = Table::default();
        let routes: [(&str, Option<&str>, &str, bool); 10] = [
            ("root", None, "/", false),
            ("mcp", None, "/mcp", false),
            ("mcp-h", Some("a.example"), "/mcp", false),
            ("deep", None, "/mcp/v1/tools", false),
            ("cs", None, "/Case/Sens", true),
            ("cs-h", Some("a.example"), "/case", true),
            ("api", Some("b.example"), "/api", false),
            ("api-v", None, "/api/v2", false),
            ("root-h", Some("b.example"), "/", false),
            ("x", Some("a.example"), "/mcp/v1", true),
        ];
        for (name, host, prefix, cs) in routes {
            t.add(name, RouteMatch::compile(host, prefix, cs).unwrap())
                .unwrap();
        }
        let paths = [
            "/",
            "/mcp",
            "/MCP",
            "/mcp/",
            "/mcpx",
            "/mcp/v1",
            "/MCP/V1",
            "/mcp/v1/tools",
            "/mcp/v1/tools/x",
            "/mcp/V1/Tools/y",
            "/Case/Sens",
            "/case/sens",
            "/Case/Sens/z",
            "/case",
            "/CASE",
            "/case/x",
            "/api",
            "/api/v2",
            "/API/V2/x",
            "/api/v3",
            "/other",
            "/a/b/c/d",
        ];
        for host in ["a.example", "b.example", "c.example"] {
            for path in paths {
                assert_eq!(
                    t.lookup(host, path),
                    t.lookup_by_scan(host, path),
                    "{host} {path}"
                );
            }
        }
        // Without a root route, unmatched paths have no route.
        let mut t = Table::default();
        t.add("m", RouteMatch::compile(None, "/mcp", false).unwrap())
            .unwrap();
        for path in ["/", "/m", "/mcpx", "/mc/p", "/MCP/x"] {
            assert_eq!(t.lookup("h", path), t.lookup_by_scan("h", path), "{path}");
        }
        assert_eq!(t.lookup("h", "/MCP/x"), Some(0));
        assert_eq!(t.lookup("h", "/mcpx"), None);
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
