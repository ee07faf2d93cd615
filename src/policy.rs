//! Route policy: does this verified principal get through this route?
//!
//! Runs after the token step on every request, cached token or not: the token's `aud`
//! must contain one of the route's resource identifiers (RFC 8707, SPEC-CHECKLIST §9.1),
//! and every scope the route requires must be present, directly or through
//! `scope_hierarchy` (MCP 2026-07-28: servers account for scope hierarchies).

use crate::auth::Principal;
use crate::config::Route;
use crate::error::Refusal;

pub fn check_audience(route: &Route, p: &Principal) -> Result<(), Refusal> {
    if p.audiences
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

pub fn check_scopes(route: &Route, p: &Principal) -> Result<(), Refusal> {
    for required in &route.scopes {
        if !required.satisfied_by.iter().any(|s| p.has_scope(s)) {
            return Err(Refusal::InsufficientScope);
        }
    }
    Ok(())
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
            iss: Arc::from("https://as"),
            issuer_name: Arc::from("a"),
            subject: None,
            client_id: None,
            scopes: scopes.into(),
            audiences: vec![crate::config::canonical_audience(aud).into_boxed_str()]
                .into_boxed_slice(),
            exp: i64::MAX / 2,
            nbf: None,
            skew: 0,
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
