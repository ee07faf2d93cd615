//! Authentication: who is calling, proven by a credential the route accepts.
//!
//! The credentials and token steps of the request flow, and the sections of the
//! configuration they own: `issuers` ([`issuer`]), `api_keys` ([`apikeys`]), `dpop`
//! ([`dpop`]), `token_cache` ([`cache`]), and a route's `auth`, `issuers` and `scopes`
//! ([`RouteAuth`]).
//!
//! - [`credentials`]: `Authorization` and API key syntax (RFC 6750 §2);
//! - [`token`]: credentials → verified [`Principal`] through the verified-token cache;
//! - [`jwt`], [`jwks`]: strict JWS parsing and verification, key sets per issuer;
//! - [`introspect`]: RFC 7662 introspection of opaque tokens;
//! - [`dpop`]: RFC 9449 proofs and their replay store;
//! - [`revocation`]: the revocation list, checked on every request;
//! - [`check_audience`]: the token's audience against the route's resource (RFC 8707).
//!
//! [`Issuers`] pairs the compiled issuer entries of a snapshot with their key stores and
//! introspection clients, kept across reloads while an entry's settings do not change.

pub mod apikeys;
pub mod cache;
pub mod credentials;
pub mod discovery;
pub mod dpop;
pub mod introspect;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod revocation;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::background::Fetcher;
use crate::compile::{closest, list_names, CompileError};
use crate::error::Refusal;
use crate::principal::{Principal, TokenHash};
use crate::scope::{check_scope_token, Hierarchy, RequiredScope};
use apikeys::{Deprecation, KeyStore};
use introspect::Introspector;
use issuer::IssuerConfig;
use jwks::IssuerKeys;
pub use token::Authenticator;

/// A route's `auth`: which credentials it takes.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    Oauth,
    None,
    /// Legacy API keys only.
    ApiKey,
    /// OAuth or an API key (a Bearer token is judged as OAuth only).
    Both,
}

impl AuthMode {
    pub fn accepts_oauth(self) -> bool {
        matches!(self, AuthMode::Oauth | AuthMode::Both)
    }

    pub fn accepts_api_key(self) -> bool {
        matches!(self, AuthMode::ApiKey | AuthMode::Both)
    }

    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Oauth => "oauth",
            AuthMode::None => "none",
            AuthMode::ApiKey => "api_key",
            AuthMode::Both => "both",
        }
    }
}

/// How the credentials were presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'h> {
    Bearer,
    /// `Authorization: DPoP <token>`; the token, for the proof's `ath`.
    Dpop(&'h str),
    ApiKey,
}

/// A route's authentication: the credentials it takes, the issuer entries that may judge
/// its tokens, the scopes it requires (pre-resolved against `scope_hierarchy`).
#[derive(Debug)]
pub struct RouteAuth {
    pub mode: AuthMode,
    /// Indices into the config's issuer entries, in the route's order.
    pub issuers: Vec<usize>,
    pub scopes: Vec<RequiredScope>,
    /// `scope="..."` for challenges: every scope the route requires.
    pub scope_challenge: String,
    /// The API key header (set on every route when `api_keys` is configured, so that
    /// client-sent keys are stripped upstream).
    pub api_key_header: Option<HeaderName>,
    /// Response headers for requests authenticated by API key (`auth: api_key`/`both`).
    pub deprecation: Option<Deprecation>,
}

/// What a route's `auth` part is compiled against.
pub struct Known<'a> {
    pub issuers: &'a [Arc<IssuerConfig>],
    pub issuer_index: &'a HashMap<String, usize>,
    pub hierarchy: &'a Hierarchy,
    pub api_keys: Option<&'a KeyStore>,
}

impl RouteAuth {
    /// Compile a route's `auth`, `issuers` and `scopes` (the deprecation headers are set
    /// by the caller, which knows the metadata URL).
    pub fn compile(
        mode: AuthMode,
        issuer_names: Option<&[String]>,
        scopes: &[String],
        known: &Known<'_>,
    ) -> Result<RouteAuth, CompileError> {
        let issuers: Vec<usize> = match issuer_names {
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(j, n)| {
                    known.issuer_index.get(n).copied().ok_or_else(|| {
                        let names = known.issuers.iter().map(|ic| &*ic.name);
                        let hint = closest(n, names.clone())
                            .map(|c| format!(" (did you mean {c:?}?)"))
                            .unwrap_or_default();
                        CompileError::new(
                            format!("issuers[{j}]"),
                            format!(
                                "names issuer {n:?}, which is not configured{hint}; the issuers \
                                 configured are: {}",
                                list_names(names)
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            None => (0..known.issuers.len()).collect(),
        };
        if mode.accepts_oauth() && issuers.is_empty() {
            return Err(CompileError::new(
                "auth",
                "auth accepts oauth but no issuer is configured",
            ));
        }
        let mut required = Vec::new();
        for (j, s) in scopes.iter().enumerate() {
            check_scope_token(s).map_err(|e| CompileError::new(format!("scopes[{j}]"), e))?;
            if s == "offline_access" {
                return Err(CompileError::new(
                    format!("scopes[{j}]"),
                    "offline_access cannot be a required scope",
                ));
            }
            required.push(known.hierarchy.required(s));
        }
        Ok(RouteAuth {
            mode,
            issuers,
            scopes: required,
            scope_challenge: scopes.join(" "),
            api_key_header: known.api_keys.map(|k| k.header.clone()),
            deprecation: None,
        })
    }

    /// Checks that need the whole route: keys configured for a route that takes them, at
    /// most one introspecting entry.
    pub fn check(&self, known: &Known<'_>) -> Result<(), CompileError> {
        if self.mode.accepts_api_key() && known.api_keys.is_none() {
            return Err(CompileError::new(
                "auth",
                "accepts API keys (auth: api_key or both) but no api_keys file is configured",
            ));
        }
        issuer::check_route_issuers(self.mode, &self.issuers, known.issuers)
            .map_err(|e| CompileError::new("issuers", e))
    }

    /// The header a key may come in on this route (`None` when it takes no keys).
    pub fn key_header(&self) -> Option<&HeaderName> {
        self.api_key_header
            .as_ref()
            .filter(|_| self.mode.accepts_api_key())
    }
}

/// The token's audience must include one of the route's resource identifiers (canonical
/// forms; RFC 8707, SPEC-CHECKLIST §9.1). Checked on every request, cached token or not.
pub fn check_audience(audiences: &[String], p: &Principal) -> Result<(), Refusal> {
    if p.any_audience
        || p.audiences
            .iter()
            .any(|a| audiences.iter().any(|r| **a == **r))
    {
        Ok(())
    } else {
        Err(Refusal::InvalidToken(
            "token audience does not include this resource",
        ))
    }
}

/// The issuer entries of a config snapshot and, per entry (same index), its key store and
/// its introspection client (`None` without an `introspection` block).
pub struct Issuers {
    pub configs: Vec<Arc<IssuerConfig>>,
    pub keys: Vec<Arc<IssuerKeys>>,
    pub introspectors: Vec<Option<Arc<Introspector>>>,
}

/// Two issuer entries share a key store when the keys come from the same place (and are
/// used the same way: switching an issuer to `token_format: opaque` drops the JWTs verified
/// with its keys from the token cache, so they get introspected from then on).
fn same_key_source(a: &IssuerConfig, b: &IssuerConfig) -> bool {
    a.token_format == b.token_format
        && a.issuer == b.issuer
        && a.jwks_uri == b.jwks_uri
        && a.algorithms == b.algorithms
        && a.refresh == b.refresh
        && a.max_stale == b.max_stale
        && a.ca == b.ca
}

impl Issuers {
    /// The runtime of `configs`: warm key stores and introspection caches of `old` are
    /// kept for entries whose settings did not change. Key sets are fetched (refreshed in
    /// the background) only for `in_use`: entries a route accepts JWTs from.
    pub fn build(
        configs: &[Arc<IssuerConfig>],
        in_use: &[usize],
        capacity: u64,
        old: Option<&Issuers>,
        fetcher: &Arc<Fetcher>,
    ) -> Issuers {
        let keys = configs
            .iter()
            .enumerate()
            .map(|(i, ic)| {
                let reused = old.and_then(|o| {
                    o.configs
                        .iter()
                        .position(|oc| same_key_source(oc, ic))
                        .map(|j| o.keys[j].clone())
                });
                let k = reused.unwrap_or_else(|| IssuerKeys::new(ic.clone(), fetcher.clone()));
                if in_use.contains(&i) && ic.uses_jwks() && !k.is_started() {
                    k.start();
                }
                k
            })
            .collect();
        let introspectors = configs
            .iter()
            .map(|ic| {
                let wanted = ic.introspected()?;
                let reused = old.and_then(|o| {
                    o.introspectors
                        .iter()
                        .flatten()
                        .find(|x| x.serves(&wanted, capacity))
                        .cloned()
                });
                Some(reused.unwrap_or_else(|| Introspector::new(wanted, capacity, fetcher.clone())))
            })
            .collect();
        Issuers {
            configs: configs.to_vec(),
            keys,
            introspectors,
        }
    }

    /// Ask issuer entry `i`'s introspection client about `token`.
    pub async fn introspect(
        &self,
        i: usize,
        token: &str,
        hash: &TokenHash,
    ) -> Result<Arc<Principal>, Refusal> {
        match self.introspectors.get(i).and_then(Option::as_ref) {
            Some(introspector) => introspector.authenticate(token, hash).await,
            None => Err(Refusal::IntrospectionUnavailable(
                "the issuer's introspection client is not available",
            )),
        }
    }

    /// Names of the entries in `in_use` whose tokens are JWTs and that have no usable keys.
    pub fn unready(&self, in_use: &[usize]) -> Vec<String> {
        in_use
            .iter()
            .filter(|&&i| self.configs[i].uses_jwks() && !self.keys[i].is_ready())
            .map(|&i| self.configs[i].name.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::principal::AuthMethod;

    fn principal(aud: &str) -> Principal {
        Principal {
            method: AuthMethod::Jwt,
            any_audience: false,
            iss: Arc::from("https://as"),
            issuer_name: Arc::from("a"),
            subject: None,
            client_id: None,
            scopes: crate::scope::ScopeSet::parse(""),
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

    #[test]
    fn audience_exact_but_host_case_insensitive() {
        let route = vec!["https://mcp.example.com/mcp".to_string()];
        assert!(check_audience(&route, &principal("https://mcp.example.com/mcp")).is_ok());
        assert!(check_audience(&route, &principal("HTTPS://MCP.EXAMPLE.COM/mcp")).is_ok());
        for bad in [
            "https://mcp.example.com/mcp-evil",
            "https://mcp.example.com.evil/mcp",
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com",
            "https://mcp.example.com/MCP",
        ] {
            assert!(check_audience(&route, &principal(bad)).is_err(), "{bad}");
        }
    }
}
