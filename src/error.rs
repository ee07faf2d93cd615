//! Refusals: the single door every refused request leaves through.
//!
//! Each [`Refusal`] maps to one status, one `WWW-Authenticate` challenge (RFC 6750 §3,
//! with the RFC 9728 `resource_metadata` parameter) and one JSON body
//! `{"error": ..., "error_description": ...}`. Descriptions are short static strings
//! written to fit the challenge grammar (no `"` or `\`); details go to the log.

use bytes::Bytes;
use pingora_http::ResponseHeader;

use crate::config::Route;
use crate::credentials::CredentialError;
use crate::path::PathError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request path cannot be normalized safely.
    BadPath(PathError),
    /// Some other malformed request (host confusion, upgrade...).
    BadRequest(&'static str),
    /// No route matches.
    NotFound,
    /// Malformed credentials (RFC 6750 `invalid_request`).
    Credentials(CredentialError),
    /// No usable credentials: the discovery challenge, no error code.
    NoCredentials,
    /// The token is expired, malformed, for another audience, badly signed...
    InvalidToken(&'static str),
    /// The token lacks a scope the route requires.
    InsufficientScope,
    /// We cannot decide now (no usable keys): 503 with Retry-After.
    Unavailable(&'static str),
    /// Request headers over `limits.max_header_bytes`.
    HeadersTooLarge,
    /// Request body over `limits.max_body_bytes`.
    BodyTooLarge,
}

/// A response header for `status` (pingora's builder is fallible only for invalid codes).
pub fn response_header(status: u16) -> ResponseHeader {
    let (parts, ()) = http::Response::builder()
        .status(status)
        .body(())
        .unwrap_or_default()
        .into_parts();
    parts.into()
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadPath(_) | Refusal::BadRequest(_) | Refusal::Credentials(_) => 400,
            Refusal::NotFound => 404,
            Refusal::NoCredentials | Refusal::InvalidToken(_) => 401,
            Refusal::InsufficientScope => 403,
            Refusal::Unavailable(_) => 503,
            Refusal::HeadersTooLarge => 431,
            Refusal::BodyTooLarge => 413,
        }
    }

    /// OAuth error code for the body (and the challenge where one is sent).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadPath(_) | Refusal::BadRequest(_) | Refusal::Credentials(_) => {
                "invalid_request"
            }
            Refusal::NotFound => "not_found",
            Refusal::NoCredentials => "unauthorized",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::InsufficientScope => "insufficient_scope",
            Refusal::Unavailable(_) => "temporarily_unavailable",
            Refusal::HeadersTooLarge | Refusal::BodyTooLarge => "invalid_request",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            Refusal::BadPath(p) => p.describe(),
            Refusal::BadRequest(d) | Refusal::InvalidToken(d) | Refusal::Unavailable(d) => d,
            Refusal::NotFound => "no route for this path",
            Refusal::Credentials(c) => c.describe(),
            Refusal::NoCredentials => "an access token is required",
            Refusal::InsufficientScope => "the access token lacks a required scope",
            Refusal::HeadersTooLarge => "request headers are too large",
            Refusal::BodyTooLarge => "request body is too large",
        }
    }

    /// Every value `reason()` can take.
    pub const REASONS: [&'static str; 10] = [
        "bad_path",
        "bad_request",
        "no_route",
        "malformed_credentials",
        "no_credentials",
        "invalid_token",
        "insufficient_scope",
        "keys_unavailable",
        "headers_too_large",
        "body_too_large",
    ];

    /// A bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadPath(_) => "bad_path",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::NotFound => "no_route",
            Refusal::Credentials(_) => "malformed_credentials",
            Refusal::NoCredentials => "no_credentials",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::InsufficientScope => "insufficient_scope",
            Refusal::Unavailable(_) => "keys_unavailable",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::BodyTooLarge => "body_too_large",
        }
    }

    /// The `WWW-Authenticate` value, when this refusal carries a challenge.
    pub fn challenge(&self, route: Option<&Route>) -> Option<String> {
        let route = route?;
        let mut c = String::from("Bearer ");
        let mut params: Vec<String> = Vec::with_capacity(4);
        match self {
            Refusal::NoCredentials => {}
            Refusal::Credentials(_) | Refusal::InvalidToken(_) => {
                params.push(format!("error=\"{}\"", self.code()));
                params.push(format!("error_description=\"{}\"", self.description()));
            }
            Refusal::InsufficientScope => {
                params.push("error=\"insufficient_scope\"".to_string());
                params.push(format!("error_description=\"{}\"", self.description()));
            }
            _ => return None,
        }
        params.push(format!("resource_metadata=\"{}\"", route.metadata_url));
        let scope_param = matches!(self, Refusal::NoCredentials | Refusal::InsufficientScope);
        if scope_param && !route.scope_challenge.is_empty() {
            params.push(format!("scope=\"{}\"", route.scope_challenge));
        }
        c.push_str(&params.join(", "));
        Some(c)
    }

    /// Render status, headers and body.
    pub fn render(&self, route: Option<&Route>) -> (ResponseHeader, Bytes) {
        let body = serde_json::json!({
            "error": self.code(),
            "error_description": self.description(),
        });
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut resp = response_header(self.status());
        let _ = resp.insert_header("content-type", "application/json");
        let _ = resp.insert_header("content-length", body.len().to_string());
        let _ = resp.insert_header("cache-control", "no-store");
        if let Some(ch) = self.challenge(route) {
            let _ = resp.insert_header("www-authenticate", ch);
        }
        if matches!(self, Refusal::Unavailable(_)) {
            let _ = resp.insert_header("retry-after", "5");
        }
        (resp, body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;

    fn route() -> std::sync::Arc<Route> {
        let c = Config::from_yaml(
            "t",
            "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as.example.com'}]\nroutes: [{name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3', scopes: [mcp:read, x]}]\n",
        )
        .unwrap();
        c.routes[0].clone()
    }

    #[test]
    fn discovery_challenge_has_no_error() {
        let r = route();
        let c = Refusal::NoCredentials.challenge(Some(&r)).unwrap();
        assert_eq!(
            c,
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read x\""
        );
    }

    #[test]
    fn scope_challenge() {
        let r = route();
        let c = Refusal::InsufficientScope.challenge(Some(&r)).unwrap();
        assert!(c.starts_with("Bearer error=\"insufficient_scope\""));
        assert!(c.contains("scope=\"mcp:read x\""));
        assert_eq!(Refusal::InsufficientScope.status(), 403);
    }

    #[test]
    fn descriptions_fit_challenge_grammar() {
        let all = [
            Refusal::Credentials(CredentialError::MultipleAuthorization),
            Refusal::Credentials(CredentialError::HeaderAndQuery),
            Refusal::Credentials(CredentialError::EmptyToken),
            Refusal::Credentials(CredentialError::MalformedToken),
            Refusal::Credentials(CredentialError::TooLarge),
            Refusal::InsufficientScope,
            Refusal::NoCredentials,
        ];
        for r in all {
            assert!(r.description().bytes().all(|b| b == 0x20
                || b == 0x21
                || (0x23..=0x5b).contains(&b)
                || (0x5d..=0x7e).contains(&b)));
        }
    }
}
