//! Token validation: credentials → verified [`Principal`], with a verified-token cache.
//!
//! The token step of the request flow. [`Authenticator::authenticate_request`] takes
//! the credentials the route accepts (a Bearer token, or a legacy API key checked in
//! `apikeys`). A token is judged only by the issuer entries the route accepts. It is
//! looked up in a bounded cache keyed by its SHA-256 *and* the fingerprint of the entry
//! that verified it (every setting that shaped the verdict), whose entries are never
//! used past `exp`; on a miss it forks on its shape: a token that is not a JWT goes to
//! the route's introspecting entry (`introspect`, with its own cache per entry); a JWT
//! is parsed once and judged by each of the route's entries whose `issuer` is its
//! `iss`, in route order, until one accepts it: introspected when that entry sets
//! `token_format: opaque`, else verified against that entry's current keys (with one
//! single-flight refetch for an unknown `kid`) and its entry-level claims checked
//! (`exp`, `nbf`, `iat`, `typ`, required claims). Every path yields the same
//! [`Principal`]. Route-level checks (audience, scopes) are in `policy` and run on
//! every request, cached or not.

pub mod apikeys;
pub mod credentials;
pub mod dpop;
pub mod introspect;
pub mod jwks;
pub mod jwt;
pub mod revocation;

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::clock::now_unix;
use crate::config::{Fingerprint, IssuerConfig, Route, TokenFormat};
use crate::error::Refusal;
use crate::metrics;
use crate::principal::{token_hash, AuthMethod, Principal, TokenHash};
use crate::scope::canonical_audience;
use crate::state::Snapshot;
use credentials::Credentials;
use jwks::{IssuerKeys, KeysUnavailable};
use jwt::{KeyMiss, TokenError};

/// How the credentials were presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'h> {
    Bearer,
    /// `Authorization: DPoP <token>`; the token, for the proof's `ath`.
    Dpop(&'h str),
    ApiKey,
}

/// Distinct interned values kept, per kind; past that, principals get their own copies.
const INTERN_MAX: usize = 4096;

/// Scope strings, client ids and audience lists repeat across the tokens of an issuer:
/// cached principals share one copy of each. Only verified tokens reach it, and it is
/// bounded, so a stream of distinct values costs no more than not interning.
#[derive(Default)]
struct Interner {
    strs: HashSet<Arc<str>>,
    audiences: HashSet<Arc<[Box<str>]>>,
}

/// The shared copy of `value` in `set`, or a new one (kept while `set` has room).
fn intern<T: Eq + Hash + ?Sized>(set: &mut HashSet<Arc<T>>, value: &T) -> Arc<T>
where
    Arc<T>: for<'a> From<&'a T>,
{
    if let Some(a) = set.get(value) {
        return a.clone();
    }
    let a = Arc::from(value);
    if set.len() < INTERN_MAX {
        set.insert(a.clone());
    }
    a
}

/// The verified-token cache. Key stores live in the config [`Snapshot`], so that a
/// reload swaps config and keys together.
///
/// quick_cache rather than moka here: an entry is the 32-byte hash and a pointer stored
/// inline, where moka allocates seven blocks per entry (≈ 600 bytes with its frequency
/// sketch and timer wheel), and this cache holds up to `token_cache.max_entries` of them.
/// It has no TTL: a hit past `exp` (+ skew) is removed and judged again, which refuses it.
///
/// An entry is keyed by the token's hash and the fingerprint of the issuer entry that
/// verified it (`IssuerConfig::fingerprint`: its name and every setting that shaped the
/// verdict). A route finds only verdicts of the entries it accepts, as they are
/// configured now: a reload that changes an entry's settings makes its verdicts misses.
pub struct Authenticator {
    cache: quick_cache::sync::Cache<(TokenHash, Fingerprint), Arc<Principal>>,
    interner: Mutex<Interner>,
}

impl Authenticator {
    pub fn new(max_entries: u64) -> Authenticator {
        let n = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        Authenticator {
            cache: quick_cache::sync::Cache::new(n),
            interner: Mutex::new(Interner::default()),
        }
    }

    /// The principal issuer entry `ic` verified `hash` into, unless it has expired.
    fn cached(&self, hash: &TokenHash, ic: &IssuerConfig, now: i64) -> Option<Arc<Principal>> {
        let key = (*hash, ic.fingerprint);
        let p = self.cache.get(&key)?;
        if now > p.exp + ic.clock_skew as i64 {
            self.cache.remove(&key);
            return None;
        }
        Some(p)
    }

    /// Authenticate a request with the credentials `route` accepts (issuer-level checks
    /// only; see `policy`). `seen` gets the SHA-256 of the token or key, for the audit
    /// line. On `auth: both`, a Bearer token is judged as OAuth only: a bad token is not
    /// rescued by an API key sent alongside.
    pub async fn authenticate_request<'h>(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        headers: &'h http::HeaderMap,
        query: Option<&str>,
        seen: &mut Option<TokenHash>,
    ) -> Result<(Arc<Principal>, Presented<'h>), Refusal> {
        let config = &snapshot.config;
        let keys = config
            .api_keys
            .as_ref()
            .filter(|_| route.auth.accepts_api_key());
        let creds = credentials::extract_for(
            headers,
            query,
            route.auth.accepts_oauth(),
            keys.map(|k| &k.header),
        )
        .map_err(|e| Refusal::Credentials(e.describe()))?;
        match (creds, keys) {
            (Credentials::Bearer(token), _) => {
                let hash = token_hash(token);
                *seen = Some(hash);
                let p = self.authenticate(snapshot, route, token, &hash).await?;
                Ok((p, Presented::Bearer))
            }
            (Credentials::Dpop(token), _) => {
                let hash = token_hash(token);
                *seen = Some(hash);
                let p = self.authenticate(snapshot, route, token, &hash).await?;
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

    /// Validate a bearer token for `route` (issuer-level checks only; see `policy`).
    ///
    /// A token is judged only by the issuer entries the route accepts. A cached verdict
    /// counts only for the entry that made it and only while that entry's settings are
    /// unchanged (the cache key holds the entry's fingerprint). On a miss, a JWT is
    /// judged by each of the route's entries whose `issuer` is its `iss`, in the route's
    /// order, until one accepts it (several entries may share an `issuer`: a staging and
    /// a production key set, or one AS once with JWKS and once with introspection).
    pub async fn authenticate(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        token: &str,
        hash: &TokenHash,
    ) -> Result<Arc<Principal>, Refusal> {
        let config = &snapshot.config;
        let now = now_unix();
        for &i in &route.issuers {
            let ic = &config.issuers[i];
            if !ic.uses_jwks() {
                continue;
            }
            if let Some(p) = self.cached(hash, ic, now) {
                metrics::token_cache(true);
                // Times are judged with the entry's current skew (the fingerprint makes it
                // the one the token was verified with).
                if check_times(p.exp, p.nbf, p.iat, ic.clock_skew as i64, now).is_ok() {
                    return Ok(p);
                }
            }
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
                if !route
                    .issuers
                    .iter()
                    .any(|&i| config.issuers[i].introspection.is_some())
                {
                    return Err(Refusal::InvalidToken(e.0));
                }
                match jwt::shape(token) {
                    jwt::Shape::Opaque => {
                        let Some(&i) = route
                            .issuers
                            .iter()
                            .find(|&&i| config.issuers[i].introspection.is_some())
                        else {
                            return Err(Refusal::InvalidToken(e.0));
                        };
                        return introspect(snapshot, i, token, hash).await;
                    }
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
        let mut first_error: Option<Refusal> = None;
        let mut unavailable: Option<Refusal> = None;
        let mut judged = false;
        for &i in &route.issuers {
            let ic = &config.issuers[i];
            if *ic.issuer != *iss {
                continue;
            }
            judged = true;
            let verdict = match (&parsed, ic.token_format) {
                (_, TokenFormat::Opaque) => introspect(snapshot, i, token, hash).await,
                (Ok(parsed), TokenFormat::Jwt) => {
                    metrics::token_cache(false);
                    match self.verify(ic, &snapshot.keys[i], parsed, now).await {
                        Ok(p) => {
                            let p = Arc::new(p);
                            self.cache.insert((*hash, ic.fingerprint), p.clone());
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
        let invalid = |e: TokenError| Refusal::InvalidToken(e.0);
        if !issuer.algorithms.contains(&parsed.alg) {
            return Err(Refusal::InvalidToken(
                "token alg is not allowed for this issuer",
            ));
        }
        jwt::check_typ(parsed.typ.as_deref(), issuer.require_at_jwt).map_err(invalid)?;

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
                Ok(()) => break,
                Err(KeyMiss::BadSignature) => {
                    return Err(Refusal::InvalidToken("token signature is invalid"))
                }
                Err(KeyMiss::NoKey) if !refetched => {
                    refetched = true;
                    if keys.refetch().await {
                        key_set = keys.snapshot().ok();
                        continue;
                    }
                    return Err(Refusal::InvalidToken(
                        "no issuer key matches the token's kid and alg",
                    ));
                }
                Err(KeyMiss::NoKey) => {
                    return Err(Refusal::InvalidToken(
                        "no issuer key matches the token's kid and alg",
                    ))
                }
            }
        }

        let c = &parsed.claims;
        let skew = issuer.clock_skew as i64;
        let exp = match &c.exp {
            Some(n) => {
                jwt::numeric_date(n, "token exp is not a valid NumericDate").map_err(invalid)?
            }
            None => return Err(Refusal::InvalidToken("token has no exp claim")),
        };
        let nbf = c
            .nbf
            .as_ref()
            .map(|n| jwt::numeric_date(n, "token nbf is not a valid NumericDate"))
            .transpose()
            .map_err(invalid)?;
        let iat = c
            .iat
            .as_ref()
            .map(|n| jwt::numeric_date(n, "token iat is not a valid NumericDate"))
            .transpose()
            .map_err(invalid)?;
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
        let mut scopes = String::new();
        let mut push = |s: &str| {
            for t in s.split(' ').filter(|t| !t.is_empty()) {
                if !scopes.split(' ').any(|x| x == t) {
                    if !scopes.is_empty() {
                        scopes.push(' ');
                    }
                    scopes.push_str(t);
                }
            }
        };
        if let Some(s) = &c.scope {
            push(s);
        }
        match &c.scp {
            Some(jwt::ScpClaim::One(s)) => push(s),
            Some(jwt::ScpClaim::Many(v)) => {
                v.iter().filter(|s| !s.contains(' ')).for_each(|s| push(s))
            }
            None => {}
        }
        let cnf_jkt = jwt::cnf_jkt(c.cnf.as_ref()).map_err(invalid)?;
        let (scopes, client_id, audiences) = {
            let mut interner = self.interner.lock().unwrap_or_else(|e| e.into_inner());
            (
                intern(&mut interner.strs, &*scopes),
                client_id.map(|c| intern(&mut interner.strs, c)),
                intern(&mut interner.audiences, &*audiences),
            )
        };
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

    pub fn cached_tokens(&self) -> u64 {
        self.cache.len() as u64
    }
}

/// Ask issuer entry `i`'s introspection client about `token`.
async fn introspect(
    snapshot: &Snapshot,
    i: usize,
    token: &str,
    hash: &TokenHash,
) -> Result<Arc<Principal>, Refusal> {
    match snapshot.introspectors.get(i).and_then(Option::as_ref) {
        Some(introspector) => introspector.authenticate(token, hash).await,
        None => Err(Refusal::IntrospectionUnavailable(
            "the issuer's introspection client is not available",
        )),
    }
}

/// `exp` (required), `nbf` and `iat` against `now`, with symmetric skew.
pub fn check_times(
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    skew: i64,
    now: i64,
) -> Result<(), TokenError> {
    if now > exp + skew {
        return Err(TokenError("token is expired"));
    }
    if nbf.is_some_and(|n| n > now + skew) {
        return Err(TokenError("token is not valid yet (nbf)"));
    }
    if iat.is_some_and(|i| i > now + skew) {
        return Err(TokenError("token was issued in the future (iat)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn times() {
        assert!(check_times(100, None, None, 0, 100).is_ok());
        assert!(check_times(100, None, None, 0, 101).is_err());
        assert!(check_times(100, None, None, 5, 105).is_ok());
        assert!(check_times(1000, Some(200), None, 0, 100).is_err());
        assert!(check_times(1000, None, Some(200), 60, 100).is_err());
        assert!(check_times(1000, None, Some(150), 60, 100).is_ok());
    }
}
