//! Configuration: read the file, expand `${ENV}`, hand each section to the module that
//! owns it, and aggregate the compiled sections into the immutable [`Config`] the request
//! path reads.
//!
//! Two layers (STYLE rule 2): each domain module owns the strict serde type of its section
//! (`deny_unknown_fields`) and the compile step into what it uses at run time; this module
//! only reads, delegates and aggregates, and turns every error into
//! `FILE:LINE:COLUMN: reason` ([`ConfigError`]: serde's location for syntax errors; the
//! YAML path of the setting for a refused value, in `at`, for a later line lookup). The hot
//! path never touches raw YAML. No domain module imports this one.

mod locate;
mod route;
pub mod schema;
mod summary;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::apikeys::{FileApiKeys, KeyStore};
use crate::auth::cache::FileTokenCache;
use crate::auth::dpop::{DpopSettings, FileDpop};
use crate::auth::issuer::{FileIssuer, IssuerConfig};
use crate::compile::{yaml_error, CompileError};
use crate::connections::{FileLimits, Limits, RequestLimits};
use crate::listeners::{FileAdmin, FileListen, FileShutdown, Listeners};
use crate::routing::{RouteMatch, Table};
use crate::scope::Hierarchy;
use crate::store::{FileState, StateSettings};
pub use route::{FileRoute, Route};
pub use summary::{case_warnings, log_warnings, warnings};

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
                at: e.at,
                ..ConfigError::new(file, e.reason)
            },
        }
    }
}

impl ConfigError {
    /// The error with the line and column of its YAML path (`at`) in the file's text: the
    /// text as written, or as expanded when `${...}` made the written one unparsable.
    fn in_text(mut self, name: &str, text: &str, expanded: &str) -> Self {
        if self.line.is_some() || self.file != name {
            return self;
        }
        let spans = locate::Spans::parse(text).or_else(|| locate::Spans::parse(expanded));
        if let Some((line, column)) = spans.and_then(|s| s.find(&self.at)) {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
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

/// The file: exactly the YAML keys, each section's type owned by its module.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: FileListen,
    pub admin: FileAdmin,
    #[serde(default)]
    pub token_cache: FileTokenCache,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub shutdown: FileShutdown,
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
    pub state: FileState,
    pub routes: Vec<FileRoute>,
}

/// The compiled, immutable configuration. Shared behind an `Arc` (and an `ArcSwap` for
/// reloads); one snapshot is loaded per request and used throughout.
#[derive(Debug)]
pub struct Config {
    pub source: String,
    /// `listen`, `admin`, `shutdown`: addresses, public URL, TLS, admin token.
    pub listeners: Listeners,
    /// `token_cache.max_entries`.
    pub token_cache_entries: u64,
    /// Connection caps and deadlines of the public listener (`limits`).
    pub connections: Limits,
    /// Request head and body sizes (`limits`).
    pub requests: RequestLimits,
    pub issuers: Vec<Arc<IssuerConfig>>,
    /// The legacy API keys (loaded from `api_keys.file` when the config compiles).
    pub api_keys: Option<Arc<KeyStore>>,
    pub dpop: DpopSettings,
    /// Shared state (Redis) and the fail policies. Applies at restart.
    pub state: StateSettings,
    /// The top-level rate limits, concurrency cap and trusted proxies (`limits`); each
    /// route holds what applies to it.
    pub quotas: crate::quota::Quotas,
    pub routes: Vec<Arc<Route>>,
    /// The routes' matching parts and the metadata paths they serve.
    pub table: Table,
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
            let (line, column, reason) = yaml_error(&e);
            ConfigError {
                line,
                column,
                ..ConfigError::new(name, locate::did_you_mean(&reason))
            }
        })?;
        Config::compile(name, file).map_err(|e| e.in_text(name, text, &expanded))
    }

    /// Hand each section to its owner and assemble the compiled config.
    pub fn compile(name: &str, file: FileConfig) -> Result<Config, ConfigError> {
        let loc = |e: CompileError| ConfigError::located(name, e);
        let mut listeners =
            Listeners::compile(name, file.listen, file.admin, file.shutdown).map_err(loc)?;
        let (connections, requests) = crate::connections::compile(&file.limits).map_err(loc)?;
        let token_cache_entries = crate::auth::cache::compile(&file.token_cache).map_err(loc)?;
        let hierarchy = Hierarchy::compile(&file.scope_hierarchy)
            .map_err(|e| loc(CompileError::new("scope_hierarchy", e)))?;
        let dpop = crate::auth::dpop::compile(&file.dpop).map_err(loc)?;
        let state = crate::store::compile(name, file.state).map_err(loc)?;
        let quotas = crate::quota::compile(
            &file.limits.rate,
            file.limits.concurrency.as_ref(),
            &file.limits.trusted_proxies,
            state.redis.is_some(),
        )
        .map_err(loc)?;
        let (issuers, issuer_index) =
            crate::auth::issuer::compile(name, file.issuers).map_err(loc)?;
        let api_keys = file
            .api_keys
            .map(|k| crate::auth::apikeys::compile(name, k))
            .transpose()
            .map_err(loc)?;
        let cx = route::Context {
            public: &listeners.public,
            issuers: &issuers,
            issuer_index: &issuer_index,
            hierarchy: &hierarchy,
            dpop: &dpop,
            api_keys: api_keys.as_deref(),
            quotas: &quotas,
            source: name,
        };
        let (routes, table) = compile_routes(file.routes, &cx).map_err(loc)?;
        listeners.load_tls().map_err(loc)?;
        Ok(Config {
            source: name.to_string(),
            listeners,
            token_cache_entries,
            dpop,
            state,
            quotas,
            connections,
            requests,
            issuers,
            api_keys,
            routes,
            table,
        })
    }

    /// Issuers named by at least one route that accepts OAuth.
    pub fn issuers_in_use(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self
            .routes
            .iter()
            .filter(|r| r.auth.mode.accepts_oauth())
            .flat_map(|r| r.auth.issuers.iter().copied())
            .collect();
        used.sort_unstable();
        used.dedup();
        used
    }

    /// Every file this config was read from or names (watched for reloads).
    pub fn inputs(&self, path: &Path) -> Vec<PathBuf> {
        let mut v = vec![path.to_path_buf()];
        if let Some(t) = &self.listeners.tls {
            v.push(t.cert.clone());
            v.push(t.key.clone());
        }
        if let Some(k) = &self.api_keys {
            v.push(k.file.clone());
        }
        if let Some(t) = &self.listeners.admin_token {
            v.push(t.file.clone());
        }
        v.extend(
            self.issuers
                .iter()
                .filter_map(|i| Some(i.ca.as_ref()?.file.clone())),
        );
        for r in &self.routes {
            v.extend(r.files().cloned());
        }
        v
    }
}

/// Compile every route and the table of their prefixes and metadata paths. Errors name
/// the route (`route "x": …`, at `routes[i]…`).
fn compile_routes(
    routes: Vec<FileRoute>,
    cx: &route::Context<'_>,
) -> Result<(Vec<Arc<Route>>, Table), CompileError> {
    if routes.is_empty() {
        return Err(CompileError::new(
            "routes",
            "routes: at least one route is required",
        ));
    }
    let mut table = Table::default();
    let mut compiled = Vec::with_capacity(routes.len());
    for (i, fr) in routes.into_iter().enumerate() {
        let context = format!("route {:?}: ", fr.name);
        let locate = |e: CompileError| e.within(&format!("routes[{i}]")).prefixed(&context);
        if fr.name.is_empty() {
            return Err(locate(CompileError::new("name", "name must not be empty")));
        }
        let matching = RouteMatch::compile(
            fr.host.as_deref(),
            &fr.path_prefix,
            fr.case_sensitive_prefix,
        )
        .map_err(locate)?;
        let index = table.add(&fr.name, matching.clone()).map_err(locate)?;
        let root_metadata = fr.root_metadata;
        let r = route::compile(fr, matching, cx).map_err(locate)?;
        r.auth.check(&cx.known()).map_err(locate)?;
        // Only protected routes have metadata: an `auth: none` route is not an OAuth
        // protected resource, and its well-known path stays a 404.
        if r.auth.mode.accepts_oauth() {
            table
                .serve_metadata(index, &r.resource.metadata_path, root_metadata)
                .map_err(locate)?;
        } else if root_metadata {
            return Err(locate(CompileError::new(
                "root_metadata",
                "root_metadata needs auth: oauth or both",
            )));
        }
        compiled.push(Arc::new(r));
    }
    Ok((compiled, table))
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

/// The default location of a config file inside the container image and Helm chart.
pub fn default_config_path() -> PathBuf {
    PathBuf::from("/etc/mcpgate/config.yaml")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::auth::jwt::Algorithm;
    use crate::store::FailMode;
    use std::time::Duration;

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
        assert_eq!(r.resource.resource, "https://mcp.example.com/mcp");
        assert_eq!(
            r.resource.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            r.resource.metadata_path,
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(r.auth.issuers, vec![0]);
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
        assert_eq!(c.routes[0].upstream.addr.port, 3009);
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
        let mut by = c.routes[0].auth.scopes[0].satisfied_by.clone();
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

    /// Bad configs → the exact `FILE:LINE:COLUMN: reason` `mcpgate check` prints: every
    /// refused value located, unknown names with "did you mean", the other party named,
    /// URLs with what to write.
    #[test]
    fn bad_configs_have_exact_located_messages() {
        const TWO: &str = r#"listen:
  address: 127.0.0.1:8080
  public_url: https://mcp.example.com
admin:
  address: 127.0.0.1:9090
issuers:
  - name: corp
    issuer: https://auth.example.com
  - name: staging
    issuer: https://staging.example.com
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: http://127.0.0.1:3001
    scopes: [mcp:read]
  - name: files
    path_prefix: /files
    upstream: http://127.0.0.1:3002
    issuers: [corp]
"#;
        let cases: &[(&str, &str, &str)] = &[
            (
                "issuers: [corp]",
                "issuers: [staging, crop]",
                r#"t.yaml:19:24: route "files": names issuer "crop", which is not configured (did you mean "corp"?); the issuers configured are: "corp", "staging""#,
            ),
            (
                "path_prefix: /files",
                "path_prefix: /MCP",
                r#"t.yaml:17:18: route "files": path_prefix "/MCP" is already claimed by route "mcp" (on any host, in any letter case)"#,
            ),
            (
                "upstream: http://127.0.0.1:3002",
                "upstream: 127.0.0.1:3002",
                r#"t.yaml:18:15: route "files": upstream "127.0.0.1:3002" is not a URL: write http://127.0.0.1:3002"#,
            ),
            (
                "upstream: http://127.0.0.1:3002",
                "upstream: localhost:3002",
                r#"t.yaml:18:15: route "files": upstream "localhost:3002" is not a URL: write http://localhost:3002"#,
            ),
            (
                "scopes: [mcp:read]",
                "scopez: [mcp:read]",
                "t.yaml:15:5: routes[0]: unknown field `scopez` (did you mean `scopes`?)",
            ),
            (
                "scopes: [mcp:read]",
                "scopes: [mcp:read, 'a b']",
                r#"t.yaml:15:24: route "mcp": scope "a b" is not a valid scope token (printable ASCII without space, '"' or '\')"#,
            ),
            (
                "public_url: https://mcp.example.com",
                "public_url: http://mcp.example.com",
                r#"t.yaml:3:15: listen.public_url "http://mcp.example.com": must be https (plain http is allowed only for loopback hosts; with TLS terminated in front of the gateway, the public URL is still https): write https://mcp.example.com"#,
            ),
            (
                "issuer: https://staging.example.com",
                "issuer: http://staging.example.com",
                r#"t.yaml:10:13: issuer "staging": issuer "http://staging.example.com": must be https (plain http is allowed only for loopback hosts): write https://staging.example.com"#,
            ),
            (
                "  - name: files",
                "  - name: mcp",
                r#"t.yaml:16:11: route "mcp": route name "mcp" is already the name of routes[0]"#,
            ),
            (
                "  - name: staging",
                "  - name: corp",
                r#"t.yaml:9:11: issuer name "corp" is already the name of issuers[0]"#,
            ),
            (
                "    issuers: [corp]",
                "    auth: oauht",
                "t.yaml:19:11: routes[1].auth: unknown variant `oauht` (did you mean `oauth`?)",
            ),
            (
                "admin:",
                "admn:",
                "t.yaml:4:1: unknown field `admn` (did you mean `admin`?)",
            ),
            (
                "    issuer: https://auth.example.com",
                "    issuer: https://auth.example.com\n    scope_claims: [scope, role]",
                "t.yaml:9:27: issuers[0].scope_claims[1]: unknown variant `role` (did you mean `roles`?)",
            ),
            (
                "    issuer: https://auth.example.com",
                "    issuer: https://auth.example.com\n    scope_claims: []",
                r#"t.yaml:9:19: issuer "corp": scope_claims must name at least one claim (scope, scp, roles)"#,
            ),
            (
                "    issuer: https://auth.example.com",
                "    issuer: https://auth.example.com\n    jwks_uri: auth.example.com/jwks",
                r#"t.yaml:9:15: issuer "corp": jwks_uri "auth.example.com/jwks" is not a URL: write https://auth.example.com/jwks"#,
            ),
            (
                "  address: 127.0.0.1:9090",
                "  address: 127.0.0.1:8080",
                "t.yaml:5:12: admin.address must differ from listen.address: the admin listener is never public",
            ),
            (
                "upstream: http://127.0.0.1:3001",
                "upstream: http://127.0.0.1:3001/mcp",
                r#"t.yaml:14:15: route "mcp": upstream "http://127.0.0.1:3001/mcp": must be an origin with no path (use rewrite_prefix to change paths)"#,
            ),
            (
                "routes:",
                "scope_hierarchy: {a: [b], b: [a]}\nroutes:",
                r#"t.yaml:11:18: scope_hierarchy has a cycle through "a""#,
            ),
            // `${...}` in the file: located in the text as written.
            (
                "upstream: http://127.0.0.1:3002",
                "upstream: ${MCPGATE_TEST_LOCATE_UPSTREAM}",
                r#"t.yaml:18:15: route "files": upstream "example.com" is not a URL: write http://example.com"#,
            ),
        ];
        std::env::set_var("MCPGATE_TEST_LOCATE_UPSTREAM", "example.com");
        for (from, to, want) in cases {
            assert!(TWO.contains(from), "{from}");
            let text = TWO.replacen(from, to, 1);
            let e = Config::from_yaml("t.yaml", &text).unwrap_err();
            assert_eq!(e.to_string(), *want, "{from} -> {to}");
        }
    }

    #[test]
    fn duplicate_prefix_rejected() {
        let text = format!(
            "{BASE}  - name: other\n    path_prefix: /mcp\n    upstream: http://127.0.0.1:3002\n"
        );
        assert!(Config::from_yaml("t.yaml", &text).is_err());
    }
}
