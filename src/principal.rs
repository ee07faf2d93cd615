//! Who the caller is: the [`Principal`] every credential becomes, and the token hash that
//! names a credential in caches and logs without revealing it.
//!
//! Bottom layer: the token step produces a principal (JWT, introspection, API key alike);
//! revocations, the policy step, session bindings, identity headers and stream watchdogs
//! read it. Bottom layer: it imports only `scope`.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::scope::ScopeSet;

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
    /// The scopes, compiled when the credential was verified (ids for the policy checks,
    /// the space-separated list for the upstream).
    pub scopes: Arc<ScopeSet>,
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
    /// before the revocation, plus the issuer's skew (a token without `iat` counts as
    /// issued before).
    pub iat: Option<i64>,
    /// The JWT's `azp` where it differs from `client_id` (a revocation by client matches
    /// either).
    pub azp: Option<Arc<str>>,
}

/// SHA-256 of a presented token or key: its name in caches and (shortened) in logs.
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
