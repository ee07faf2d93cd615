//! The steps of the request flow, one plain function each: request data in (headers,
//! method, path, body bytes, the part of the route the step reads), `Result<_, Refusal>`
//! out. The `ProxyHttp` impl (`proxy`) only calls them in order and hands any refusal to
//! `respond`; each is unit-tested here without a pingora `Session`.
//!
//! route → origin → credentials → token (in `auth::Authenticator`, async) → principal →
//! dpop → session → policy (head, body, authorize) → body size → limits (async) → identity →
//! upstream credential (async).

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};
use pingora_http::RequestHeader;

use crate::auth::apikeys::KeyStore;
use crate::auth::credentials::{self, Credentials};
use crate::auth::dpop::{self, Checked, DpopSettings, ProofRequest};
use crate::auth::revocation::Revocations;
use crate::auth::{check_audience, Authenticator, Issuers, Presented, RouteAuth};
use crate::config::{Config, Route};
use crate::connections::RequestLimits;
use crate::error::Refusal;
use crate::identity::{self, UpstreamRequest};
use crate::listeners::PublicUrl;
use crate::mcp::body::{Calls, Op};
use crate::mcp::catalog::Catalog;
use crate::mcp::sessions::{self, SessionBindings, Standing, UnknownSessions};
use crate::mcp::shape::{self, Plan, RoutePolicy};
use crate::mcp::view::{self, CallNotes};
use crate::principal::{Principal, TokenHash};
use crate::quota::{self, streams::Slot, Limiter, Who};
use crate::routing::cors::{self, Cors};
use crate::routing::{self, Target};
use crate::upstream::Upstream;
use crate::upstream_auth::{self, Caller, Clients, ExchangeCache, Mode, Sent};

/// Route: what the request is for. Malformed credentials outrank a missing route
/// (SPEC-CHECKLIST §7.12): a request with a bad `Authorization` on no route gets the 400.
pub fn route(config: &Config, req: &RequestHeader) -> Result<Target, Refusal> {
    scheme(req.uri.scheme_str())?;
    routing::classify(&config.table, &config.requests, req).map_err(|r| {
        match (&r, credentials::extract(&req.headers, req.uri.query())) {
            (Refusal::NotFound, Err(e)) => Refusal::Credentials(e.describe()),
            _ => r,
        }
    })
}

/// Scheme: an HTTP/2 `:scheme` (or an absolute-form target's scheme) other than `http` or
/// `https` (`javascript`, `file`...) names nothing this gateway serves: 400.
pub fn scheme(scheme: Option<&str>) -> Result<(), Refusal> {
    match scheme {
        None => Ok(()),
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => Ok(()),
        Some(_) => Err(Refusal::BadRequest(
            "the request scheme must be http or https",
        )),
    }
}

/// Origin: the route's `allowed_origins` against `Origin` (a preflight is answered here).
/// `body_empty`: the request has no body (a browser's preflight never has one).
pub fn origin(
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
    body_empty: bool,
) -> Result<Cors, Refusal> {
    cors::check(&route.cors.allowed, method, headers, body_empty)
}

/// Credentials: what the request presents, of what the route accepts.
pub fn credentials<'h>(
    auth: &RouteAuth,
    headers: &'h HeaderMap,
    query: Option<&str>,
) -> Result<Credentials<'h>, Refusal> {
    credentials::extract_for(headers, query, auth.mode.accepts_oauth(), auth.key_header())
        .map_err(|e| Refusal::Credentials(e.describe()))
}

/// Token: the credentials verified into a principal by the issuer entries (or key file)
/// the route accepts, through the verified-token cache. `seen` gets the credential's
/// hash, for the audit line.
pub async fn token<'h>(
    auth: &Authenticator,
    issuers: &Issuers,
    api_keys: Option<&KeyStore>,
    route: &Route,
    creds: Credentials<'h>,
    seen: &mut Option<TokenHash>,
) -> Result<(Arc<Principal>, Presented<'h>), Refusal> {
    auth.authenticate_request(issuers, api_keys, &route.auth, creds, seen)
        .await
}

/// Whether the request uses the DPoP authorization scheme (errors then go on the DPoP
/// challenge).
pub fn dpop_used(headers: &HeaderMap) -> bool {
    headers.get(http::header::AUTHORIZATION).is_some_and(|v| {
        v.as_bytes()
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"dpop "))
    })
}

/// Principal: a verified principal may use this route: not revoked (the local list, no
/// Redis round trip), for this resource (audience), with a usable subject.
pub fn principal(
    revocations: &Revocations,
    route: &Route,
    p: &Principal,
    now: i64,
) -> Result<(), Refusal> {
    revocations.check(p, now)?;
    check_audience(&route.resource.audiences, p)?;
    identity::check_subject(p)
}

/// DPoP: how the token was presented on this route (RFC 9449 §7); the proof, when there is
/// one, checked but for its replay (`dpop::check_replay`, async, next).
#[allow(clippy::too_many_arguments)]
pub fn dpop(
    settings: &DpopSettings,
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    p: &Principal,
    presented: Presented<'_>,
    now: i64,
) -> Result<Option<Checked>, Refusal> {
    let req = ProofRequest {
        method: method.as_str(),
        headers,
        origin: &route.resource.public_origin,
        path,
    };
    dpop::authorize(settings, route.dpop, &req, p, presented, now)
}

/// Session: an `Mcp-Session-Id` is unambiguous and belongs to the identity that opened it
/// at this upstream (on every route); an id with no binding here is forwarded or refused
/// as the route says (`unknown_sessions`). `Ok(true)`: an id with no binding here goes to
/// the upstream (counted, so that lost bindings are not silent).
pub fn session(
    bindings: &SessionBindings,
    upstream: &Upstream,
    unknown: UnknownSessions,
    headers: &HeaderMap,
    p: Option<&Principal>,
) -> Result<bool, Refusal> {
    let Some(sid) = sessions::session_id(headers)? else {
        return Ok(false);
    };
    match bindings.standing(upstream, sid, p) {
        Standing::Owner => Ok(false),
        Standing::Other => Err(Refusal::UnknownSession),
        Standing::Unknown if unknown == UnknownSessions::Refuse => Err(Refusal::SessionNotPlaced),
        Standing::Unknown => Ok(true),
    }
}

/// Policy, on the head: whether the body must be read before deciding.
/// `body_known_empty`: the framing says there is no body at all.
pub fn policy_head(
    route: &Route,
    method: &Method,
    headers: &HeaderMap,
    body_known_empty: bool,
) -> Result<Plan, Refusal> {
    shape::head(route.inspects(), method, headers, body_known_empty)
}

/// Policy, with the body when it was read: what the request asks for, and whether `p` (none
/// on `auth: none` routes) may ask it. `seen` gets the operation of a single-message
/// request before it is judged (the audit line names it on a refusal too).
pub fn policy(
    route: &Route,
    p: Option<&Principal>,
    method: &Method,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    seen: &mut Option<Op>,
) -> Result<Option<Calls>, Refusal> {
    let calls = match body {
        Some(b) => shape::body(route.inspects(), method, headers, b)?,
        None => None,
    };
    if let Some(c) = calls.as_ref().filter(|c| !c.batch) {
        *seen = c.ops.first().cloned();
    }
    shape::versions(&route.mcp, headers, calls.as_ref())?;
    let rp = RoutePolicy {
        required: &route.auth.scopes,
        policy: &route.mcp,
    };
    shape::authorize(rp, p, calls.as_ref())?;
    Ok(calls)
}

/// Tool calls, against what the lists that passed taught (`pin_tools`, `Mcp-Param-*`).
pub fn tool_calls(
    route: &Route,
    catalog: &Catalog,
    headers: &HeaderMap,
    body: &[u8],
    calls: &Calls,
) -> Result<CallNotes, Refusal> {
    view::check_calls(&route.mcp, catalog, &route.server, headers, body, calls)
}

/// For the answer to a refused request on a `structured_denials` route: the request's id
/// and whether it holds a `tools/call` (`None`: the body is not read, or not parsed).
pub fn denied_tool_call(route: &Route, body: Option<&[u8]>) -> Option<(Option<Box<str>>, bool)> {
    if !route.mcp.structured_denials {
        return None;
    }
    let calls = crate::mcp::body::parse(body?).ok()?;
    let tool = !calls.batch && matches!(calls.ops[..], [Op::ToolsCall(_)]);
    Some((calls.id, tool))
}

/// Body size: a declared body over `limits.max_body_bytes` (after authentication, so that
/// an unauthenticated upload gets its 401 first, SPEC-CHECKLIST §7.10).
pub fn body_size(limits: &RequestLimits, headers: &HeaderMap) -> Result<(), Refusal> {
    if routing::body_too_large(limits, headers) {
        return Err(Refusal::BodyTooLarge);
    }
    Ok(())
}

/// Limits: a slot of the route's concurrency cap and every rate limit that applies, keyed by
/// the verified principal (none on `auth: none` routes), the route, the MCP operation and the
/// client's address (`peer`, or `X-Forwarded-For` from a trusted proxy). The slot is held
/// until the answer turns out complete, or ends.
pub async fn limits(
    limiter: &Limiter,
    route: &Route,
    p: Option<&Principal>,
    calls: Option<&Calls>,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<Option<Slot>, Refusal> {
    if route.quotas.is_empty() {
        return Ok(None);
    }
    let address = quota::key::client_address(peer, headers, &route.quotas.trusted);
    let req = quota::Request {
        who: Who {
            principal: p,
            route: &route.name,
            address,
        },
        calls,
    };
    limiter.admit(&route.quotas, &req).await
}

/// Identity: what the upstream will receive (target, forwarding and identity headers),
/// from the verified principal only. Refuses (500) rather than forward without identity.
pub fn identity(
    route: &Route,
    p: Option<&Principal>,
    path: &str,
    query: Option<&str>,
    client_ip: Option<IpAddr>,
    public: &PublicUrl,
) -> Result<UpstreamRequest, Refusal> {
    identity::upstream_request(&route.forwarding, p, path, query, client_ip, public)
}

/// Upstream credential: what the route's `upstream_auth` sends upstream for this caller (a
/// static value, the route's own token, or the caller's token exchanged: cached, or asked
/// of the AS on the fetch runtime). A refusal here sends nothing upstream.
#[allow(clippy::too_many_arguments)]
pub async fn upstream_credential(
    clients: &Clients,
    cache: &ExchangeCache,
    route: &Route,
    p: Option<&Arc<Principal>>,
    headers: &HeaderMap,
    query: Option<&str>,
    hash: Option<&TokenHash>,
) -> Result<Option<Sent>, Refusal> {
    let token = match route.upstream_auth.mode() {
        Mode::TokenExchange => match credentials::extract(headers, query) {
            Ok(Credentials::Bearer(t) | Credentials::Dpop(t)) => Some(t),
            _ => None,
        },
        _ => None,
    };
    let caller = Caller {
        principal: p,
        token,
        hash,
    };
    upstream_auth::credential(clients, cache, &route.upstream_auth, caller).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::GatewayFailure;
    use crate::principal::AuthMethod;

    const YAML: &str = r#"
listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}
admin: {address: '127.0.0.1:2'}
issuers: [{name: a, issuer: 'https://as.example.com'}]
routes:
- name: mcp
  path_prefix: /mcp
  upstream: 'http://127.0.0.1:3'
  scopes: [mcp:read]
  tools: {"delete_*": [mcp:admin]}
  allowed_origins: ['https://app.example.com']
  dpop: required
- name: open
  path_prefix: /open
  upstream: 'http://127.0.0.1:4'
  auth: none
"#;

    fn config() -> Config {
        Config::from_yaml("t", YAML).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn token_principal(sub: Option<&str>, aud: &str, scopes: &str) -> Principal {
        Principal {
            method: AuthMethod::Jwt,
            any_audience: false,
            iss: Arc::from("https://as.example.com"),
            issuer_name: Arc::from("a"),
            subject: sub.map(Box::from),
            client_id: Some(Arc::from("c1")),
            scopes: crate::scope::ScopeSet::parse(scopes),
            audiences: Arc::from(vec![Box::from(aud)]),
            exp: i64::MAX / 4,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: Some("j1".into()),
            iat: Some(1),
            azp: None,
        }
    }

    #[test]
    fn route_step_finds_routes_and_ranks_bad_credentials_over_no_route() {
        let c = config();
        let mut req = RequestHeader::build("GET", b"/MCP/x", None).unwrap();
        req.insert_header("host", "mcp.example.com").unwrap();
        assert_eq!(
            route(&c, &req),
            Ok(Target::Route {
                index: 0,
                path: "/MCP/x".into()
            })
        );
        let mut req = RequestHeader::build("GET", b"/nowhere", None).unwrap();
        req.insert_header("host", "mcp.example.com").unwrap();
        assert_eq!(route(&c, &req), Err(Refusal::NotFound));
        req.append_header("authorization", "Bearer a").unwrap();
        req.append_header("authorization", "Bearer b").unwrap();
        assert_eq!(
            route(&c, &req),
            Err(Refusal::Credentials("more than one Authorization header"))
        );
    }

    /// The token step with what needs no network: an API key from the key file, no
    /// credentials, a token no issuer entry of the route can judge.
    #[test]
    fn token_step_verifies_keys_and_refuses_what_it_cannot_judge() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let hex: String = sha2::Sha256::digest(b"key-one-0123456789")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(
            dir.path().join("keys.yaml"),
            format!(
                "keys:\n  - id: ci\n    sha256: {hex}\n    subject: bot\n    scopes: [mcp:read]\n"
            ),
        )
        .unwrap();
        let yaml = format!(
            "{YAML}- {{name: keys, path_prefix: /keys, upstream: 'http://127.0.0.1:5', auth: both}}\napi_keys: {{file: keys.yaml}}\n"
        );
        let c = Config::from_yaml(&dir.path().join("c.yaml").display().to_string(), &yaml).unwrap();
        let fetcher = crate::background::Fetcher::new().unwrap();
        let issuers = Issuers::build(&c.issuers, &[], 10, None, &fetcher);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let auth = Authenticator::new(10);
            let keys = c.api_keys.as_deref();
            let route = &c.routes[2];
            let mut seen = None;
            let (p, how) = token(
                &auth,
                &issuers,
                keys,
                route,
                Credentials::ApiKey("key-one-0123456789"),
                &mut seen,
            )
            .await
            .unwrap();
            assert_eq!(
                (p.subject.as_deref(), how),
                (Some("bot"), Presented::ApiKey)
            );
            assert!(seen.is_some());
            let r = token(
                &auth,
                &issuers,
                keys,
                route,
                Credentials::ApiKey("other"),
                &mut seen,
            )
            .await;
            assert_eq!(
                r.unwrap_err(),
                Refusal::InvalidApiKey("the API key is not valid")
            );
            let r = token(&auth, &issuers, keys, route, Credentials::None, &mut seen).await;
            assert_eq!(r.unwrap_err(), Refusal::NoCredentials);
            // An opaque token on a route whose issuer does not introspect: refused, no call.
            let r = token(
                &auth,
                &issuers,
                keys,
                route,
                Credentials::Bearer("opaque"),
                &mut seen,
            )
            .await;
            assert!(matches!(r, Err(Refusal::InvalidToken(_))), "{r:?}");
        });
    }

    #[test]
    fn origin_step_allows_listed_origins_and_answers_preflights() {
        let c = config();
        let r = &c.routes[0];
        assert_eq!(
            origin(r, &Method::GET, &HeaderMap::new(), true),
            Ok(Cors::NoOrigin)
        );
        let evil = headers(&[("origin", "https://evil.example")]);
        assert_eq!(
            origin(r, &Method::POST, &evil, true),
            Err(Refusal::OriginDenied)
        );
        let pre = headers(&[
            ("origin", "https://APP.example.com"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(matches!(
            origin(r, &Method::OPTIONS, &pre, true),
            Ok(Cors::Preflight(_))
        ));
        assert!(origin(r, &Method::OPTIONS, &pre, false).is_err());
    }

    #[test]
    fn credentials_step_takes_what_the_route_accepts() {
        let c = config();
        let auth = &c.routes[0].auth;
        let h = headers(&[("authorization", "Bearer tok")]);
        assert_eq!(credentials(auth, &h, None), Ok(Credentials::Bearer("tok")));
        assert!(credentials(auth, &h, Some("access_token=x")).is_err());
        let h = headers(&[("x-api-key", "k")]);
        assert_eq!(credentials(auth, &h, None), Ok(Credentials::None));
        assert!(dpop_used(&headers(&[("authorization", "dpop tok")])));
        assert!(!dpop_used(&headers(&[("authorization", "Bearer tok")])));
    }

    #[test]
    fn principal_step_checks_revocation_audience_and_subject() {
        let c = config();
        let r = &c.routes[0];
        let settings = crate::store::compile("t", Default::default()).unwrap();
        let revocations = Revocations::new(&settings, None);
        let aud = "https://mcp.example.com/mcp";
        assert!(principal(&revocations, r, &principal_of(Some("alice"), aud), 0).is_ok());
        assert_eq!(
            principal(
                &revocations,
                r,
                &principal_of(Some("alice"), "https://other"),
                0
            ),
            Err(Refusal::InvalidToken(
                "token audience does not include this resource"
            ))
        );
        assert_eq!(
            principal(&revocations, r, &principal_of(Some(""), aud), 0),
            Err(Refusal::InvalidToken("token has an empty sub"))
        );
    }

    fn principal_of(sub: Option<&str>, aud: &str) -> Principal {
        token_principal(sub, aud, "mcp:read")
    }

    #[test]
    fn dpop_step_refuses_bearer_on_a_dpop_required_route() {
        let c = config();
        let p = token_principal(Some("alice"), "https://mcp.example.com/mcp", "mcp:read");
        let h = HeaderMap::new();
        let r = dpop(
            &c.dpop,
            &c.routes[0],
            &Method::GET,
            &h,
            "/mcp",
            &p,
            Presented::Bearer,
            0,
        );
        assert!(matches!(r, Err(Refusal::InvalidToken(_))), "{r:?}");
        let r = dpop(
            &c.dpop,
            &c.routes[0],
            &Method::GET,
            &h,
            "/mcp",
            &p,
            Presented::Dpop("t"),
            0,
        );
        assert_eq!(r, Err(Refusal::DpopProof("the request has no DPoP proof")));
    }

    #[test]
    fn scheme_step_accepts_http_and_https_only() {
        for ok in [None, Some("http"), Some("https"), Some("HTTPS")] {
            assert_eq!(scheme(ok), Ok(()), "{ok:?}");
        }
        for bad in ["javascript", "file", "ftp", "httpx"] {
            assert!(
                matches!(scheme(Some(bad)), Err(Refusal::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn session_step_binds_sessions_to_their_opener() {
        let c = config();
        let up = &c.routes[0].upstream.addr;
        let bindings = SessionBindings::default();
        let alice = token_principal(Some("alice"), "x", "");
        let bob = token_principal(Some("bob"), "x", "");
        bindings.bind(up, "s1", None, Some(&alice));
        let h = headers(&[("mcp-session-id", "s1")]);
        let fwd = UnknownSessions::Forward;
        assert_eq!(session(&bindings, up, fwd, &h, Some(&alice)), Ok(false));
        assert_eq!(
            session(&bindings, up, fwd, &h, Some(&bob)),
            Err(Refusal::UnknownSession)
        );
        let twice = headers(&[("mcp-session-id", "s1"), ("mcp-session-id", "s2")]);
        assert!(matches!(
            session(&bindings, up, fwd, &twice, Some(&alice)),
            Err(Refusal::BadRequest(_))
        ));
        // An id with no binding: the route decides.
        let unknown = headers(&[("mcp-session-id", "s9")]);
        assert_eq!(session(&bindings, up, fwd, &unknown, Some(&bob)), Ok(true));
        assert_eq!(
            session(&bindings, up, UnknownSessions::Refuse, &unknown, Some(&bob)),
            Err(Refusal::SessionNotPlaced)
        );
    }

    #[test]
    fn policy_steps_read_and_judge_the_body() {
        let c = config();
        let r = &c.routes[0];
        let h = HeaderMap::new();
        assert_eq!(policy_head(r, &Method::POST, &h, false), Ok(Plan::ReadBody));
        assert_eq!(
            policy_head(r, &Method::PUT, &h, true),
            Err(Refusal::MethodNotAllowed)
        );
        let p = token_principal(Some("alice"), "x", "mcp:read");
        let call =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}"#;
        let mut seen = None;
        assert_eq!(
            policy(r, Some(&p), &Method::POST, &h, Some(call), &mut seen).unwrap_err(),
            Refusal::ScopeFor("mcp:read mcp:admin".into())
        );
        // The refused call is named for the audit line.
        let op = seen.take().unwrap();
        assert_eq!((op.method(), op.name()), ("tools/call", Some("delete_all")));
        let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert!(policy(r, Some(&p), &Method::POST, &h, Some(list), &mut seen).is_ok());
        assert_eq!(
            policy(r, None, &Method::POST, &h, Some(list), &mut seen).unwrap_err(),
            Refusal::PolicyDenied
        );
    }

    #[test]
    fn body_size_step() {
        let limits = RequestLimits {
            max_header_bytes: 1024,
            max_body_bytes: 10,
            max_inspected_body_bytes: 1024,
        };
        assert!(body_size(&limits, &headers(&[("content-length", "10")])).is_ok());
        assert_eq!(
            body_size(&limits, &headers(&[("content-length", "11")])),
            Err(Refusal::BodyTooLarge)
        );
    }

    #[test]
    fn identity_step_sets_identity_or_refuses() {
        let c = config();
        let r = &c.routes[0];
        let public = &c.listeners.public;
        let p = token_principal(Some("alice"), "x", "mcp:read");
        let up = identity(r, Some(&p), "/mcp/a", Some("q=1"), None, public).unwrap();
        assert_eq!(up.target, "/mcp/a?q=1");
        let get = |n: &str| {
            up.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-auth-subject").as_deref(), Some("alice"));
        assert_eq!(get("host").as_deref(), Some("127.0.0.1:3"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("https"));
        // Anonymous on `auth: none`: forwarding headers, no identity.
        let up = identity(&c.routes[1], None, "/open", None, None, public).unwrap();
        assert!(get_of(&up, "x-auth-subject").is_none());
        // A public authority that cannot be a header value refuses the request (500).
        let bad = PublicUrl {
            url: "https://x".into(),
            scheme: "https".into(),
            authority: "bad\nhost".into(),
        };
        assert_eq!(
            identity(r, Some(&p), "/mcp", None, None, &bad),
            Err(Refusal::Gateway(GatewayFailure::Internal))
        );
    }

    fn get_of(up: &UpstreamRequest, n: &str) -> Option<String> {
        up.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_str().unwrap().to_string())
    }
}
