//! Refusals: the single door every refused request leaves through.
//!
//! Each [`Refusal`] maps to one status, one `WWW-Authenticate` challenge (RFC 6750 §3,
//! with the RFC 9728 `resource_metadata` parameter) and one JSON body
//! `{"error": ..., "error_description": ...}`. Descriptions are short static strings
//! written to fit the challenge grammar (no `"` or `\`); details go to the log.

use bytes::Bytes;
use pingora_http::ResponseHeader;

use crate::config::{AuthMode, DpopMode, Route};
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
    /// The issuer could not answer an introspection (unreachable, too slow, 5xx, not
    /// JSON, or refusing our client credentials): 503 with Retry-After.
    IntrospectionUnavailable(&'static str),
    /// An unknown or expired API key.
    InvalidApiKey(&'static str),
    /// Request headers over `limits.max_header_bytes`.
    HeadersTooLarge,
    /// Request body over `limits.max_body_bytes`.
    BodyTooLarge,
    /// An `Origin` the route does not allow (DNS-rebinding protection): 403.
    OriginDenied,
    /// A malformed MCP request, or mirrored headers that disagree with the body: 400
    /// with a JSON-RPC error body.
    Mcp(crate::mcp::McpError),
    /// The body of an inspected MCP request is larger than the gateway can inspect.
    McpBodyTooLarge,
    /// The operation needs scopes the token lacks; the value is every scope the
    /// operation requires, for the step-up challenge.
    ScopeFor(Box<str>),
    /// No tool/resource/prompt pattern matches and the route's default is deny.
    PolicyDenied,
    /// An `Mcp-Session-Id` that belongs to another subject: answered as unknown.
    UnknownSession,
    /// A missing or invalid DPoP proof (RFC 9449 `invalid_dpop_proof`): 401.
    DpopProof(&'static str),
    /// The route wants a server nonce in the proof; the value is a fresh one for the
    /// `DPoP-Nonce` header (RFC 9449 §8, `use_dpop_nonce`): 401.
    DpopNonce(Box<str>),
    /// The token is on the revocation list (by `jti`, subject or client): 401
    /// `invalid_token`.
    Revoked,
    /// Shared state (Redis) cannot answer and the feature fails closed: 503 with
    /// Retry-After.
    StateUnavailable(&'static str),
    /// A method the MCP transport does not use, on a route with an MCP policy: 405 with
    /// `Allow` ([`crate::shape::ALLOW`]).
    MethodNotAllowed,
    /// The request was let through but no answer came from the upstream: 502, 504 or 500
    /// (pingora's own error pages never reach clients).
    Gateway(GatewayFailure),
}

/// Why a forwarded request got no upstream answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayFailure {
    /// Refused, reset or closed by the upstream, or an answer that is not HTTP: 502.
    BadGateway,
    /// The upstream did not connect or answer in time: 504.
    Timeout,
    /// The gateway failed itself: 500.
    Internal,
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
            Refusal::NoCredentials | Refusal::InvalidToken(_) | Refusal::InvalidApiKey(_) => 401,
            Refusal::Revoked => 401,
            Refusal::StateUnavailable(_) => 503,
            Refusal::DpopProof(_) | Refusal::DpopNonce(_) => 401,
            Refusal::InsufficientScope => 403,
            Refusal::Unavailable(_) | Refusal::IntrospectionUnavailable(_) => 503,
            Refusal::HeadersTooLarge => 431,
            Refusal::BodyTooLarge | Refusal::McpBodyTooLarge => 413,
            Refusal::OriginDenied | Refusal::ScopeFor(_) | Refusal::PolicyDenied => 403,
            Refusal::Mcp(_) => 400,
            Refusal::UnknownSession => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::Gateway(GatewayFailure::BadGateway) => 502,
            Refusal::Gateway(GatewayFailure::Timeout) => 504,
            Refusal::Gateway(GatewayFailure::Internal) => 500,
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
            Refusal::InvalidToken(_) | Refusal::Revoked => "invalid_token",
            Refusal::StateUnavailable(_) => "temporarily_unavailable",
            Refusal::InvalidApiKey(_) => "invalid_api_key",
            Refusal::InsufficientScope => "insufficient_scope",
            Refusal::Unavailable(_) | Refusal::IntrospectionUnavailable(_) => {
                "temporarily_unavailable"
            }
            Refusal::HeadersTooLarge | Refusal::BodyTooLarge | Refusal::McpBodyTooLarge => {
                "invalid_request"
            }
            Refusal::Mcp(_) => "invalid_request",
            Refusal::OriginDenied | Refusal::PolicyDenied => "access_denied",
            Refusal::ScopeFor(_) => "insufficient_scope",
            Refusal::UnknownSession => "not_found",
            Refusal::DpopProof(_) => "invalid_dpop_proof",
            Refusal::DpopNonce(_) => "use_dpop_nonce",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::Gateway(GatewayFailure::BadGateway) => "bad_gateway",
            Refusal::Gateway(GatewayFailure::Timeout) => "gateway_timeout",
            Refusal::Gateway(GatewayFailure::Internal) => "internal_error",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            Refusal::BadPath(p) => p.describe(),
            Refusal::BadRequest(d)
            | Refusal::InvalidToken(d)
            | Refusal::Unavailable(d)
            | Refusal::IntrospectionUnavailable(d)
            | Refusal::InvalidApiKey(d)
            | Refusal::StateUnavailable(d)
            | Refusal::DpopProof(d) => d,
            Refusal::Revoked => "token has been revoked",
            Refusal::DpopNonce(_) => "the DPoP proof must carry the nonce in the DPoP-Nonce header",
            Refusal::NotFound => "no route for this path",
            Refusal::Credentials(c) => c.describe(),
            Refusal::NoCredentials => "an access token is required",
            Refusal::InsufficientScope => "the access token lacks a required scope",
            Refusal::HeadersTooLarge => "request headers are too large",
            Refusal::BodyTooLarge => "request body is too large",
            Refusal::OriginDenied => "this Origin may not call this resource",
            Refusal::Mcp(e) => e.message,
            Refusal::McpBodyTooLarge => {
                "MCP request body is larger than the 64 KiB the gateway inspects"
            }
            Refusal::ScopeFor(_) => "the access token lacks a scope this operation requires",
            Refusal::PolicyDenied => "the gateway policy does not allow this operation",
            Refusal::UnknownSession => "unknown session",
            Refusal::MethodNotAllowed => {
                "this method is not allowed on an MCP route (GET, POST, DELETE, OPTIONS are)"
            }
            Refusal::Gateway(GatewayFailure::BadGateway) => {
                "the upstream could not be reached or sent no valid answer"
            }
            Refusal::Gateway(GatewayFailure::Timeout) => "the upstream did not answer in time",
            Refusal::Gateway(GatewayFailure::Internal) => {
                "the gateway could not complete the request"
            }
        }
    }

    /// Every value `reason()` can take.
    pub const REASONS: [&'static str; 26] = [
        "bad_path",
        "bad_request",
        "no_route",
        "malformed_credentials",
        "no_credentials",
        "invalid_token",
        "insufficient_scope",
        "keys_unavailable",
        "introspection_unavailable",
        "invalid_api_key",
        "headers_too_large",
        "body_too_large",
        "origin_denied",
        "mcp_malformed",
        "mcp_body_too_large",
        "tool_scope",
        "policy_denied",
        "session_mismatch",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "token_revoked",
        "state_unavailable",
        "method_not_allowed",
        "upstream_error",
        "upstream_timeout",
        "internal_error",
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
            Refusal::IntrospectionUnavailable(_) => "introspection_unavailable",
            Refusal::InvalidApiKey(_) => "invalid_api_key",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::OriginDenied => "origin_denied",
            Refusal::Mcp(_) => "mcp_malformed",
            Refusal::McpBodyTooLarge => "mcp_body_too_large",
            Refusal::ScopeFor(_) => "tool_scope",
            Refusal::PolicyDenied => "policy_denied",
            Refusal::UnknownSession => "session_mismatch",
            Refusal::DpopProof(_) => "invalid_dpop_proof",
            Refusal::DpopNonce(_) => "use_dpop_nonce",
            Refusal::Revoked => "token_revoked",
            Refusal::StateUnavailable(_) => "state_unavailable",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::Gateway(GatewayFailure::BadGateway) => "upstream_error",
            Refusal::Gateway(GatewayFailure::Timeout) => "upstream_timeout",
            Refusal::Gateway(GatewayFailure::Internal) => "internal_error",
        }
    }

    /// The `WWW-Authenticate` challenges of this refusal (RFC 6750 §3, RFC 9449 §7.1),
    /// each with the RFC 9728 `resource_metadata`. A route that allows DPoP offers both
    /// schemes; the error goes on the scheme the client used (`dpop_used`), and DPoP
    /// proof errors always on the DPoP challenge. Routes that accept only API keys have
    /// no OAuth metadata: their 401s name the key header.
    pub fn challenges(&self, route: Option<&Route>, dpop_used: bool) -> Vec<String> {
        let Some(route) = route else {
            return Vec::new();
        };
        if route.auth == AuthMode::ApiKey {
            let header = route
                .api_key_header
                .as_ref()
                .map_or("x-api-key", |h| h.as_str());
            return match self.status() {
                401 => vec![format!("ApiKey header=\"{header}\"")],
                _ => Vec::new(),
            };
        }
        let error: Vec<String> = match self {
            // An API key is not the Bearer scheme: answer with the discovery challenge,
            // which tells the client where to get a token instead.
            Refusal::NoCredentials | Refusal::InvalidApiKey(_) => Vec::new(),
            Refusal::Credentials(_)
            | Refusal::InvalidToken(_)
            | Refusal::Revoked
            | Refusal::InsufficientScope
            | Refusal::ScopeFor(_)
            | Refusal::DpopProof(_)
            | Refusal::DpopNonce(_) => vec![
                format!("error=\"{}\"", self.code()),
                format!("error_description=\"{}\"", self.description()),
            ],
            _ => return Vec::new(),
        };
        let scope = match self {
            Refusal::NoCredentials | Refusal::InvalidApiKey(_) | Refusal::InsufficientScope => {
                route.scope_challenge.as_str()
            }
            Refusal::ScopeFor(s) => s,
            _ => "",
        };
        let offer_bearer = route.dpop != DpopMode::Required;
        let offer_dpop = route.dpop != DpopMode::Disabled;
        let dpop_error = matches!(self, Refusal::DpopProof(_) | Refusal::DpopNonce(_));
        let error_on_dpop = offer_dpop && (dpop_error || dpop_used || !offer_bearer);
        let build = |scheme: &str, first: Option<String>, carries_error: bool| {
            let mut params: Vec<String> = first.into_iter().collect();
            if carries_error {
                params.extend(error.iter().cloned());
            }
            params.push(format!("resource_metadata=\"{}\"", route.metadata_url));
            if !scope.is_empty() && (carries_error || error.is_empty()) {
                params.push(format!("scope=\"{scope}\""));
            }
            format!("{scheme} {}", params.join(", "))
        };
        let mut out = Vec::with_capacity(2);
        if offer_bearer {
            out.push(build("Bearer", None, !error_on_dpop));
        }
        if offer_dpop {
            let algs = format!("algs=\"{}\"", route.dpop_algs);
            out.push(build("DPoP", Some(algs), error_on_dpop));
        }
        out
    }

    /// Render status, headers and body.
    pub fn render(&self, route: Option<&Route>, dpop_used: bool) -> (ResponseHeader, Bytes) {
        let body = match self {
            Refusal::Mcp(e) => Bytes::from(e.body()),
            _ => {
                let body = serde_json::json!({
                    "error": self.code(),
                    "error_description": self.description(),
                });
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
            }
        };
        let mut resp = response_header(self.status());
        let _ = resp.insert_header("content-type", "application/json");
        let _ = resp.insert_header("content-length", body.len().to_string());
        let _ = resp.insert_header("cache-control", "no-store");
        for ch in self.challenges(route, dpop_used) {
            let _ = resp.append_header("www-authenticate", ch);
        }
        if let Refusal::DpopNonce(nonce) = self {
            let _ = resp.insert_header("dpop-nonce", nonce.as_ref());
        }
        if let Refusal::MethodNotAllowed = self {
            let _ = resp.insert_header("allow", crate::shape::ALLOW);
        }
        if matches!(
            self,
            Refusal::Unavailable(_)
                | Refusal::IntrospectionUnavailable(_)
                | Refusal::StateUnavailable(_)
        ) {
            let _ = resp.insert_header("retry-after", "5");
        }
        (resp, body)
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream answers the gateway must judge but cannot read (issue 13)
// ---------------------------------------------------------------------------------------------

/// An upstream answer on a `filter_tools_list` route that the gateway cannot read (encoded,
/// starting with a byte order mark, not JSON, larger than the buffer, an SSE event larger than
/// its bound): the client gets this JSON-RPC error instead, never the answer unfiltered and
/// never a truncated one. Built by `lists`, which decides when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableAnswer {
    /// The request id, as raw JSON, when the request was a single message with one.
    pub id: Option<Box<str>>,
    pub message: &'static str,
}

impl UnreadableAnswer {
    /// JSON-RPC "Internal error": the server side (the gateway in front of the server) failed.
    pub const CODE: i64 = -32603;
    /// Status when the head can still be chosen: the upstream sent what the gateway cannot use.
    pub const STATUS: u16 = 502;

    /// `{"jsonrpc":"2.0","id":…,"error":{"code":-32603,"message":…}}`.
    pub fn body(&self) -> Bytes {
        let id = self.id.as_deref().unwrap_or("null");
        Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{},"message":{}}}}}"#,
            Self::CODE,
            serde_json::Value::from(self.message)
        ))
    }

    /// The whole response, while the head is still unsent: 502 and the JSON-RPC error.
    pub fn render(&self) -> (ResponseHeader, Bytes) {
        let body = self.body();
        let mut resp = response_header(Self::STATUS);
        let _ = resp.insert_header("content-type", "application/json");
        let _ = resp.insert_header("content-length", body.len().to_string());
        let _ = resp.insert_header("cache-control", "no-store");
        (resp, body)
    }

    /// The same error as one SSE `message` event, to end a stream whose head was sent.
    pub fn sse_event(&self) -> Bytes {
        let mut out = b"event: message\ndata: ".to_vec();
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
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
        let c = Refusal::NoCredentials.challenges(Some(&r), false);
        assert_eq!(
            c[0],
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read x\""
        );
        assert!(c[1].starts_with("DPoP algs=\"RS256 "), "{}", c[1]);
        assert!(!c[1].contains("error="));
    }

    #[test]
    fn scope_challenge() {
        let r = route();
        let c = Refusal::InsufficientScope
            .challenges(Some(&r), false)
            .remove(0);
        assert!(c.starts_with("Bearer error=\"insufficient_scope\""));
        assert!(c.contains("scope=\"mcp:read x\""));
        assert_eq!(Refusal::InsufficientScope.status(), 403);
    }

    #[test]
    fn revoked_is_invalid_token_with_its_own_reason() {
        let r = route();
        assert_eq!(Refusal::Revoked.status(), 401);
        assert_eq!(Refusal::Revoked.reason(), "token_revoked");
        let c = Refusal::Revoked.challenges(Some(&r), false).remove(0);
        assert!(
            c.starts_with(
                "Bearer error=\"invalid_token\", error_description=\"token has been revoked\""
            ),
            "{c}"
        );
        let (h, _) = Refusal::StateUnavailable("x").render(Some(&r), false);
        assert_eq!(h.status, 503);
        assert!(h.headers.get("retry-after").is_some());
        assert!(Refusal::REASONS.contains(&"state_unavailable"));
    }

    #[test]
    fn descriptions_fit_challenge_grammar() {
        let all = [
            Refusal::Credentials(CredentialError::MultipleAuthorization),
            Refusal::Credentials(CredentialError::HeaderAndQuery),
            Refusal::Credentials(CredentialError::EmptyToken),
            Refusal::Credentials(CredentialError::MalformedToken),
            Refusal::Credentials(CredentialError::TooLarge),
            Refusal::Credentials(CredentialError::MultipleApiKeys),
            Refusal::Credentials(CredentialError::MalformedApiKey),
            Refusal::InvalidApiKey("the API key is not valid"),
            Refusal::InvalidApiKey("the API key has expired"),
            Refusal::IntrospectionUnavailable(
                "the authorization server could not be asked about the token",
            ),
            Refusal::InsufficientScope,
            Refusal::NoCredentials,
            Refusal::Revoked,
            Refusal::StateUnavailable("the DPoP replay store is unavailable"),
            Refusal::StateUnavailable("the revocation list is unavailable"),
        ];
        for r in all {
            assert!(r.description().bytes().all(|b| b == 0x20
                || b == 0x21
                || (0x23..=0x5b).contains(&b)
                || (0x5d..=0x7e).contains(&b)));
        }
    }

    #[test]
    fn unreadable_answer_is_a_jsonrpc_error() {
        let e = UnreadableAnswer {
            id: Some("7".into()),
            message: "the upstream answer is \"odd\"",
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32603);
        assert_eq!(v["error"]["message"], "the upstream answer is \"odd\"");
        let (h, b) = UnreadableAnswer {
            id: None,
            message: "x",
        }
        .render();
        assert_eq!(h.status, 502);
        assert_eq!(
            h.headers.get("content-length").unwrap().to_str().unwrap(),
            b.len().to_string()
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v["id"].is_null());
        let ev = UnreadableAnswer {
            id: None,
            message: "x",
        }
        .sse_event();
        let ev = std::str::from_utf8(&ev).unwrap();
        assert!(
            ev.starts_with("event: message\ndata: {") && ev.ends_with("}\n\n"),
            "{ev}"
        );
    }
}
