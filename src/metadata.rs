//! RFC 9728 Protected Resource Metadata, served on the upstreams' behalf, and the resource
//! part of a route (`resource`, `audience_aliases`).
//!
//! The gateway answers `/.well-known/oauth-protected-resource<path of resource>` itself
//! (path insertion, §3.1) so that MCP clients find the authorization server from the
//! 401's `resource_metadata` without the upstream knowing OAuth. Documents are rendered
//! once when the config is compiled; `resource` is the configured identifier, never
//! anything derived from the request's Host.

use bytes::Bytes;

use crate::compile::CompileError;
use crate::listeners::PublicUrl;
use crate::scope::canonical_audience;

pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// A route as an OAuth protected resource: its identifier, the audiences its tokens may
/// carry, where its metadata is, and the document itself.
#[derive(Debug)]
pub struct Resource {
    /// The resource identifier (`resource`, default: the public URL and the prefix).
    pub resource: String,
    /// Canonical forms (scheme and host lower-cased) of every accepted audience.
    pub audiences: Vec<String>,
    pub metadata_url: String,
    /// The path the metadata document is served at (with the resource's query, if any).
    pub metadata_path: String,
    /// `scheme://host[:port]` clients use for this route: the base of DPoP `htu`.
    pub public_origin: String,
    /// The rendered metadata document (set by [`Resource::with_document`]).
    pub document: Bytes,
}

/// The origin clients reach a route at: the public URL, or the route's `host` with the
/// public scheme and port.
fn route_origin(public: &PublicUrl, host: Option<&str>) -> String {
    match host {
        Some(h) => match public.authority.rsplit_once(':') {
            Some((_, port)) if !public.authority.ends_with(']') => {
                format!("{}://{}:{}", public.scheme, h, port)
            }
            _ => format!("{}://{}", public.scheme, h),
        },
        None => public.url.clone(),
    }
}

impl Resource {
    /// Check and compile a route's `resource` and `audience_aliases` (`host` and
    /// `path_prefix` give the default resource).
    pub fn compile(
        public: &PublicUrl,
        host: Option<&str>,
        path_prefix: &str,
        resource: Option<String>,
        aliases: &[String],
    ) -> Result<Resource, CompileError> {
        let bad = |reason: String| CompileError::new("resource", reason);
        let resource = match resource {
            Some(r) => r,
            // A virtual host keeps the public scheme and port (and the host as written).
            None if path_prefix == "/" => format!("{}/", route_origin(public, host)),
            None => format!("{}{path_prefix}", route_origin(public, host)),
        };
        let ru =
            url::Url::parse(&resource).map_err(|e| bad(format!("resource {resource:?}: {e}")))?;
        if ru.fragment().is_some() {
            return Err(bad(format!(
                "resource {resource:?} must not contain a fragment (RFC 8707)"
            )));
        }
        if ru.scheme() != "https" && !(ru.scheme() == "http" && public.scheme == "http") {
            return Err(bad(format!(
                "resource {resource:?} must be an https URL (http only when public_url is http)"
            )));
        }
        let (metadata_url, metadata_path) = metadata_location(&ru);
        let mut audiences = vec![canonical_audience(&resource)];
        audiences.extend(aliases.iter().map(|a| canonical_audience(a)));
        Ok(Resource {
            resource,
            audiences,
            metadata_url,
            metadata_path,
            public_origin: route_origin(public, host.map(str::to_ascii_lowercase).as_deref()),
            document: Bytes::new(),
        })
    }

    /// The resource with its rendered metadata document.
    pub fn with_document(mut self, document: Bytes) -> Resource {
        self.document = document;
        self
    }
}

/// The metadata URL and the path it is served at, for a resource URL (§3.1): the
/// well-known segment goes between the host and the resource's path; a path of `/`
/// contributes nothing; a query stays after the path.
pub fn metadata_location(resource: &url::Url) -> (String, String) {
    let origin = resource.origin().ascii_serialization();
    let path = match resource.path() {
        "/" => "",
        p => p,
    };
    let mut served = format!("{WELL_KNOWN}{path}");
    if let Some(q) = resource.query() {
        served.push('?');
        served.push_str(q);
    }
    (format!("{origin}{served}"), served)
}

/// Render the metadata document.
/// Render the metadata document. `dpop_algs` is empty when the route refuses DPoP;
/// `dpop_required` sets `dpop_bound_access_tokens_required` (RFC 9449 §5.2).
pub fn render(
    resource: &str,
    authorization_servers: &[&str],
    scopes: &[String],
    dpop_algs: &[&str],
    dpop_required: bool,
) -> Bytes {
    let mut doc = serde_json::Map::new();
    doc.insert("resource".into(), resource.into());
    doc.insert(
        "authorization_servers".into(),
        authorization_servers
            .iter()
            .map(|s| serde_json::Value::from(*s))
            .collect(),
    );
    if !scopes.is_empty() {
        doc.insert(
            "scopes_supported".into(),
            scopes
                .iter()
                .map(|s| serde_json::Value::from(s.as_str()))
                .collect(),
        );
    }
    doc.insert(
        "bearer_methods_supported".into(),
        serde_json::json!(["header"]),
    );
    if !dpop_algs.is_empty() {
        doc.insert(
            "dpop_signing_alg_values_supported".into(),
            serde_json::json!(dpop_algs),
        );
    }
    if dpop_required {
        doc.insert(
            "dpop_bound_access_tokens_required".into(),
            serde_json::Value::Bool(true),
        );
    }
    Bytes::from(serde_json::to_vec(&serde_json::Value::Object(doc)).unwrap_or_default())
}

/// Whether a normalized path is under `/.well-known/`.
pub fn is_well_known(path: &str) -> bool {
    path == "/.well-known" || path.starts_with("/.well-known/")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn loc(s: &str) -> (String, String) {
        metadata_location(&url::Url::parse(s).unwrap())
    }

    #[test]
    fn path_insertion() {
        assert_eq!(
            loc("https://h/a/b").0,
            "https://h/.well-known/oauth-protected-resource/a/b"
        );
        assert_eq!(
            loc("https://h/").0,
            "https://h/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            loc("https://h").0,
            "https://h/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            loc("https://h:8443/mcp?x=1").0,
            "https://h:8443/.well-known/oauth-protected-resource/mcp?x=1"
        );
        assert_eq!(
            loc("https://h/mcp/").1,
            "/.well-known/oauth-protected-resource/mcp/"
        );
    }

    #[test]
    fn document_shape() {
        let b = render(
            "https://h/mcp",
            &["https://as"],
            &["a".into()],
            &["ES256"],
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["resource"], "https://h/mcp");
        assert_eq!(v["authorization_servers"][0], "https://as");
        assert_eq!(v["bearer_methods_supported"][0], "header");
        assert_eq!(v["dpop_signing_alg_values_supported"][0], "ES256");
        assert_eq!(v["dpop_bound_access_tokens_required"], true);
        let b = render("https://h/mcp", &["https://as"], &[], &[], false);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v.get("scopes_supported").is_none());
    }
}
