//! CORS for browser-based MCP clients: the route's `allowed_origins`, applied by the gateway.
//!
//! Runs right after routing, before credentials: a request's `Origin` is either absent
//! (not a browser's cross-origin request: nothing to decide), one of the route's
//! `allowed_origins`, or refused with 403 (the MCP transport's DNS-rebinding rule). A
//! preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`, no body) from
//! an allowed origin is answered here with 204, without a token and without the
//! upstream, so that a browser may then send `Authorization`. Every other response of the
//! route, the upstream's and the gateway's own refusals alike, gets
//! `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` for an allowed origin
//! (a browser must be able to read a 401's `WWW-Authenticate` to start discovery), and
//! `Vary: Origin`. The gateway is the only CORS policy: `Access-Control-*` headers from the
//! upstream are removed. No `Access-Control-Allow-Credentials`: MCP clients send tokens in
//! headers, never cookies.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora_http::ResponseHeader;

use crate::compile::CompileError;
use crate::error::Refusal;
use crate::listeners::PublicUrl;
use crate::respond::{set_header, CORS_EXPOSE_HEADERS};

/// A route's `allowed_origins`: lower-case `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    pub allowed: Vec<String>,
}

impl Origins {
    /// Check and compile `allowed_origins` (default: the public origin only).
    pub fn compile(list: Option<&[String]>, public: &PublicUrl) -> Result<Origins, CompileError> {
        let allowed = match list {
            Some(list) => list
                .iter()
                .map(|o| {
                    let u =
                        url::Url::parse(o).map_err(|e| format!("allowed_origins {o:?}: {e}"))?;
                    let origin = u.origin().ascii_serialization();
                    if origin == "null" || u.path() != "/" {
                        return Err(format!(
                            "allowed_origins {o:?} must be scheme://host[:port]"
                        ));
                    }
                    Ok(origin)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CompileError::new("allowed_origins", e))?,
            None => vec![public.url.to_ascii_lowercase()],
        };
        Ok(Origins { allowed })
    }
}

/// What the `Origin` of a routed request calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin`: not a cross-origin browser request.
    NoOrigin,
    /// A request from an allowed origin (its configured spelling, echoed on the response).
    Allowed(HeaderValue),
    /// A preflight from an allowed origin: answered with `respond::cors_preflight`.
    Preflight(HeaderValue),
}

impl Cors {
    /// The origin to echo on responses, if any.
    pub fn origin(&self) -> Option<&HeaderValue> {
        match self {
            Cors::NoOrigin => None,
            Cors::Allowed(o) | Cors::Preflight(o) => Some(o),
        }
    }
}

/// Judge a request's `Origin` against the route's `allowed_origins` (lower-case
/// `scheme://host[:port]`). `body_empty`: the request has no body (a browser's preflight
/// never has one; an `OPTIONS` with a body is not answered as one).
pub fn check(
    allowed: &[String],
    method: &Method,
    headers: &HeaderMap,
    body_empty: bool,
) -> Result<Cors, Refusal> {
    let mut origins = headers.get_all(http::header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Ok(Cors::NoOrigin);
    };
    if origins.next().is_some() {
        return Err(Refusal::BadRequest("more than one Origin header"));
    }
    let Some(allowed) = origin
        .to_str()
        .ok()
        .and_then(|o| allowed.iter().find(|a| a.eq_ignore_ascii_case(o)))
    else {
        return Err(Refusal::OriginDenied);
    };
    let echo = HeaderValue::from_str(allowed).map_err(|_| Refusal::OriginDenied)?;
    let preflight = *method == Method::OPTIONS
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        return Ok(Cors::Allowed(echo));
    }
    if !body_empty {
        return Err(Refusal::BadRequest("a CORS preflight must not have a body"));
    }
    Ok(Cors::Preflight(echo))
}

/// Put the route's CORS headers on a response (the upstream's, or a refusal): remove any
/// `Access-Control-*` header the upstream set, add `Vary: Origin`, and for an allowed
/// `origin` the `Access-Control-Allow-Origin` and `-Expose-Headers`.
pub fn decorate(resp: &mut ResponseHeader, origin: Option<&HeaderValue>) {
    let foreign: Vec<HeaderName> = resp
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in foreign {
        resp.remove_header(&n);
    }
    let varies = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| matches!(t.trim(), "*") || t.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !varies {
        set_header(resp, http::header::VARY, "Origin", true);
    }
    if let Some(o) = origin {
        set_header(
            resp,
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            o.clone(),
            false,
        );
        set_header(
            resp,
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            CORS_EXPOSE_HEADERS,
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const APP: &str = "https://app.example";

    fn allowed() -> Vec<String> {
        vec![APP.to_string(), "http://127.0.0.1:5173".to_string()]
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn judge(method: &str, pairs: &[(&str, &str)], body_empty: bool) -> Result<Cors, Refusal> {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        check(&allowed(), &m, &headers(pairs), body_empty)
    }

    #[test]
    fn no_origin_is_not_cors() {
        assert_eq!(judge("GET", &[], true), Ok(Cors::NoOrigin));
        // Without Origin an OPTIONS is not a preflight, whatever else it carries.
        assert_eq!(
            judge(
                "OPTIONS",
                &[("access-control-request-method", "POST")],
                true
            ),
            Ok(Cors::NoOrigin)
        );
    }

    #[test]
    fn allowed_origins_echo_the_configured_spelling() {
        let app = HeaderValue::from_static(APP);
        assert_eq!(
            judge("POST", &[("origin", APP)], false),
            Ok(Cors::Allowed(app.clone()))
        );
        assert_eq!(
            judge("POST", &[("origin", "HTTPS://APP.EXAMPLE")], false),
            Ok(Cors::Allowed(app.clone()))
        );
        assert_eq!(
            judge(
                "OPTIONS",
                &[("origin", APP), ("access-control-request-method", "POST")],
                true
            ),
            Ok(Cors::Preflight(app.clone()))
        );
        // An OPTIONS without Access-Control-Request-Method is an ordinary request.
        assert_eq!(
            judge("OPTIONS", &[("origin", APP)], true),
            Ok(Cors::Allowed(app.clone()))
        );
        // Methods are case-sensitive: `options` is another (unknown) method.
        assert_eq!(
            judge(
                "options",
                &[("origin", APP), ("access-control-request-method", "POST")],
                true
            ),
            Ok(Cors::Allowed(app))
        );
    }

    #[test]
    fn other_origins_are_refused() {
        for o in [
            "https://evil.example",
            "https://app.example.evil.example",
            "https://app.example:443",
            "http://app.example",
            "https://app.example/",
            "null",
            " https://app.example",
            "https://app.example ",
        ] {
            assert_eq!(
                judge("GET", &[("origin", o)], true),
                Err(Refusal::OriginDenied),
                "{o}"
            );
            assert_eq!(
                judge(
                    "OPTIONS",
                    &[("origin", o), ("access-control-request-method", "POST")],
                    true
                ),
                Err(Refusal::OriginDenied),
                "{o}"
            );
        }
        let two = judge("GET", &[("origin", APP), ("origin", APP)], true);
        assert_eq!(two, Err(Refusal::BadRequest("more than one Origin header")));
        let with_body = judge(
            "OPTIONS",
            &[("origin", APP), ("access-control-request-method", "POST")],
            false,
        );
        assert_eq!(
            with_body,
            Err(Refusal::BadRequest("a CORS preflight must not have a body"))
        );
    }

    #[test]
    fn preflight_answer() {
        let key = HeaderName::from_static("x-api-key");
        let (h, body) = crate::respond::cors_preflight(&HeaderValue::from_static(APP), Some(&key));
        assert_eq!(h.status, 204);
        assert!(body.is_empty());
        let get = |n: &str| h.headers.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("access-control-allow-origin"), APP);
        assert_eq!(get("vary"), "Origin");
        assert_eq!(get("access-control-allow-methods"), "GET, POST, DELETE");
        let allow = get("access-control-allow-headers").to_ascii_lowercase();
        for want in [
            "authorization",
            "dpop",
            "mcp-session-id",
            "mcp-protocol-version",
            "mcp-method",
            "mcp-name",
            "content-type",
            "last-event-id",
            "x-api-key",
        ] {
            assert!(allow.split(", ").any(|h| h == want), "{want} in {allow}");
        }
        assert_eq!(get("access-control-max-age"), crate::respond::CORS_MAX_AGE);
        assert!(h.headers.get("access-control-allow-credentials").is_none());
    }

    #[test]
    fn decorate_replaces_the_upstreams_cors() {
        let mut r = crate::respond::response_header(200);
        r.insert_header("access-control-allow-origin", "*").unwrap();
        r.insert_header("access-control-allow-credentials", "true")
            .unwrap();
        r.insert_header("vary", "Accept-Encoding").unwrap();
        decorate(&mut r, Some(&HeaderValue::from_static(APP)));
        assert_eq!(
            r.headers
                .get_all("access-control-allow-origin")
                .iter()
                .count(),
            1
        );
        assert_eq!(r.headers["access-control-allow-origin"], APP);
        assert!(r.headers.get("access-control-allow-credentials").is_none());
        let expose = r.headers["access-control-expose-headers"].to_str().unwrap();
        for want in [
            "Mcp-Session-Id",
            "WWW-Authenticate",
            "DPoP-Nonce",
            "MCP-Protocol-Version",
        ] {
            assert!(expose.contains(want), "{want}");
        }
        let vary: Vec<_> = r.headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);

        // No Origin: the upstream's CORS headers go all the same, and Vary is kept single.
        let mut r = crate::respond::response_header(200);
        r.insert_header("access-control-allow-origin", "*").unwrap();
        r.insert_header("vary", "origin, accept").unwrap();
        decorate(&mut r, None);
        assert!(r.headers.get("access-control-allow-origin").is_none());
        assert!(r.headers.get("access-control-expose-headers").is_none());
        assert_eq!(r.headers.get_all("vary").iter().count(), 1);
    }
}
