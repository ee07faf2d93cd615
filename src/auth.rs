//! Token validation: credentials → verified [`Principal`], with a verified-token cache.
//!
//! The token step of the request flow. [`Authenticator::authenticate_request`] takes
//! the credentials the route accepts (a Bearer token, or a legacy API key checked in
//! `apikeys`). A token is looked up by SHA-256 in a bounded cache whose entries are
//! never used past `exp`; on a miss it forks on its shape: a token that is not a JWT, or
//! one whose issuer sets `token_format: opaque`, is introspected (`introspect`, with its
//! own cache); a JWT is parsed once, matched to one of the route's issuers by `iss`,
//! verified against that issuer's current keys (with one single-flight refetch for an
//! unknown `kid`), and its issuer-level claims checked (`exp`, `nbf`, `iat`, `typ`,
//! required claims). Every path yields the same [`Principal`]. Route-level checks
//! (audience, scopes) are in `policy` and run on every request, cached or not.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::config::{canonical_audience, Route, TokenFormat};
use crate::credentials::{self, Credentials};
use crate::error::Refusal;
use crate::jwks::{now_unix, KeysUnavailable};
use crate::jwt::{self, KeyMiss, TokenError};
use crate::metrics;
use crate::state::Snapshot;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A JWT access token verified with the issuer's keys.
    Jwt,
    /// An opaque token the issuer vouched for (RFC 7662).
    Introspection,
    /// A legacy API key from the key file.
    ApiKey,
}

impl AuthMethod {
    /// The `X-Auth-Method` value the upstream receives.
    pub fn header_value(self) -> &'static str {
        match self {
            AuthMethod::Jwt | AuthMethod::Introspection => "oauth",
            AuthMethod::ApiKey => "api_key",
        }
    }

    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::Introspection => "introspection",
            AuthMethod::ApiKey => "api_key",
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

/// Who the caller is, as proven by a verified token or a known API key.
#[derive(Debug)]
pub struct Principal {
    pub method: AuthMethod,
    /// The `iss` value (equal to a configured issuer's `issuer`); empty for API keys.
    pub iss: Arc<str>,
    /// The configured issuer's name; empty for API keys.
    pub issuer_name: Arc<str>,
    pub subject: Option<Box<str>>,
    /// The OAuth client; for an API key, the key's `id`.
    pub client_id: Option<Arc<str>>,
    /// Space-separated scopes, as forwarded upstream.
    pub scopes: Arc<str>,
    /// Canonical audiences.
    pub audiences: Arc<[Box<str>]>,
    /// No audience to check against the route: an API key, or an introspected token
    /// without `aud` from an issuer with `require_aud: false`. Never set for JWTs.
    pub any_audience: bool,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub skew: i64,
    /// `cnf.jkt`: the thumbprint of the key this token is bound to (RFC 9449 §6).
    pub cnf_jkt: Option<Box<str>>,
    /// The token's `jti`, for revocation by token id.
    pub jti: Option<Box<str>>,
    /// The token's `iat`: revocations by subject or client refuse tokens issued at or
    /// before the revocation (a token without `iat` counts as issued before).
    pub iat: Option<i64>,
}

impl Principal {
    pub fn has_scope(&self, s: &str) -> bool {
        self.scopes.split(' ').any(|t| t == s)
    }
}

pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A short, non-reversible token fingerprint for logs.
pub fn hash_prefix(h: &TokenHash) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(12);
    for b in &h[..6] {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
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
pub struct Authenticator {
    cache: quick_cache::sync::Cache<TokenHash, Arc<Principal>>,
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

    /// Forget every verified token (after a reload changed an issuer's keys).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// A cached principal for `hash` that has not expired.
    fn cached(&self, hash: &TokenHash) -> Option<Arc<Principal>> {
        let p = self.cache.get(hash)?;
        if now_unix() > p.exp + p.skew {
            self.cache.remove(hash);
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
        .map_err(Refusal::Credentials)?;
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
    pub async fn authenticate(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        token: &str,
        hash: &TokenHash,
    ) -> Result<Arc<Principal>, Refusal> {
        let config = &snapshot.config;
        if let Some(p) = self.cached(hash) {
            metrics::token_cache(true);
            if !route
                .issuers
                .iter()
                .any(|&i| *config.issuers[i].issuer == *p.iss)
            {
                return Err(Refusal::InvalidToken(
                    "token issuer is not accepted on this route",
                ));
            }
            check_times(p.exp, p.nbf, None, p.skew, now_unix())
                .map_err(|e| Refusal::InvalidToken(e.0))?;
            return Ok(p);
        }
        if let Some(i) = introspecting_issuer(snapshot, route, token) {
            return match snapshot.introspectors.get(i).and_then(Option::as_ref) {
                Some(introspector) => introspector.authenticate(token, hash).await,
                None => Err(Refusal::IntrospectionUnavailable(
                    "the issuer's introspection client is not available",
                )),
            };
        }
        metrics::token_cache(false);
        let p = self.verify(snapshot, route, token).await?;
        let p = Arc::new(p);
        self.cache.insert(*hash, p.clone());
        Ok(p)
    }

    async fn verify(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        token: &str,
    ) -> Result<Principal, Refusal> {
        let config = &snapshot.config;
        let invalid = |e: TokenError| Refusal::InvalidToken(e.0);
        let parsed = jwt::parse(token).map_err(invalid)?;
        let iss = parsed
            .claims
            .iss
            .as_deref()
            .ok_or(Refusal::InvalidToken("token has no iss claim"))?;
        let (issuer, keys) = route
            .issuers
            .iter()
            .map(|&i| (&config.issuers[i], &snapshot.keys[i]))
            .find(|(ic, _)| *ic.issuer == *iss)
            .ok_or(Refusal::InvalidToken(
                "token issuer is not accepted on this route",
            ))?;
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
            match jwt::verify_signature(&parsed, &snap.keys) {
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

        let c = parsed.claims;
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
        check_times(exp, nbf, iat, skew, now_unix()).map_err(invalid)?;
        let Some(aud) = c.aud else {
            return Err(Refusal::InvalidToken("token has no aud claim"));
        };
        let audiences: Vec<Box<str>> = aud
            .iter()
            .map(|a| canonical_audience(a).into_boxed_str())
            .collect();
        let client_id = c.client_id.or(c.azp);
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
                client_id.map(|c| intern(&mut interner.strs, &*c)),
                intern(&mut interner.audiences, &*audiences),
            )
        };
        Ok(Principal {
            cnf_jkt,
            jti: c.jti.map(String::into_boxed_str),
            iat,
            method: AuthMethod::Jwt,
            any_audience: false,
            iss: issuer.issuer.clone(),
            issuer_name: issuer.name.clone(),
            subject: c.sub.map(String::into_boxed_str),
            client_id,
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

/// The issuer (index into `config.issuers`) that must introspect `token` on `route`,
/// if any: for a JWT, the route issuer named by its (unverified) `iss` when that issuer
/// sets `token_format: opaque`; for anything else, the route's issuer with an
/// `introspection` block (the config allows at most one per route). `None`: verify it
/// as a JWT (which refuses a token that is not one).
fn introspecting_issuer(snapshot: &Snapshot, route: &Route, token: &str) -> Option<usize> {
    let config = &snapshot.config;
    // Most routes have no introspecting issuer: then a token is a JWT or nothing, and we
    // skip the shape probe (it decodes the token, which `jwt::parse` does again).
    if !route
        .issuers
        .iter()
        .any(|&i| config.issuers[i].introspection.is_some())
    {
        return None;
    }
    match jwt::shape(token) {
        jwt::Shape::Jwt { iss } => {
            let iss = iss?;
            route.issuers.iter().copied().find(|&i| {
                let ic = &config.issuers[i];
                ic.token_format == TokenFormat::Opaque
                    && ic.introspection.is_some()
                    && *ic.issuer == *iss
            })
        }
        jwt::Shape::Opaque => route
            .issuers
            .iter()
            .copied()
            .find(|&i| config.issuers[i].introspection.is_some()),
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
