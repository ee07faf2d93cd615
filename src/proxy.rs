//! `impl ProxyHttp`: sequences the phases of the request flow and nothing else.
//!
//! listener → routing (host, path, metadata) → credentials → token → policy →
//! identity headers → upstream. Every decision is a plain function in its own module;
//! every refusal is rendered by `error::Refusal`. The decision is made in
//! `request_filter`, before pingora connects upstream, so a refused request sends
//! nothing upstream, not even headers. The body is read for that decision only when
//! `shape::head` asks for it (MCP policy routes, mirrored MCP headers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

use crate::auth::dpop;
use crate::config::{AuthMode, Config, Route};
use crate::error::Refusal;
use crate::mcp::{body as mcp, lists, policy, sessions, shape};
use crate::principal::{hash_prefix, Principal, TokenHash};
use crate::respond;
use crate::routing::cors;
use crate::routing::{self, Target};
use crate::state::GatewayState;
use crate::state::{InFlight, Snapshot};
use crate::{identity, metrics, streams};

/// The pingora proxy application.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

/// Per-request state, carried across phases.
#[derive(Default)]
pub struct Ctx {
    config: Option<Arc<Config>>,
    route: Option<Arc<Route>>,
    path: String,
    principal: Option<Arc<Principal>>,
    /// Short hash of the presented token, for the audit line (never the token).
    token: Option<TokenHash>,
    /// `Some(refusal)` when refused (its reason and description go to the audit line).
    refused: Option<Refusal>,
    /// Set for requests that made an auth decision (not metadata, not unrouted).
    audited: bool,
    started: Option<Instant>,
    decided: Option<Instant>,
    /// Request body bytes seen so far (for `limits.max_body_bytes` on streamed bodies).
    body_bytes: u64,
    /// The request used the DPoP authorization scheme (errors go on the DPoP challenge).
    dpop_used: bool,
    /// Thumbprint of the DPoP proof key, for the audit line.
    dpop_jkt: Option<String>,
    /// The revocation list generation the principal was last checked against (a stream
    /// re-checks when it changes).
    revocation_gen: u64,
    /// The allowed `Origin` of a browser's request, echoed on every response of the route.
    cors_origin: Option<http::HeaderValue>,
    /// The body was read (and any `100 Continue` answered) before forwarding.
    body_inspected: bool,
    /// The MCP method and name of an inspected request, for the audit line.
    mcp_op: Option<mcp::Op>,
    /// The JSON-RPC id of a single-message request, for an error written in its answer's place.
    request_id: Option<Box<str>>,
    /// The upstream connection (HTTP/1.x), for the watchdog of a response stream.
    upstream_fd: Option<std::os::fd::RawFd>,
    /// Ends this response stream at its token's expiry or revocation, or when `judge` refuses
    /// it mid-way.
    watchdog: Option<streams::Watchdog>,
    /// The judgment of the answer on a `filter_tools_list` route.
    judge: Option<lists::Judge>,
    _in_flight: Option<InFlight>,
}

/// Largest body we inspect: what pingora can replay upstream after we read it
/// (its retry buffer, 64 KiB). Larger bodies on inspected routes get 413.
pub const MCP_BODY_LIMIT: usize = 64 * 1024;

/// What `request_filter` decided.
enum Decision {
    Forward {
        route: Arc<Route>,
        path: String,
        principal: Option<Arc<Principal>>,
    },
    Respond(Box<ResponseHeader>, Bytes, bool),
}

impl Gateway {
    /// Decide a request from its header alone.
    async fn decide(
        &self,
        snapshot: &Snapshot,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> std::result::Result<Decision, (Refusal, Option<Arc<Route>>)> {
        // A CORS preflight never has a body; an OPTIONS with one is not answered as one.
        let body_empty = session.req_header().method != http::Method::OPTIONS
            || session.as_mut().is_body_empty();
        let req = session.req_header();
        let target = routing::classify(&snapshot.config, req).map_err(|r| {
            // Malformed credentials outrank a missing route (SPEC-CHECKLIST §7.12).
            match (
                &r,
                crate::auth::credentials::extract(&req.headers, req.uri.query()),
            ) {
                (Refusal::NotFound, Err(e)) => (Refusal::Credentials(e.describe()), None),
                _ => (r, None),
            }
        })?;
        let (route, path) = match target {
            Target::Metadata(route) => {
                let (h, b) =
                    respond::metadata(&route.metadata_body, req.method == http::Method::HEAD);
                return Ok(Decision::Respond(Box::new(h), b, true));
            }
            Target::MetadataPreflight => {
                let (h, b) = respond::metadata_preflight();
                return Ok(Decision::Respond(Box::new(h), b, true));
            }
            Target::Route { route, path } => (route, path),
        };
        let cors = match cors::check(
            &route.allowed_origins,
            &req.method,
            &req.headers,
            body_empty,
        ) {
            Ok(c) => c,
            Err(r) => return Err((r, Some(route))),
        };
        ctx.cors_origin = cors.origin().cloned();
        if let cors::Cors::Preflight(origin) = &cors {
            let key = route
                .api_key_header
                .as_ref()
                .filter(|_| route.auth.accepts_api_key());
            let (h, b) = respond::cors_preflight(origin, key);
            return Ok(Decision::Respond(Box::new(h), b, true));
        }
        let principal = if route.auth == AuthMode::None {
            None
        } else {
            Some(
                self.authenticate(snapshot, &route, &path, session, ctx)
                    .await?,
            )
        };
        let refuse = |r: Refusal| (r, Some(route.clone()));
        let req = session.req_header();
        // Sessions, on every route: bound to the upstream and the identity that opened them.
        if let Some(sid) = sessions::session_id(&req.headers).map_err(refuse)? {
            if !self
                .state
                .sessions
                .allows(&route.upstream, sid, principal.as_deref())
            {
                return Err(refuse(Refusal::UnknownSession));
            }
        }
        // What the upstream could act on must be judged first (src/shape.rs).
        let body_known_empty = session.as_mut().is_body_empty();
        let req = session.req_header();
        let plan = shape::head(
            route.mcp.inspects(),
            &req.method,
            &req.headers,
            body_known_empty,
        )
        .map_err(refuse)?;
        let calls = match plan {
            shape::Plan::Forward => None,
            shape::Plan::ReadBody => {
                let body = read_mcp_body(session).await.map_err(refuse)?;
                ctx.body_inspected = true;
                let req = session.req_header();
                shape::body(&route, &req.method, &req.headers, &body).map_err(refuse)?
            }
        };
        shape::authorize(&route, principal.as_deref(), calls.as_ref()).map_err(refuse)?;
        if let Some(calls) = calls {
            ctx.request_id = calls.id.clone();
            if !calls.batch {
                ctx.mcp_op = calls.ops.into_iter().next();
            }
        }
        if routing::body_too_large(&snapshot.config, session.req_header()) {
            return Err(refuse(Refusal::BodyTooLarge));
        }
        if !ctx.body_inspected && h2_body_to_check(session) {
            read_mcp_body(session).await.map_err(refuse)?;
            ctx.body_inspected = true;
        }
        Ok(Decision::Forward {
            route,
            path,
            principal,
        })
    }

    /// Credentials → a verified principal that may use this route: token or key,
    /// revocations, audience, DPoP, and a usable subject.
    async fn authenticate(
        &self,
        snapshot: &Snapshot,
        route: &Arc<Route>,
        path: &str,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> std::result::Result<Arc<Principal>, (Refusal, Option<Arc<Route>>)> {
        let req = session.req_header();
        ctx.dpop_used = req
            .headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| {
                v.as_bytes()
                    .get(..5)
                    .is_some_and(|s| s.eq_ignore_ascii_case(b"dpop "))
            });
        let (principal, presented) = match self
            .state
            .auth
            .authenticate_request(
                snapshot,
                route,
                &req.headers,
                req.uri.query(),
                &mut ctx.token,
            )
            .await
        {
            Ok(p) => p,
            Err(r) => return Err((r, Some(route.clone()))),
        };
        let refuse = |r: Refusal| (r, Some(route.clone()));
        let now = crate::clock::now_unix();
        // Revocations: the local copy, no Redis round trip (cached tokens included).
        ctx.revocation_gen = self.state.revocations.generation();
        self.state
            .revocations
            .check(&principal, now)
            .map_err(refuse)?;
        policy::check_audience(route, &principal).map_err(refuse)?;
        identity::check_subject(&principal).map_err(refuse)?;
        let checked = dpop::authorize(
            &snapshot.config.dpop,
            route,
            req,
            path,
            &principal,
            presented,
            now,
        )
        .map_err(refuse)?;
        if let Some(c) = checked {
            // The one Redis round trip of the request path (with `state.redis`).
            dpop::check_replay(self.state.replay.as_ref(), &c)
                .await
                .map_err(refuse)?;
            ctx.dpop_jkt = Some(c.jkt);
        }
        Ok(principal)
    }
}

/// HTTP/2 checks DATA against a declared `content-length` only as they arrive, after the
/// head has gone upstream. A declared body small enough to hold (pingora's 64 KiB replay
/// buffer) is read before connecting, so one that disagrees is refused with nothing sent
/// (issue 21). Larger declared bodies stream (see the README's security section).
fn h2_body_to_check(session: &mut Session) -> bool {
    let s = session.as_mut();
    s.is_http2()
        && !s.is_body_done()
        && s.req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n <= MCP_BODY_LIMIT)
}

/// Read a whole request body for inspection, within [`MCP_BODY_LIMIT`], keeping it in
/// pingora's retry buffer so that the same bytes are sent upstream.
async fn read_mcp_body(session: &mut Session) -> std::result::Result<Bytes, Refusal> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MCP_BODY_LIMIT) {
        return Err(Refusal::McpBodyTooLarge);
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // The request is authorized so far: let the client send its body.
        let _ = session.as_mut().write_continue_response().await;
    }
    session.as_mut().enable_retry_buffering();
    let mut body = bytes::BytesMut::new();
    let read = async {
        loop {
            match session.as_mut().read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MCP_BODY_LIMIT {
                        return Err(Refusal::McpBodyTooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(()),
                Err(_) => return Err(Refusal::BadRequest("could not read the request body")),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(Ok(())) => {}
        Ok(Err(r)) => return Err(r),
        Err(_) => return Err(Refusal::BadRequest("request body not received in time")),
    }
    if session.as_ref().retry_buffer_truncated() {
        return Err(Refusal::McpBodyTooLarge);
    }
    Ok(body.freeze())
}

/// The error that makes pingora end a response stream without its clean end.
fn closing(why: streams::Closed) -> Box<pingora_core::Error> {
    pingora_core::Error::explain(pingora_core::ErrorType::InternalError, why.describe())
}

/// Every answer the gateway writes itself goes through `respond::answer`, which also
/// disposes of the unread request body (the connection's reuse follows from it).
async fn write_answer(
    session: &mut Session,
    header: Box<ResponseHeader>,
    body: Bytes,
    _keep: bool,
) {
    crate::respond::answer(session.as_mut(), *header, body).await;
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let started = Instant::now();
        ctx.started = Some(started);
        ctx._in_flight = Some(self.state.enter());
        let snapshot = self.state.snapshot.load_full();
        let decision = self.decide(&snapshot, session, ctx).await;
        ctx.config = Some(snapshot.config.clone());
        let decided = Instant::now();
        ctx.decided = Some(decided);
        let seconds = (decided - started).as_secs_f64();
        match decision {
            Ok(Decision::Forward {
                route,
                path,
                principal,
            }) => {
                route.metrics.allow(seconds);
                ctx.audited = true;
                ctx.route = Some(route);
                ctx.path = path;
                ctx.principal = principal;
                Ok(false)
            }
            Ok(Decision::Respond(h, b, keepalive)) => {
                write_answer(session, h, b, keepalive).await;
                Ok(true)
            }
            Err((refusal, route)) => {
                let reason = refusal.reason();
                match &route {
                    Some(r) => r.metrics.deny(reason, seconds),
                    None => metrics::UNROUTED.deny(reason, seconds),
                }
                let challenge = route.as_deref().map(|r| &r.challenge);
                let (mut h, b) = respond::refusal(&refusal, challenge, ctx.dpop_used);
                if route.is_some() {
                    cors::decorate(&mut h, ctx.cors_origin.as_ref());
                }
                ctx.audited = route.is_some();
                ctx.refused = Some(refusal);
                ctx.route = route;
                write_answer(session, Box::new(h), b, false).await;
                Ok(true)
            }
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // HTTP/1.1 requests pipelined behind this one are answered in order.
        session.as_mut().set_pipelining_enabled(true);
        crate::connections::request_started(session.as_ref());
        Ok(())
    }

    /// Requests that got no upstream answer are answered with the gateway's own JSON
    /// (`respond::for_failure`), never with pingora's page.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora_core::Error,
        ctx: &mut Ctx,
    ) -> pingora_proxy::FailToProxy {
        let Some(refusal) = crate::respond::for_failure(e) else {
            return pingora_proxy::FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let challenge = ctx.route.as_deref().map(|r| &r.challenge);
        let (mut h, b) = respond::refusal(&refusal, challenge, ctx.dpop_used);
        if ctx.route.is_some() {
            cors::decorate(&mut h, ctx.cors_origin.as_ref());
        }
        // The upstream exchange broke off: never reuse this connection.
        session.as_mut().set_keepalive(None);
        crate::respond::answer(session.as_mut(), h, b).await;
        pingora_proxy::FailToProxy {
            error_code: refusal.status(),
            can_reuse_downstream: false,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Err(pingora_core::Error::explain(
                pingora_core::ErrorType::InternalError,
                "no route decided",
            ));
        };
        let up = &route.upstream;
        let addr = self.state.resolver.resolve(up).await.map_err(|e| {
            pingora_core::Error::explain(pingora_core::ErrorType::ConnectNoRoute, e)
        })?;
        let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
        if let Some(t) = &route.upstream_tls {
            peer.options.ca = t.ca.clone();
            peer.client_cert_key = t.client.clone();
        }
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(10));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        // No read timeout: SSE and streamable HTTP responses may idle between events.
        Ok(Box::new(peer))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Content-Length over the limit was refused before connecting; this catches
        // chunked bodies that grow past it (the upstream sees a truncated request).
        if let (Some(b), Some(config)) = (body.as_ref(), ctx.config.as_ref()) {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > config.requests.max_body_bytes {
                return Err(pingora_core::Error::explain(
                    pingora_core::ErrorType::HTTPStatus(413),
                    "request body over limits.max_body_bytes",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora_http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(route), Some(config)) = (ctx.route.as_ref(), ctx.config.as_ref()) else {
            return Err(pingora_core::Error::explain(
                pingora_core::ErrorType::InternalError,
                "no route decided",
            ));
        };
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        identity::prepare_upstream(
            upstream_request,
            route,
            ctx.principal.as_deref(),
            &ctx.path,
            client_ip,
            &config.listeners.public,
        );
        if ctx.body_inspected {
            // We already answered 100 Continue and hold the whole body.
            upstream_request.remove_header(&http::header::EXPECT);
        }
        if route.mcp.filter_tools_list {
            // Every answer on the route is read to be filtered: ask for it unencoded.
            upstream_request.remove_header(&http::header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        fd: std::os::fd::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An HTTP/1.x connection carries this response alone until it ends.
        ctx.upstream_fd = (peer.options.alpn == pingora_core::protocols::ALPN::H1).then_some(fd);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.route.is_some() {
            cors::decorate(resp, ctx.cors_origin.as_ref());
        }
        if let Some(route) = ctx.route.as_ref().filter(|_| ctx.refused.is_none()) {
            if let Some(sid) = resp
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            {
                let p = ctx.principal.as_deref();
                self.state.sessions.bind(&route.upstream, sid, p);
            }
        }
        let head_request = session.req_header().method == http::Method::HEAD;
        if let (Some(route), Some(fd)) = (ctx.route.as_ref(), ctx.upstream_fd) {
            // A stream may not outlive its token, even idle; a filtered one may be ended early.
            let filtered = route.mcp.filter_tools_list;
            if (ctx.principal.is_some() || filtered) && streams::is_open_ended(resp, head_request) {
                ctx.watchdog = streams::Watchdog::new(fd);
                if let (Some(w), Some(p)) = (ctx.watchdog.as_mut(), ctx.principal.as_ref()) {
                    w.watch(
                        p.exp + p.skew + route.stream_expiry_grace,
                        p.clone(),
                        self.state.revocations.clone(),
                        route.name.clone(),
                    );
                }
            }
        }
        if let Some(route) = ctx.route.as_ref().filter(|r| r.mcp.filter_tools_list) {
            // Every answer on a filter route is judged, whatever the request was.
            let (judge, refused) = lists::Judge::start(resp, head_request, ctx.request_id.clone());
            if let Some(why) = refused {
                metrics::answer_refused(&route.name, why.reason());
            }
            ctx.judge = Some(judge);
        }
        // Callers still on API keys learn that they are deprecated, and where OAuth is.
        if let (Some(route), Some(p)) = (ctx.route.as_ref(), ctx.principal.as_ref()) {
            if p.method == crate::principal::AuthMethod::ApiKey {
                if let Some(d) = &route.deprecation {
                    d.apply(resp);
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        // A stream may not outlive its token (plus the route's grace), nor its revocation. The
        // watchdog ends an idle one; this check catches the first piece after the deadline.
        // (A stream ended for a refused answer is not failed here: the pieces queued with its
        // error event must still go out; the judge drops what follows.)
        if let Some(why) = ctx
            .watchdog
            .as_ref()
            .and_then(|w| w.closed())
            .filter(|w| *w != streams::Closed::Refused)
        {
            return Err(closing(why));
        }
        if let (Some(p), Some(route)) = (ctx.principal.as_ref(), ctx.route.as_ref()) {
            let now = crate::clock::now_unix();
            let first = |why| ctx.watchdog.as_ref().is_none_or(|w| w.close(why));
            if now > p.exp + p.skew + route.stream_expiry_grace {
                if first(streams::Closed::Expired) {
                    metrics::stream_closed_expired(&route.name);
                }
                return Err(closing(streams::Closed::Expired));
            }
            let generation = self.state.revocations.generation();
            if generation != ctx.revocation_gen {
                ctx.revocation_gen = generation;
                if self.state.revocations.revoked(p, now).is_some() {
                    if first(streams::Closed::Revoked) {
                        metrics::stream_closed_revoked(&route.name);
                    }
                    return Err(closing(streams::Closed::Revoked));
                }
            }
        }
        if let (Some(judge), Some(route)) = (ctx.judge.as_mut(), ctx.route.as_ref()) {
            let p = ctx.principal.as_deref();
            let keep = |name: &str| policy::tool_visible(route, p, name);
            let (flow, refused) = judge.body(body, end_of_stream, &keep);
            if let Some(why) = refused {
                metrics::answer_refused(&route.name, why.reason());
            }
            if flow == lists::Flow::End {
                // The error event goes out with this piece; then the stream ends (without a
                // watchdog, it only falls silent: the judge drops everything after).
                if let Some(w) = ctx.watchdog.as_ref() {
                    w.close(streams::Closed::Refused);
                }
            }
        }
        if end_of_stream {
            // Disarm before pingora may pool the upstream connection.
            ctx.watchdog = None;
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora_core::Error>, ctx: &mut Ctx) {
        crate::connections::request_done(session.as_ref());
        let Some(route) = ctx.route.as_ref() else {
            return;
        };
        if !ctx.audited {
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let decision_us = match (ctx.started, ctx.decided) {
            (Some(s), Some(d)) => (d - s).as_micros() as u64,
            _ => 0,
        };
        if ctx.refused.is_none() {
            if let Some(d) = ctx.decided {
                route.metrics.upstream(d.elapsed().as_secs_f64());
            }
        }
        if !crate::audit::enabled() {
            return;
        }
        let p = ctx.principal.as_deref();
        let token = ctx.token.as_ref().map(hash_prefix);
        let upstream_error = e.map(|e| e.to_string());
        let req = session.req_header();
        // One line per auth decision: what was decided, why, and for whom. Never a token.
        crate::audit::write(&crate::audit::Record {
            route: &route.name,
            method: req.method.as_str(),
            path: if ctx.path.is_empty() {
                req.uri.path()
            } else {
                &ctx.path
            },
            decision: if ctx.refused.is_some() {
                "deny"
            } else {
                "allow"
            },
            reason: ctx.refused.as_ref().map_or("ok", |r| r.reason().as_str()),
            description: ctx.refused.as_ref().map(|r| r.description()),
            status,
            auth_method: p.map(|p| p.method.as_str()),
            issuer: p.map(|p| &*p.issuer_name).filter(|n| !n.is_empty()),
            subject: p.and_then(|p| p.subject.as_deref()),
            client_id: p.and_then(|p| p.client_id.as_deref()),
            token: token.as_deref(),
            dpop_jkt: ctx.dpop_jkt.as_deref(),
            mcp_method: ctx.mcp_op.as_ref().map(|o| o.method()),
            mcp_name: ctx.mcp_op.as_ref().and_then(|o| o.name()),
            decision_us,
            upstream_error: upstream_error.as_deref(),
        });
    }
}
