//! Issuer entries: the `issuers` section, compiled once into [`IssuerConfig`]s that the
//! token step judges tokens with.
//!
//! Each entry names one authorization server (`issuer`), how its tokens are validated
//! (JWT with its key set, or introspection), and every setting that shapes a verdict; its
//! [`Fingerprint`] keys the verdicts it made in the token cache, so a changed setting never
//! reuses an old verdict.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::introspect;
use crate::auth::jwt::{Algorithm, ScopeClaim};
use crate::auth::AuthMode;
use crate::background::TrustRoots;
use crate::compile::{check_fetch_url, relative_to, CompileError};

/// One entry of `issuers`.
#[derive(Debug, Deserialize, JsonSchema)]
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
    /// The JWT claims that carry the token's scopes (default `[scope, scp]`).
    pub scope_claims: Option<Vec<ScopeClaim>>,
    /// PEM CA certificates that verify the issuer's discovery, JWKS and introspection
    /// endpoints instead of the system roots (relative to the config file).
    pub ca_file: Option<PathBuf>,
}

/// How an issuer's access tokens are validated.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
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
    /// The claims a JWT's scopes are read from, in this order.
    pub scope_claims: Vec<ScopeClaim>,
    /// The CA that verifies this issuer's endpoints (`ca_file`), instead of the system roots.
    pub ca: Option<TrustRoots>,
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
            ca: self.ca.clone(),
        })
    }
}

/// Issuer entry names → their index.
pub type NameIndex = HashMap<String, usize>;

/// Check and compile `issuers`: every entry, and that names are unique. Returns the entries
/// and the index of each name.
pub fn compile(
    config_file: &str,
    entries: Vec<FileIssuer>,
) -> Result<(Vec<Arc<IssuerConfig>>, NameIndex), CompileError> {
    let mut issuers = Vec::new();
    let mut index = HashMap::new();
    for (i, fi) in entries.into_iter().enumerate() {
        let at = format!("issuers[{i}]");
        let ic = compile_issuer(config_file, fi).map_err(|e| e.within(&at))?;
        if let Some(first) = index.insert(ic.name.to_string(), i) {
            return Err(CompileError::new(
                format!("{at}.name"),
                format!(
                    "issuer name {:?} is already the name of issuers[{first}]",
                    ic.name
                ),
            ));
        }
        issuers.push(Arc::new(ic));
    }
    Ok((issuers, index))
}

fn compile_issuer(config_file: &str, fi: FileIssuer) -> Result<IssuerConfig, CompileError> {
    let name = fi.name.clone();
    let bad = |field: &str, e: String| CompileError::new(field, format!("issuer {name:?}: {e}"));
    if fi.name.is_empty() {
        return Err(CompileError::new("name", "issuer name must not be empty"));
    }
    check_fetch_url("issuer", &fi.issuer).map_err(|e| bad("issuer", e))?;
    if let Some(j) = &fi.jwks_uri {
        check_fetch_url("jwks_uri", j).map_err(|e| bad("jwks_uri", e))?;
    }
    let algorithms = match &fi.algorithms {
        None => Algorithm::DEFAULT.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(bad("algorithms", "algorithms must not be empty".into()))
        }
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(j, a)| {
                Algorithm::parse(a).ok_or_else(|| {
                    bad(
                        &format!("algorithms[{j}]"),
                        format!(
                            "algorithm {a:?} is not allowed (allowed: {}; never none or HS*)",
                            Algorithm::ALL
                                .iter()
                                .map(|a| a.name())
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if fi.jwks_refresh_seconds < 10 {
        return Err(bad(
            "jwks_refresh_seconds",
            "jwks_refresh_seconds must be at least 10".into(),
        ));
    }
    if fi.jwks_max_stale_seconds < fi.jwks_refresh_seconds {
        return Err(bad(
            "jwks_max_stale_seconds",
            "jwks_max_stale_seconds must be at least jwks_refresh_seconds".into(),
        ));
    }
    if fi.clock_skew_seconds > 600 {
        return Err(bad(
            "clock_skew_seconds",
            "clock_skew_seconds must be at most 600".into(),
        ));
    }
    let introspection = fi
        .introspection
        .map(introspect::compile)
        .transpose()
        .map_err(|e| bad("introspection", e))?;
    if introspection.is_some() {
        crate::metrics::introspection_series(&fi.name);
    }
    if fi.token_format == TokenFormat::Opaque && introspection.is_none() {
        return Err(bad(
            "token_format",
            "token_format: opaque needs an introspection block".into(),
        ));
    }
    let scope_claims = match fi.scope_claims {
        None => ScopeClaim::DEFAULT.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(bad(
                "scope_claims",
                "scope_claims must name at least one claim (scope, scp, roles)".into(),
            ))
        }
        Some(list) => {
            for (j, c) in list.iter().enumerate() {
                if list[..j].contains(c) {
                    return Err(bad(
                        &format!("scope_claims[{j}]"),
                        format!("scope_claims names {} twice", c.name()),
                    ));
                }
            }
            list
        }
    };
    let ca = fi
        .ca_file
        .map(|p| TrustRoots::load(relative_to(config_file, p)))
        .transpose()
        .map_err(|e| bad("ca_file", format!("ca_file {e}")))?;
    if ca.is_some() && !fi.issuer.starts_with("https://") {
        return Err(bad(
            "ca_file",
            "ca_file needs an https issuer (it verifies the issuer's TLS certificate)".into(),
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
        scope_claims,
        ca,
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
