//! Route policy: does this verified principal get through this route?
//!
//! Runs after the token step on every request, cached token or not: the token's `aud`
//! must contain one of the route's resource identifiers (RFC 8707, SPEC-CHECKLIST §9.1),
//! and every scope the route requires must be present, directly or through
//! `scope_hierarchy` (MCP 2026-07-28: servers account for scope hierarchies).

use crate::config::Route;
use crate::error::Refusal;
use crate::mcp::{Calls, Need};
use crate::principal::Principal;
use crate::scope::RequiredScope;

pub fn check_audience(route: &Route, p: &Principal) -> Result<(), Refusal> {
    if p.any_audience
        || p.audiences
            .iter()
            .any(|a| route.audiences.iter().any(|r| **a == **r))
    {
        Ok(())
    } else {
        Err(Refusal::InvalidToken(
            "token audience does not include this resource",
        ))
    }
}

fn satisfied(required: &RequiredScope, p: &Principal) -> bool {
    required.satisfied_by.iter().any(|s| p.has_scope(s))
}

pub fn check_scopes(route: &Route, p: &Principal) -> Result<(), Refusal> {
    if route.scopes.iter().all(|r| satisfied(r, p)) {
        Ok(())
    } else {
        Err(Refusal::InsufficientScope)
    }
}

/// Route scopes plus what each MCP operation of the body needs. A refusal names every
/// scope the operation requires, in one challenge, so the client can step up once.
pub fn authorize_calls(route: &Route, p: &Principal, calls: &Calls) -> Result<(), Refusal> {
    let mut extra: Vec<&RequiredScope> = Vec::new();
    for op in &calls.ops {
        for need in route.mcp.needs(op) {
            match need {
                Need::Denied => return Err(Refusal::PolicyDenied),
                Need::Scopes(s) => extra.extend(s.iter()),
            }
        }
    }
    if route
        .scopes
        .iter()
        .chain(extra.iter().copied())
        .all(|r| satisfied(r, p))
    {
        return Ok(());
    }
    if extra.is_empty() {
        return Err(Refusal::InsufficientScope);
    }
    let mut names: Vec<&str> = Vec::new();
    for r in route.scopes.iter().chain(extra.iter().copied()) {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    Err(Refusal::ScopeFor(names.join(" ").into_boxed_str()))
}

/// Whether `p` could call tool `name` on `route` (for `tools/list` filtering).
pub fn tool_allowed(route: &Route, p: &Principal, name: &str) -> bool {
    match route.mcp.tool(name) {
        Need::Denied => false,
        Need::Scopes(s) => route.scopes.iter().chain(s.iter()).all(|r| satisfied(r, p)),
    }
}

/// Whether a caller may see a tool in a list: [`tool_allowed`] for a principal; without one
/// (an `auth: none` route), only a tool that needs no scope at all.
pub fn tool_visible(route: &Route, p: Option<&Principal>, name: &str) -> bool {
    match p {
        Some(p) => tool_allowed(route, p, name),
        None => match route.mcp.tool(name) {
            Need::Denied => false,
            Need::Scopes(s) => route.scopes.is_empty() && s.is_empty(),
        },
    }
}

/// Both route checks, audience first (a token for another resource is invalid here,
/// whatever its scopes).
pub fn authorize(route: &Route, p: &Principal) -> Result<(), Refusal> {
    check_audience(route, p)?;
    check_scopes(route, p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;
    use std::sync::Arc;

    fn principal(aud: &str, scopes: &str) -> Principal {
        Principal {
            method: crate::principal::AuthMethod::Jwt,
            any_audience: false,
            iss: Arc::from("https://as"),
            issuer_name: Arc::from("a"),
            subject: None,
            client_id: None,
            scopes: scopes.into(),
            audiences: Arc::from(vec![crate::scope::canonical_audience(aud).into_boxed_str()]),
            exp: i64::MAX / 2,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: None,
            iat: None,
            azp: None,
        }
    }

    fn config() -> Config {
        Config::from_yaml(
            "t",
            "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nscope_hierarchy: {files: ['files:read']}\nissuers: [{name: a, issuer: 'https://as'}]\nroutes:\n- {name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3', scopes: ['mcp:read']}\n- {name: f, path_prefix: /files, upstream: 'http://127.0.0.1:3', scopes: ['files:read']}\n",
        )
        .unwrap()
    }

    #[test]
    fn audience_exact_but_host_case_insensitive() {
        let c = config();
        let r = &c.routes[0];
        assert!(check_audience(r, &principal("https://mcp.example.com/mcp", "")).is_ok());
        assert!(check_audience(r, &principal("HTTPS://MCP.EXAMPLE.COM/mcp", "")).is_ok());
        for bad in [
            "https://mcp.example.com/mcp-evil",
            "https://mcp.example.com.evil/mcp",
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com",
            "https://mcp.example.com/MCP",
        ] {
            assert!(check_audience(r, &principal(bad, "")).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_exact_tokens_and_hierarchy() {
        let c = config();
        assert!(check_scopes(&c.routes[0], &principal("x", "mcp:read")).is_ok());
        assert!(check_scopes(&c.routes[0], &principal("x", "mcp:readx")).is_err());
        assert!(check_scopes(&c.routes[0], &principal("x", "a mcp:read b")).is_ok());
        assert!(check_scopes(&c.routes[1], &principal("x", "files")).is_ok());
        assert!(check_scopes(&c.routes[1], &principal("x", "files:write")).is_err());
    }
}
