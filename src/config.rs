//! Configuration: strict YAML file types, `${ENV}` expansion, validation, and the
//! immutable compiled [`Config`] that the request path reads.
//!
//! Two layers (STYLE rule 2): the `File*` types mirror the YAML exactly and reject
//! unknown keys; [`Config::compile`] turns them into pre-computed route tables, scope
//! sets, rendered metadata documents and parsed upstream addresses. The hot path never
//! touches raw YAML. Every error carries the file, and a line and column where serde
//! gives one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::jwt::Algorithm;
use crate::compile::{check_fetch_url, relative_to, CompileError};
use crate::listeners::{Listeners, PublicUrl};
use crate::metadata;
use crate::scope::{canonical_audience, check_scope_token, Hierarchy, RequiredScope};
use crate::store::StateSettings;
use crate::upstream::Upstream;

/// A configuration error: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
    /// The YAML path of the setting (`routes[2].tools`) when a compile step refused it;
    /// empty when unknown or when the error is in another file.
    pub at: String,
}

impl ConfigError {
    fn new(file: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_string(),
            line: None,
            column: None,
            reason: reason.into(),
            at: String::new(),
        }
    }

    /// A domain's compile error, located: in the config file `file`, or in the file it
    /// names (the API key file, with its line and column).
    fn located(file: &str, e: CompileError) -> Self {
        match e.elsewhere {
            Some(w) => ConfigError {
                file: w.file,
                line: w.line,
                column: w.column,
                reason: e.reason,
                at: String::new(),
            },
            None => ConfigError {
                file: file.to_string(),
                line: None,
                column: None,
                reason: e.reason,
                at: e.at,
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.reason),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.reason),
            _ => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// File layer: exactly the YAML keys, nothing else.
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: crate::listeners::FileListen,
    pub admin: crate::listeners::FileAdmin,
    #[serde(default)]
    pub token_cache: FileTokenCache,
    #[serde(default)]
    pub limits: crate::connections::FileLimits,
    #[serde(default)]
    pub shutdown: crate::listeners::FileShutdown,
    #[serde(default)]
    pub scope_hierarchy: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub issuers: Vec<FileIssuer>,
    /// Legacy API keys for routes with `auth: api_key` or `both`.
    pub api_keys: Option<FileApiKeys>,
    #[serde(default)]
    pub dpop: FileDpop,
    /// State shared between replicas (Redis): DPoP replay and revocations.
    #[serde(default)]
    pub state: crate::store::FileState,
    pub routes: Vec<FileRoute>,
}

/// DPoP proof settings shared by every route (RFC 9449).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDpop {
    /// Proof algorithms accepted (asymmetric only).
    pub algorithms: Option<Vec<String>>,
    /// How old a proof's `iat` may be.
    #[serde(default = "default_dpop_window")]
    pub iat_past_seconds: u64,
    /// How far in the future a proof's `iat` may be (client clock ahead).
    #[serde(default = "default_dpop_window")]
    pub iat_future_seconds: u64,
    /// Secret for stateless server nonces; give every replica the same one. Default: a
    /// random secret per process (fine for a single replica).
    pub nonce_secret: Option<String>,
    /// How long a nonce stays valid (it is accepted for one more period after).
    #[serde(default = "default_dpop_window")]
    pub nonce_lifetime_seconds: u64,
    /// Proof `jti`s remembered for replay detection.
    #[serde(default = "default_replay_entries")]
    pub replay_cache_entries: u64,
}

impl Default for FileDpop {
    fn default() -> Self {
        FileDpop {
            algorithms: None,
            iat_past_seconds: default_dpop_window(),
            iat_future_seconds: default_dpop_window(),
            nonce_secret: None,
            nonce_lifetime_seconds: default_dpop_window(),
            replay_cache_entries: default_replay_entries(),
        }
    }
}

fn default_dpop_window() -> u64 {
    300
}
fn default_replay_entries() -> u64 {
    1_000_000
}

/// Whether a route accepts DPoP-bound tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// Only Bearer tokens; the DPoP scheme is refused and never advertised.
    Disabled,
    /// Bearer and DPoP; a DPoP-bound token must come with its proof.
    #[default]
    Allowed,
    /// DPoP only: Bearer presentations and unbound tokens are refused.
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApiKeys {
    /// The key file (hashed entries; see `apikeys`), relative to the config file.
    pub file: PathBuf,
    #[serde(default = "default_api_key_header")]
    pub header: String,
}

fn default_api_key_header() -> String {
    crate::auth::apikeys::DEFAULT_HEADER.to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTokenCache {
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
}

impl Default for FileTokenCache {
    fn default() -> Self {
        FileTokenCache {
            max_entries: default_cache_entries(),
        }
    }
}

fn default_cache_entries() -> u64 {
    100_000
}

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
    pub introspection: Option<FileIntrospection>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIntrospection {
    /// Default: the `introspection_endpoint` of the issuer's metadata.
    pub endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: crate::auth::introspect::Secret,
    #[serde(default)]
    pub auth_method: crate::auth::introspect::ClientAuth,
    #[serde(default = "default_introspection_cache")]
    pub cache_max_seconds: u64,
    #[serde(default = "default_negative_cache")]
    pub negative_cache_seconds: u64,
    #[serde(default = "default_introspection_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_true")]
    pub require_aud: bool,
    /// Introspection calls per second this issuer may receive from one replica (a token
    /// bucket refilled at this rate); past it, uncached tokens get 503.
    #[serde(default = "default_introspection_rate")]
    pub max_calls_per_second: u32,
    /// Calls allowed at once above the rate (the bucket's size).
    #[serde(default = "default_introspection_burst")]
    pub burst: u32,
    /// Consecutive failed calls (timeout, transport error, 5xx, not RFC 7662) that stop
    /// calls to the AS for `breaker_open_ms`.
    #[serde(default = "default_introspection_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_introspection_breaker_open")]
    pub breaker_open_ms: u64,
}

fn default_introspection_rate() -> u32 {
    50
}
fn default_introspection_burst() -> u32 {
    100
}
fn default_introspection_breaker_failures() -> u32 {
    5
}
fn default_introspection_breaker_open() -> u64 {
    2000
}

fn default_introspection_cache() -> u64 {
    300
}
fn default_negative_cache() -> u64 {
    5
}
fn default_introspection_timeout() -> u64 {
    2000
}
fn default_true() -> bool {
    true
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

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileIdentityHeaders {
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Option<String>,
    pub issuer: Option<String>,
    pub method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: String,
    pub path_prefix: String,
    /// Match `path_prefix` case-sensitively (for upstreams that are); default: ASCII
    /// case-insensitively.
    #[serde(default)]
    pub case_sensitive_prefix: bool,
    pub host: Option<String>,
    pub upstream: String,
    pub rewrite_prefix: Option<String>,
    pub resource: Option<String>,
    #[serde(default)]
    pub audience_aliases: Vec<String>,
    pub issuers: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub auth: AuthMode,
    #[serde(default)]
    pub forward_token: bool,
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub root_metadata: bool,
    #[serde(default)]
    pub identity_headers: FileIdentityHeaders,
    /// RFC 3339: when API keys on this route were deprecated (`Deprecation` header).
    pub api_key_deprecated_at: Option<String>,
    /// RFC 3339: when API keys on this route stop working (`Sunset` header).
    pub api_key_sunset: Option<String>,
    /// Glob on the tool name → extra scopes for `tools/call` (in file order).
    pub tools: Option<serde_yaml::Mapping>,
    /// Glob on the URI → extra scopes for `resources/read`.
    pub resources: Option<serde_yaml::Mapping>,
    /// Glob on the prompt name → extra scopes for `prompts/get`.
    pub prompts: Option<serde_yaml::Mapping>,
    #[serde(default)]
    pub default_tool_policy: crate::mcp::policy::DefaultPolicy,
    #[serde(default)]
    pub filter_tools_list: bool,
    /// Browser origins allowed to call the route (default: the public origin only).
    pub allowed_origins: Option<Vec<String>>,
    /// Seconds a response stream may outlive its token's `exp` before the gateway closes it.
    #[serde(default = "default_stream_grace")]
    pub stream_expiry_grace_seconds: u64,
    #[serde(default)]
    pub dpop: DpopMode,
    /// Require a server-issued nonce in DPoP proofs (`use_dpop_nonce`).
    #[serde(default)]
    pub dpop_nonce: bool,
    /// TLS to an `https://` upstream: a private CA, a client certificate.
    pub upstream_tls: Option<FileUpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// PEM CA certificates that verify the upstream (instead of the system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key presented to the upstream (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn default_stream_grace() -> u64 {
    0
}

// ---------------------------------------------------------------------------
// Compiled layer.
// ---------------------------------------------------------------------------

/// The compiled, immutable configuration. Shared behind an `Arc` (and later an
/// `ArcSwap` for reloads); one snapshot is loaded per request and used throughout.
#[derive(Debug)]
pub struct Config {
    pub source: String,
    /// `listen`, `admin`, `shutdown`: addresses, public URL, TLS, admin token.
    pub listeners: Listeners,
    pub token_cache_entries: u64,
    /// Connection caps and deadlines of the public listener (`limits`).
    pub connections: crate::connections::Limits,
    /// Request head and body sizes (`limits`).
    pub requests: crate::connections::RequestLimits,
    pub issuers: Vec<Arc<IssuerConfig>>,
    /// The legacy API keys (loaded from `api_keys.file` when the config compiles).
    pub api_keys: Option<Arc<crate::auth::apikeys::KeyStore>>,
    pub dpop: DpopSettings,
    /// Shared state (Redis) and the fail policies. Applies at restart.
    pub state: StateSettings,
    pub routes: Vec<Arc<Route>>,
    /// PRM path (path-inserted well-known URL path) → route index.
    pub metadata_paths: HashMap<(Option<String>, String), usize>,
}

/// Compiled DPoP settings.
pub struct DpopSettings {
    pub algorithms: Vec<Algorithm>,
    /// `algs="..."` for challenges and `dpop_signing_alg_values_supported`.
    pub algs_param: String,
    pub iat_past: i64,
    pub iat_future: i64,
    pub nonces: crate::auth::dpop::Nonces,
    pub replay_entries: u64,
}

impl std::fmt::Debug for DpopSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopSettings")
            .field("algorithms", &self.algorithms)
            .field("iat_past", &self.iat_past)
            .field("iat_future", &self.iat_future)
            .finish()
    }
}

/// A random secret for this process's DPoP nonces when none is configured.
fn process_nonce_secret() -> &'static [u8; 32] {
    static SECRET: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(|| {
        let mut s = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut s);
        s
    });
    &SECRET
}

fn compile_dpop(f: &FileDpop) -> Result<DpopSettings, String> {
    let algorithms = match &f.algorithms {
        None => Algorithm::ALL.to_vec(),
        Some(list) if list.is_empty() => return Err("dpop.algorithms must not be empty".into()),
        Some(list) => list
            .iter()
            .map(|a| {
                Algorithm::parse(a).ok_or_else(|| {
                    format!("dpop.algorithms: {a:?} is not an allowed asymmetric algorithm")
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if f.iat_past_seconds > 3600 || f.iat_future_seconds > 3600 {
        return Err("dpop iat windows must be at most 3600 seconds".into());
    }
    if f.nonce_lifetime_seconds < 10 {
        return Err("dpop.nonce_lifetime_seconds must be at least 10".into());
    }
    let secret: &[u8] = match &f.nonce_secret {
        Some(s) if s.len() < 16 => {
            return Err("dpop.nonce_secret must be at least 16 characters".into())
        }
        Some(s) => s.as_bytes(),
        None => process_nonce_secret(),
    };
    let algs_param = algorithms
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(DpopSettings {
        algorithms,
        algs_param,
        iat_past: f.iat_past_seconds as i64,
        iat_future: f.iat_future_seconds as i64,
        nonces: crate::auth::dpop::Nonces::new(secret, f.nonce_lifetime_seconds as i64),
        replay_entries: f.replay_cache_entries.max(1),
    })
}

/// Identifies one issuer entry with every setting that shapes its verdicts.
pub type Fingerprint = [u8; 16];

#[derive(Debug)]
pub struct IssuerConfig {
    /// This entry's name and settings, hashed (see [`IssuerConfig::verdict_fingerprint`]):
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
    pub introspection: Option<crate::auth::introspect::IntrospectionConfig>,
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
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub subject: http::HeaderName,
    pub client_id: http::HeaderName,
    pub scopes: http::HeaderName,
    pub issuer: http::HeaderName,
    /// `oauth` or `api_key`.
    pub method: http::HeaderName,
    /// Lower-cased names with `_` folded to `-`, used to strip client-sent copies.
    pub folded: [String; 5],
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub index: usize,
    pub host: Option<String>,
    pub path_prefix: String,
    /// `path_prefix` matches only in its own case (see `routing::prefix_matches`).
    pub case_sensitive_prefix: bool,
    pub rewrite_prefix: Option<String>,
    pub upstream: Upstream,
    pub resource: String,
    /// Canonical forms (scheme and host lower-cased) of every accepted audience.
    pub audiences: Vec<String>,
    /// Indices into `Config::issuers`.
    pub issuers: Vec<usize>,
    pub scopes: Vec<RequiredScope>,
    /// `scope="..."` value for challenges: every scope the route requires.
    pub scope_challenge: String,
    pub auth: AuthMode,
    pub forward_token: bool,
    pub preserve_host: bool,
    pub identity: IdentityHeaders,
    pub metadata_url: String,
    pub metadata_path: String,
    pub metadata_body: bytes::Bytes,
    pub metrics: crate::metrics::RouteMetrics,
    /// The API key header (set on every route when `api_keys` is configured, so that
    /// client-sent keys are stripped upstream).
    pub api_key_header: Option<http::HeaderName>,
    /// Response headers for requests authenticated by API key (`auth: api_key`/`both`).
    pub deprecation: Option<crate::auth::apikeys::Deprecation>,
    pub mcp: crate::mcp::policy::Policy,
    /// Lower-cased `Origin` values accepted (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    pub stream_expiry_grace: i64,
    pub dpop: DpopMode,
    pub dpop_nonce: bool,
    /// `algs` of the DPoP challenge (the accepted proof algorithms).
    pub dpop_algs: String,
    /// Private CA and client certificate for an `https://` upstream.
    pub upstream_tls: Option<crate::upstream::UpstreamTls>,
    /// The files `upstream_tls` came from (watched for reloads).
    pub upstream_tls_files: Vec<PathBuf>,
    /// `scheme://host[:port]` clients use for this route: the base of DPoP `htu`.
    pub public_origin: String,
    /// How the route's refusals challenge (compiled once).
    pub challenge: crate::respond::Challenge,
}

impl Config {
    /// Read, expand, parse, validate and compile a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&name, format!("cannot read file: {e}")))?;
        Config::from_yaml(&name, &text)
    }

    /// Parse and compile YAML text; `name` is used in error messages.
    pub fn from_yaml(name: &str, text: &str) -> Result<Config, ConfigError> {
        let expanded = expand_env(name, text)?;
        let file: FileConfig = serde_yaml::from_str(&expanded).map_err(|e| {
            let loc = e.location();
            ConfigError {
                file: name.to_string(),
                at: String::new(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                reason: strip_serde_location(&e.to_string()),
            }
        })?;
        Config::compile(name, file)
    }

    /// Validate the file layer and build the compiled config.
    pub fn compile(name: &str, file: FileConfig) -> Result<Config, ConfigError> {
        let err = |reason: String| ConfigError::new(name, reason);
        let loc = |e: CompileError| ConfigError::located(name, e);
        let mut listeners =
            Listeners::compile(name, file.listen, file.admin, file.shutdown).map_err(loc)?;
        let (connections, requests) = crate::connections::compile(&file.limits).map_err(loc)?;
        if file.token_cache.max_entries == 0 {
            return Err(err("token_cache.max_entries must be at least 1".into()));
        }

        let hierarchy = Hierarchy::compile(&file.scope_hierarchy).map_err(err)?;
        let dpop = compile_dpop(&file.dpop).map_err(err)?;
        let state = crate::store::compile(name, file.state).map_err(loc)?;

        let mut issuers = Vec::new();
        let mut issuer_index = HashMap::new();
        for (i, fi) in file.issuers.into_iter().enumerate() {
            let ic = compile_issuer(fi).map_err(err)?;
            if issuer_index.insert(ic.name.to_string(), i).is_some() {
                return Err(err(format!("issuer name {:?} is used twice", ic.name)));
            }
            issuers.push(Arc::new(ic));
        }
        let api_keys = match file.api_keys {
            Some(k) => Some(Arc::new(
                crate::auth::apikeys::KeyStore::load(&relative_to(name, k.file), &k.header)
                    .map_err(loc)?,
            )),
            None => None,
        };

        let mut routes: Vec<Arc<Route>> = Vec::new();
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut metadata_paths = HashMap::new();
        let mut root_hosts: HashSet<Option<String>> = HashSet::new();
        if file.routes.is_empty() {
            return Err(err("routes: at least one route is required".into()));
        }
        for (index, fr) in file.routes.into_iter().enumerate() {
            let rname = fr.name.clone();
            let ctx = |e: String| err(format!("route {rname:?}: {e}"));
            if !names.insert(fr.name.clone()) {
                return Err(ctx("route name is used twice".into()));
            }
            let host = fr.host.as_ref().map(|h| h.to_ascii_lowercase());
            // Case variants of one prefix would tie: one route per prefix in any case.
            if !prefixes.insert((host.clone(), fr.path_prefix.to_ascii_lowercase())) {
                return Err(ctx(format!(
                    "path_prefix {:?} is already claimed (in some letter case) by another route on the same host",
                    fr.path_prefix
                )));
            }
            let root_metadata = fr.root_metadata;
            let cx = RouteContext {
                public: &listeners.public,
                issuers: &issuers,
                issuer_index: &issuer_index,
                hierarchy: &hierarchy,
                dpop: &dpop,
                source: name,
                api_key_header: api_keys.as_ref().map(|k| &k.header),
            };
            let mut route = compile_route(index, fr, cx).map_err(ctx)?;
            if route.auth.accepts_api_key() && api_keys.is_none() {
                return Err(ctx(
                    "accepts API keys (auth: api_key or both) but no api_keys file is configured"
                        .into(),
                ));
            }
            route.api_key_header = api_keys.as_ref().map(|k| k.header.clone());
            crate::auth::introspect::check_route_issuers(&route, &issuers).map_err(ctx)?;
            // Only protected routes have metadata: an `auth: none` route is not an
            // OAuth protected resource, and its well-known path stays a 404.
            if route.auth.accepts_oauth() {
                let key = (host.clone(), route.metadata_path.clone());
                if metadata_paths.insert(key, index).is_some() {
                    return Err(ctx(format!(
                        "its metadata path {} is already served for another route",
                        route.metadata_path
                    )));
                }
                let is_root = route.metadata_path == metadata::WELL_KNOWN;
                if root_metadata && !is_root {
                    if !root_hosts.insert(host.clone()) {
                        return Err(ctx(
                            "root_metadata is set on more than one route for the same host".into(),
                        ));
                    }
                    if metadata_paths
                        .insert((host, metadata::WELL_KNOWN.to_string()), index)
                        .is_some()
                    {
                        return Err(ctx(
                            "root_metadata conflicts with a route whose resource is at the root"
                                .into(),
                        ));
                    }
                }
            } else if root_metadata {
                return Err(ctx("root_metadata needs auth: oauth or both".into()));
            }
            routes.push(Arc::new(route));
        }

        listeners.load_tls().map_err(loc)?;

        Ok(Config {
            source: name.to_string(),
            listeners,
            token_cache_entries: file.token_cache.max_entries,
            dpop,
            state,
            connections,
            requests,
            issuers,
            api_keys,
            routes,
            metadata_paths,
        })
    }

    /// Issuers named by at least one route that accepts OAuth.
    pub fn issuers_in_use(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self
            .routes
            .iter()
            .filter(|r| r.auth.accepts_oauth())
            .flat_map(|r| r.issuers.iter().copied())
            .collect();
        used.sort_unstable();
        used.dedup();
        used
    }

    /// A short human-readable summary, printed by `mcpgate check`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: OK\n  listen {} (public {}), admin {}\n",
            self.source,
            self.listeners.address,
            self.listeners.public.url,
            self.listeners.admin_address
        );
        s.push_str(&format!("  issuers ({}):\n", self.issuers.len()));
        for i in &self.issuers {
            let jwks = i
                .jwks_uri
                .as_deref()
                .unwrap_or("(discovered from metadata)");
            if i.uses_jwks() {
                s.push_str(&format!("    {}  {}  jwks {}\n", i.name, i.issuer, jwks));
            } else {
                s.push_str(&format!(
                    "    {}  {}  opaque tokens only\n",
                    i.name, i.issuer
                ));
            }
            if let Some(intro) = &i.introspection {
                s.push_str(&format!(
                    "      introspection {}  cache {} s  timeout {} ms{}\n",
                    intro
                        .endpoint
                        .as_deref()
                        .unwrap_or("(discovered from metadata)"),
                    intro.cache_max.as_secs(),
                    intro.timeout.as_millis(),
                    if intro.require_aud {
                        ""
                    } else {
                        "  aud not required"
                    }
                ));
            }
        }
        if let Some(r) = &self.state.redis {
            s.push_str(&format!(
                "  state: redis {} prefix {:?} timeout {} ms; dpop replay fail {}, revocations fail {}{}{}\n",
                r.redacted,
                r.key_prefix,
                r.timeout.as_millis(),
                self.state.dpop_replay_fail.as_str(),
                self.state.revocations_fail.as_str(),
                if r.readyz { "; in /readyz" } else { "" },
                if r.hmac_key.is_some() {
                    "; revocations authenticated (HMAC)"
                } else {
                    ""
                }
            ));
        }
        if let Some(t) = &self.listeners.admin_token {
            s.push_str(&format!(
                "  admin token: {} (POST /revocations enabled)\n",
                t.file.display()
            ));
        }
        if let Some(k) = &self.api_keys {
            s.push_str(&format!(
                "  api keys: {} in {} (header {})\n",
                k.len(),
                k.file.display(),
                k.header
            ));
        }
        s.push_str(&format!("  routes ({}):\n", self.routes.len()));
        for r in &self.routes {
            let host = r
                .host
                .as_deref()
                .map(|h| format!("{h} "))
                .unwrap_or_default();
            let issuers = r
                .issuers
                .iter()
                .map(|&i| self.issuers[i].name.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let auth = match r.auth {
                AuthMode::Oauth => {
                    format!("oauth scopes [{}] issuers [{issuers}]", r.scope_challenge)
                }
                AuthMode::Both => format!(
                    "oauth or api key, scopes [{}] issuers [{issuers}]",
                    r.scope_challenge
                ),
                AuthMode::ApiKey => format!("api key, scopes [{}]", r.scope_challenge),
                AuthMode::None => "auth none".to_string(),
            };
            s.push_str(&format!(
                "    {}  {}{} -> {}  {}\n",
                r.name, host, r.path_prefix, r.upstream.authority, auth
            ));
            if r.auth.accepts_oauth() {
                s.push_str(&format!(
                    "      resource {}\n      metadata {}\n",
                    r.resource, r.metadata_url
                ));
            }
            if let Some(d) = &r.deprecation {
                let text = |v: &http::HeaderValue| v.to_str().unwrap_or_default().to_string();
                s.push_str(&format!(
                    "      api keys: Deprecation {}{}\n",
                    text(&d.deprecation),
                    d.sunset
                        .as_ref()
                        .map(|s| format!(", Sunset {}", text(s)))
                        .unwrap_or_default()
                ));
            }
        }
        s
    }
}

fn strip_serde_location(msg: &str) -> String {
    // serde_yaml appends " at line L column C"; we report the location separately.
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Expand `${NAME}` from the environment. `$${` yields a literal `${`.
/// An unset variable is an error naming the line, so a typo never becomes an empty secret.
pub fn expand_env(name: &str, text: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(body) = after.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    return Err(ConfigError {
                        file: name.to_string(),
                        at: String::new(),
                        line: Some(lineno + 1),
                        column: Some(line.len() - after.len() + 1),
                        reason: "unterminated ${...}".into(),
                    });
                };
                let var = &body[..end];
                let valid =
                    !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                let value = if valid { std::env::var(var).ok() } else { None };
                match value {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(ConfigError {
                            file: name.to_string(),
                            at: String::new(),
                            line: Some(lineno + 1),
                            column: Some(line.len() - after.len() + 1),
                            reason: if valid {
                                format!("environment variable {var} is not set")
                            } else {
                                format!("invalid variable name {var:?} in ${{...}}")
                            },
                        })
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
    }
    Ok(out)
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
        .map(crate::auth::introspect::compile)
        .transpose()
        .map_err(ctx)?;
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

fn check_path_prefix(p: &str, what: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{what} {p:?} must start with '/'"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(format!("{what} {p:?} must not end with '/'"));
    }
    match crate::path::normalize(p) {
        Ok(n) if n == p => Ok(()),
        _ => Err(format!(
            "{what} {p:?} must be a normalized path (no dot segments, '//', '%', ';' or '\\')"
        )),
    }
}

fn header_name(value: Option<String>, default: &str) -> Result<http::HeaderName, String> {
    let v = value.unwrap_or_else(|| default.to_string());
    http::HeaderName::from_bytes(v.as_bytes())
        .map_err(|_| format!("identity header name {v:?} is not a valid header name"))
}

fn fold_header_name(n: &str) -> String {
    n.to_ascii_lowercase().replace('_', "-")
}

fn compile_identity(f: FileIdentityHeaders) -> Result<IdentityHeaders, String> {
    let subject = header_name(f.subject, "X-Auth-Subject")?;
    let client_id = header_name(f.client_id, "X-Auth-Client-Id")?;
    let scopes = header_name(f.scopes, "X-Auth-Scopes")?;
    let issuer = header_name(f.issuer, "X-Auth-Issuer")?;
    let method = header_name(f.method, "X-Auth-Method")?;
    let folded = [
        fold_header_name(subject.as_str()),
        fold_header_name(client_id.as_str()),
        fold_header_name(scopes.as_str()),
        fold_header_name(issuer.as_str()),
        fold_header_name(method.as_str()),
    ];
    let reserved = [
        "authorization",
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
    ];
    for n in &folded {
        if reserved.contains(&n.as_str()) {
            return Err(format!("identity header name {n:?} is reserved"));
        }
    }
    let unique: HashSet<&String> = folded.iter().collect();
    if unique.len() != folded.len() {
        return Err("identity header names must be distinct".into());
    }
    Ok(IdentityHeaders {
        subject,
        client_id,
        scopes,
        issuer,
        method,
        folded,
    })
}

/// What every route of a config is compiled against.
#[derive(Clone, Copy)]
struct RouteContext<'a> {
    public: &'a PublicUrl,
    issuers: &'a [Arc<IssuerConfig>],
    issuer_index: &'a HashMap<String, usize>,
    hierarchy: &'a Hierarchy,
    dpop: &'a DpopSettings,
    /// The config file's name, to resolve relative paths.
    source: &'a str,
    /// The API key header (`api_keys.header`), when keys are configured.
    api_key_header: Option<&'a http::HeaderName>,
}

fn compile_route(index: usize, fr: FileRoute, cx: RouteContext<'_>) -> Result<Route, String> {
    let RouteContext {
        public,
        issuers,
        issuer_index,
        hierarchy,
        dpop,
        source,
        api_key_header,
    } = cx;
    if fr.name.is_empty() {
        return Err("name must not be empty".into());
    }
    check_path_prefix(&fr.path_prefix, "path_prefix")?;
    if let Some(rw) = &fr.rewrite_prefix {
        if rw != "/" {
            check_path_prefix(rw, "rewrite_prefix")?;
        }
    }
    if let Some(h) = &fr.host {
        if h.is_empty() || h.contains(['/', ':', ' ']) {
            return Err(format!(
                "host {h:?} must be a bare host name (no scheme or port)"
            ));
        }
        if h.ends_with('.') {
            return Err(format!(
                "host {h:?} must not end with '.' (requests for {h:?} match it without the dot)"
            ));
        }
    }
    let upstream = Upstream::parse(&fr.upstream)?;

    let resource = match fr.resource {
        Some(r) => r,
        None => {
            let base = match &fr.host {
                Some(h) => {
                    // A virtual host keeps the public scheme and port.
                    let port = public.authority.rsplit_once(':').map(|(_, p)| p);
                    match port {
                        Some(p) if !public.authority.ends_with(']') => {
                            format!("{}://{}:{}", public.scheme, h, p)
                        }
                        _ => format!("{}://{}", public.scheme, h),
                    }
                }
                None => public.url.clone(),
            };
            if fr.path_prefix == "/" {
                format!("{base}/")
            } else {
                format!("{base}{}", fr.path_prefix)
            }
        }
    };
    let ru = url::Url::parse(&resource).map_err(|e| format!("resource {resource:?}: {e}"))?;
    if ru.fragment().is_some() {
        return Err(format!(
            "resource {resource:?} must not contain a fragment (RFC 8707)"
        ));
    }
    if ru.scheme() != "https" && !(ru.scheme() == "http" && public.scheme == "http") {
        return Err(format!(
            "resource {resource:?} must be an https URL (http only when public_url is http)"
        ));
    }
    let (metadata_url, metadata_path) = metadata::metadata_location(&ru);

    let mut audiences = vec![canonical_audience(&resource)];
    for a in &fr.audience_aliases {
        audiences.push(canonical_audience(a));
    }

    let route_issuers: Vec<usize> = match &fr.issuers {
        Some(list) => list
            .iter()
            .map(|n| {
                issuer_index
                    .get(n)
                    .copied()
                    .ok_or_else(|| format!("names issuer {n:?}, which is not configured"))
            })
            .collect::<Result<_, _>>()?,
        None => (0..issuers.len()).collect(),
    };
    if fr.auth.accepts_oauth() && route_issuers.is_empty() {
        return Err("auth accepts oauth but no issuer is configured".into());
    }

    let mut scopes = Vec::new();
    for s in &fr.scopes {
        check_scope_token(s)?;
        if s == "offline_access" {
            return Err("offline_access cannot be a required scope".into());
        }
        scopes.push(hierarchy.required(s));
    }
    for s in &fr.scopes_supported {
        check_scope_token(s)?;
    }
    let scope_challenge = fr.scopes.join(" ");

    let mut policy_scopes: Vec<String> = Vec::new();
    for m in [&fr.tools, &fr.resources, &fr.prompts]
        .into_iter()
        .flatten()
    {
        for v in m.values() {
            if let Ok(list) = serde_yaml::from_value::<Vec<String>>(v.clone()) {
                policy_scopes.extend(list);
            }
        }
    }
    let mut supported: Vec<String> = Vec::new();
    for s in fr
        .scopes
        .iter()
        .chain(policy_scopes.iter())
        .chain(fr.scopes_supported.iter())
    {
        if s != "offline_access" && !supported.contains(s) {
            supported.push(s.clone());
        }
    }
    let auth_servers: Vec<&str> = route_issuers.iter().map(|&i| &*issuers[i].issuer).collect();
    if fr.dpop_nonce && fr.dpop == DpopMode::Disabled {
        return Err("dpop_nonce needs dpop: allowed or required".into());
    }
    let dpop_algs: Vec<&str> = if fr.dpop == DpopMode::Disabled {
        Vec::new()
    } else {
        dpop.algorithms.iter().map(|a| a.name()).collect()
    };
    let metadata_body = metadata::render(
        &resource,
        &auth_servers,
        &supported,
        &dpop_algs,
        fr.dpop == DpopMode::Required,
    );
    let public_origin = match &fr.host {
        Some(h) => match public.authority.rsplit_once(':') {
            Some((_, port)) if !public.authority.ends_with(']') => {
                format!("{}://{}:{}", public.scheme, h.to_ascii_lowercase(), port)
            }
            _ => format!("{}://{}", public.scheme, h.to_ascii_lowercase()),
        },
        None => public.url.clone(),
    };

    let rules = |what: &str,
                 m: &Option<serde_yaml::Mapping>|
     -> Result<Vec<crate::mcp::policy::Rule>, String> {
        let Some(m) = m else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for (k, v) in m {
            let pattern = k
                .as_str()
                .ok_or_else(|| format!("{what}: pattern {k:?} must be a string"))?;
            let list: Vec<String> = serde_yaml::from_value(v.clone())
                .map_err(|_| format!("{what}: {pattern:?} must map to a list of scopes"))?;
            let mut scopes = Vec::new();
            for sc in &list {
                check_scope_token(sc)?;
                scopes.push(hierarchy.required(sc));
            }
            out.push(crate::mcp::policy::Rule::new(pattern, scopes));
        }
        Ok(out)
    };
    let mcp = crate::mcp::policy::Policy {
        tools: rules("tools", &fr.tools)?,
        resources: rules("resources", &fr.resources)?
            .into_iter()
            .map(crate::mcp::policy::Rule::resource)
            .collect::<Result<_, _>>()?,
        prompts: rules("prompts", &fr.prompts)?,
        default: fr.default_tool_policy,
        filter_tools_list: fr.filter_tools_list,
    };
    if mcp.inspects() && fr.auth != AuthMode::Oauth {
        return Err("tool policies and filter_tools_list need auth: oauth".into());
    }
    let allowed_origins = match &fr.allowed_origins {
        Some(list) => list
            .iter()
            .map(|o| {
                let u = url::Url::parse(o).map_err(|e| format!("allowed_origins {o:?}: {e}"))?;
                let origin = u.origin().ascii_serialization();
                if origin == "null" || u.path() != "/" {
                    return Err(format!(
                        "allowed_origins {o:?} must be scheme://host[:port]"
                    ));
                }
                Ok(origin)
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![public.url.to_ascii_lowercase()],
    };

    let (upstream_tls, upstream_tls_files) = match fr.upstream_tls {
        None => (None, Vec::new()),
        Some(_) if !upstream.tls => {
            return Err("upstream_tls needs an https:// upstream".into());
        }
        Some(t) => {
            let ca = t.ca_file.map(|p| relative_to(source, p));
            let cert = t.client_cert.map(|p| relative_to(source, p));
            let key = t.client_key.map(|p| relative_to(source, p));
            let loaded =
                crate::upstream::UpstreamTls::load(ca.as_deref(), cert.as_deref(), key.as_deref())?;
            let files = [ca, cert, key].into_iter().flatten().collect();
            (Some(loaded), files)
        }
    };

    let challenge = if fr.auth == AuthMode::ApiKey {
        crate::respond::Challenge::ApiKey {
            header: api_key_header
                .map_or("x-api-key", |h| h.as_str())
                .to_string(),
        }
    } else {
        crate::respond::Challenge::OAuth {
            bearer: fr.dpop != DpopMode::Required,
            dpop_algs: (fr.dpop != DpopMode::Disabled).then(|| dpop.algs_param.clone()),
            metadata_url: metadata_url.clone(),
            scope: scope_challenge.clone(),
        }
    };
    Ok(Route {
        challenge,
        upstream_tls,
        upstream_tls_files,
        dpop: fr.dpop,
        dpop_nonce: fr.dpop_nonce,
        dpop_algs: dpop.algs_param.clone(),
        public_origin,
        mcp,
        allowed_origins,
        stream_expiry_grace: fr.stream_expiry_grace_seconds.min(86_400) as i64,
        metrics: crate::metrics::RouteMetrics::new(&fr.name),
        name: Arc::from(fr.name.as_str()),
        index,
        host: fr.host.map(|h| h.to_ascii_lowercase()),
        path_prefix: fr.path_prefix,
        case_sensitive_prefix: fr.case_sensitive_prefix,
        rewrite_prefix: fr.rewrite_prefix,
        upstream,
        resource,
        audiences,
        issuers: route_issuers,
        scopes,
        scope_challenge,
        auth: fr.auth,
        forward_token: fr.forward_token,
        preserve_host: fr.preserve_host,
        identity: compile_identity(fr.identity_headers)?,
        deprecation: crate::auth::apikeys::Deprecation::compile(
            &fr.name,
            fr.auth,
            fr.api_key_deprecated_at.as_deref(),
            fr.api_key_sunset.as_deref(),
            &metadata_url,
        )?,
        api_key_header: None,
        metadata_url,
        metadata_path,
        metadata_body,
    })
}

/// The default location of a config file inside the container image and Helm chart.
pub fn default_config_path() -> PathBuf {
    PathBuf::from("/etc/mcpgate/config.yaml")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::FailMode;

    const BASE: &str = r#"
listen:
  address: 127.0.0.1:8080
  public_url: https://mcp.example.com
admin:
  address: 127.0.0.1:9090
issuers:
  - name: corp
    issuer: https://auth.example.com
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: http://127.0.0.1:3001
    scopes: [mcp:read]
"#;

    #[test]
    fn compiles_defaults() {
        let c = Config::from_yaml("t.yaml", BASE).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.resource, "https://mcp.example.com/mcp");
        assert_eq!(
            r.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(r.metadata_path, "/.well-known/oauth-protected-resource/mcp");
        assert_eq!(r.issuers, vec![0]);
        assert_eq!(c.issuers[0].algorithms.len(), Algorithm::DEFAULT.len());
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let text = BASE.replace(
            "    scopes: [mcp:read]",
            "    scopes: [mcp:read]\n    scopez: []",
        );
        let e = Config::from_yaml("t.yaml", &text).unwrap_err();
        assert_eq!(e.line, Some(15));
        assert!(e.reason.contains("unknown field `scopez`"), "{}", e.reason);
        assert!(e.to_string().starts_with("t.yaml:15:"));
    }

    #[test]
    fn unknown_issuer_is_an_error() {
        let text = BASE.replace("    scopes: [mcp:read]", "    issuers: [nope]");
        let e = Config::from_yaml("t.yaml", &text).unwrap_err();
        assert!(e.reason.contains("\"nope\""), "{}", e.reason);
    }

    #[test]
    fn hs256_is_refused() {
        let text = BASE.replace(
            "    issuer: https://auth.example.com",
            "    issuer: https://auth.example.com\n    algorithms: [HS256]",
        );
        assert!(Config::from_yaml("t.yaml", &text).is_err());
    }

    #[test]
    fn http_jwks_only_on_loopback() {
        let bad = BASE.replace(
            "    issuer: https://auth.example.com",
            "    issuer: https://auth.example.com\n    jwks_uri: http://auth.example.com/jwks",
        );
        assert!(Config::from_yaml("t.yaml", &bad).is_err());
        let ok = BASE.replace(
            "    issuer: https://auth.example.com",
            "    issuer: https://auth.example.com\n    jwks_uri: http://127.0.0.1:4000/jwks",
        );
        assert!(Config::from_yaml("t.yaml", &ok).is_ok());
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("MCPGATE_TEST_UPSTREAM", "http://127.0.0.1:3009");
        let text = BASE.replace("http://127.0.0.1:3001", "${MCPGATE_TEST_UPSTREAM}");
        let c = Config::from_yaml("t.yaml", &text).unwrap();
        assert_eq!(c.routes[0].upstream.port, 3009);
        let text = BASE.replace("http://127.0.0.1:3001", "${MCPGATE_TEST_UNSET_VAR}");
        let e = Config::from_yaml("t.yaml", &text).unwrap_err();
        assert_eq!(e.line, Some(13));
        assert!(e.reason.contains("MCPGATE_TEST_UNSET_VAR"));
        assert_eq!(expand_env("x", "a $${b} $c").unwrap(), "a ${b} $c");
    }

    #[test]
    fn scope_hierarchy_expands_ancestors() {
        let text = format!("{BASE}scope_hierarchy:\n  files: [files:read]\n  all: [files]\n")
            .replace("[mcp:read]", "[files:read]");
        let c = Config::from_yaml("t.yaml", &text).unwrap();
        let mut by = c.routes[0].scopes[0].satisfied_by.clone();
        by.sort();
        assert_eq!(by, vec!["all", "files", "files:read"]);
    }

    #[test]
    fn state_defaults_and_redaction() {
        let c = Config::from_yaml("t.yaml", BASE).unwrap();
        assert_eq!(c.state.redis, None);
        assert_eq!(c.state.dpop_replay_fail, FailMode::Closed);
        assert_eq!(c.state.revocations_fail, FailMode::Open);
        let text =
            format!("{BASE}state:\n  redis:\n    url: rediss://gw:s3cret@redis.internal:6380/2\n");
        let c = Config::from_yaml("t.yaml", &text).unwrap();
        let r = c.state.redis.as_ref().unwrap();
        assert_eq!(r.timeout, Duration::from_millis(50));
        assert_eq!(r.key_prefix, "mcpgate:");
        assert!(r.tls() && !r.readyz);
        assert!(!r.redacted.contains("s3cret"), "{}", r.redacted);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.summary().contains("s3cret"));
        assert_eq!(r.background_timeout(), Duration::from_secs(1));
    }

    #[test]
    fn bad_state_is_refused() {
        for (state, why) in [
            ("  redis: {url: 'http://redis:6379'}", "scheme"),
            ("  redis: {url: 'redis://r', timeout_ms: 0}", "timeout_ms"),
            (
                "  redis: {url: 'redis://r', breaker_failures: 0}",
                "breaker_failures",
            ),
            ("  redis: {url: 'redis://r', ca_file: ca.pem}", "rediss"),
            (
                "  redis: {url: 'redis://r', key_prefix: 'a b'}",
                "key_prefix",
            ),
            ("  redis: {url: 'redis://r', bogus: 1}", "unknown field"),
            ("  dpop_replay: {fail: open}", "need state.redis"),
            ("  revocations: {fail: sideways}", "unknown variant"),
        ] {
            let text = format!("{BASE}state:\n{state}\n");
            let e = Config::from_yaml("t.yaml", &text).unwrap_err();
            assert!(e.reason.contains(why), "{state}: {}", e.reason);
        }
    }

    #[test]
    fn redis_hmac_key_file_is_read_checked_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("revocations.key");
        let text = format!(
            "{BASE}state:\n  redis: {{url: 'redis://r', hmac_key_file: {}}}\n",
            f.display()
        );
        let e = Config::from_yaml("t.yaml", &text).unwrap_err();
        assert!(e.reason.contains("hmac_key_file"), "{}", e.reason);
        std::fs::write(&f, "too-short-key\n").unwrap();
        let e = Config::from_yaml("t.yaml", &text).unwrap_err();
        assert!(e.reason.contains("at least 32 bytes"), "{}", e.reason);
        let key = "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y";
        std::fs::write(&f, format!("{key}\n")).unwrap();
        let c = Config::from_yaml("t.yaml", &text).unwrap();
        let r = c.state.redis.as_ref().unwrap();
        assert_eq!(
            r.hmac_key.as_deref(),
            Some(key.as_bytes()),
            "one newline stripped"
        );
        assert!(!format!("{c:?}").contains(key));
        assert!(!c.summary().contains(key));
        assert!(c.summary().contains("authenticated (HMAC)"));
        // Relative to the config file.
        let rel = Config::from_yaml(
            &dir.path().join("mcpgate.yaml").display().to_string(),
            &format!(
                "{BASE}state:\n  redis: {{url: 'redis://r', hmac_key_file: revocations.key}}\n"
            ),
        )
        .unwrap();
        assert!(rel.state.redis.unwrap().hmac_key.is_some());
    }

    #[test]
    fn admin_token_file_is_hashed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "short\n").unwrap();
        let text = BASE.replace(
            "  address: 127.0.0.1:9090",
            &format!("  address: 127.0.0.1:9090\n  token_file: {}", f.display()),
        );
        let e = Config::from_yaml("t.yaml", &text).unwrap_err();
        assert!(e.reason.contains("at least 16"), "{}", e.reason);
        std::fs::write(&f, "0123456789abcdef-admin\n").unwrap();
        let c = Config::from_yaml("t.yaml", &text).unwrap();
        let t = c.listeners.admin_token.as_ref().unwrap();
        assert!(t.matches("0123456789abcdef-admin"));
        assert!(!t.matches("0123456789abcdef-admin\n"));
        assert!(!t.matches("0123456789abcdef-admiN"));
    }

    #[test]
    fn duplicate_prefix_rejected() {
        let text = format!(
            "{BASE}  - name: other\n    path_prefix: /mcp\n    upstream: http://127.0.0.1:3002\n"
        );
        assert!(Config::from_yaml("t.yaml", &text).is_err());
    }
}
