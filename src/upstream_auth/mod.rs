//! Upstream credentials: what a route's upstream receives to prove the call came through the
//! gateway, on whose behalf, and for which API — never the client's own token unless the
//! route says `forward`.
//!
//! The last step of the request flow, after identity: a route's `upstream_auth`
//! ([`FileUpstreamAuth`], compiled once into an [`UpstreamAuth`]) is one of
//! - `none` (the default): no credential; the client's `Authorization` and `DPoP` are
//!   stripped (the identity step does that on every route but `forward` ones);
//! - `forward` (`forward_token: true`, kept for compatibility): the client's `Authorization`
//!   passes through;
//! - `static` ([`static_secret`]): a header value read from a file;
//! - `client_credentials` ([`client_credentials`]): the gateway's own token from the AS,
//!   shared by every caller of the route, renewed in the background before it expires;
//! - `token_exchange` ([`exchange`], RFC 8693): the caller's validated access token
//!   exchanged at the AS that issued it for a token for the upstream's audience, resource
//!   and scopes (optionally with the gateway's own token as `actor_token`), cached per
//!   caller token ([`cache`]).
//!
//! Calls to the AS run on the background fetch runtime with the shared pooled client, under
//! a deadline and a circuit breaker per route ([`client::AsClient`]); the gateway
//! authenticates with a client secret or a signed assertion ([`client_auth`]). An AS that
//! refuses an exchange gives the client 403 naming the route and the AS's error code; an
//! AS that cannot answer gives 503 with `Retry-After`. Either way nothing is forwarded.

pub mod breaker;
pub mod cache;
pub mod client;
pub mod client_auth;
pub mod client_credentials;
pub mod exchange;
pub mod static_secret;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::auth::issuer::IssuerConfig;
use crate::auth::AuthMode;
use crate::compile::{relative_to, CompileError};
use crate::error::{GatewayFailure, Refusal};
use crate::principal::{hash_prefix, token_hash, AuthMethod, Principal, TokenHash};
use crate::scope::{check_scope_token, Hierarchy, RequiredScope};
use client_auth::{ClientAuth, FilePrivateKeyJwt, Method, SecretMethod, SecretText, Signer};
use static_secret::StaticCredential;

pub use cache::ExchangeCache;
pub use client::Clients;

/// Identifies one route's compiled AS settings (secrets and keys included).
pub type Fingerprint = [u8; 16];

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// Which credential the upstream receives.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// None: the client's credentials are stripped, nothing is added.
    #[default]
    None,
    /// The client's `Authorization` passes through (`forward_token: true`).
    Forward,
    /// A header value from a file.
    Static,
    /// The gateway's own token (RFC 6749 §4.4).
    ClientCredentials,
    /// The caller's token exchanged for one for the upstream (RFC 8693).
    TokenExchange,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Forward => "forward",
            Mode::Static => "static",
            Mode::ClientCredentials => "client_credentials",
            Mode::TokenExchange => "token_exchange",
        }
    }
}

/// One string or a list of them.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// What the actor token (the gateway's own, sent as `actor_token`) is requested for.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct FileActorTarget {
    pub audience: Option<OneOrMany>,
    pub resource: Option<OneOrMany>,
    pub scopes: Option<Vec<String>>,
}

/// `actor: true`, or the target of the actor token.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum FileActor {
    Flag(bool),
    Target(FileActorTarget),
}

/// `subject_token_type` of an exchange.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubjectTokenType {
    /// `urn:ietf:params:oauth:token-type:access_token`, whatever its format (RFC 8693 §3;
    /// the only one Keycloak takes).
    #[default]
    AccessToken,
    /// `urn:ietf:params:oauth:token-type:jwt` for a JWT subject token (an opaque one is
    /// still sent as an access token).
    Jwt,
}

/// A route's `upstream_auth`. Every field is optional so that one that does not apply to
/// the mode is an error rather than silently ignored.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamAuth {
    #[serde(default)]
    pub mode: Mode,
    /// The configured issuer whose AS issues the credential.
    pub issuer: Option<String>,
    /// The token endpoint (default: the issuer's metadata `token_endpoint`).
    pub token_endpoint: Option<String>,
    pub audience: Option<OneOrMany>,
    pub resource: Option<OneOrMany>,
    pub scopes: Option<Vec<String>>,
    /// Caller scope → scopes requested for the upstream (exchange only).
    pub scope_map: Option<BTreeMap<String, Vec<String>>>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// How the secret is sent: `client_secret_basic` (default) or `client_secret_post`.
    pub client_auth: Option<SecretMethod>,
    pub private_key_jwt: Option<FilePrivateKeyJwt>,
    /// Send the gateway's own token as `actor_token` (delegation).
    pub actor: Option<FileActor>,
    pub subject_token_type: Option<SubjectTokenType>,
    /// Where the upstream receives the credential (default `Authorization`).
    pub header: Option<String>,
    /// `static`: the file holding the header value.
    pub value_file: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    pub breaker_failures: Option<u32>,
    pub breaker_open_ms: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Compiled
// ---------------------------------------------------------------------------------------------

/// The scopes requested for the upstream.
#[derive(Debug, Clone)]
pub enum Scopes {
    /// `scopes` (space-joined), or none.
    Fixed(Option<String>),
    /// `scope_map`: for each caller scope (resolved through `scope_hierarchy`), the scopes
    /// requested when the caller holds it. `keys`: every caller scope, space-separated.
    Map {
        rules: Vec<(RequiredScope, Vec<String>)>,
        keys: String,
    },
}

impl Scopes {
    /// The `scope` parameter for a caller with `p`'s scopes; `Err` when a `scope_map`
    /// maps none of them (the gateway never asks for the AS's default scopes instead).
    pub fn for_caller(&self, p: &Principal) -> Result<Option<String>, Refusal> {
        match self {
            Scopes::Fixed(s) => Ok(s.clone()),
            Scopes::Map { rules, keys } => {
                let mut out: Vec<&str> = Vec::new();
                for (from, to) in rules {
                    if from.satisfied(&p.scopes) {
                        for s in to {
                            if !out.contains(&s.as_str()) {
                                out.push(s);
                            }
                        }
                    }
                }
                if out.is_empty() {
                    return Err(Refusal::ScopeFor(keys.clone().into_boxed_str()));
                }
                Ok(Some(out.join(" ")))
            }
        }
    }
}

/// What an actor token is requested for.
#[derive(Debug, Clone, Default)]
pub struct ActorTarget {
    pub audience: Vec<String>,
    pub resource: Vec<String>,
    pub scope: Option<String>,
}

/// Which grant a route's AS settings are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    TokenExchange,
    ClientCredentials,
}

impl Grant {
    /// The `grant` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Grant::TokenExchange => "token_exchange",
            Grant::ClientCredentials => "client_credentials",
        }
    }
}

/// A route's settings for its AS (modes `token_exchange` and `client_credentials`).
#[derive(Debug)]
pub struct AsConfig {
    /// SHA-256 (16 bytes) of everything below, secrets and keys included: the key of the
    /// runtime client and of its cached tokens, so a changed setting never reuses them.
    pub fingerprint: Fingerprint,
    pub route: Arc<str>,
    pub grant: Grant,
    /// The configured issuer's name and identifier, when given.
    pub issuer_name: Option<Arc<str>>,
    pub issuer: Option<Arc<str>>,
    pub token_endpoint: Option<String>,
    pub audience: Vec<String>,
    pub resource: Vec<String>,
    pub scopes: Scopes,
    pub client: ClientAuth,
    pub actor: Option<ActorTarget>,
    pub subject_token_type: SubjectTokenType,
    pub header: HeaderName,
    pub timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    /// Files the settings were read from (watched).
    pub files: Vec<PathBuf>,
}

impl AsConfig {
    /// The audience of a client assertion when none is configured: the issuer identifier
    /// (rfc7523bis), else the token endpoint.
    pub fn assertion_audience<'a>(&'a self, endpoint: &'a str) -> &'a str {
        self.issuer.as_deref().unwrap_or(endpoint)
    }

    /// The header value carrying `token`: `Bearer <token>` in `Authorization`, the token
    /// alone in any other header.
    pub fn header_value(&self, token: &str) -> Option<HeaderValue> {
        let mut v = if self.header == http::header::AUTHORIZATION {
            HeaderValue::from_str(&format!("Bearer {token}"))
        } else {
            HeaderValue::from_str(token)
        }
        .ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    fn fingerprint(&self) -> Fingerprint {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(format!("{self:?}").as_bytes());
        h.update([0u8]);
        h.update(self.client.material());
        let d = h.finalize();
        let mut f = [0u8; 16];
        f.copy_from_slice(&d[..16]);
        f
    }
}

/// A route's compiled `upstream_auth`.
#[derive(Debug, Default)]
pub enum UpstreamAuth {
    #[default]
    None,
    Forward,
    Static(StaticCredential),
    ClientCredentials(Arc<AsConfig>),
    TokenExchange(Arc<AsConfig>),
}

impl UpstreamAuth {
    pub fn mode(&self) -> Mode {
        match self {
            UpstreamAuth::None => Mode::None,
            UpstreamAuth::Forward => Mode::Forward,
            UpstreamAuth::Static(_) => Mode::Static,
            UpstreamAuth::ClientCredentials(_) => Mode::ClientCredentials,
            UpstreamAuth::TokenExchange(_) => Mode::TokenExchange,
        }
    }

    /// The header the gateway sets upstream (stripped from the client's request, with its
    /// `_` spellings).
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            UpstreamAuth::None | UpstreamAuth::Forward => None,
            UpstreamAuth::Static(s) => Some(&s.header),
            UpstreamAuth::ClientCredentials(c) | UpstreamAuth::TokenExchange(c) => Some(&c.header),
        }
    }

    /// The AS settings, for the modes that call one.
    pub fn as_config(&self) -> Option<&Arc<AsConfig>> {
        match self {
            UpstreamAuth::ClientCredentials(c) | UpstreamAuth::TokenExchange(c) => Some(c),
            _ => None,
        }
    }

    /// The files the settings were read from (watched for reloads).
    pub fn files(&self) -> &[PathBuf] {
        match self {
            UpstreamAuth::None | UpstreamAuth::Forward => &[],
            UpstreamAuth::Static(s) => std::slice::from_ref(&s.file),
            UpstreamAuth::ClientCredentials(c) | UpstreamAuth::TokenExchange(c) => &c.files,
        }
    }

    /// One line for `mcpgate check`'s summary (never a secret).
    pub fn describe(&self) -> String {
        match self {
            UpstreamAuth::None => "none".into(),
            UpstreamAuth::Forward => "forward (the client's token passes through)".into(),
            UpstreamAuth::Static(s) => format!("static {} from {}", s.header, s.file.display()),
            UpstreamAuth::ClientCredentials(c) | UpstreamAuth::TokenExchange(c) => format!(
                "{} at {} as {} ({}) into {}",
                c.grant.label(),
                c.token_endpoint
                    .as_deref()
                    .or(c.issuer_name.as_deref())
                    .unwrap_or("?"),
                c.client.client_id,
                c.client.method_name(),
                c.header
            ),
        }
    }
}

/// What a route's `upstream_auth` is compiled against.
pub struct Context<'a> {
    pub route: &'a str,
    pub auth: AuthMode,
    /// The issuer entries the route accepts (indices into `issuers`).
    pub route_issuers: &'a [usize],
    pub issuers: &'a [Arc<IssuerConfig>],
    pub issuer_index: &'a HashMap<String, usize>,
    pub hierarchy: &'a Hierarchy,
    /// The config file, to resolve relative paths.
    pub source: &'a str,
}

/// Headers the credential may not be put in: framing, routing, hop-by-hop, the MCP
/// transport's and the forwarding headers the gateway sets.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "cookie",
    "dpop",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

const DEFAULT_TIMEOUT_MS: u64 = 2000;
const DEFAULT_BREAKER_FAILURES: u32 = 5;
const DEFAULT_BREAKER_OPEN_MS: u64 = 2000;

/// Fields that apply to each mode (besides `mode`).
fn allowed(mode: Mode) -> &'static [&'static str] {
    const AS_COMMON: &[&str] = &[
        "issuer",
        "token_endpoint",
        "audience",
        "resource",
        "scopes",
        "client_id",
        "client_secret_file",
        "client_auth",
        "private_key_jwt",
        "header",
        "timeout_ms",
        "breaker_failures",
        "breaker_open_ms",
    ];
    const EXCHANGE: &[&str] = &[
        "issuer",
        "token_endpoint",
        "audience",
        "resource",
        "scopes",
        "scope_map",
        "client_id",
        "client_secret_file",
        "client_auth",
        "private_key_jwt",
        "actor",
        "subject_token_type",
        "header",
        "timeout_ms",
        "breaker_failures",
        "breaker_open_ms",
    ];
    match mode {
        Mode::None | Mode::Forward => &[],
        Mode::Static => &["header", "value_file"],
        Mode::ClientCredentials => AS_COMMON,
        Mode::TokenExchange => EXCHANGE,
    }
}

/// The fields `f` sets, by name.
fn present(f: &FileUpstreamAuth) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut add = |name: &'static str, set: bool| {
        if set {
            v.push(name);
        }
    };
    add("issuer", f.issuer.is_some());
    add("token_endpoint", f.token_endpoint.is_some());
    add("audience", f.audience.is_some());
    add("resource", f.resource.is_some());
    add("scopes", f.scopes.is_some());
    add("scope_map", f.scope_map.is_some());
    add("client_id", f.client_id.is_some());
    add("client_secret_file", f.client_secret_file.is_some());
    add("client_auth", f.client_auth.is_some());
    add("private_key_jwt", f.private_key_jwt.is_some());
    add("actor", f.actor.is_some());
    add("subject_token_type", f.subject_token_type.is_some());
    add("header", f.header.is_some());
    add("value_file", f.value_file.is_some());
    add("timeout_ms", f.timeout_ms.is_some());
    add("breaker_failures", f.breaker_failures.is_some());
    add("breaker_open_ms", f.breaker_open_ms.is_some());
    v
}

fn err(at: &str, reason: impl Into<String>) -> CompileError {
    CompileError::new(at, reason)
}

/// Read a file the block names (relative to the config file).
fn read(cx: &Context<'_>, at: &str, p: &Path) -> Result<(PathBuf, Vec<u8>), CompileError> {
    let path = relative_to(cx.source, p.to_path_buf());
    let bytes = std::fs::read(&path)
        .map_err(|e| err(at, format!("{at}: cannot read {}: {e}", path.display())))?;
    Ok((path, bytes))
}

/// The header the credential goes in.
fn compile_header(h: Option<&str>) -> Result<HeaderName, CompileError> {
    let Some(h) = h else {
        return Ok(http::header::AUTHORIZATION);
    };
    let name = HeaderName::from_bytes(h.as_bytes())
        .map_err(|_| err("header", format!("header {h:?} is not a valid header name")))?;
    let folded = name.as_str().replace('_', "-");
    if RESERVED_HEADERS.contains(&folded.as_str()) {
        return Err(err(
            "header",
            format!("header {h:?} is reserved (framing, routing or the MCP transport's)"),
        ));
    }
    Ok(name)
}

/// An absolute URI without a fragment (RFC 8707 §2, RFC 8693 §2.1).
fn check_resource(r: &str) -> Result<(), String> {
    let u =
        url::Url::parse(r).map_err(|e| format!("resource {r:?} is not an absolute URI: {e}"))?;
    if u.fragment().is_some() {
        return Err(format!("resource {r:?} has a fragment"));
    }
    Ok(())
}

fn strings(at: &str, v: Option<OneOrMany>) -> Result<Vec<String>, CompileError> {
    let v = v.map(OneOrMany::into_vec).unwrap_or_default();
    if v.iter().any(String::is_empty) {
        return Err(err(at, format!("{at} values must not be empty")));
    }
    Ok(v)
}

fn scope_list(at: &str, v: &[String]) -> Result<Option<String>, CompileError> {
    for s in v {
        check_scope_token(s).map_err(|e| err(at, e))?;
    }
    Ok((!v.is_empty()).then(|| v.join(" ")))
}

impl UpstreamAuth {
    /// What `mcpgate check` (and every load) warns about this credential on a route with
    /// `auth`: the gateway's own credential (`static`, `client_credentials`) on an
    /// `auth: none` route reaches the upstream for anyone who can reach the route.
    /// (`token_exchange` there does not compile: it needs a validated token.)
    pub fn warning(&self, auth: AuthMode) -> Option<String> {
        let what = match self {
            UpstreamAuth::Static(_) => "a static credential",
            UpstreamAuth::ClientCredentials(_) => "the gateway's own client_credentials token",
            _ => return None,
        };
        (auth == AuthMode::None).then(|| {
            format!(
                "upstream_auth mode {} on a route with auth: none: {what} reaches the \
                 upstream for every anonymous caller; require credentials (auth) unless the \
                 upstream is meant to be public with it",
                self.mode().as_str()
            )
        })
    }

    /// Compile a route's `upstream_auth` (errors at paths within the block).
    pub fn compile(
        f: Option<FileUpstreamAuth>,
        cx: &Context<'_>,
    ) -> Result<UpstreamAuth, CompileError> {
        let Some(f) = f else {
            return Ok(UpstreamAuth::None);
        };
        let ok = allowed(f.mode);
        if let Some(extra) = present(&f).into_iter().find(|p| !ok.contains(p)) {
            return Err(err(
                extra,
                format!("{extra} does not apply to mode {}", f.mode.as_str()),
            ));
        }
        match f.mode {
            Mode::None => Ok(UpstreamAuth::None),
            Mode::Forward => Ok(UpstreamAuth::Forward),
            Mode::Static => {
                let header = f
                    .header
                    .as_deref()
                    .ok_or_else(|| err("header", "mode static needs header"))?;
                let header = compile_header(Some(header))?;
                let file = f
                    .value_file
                    .as_ref()
                    .ok_or_else(|| err("value_file", "mode static needs value_file"))?;
                let (path, bytes) = read(cx, "value_file", file)?;
                let s = StaticCredential::compile(header, &bytes, path.clone()).map_err(|e| {
                    err("value_file", format!("value_file {}: {e}", path.display()))
                })?;
                Ok(UpstreamAuth::Static(s))
            }
            Mode::ClientCredentials | Mode::TokenExchange => {
                let c = compile_as(f, cx)?;
                Ok(match c.grant {
                    Grant::TokenExchange => UpstreamAuth::TokenExchange(Arc::new(c)),
                    Grant::ClientCredentials => UpstreamAuth::ClientCredentials(Arc::new(c)),
                })
            }
        }
    }
}

fn compile_as(f: FileUpstreamAuth, cx: &Context<'_>) -> Result<AsConfig, CompileError> {
    let grant = match f.mode {
        Mode::TokenExchange => Grant::TokenExchange,
        _ => Grant::ClientCredentials,
    };
    let mut files = Vec::new();
    // The AS.
    let issuer = match &f.issuer {
        Some(name) => {
            let i = *cx.issuer_index.get(name).ok_or_else(|| {
                err(
                    "issuer",
                    format!("issuer {name:?} is not a configured issuer"),
                )
            })?;
            Some(cx.issuers[i].clone())
        }
        None => None,
    };
    if let Some(e) = &f.token_endpoint {
        crate::compile::check_fetch_url("token_endpoint", e)
            .map_err(|e| err("token_endpoint", e))?;
    }
    if issuer.is_none() && f.token_endpoint.is_none() {
        return Err(err(
            "issuer",
            format!(
                "mode {} needs issuer (or token_endpoint) to know the authorization server",
                f.mode.as_str()
            ),
        ));
    }
    if grant == Grant::TokenExchange {
        // Only a token the gateway validated, and only at the AS that issued it.
        let Some(ic) = &issuer else {
            return Err(err(
                "issuer",
                "mode token_exchange needs issuer: a token is exchanged only at the \
                 authorization server that issued it",
            ));
        };
        if cx.auth != AuthMode::Oauth {
            return Err(err(
                "mode",
                format!(
                    "mode token_exchange needs auth: oauth (this route has auth: {}): only a \
                     validated access token can be exchanged",
                    cx.auth.as_str()
                ),
            ));
        }
        if let Some(other) = cx
            .route_issuers
            .iter()
            .map(|&i| &cx.issuers[i])
            .find(|o| o.issuer != ic.issuer)
        {
            return Err(err(
                "issuer",
                format!(
                    "the route accepts tokens of issuer {:?} ({}), which the exchanging \
                     authorization server {} did not issue; list only issuers with the same \
                     issuer identifier in the route's issuers",
                    &*other.name, &*other.issuer, &*ic.issuer
                ),
            ));
        }
    }
    // The gateway's client.
    let client_id = f
        .client_id
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            err(
                "client_id",
                format!("mode {} needs client_id", f.mode.as_str()),
            )
        })?;
    let method = match (&f.client_secret_file, &f.private_key_jwt) {
        (Some(_), Some(_)) => {
            return Err(err(
                "private_key_jwt",
                "give client_secret_file or private_key_jwt, not both",
            ))
        }
        (None, None) => {
            return Err(err(
                "client_secret_file",
                format!(
                    "mode {} needs client_secret_file or private_key_jwt",
                    f.mode.as_str()
                ),
            ))
        }
        (Some(file), None) => {
            let (path, bytes) = read(cx, "client_secret_file", file)?;
            let secret = SecretText::from_file_bytes(&bytes).map_err(|e| {
                err(
                    "client_secret_file",
                    format!("client_secret_file {}: {e}", path.display()),
                )
            })?;
            files.push(path);
            match f.client_auth.unwrap_or_default() {
                SecretMethod::ClientSecretBasic => Method::Basic(secret),
                SecretMethod::ClientSecretPost => Method::Post(secret),
            }
        }
        (None, Some(k)) => {
            if f.client_auth.is_some() {
                return Err(err(
                    "client_auth",
                    "client_auth applies to client_secret_file (private_key_jwt is its own method)",
                ));
            }
            let (path, pem) = read(cx, "private_key_jwt.key_file", &k.key_file)?;
            let signer = Signer::compile(k, &pem)
                .map_err(|e| err("private_key_jwt", format!("{e} ({})", path.display())))?;
            files.push(path);
            Method::PrivateKeyJwt(signer)
        }
    };
    // The target.
    let audience = strings("audience", f.audience)?;
    let resource = strings("resource", f.resource)?;
    for r in &resource {
        check_resource(r).map_err(|e| err("resource", e))?;
    }
    let scopes = match (&f.scopes, &f.scope_map) {
        (Some(_), Some(_)) => {
            return Err(err("scope_map", "give scopes or scope_map, not both"));
        }
        (Some(s), None) => Scopes::Fixed(scope_list("scopes", s)?),
        (None, None) => Scopes::Fixed(None),
        (None, Some(m)) => {
            if m.is_empty() {
                return Err(err("scope_map", "scope_map must not be empty"));
            }
            let mut rules = Vec::new();
            for (from, to) in m {
                check_scope_token(from).map_err(|e| err("scope_map", e))?;
                if to.is_empty() {
                    return Err(err(
                        "scope_map",
                        format!("scope_map: {from} maps to no scope"),
                    ));
                }
                scope_list("scope_map", to)?;
                rules.push((cx.hierarchy.required(from), to.clone()));
            }
            let keys = m.keys().cloned().collect::<Vec<_>>().join(" ");
            Scopes::Map { rules, keys }
        }
    };
    let actor = match f.actor {
        None | Some(FileActor::Flag(false)) => None,
        Some(FileActor::Flag(true)) => Some(ActorTarget::default()),
        Some(FileActor::Target(t)) => {
            let audience = strings("actor.audience", t.audience)?;
            let resource = strings("actor.resource", t.resource)?;
            for r in &resource {
                check_resource(r).map_err(|e| err("actor.resource", e))?;
            }
            let scope = scope_list("actor.scopes", t.scopes.as_deref().unwrap_or_default())?;
            Some(ActorTarget {
                audience,
                resource,
                scope,
            })
        }
    };
    let timeout_ms = f.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(100..=30_000).contains(&timeout_ms) {
        return Err(err(
            "timeout_ms",
            "timeout_ms must be between 100 and 30000",
        ));
    }
    let breaker_failures = f.breaker_failures.unwrap_or(DEFAULT_BREAKER_FAILURES);
    if !(1..=100).contains(&breaker_failures) {
        return Err(err(
            "breaker_failures",
            "breaker_failures must be between 1 and 100",
        ));
    }
    let breaker_open_ms = f.breaker_open_ms.unwrap_or(DEFAULT_BREAKER_OPEN_MS);
    if !(100..=60_000).contains(&breaker_open_ms) {
        return Err(err(
            "breaker_open_ms",
            "breaker_open_ms must be between 100 and 60000",
        ));
    }
    let header = compile_header(f.header.as_deref())?;
    let mut c = AsConfig {
        fingerprint: [0; 16],
        route: Arc::from(cx.route),
        grant,
        issuer_name: issuer.as_ref().map(|i| i.name.clone()),
        issuer: issuer.as_ref().map(|i| i.issuer.clone()),
        token_endpoint: f.token_endpoint,
        audience,
        resource,
        scopes,
        client: ClientAuth { client_id, method },
        actor,
        subject_token_type: f.subject_token_type.unwrap_or_default(),
        header,
        timeout: Duration::from_millis(timeout_ms),
        breaker_failures,
        breaker_open: Duration::from_millis(breaker_open_ms),
        files,
    };
    c.fingerprint = c.fingerprint();
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// The step
// ---------------------------------------------------------------------------------------------

/// A credential the upstream receives: the header, its value (marked sensitive, so it is
/// never printed) and the 12-hex-digit SHA-256 prefix of the credential, for the audit line.
#[derive(Clone)]
pub struct Sent {
    pub header: HeaderName,
    pub value: HeaderValue,
    pub hash: Arc<str>,
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sent")
            .field("header", &self.header)
            .field("hash", &self.hash)
            .finish()
    }
}

impl Sent {
    /// `token` in the header `cfg` says, or `None` when it cannot be a header value.
    fn of(cfg: &AsConfig, token: &str) -> Option<Sent> {
        Some(Sent {
            header: cfg.header.clone(),
            value: cfg.header_value(token)?,
            hash: Arc::from(hash_prefix(&token_hash(token))),
        })
    }
}

/// Who is calling, as the earlier steps established.
#[derive(Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The verified principal (none on `auth: none` routes).
    pub principal: Option<&'a Arc<Principal>>,
    /// The access token it presented, and its hash (an OAuth caller only).
    pub token: Option<&'a str>,
    pub hash: Option<&'a TokenHash>,
}

/// The upstream-credential step: the credential `auth` sends upstream for `caller`, or the
/// refusal when it cannot be had (nothing is forwarded then). `None`: the route adds none
/// (`none`, and `forward`, whose credential is the client's own header).
pub async fn credential(
    clients: &Clients,
    cache: &ExchangeCache,
    auth: &UpstreamAuth,
    caller: Caller<'_>,
) -> Result<Option<Sent>, Refusal> {
    match auth {
        UpstreamAuth::None | UpstreamAuth::Forward => Ok(None),
        UpstreamAuth::Static(s) => Ok(Some(s.sent())),
        UpstreamAuth::ClientCredentials(cfg) => {
            let client = clients.get(cfg)?;
            client_credentials::own_token(client)
                .await
                .map(Some)
                .map_err(|e| client::unavailable(&e))
        }
        UpstreamAuth::TokenExchange(cfg) => {
            let (Some(p), Some(token), Some(hash)) = (caller.principal, caller.token, caller.hash)
            else {
                // Compile refuses token_exchange on routes that do not take OAuth tokens.
                tracing::error!(route = %cfg.route, "token_exchange without a validated access token; refusing");
                return Err(Refusal::Gateway(GatewayFailure::Internal));
            };
            if p.method == AuthMethod::ApiKey {
                tracing::error!(route = %cfg.route, "token_exchange with an API key; refusing");
                return Err(Refusal::Gateway(GatewayFailure::Internal));
            }
            let scope = cfg.scopes.for_caller(p)?;
            let client = clients.get(cfg)?;
            cache.exchanged(client, p, token, hash, scope).await
        }
    }
}

/// The `upstream_auth` block: what compiles, what is refused and where.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::{Config, ConfigError};

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("secret"), "gw-s3cret-value\n").unwrap();
            std::fs::write(dir.path().join("api-key"), "sk-live-0123456789\n").unwrap();
            Dir { dir }
        }

        fn config_name(&self) -> String {
            self.dir.path().join("mcpgate.yaml").display().to_string()
        }

        /// A config with issuers `corp` and `corp-staging` (same `iss`) and `other`, and one route
        /// with `route` extra lines (indented under the route).
        fn compile(&self, route: &str) -> Result<Config, ConfigError> {
            let text = format!(
                r#"listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}
admin: {{address: '127.0.0.1:2'}}
issuers:
  - {{name: corp, issuer: 'https://as.example.com'}}
  - {{name: corp-staging, issuer: 'https://as.example.com', jwks_uri: 'https://as.example.com/staging'}}
  - {{name: other, issuer: 'https://other.example.com'}}
scope_hierarchy:
  mcp:all: [mcp:tools]
routes:
  - name: gh
    path_prefix: /gh
    upstream: 'http://127.0.0.1:3'
{route}"#
            );
            Config::from_yaml(&self.config_name(), &text)
        }

        fn ok(&self, route: &str) -> Config {
            self.compile(route)
                .unwrap_or_else(|e| panic!("{e}\n{route}"))
        }

        fn refused(&self, route: &str, at: &str, why: &str) {
            let e = self
                .compile(route)
                .err()
                .unwrap_or_else(|| panic!("accepted:\n{route}"));
            assert_eq!(e.at, at, "{e}\n{route}");
            assert!(e.reason.contains(why), "want {why:?} in {e}\n{route}");
        }
    }

    const EXCHANGE: &str = "    issuers: [corp]
    upstream_auth:
      mode: token_exchange
      issuer: corp
      audience: https://api.github.internal
      resource: [https://api.github.internal/, https://x.example.com/y?z=1]
      scopes: [repo:read]
      client_id: mcp-gateway
      client_secret_file: secret
";

    fn as_config(c: &Config) -> &AsConfig {
        c.routes[0].upstream_auth.as_config().unwrap()
    }

    #[test]
    fn the_gateways_own_credential_on_an_anonymous_route_is_a_warning() {
        let d = Dir::new();
        let cc = "    upstream_auth: {mode: client_credentials, issuer: corp, client_id: gw, client_secret_file: secret}\n";
        let st = "    upstream_auth: {mode: static, header: X-Key, value_file: api-key}\n";
        for (block, warns) in [
            (cc, true),
            (st, true),
            ("    forward_token: true\n", false),
            ("", false),
        ] {
            for (auth, anonymous) in [("oauth", false), ("none", true)] {
                let c = d.ok(&format!("    auth: {auth}\n{block}"));
                let r = &c.routes[0];
                let w = r.upstream_auth.warning(r.auth.mode);
                assert_eq!(w.is_some(), warns && anonymous, "{auth} {block}: {w:?}");
            }
        }
        d.refused(
            &format!(
                "    auth: none\n{}",
                EXCHANGE.replace("    issuers: [corp]\n", "")
            ),
            "routes[0].upstream_auth.mode",
            "needs auth: oauth",
        );
    }

    #[test]
    fn no_block_is_none_and_forward_token_is_forward() {
        let d = Dir::new();
        let c = d.ok("");
        assert_eq!(c.routes[0].upstream_auth.mode(), Mode::None);
        assert!(!c.routes[0].forwarding.forward_token);
        let c = d.ok("    forward_token: true\n");
        assert_eq!(c.routes[0].upstream_auth.mode(), Mode::Forward);
        assert!(c.routes[0].forwarding.forward_token);
        let c = d.ok("    upstream_auth: {mode: forward}\n");
        assert_eq!(c.routes[0].upstream_auth.mode(), Mode::Forward);
        assert!(c.routes[0].forwarding.forward_token);
        let c = d.ok("    upstream_auth: {mode: none}\n");
        assert_eq!(c.routes[0].upstream_auth.mode(), Mode::None);
        d.refused(
            "    forward_token: true\n    upstream_auth: {mode: forward}\n",
            "routes[0].forward_token",
            "write upstream_auth: {mode: forward} alone",
        );
        d.refused(
            "    forward_token: false\n    upstream_auth: {mode: none}\n    forward_token: true\n",
            "",
            "duplicate field",
        );
    }

    #[test]
    fn token_exchange_compiles_with_every_setting() {
        let d = Dir::new();
        let c = d.ok(EXCHANGE);
        let r = &c.routes[0];
        assert_eq!(r.upstream_auth.mode(), Mode::TokenExchange);
        let a = as_config(&c);
        assert_eq!(a.grant, Grant::TokenExchange);
        assert_eq!(a.issuer.as_deref(), Some("https://as.example.com"));
        assert_eq!(a.audience, vec!["https://api.github.internal"]);
        assert_eq!(a.resource.len(), 2);
        assert!(matches!(&a.scopes, Scopes::Fixed(Some(s)) if s == "repo:read"));
        assert_eq!(a.client.method_name(), "client_secret_basic");
        assert_eq!(a.header, http::header::AUTHORIZATION);
        assert_eq!(a.timeout, Duration::from_millis(2000));
        assert_eq!(
            (a.breaker_failures, a.breaker_open),
            (5, Duration::from_secs(2))
        );
        assert!(a.actor.is_none());
        // Relative to the config file, and watched.
        let secret = d.dir.path().join("secret");
        assert_eq!(a.files, vec![secret.clone()]);
        assert!(c.inputs(Path::new(&d.config_name())).contains(&secret));
        // The client's Authorization is never forwarded in this mode.
        assert!(!r.forwarding.forward_token);
        // Never printed.
        assert!(!format!("{c:?}").contains("gw-s3cret-value"));
        assert!(!c.summary().contains("gw-s3cret-value"));
        // A route may accept several entries of the exchanging issuer.
        d.ok(&EXCHANGE.replace("issuers: [corp]", "issuers: [corp, corp-staging]"));
        // Options.
        let c = d.ok(&format!(
            "{EXCHANGE}      client_auth: client_secret_post\n      actor: true\n      subject_token_type: jwt\n      header: X-Upstream-Token\n      timeout_ms: 500\n      breaker_failures: 2\n      breaker_open_ms: 300\n"
        ));
        let a = as_config(&c);
        assert_eq!(a.client.method_name(), "client_secret_post");
        assert!(a.actor.is_some());
        assert_eq!(a.subject_token_type, SubjectTokenType::Jwt);
        assert_eq!(a.header.as_str(), "x-upstream-token");
        assert_eq!(
            c.routes[0].forwarding.credential_header.as_deref(),
            Some("x-upstream-token")
        );
        let c = d.ok(&format!(
            "{EXCHANGE}      actor: {{resource: 'https://as.example.com/actor', scopes: [gw]}}\n"
        ));
        let actor = as_config(&c).actor.as_ref().unwrap();
        assert_eq!(actor.resource, vec!["https://as.example.com/actor"]);
        assert_eq!(actor.scope.as_deref(), Some("gw"));
    }

    #[test]
    fn token_exchange_only_for_validated_tokens_of_its_own_issuer() {
        let d = Dir::new();
        d.refused(
            &EXCHANGE.replace("    issuers: [corp]\n", ""),
            "routes[0].upstream_auth.issuer",
            "\"other\"",
        );
        d.refused(
            &EXCHANGE.replace("issuers: [corp]", "issuers: [corp, other]"),
            "routes[0].upstream_auth.issuer",
            "did not issue",
        );
        for auth in ["none", "both", "api_key"] {
            let text = format!("    auth: {auth}\n{EXCHANGE}");
            let e = d.compile(&text).unwrap_err();
            // (auth: both/api_key also need api_keys; either way it is refused.)
            assert!(
                e.reason.contains("needs auth: oauth") || e.reason.contains("api_keys"),
                "{auth}: {e}"
            );
        }
        d.refused(
            "    auth: none\n    upstream_auth:\n      mode: token_exchange\n      issuer: corp\n      client_id: gw\n      client_secret_file: secret\n",
            "routes[0].upstream_auth.mode",
            "needs auth: oauth",
        );
        d.refused(
            &EXCHANGE.replace(
                "      issuer: corp\n",
                "      token_endpoint: https://as.example.com/token\n",
            ),
            "routes[0].upstream_auth.issuer",
            "only at the authorization server that issued it",
        );
        d.refused(
            &EXCHANGE.replace("issuer: corp\n", "issuer: nope\n"),
            "routes[0].upstream_auth.issuer",
            "not a configured issuer",
        );
    }

    #[test]
    fn fields_must_fit_the_mode() {
        let d = Dir::new();
        for (block, at, why) in [
            ("{mode: none, header: X-A}", "header", "does not apply to mode none"),
            ("{mode: forward, client_id: x}", "client_id", "does not apply to mode forward"),
            ("{mode: static, header: X-A, value_file: api-key, client_id: x}", "client_id", "does not apply to mode static"),
            ("{mode: static, value_file: api-key}", "header", "needs header"),
            ("{mode: static, header: X-A}", "value_file", "needs value_file"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, actor: true}", "actor", "does not apply to mode client_credentials"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, scope_map: {a: [b]}}", "scope_map", "does not apply"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, subject_token_type: jwt}", "subject_token_type", "does not apply"),
            ("{mode: client_credentials, client_id: x, client_secret_file: secret}", "issuer", "needs issuer (or token_endpoint)"),
            ("{mode: client_credentials, issuer: corp, client_secret_file: secret}", "client_id", "needs client_id"),
            ("{mode: client_credentials, issuer: corp, client_id: '', client_secret_file: secret}", "client_id", "needs client_id"),
            ("{mode: client_credentials, issuer: corp, client_id: x}", "client_secret_file", "needs client_secret_file or private_key_jwt"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, private_key_jwt: {key_file: secret, alg: ES256}}", "private_key_jwt", "not both"),
            ("{mode: client_credentials, issuer: corp, client_id: x, private_key_jwt: {key_file: secret, alg: ES256}, client_auth: client_secret_post}", "client_auth", "applies to client_secret_file"),
            ("{mode: client_credentials, issuer: corp, client_id: x, private_key_jwt: {key_file: secret, alg: ES256}}", "private_key_jwt", "not a ES256 private key"),
            ("{mode: client_credentials, issuer: corp, client_id: x, private_key_jwt: {key_file: secret, alg: HS256}}", "private_key_jwt", "is not one of"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: missing}", "client_secret_file", "cannot read"),
            ("{mode: client_credentials, token_endpoint: 'http://as.example.com/token', client_id: x, client_secret_file: secret}", "token_endpoint", "must be https"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, resource: 'https://a/#f'}", "resource", "fragment"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, resource: 'api'}", "resource", "not an absolute URI"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, audience: ['']}", "audience", "must not be empty"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, scopes: ['a b']}", "scopes", ""),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, header: Host}", "header", "reserved"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, header: 'mcp_session_id'}", "header", "reserved"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, header: 'a b'}", "header", "not a valid header name"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, timeout_ms: 10}", "timeout_ms", "between 100 and 30000"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, breaker_failures: 0}", "breaker_failures", "between 1 and 100"),
            ("{mode: client_credentials, issuer: corp, client_id: x, client_secret_file: secret, breaker_open_ms: 1}", "breaker_open_ms", "between 100 and 60000"),
            ("{mode: token_exchange, issuer: corp, client_id: x, client_secret_file: secret, scopes: [a], scope_map: {a: [b]}}", "scope_map", "not both"),
            ("{mode: token_exchange, issuer: corp, client_id: x, client_secret_file: secret, scope_map: {}}", "scope_map", "must not be empty"),
            ("{mode: token_exchange, issuer: corp, client_id: x, client_secret_file: secret, scope_map: {a: []}}", "scope_map", "maps to no scope"),
        ] {
            let route = format!("    issuers: [corp]\n    upstream_auth: {block}\n");
            d.refused(&route, &format!("routes[0].upstream_auth.{at}"), why);
        }
        // Wrong shapes are serde errors, with their line.
        for block in [
            "{mode: exchange}",
            "{mode: static, header: X-A, value_file: api-key, bogus: 1}",
            "{mode: token_exchange, actor: {bogus: 1}}",
        ] {
            let e = d
                .compile(&format!("    upstream_auth: {block}\n"))
                .err()
                .unwrap();
            assert_eq!(e.line, Some(13), "{e}");
        }
    }

    #[test]
    fn the_credential_header_is_not_an_identity_header() {
        let d = Dir::new();
        d.refused(
            "    upstream_auth: {mode: static, header: X-Auth-Subject, value_file: api-key}\n",
            "routes[0].upstream_auth.header",
            "identity header",
        );
        d.refused(
            "    identity_headers: {subject: X-User-Token}\n    upstream_auth: {mode: static, header: x_user_token, value_file: api-key}\n",
            "routes[0].upstream_auth.header",
            "identity header",
        );
    }

    #[test]
    fn static_values_come_from_their_file() {
        let d = Dir::new();
        let c = d.ok("    upstream_auth: {mode: static, header: X-Api-Key, value_file: api-key}\n");
        let UpstreamAuth::Static(s) = &c.routes[0].upstream_auth else {
            panic!()
        };
        assert_eq!(s.header.as_str(), "x-api-key");
        assert_eq!(s.sent().value.as_bytes(), b"sk-live-0123456789");
        assert!(!format!("{c:?}").contains("sk-live"));
        std::fs::write(d.dir.path().join("api-key"), "two\nlines\n").unwrap();
        d.refused(
            "    upstream_auth: {mode: static, header: X-Api-Key, value_file: api-key}\n",
            "routes[0].upstream_auth.value_file",
            "visible ASCII",
        );
    }

    #[test]
    fn client_credentials_by_token_endpoint_alone() {
        let d = Dir::new();
        let c = d.ok("    upstream_auth: {mode: client_credentials, token_endpoint: 'https://idp.example.net/oauth/token', client_id: gw, client_secret_file: secret, audience: api, scopes: [a, b]}\n");
        let a = as_config(&c);
        assert_eq!(a.grant, Grant::ClientCredentials);
        assert_eq!(
            a.assertion_audience("https://idp.example.net/oauth/token"),
            "https://idp.example.net/oauth/token"
        );
        assert!(matches!(&a.scopes, Scopes::Fixed(Some(s)) if s == "a b"));
        // auth: none routes may use it (the upstream's own credential, not the caller's).
        d.ok("    auth: none\n    upstream_auth: {mode: client_credentials, issuer: corp, client_id: gw, client_secret_file: secret}\n");
    }

    #[test]
    fn fingerprints_cover_secrets_and_settings() {
        let d = Dir::new();
        let f1 = as_config(&d.ok(EXCHANGE)).fingerprint;
        assert_eq!(f1, as_config(&d.ok(EXCHANGE)).fingerprint, "stable");
        std::fs::write(d.dir.path().join("secret"), "rotated\n").unwrap();
        let f2 = as_config(&d.ok(EXCHANGE)).fingerprint;
        assert_ne!(f1, f2, "a rotated secret is another client");
        let f3 = as_config(&d.ok(&EXCHANGE.replace("repo:read", "repo:write"))).fingerprint;
        assert_ne!(f2, f3);
    }

    #[test]
    fn scope_map_maps_the_callers_scopes() {
        let d = Dir::new();
        let c = d.ok(&EXCHANGE.replace(
            "      scopes: [repo:read]\n",
            "      scope_map: {mcp:tools: [repo:read], mcp:admin: [repo:write, repo:read]}\n",
        ));
        let a = as_config(&c);
        let p = |scopes: &str| Principal {
            method: AuthMethod::Jwt,
            iss: Arc::from("https://as.example.com"),
            issuer_name: Arc::from("corp"),
            subject: Some("alice".into()),
            client_id: None,
            scopes: crate::scope::ScopeSet::parse(scopes),
            audiences: Arc::new([]),
            any_audience: false,
            exp: 0,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: None,
            iat: None,
            azp: None,
        };
        assert_eq!(
            a.scopes.for_caller(&p("mcp:tools")).unwrap().as_deref(),
            Some("repo:read")
        );
        assert_eq!(
            a.scopes
                .for_caller(&p("mcp:tools mcp:admin"))
                .unwrap()
                .as_deref(),
            Some("repo:write repo:read")
        );
        // Through scope_hierarchy: mcp:all implies mcp:tools.
        assert_eq!(
            a.scopes.for_caller(&p("mcp:all")).unwrap().as_deref(),
            Some("repo:read")
        );
        // Nothing maps: refused with a step-up challenge, never the AS's default scopes.
        let e = a.scopes.for_caller(&p("other")).unwrap_err();
        assert_eq!(e, Refusal::ScopeFor("mcp:admin mcp:tools".into()));
    }
}
