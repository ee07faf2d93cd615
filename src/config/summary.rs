//! What `mcpgate check` prints: the summary of a compiled config, and the warnings every
//! load logs (a `case_sensitive_prefix` route whose other letter cases reach a route that
//! protects less).

use std::sync::Arc;

use crate::auth::dpop::DpopMode;
use crate::auth::AuthMode;
use crate::config::{Config, Route};
use crate::path;

impl Config {
    /// A short human-readable summary, printed by `mcpgate check`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: OK\n  listen {} (public {}), admin {}\n",
            self.source,
            self.listeners.address,
            self.listeners.public.url,
            self.listeners.admin_address
        );
        self.issuers_summary(&mut s);
        if let Some(r) = &self.state.redis {
            s.push_str(&format!(
                "  state: redis {} prefix {:?} timeout {} ms; dpop replay fail {}, revocations fail {}{}{}\n",
                r.redacted,
                r.key_prefix,
                r.timeout.as_millis(),
                self.state.dpop_replay_fail.as_str(),
                self.state.revocations_fail.as_str(),
                if r.readyz { "; in /readyz" } else { "" },
                if r.hmac_key.is_some() {
                    "; revocations authenticated (HMAC)"
                } else {
                    ""
                }
            ));
        }
        self.limits_summary(&mut s);
        if let Some(t) = &self.listeners.admin_token {
            s.push_str(&format!(
                "  admin token: {} (POST /revocations enabled)\n",
                t.file.display()
            ));
        }
        if let Some(k) = &self.api_keys {
            s.push_str(&format!(
                "  api keys: {} in {} (header {})\n",
                k.len(),
                k.file.display(),
                k.header
            ));
        }
        s.push_str(&format!("  routes ({}):\n", self.routes.len()));
        for r in &self.routes {
            self.route_summary(r, &mut s);
        }
        s
    }

    /// Whether limits are shared by the replicas or each replica's own, and what they are.
    fn limits_summary(&self, s: &mut String) {
        let q = &self.quotas;
        let routes_have = self.routes.iter().any(|r| !r.quotas.rate.is_empty());
        if routes_have {
            s.push_str(if q.shared {
                "  rate limits: shared by every replica through Redis (state.redis), one round trip per decision\n"
            } else {
                "  rate limits: per replica (no state.redis): each replica allows the whole rate\n"
            });
        }
        for l in &q.rate {
            let fail = if q.shared {
                format!(
                    "; Redis down: {}",
                    if l.fail == crate::failmode::FailMode::Open {
                        "this replica's buckets (fail open)"
                    } else {
                        "503 (fail closed)"
                    }
                )
            } else {
                String::new()
            };
            s.push_str(&format!("    {}{fail}\n", l.describe()));
        }
        if let Some(c) = &q.streams {
            s.push_str(&format!(
                "  concurrency: {} open requests per identity (per replica)\n",
                c.max
            ));
        }
        if !q.trusted.is_empty() {
            let nets: Vec<String> = q.trusted.nets().iter().map(|n| n.to_string()).collect();
            s.push_str(&format!(
                "  trusted proxies (X-Forwarded-For): {}\n",
                nets.join(", ")
            ));
        }
    }

    fn issuers_summary(&self, s: &mut String) {
        s.push_str(&format!("  issuers ({}):\n", self.issuers.len()));
        for i in &self.issuers {
            let jwks = i
                .jwks_uri
                .as_deref()
                .unwrap_or("(discovered from metadata)");
            if i.uses_jwks() {
                s.push_str(&format!("    {}  {}  jwks {}\n", i.name, i.issuer, jwks));
            } else {
                s.push_str(&format!(
                    "    {}  {}  opaque tokens only\n",
                    i.name, i.issuer
                ));
            }
            if let Some(intro) = &i.introspection {
                s.push_str(&format!(
                    "      introspection {}  cache {} s  timeout {} ms{}\n",
                    intro
                        .endpoint
                        .as_deref()
                        .unwrap_or("(discovered from metadata)"),
                    intro.cache_max.as_secs(),
                    intro.timeout.as_millis(),
                    if intro.require_aud {
                        ""
                    } else {
                        "  aud not required"
                    }
                ));
            }
        }
    }

    fn route_summary(&self, r: &Route, s: &mut String) {
        let host = r
            .matching
            .host
            .as_deref()
            .map(|h| format!("{h} "))
            .unwrap_or_default();
        let issuers = r
            .auth
            .issuers
            .iter()
            .map(|&i| self.issuers[i].name.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let scopes = &r.auth.scope_challenge;
        let auth = match r.auth.mode {
            AuthMode::Oauth => format!("oauth scopes [{scopes}] issuers [{issuers}]"),
            AuthMode::Both => {
                format!("oauth or api key, scopes [{scopes}] issuers [{issuers}]")
            }
            AuthMode::ApiKey => format!("api key, scopes [{scopes}]"),
            AuthMode::None => "auth none".to_string(),
        };
        s.push_str(&format!(
            "    {}  {}{} -> {}  {}\n",
            r.name, host, r.matching.path_prefix, r.upstream.addr.authority, auth
        ));
        if r.auth.mode.accepts_oauth() {
            s.push_str(&format!(
                "      resource {}\n      metadata {}\n",
                r.resource.resource, r.resource.metadata_url
            ));
        }
        let own: Vec<String> = r
            .quotas
            .rate
            .iter()
            .filter(|l| l.scope.is_some())
            .map(|l| l.describe())
            .collect();
        if !r.quotas.is_empty() {
            let names: Vec<&str> = r.quotas.rate.iter().map(|l| &*l.name).collect();
            let streams = r
                .quotas
                .streams
                .as_ref()
                .map(|c| format!("; {} open requests per identity", c.max))
                .unwrap_or_default();
            s.push_str(&format!("      limits [{}]{streams}\n", names.join(", ")));
            for d in own {
                s.push_str(&format!("        route's own: {d}\n"));
            }
        }
        if r.upstream_auth.mode() != crate::upstream_auth::Mode::None {
            s.push_str(&format!(
                "      upstream credential {}\n",
                r.upstream_auth.describe()
            ));
        }
        if let Some(d) = &r.auth.deprecation {
            let text = |v: &http::HeaderValue| v.to_str().unwrap_or_default().to_string();
            s.push_str(&format!(
                "      api keys: Deprecation {}{}\n",
                text(&d.deprecation),
                d.sunset
                    .as_ref()
                    .map(|s| format!(", Sunset {}", text(s)))
                    .unwrap_or_default()
            ));
        }
    }
}

/// Log [`warnings`] (at start and at every reload).
pub fn log_warnings(config: &Config) {
    for w in warnings(&config.routes) {
        tracing::warn!(warning = %w, "configuration warning");
    }
}

/// Every `mcpgate check` warning: [`case_warnings`], then each route's `upstream_auth`
/// warning (the gateway's own credential on an `auth: none` route).
pub fn warnings(routes: &[Arc<Route>]) -> Vec<String> {
    let mut out = case_warnings(routes);
    out.extend(routes.iter().filter_map(|r| {
        r.upstream_auth
            .warning(r.auth.mode)
            .map(|w| format!("route {:?}: {w}", r.name))
    }));
    out
}

/// `mcpgate check` warnings: a `case_sensitive_prefix` route that requires credentials,
/// some letter-case variant of whose prefix reaches another route (host-less or on the
/// same host) that does not protect at least as much. Such a variant is forwarded under
/// the other route's rules, which is safe only if the upstream really is case-sensitive.
pub fn case_warnings(routes: &[Arc<Route>]) -> Vec<String> {
    let mut out = Vec::new();
    for b in routes
        .iter()
        .filter(|b| b.matching.case_sensitive && b.auth.mode != AuthMode::None)
    {
        let bm = &b.matching;
        for a in routes {
            let am = &a.matching;
            let same_host = am.host.is_none() || bm.host.is_none() || am.host == bm.host;
            if Arc::ptr_eq(a, b)
                || !same_host
                || !path::has_prefix_ignore_ascii_case(&bm.path_prefix, &am.path_prefix)
                || !case_variant_reaches(a, &bm.path_prefix)
            {
                continue;
            }
            if let Some(why) = less_protected(a, b) {
                out.push(format!(
                    "route {:?} has case_sensitive_prefix, so other letter cases of {} go to route {:?} ({}), which {why}",
                    b.name, bm.path_prefix, a.name, am.path_prefix
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
    let am = &a.matching;
    if am.path_prefix == "/" {
        return letters(prefix);
    }
    let (head, tail) = prefix.split_at(am.path_prefix.len().min(prefix.len()));
    letters(tail)
        || if am.case_sensitive {
            head != am.path_prefix
        } else {
            letters(head)
        }
}

/// Why route `a` protects less than route `b`, if it does.
fn less_protected(a: &Route, b: &Route) -> Option<String> {
    if a.auth.mode != b.auth.mode {
        return Some(format!("has auth: {}", a.auth.mode.as_str()));
    }
    if let Some(s) = b
        .auth
        .scopes
        .iter()
        .find(|s| !a.auth.scopes.iter().any(|t| t.name == s.name))
    {
        return Some(format!("does not require scope {}", s.name));
    }
    if a.auth.issuers.iter().any(|i| !b.auth.issuers.contains(i)) {
        return Some("accepts tokens from issuers the other does not".into());
    }
    if b.mcp.inspects() && !a.mcp.inspects() {
        return Some("has no MCP tool policy".into());
    }
    if b.dpop.mode == DpopMode::Required && a.dpop.mode != DpopMode::Required {
        return Some("does not require DPoP".into());
    }
    None
}
