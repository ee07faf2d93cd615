//! The token step: credentials → a verified [`Principal`], through the verified-token cache.
//!
//! [`Authenticator::authenticate_request`] takes the credentials the route accepts (a
//! Bearer or DPoP token, or a legacy API key checked in `apikeys`). A token is judged only
//! by the issuer entries the route accepts. It is looked up in the cache ([`TokenCache`]);
//! on a miss it forks on its shape: a token that is not a JWT goes to the route's
//! introspecting entry (`introspect`, with its own cache per entry); a JWT is parsed once
//! and judged by each of the route's entries whose `issuer` is its `iss`, in route order,
//! until one accepts it: introspected when that entry sets `token_format: opaque`, else
//! verified against that entry's current keys (with one single-flight refetch for an
//! unknown `kid`) and its entry-level claims checked (`exp`, `nbf`, `iat`, `typ`, required
//! claims). Every path yields the same [`Principal`]. Route-level checks (audience,
//! scopes) run on every request, cached or not (`auth::check_audience`, `mcp::policy`).

use std::sync::Arc;

use crate::auth::apikeys::KeyStore;
use crate::auth::cache::TokenCache;
use crate::auth::credentials::Credentials;
use crate::auth::issuer::{IssuerConfig, TokenFormat};
use crate::auth::jwks::{IssuerKeys, KeysUnavailable};
use crate::auth::jwt::{self, check_times, KeyMiss, TokenError};
use crate::auth::{Issuers, Presented, RouteAuth};
use crate::clock::now_unix;
use crate::error::Refusal;
use crate::metrics;
use crate::principal::{token_hash, AuthMethod, Principal, TokenHash};
use crate::scope::canonical_audience;

/// Verifies credentials, remembering verified tokens.
pub struct Authenticator {
    cache: TokenCache,
}

const NO_KEY: Refusal = Refusal::InvalidToken("no issuer key matches the token's kid and alg");

impl Authenticator {
    pub fn new(max_entries: u64) -> Authenticator {
        Authenticator {
            cache: TokenCache::new(max_entries),
        }
    }

    /// Authenticate a request with the credentials `route` accepts (issuer-level checks
    /// only). `api_keys`: the key file, when configured. `seen` gets the SHA-256 of the
    /// token or key, for the audit line. On `auth: both`, a Bearer token is judged as OAuth
    /// only: a bad token is not rescued by an API key sent alongside.
    pub async fn authenticate_request<'h>(
        &self,
        issuers: &Issuers,
        api_keys: Option<&KeyStore>,
        route: &RouteAuth,
        creds: Credentials<'h>,
        seen: &mut Option<TokenHash>,
    ) -> Result<(Arc<Principal>, Presented<'h>), Refusal> {
        let keys = api_keys.filter(|_| route.mode.accepts_api_key());
        match (creds, keys) {
            (Credentials::Bearer(token), _) => {
                let hash = token_hash(token);
                *seen = Some(hash);
                let p = self
                    .authenticate(issuers, &route.issuers, token, &hash)
                    .await?;
                Ok((p, Presented::Bearer))
            }
            (Credentials::Dpop(token), _) => {
                let hash = token_hash(token);
                *seen = Some(hash);
                let p = self
                    .authenticate(issuers, &route.issuers, token, &hash)
                    .await?;
                Ok((p, Presented::Dpop(token)))
            }
            (Credentials::ApiKey(key), Some(store)) => {
                *seen = Some(token_hash(key));
                let now = now_unix();
                let sunset = route.deprecation.as_ref().and_then(|d| d.sunset_at);
                if sunset.is_some_and(|t| now >= t) {
                    return Err(Refusal::InvalidApiKey(
                        "API keys are no longer accepted on this route (sunset)",
                    ));
                }
                store
                    .authenticate(key, now)
                    .map(|p| (p, Presented::ApiKey))
                    .map_err(|r| r.refusal())
            }
            _ => Err(Refusal::NoCredentials),
        }
    }

    /// Validate a bearer token with the issuer entries `route_issuers` (indices into
    /// `issuers`; issuer-level checks only).
    ///
    /// A cached verdict counts only for the entry that made it and only while that entry's
    /// settings are unchanged (the cache key holds the entry's fingerprint). On a miss, a
    /// JWT is judged by each of the route's entries whose `issuer` is its `iss`, in the
    /// route's order, until one accepts it (several entries may share an `issuer`: a
    /// staging and a production key set, or one AS once with JWKS and once with
    /// introspection).
    pub async fn authenticate(
        &self,
        issuers: &Issuers,
        route_issuers: &[usize],
        token: &str,
        hash: &TokenHash,
    ) -> Result<Arc<Principal>, Refusal> {
        let now = now_unix();
        if let Some(p) = self.cached(issuers, route_issuers, hash, now) {
            return Ok(p);
        }
        let parsed = jwt::parse(token);
        let shape_iss: Option<String>;
        let iss = match &parsed {
            Ok(p) => p.claims.iss.as_deref(),
            Err(e) => {
                // Not a JWT we can read: the route's introspecting entry judges it (an
                // opaque token names no issuer; the config allows one such entry per
                // route), or, when it is JWT-shaped, an opaque-format entry named by its
                // unverified `iss`.
                let introspecting = route_issuers
                    .iter()
                    .find(|&&i| issuers.configs[i].introspection.is_some());
                let Some(&i) = introspecting else {
                    return Err(Refusal::InvalidToken(e.0));
                };
                match jwt::shape(token) {
                    jwt::Shape::Opaque => return issuers.introspect(i, token, hash).await,
                    jwt::Shape::Jwt { iss } => {
                        shape_iss = iss;
                        shape_iss.as_deref()
                    }
                }
            }
        };
        let Some(iss) = iss else {
            return Err(Refusal::InvalidToken(match &parsed {
                Err(e) => e.0,
                Ok(_) => "token has no iss claim",
            }));
        };
        self.judge(issuers, route_issuers, iss, &parsed, token, hash, now)
            .await
    }

    /// A cached verdict of one of the route's JWT entries, still within its times.
    fn cached(
        &self,
        issuers: &Issuers,
        route_issuers: &[usize],
        hash: &TokenHash,
        now: i64,
    ) -> Option<Arc<Principal>> {
        for &i in route_issuers {
            let ic = &issuers.configs[i];
            if !ic.uses_jwks() {
                continue;
            }
            if let Some(p) = self.cache.get(hash, ic, now) {
                metrics::token_cache(true);
                // Times are judged with the entry's current skew (the fingerprint makes it
                // the one the token was verified with).
                if check_times(p.exp, p.nbf, p.iat, ic.clock_skew as i64, now).is_ok() {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Judge a token naming `iss` by each of the route's entries for that issuer.
    #[allow(clippy::too_many_arguments)]
    async fn judge(
        &self,
        issuers: &Issuers,
        route_issuers: &[usize],
        iss: &str,
        parsed: &Result<jwt::Parsed<'_>, TokenError>,
        token: &str,
        hash: &TokenHash,
        now: i64,
    ) -> Result<Arc<Principal>, Refusal> {
        let mut first_error: Option<Refusal> = None;
        let mut unavailable: Option<Refusal> = None;
        let mut judged = false;
        for &i in route_issuers {
            let ic = &issuers.configs[i];
            if *ic.issuer != *iss {
                continue;
            }
            judged = true;
            let verdict = match (parsed, ic.token_format) {
                (_, TokenFormat::Opaque) => issuers.introspect(i, token, hash).await,
                (Ok(parsed), TokenFormat::Jwt) => {
                    metrics::token_cache(false);
                    match self.verify(ic, &issuers.keys[i], parsed, now).await {
                        Ok(p) => {
                            let p = Arc::new(p);
                            self.cache.insert(hash, ic, p.clone());
                            Ok(p)
                        }
                        Err(e) => Err(e),
                    }
                }
                (Err(e), TokenFormat::Jwt) => Err(Refusal::InvalidToken(e.0)),
            };
            match verdict {
                Ok(p) => return Ok(p),
                Err(e @ (Refusal::Unavailable(_) | Refusal::IntrospectionUnavailable(_))) => {
                    unavailable.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !judged {
            return Err(Refusal::InvalidToken(
                "token issuer is not accepted on this route",
            ));
        }
        // An entry that could not judge the token (keys or AS unavailable) may have
        // accepted it: the client is told to retry rather than that the token is bad.
        Err(unavailable
            .or(first_error)
            .unwrap_or(Refusal::InvalidToken("token is not valid")))
    }

    /// Verify a parsed JWT with one issuer entry's settings and keys.
    async fn verify(
        &self,
        issuer: &IssuerConfig,
        keys: &Arc<IssuerKeys>,
        parsed: &jwt::Parsed<'_>,
        now: i64,
    ) -> Result<Principal, Refusal> {
        check_header(issuer, parsed)?;
        check_signature(keys, parsed).await?;
        self.principal(issuer, &parsed.claims, now)
    }

    /// The same verdict as the request path's, over a fixed key set (no fetch, no
    /// refetch, no cache): header policy, signature, claims. The seam the fuzz targets,
    /// the differential test and the Wycheproof vectors use (`crate::fuzzing`).
    pub fn verify_with_keys(
        &self,
        issuer: &IssuerConfig,
        keys: &[jwt::VerifyKey],
        parsed: &jwt::Parsed<'_>,
        now: i64,
    ) -> Result<Principal, Refusal> {
        check_header(issuer, parsed)?;
        match jwt::verify_signature(parsed, keys) {
            Ok(()) => {}
            Err(KeyMiss::BadSignature) => {
                return Err(Refusal::InvalidToken("token signature is invalid"))
            }
            Err(KeyMiss::NoKey) => return Err(NO_KEY),
        }
        self.principal(issuer, &parsed.claims, now)
    }

    /// The principal of verified claims: entry-level claim checks, scopes merged, repeated
    /// strings interned.
    fn principal(
        &self,
        issuer: &IssuerConfig,
        c: &jwt::RawClaims,
        now: i64,
    ) -> Result<Principal, Refusal> {
        let invalid = |e: TokenError| Refusal::InvalidToken(e.0);
        let skew = issuer.clock_skew as i64;
        let date = |n: &Option<serde_json::Number>, what| {
            n.as_ref()
                .map(|n| jwt::numeric_date(n, what))
                .transpose()
                .map_err(invalid)
        };
        let exp = date(&c.exp, "token exp is not a valid NumericDate")?
            .ok_or(Refusal::InvalidToken("token has no exp claim"))?;
        let nbf = date(&c.nbf, "token nbf is not a valid NumericDate")?;
        let iat = date(&c.iat, "token iat is not a valid NumericDate")?;
        check_times(exp, nbf, iat, skew, now).map_err(invalid)?;
        let Some(aud) = &c.aud else {
            return Err(Refusal::InvalidToken("token has no aud claim"));
        };
        let audiences: Vec<Box<str>> = aud
            .iter()
            .map(|a| canonical_audience(a).into_boxed_str())
            .collect();
        let client_id = c.client_id.as_deref().or(c.azp.as_deref());
        // `azp` is the client too where `client_id` is absent or names another (a
        // revocation by client matches either).
        let azp = c.azp.as_deref().filter(|a| Some(*a) != client_id);
        if issuer.require_at_jwt
            && (c.sub.is_none() || client_id.is_none() || iat.is_none() || c.jti.is_none())
        {
            return Err(Refusal::InvalidToken(
                "token lacks a claim RFC 9068 requires (sub, client_id, iat, jti)",
            ));
        }
        let scopes = crate::scope::merge(scope_claims(c, &issuer.scope_claims).map_err(invalid)?);
        let cnf_jkt = jwt::cnf_jkt(c.cnf.as_ref()).map_err(invalid)?;
        let (scopes, client_id, audiences) = self.cache.intern(&scopes, client_id, &audiences);
        Ok(Principal {
            cnf_jkt,
            jti: c.jti.as_deref().map(Box::from),
            iat,
            method: AuthMethod::Jwt,
            any_audience: false,
            iss: issuer.issuer.clone(),
            issuer_name: issuer.name.clone(),
            subject: c.sub.as_deref().map(Box::from),
            client_id,
            azp: azp.map(Arc::from),
            scopes,
            audiences,
            exp,
            nbf,
            skew,
        })
    }

    /// Verified tokens in the cache (for metrics and benches).
    pub fn cached_tokens(&self) -> u64 {
        self.cache.len()
    }
}

/// The scope strings of a token, from the claims its issuer's `scope_claims` names, in that
/// order: `scope` (a space-delimited string), `scp` (the same, or an array), `roles` (an
/// array). Array members that are not one scope token (a space inside) are left out; a
/// `roles` claim that is not an array of strings refuses the token, since the issuer was
/// said to carry scopes in it.
pub fn scope_claims<'c>(
    c: &'c jwt::RawClaims,
    claims: &[jwt::ScopeClaim],
) -> Result<Vec<&'c str>, TokenError> {
    let mut out = Vec::new();
    for claim in claims {
        match claim {
            jwt::ScopeClaim::Scope => out.extend(c.scope.as_deref()),
            jwt::ScopeClaim::Scp => match &c.scp {
                Some(jwt::ScpClaim::One(s)) => out.push(s.as_str()),
                Some(jwt::ScpClaim::Many(v)) => {
                    out.extend(v.iter().filter(|s| !s.contains(' ')).map(String::as_str))
                }
                None => {}
            },
            jwt::ScopeClaim::Roles => match &c.roles {
                None => {}
                Some(serde_json::Value::Array(v)) => {
                    for r in v {
                        match r {
                            serde_json::Value::String(s) if !s.contains(' ') => out.push(s),
                            serde_json::Value::String(_) => {}
                            _ => {
                                return Err(TokenError(
                                    "token roles claim is not an array of strings",
                                ))
                            }
                        }
                    }
                }
                Some(_) => return Err(TokenError("token roles claim is not an array of strings")),
            },
        }
    }
    Ok(out)
}

/// The entry's header policy: an allowed `alg`, an access-token `typ`.
fn check_header(issuer: &IssuerConfig, parsed: &jwt::Parsed<'_>) -> Result<(), Refusal> {
    if !issuer.algorithms.contains(&parsed.alg) {
        return Err(Refusal::InvalidToken(
            "token alg is not allowed for this issuer",
        ));
    }
    jwt::check_typ(parsed.typ.as_deref(), issuer.require_at_jwt)
        .map_err(|e| Refusal::InvalidToken(e.0))
}

/// The signature against the entry's current keys, with one single-flight refetch for a
/// `kid` the keys do not have (or keys never fetched or too stale).
async fn check_signature(keys: &Arc<IssuerKeys>, parsed: &jwt::Parsed<'_>) -> Result<(), Refusal> {
    let mut key_set = match keys.snapshot() {
        Ok(s) => Some(s),
        Err(KeysUnavailable::NeverFetched | KeysUnavailable::TooStale) => {
            keys.refetch().await;
            keys.snapshot().ok()
        }
    };
    let mut refetched = false;
    loop {
        let Some(snap) = key_set.as_ref() else {
            return Err(Refusal::Unavailable(
                "the issuer's signing keys are unavailable",
            ));
        };
        match jwt::verify_signature(parsed, &snap.keys) {
            Ok(()) => return Ok(()),
            Err(KeyMiss::BadSignature) => {
                return Err(Refusal::InvalidToken("token signature is invalid"))
            }
            Err(KeyMiss::NoKey) if !refetched => {
                refetched = true;
                if !keys.refetch().await {
                    return Err(NO_KEY);
                }
                key_set = keys.snapshot().ok();
            }
            Err(KeyMiss::NoKey) => return Err(NO_KEY),
        }
    }
}
