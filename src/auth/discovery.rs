//! Authorization server metadata discovery (RFC 8414 §3, then OIDC discovery): where an
//! issuer's `jwks_uri` or `introspection_endpoint` is when the config does not say.

use crate::background::get_json;

/// An endpoint URL (`jwks_uri`, `introspection_endpoint`...) from the issuer's metadata:
/// RFC 8414 §3 (path insertion), then OIDC discovery. The document's `issuer` must equal
/// the configured issuer (RFC 8414 §3.3), and the URL must be https (http only on
/// loopback).
pub async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    field: &str,
) -> Result<String, String> {
    let u = url::Url::parse(issuer).map_err(|e| format!("issuer {issuer}: {e}"))?;
    let origin = u.origin().ascii_serialization();
    let path = u.path().trim_end_matches('/');
    let candidates = [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
    ];
    let mut errors = Vec::new();
    for c in candidates {
        match get_json(client, &c).await {
            Ok((body, _)) => {
                let doc: serde_json::Value = match serde_json::from_slice(&body) {
                    Ok(d) => d,
                    Err(e) => {
                        errors.push(format!("{c}: not JSON: {e}"));
                        continue;
                    }
                };
                if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
                    errors.push(format!("{c}: issuer in metadata does not match {issuer}"));
                    continue;
                }
                match doc.get(field).and_then(|v| v.as_str()) {
                    Some(j) => {
                        let ju = url::Url::parse(j).map_err(|e| format!("{field} {j}: {e}"))?;
                        if ju.scheme() != "https" && !crate::compile::is_loopback_url(&ju) {
                            return Err(format!("{field} {j} is not https"));
                        }
                        return Ok(j.to_string());
                    }
                    None => errors.push(format!("{c}: no {field}")),
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Err(format!("{field} discovery failed: {}", errors.join("; ")))
}
