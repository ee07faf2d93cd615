//! Issuer entries: the `issuers` section, compiled once into [`IssuerConfig`]s that the
//! token step judges tokens with.
//!
//! Each entry names one authorization server (`issuer`), how its tokens are validated
//! (JWT with its key set, or introspection), and every setting that shapes a verdict; its
//! [`Fingerprint`] keys the verdicts it made in the token cache, so a changed setting never
//! reuses an old verdict.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::introspect;
use crate::auth::jwt::Algorithm;
use crate::auth::AuthMode;
use crate::compile::{check_fetch_url, CompileError};

/// One entry of `issuers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIssuer {
    pub name: String,
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub algorithms: Option<Vec<String>>,
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default)]
    pub require_at_jwt: bool,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_seconds: u64,
    #[serde(default = "default_max_stale")]
    pub jwks_max_stale_seconds: u64,
    /// `opaque`: introspect every token of this issuer, JWT-shaped or not.
    #[serde(default)]
    pub token_format: TokenFormat,
    /// RFC 7662 introspection of opaque tokens.
    pub introspection: Option<introspect::FileIntrospection>,
}

/// How an issuer's access tokens are validated.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    /// JWTs are verified with the issuer's keys; other tokens are introspected when the
    /// issuer has `introspection`.
    #[default]
    Jwt,
    /// Every token is introspected (no key set is fetched).
    Opaque,
}

fn default_skew() -> u64 {
    60
}
fn default_refresh() -> u64 {
    300
}
fn default_max_stale() -> u64 {
    86_400
}

/// Identifies one issuer entry with every setting that shapes its verdicts.
pub type Fingerprint = [u8; 16];

#[derive(Debug)]
pub struct IssuerConfig {
    /// This entry's name and settings, hashed (see `IssuerConfig::verdict_fingerprint`):
    /// the key of its verdicts in the token cache.
    pub fingerprint: Fingerprint,
    pub name: Arc<str>,
    pub issuer: Arc<str>,
    pub jwks_uri: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: u64,
    pub require_at_jwt: bool,
    pub refresh: Duration,
    pub max_stale: Duration,
    pub token_format: TokenFormat,
    pub introspection: Option<introspect::IntrospectionConfig>,
}

impl IssuerConfig {
    /// SHA-256 (first 16 bytes) of every field of the entry but the fingerprint itself,
    /// the introspection secret included: a verdict cached under it was made by this
    /// entry with exactly these settings. Built from the `Debug` form of the whole
    /// struct, so a field added later is covered without being listed here.
    fn verdict_fingerprint(&self) -> Fingerprint {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(format!("{self:?}").as_bytes());
        if let Some(i) = &self.introspection {
            h.update([0u8]);
            h.update(i.client_secret.expose().as_bytes());
        }
        let d = h.finalize();
        let mut f = [0u8; 16];
        f.copy_from_slice(&d[..16]);
        f
    }

    /// Whether this issuer's JWTs are verified locally (so its key set is fetched).
    pub fn uses_jwks(&self) -> bool {
        self.token_format == TokenFormat::Jwt
    }

    /// What introspection needs of this entry, when it has an `introspection` block.
    pub fn introspected(&self) -> Option<introspect::Issuer> {
        Some(introspect::Issuer {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            clock_skew: self.clock_skew,
            config: self.introspection.clone()?,
        })
    }
}

/// Issuer entry names → their index.
pub type NameIndex = HashMap<String, usize>;

/// Check and compile `issuers`: every entry, and that names are unique. Returns the entries
/// and the index of each name.
pub fn compile(
    entries: Vec<FileIssuer>,
) -> Result<(Vec<Arc<IssuerConfig>>, NameIndex), CompileError> {
    let mut issuers = Vec::new();
    let mut index = HashMap::new();
    for (i, fi) in entries.into_iter().enumerate() {
        let at = format!("issuers[{i}]");
        let ic = compile_issuer(fi).map_err(|e| CompileError::new(&at, e))?;
        if index.insert(ic.name.to_string(), i).is_some() {
            return Err(CompileError::new(
                format!("{at}.name"),
                format!("issuer name {:?} is used twice", ic.name),
            ));
        }
        issuers.push(Arc::new(ic));
    }
    Ok((issuers, index))
}

fn compile_issuer(fi: FileIssuer) -> Result<IssuerConfig, String> {
    let ctx = |e: String| format!("issuer {:?}: {e}", fi.name);
    if fi.name.is_empty() {
        return Err("issuer name must not be empty".into());
    }
    check_fetch_url("issuer", &fi.issuer).map_err(ctx)?;
    if let Some(j) = &fi.jwks_uri {
        check_fetch_url("jwks_uri", j).map_err(ctx)?;
    }
    let algorithms = match &fi.algorithms {
        None => Algorithm::DEFAULT.to_vec(),
        Some(list) if list.is_empty() => return Err(ctx("algorithms must not be empty".into())),
        Some(list) => list
            .iter()
            .map(|a| {
                Algorithm::parse(a).ok_or_else(|| {
                    ctx(format!(
                        "algorithm {a:?} is not allowed (allowed: {}; never none or HS*)",
                        Algorithm::ALL
                            .iter()
                            .map(|a| a.name())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if fi.jwks_refresh_seconds < 10 {
        return Err(ctx("jwks_refresh_seconds must be at least 10".into()));
    }
    if fi.jwks_max_stale_seconds < fi.jwks_refresh_seconds {
        return Err(ctx(
            "jwks_max_stale_seconds must be at least jwks_refresh_seconds".into(),
        ));
    }
    if fi.clock_skew_seconds > 600 {
        return Err(ctx("clock_skew_seconds must be at most 600".into()));
    }
    let introspection = fi
        .introspection
        .map(introspect::compile)
        .transpose()
        .map_err(ctx)?;
    if introspection.is_some() {
        crate::metrics::introspection_series(&fi.name);
    }
    if fi.token_format == TokenFormat::Opaque && introspection.is_none() {
        return Err(ctx(
            "token_format: opaque needs an introspection block".into()
        ));
    }
    let mut ic = IssuerConfig {
        fingerprint: [0; 16],
        name: Arc::from(fi.name.as_str()),
        issuer: Arc::from(fi.issuer),
        jwks_uri: fi.jwks_uri,
        algorithms,
        clock_skew: fi.clock_skew_seconds,
        require_at_jwt: fi.require_at_jwt,
        refresh: Duration::from_secs(fi.jwks_refresh_seconds),
        max_stale: Duration::from_secs(fi.jwks_max_stale_seconds),
        token_format: fi.token_format,
        introspection,
    };
    ic.fingerprint = ic.verdict_fingerprint();
    Ok(ic)
}

/// A route may accept opaque tokens from one introspecting issuer at most: an opaque
/// token names no issuer, and sending it to every issuer would hand one AS's tokens to
/// another.
pub fn check_route_issuers(
    mode: AuthMode,
    route_issuers: &[usize],
    issuers: &[Arc<IssuerConfig>],
) -> Result<(), String> {
    if !mode.accepts_oauth() {
        return Ok(());
    }
    let introspecting: Vec<&str> = route_issuers
        .iter()
        .map(|&i| &issuers[i])
        .filter(|ic| ic.introspection.is_some())
        .map(|ic| &*ic.name)
        .collect();
    if introspecting.len() > 1 {
        return Err(format!(
            "issuers {} all introspect opaque tokens; an opaque token names no issuer, so \
             the route must list at most one of them in `issuers`",
            introspecting.join(", ")
        ));
    }
    Ok(())
}
