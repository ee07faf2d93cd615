//! A route: its strict file type (`routes[]`) and its compile step, which hands each part
//! to the module that owns it and assembles the [`Route`] the request path reads.
//!
//! A [`Route`] is a handful of cohesive parts, so that each step of the request flow
//! borrows only the part it needs: how it matches requests (`routing`), where it forwards
//! (`upstream`), the protected resource it is (`metadata`), how it authenticates (`auth`),
//! its DPoP settings, its MCP policy (`mcp::policy`), what the upstream receives
//! (`identity`), how its refusals challenge (`respond`), its browser origins
//! (`routing::cors`) and its metric handles.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::apikeys::{Deprecation, KeyStore};
use crate::auth::dpop::{DpopMode, DpopSettings, RouteDpop};
use crate::auth::issuer::IssuerConfig;
use crate::auth::{AuthMode, Known, RouteAuth};
use crate::compile::CompileError;
use crate::identity::{FileForwarding, FileIdentityHeaders, Forwarding};
use crate::listeners::PublicUrl;
use crate::mcp::policy::{DefaultPolicy, FilePolicy, Policy};
use crate::mcp::sessions::UnknownSessions;
use crate::metadata::{self, Resource};
use crate::metrics::RouteMetrics;
use crate::respond::Challenge;
use crate::routing::cors::Origins;
use crate::routing::RouteMatch;
use crate::scope::{check_scope_token, Hierarchy};
use crate::upstream::{FileUpstreamTls, RouteUpstream};
use crate::upstream_auth::{self, FileUpstreamAuth, UpstreamAuth};

/// Longest `stream_expiry_grace_seconds` honoured: a day.
const MAX_STREAM_GRACE_SECONDS: u64 = 86_400;

/// One entry of `routes`.
#[derive(Debug, Deserialize, JsonSchema)]
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
    #[schemars(with = "Option<std::collections::BTreeMap<String, Vec<String>>>")]
    pub tools: Option<serde_yaml::Mapping>,
    /// Glob on the URI → extra scopes for `resources/read`.
    #[schemars(with = "Option<std::collections::BTreeMap<String, Vec<String>>>")]
    pub resources: Option<serde_yaml::Mapping>,
    /// Glob on the prompt name → extra scopes for `prompts/get`.
    #[schemars(with = "Option<std::collections::BTreeMap<String, Vec<String>>>")]
    pub prompts: Option<serde_yaml::Mapping>,
    #[serde(default)]
    pub default_tool_policy: DefaultPolicy,
    #[serde(default)]
    pub filter_tools_list: bool,
    /// Filter `resources/list` and `resources/templates/list` answers by the `resources` rules.
    #[serde(default)]
    pub filter_resources_list: bool,
    /// Filter `prompts/list` answers by the `prompts` rules.
    #[serde(default)]
    pub filter_prompts_list: bool,
    /// MCP protocol versions the upstream speaks; others are refused (-32022).
    pub protocol_versions: Option<Vec<String>>,
    /// Tool-definition pinning.
    pub pin_tools: Option<crate::mcp::pins::FilePins>,
    /// A refused `tools/call` carries the SEP-2643 (draft) authorization envelope.
    #[serde(default)]
    pub structured_denials: bool,
    /// Browser origins allowed to call the route (default: the public origin only).
    pub allowed_origins: Option<Vec<String>>,
    /// Seconds a response stream may outlive its token's `exp` before the gateway closes it.
    #[serde(default)]
    pub stream_expiry_grace_seconds: u64,
    #[serde(default)]
    pub dpop: DpopMode,
    /// Require a server-issued nonce in DPoP proofs (`use_dpop_nonce`).
    #[serde(default)]
    pub dpop_nonce: bool,
    /// TLS to an `https://` upstream: a private CA, a client certificate.
    pub upstream_tls: Option<FileUpstreamTls>,
    /// Rate limits and the concurrency cap of this route (overriding or adding to `limits`).
    pub limits: Option<crate::quota::FileRouteLimits>,
    /// The credential the upstream receives (`forward_token: true` is `mode: forward`).
    pub upstream_auth: Option<FileUpstreamAuth>,
    /// What to do with an `Mcp-Session-Id` this process has no binding for.
    #[serde(default)]
    pub unknown_sessions: UnknownSessions,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub matching: RouteMatch,
    pub upstream: RouteUpstream,
    pub resource: Resource,
    pub auth: RouteAuth,
    pub dpop: RouteDpop,
    pub mcp: Policy,
    pub forwarding: Forwarding,
    /// The credential the upstream receives.
    pub upstream_auth: UpstreamAuth,
    pub challenge: Challenge,
    pub cors: Origins,
    /// The MCP server behind the route: the upstream origin and the path forwarded to (what
    /// the gateway learns from lists is kept per server).
    pub server: Arc<str>,
    /// Seconds a response stream may outlive its token (`stream_expiry_grace_seconds`).
    pub stream_expiry_grace: i64,
    /// The rate limits and concurrency cap that apply here.
    pub quotas: crate::quota::RouteQuotas,
    pub metrics: RouteMetrics,
    /// `unknown_sessions`: forward or refuse session ids no binding is known for.
    pub unknown_sessions: UnknownSessions,
}

impl Route {
    /// Whether every request body is read and judged before forwarding: an MCP policy, or a
    /// limit that counts MCP operations.
    pub fn inspects(&self) -> bool {
        self.mcp.inspects() || self.quotas.needs_operation()
    }

    /// The files this route's settings came from (watched for reloads).
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.upstream
            .tls_files
            .iter()
            .chain(self.upstream_auth.files())
            .chain(self.mcp.pins.as_ref().and_then(|p| p.path()))
    }
}

/// What every route of a config is compiled against.
pub struct Context<'a> {
    pub public: &'a PublicUrl,
    pub issuers: &'a [Arc<IssuerConfig>],
    pub issuer_index: &'a HashMap<String, usize>,
    pub hierarchy: &'a Hierarchy,
    pub dpop: &'a DpopSettings,
    pub api_keys: Option<&'a KeyStore>,
    /// The top-level limits a route's `limits` override or add to.
    pub quotas: &'a crate::quota::Quotas,
    /// The config file's name, to resolve relative paths.
    pub source: &'a str,
}

impl Context<'_> {
    pub fn known(&self) -> Known<'_> {
        Known {
            issuers: self.issuers,
            issuer_index: self.issuer_index,
            hierarchy: self.hierarchy,
            api_keys: self.api_keys,
        }
    }
}

/// Compile one route whose matching part is `matching` (compiled and registered first).
/// Errors carry the YAML path within the route.
pub fn compile(
    fr: FileRoute,
    matching: RouteMatch,
    cx: &Context<'_>,
) -> Result<Route, CompileError> {
    let upstream = RouteUpstream::compile(&fr.upstream, fr.upstream_tls, cx.source)?;
    let server = Arc::from(format!(
        "{}{}",
        upstream.addr.origin(),
        fr.rewrite_prefix.as_deref().unwrap_or(&fr.path_prefix)
    ));
    let resource = Resource::compile(
        cx.public,
        fr.host.as_deref(),
        &fr.path_prefix,
        fr.resource.clone(),
        &fr.audience_aliases,
    )?;
    let mut auth = RouteAuth::compile(fr.auth, fr.issuers.as_deref(), &fr.scopes, &cx.known())?;
    for (j, s) in fr.scopes_supported.iter().enumerate() {
        check_scope_token(s).map_err(|e| CompileError::new(format!("scopes_supported[{j}]"), e))?;
    }
    let dpop = RouteDpop::compile(fr.dpop, fr.dpop_nonce)?;
    let mcp = Policy::compile(
        FilePolicy {
            tools: fr.tools.as_ref(),
            resources: fr.resources.as_ref(),
            prompts: fr.prompts.as_ref(),
            default: fr.default_tool_policy,
            filter_tools_list: fr.filter_tools_list,
            filter_resources_list: fr.filter_resources_list,
            filter_prompts_list: fr.filter_prompts_list,
            protocol_versions: fr.protocol_versions.as_deref(),
            pin_tools: fr.pin_tools,
            structured_denials: fr.structured_denials,
            source: cx.source,
        },
        cx.hierarchy,
        fr.auth == AuthMode::Oauth,
    )?;
    let supported = supported_scopes(&fr.scopes, &mcp, &fr.scopes_supported);
    let doc = document(&resource, &auth, dpop, &supported, cx);
    let resource = resource.with_document(doc);
    let cors = Origins::compile(fr.allowed_origins.as_deref(), cx.public)?;
    if fr.forward_token && fr.upstream_auth.is_some() {
        return Err(CompileError::new(
            "forward_token",
            "forward_token and upstream_auth both say what the upstream receives: write \
             upstream_auth: {mode: forward} alone",
        ));
    }
    let upstream_auth = if fr.forward_token {
        UpstreamAuth::Forward
    } else {
        UpstreamAuth::compile(
            fr.upstream_auth,
            &upstream_auth::Context {
                route: &fr.name,
                auth: fr.auth,
                route_issuers: &auth.issuers,
                issuers: cx.issuers,
                issuer_index: cx.issuer_index,
                hierarchy: cx.hierarchy,
                source: cx.source,
            },
        )
        .map_err(|e| e.within("upstream_auth"))?
    };
    let forwarding = Forwarding::compile(FileForwarding {
        identity_headers: fr.identity_headers,
        forward_token: upstream_auth.mode() == upstream_auth::Mode::Forward,
        credential_header: upstream_auth.header(),
        preserve_host: fr.preserve_host,
        path_prefix: &fr.path_prefix,
        rewrite_prefix: fr.rewrite_prefix.as_deref(),
        api_key_header: cx.api_keys.map(|k| &k.header),
        upstream_authority: &upstream.addr.authority,
    })?;
    auth.deprecation = Deprecation::compile(
        &fr.name,
        fr.auth,
        fr.api_key_deprecated_at.as_deref(),
        fr.api_key_sunset.as_deref(),
        &resource.metadata_url,
    )
    .map_err(|e| CompileError::new("api_key_deprecated_at", e))?;
    let challenge = challenge(&auth, dpop, &resource, cx.dpop);
    let quotas = crate::quota::compile_route(&fr.name, fr.limits.as_ref(), cx.quotas)?;
    Ok(Route {
        metrics: RouteMetrics::new(&fr.name, crate::mcp::lists::Unreadable::REASONS),
        name: Arc::from(fr.name.as_str()),
        matching,
        upstream,
        resource,
        auth,
        dpop,
        mcp,
        forwarding,
        upstream_auth,
        challenge,
        cors,
        server,
        stream_expiry_grace: fr.stream_expiry_grace_seconds.min(MAX_STREAM_GRACE_SECONDS) as i64,
        quotas,
        unknown_sessions: fr.unknown_sessions,
    })
}

/// Every scope a route names (required, in its policy, or `scopes_supported`; never
/// `offline_access`), once each, in that order: its `scopes_supported` metadata.
fn supported_scopes(required: &[String], mcp: &Policy, extra: &[String]) -> Vec<String> {
    let mut supported: Vec<String> = Vec::new();
    for s in required
        .iter()
        .map(String::as_str)
        .chain(mcp.scope_names())
        .chain(extra.iter().map(String::as_str))
    {
        if s != "offline_access" && !supported.iter().any(|x| x == s) {
            supported.push(s.to_string());
        }
    }
    supported
}

/// The route's RFC 9728 document: its issuers, its scopes, its DPoP algorithms.
fn document(
    resource: &Resource,
    auth: &RouteAuth,
    dpop: RouteDpop,
    supported: &[String],
    cx: &Context<'_>,
) -> bytes::Bytes {
    let auth_servers: Vec<&str> = auth
        .issuers
        .iter()
        .map(|&i| &*cx.issuers[i].issuer)
        .collect();
    let algs: Vec<&str> = dpop.offered(cx.dpop).iter().map(|a| a.name()).collect();
    metadata::render(
        &resource.resource,
        &auth_servers,
        supported,
        &algs,
        dpop.mode == DpopMode::Required,
    )
}

/// How the route's refusals challenge.
fn challenge(
    auth: &RouteAuth,
    dpop: RouteDpop,
    resource: &Resource,
    settings: &DpopSettings,
) -> Challenge {
    if auth.mode == AuthMode::ApiKey {
        return Challenge::ApiKey {
            header: auth
                .api_key_header
                .as_ref()
                .map_or("x-api-key", |h| h.as_str())
                .to_string(),
        };
    }
    Challenge::OAuth {
        bearer: dpop.mode != DpopMode::Required,
        dpop_algs: (dpop.mode != DpopMode::Disabled).then(|| settings.algs_param.clone()),
        metadata_url: resource.metadata_url.clone(),
        scope: auth.scope_challenge.clone(),
    }
}
