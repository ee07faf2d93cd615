//! The one door: every response the gateway writes itself is built here, and every answer
//! to a client request is written by [`answer`].
//!
//! What leaves through it: refusals ([`refusal`]: status, `WWW-Authenticate` challenges from
//! the route's compiled [`Challenge`], JSON body `{"error", "error_description"}` or a
//! JSON-RPC error for MCP bodies), RFC 9728 metadata documents and their CORS preflight,
//! the CORS preflights of routes, the JSON-RPC error that replaces an upstream answer the
//! gateway cannot read, the page that replaces one pingora wrote on its own
//! ([`own_page`]), the answer for a request that got no upstream answer ([`for_failure`]),
//! and every answer of the admin listener ([`admin_refusal`], [`admin_text`],
//! [`admin_json`]). The README's "What clients see" documents each; a unit test renders
//! every reason and checks that it has its JSON body.
//!
//! Sits at the end of the request flow: `proxy` hands a rendered refusal (or a metadata
//! document) to [`answer`], and pingora's failure hook hands its error to [`for_failure`].
//! It imports only `error` (what to say); nothing here decides.
//!
//! Answering without reading the request body is allowed, but the way the connection is
//! then ended decides whether the client sees the answer. On HTTP/2 a stream dropped with
//! its body unread is reset (RST_STREAM), and clients still sending their body at that
//! moment may report the reset instead of the answer (curl 7.88: "Stream error in the
//! HTTP/2 framing layer"). On HTTP/1.1, closing a socket with unread bytes makes the kernel
//! send a TCP RST that can destroy the answer in flight. So the answer goes out at once
//! (a client learns of its 401 without uploading its body first), then the rest of the
//! body is read and discarded, within [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`]: the stream
//! then ends cleanly on both sides, and an HTTP/1.1 connection stays usable for the next
//! (pipelined) request. A body that does not fit the bounds ends the stream (RST_STREAM
//! NO_ERROR, as RFC 9113 §8.1 allows after a complete answer) or closes the connection.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_core::protocols::http::{HttpTask, ServerSession};
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;

use crate::error::{AdminRefusal, GatewayFailure, McpError, Refusal, Throttle, UnreadableAnswer};

/// Most request body bytes read and discarded after an answer.
pub const DRAIN_LIMIT: usize = 1024 * 1024;
/// Longest wait for the rest of a request body after an answer.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How a body left unread can be disposed of after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposal {
    /// Nothing left to read.
    Done,
    /// Read and discard it after the answer.
    Drain,
    /// Do not wait for it: the client asked for `100-continue` and was not told to send,
    /// or it declared more than [`DRAIN_LIMIT`].
    Abandon,
}

/// What to do with the unread body of a request answered by the gateway. A plain function
/// of what the request declared, so every shape is decided the same way.
pub fn disposal(body_done: bool, expects_continue: bool, declared: Option<&[u8]>) -> Disposal {
    if body_done {
        return Disposal::Done;
    }
    if expects_continue {
        return Disposal::Abandon;
    }
    match declared {
        None => Disposal::Drain,
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            Some(n) if n <= DRAIN_LIMIT => Disposal::Drain,
            _ => Disposal::Abandon,
        },
    }
}

/// Write `header` and `body` as the whole answer to the request, then dispose of what is
/// left of the request body (see the module docs): read within the bounds, the stream ends
/// cleanly (HTTP/2) or the connection stays usable for the next, possibly pipelined,
/// request (HTTP/1.1); otherwise the HTTP/2 stream is reset after the answer and the
/// HTTP/1.1 connection closed (`Connection: close` when known before the answer). The
/// answer to a `HEAD` request carries the headers only: over HTTP/2 its HEADERS frame ends
/// the stream, with no DATA frame at all (RFC 9113 §8.1).
pub async fn answer(session: &mut ServerSession, header: ResponseHeader, body: Bytes) {
    answer_with(session, header, body, false).await;
}

/// [`answer`], without waiting for the rest of the request body: for a request whose body
/// missed its deadline (the HTTP/2 stream is reset after the answer, the HTTP/1.1
/// connection closed).
pub async fn answer_closing(session: &mut ServerSession, header: ResponseHeader, body: Bytes) {
    answer_with(session, header, body, true).await;
}

async fn answer_with(
    session: &mut ServerSession,
    mut header: ResponseHeader,
    body: Bytes,
    abandon: bool,
) {
    if let Some(written) = session.response_written() {
        if !written.status.is_informational() {
            // Too late for an answer (a response is under way): end the exchange.
            session.set_keepalive(None);
            return;
        }
    }
    let continue_sent = session.response_written().is_some();
    let expects_continue = !continue_sent
        && session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let done = session.is_body_done();
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .map(|v| v.as_bytes().to_vec());
    let plan = if abandon && !done {
        Disposal::Abandon
    } else {
        disposal(done, expects_continue, declared.as_deref())
    };
    match plan {
        Disposal::Abandon => session.set_keepalive(None),
        // pingora closes an HTTP/1.1 connection answered before its body was read; this one
        // reads it afterwards, and decides then.
        Disposal::Drain => {
            if let ServerSession::H1(s) = session {
                s.set_close_on_response_before_downstream_finish(false);
            }
        }
        Disposal::Done => {}
    }
    header.remove_header(&http::header::SERVER);
    let head_request = session.req_header().method == http::Method::HEAD;
    let ok = if session.is_http2() && (head_request || body.is_empty()) {
        // The HEADERS frame ends the stream: no DATA frame follows (an empty one after the
        // answer to a HEAD is what curl and other clients report as a protocol error).
        session
            .response_duplex_vec(vec![HttpTask::Header(Box::new(header), true)])
            .await
            .is_ok()
    } else {
        // HTTP/1.1 writes no body for a HEAD request, whatever it is given.
        let body = if head_request { Bytes::new() } else { body };
        session
            .write_response_header(Box::new(header))
            .await
            .is_ok()
            && session.write_response_body(body, true).await.is_ok()
    };
    if !ok {
        session.set_keepalive(None);
        return;
    }
    if plan == Disposal::Drain && !drain(session).await {
        session.set_keepalive(None);
    }
}

/// Read and discard the rest of the request body within the bounds; true if it ended.
async fn drain(session: &mut ServerSession) -> bool {
    let read = async {
        let mut n = 0usize;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    n += chunk.len();
                    if n > DRAIN_LIMIT {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

/// `Retry-After` of a refusal the gateway could not decide (keys, introspection or shared
/// state unavailable): long enough for a fetch, a breaker period or a Redis reconnect.
pub const RETRY_AFTER_SECONDS: &str = "5";

/// `Allow` of a 405 on an MCP policy route: the methods of the streamable HTTP transport.
pub const POLICY_ROUTE_ALLOW: &str = "GET, POST, DELETE, OPTIONS";

/// A response header for `status` (pingora's builder is fallible only for invalid codes).
pub fn response_header(status: u16) -> ResponseHeader {
    let (parts, ()) = http::Response::builder()
        .status(status)
        .body(())
        .unwrap_or_default()
        .into_parts();
    parts.into()
}

/// Set (or, with `append`, add) a header on a response going to the client. Every value
/// the gateway sets is built from checked parts (constants, lengths, compiled challenges,
/// validated origins), so this fails only if the header map is full (an upstream answer
/// with tens of thousands of headers); then the header is left out and the failure
/// logged, never silently.
pub fn set_header(
    h: &mut ResponseHeader,
    name: HeaderName,
    value: impl TryInto<HeaderValue>,
    append: bool,
) {
    let written = match value.try_into() {
        Ok(v) if append => h.append_header(name.clone(), v).map(|_| ()),
        Ok(v) => h.insert_header(name.clone(), v),
        Err(_) => Err(Error::explain(
            ErrorType::InvalidHTTPHeader,
            "invalid value",
        )),
    };
    if let Err(e) = written {
        tracing::error!(header = %name, error = %e, "a header of the gateway's own response could not be set");
    }
}

/// A JSON body and its framing headers (`Content-Type`, `Content-Length`, `no-store`).
fn json_response(status: u16, body: Bytes) -> (ResponseHeader, Bytes) {
    let mut h = response_header(status);
    set_header(
        &mut h,
        http::header::CONTENT_TYPE,
        "application/json",
        false,
    );
    set_header(&mut h, http::header::CONTENT_LENGTH, body.len(), false);
    set_header(&mut h, http::header::CACHE_CONTROL, "no-store", false);
    (h, body)
}

/// `{"error": code, "error_description": description}`.
fn error_body(code: &str, description: &str) -> Bytes {
    let body = serde_json::json!({"error": code, "error_description": description});
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The body of a 429: for a single JSON-RPC request, a JSON-RPC error (code 429) whose
/// `data` names the limit and the wait, so an agent can back off; otherwise the JSON error
/// with the same two members added.
fn throttle_body(refusal: &Refusal, t: &Throttle) -> Bytes {
    let data = serde_json::json!({"limit": &*t.limit, "retry_after_seconds": t.retry_after});
    let body = match &t.jsonrpc_id {
        Some(id) => {
            let id: serde_json::Value = serde_json::from_str(id).unwrap_or_default();
            serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": crate::error::jsonrpc::RATE_LIMITED,
                "message": refusal.description(),
                "data": data,
            }})
        }
        None => serde_json::json!({
            "error": refusal.code(),
            "error_description": refusal.description(),
            "limit": &*t.limit,
            "retry_after_seconds": t.retry_after,
        }),
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}`; `id` is raw JSON.
pub fn jsonrpc_error(id: Option<&str>, code: i64, message: &str) -> Bytes {
    jsonrpc_error_with(id, code, message, None)
}

/// [`jsonrpc_error`] with the error's `data` (raw JSON).
fn jsonrpc_error_with(id: Option<&str>, code: i64, message: &str, data: Option<&str>) -> Bytes {
    let id = id.unwrap_or("null");
    let data = data.map(|d| format!(r#","data":{d}"#)).unwrap_or_default();
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{}{data}}}}}"#,
        serde_json::Value::from(message)
    ))
}

/// The JSON-RPC error body of a refused MCP request.
pub fn mcp_error_body(e: &McpError) -> Bytes {
    jsonrpc_error_with(e.id.as_deref(), e.code, e.message, e.data.as_deref())
}

/// How a route challenges (RFC 6750 §3, RFC 9449 §7.1, RFC 9728 `resource_metadata`),
/// compiled once per route from its `auth`, `dpop` and resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `auth: api_key`: no OAuth metadata; 401s name the key header.
    ApiKey { header: String },
    /// Every other route: a Bearer and/or a DPoP challenge.
    OAuth {
        /// Bearer is offered (`dpop` is not `required`).
        bearer: bool,
        /// `algs` of the DPoP challenge, when DPoP is offered (`dpop` is not `disabled`).
        dpop_algs: Option<String>,
        /// The route's metadata URL (`resource_metadata`).
        metadata_url: String,
        /// Every scope the route requires (`scope`, space-separated).
        scope: String,
    },
}

/// The `WWW-Authenticate` challenges of a refusal on a route that challenges with
/// `challenge`. A route that allows DPoP offers both schemes; the error goes on the scheme
/// the client used (`dpop_used`), and DPoP proof errors always on the DPoP challenge.
/// Routes that accept only API keys have no OAuth metadata: their 401s name the key header.
pub fn challenges(refusal: &Refusal, challenge: &Challenge, dpop_used: bool) -> Vec<String> {
    let (bearer, dpop_algs, metadata_url, route_scope) = match challenge {
        Challenge::ApiKey { header } => {
            return match refusal.status() {
                401 => vec![format!("ApiKey header=\"{header}\"")],
                _ => Vec::new(),
            };
        }
        Challenge::OAuth {
            bearer,
            dpop_algs,
            metadata_url,
            scope,
        } => (*bearer, dpop_algs.as_deref(), metadata_url, scope.as_str()),
    };
    let error: Vec<String> = match refusal {
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
            format!("error=\"{}\"", refusal.code()),
            format!("error_description=\"{}\"", refusal.description()),
        ],
        _ => return Vec::new(),
    };
    let scope = match refusal {
        Refusal::NoCredentials | Refusal::InvalidApiKey(_) | Refusal::InsufficientScope => {
            route_scope
        }
        Refusal::ScopeFor(s) => s,
        _ => "",
    };
    let dpop_error = matches!(refusal, Refusal::DpopProof(_) | Refusal::DpopNonce(_));
    let error_on_dpop = dpop_algs.is_some() && (dpop_error || dpop_used || !bearer);
    let build = |scheme: &str, first: Option<String>, carries_error: bool| {
        let mut params: Vec<String> = first.into_iter().collect();
        if carries_error {
            params.extend(error.iter().cloned());
        }
        params.push(format!("resource_metadata=\"{metadata_url}\""));
        if !scope.is_empty() && (carries_error || error.is_empty()) {
            params.push(format!("scope=\"{scope}\""));
        }
        format!("{scheme} {}", params.join(", "))
    };
    let mut out = Vec::with_capacity(2);
    if bearer {
        out.push(build("Bearer", None, !error_on_dpop));
    }
    if let Some(algs) = dpop_algs {
        out.push(build(
            "DPoP",
            Some(format!("algs=\"{algs}\"")),
            error_on_dpop,
        ));
    }
    out
}

/// A refusal as status, headers and body. `challenge`: the route's, `None` when no route
/// was found (no challenge then).
pub fn refusal(
    refusal: &Refusal,
    challenge: Option<&Challenge>,
    dpop_used: bool,
) -> (ResponseHeader, Bytes) {
    let body = match refusal {
        Refusal::Mcp(e) => mcp_error_body(e),
        Refusal::RateLimited(t) | Refusal::TooManyStreams(t) => throttle_body(refusal, t),
        // The route and the AS's error code also as members of their own, for programs.
        Refusal::UpstreamCredentialRefused { route, as_error } => {
            let body = serde_json::json!({
                "error": refusal.code(),
                "error_description": refusal.description(),
                "route": &**route,
                "as_error": as_error,
            });
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
        }
        _ => error_body(refusal.code(), &refusal.description()),
    };
    let (mut resp, body) = json_response(refusal.status(), body);
    if let Some(c) = challenge {
        for ch in challenges(refusal, c, dpop_used) {
            set_header(&mut resp, http::header::WWW_AUTHENTICATE, ch, true);
        }
    }
    if let Refusal::DpopNonce(nonce) = refusal {
        set_header(
            &mut resp,
            HeaderName::from_static("dpop-nonce"),
            nonce.as_ref(),
            false,
        );
    }
    if let Refusal::MethodNotAllowed = refusal {
        set_header(&mut resp, http::header::ALLOW, POLICY_ROUTE_ALLOW, false);
    }
    if refusal.retry_later() {
        set_header(
            &mut resp,
            http::header::RETRY_AFTER,
            RETRY_AFTER_SECONDS,
            false,
        );
    }
    if let Some(t) = refusal.throttle() {
        set_header(&mut resp, http::header::RETRY_AFTER, t.retry_after, false);
        set_header(
            &mut resp,
            HeaderName::from_static("ratelimit-policy"),
            &*t.policy,
            false,
        );
        set_header(
            &mut resp,
            HeaderName::from_static("ratelimit"),
            &*t.state,
            false,
        );
    }
    (resp, body)
}

/// The SEP-2643 `_meta` key of an authorization denial.
pub const AUTHORIZATION_META: &str = "io.modelcontextprotocol/authorization";

/// A refused `tools/call` on a `structured_denials` route (SEP-2643, draft, latest revision:
/// the Extensions Track text): the same status and `WWW-Authenticate` as [`refusal`] (the
/// challenge stays authoritative), with a body that is a `CallToolResult` with
/// `isError: true` whose `_meta` carries the authorization envelope: `remediation:
/// "available"` when the challenge names the scopes to ask for, `"undisclosed"` otherwise.
/// Other refusals are answered as [`refusal`] does.
pub fn tool_refusal(
    refusal: &Refusal,
    challenge: Option<&Challenge>,
    dpop_used: bool,
    id: Option<&str>,
) -> (ResponseHeader, Bytes) {
    let (mut resp, body) = self::refusal(refusal, challenge, dpop_used);
    let remediation = match refusal {
        Refusal::ScopeFor(_) => "available",
        Refusal::PolicyDenied | Refusal::ToolChanged => "undisclosed",
        _ => return (resp, body),
    };
    let result = serde_json::json!({
        "resultType": "complete",
        "isError": true,
        "content": [{"type": "text", "text": refusal.description()}],
        "_meta": {AUTHORIZATION_META: {
            "reason": "insufficient_authorization",
            "remediation": remediation,
        }},
    });
    let body = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
        id.unwrap_or("null")
    ));
    set_header(&mut resp, http::header::CONTENT_LENGTH, body.len(), false);
    (resp, body)
}

// ---------------------------------------------------------------------------------------------
// Metadata documents and CORS preflights
// ---------------------------------------------------------------------------------------------

/// How long clients may cache a metadata document (it changes only with the config).
pub const METADATA_MAX_AGE: &str = "public, max-age=300";

/// An RFC 9728 metadata document (rendered when the config compiled), readable from any
/// origin. `head`: a HEAD request (headers only).
pub fn metadata(document: &Bytes, head: bool) -> (ResponseHeader, Bytes) {
    let mut h = response_header(200);
    set_header(
        &mut h,
        http::header::CONTENT_TYPE,
        "application/json",
        false,
    );
    set_header(&mut h, http::header::CONTENT_LENGTH, document.len(), false);
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        "*",
        false,
    );
    set_header(&mut h, http::header::CACHE_CONTROL, METADATA_MAX_AGE, false);
    (h, if head { Bytes::new() } else { document.clone() })
}

/// The 204 answer to a CORS preflight for a metadata document (any origin may read it).
pub fn metadata_preflight() -> (ResponseHeader, Bytes) {
    let mut h = response_header(204);
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        "*",
        false,
    );
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        "GET, HEAD, OPTIONS",
        false,
    );
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        "mcp-protocol-version, content-type",
        false,
    );
    set_header(&mut h, http::header::ACCESS_CONTROL_MAX_AGE, "86400", false);
    set_header(&mut h, http::header::CONTENT_LENGTH, "0", false);
    (h, Bytes::new())
}

/// The methods of MCP's streamable HTTP transport, allowed to browsers.
pub const CORS_ALLOW_METHODS: &str = "GET, POST, DELETE";
/// Request headers an MCP client sends (the API key header is added on routes that take keys).
pub const CORS_ALLOW_HEADERS: &str = "Authorization, DPoP, Content-Type, Mcp-Session-Id, \
     MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID";
/// Response headers a browser client must read.
pub const CORS_EXPOSE_HEADERS: &str = "Mcp-Session-Id, WWW-Authenticate, DPoP-Nonce, \
     MCP-Protocol-Version, Retry-After, RateLimit, RateLimit-Policy";
/// How long a browser may cache a preflight answer, in seconds. An origin removed from
/// `allowed_origins` is refused at once anyway: the real request is checked again.
pub const CORS_MAX_AGE: &str = "600";

/// The 204 answer to a route's CORS preflight from an allowed `origin`. `api_key_header`:
/// the route's API key header, allowed too on routes that accept keys.
pub fn cors_preflight(
    origin: &HeaderValue,
    api_key_header: Option<&HeaderName>,
) -> (ResponseHeader, Bytes) {
    let mut h = response_header(204);
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        origin.clone(),
        false,
    );
    set_header(&mut h, http::header::VARY, "Origin", false);
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        CORS_ALLOW_METHODS,
        false,
    );
    let allow_headers = match api_key_header {
        Some(k) => format!("{CORS_ALLOW_HEADERS}, {k}"),
        None => CORS_ALLOW_HEADERS.to_string(),
    };
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        allow_headers,
        false,
    );
    set_header(
        &mut h,
        http::header::ACCESS_CONTROL_MAX_AGE,
        CORS_MAX_AGE,
        false,
    );
    (h, Bytes::new())
}

// ---------------------------------------------------------------------------------------------
// Upstream answers the gateway must judge but cannot read (`lists`)
// ---------------------------------------------------------------------------------------------

/// The JSON-RPC error that replaces an unreadable answer.
pub fn unreadable_body(a: &UnreadableAnswer) -> Bytes {
    jsonrpc_error(
        a.id.as_deref(),
        crate::error::jsonrpc::INTERNAL_ERROR,
        a.message,
    )
}

/// The whole response, while the head is still unsent: 502 and the JSON-RPC error.
pub fn unreadable(a: &UnreadableAnswer) -> (ResponseHeader, Bytes) {
    json_response(UnreadableAnswer::STATUS, unreadable_body(a))
}

/// The same error as one SSE `message` event, to end a stream whose head was sent.
pub fn unreadable_event(a: &UnreadableAnswer) -> Bytes {
    let mut out = b"event: message\ndata: ".to_vec();
    out.extend_from_slice(&unreadable_body(a));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

// ---------------------------------------------------------------------------------------------
// The admin listener
// ---------------------------------------------------------------------------------------------

/// The admin listener's challenge on a missing or wrong admin token.
pub const ADMIN_CHALLENGE: &str = "Bearer realm=\"mcpgate-admin\"";
/// `Retry-After` when Redis could not record a revocation: a retry may reach it at once.
pub const ADMIN_RETRY_AFTER_SECONDS: &str = "1";
/// `Allow` of `/revocations`.
pub const ADMIN_REVOCATIONS_ALLOW: &str = "GET, POST";

/// An admin answer with a body of `content_type`.
pub fn admin_text(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

/// An admin answer with a JSON body.
pub fn admin_json(status: u16, v: &serde_json::Value) -> http::Response<Vec<u8>> {
    admin_text(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// An admin refusal: its JSON error and, by kind, `WWW-Authenticate`, `Retry-After` or
/// `Allow`.
pub fn admin_refusal(r: &AdminRefusal) -> http::Response<Vec<u8>> {
    let body = error_body(r.code(), r.description()).to_vec();
    let mut resp = admin_text(r.status(), "application/json", body);
    let extra = match r {
        AdminRefusal::BadToken => Some((http::header::WWW_AUTHENTICATE, ADMIN_CHALLENGE)),
        AdminRefusal::StoreUnavailable => {
            Some((http::header::RETRY_AFTER, ADMIN_RETRY_AFTER_SECONDS))
        }
        AdminRefusal::MethodNotAllowed => Some((http::header::ALLOW, ADMIN_REVOCATIONS_ALLOW)),
        _ => None,
    };
    if let Some((name, value)) = extra {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// Pages outside a request, and requests without an upstream answer
// ---------------------------------------------------------------------------------------------

/// `Allow` of the 405 that replaces pingora's page for `CONNECT`.
pub const OWN_PAGE_ALLOW: &str = "GET, POST, DELETE, OPTIONS, HEAD";

/// A complete HTTP/1.1 answer (closing the connection) that replaces a page pingora wrote
/// itself for `status` before any request reached the gateway: a head that does not parse
/// (400) or a `CONNECT` (405).
pub fn own_page(status: u16) -> Vec<u8> {
    let (code, description) = match status {
        405 => ("method_not_allowed", "this method is not supported"),
        431 => ("invalid_request", "request headers are too large"),
        400..=499 => ("invalid_request", "malformed HTTP request"),
        _ => (
            "internal_error",
            "the gateway could not complete the request",
        ),
    };
    let body = serde_json::json!({"error": code, "error_description": description}).to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\nx-request-id: {}\r\n",
        body.len(),
        crate::observe::generate()
    );
    if status == 405 {
        out.push_str(&format!("allow: {OWN_PAGE_ALLOW}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The refusal that answers a request pingora could not complete (`fail_to_proxy`), or
/// `None` when the client is gone and nothing can be written.
pub fn for_failure(e: &Error) -> Option<Refusal> {
    use ErrorType::*;
    let gateway = |f| Some(Refusal::Gateway(f));
    match e.etype() {
        HTTPStatus(413) => return Some(Refusal::BodyTooLarge),
        HTTPStatus(408) => return Some(Refusal::BodyTimeout),
        HTTPStatus(400) => return Some(Refusal::BadRequest("malformed request")),
        HTTPStatus(504) => return gateway(GatewayFailure::Timeout),
        HTTPStatus(s) if (400..500).contains(s) => {
            return Some(Refusal::BadRequest("malformed request"))
        }
        HTTPStatus(500) => return gateway(GatewayFailure::Internal),
        HTTPStatus(_) => return gateway(GatewayFailure::BadGateway),
        ConnectTimedout | TLSHandshakeTimedout => return gateway(GatewayFailure::Timeout),
        ConnectRefused | ConnectNoRoute | TLSHandshakeFailure | TLSWantX509Lookup | InvalidCert
        | HandshakeError | ConnectError | ConnectProxyFailure | SocketError | BindError => {
            return gateway(GatewayFailure::BadGateway)
        }
        _ => {}
    }
    match e.esource() {
        ErrorSource::Upstream => match e.etype() {
            ReadTimedout | WriteTimedout => gateway(GatewayFailure::Timeout),
            _ => gateway(GatewayFailure::BadGateway),
        },
        ErrorSource::Downstream => match e.etype() {
            // The client is gone (or its stream was reset): nobody to answer.
            WriteError | ReadError | ConnectionClosed | WriteTimedout => None,
            ReadTimedout => Some(Refusal::BadRequest("request body not received in time")),
            _ => Some(Refusal::BadRequest("malformed request")),
        },
        ErrorSource::Internal | ErrorSource::Unset => gateway(GatewayFailure::Internal),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn oauth() -> Challenge {
        Challenge::OAuth {
            bearer: true,
            dpop_algs: Some("RS256 ES256".into()),
            metadata_url: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp".into(),
            scope: "mcp:read x".into(),
        }
    }

    /// One refusal of every reason (`all_reasons_covered` fails when a reason has none).
    fn one_of_each() -> Vec<Refusal> {
        vec![
            Refusal::BadPath("path is not valid UTF-8"),
            Refusal::BadRequest("x"),
            Refusal::NotFound,
            Refusal::Credentials("more than one Authorization header"),
            Refusal::NoCredentials,
            Refusal::InvalidToken("token is expired"),
            Refusal::InsufficientScope,
            Refusal::Unavailable("the issuer's signing keys are unavailable"),
            Refusal::IntrospectionUnavailable("x"),
            Refusal::InvalidApiKey("the API key is not valid"),
            Refusal::UpstreamCredentialRefused {
                route: "github".into(),
                as_error: "invalid_grant",
            },
            Refusal::UpstreamCredentialUnavailable("x"),
            Refusal::HeadersTooLarge,
            Refusal::BodyTooLarge,
            Refusal::OriginDenied,
            Refusal::Mcp(McpError {
                code: -32700,
                message: "Parse error",
                id: Some("7".into()),
                data: None,
            }),
            Refusal::Mcp(McpError {
                code: -32022,
                message: "Unsupported protocol version",
                id: Some("7".into()),
                data: Some(r#"{"supported":["2025-11-25"],"requested":"1900-01-01"}"#.into()),
            }),
            Refusal::McpBodyTooLarge,
            Refusal::ScopeFor("mcp:read mcp:admin".into()),
            Refusal::PolicyDenied,
            Refusal::ToolChanged,
            Refusal::UnknownSession,
            Refusal::DpopProof("the request has no DPoP proof"),
            Refusal::DpopNonce("bm9uY2U".into()),
            Refusal::Revoked,
            Refusal::StateUnavailable("x"),
            Refusal::MethodNotAllowed,
            Refusal::RateLimited(Box::new(throttled(None))),
            Refusal::TooManyStreams(Box::new(throttled(Some("\"a\"")))),
            Refusal::SessionNotPlaced,
            Refusal::BodyTimeout,
            Refusal::Busy(crate::error::Cap::PerAddress),
            Refusal::Busy(crate::error::Cap::Total),
            Refusal::Gateway(GatewayFailure::BadGateway),
            Refusal::Gateway(GatewayFailure::Timeout),
            Refusal::Gateway(GatewayFailure::Internal),
        ]
    }

    fn throttled(id: Option<&str>) -> Throttle {
        Throttle {
            limit: "per-user".into(),
            retry_after: 3,
            policy: "\"per-user\";q=600;w=60;mcpgate-burst=60".into(),
            state: "\"per-user\";r=0;t=3".into(),
            jsonrpc_id: id.map(Box::from),
        }
    }

    /// A 429 says when to retry and why, in the RateLimit fields and in its body: a JSON-RPC
    /// error for a single JSON-RPC request, the JSON error otherwise.
    #[test]
    fn throttles_carry_retry_after_the_fields_and_the_limit() {
        for (id, jsonrpc) in [(None, false), (Some("7"), true), (Some("\"x\""), true)] {
            let r = Refusal::RateLimited(Box::new(throttled(id)));
            let (h, b) = refusal(&r, Some(&oauth()), false);
            let get = |n: &str| h.headers.get(n).map(|v| v.to_str().unwrap().to_string());
            assert_eq!(h.status.as_u16(), 429);
            assert_eq!(get("retry-after").as_deref(), Some("3"));
            assert_eq!(
                get("ratelimit-policy").as_deref(),
                Some("\"per-user\";q=600;w=60;mcpgate-burst=60")
            );
            assert_eq!(get("ratelimit").as_deref(), Some("\"per-user\";r=0;t=3"));
            assert!(get("www-authenticate").is_none(), "no challenge on a 429");
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            if jsonrpc {
                assert_eq!(v["jsonrpc"], "2.0");
                assert_eq!(v["id"].to_string(), id.unwrap());
                assert_eq!(v["error"]["code"], 429);
                assert_eq!(v["error"]["data"]["limit"], "per-user");
                assert_eq!(v["error"]["data"]["retry_after_seconds"], 3);
            } else {
                assert_eq!(v["error"], "rate_limited");
                assert_eq!(v["limit"], "per-user");
                assert_eq!(v["retry_after_seconds"], 3);
            }
        }
    }

    #[test]
    fn all_reasons_covered() {
        let mut seen: Vec<crate::error::Reason> =
            one_of_each().iter().map(|r| r.reason()).collect();
        seen.sort_by_key(|r| *r as usize);
        seen.dedup();
        assert_eq!(seen, crate::error::Reason::ALL);
    }

    /// Every refusal leaves with its status, `Content-Type: application/json`, a matching
    /// `Content-Length`, `no-store`, and a JSON body: the OAuth error with its description,
    /// or a JSON-RPC error for a malformed MCP request. With a route's challenge or without.
    #[test]
    fn every_refusal_has_its_json_body() {
        for r in one_of_each() {
            for challenge in [None, Some(oauth())] {
                for dpop_used in [false, true] {
                    let (h, b) = refusal(&r, challenge.as_ref(), dpop_used);
                    assert_eq!(h.status.as_u16(), r.status(), "{r:?}");
                    let get = |n: &str| h.headers.get(n).map(|v| v.to_str().unwrap().to_string());
                    assert_eq!(get("content-type").as_deref(), Some("application/json"));
                    assert_eq!(get("content-length"), Some(b.len().to_string()));
                    assert_eq!(get("cache-control").as_deref(), Some("no-store"));
                    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                    match &r {
                        Refusal::Mcp(e) => {
                            assert_eq!(v["jsonrpc"], "2.0");
                            assert_eq!(v["id"], 7);
                            assert_eq!(v["error"]["code"], e.code);
                        }
                        Refusal::TooManyStreams(t) if t.jsonrpc_id.is_some() => {
                            assert_eq!(v["jsonrpc"], "2.0");
                            assert_eq!(v["error"]["message"], *r.description());
                        }
                        Refusal::UpstreamCredentialRefused { route, as_error } => {
                            assert_eq!(v["error"], "access_denied");
                            assert_eq!(v["error_description"], *r.description());
                            assert_eq!(v["route"], **route);
                            assert_eq!(v["as_error"], *as_error);
                            let d = r.description();
                            assert!(d.contains("github") && d.contains("invalid_grant"), "{d}");
                        }
                        _ => {
                            assert_eq!(v["error"], r.code(), "{r:?}");
                            assert_eq!(v["error_description"], *r.description());
                        }
                    }
                    assert_eq!(
                        get("retry-after").is_some(),
                        r.retry_later() || r.throttle().is_some()
                    );
                }
            }
        }
    }

    /// The README's table of refusal reasons is the code's, row by row: every reason with
    /// its status and `error` code, and no row for a reason that does not exist.
    #[test]
    fn readme_reason_table_matches_the_code() {
        let readme = include_str!("../README.md");
        let rows: Vec<Vec<&str>> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| reason | status | `error` | when |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        let documented: Vec<(String, String, String)> = rows
            .iter()
            .map(|c| {
                (
                    c[1].trim_matches('`').into(),
                    c[2].into(),
                    c[3].trim_matches('`').into(),
                )
            })
            .collect();
        let code: Vec<(String, String, String)> = crate::error::Reason::ALL
            .iter()
            .map(|r| (r.as_str().into(), r.status().to_string(), r.code().into()))
            .collect();
        assert_eq!(documented, code);
    }

    #[test]
    fn discovery_challenge_has_no_error() {
        let c = challenges(&Refusal::NoCredentials, &oauth(), false);
        assert_eq!(
            c[0],
            "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read x\""
        );
        assert!(c[1].starts_with("DPoP algs=\"RS256 "), "{}", c[1]);
        assert!(!c[1].contains("error="));
    }

    #[test]
    fn scope_challenge() {
        let c = challenges(&Refusal::InsufficientScope, &oauth(), false).remove(0);
        assert!(c.starts_with("Bearer error=\"insufficient_scope\""));
        assert!(c.contains("scope=\"mcp:read x\""));
        let key = Challenge::ApiKey {
            header: "x-api-key".into(),
        };
        assert_eq!(
            challenges(&Refusal::NoCredentials, &key, false),
            vec!["ApiKey header=\"x-api-key\"".to_string()]
        );
        assert!(challenges(&Refusal::InsufficientScope, &key, false).is_empty());
    }

    #[test]
    fn dpop_errors_go_on_the_dpop_challenge() {
        let c = challenges(&Refusal::DpopProof("bad"), &oauth(), false);
        assert!(!c[0].contains("error="), "{}", c[0]);
        assert!(c[1].contains("error=\"invalid_dpop_proof\""), "{}", c[1]);
        let c = challenges(&Refusal::InvalidToken("t"), &oauth(), true);
        assert!(c[1].contains("error=\"invalid_token\""), "{}", c[1]);
        let (h, _) = refusal(&Refusal::DpopNonce("n1".into()), Some(&oauth()), true);
        assert_eq!(h.headers.get("dpop-nonce").unwrap(), "n1");
        let (h, _) = refusal(&Refusal::MethodNotAllowed, Some(&oauth()), false);
        assert_eq!(h.headers.get("allow").unwrap(), POLICY_ROUTE_ALLOW);
    }

    #[test]
    fn unreadable_answer_is_a_jsonrpc_error() {
        let e = UnreadableAnswer {
            id: Some("7".into()),
            message: "the upstream answer is \"odd\"",
        };
        let v: serde_json::Value = serde_json::from_slice(&unreadable_body(&e)).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32603);
        assert_eq!(v["error"]["message"], "the upstream answer is \"odd\"");
        let e = UnreadableAnswer {
            id: None,
            message: "x",
        };
        let (h, b) = unreadable(&e);
        assert_eq!(h.status, 502);
        assert_eq!(
            h.headers.get("content-length").unwrap().to_str().unwrap(),
            b.len().to_string()
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v["id"].is_null());
        let ev = unreadable_event(&e);
        let ev = std::str::from_utf8(&ev).unwrap();
        assert!(
            ev.starts_with("event: message\ndata: {") && ev.ends_with("}\n\n"),
            "{ev}"
        );
    }

    /// The README's table of admin answers is the code's: one row per refusal, with its
    /// status, `error` code and extra header.
    #[test]
    fn readme_admin_table_matches_the_code() {
        let readme = include_str!("../README.md");
        let rows: Vec<(String, String, String)> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| admin answer | status | `error` | extra header |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let c: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    c[2].into(),
                    c[3].trim_matches('`').into(),
                    c[4].trim_matches('`').into(),
                )
            })
            .collect();
        let all = admin_refusals();
        assert_eq!(rows.len(), all.len());
        for (r, (status, code, header)) in all.iter().zip(&rows) {
            assert_eq!(*status, r.status().to_string(), "{r:?}");
            assert_eq!(*code, r.code(), "{r:?}");
            let resp = admin_refusal(r);
            let extra: Vec<String> = ["www-authenticate", "retry-after", "allow"]
                .iter()
                .filter_map(|n| resp.headers().get(*n).map(|v| (n, v)))
                .map(|(n, v)| format!("{}: {}", canonical(n), v.to_str().unwrap()))
                .collect();
            assert_eq!(*header, extra.join(", "), "{r:?}");
        }
    }

    fn canonical(n: &str) -> &'static str {
        match n {
            "www-authenticate" => "WWW-Authenticate",
            "retry-after" => "Retry-After",
            _ => "Allow",
        }
    }

    /// Does not compile when a variant is added without a row here and in the README.
    fn _every_admin_refusal_is_listed(r: &AdminRefusal) {
        match r {
            AdminRefusal::RevocationsDisabled
            | AdminRefusal::TwoAuthorizations
            | AdminRefusal::BadToken
            | AdminRefusal::BodyTooLarge
            | AdminRefusal::BodyUnreadable
            | AdminRefusal::BodyTimeout
            | AdminRefusal::InvalidRevocation(_)
            | AdminRefusal::ListFull
            | AdminRefusal::StoreUnavailable
            | AdminRefusal::MethodNotAllowed
            | AdminRefusal::Internal => {}
        }
    }

    /// One of each admin refusal, in the README table's order.
    fn admin_refusals() -> Vec<AdminRefusal> {
        vec![
            AdminRefusal::RevocationsDisabled,
            AdminRefusal::TwoAuthorizations,
            AdminRefusal::BadToken,
            AdminRefusal::BodyTooLarge,
            AdminRefusal::BodyUnreadable,
            AdminRefusal::BodyTimeout,
            AdminRefusal::InvalidRevocation("name exactly one".into()),
            AdminRefusal::ListFull,
            AdminRefusal::StoreUnavailable,
            AdminRefusal::MethodNotAllowed,
            AdminRefusal::Internal,
        ]
    }

    #[test]
    fn admin_refusals_are_json_with_their_headers() {
        for r in admin_refusals() {
            let resp = admin_refusal(&r);
            assert_eq!(resp.status().as_u16(), r.status());
            let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
            assert_eq!(v["error"], r.code());
            assert_eq!(v["error_description"], r.description());
            let h = resp.headers();
            assert_eq!(
                h.contains_key("www-authenticate"),
                r == AdminRefusal::BadToken
            );
            assert_eq!(
                h.contains_key("retry-after"),
                r == AdminRefusal::StoreUnavailable
            );
            assert_eq!(h.contains_key("allow"), r == AdminRefusal::MethodNotAllowed);
        }
    }

    #[test]
    fn disposal_by_declared_shape() {
        assert_eq!(disposal(true, true, Some(b"99999999")), Disposal::Done);
        assert_eq!(disposal(false, true, Some(b"10")), Disposal::Abandon);
        assert_eq!(disposal(false, false, Some(b"10")), Disposal::Drain);
        assert_eq!(disposal(false, false, None), Disposal::Drain);
        let limit = DRAIN_LIMIT.to_string();
        assert_eq!(
            disposal(false, false, Some(limit.as_bytes())),
            Disposal::Drain
        );
        let over = (DRAIN_LIMIT + 1).to_string();
        assert_eq!(
            disposal(false, false, Some(over.as_bytes())),
            Disposal::Abandon
        );
        // A value pingora let through but we cannot read: do not wait for it.
        assert_eq!(disposal(false, false, Some(b"1, 1")), Disposal::Abandon);
        assert_eq!(disposal(false, false, Some(b"-1")), Disposal::Abandon);
    }

    #[test]
    fn failures_map_to_documented_statuses() {
        let e = |t: ErrorType, s: ErrorSource| {
            let mut e = Error::new(t);
            e.esource = s;
            e
        };
        let status = |e: &Error| for_failure(e).map(|r| r.status());
        assert_eq!(
            status(&e(ErrorType::ConnectRefused, ErrorSource::Upstream)),
            Some(502)
        );
        assert_eq!(
            status(&e(ErrorType::ConnectNoRoute, ErrorSource::Unset)),
            Some(502)
        );
        assert_eq!(
            status(&e(ErrorType::ConnectTimedout, ErrorSource::Upstream)),
            Some(504)
        );
        assert_eq!(
            status(&e(ErrorType::ReadTimedout, ErrorSource::Upstream)),
            Some(504)
        );
        assert_eq!(
            status(&e(ErrorType::ConnectionClosed, ErrorSource::Upstream)),
            Some(502)
        );
        assert_eq!(
            status(&e(ErrorType::HTTPStatus(413), ErrorSource::Internal)),
            Some(413)
        );
        assert_eq!(
            status(&e(ErrorType::InternalError, ErrorSource::Internal)),
            Some(500)
        );
        assert_eq!(
            status(&e(ErrorType::H2Error, ErrorSource::Downstream)),
            Some(400)
        );
        assert_eq!(
            status(&e(ErrorType::WriteError, ErrorSource::Downstream)),
            None
        );
        assert_eq!(
            status(&e(ErrorType::ReadError, ErrorSource::Downstream)),
            None
        );
    }
}
