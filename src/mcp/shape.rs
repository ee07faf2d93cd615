//! Request shapes: what the gateway must have judged before it forwards a request.
//!
//! Runs after the token step (and the session check), before anything is sent
//! upstream. The rule, by construction rather than by a list of cases: on a route with
//! an MCP policy a request is forwarded only if the gateway has judged everything the
//! upstream could act on, and anything it cannot judge is refused.
//!
//! - **Methods.** Only the methods of MCP's streamable HTTP transport pass a policy route:
//!   `POST`, `GET`, `DELETE`, and `OPTIONS` (CORS preflights), compared byte for byte as
//!   RFC 9110 §9.1 requires (`post` is not `POST`, and is refused rather than read: a
//!   framework that upper-cases methods would run it as a `POST`). Any other method, `HEAD`
//!   and every method invented later included, gets 405 with `Allow` (`respond::POLICY_ROUTE_ALLOW`).
//! - **Bodies.** A `POST` body is always read and judged ([`crate::mcp`]), whatever its
//!   `Content-Type`; it must be unencoded UTF-8 JSON-RPC. Any other request that may have
//!   a body (HTTP/1.1 `Content-Length` > 0 or `Transfer-Encoding`; HTTP/2 HEADERS without
//!   END_STREAM) is read too, and refused (400) unless the body is empty.
//! - **Mirrored headers.** `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` appear at
//!   most once, only with hyphens, and are checked against the body on every route that
//!   reads one, whatever the method and whatever the route's `auth`. `Mcp-Method` or
//!   `Mcp-Name` on a request without a body describes nothing the gateway can check: 400.
//!
//! [`head`], [`body`] and [`authorize`] are the three steps the proxy runs in order (the
//! body is read between the first two); [`judge`] runs them on a complete request, for
//! tests.

use http::{HeaderMap, Method};

use crate::error::Refusal;
use crate::mcp::body::{parse, Calls};
use crate::mcp::headers::{check_headers, mirrored, mismatch};
use crate::mcp::policy::{self, Policy};
use crate::principal::Principal;
use crate::scope::RequiredScope;

/// The parts of a route the shape steps read: the scopes it requires and its MCP policy.
#[derive(Clone, Copy)]
pub struct RoutePolicy<'a> {
    pub required: &'a [RequiredScope],
    pub policy: &'a Policy,
}

/// What the proxy must do after the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to read: decide with [`authorize`] and forward.
    Forward,
    /// Read the whole body (within the inspection limit), then [`body`].
    ReadBody,
}

/// A method of the streamable HTTP transport, exactly as the spec writes it.
fn transport_method(m: &Method) -> bool {
    matches!(m.as_str(), "POST" | "GET" | "DELETE" | "OPTIONS")
}

fn is_post(m: &Method) -> bool {
    m.as_str() == "POST"
}

/// Judge the request head. `inspects`: the route has an MCP policy;
/// `body_known_empty`: the framing says there is no body at all.
pub fn head(
    inspects: bool,
    method: &Method,
    headers: &HeaderMap,
    body_known_empty: bool,
) -> Result<Plan, Refusal> {
    let m = mirrored(headers)?;
    if inspects {
        if !transport_method(method) {
            return Err(Refusal::MethodNotAllowed);
        }
        if is_post(method) || !body_known_empty {
            return Ok(Plan::ReadBody);
        }
    } else if (m.describe_body() || m.modern()) && (is_post(method) || !body_known_empty) {
        return Ok(Plan::ReadBody);
    }
    if m.describe_body() {
        return Err(mismatch(
            "Header mismatch: Mcp-Method and Mcp-Name describe a body this request does not have",
        ));
    }
    Ok(Plan::Forward)
}

/// The body must be bytes the gateway reads exactly as the upstream will: no content
/// coding, and UTF-8 if a charset is named.
fn check_encoding(headers: &HeaderMap) -> Result<(), Refusal> {
    for v in headers.get_all(http::header::CONTENT_ENCODING) {
        let identity = v.to_str().is_ok_and(|s| {
            s.split(',')
                .all(|c| c.trim().eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(Refusal::BadRequest(
                "an MCP request body the gateway inspects must not be content-encoded",
            ));
        }
    }
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    if let Some(ct) = types.next() {
        if types.next().is_some() {
            return Err(Refusal::BadRequest("more than one Content-Type header"));
        }
        let ct = ct
            .to_str()
            .map_err(|_| Refusal::BadRequest("Content-Type is not ASCII"))?;
        for param in ct.split(';').skip(1) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            if k.trim().eq_ignore_ascii_case("charset")
                && !v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            {
                return Err(Refusal::BadRequest(
                    "an MCP request body the gateway inspects must be UTF-8",
                ));
            }
        }
    }
    Ok(())
}

/// Judge a body read because [`head`] said [`Plan::ReadBody`]. `Some(calls)` when the
/// body was parsed as JSON-RPC (and its mirrored headers checked).
pub fn body(
    inspects: bool,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Calls>, Refusal> {
    let m = mirrored(headers)?;
    if !is_post(method) && body.is_empty() {
        // A framed but empty body (HTTP/2 empty DATA, `0` chunk): there is none.
        if m.describe_body() {
            return Err(mismatch(
                "Header mismatch: Mcp-Method and Mcp-Name describe a body this request does not have",
            ));
        }
        return Ok(None);
    }
    if inspects && !is_post(method) {
        return Err(Refusal::BadRequest(
            "on a route with an MCP policy only POST requests may carry a body",
        ));
    }
    if !(inspects || m.describe_body() || m.modern()) {
        return Ok(None);
    }
    check_encoding(headers)?;
    let calls = parse(body).map_err(Refusal::Mcp)?;
    check_headers(&calls, m.version, m.method, m.name).map_err(Refusal::Mcp)?;
    Ok(Some(calls))
}

/// The protocol versions the route lets through (`protocol_versions`), from the
/// `MCP-Protocol-Version` header and the body's claim (see [`crate::mcp::protocol`]).
pub fn versions(
    policy: &Policy,
    headers: &HeaderMap,
    calls: Option<&Calls>,
) -> Result<(), Refusal> {
    let header = headers.get("mcp-protocol-version").map(|v| v.as_bytes());
    crate::mcp::protocol::check(&policy.protocol_versions, header, calls)
}

/// Route scopes, and what each operation of the body needs. `principal` is `None` on
/// `auth: none` routes, which cannot have an MCP policy (refused anyway if one did).
pub fn authorize(
    route: RoutePolicy<'_>,
    principal: Option<&Principal>,
    calls: Option<&Calls>,
) -> Result<(), Refusal> {
    match (principal, calls) {
        (None, _) if route.policy.inspects() => Err(Refusal::PolicyDenied),
        (None, _) => Ok(()),
        (Some(p), Some(c)) => policy::authorize_calls(route.required, route.policy, p, c),
        (Some(p), None) => policy::check_scopes(route.required, p),
    }
}

/// The three steps on a complete request: what the proxy decides for it, without a
/// socket. `Ok` means forwarded.
pub fn judge(
    route: RoutePolicy<'_>,
    principal: Option<&Principal>,
    method: &Method,
    headers: &HeaderMap,
    request_body: &[u8],
) -> Result<Option<Calls>, Refusal> {
    let inspects = route.policy.inspects();
    let calls = match head(inspects, method, headers, request_body.is_empty())? {
        Plan::Forward => None,
        Plan::ReadBody => body(inspects, method, headers, request_body)?,
    };
    versions(route.policy, headers, calls.as_ref())?;
    authorize(route, principal, calls.as_ref())?;
    Ok(calls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::{Config, Route};

    /// The three steps for a compiled route.
    fn judge(
        route: &Route,
        principal: Option<&Principal>,
        method: &Method,
        headers: &HeaderMap,
        request_body: &[u8],
    ) -> Result<Option<Calls>, Refusal> {
        let rp = RoutePolicy {
            required: &route.auth.scopes,
            policy: &route.mcp,
        };
        super::judge(rp, principal, method, headers, request_body)
    }
    use crate::principal::AuthMethod;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn config() -> Config {
        Config::from_yaml(
            "t",
            r#"
listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}
admin: {address: '127.0.0.1:2'}
issuers: [{name: a, issuer: 'https://as'}]
routes:
- name: deny
  path_prefix: /deny
  upstream: 'http://127.0.0.1:3'
  scopes: [mcp:tools]
  tools: {"read_*": [mcp:read], "delete_*": [mcp:admin]}
  resources: {"file:///public/*": []}
  prompts: {"safe_*": []}
  default_tool_policy: deny
- name: allow
  path_prefix: /allow
  upstream: 'http://127.0.0.1:3'
  scopes: [mcp:tools]
  tools: {"delete_*": [mcp:admin], "*": []}
  resources: {"file:///secrets/*": [mcp:admin]}
  prompts: {"admin_*": [mcp:admin]}
- name: plain
  path_prefix: /plain
  upstream: 'http://127.0.0.1:3'
- name: open
  path_prefix: /open
  upstream: 'http://127.0.0.1:3'
  auth: none
"#,
        )
        .unwrap()
    }

    fn principal(scopes: &str) -> Principal {
        Principal {
            method: AuthMethod::Jwt,
            any_audience: true,
            iss: Arc::from("https://as"),
            issuer_name: Arc::from("a"),
            subject: Some("alice".into()),
            client_id: None,
            scopes: crate::scope::ScopeSet::parse(scopes),
            audiences: Arc::new([]),
            exp: i64::MAX / 2,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            azp: None,
            jti: None,
            iat: None,
        }
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

    fn method(m: &str) -> Method {
        Method::from_bytes(m.as_bytes()).unwrap()
    }

    const DENIED_CALL: &str =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything"}}"#;

    #[test]
    fn methods_on_policy_routes() {
        let c = config();
        let (deny, plain) = (&c.routes[0], &c.routes[2]);
        let p = principal("mcp:tools");
        let h = headers(&[("content-type", "application/json")]);
        for m in [
            "POST", "PUT", "PATCH", "DELETE", "GET", "OPTIONS", "PROPFIND", "post", "Post", "HEAD",
            "TRACE", "X-CUSTOM",
        ] {
            let r = judge(deny, Some(&p), &method(m), &h, DENIED_CALL.as_bytes());
            assert!(r.is_err(), "{m} forwarded a denied call");
        }
        for m in [
            "PUT", "PATCH", "PROPFIND", "post", "Post", "HEAD", "TRACE", "get",
        ] {
            assert!(
                matches!(
                    judge(deny, Some(&p), &method(m), &h, b""),
                    Err(Refusal::MethodNotAllowed)
                ),
                "{m}"
            );
        }
        for m in ["GET", "DELETE", "OPTIONS"] {
            assert!(judge(deny, Some(&p), &method(m), &h, b"").is_ok(), "{m}");
            assert!(matches!(
                judge(deny, Some(&p), &method(m), &h, b"{}"),
                Err(Refusal::BadRequest(_))
            ));
            // A mirrored header on a request without a body describes nothing we can check.
            let hm = headers(&[("mcp-method", "tools/call")]);
            assert!(matches!(
                judge(deny, Some(&p), &method(m), &hm, b""),
                Err(Refusal::Mcp(_))
            ));
        }
        // A route without policy streams other methods' bodies as before...
        assert!(judge(plain, Some(&p), &method("PUT"), &h, DENIED_CALL.as_bytes()).is_ok());
        // ...but checks the mirrored headers whatever the method.
        let hm = headers(&[("mcp-method", "tools/list")]);
        assert!(matches!(
            judge(plain, Some(&p), &method("PUT"), &hm, DENIED_CALL.as_bytes()),
            Err(Refusal::Mcp(e)) if e.code == crate::error::jsonrpc::HEADER_MISMATCH
        ));
    }

    #[test]
    fn auth_none_routes_check_mirrored_headers() {
        let c = config();
        let open = &c.routes[3];
        for m in ["POST", "PUT", "post"] {
            let hm = headers(&[("mcp-method", "tools/list")]);
            assert!(
                matches!(
                    judge(open, None, &method(m), &hm, DENIED_CALL.as_bytes()),
                    Err(Refusal::Mcp(e)) if e.code == crate::error::jsonrpc::HEADER_MISMATCH
                ),
                "{m}"
            );
            let hm = headers(&[
                ("mcp-method", "tools/call"),
                ("mcp-name", "delete_everything"),
            ]);
            assert!(judge(open, None, &method(m), &hm, DENIED_CALL.as_bytes()).is_ok());
        }
        let modern = headers(&[("mcp-protocol-version", "2026-07-28")]);
        assert!(matches!(
            judge(open, None, &method("POST"), &modern, DENIED_CALL.as_bytes()),
            Err(Refusal::Mcp(_))
        ));
        assert!(judge(open, None, &method("GET"), &modern, b"").is_ok());
    }

    #[test]
    fn encodings_and_charsets_the_gateway_cannot_read() {
        let c = config();
        let allow = &c.routes[1];
        let p = principal("mcp:tools");
        let ok = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
        for (n, v) in [
            ("content-encoding", "gzip"),
            ("content-encoding", "identity, br"),
            ("content-type", "application/json; charset=utf-16"),
            ("content-type", "application/json; Charset=\"latin1\""),
        ] {
            assert!(
                judge(allow, Some(&p), &Method::POST, &headers(&[(n, v)]), ok).is_err(),
                "{v}"
            );
        }
        for (n, v) in [
            ("content-encoding", "identity"),
            ("content-type", "application/json; charset=UTF-8"),
            ("content-type", "text/plain"),
        ] {
            assert!(
                judge(allow, Some(&p), &Method::POST, &headers(&[(n, v)]), ok).is_ok(),
                "{v}"
            );
        }
        // A UTF-8 BOM is not JSON: refused, not skipped.
        let bom = [b"\xef\xbb\xbf".as_slice(), DENIED_CALL.as_bytes()].concat();
        assert!(judge(allow, Some(&p), &Method::POST, &HeaderMap::new(), &bom).is_err());
    }

    #[test]
    fn underscored_mirrored_headers_are_refused() {
        let c = config();
        let p = principal("mcp:tools");
        for n in [
            "mcp_method",
            "Mcp_Name",
            "MCP_PROTOCOL_VERSION",
            "mcp-protocol_version",
        ] {
            let h = headers(&[(n, "x")]);
            for r in [&c.routes[0], &c.routes[2]] {
                assert!(
                    matches!(
                        judge(r, Some(&p), &Method::POST, &h, DENIED_CALL.as_bytes()),
                        Err(Refusal::Mcp(_))
                    ),
                    "{n}"
                );
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Property: a denied operation is never forwarded, whatever the request's shape.
    // ------------------------------------------------------------------------------------

    /// Operations the `deny` route must refuse for a token with only `mcp:tools`.
    fn denied_op() -> impl Strategy<Value = String> {
        let tool_method = prop_oneof![
            Just("tools/call"),
            Just("Tools/Call"),
            Just("TOOLS/CALL"),
            Just("tools/call "),
            Just(" tools/call"),
            Just("tools/call\\u0000"),
            Just("tools//call"),
            Just("tools/call/"),
            Just("tools\\/call"),
            Just("tools/Call"),
            Just("tools.call"),
        ];
        let tool = prop_oneof![
            Just("delete_everything"),
            Just("read_secrets"),
            Just("other")
        ];
        let uri = prop_oneof![
            Just("file:///etc/passwd"),
            Just("file:///public/../etc/passwd"),
            Just("file:///public/%2e%2e/secret"),
            Just("file:///public/%2E%2e/secret"),
            Just("file:///public/.%2e/secret"),
            Just("file:///public%2f..%2fsecret"),
            Just("file:///public/..%5csecret"),
            Just("file:///public/%252e%252e/secret"),
            Just("file:///public/x%00"),
            Just("file:///public/\\u002e\\u002e/secret"),
            Just("file://localhost/etc/passwd"),
            Just("FILE:///etc/passwd"),
        ];
        let prompt = prop_oneof![Just("admin_prompt"), Just("other")];
        prop_oneof![
            (tool_method, tool.clone()).prop_map(|(m, t)| format!(
                r#""method":"{m}","params":{{"name":"{t}","arguments":{{}}}}"#
            )),
            tool.prop_map(|t| format!(r#""method":"tools/call","params":{{"name":"{t}"}}"#)),
            (
                prop_oneof![
                    Just("resources/read"),
                    Just("resources/subscribe"),
                    Just("resources/unsubscribe"),
                    Just("Resources/Read"),
                ],
                uri.clone()
            )
                .prop_map(|(m, u)| format!(r#""method":"{m}","params":{{"uri":"{u}"}}"#)),
            prompt.clone().prop_map(|p| format!(r#""method":"prompts/get","params":{{"name":"{p}"}}"#)),
            prompt.prop_map(|p| format!(
                r#""method":"completion/complete","params":{{"ref":{{"type":"ref/prompt","name":"{p}"}},"argument":{{"name":"a","value":""}}}}"#
            )),
            uri.clone().prop_map(|u| format!(
                r#""method":"completion/complete","params":{{"ref":{{"type":"ref/resource","uri":"{u}"}},"argument":{{"name":"a","value":""}}}}"#
            )),
            uri.prop_map(|u| format!(
                r#""method":"subscriptions/listen","params":{{"notifications":{{"resourceSubscriptions":["file:///public/a","{u}"]}}}}"#
            )),
        ]
    }

    fn harmless() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""method":"ping""#.to_string()),
            Just(r#""method":"tools/list""#.to_string()),
            Just(r#""method":"resources/read","params":{"uri":"file:///public/a"}"#.to_string()),
            Just(r#""method":"notifications/initialized""#.to_string()),
        ]
    }

    fn http_method() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => Just("POST".to_string()),
            1 => prop_oneof![
                Just("post"), Just("Post"), Just("pOST"), Just("GET"), Just("get"), Just("DELETE"),
                Just("delete"), Just("PUT"), Just("PATCH"), Just("OPTIONS"), Just("HEAD"),
                Just("PROPFIND"), Just("TRACE"), Just("CONNECT"), Just("QUERY"),
            ].prop_map(str::to_string),
            1 => proptest::collection::vec(prop_oneof![b'a'..=b'z', b'A'..=b'Z'], 1..8)
                .prop_map(|v| String::from_utf8(v).unwrap()),
        ]
    }

    prop_compose! {
        fn request()(
            m in http_method(),
            op in denied_op(),
            before in proptest::option::of(harmless()),
            batch in any::<bool>(),
            id in 0u32..1000,
            ct in prop_oneof![
                Just(None), Just(Some("application/json")), Just(Some("text/plain")),
                Just(Some("APPLICATION/JSON; charset=utf-8")), Just(Some("application/x-www-form-urlencoded")),
                Just(Some("application/json; charset=utf-16")),
            ],
            ce in prop_oneof![Just(None), Just(Some("identity")), Just(Some("gzip")), Just(Some("br"))],
            mirror in any::<bool>(),
            bom in any::<bool>(),
        ) -> (String, Vec<(String, String)>, Vec<u8>, String) {
            let one = |id: u32, rest: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},{rest}}}"#);
            let mut body = match (&before, batch) {
                (Some(b), _) => format!("[{},{}]", one(id, b), one(id + 1, &op)),
                (None, true) => format!("[{}]", one(id, &op)),
                (None, false) => one(id, &op),
            }.into_bytes();
            if bom {
                body.splice(0..0, *b"\xef\xbb\xbf");
            }
            let mut h = Vec::new();
            if let Some(ct) = ct { h.push(("content-type".to_string(), ct.to_string())); }
            if let Some(ce) = ce { h.push(("content-encoding".to_string(), ce.to_string())); }
            if mirror {
                h.push(("mcp-method".to_string(), "tools/list".to_string()));
            }
            (m, h, body, op)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn a_denied_operation_is_never_forwarded((m, h, body, op) in request()) {
            let c = config();
            let p = principal("mcp:tools");
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            let mut headers = HeaderMap::new();
            for (n, v) in &h {
                headers.append(
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            let r = judge(&c.routes[0], Some(&p), &method, &headers, &body);
            prop_assert!(r.is_err(), "forwarded on the deny route: {} {:?} {}", m, h, String::from_utf8_lossy(&body));
            // The allow route names the same things with rules needing mcp:admin: its
            // denied subset (delete_*, secrets, admin_ prompts) must be refused too.
            let names_admin = op.contains("delete_everything") || op.contains("admin_prompt");
            if names_admin {
                let r = judge(&c.routes[1], Some(&p), &method, &headers, &body);
                prop_assert!(r.is_err(), "forwarded on the allow route: {} {:?} {}", m, h, String::from_utf8_lossy(&body));
            }
        }

        /// The same shapes carrying only allowed operations pass when the shape is one the
        /// gateway can read (so the property above is not refusing everything).
        #[test]
        fn an_allowed_operation_in_a_readable_shape_is_forwarded(
            ops in proptest::collection::vec(harmless(), 1..4),
            batch in any::<bool>(),
            ct in prop_oneof![Just("application/json"), Just("text/plain"), Just("application/json; charset=UTF-8")],
        ) {
            let c = config();
            let p = principal("mcp:tools");
            let msgs: Vec<String> = ops.iter().enumerate()
                .map(|(i, o)| format!(r#"{{"jsonrpc":"2.0","id":{i},{o}}}"#)).collect();
            let body = if batch || msgs.len() > 1 { format!("[{}]", msgs.join(",")) } else { msgs[0].clone() };
            let h = headers(&[("content-type", ct)]);
            for r in &c.routes[..3] {
                prop_assert!(judge(r, Some(&p), &Method::POST, &h, body.as_bytes()).is_ok(), "{} {}", r.name, body);
            }
        }
    }
}
