//! Authorization server metadata discovery (RFC 8414 §3, then OIDC discovery): where an
//! issuer's `jwks_uri` or `introspection_endpoint` is when the config does not say.
//! `mcpgate check --online` runs the same steps one by one.

use crate::background::get_json;

/// The metadata URLs of `issuer`, in the order they are tried: RFC 8414 §3 (path
/// insertion), then OIDC discovery.
pub fn metadata_urls(issuer: &str) -> Result<[String; 2], String> {
    let u = url::Url::parse(issuer).map_err(|e| format!("issuer {issuer}: {e}"))?;
    let origin = u.origin().ascii_serialization();
    let path = u.path().trim_end_matches('/');
    Ok([
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
    ])
}

/// GET one metadata document: a JSON object whose `issuer` equals the configured issuer
/// (RFC 8414 §3.3).
pub async fn fetch_metadata(
    client: &reqwest::Client,
    url: &str,
    issuer: &str,
) -> Result<serde_json::Value, String> {
    let (body, _) = get_json(client, url).await?;
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
    if !doc.is_object() {
        return Err(format!("{url}: not a JSON object"));
    }
    match doc.get("issuer") {
        Some(serde_json::Value::String(s)) if s == issuer => Ok(doc),
        Some(serde_json::Value::String(s)) => Err(format!(
            "{url}: issuer mismatch: the metadata says {s:?}, the config says {issuer:?} \
             (compared byte for byte; a trailing slash matters)"
        )),
        _ => Err(format!("{url}: no issuer in the metadata")),
    }
}

/// An endpoint URL (`jwks_uri`, `introspection_endpoint`...) of a metadata document: https
/// (http only on loopback).
pub fn endpoint_of(doc: &serde_json::Value, url: &str, field: &str) -> Result<String, String> {
    let j = doc
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{url}: no {field}"))?;
    let ju = url::Url::parse(j).map_err(|e| format!("{field} {j}: {e}"))?;
    if ju.scheme() != "https" && !crate::compile::is_loopback_url(&ju) {
        return Err(format!("{field} {j} is not https"));
    }
    Ok(j.to_string())
}

/// An endpoint URL (`jwks_uri`, `introspection_endpoint`...) from the issuer's metadata:
/// the first document of [`metadata_urls`] that [`fetch_metadata`] accepts and that has
/// the field.
pub async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    field: &str,
) -> Result<String, String> {
    let mut errors = Vec::new();
    for c in metadata_urls(issuer)? {
        match fetch_metadata(client, &c, issuer).await {
            Ok(doc) => match doc.get(field).and_then(|v| v.as_str()) {
                Some(_) => return endpoint_of(&doc, &c, field),
                None => errors.push(format!("{c}: no {field}")),
            },
            Err(e) => errors.push(e),
        }
    }
    Err(format!("{field} discovery failed: {}", errors.join("; ")))
}
