//! `impl ProxyHttp`: sequences the steps of the request flow and nothing else.
//!
//! listener → route → origin → credentials → token → principal → DPoP → session → policy
//! → body size → identity → upstream credential → upstream. Each decision is a plain function in [`steps`] (over
//! headers, method, path, body bytes and the part of the route it reads); every refusal is
//! rendered by `respond`. The decision is made in `request_filter`, before pingora connects
//! upstream, so a refused request sends nothing upstream, not even headers. The body is
//! read for that decision only when the policy step asks for it ([`body`]: MCP policy
//! routes, mirrored MCP headers, small HTTP/2 bodies).

pub mod body;
pub mod steps;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

use crate::auth::dpop;
use crate::auth::AuthMode;
use crate::config::{Config, Route};
use crate::connections::RequestLimits;
use crate::error::{Reason, Refusal};
use crate::identity::UpstreamRequest;
use crate::mcp::body::{Calls, Op};
use crate::mcp::lists;
use crate::mcp::shape::Plan;
use crate::mcp::view::{CallNotes, CallerView, Change};
use crate::principal::{hash_prefix, AuthMethod, Principal, TokenHash};
use crate::quota::streams::Slot;
use crate::respond;
use crate::routing::cors::{self, Cors};
use crate::routing::Target;
use crate::state::{GatewayState, InFlight, Snapshot};
use crate::upstream_auth::Mode;
use crate::{metrics, streams};

/// Deadline of the TCP connection to an upstream.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of the TCP and TLS connection to an upstream together.
const UPSTREAM_TOTAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pingora proxy application.
pub struct Gateway {
    pub state: Arc<GatewayState>,
    /// What clients hold (shared with the listener's connection guard): each request being
    /// served takes its places here.
    pub table: Arc<crate::connections::Table>,
}

/// What was decided to forward.
struct Forward {
    /// The normalized path that was routed and authorized.
    path: String,
    principal: Option<Arc<Principal>>,
    /// What the upstream receives (identity step).
    upstream: UpstreamRequest,
    /// A slot of the route's `streams_per_subject`, held until the answer is known complete
    /// or ends (dropped with the context however the exchange ends).
    slot: Option<Slot>,
}

/// The audit line's facts, gathered across phases.
#[derive(Default)]
struct Audit {
    started: Option<Instant>,
    decided: Option<Instant>,
    /// Set for requests that made an auth decision (not metadata, not unrouted).
    audited: bool,
    /// Short hash of the presented token, for the audit line (never the token).
    token: Option<TokenHash>,
    /// `Some(refusal)` when refused (its reason and description go to the audit line).
    refused: Option<Refusal>,
    /// Thumbprint of the DPoP proof key.
    dpop_jkt: Option<String>,
    /// The MCP method and name of an inspected single-message request.
    mcp_op: Option<Op>,
    /// Short hash of the credential the upstream received (`upstream_auth`).
    upstream_credential: Option<Arc<str>>,
    /// The verified principal, kept for the audit line of a later refusal too.
    principal: Option<Arc<Principal>>,
    /// The gateway's own answer to a forwarded request the upstream failed (502, 504...).
    failure: Option<Refusal>,
    /// `X-Request-Id`: the client's when sane, else generated (`observe::request_id`).
    request_id: Option<Box<str>>,
}

/// What the request looked like, for later phases.
struct RequestState {
    /// The request used the DPoP authorization scheme (errors go on the DPoP challenge).
    dpop_used: bool,
    /// The allowed `Origin` of a browser's request, echoed on every response of the route.
    cors_origin: Option<http::HeaderValue>,
    /// The body, when it was read (and any `100 Continue` answered) before forwarding: it
    /// goes upstream whole in place of pingora's retry buffer.
    inspected: body::Inspected,
    /// Request body bytes seen so far (for `limits.max_body_bytes` on streamed bodies).
    body_bytes: u64,
    /// The JSON-RPC id of a single-message request, for an error written in its answer's place.
    request_id: Option<Box<str>>,
    /// The request is a single `tools/list` on an inspecting route: its answer teaches the
    /// catalog the tools' schemas and definitions.
    lists_tools: bool,
    /// The request holds a `tools/call` (for structured denials).
    calls_tool: bool,
    /// When the whole request body must have arrived (`limits.request_body_timeout_seconds`
    /// after the head).
    body_deadline: tokio::time::Instant,
    /// The places this request holds against the connection caps, freed with the context.
    _places: Option<crate::connections::Slot>,
}

impl Default for RequestState {
    fn default() -> Self {
        RequestState {
            dpop_used: false,
            cors_origin: None,
            inspected: body::Inspected::default(),
            body_bytes: 0,
            request_id: None,
            lists_tools: false,
            calls_tool: false,
            body_deadline: tokio::time::Instant::now(),
            _places: None,
        }
    }
}

/// The way back.
#[derive(Default)]
struct ResponseState {
    /// The upstream connection (HTTP/1.x), for the watchdog of a response stream.
    upstream_fd: Option<std::os::fd::RawFd>,
    /// Ends this response stream at its token's expiry or revocation, or when `judge`
    /// refuses it mid-way.
    watchdog: Option<streams::Watchdog>,
    /// The judgment of the answer on a route that filters lists or pins tools, or the
    /// reading of a `tools/list` answer to learn its tools.
    judge: Option<lists::Judge>,
    /// The revocation list generation the principal was last checked against (a stream
    /// re-checks when it changes).
    revocation_gen: u64,
    /// The upstream's response header arrived (the answer is the upstream's).
    from_upstream: bool,
    /// An open-ended answer, counted in `mcpgate_streams_open` while it lasts.
    stream: Option<metrics::Held>,
}

/// Per-request state, carried across phases.
#[derive(Default)]
pub struct Ctx {
    config: Option<Arc<Config>>,
    /// The route the request was forwarded or refused on.
    route: Option<Arc<Route>>,
    forward: Option<Forward>,
    audit: Audit,
    request: RequestState,
    response: ResponseState,
    _in_flight: Option<InFlight>,
    _in_flight_gauge: Option<metrics::Held>,
}

impl Ctx {
    fn principal(&self) -> Option<&Arc<Principal>> {
        self.forward.as_ref().and_then(|f| f.principal.as_ref())
    }
}

/// What `request_filter` decided.
enum Decision {
    Forward(Arc<Route>, Forward),
    Respond(ResponseHeader, Bytes),
}

/// A refusal, and the route it was made on (its challenge, CORS and metrics).
type Refused = (Refusal, Option<Arc<Route>>);

impl Gateway {
    /// Decide a request from its head (and, where the policy asks, its body).
    async fn decide(
        &self,
        snapshot: &Snapshot,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> std::result::Result<Decision, Refused> {
        let config = &snapshot.config;
        // A CORS preflight never has a body; an OPTIONS with one is not answered as one.
        let body_empty = session.req_header().method != http::Method::OPTIONS
            || session.as_mut().is_body_empty();
        let req = session.req_header();
        let (index, path) = match steps::route(config, req).map_err(|r| (r, None))? {
            Target::Metadata(i) => {
                let head = req.method == http::Method::HEAD;
                let (h, b) = respond::metadata(&config.routes[i].resource.document, head);
                return Ok(Decision::Respond(h, b));
            }
            Target::MetadataPreflight => {
                let (h, b) = respond::metadata_preflight();
                return Ok(Decision::Respond(h, b));
            }
            Target::Route { index, path } => (index, path),
        };
        let route = config.routes[index].clone();
        let refuse = |r: Refusal| (r, Some(route.clone()));
        let cors = steps::origin(&route, &req.method, &req.headers, body_empty).map_err(refuse)?;
        ctx.request.cors_origin = cors.origin().cloned();
        if let Cors::Preflight(origin) = &cors {
            let (h, b) = respond::cors_preflight(origin, route.auth.key_header());
            return Ok(Decision::Respond(h, b));
        }
        // From here the request may hold descriptors (an introspection call, the upstream
        // connection, a stream watchdog's duplicate): it takes its places first.
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let places = self
            .table
            .admit_request(client_ip, &config.connections)
            .map_err(|r| refuse(Refusal::Busy(r.cap())))?;
        ctx.request._places = Some(places);
        let principal = if route.auth.mode == AuthMode::None {
            None
        } else {
            match self
                .authenticate(snapshot, &route, &path, session, ctx)
                .await
            {
                Ok(p) => Some(p),
                Err(r) => {
                    self.forget_exchanged(snapshot, &r, ctx).await;
                    return Err(refuse(r));
                }
            }
        };
        let req = session.req_header();
        let upstream = &route.upstream.addr;
        let unplaced = steps::session(
            &self.state.sessions,
            upstream,
            route.unknown_sessions,
            &req.headers,
            principal.as_deref(),
        )
        .map_err(refuse)?;
        if unplaced {
            metrics::session_unknown_forwarded(&route.name);
        }
        let calls = self
            .judge_body(&route, &config.requests, principal.as_deref(), session, ctx)
            .await
            .map_err(refuse)?;
        let req = session.req_header();
        steps::body_size(&config.requests, &req.headers).map_err(refuse)?;
        if !ctx.request.inspected.is_read() && body::h2_body_to_check(session) {
            let b = body::read(session, body::REPLAY_LIMIT, ctx.request.body_deadline)
                .await
                .map_err(refuse)?;
            ctx.request.inspected = body::Inspected::new(b);
        }
        let req = session.req_header();
        let slot = steps::limits(
            &self.state.limiter,
            &route,
            principal.as_deref(),
            calls.as_ref(),
            client_ip,
            &req.headers,
        )
        .await
        .map_err(refuse)?;
        let public = &config.listeners.public;
        let mut upstream = steps::identity(
            &route,
            principal.as_deref(),
            &path,
            req.uri.query(),
            client_ip,
            public,
        )
        .map_err(refuse)?;
        let sent = steps::upstream_credential(
            &snapshot.upstream,
            &self.state.upstream_tokens,
            &route,
            principal.as_ref(),
            &req.headers,
            req.uri.query(),
            ctx.audit.token.as_ref(),
        )
        .await
        .map_err(refuse)?;
        ctx.audit.upstream_credential = match sent {
            Some(s) => {
                upstream.headers.push((s.header, s.value));
                Some(s.hash)
            }
            // `forward`: the client's own token is what the upstream gets.
            None if route.upstream_auth.mode() == Mode::Forward => {
                ctx.audit.token.as_ref().map(|h| Arc::from(hash_prefix(h)))
            }
            None => None,
        };
        let forward = Forward {
            path,
            principal,
            upstream,
            slot,
        };
        Ok(Decision::Forward(route, forward))
    }

    /// Credentials → token → a verified principal that may use this route: revocations,
    /// audience, subject, DPoP (with its one replay lookup, the request path's only Redis
    /// round trip).
    async fn authenticate(
        &self,
        snapshot: &Snapshot,
        route: &Route,
        path: &str,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> std::result::Result<Arc<Principal>, Refusal> {
        let config = &snapshot.config;
        let req = session.req_header();
        ctx.request.dpop_used = steps::dpop_used(&req.headers);
        let creds = steps::credentials(&route.auth, &req.headers, req.uri.query())?;
        let (principal, presented) = steps::token(
            &self.state.auth,
            &snapshot.issuers,
            config.api_keys.as_deref(),
            route,
            creds,
            &mut ctx.audit.token,
        )
        .await?;
        // Verified: whatever refuses it later, the audit line names who it was.
        ctx.audit.principal = Some(principal.clone());
        let now = crate::clock::now_unix();
        ctx.response.revocation_gen = self.state.revocations.generation();
        steps::principal(&self.state.revocations, route, &principal, now)?;
        let checked = steps::dpop(
            &config.dpop,
            route,
            &req.method,
            &req.headers,
            path,
            &principal,
            presented,
            now,
        )?;
        if let Some(c) = checked {
            dpop::check_replay(self.state.replay.as_ref(), &c).await?;
            ctx.audit.dpop_jkt = Some(c.jkt);
        }
        Ok(principal)
    }

    /// A token refused as invalid or revoked (an introspection `active: false` included)
    /// drops what was exchanged for it: the exchanged tokens die with their subject.
    async fn forget_exchanged(&self, snapshot: &Snapshot, r: &Refusal, ctx: &Ctx) {
        let dead = matches!(r.reason(), Reason::InvalidToken | Reason::TokenRevoked);
        if let (true, Some(hash)) = (dead, ctx.audit.token.as_ref()) {
            self.state
                .upstream_tokens
                .forget(hash, snapshot.upstream.exchange_fingerprints())
                .await;
        }
    }

    /// The policy step: read the body when it must be judged, then judge the request.
    /// Returns what the body asks for, when it was read.
    async fn judge_body(
        &self,
        route: &Route,
        limits: &RequestLimits,
        principal: Option<&Principal>,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> std::result::Result<Option<Calls>, Refusal> {
        let body_known_empty = session.as_mut().is_body_empty();
        let req = session.req_header();
        let plan = steps::policy_head(route, &req.method, &req.headers, body_known_empty)?;
        let body = match plan {
            Plan::Forward => None,
            Plan::ReadBody => {
                let b = body::read(
                    session,
                    limits.max_inspected_body_bytes,
                    ctx.request.body_deadline,
                )
                .await?;
                ctx.request.inspected = body::Inspected::new(b.clone());
                Some(b)
            }
        };
        let req = session.req_header();
        let calls = steps::policy(
            route,
            principal,
            &req.method,
            &req.headers,
            body.as_deref(),
            &mut ctx.audit.mcp_op,
        )
        .inspect_err(|_| {
            if let Some((id, calls_tool)) = steps::denied_tool_call(route, body.as_deref()) {
                ctx.request.request_id = id;
                ctx.request.calls_tool = calls_tool;
            }
        })?;
        if let (Some(calls), Some(body)) = (calls.as_ref(), body.as_deref()) {
            ctx.request.request_id = calls.id.clone();
            ctx.request.calls_tool = !calls.batch && matches!(calls.ops[..], [Op::ToolsCall(_)]);
            let notes = steps::tool_calls(route, &self.state.catalog, &req.headers, body, calls)?;
            report_calls(route, &notes);
            ctx.request.lists_tools = !calls.batch && matches!(calls.ops[..], [Op::ToolsList]);
        }
        Ok(calls)
    }

    /// Answer a refusal: count it, render it with the route's challenge and CORS headers.
    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, refused: Refused, seconds: f64) {
        let (refusal, route) = refused;
        match &route {
            Some(r) => r.metrics.deny(refusal.reason(), seconds),
            None => metrics::UNROUTED.deny(refusal.reason(), seconds),
        }
        let challenge = route.as_deref().map(|r| &r.challenge);
        let structured =
            ctx.request.calls_tool && route.as_ref().is_some_and(|r| r.mcp.structured_denials);
        let (mut h, b) = if structured {
            let id = ctx.request.request_id.as_deref();
            respond::tool_refusal(&refusal, challenge, ctx.request.dpop_used, id)
        } else {
            respond::refusal(&refusal, challenge, ctx.request.dpop_used)
        };
        if route.is_some() {
            cors::decorate(&mut h, ctx.request.cors_origin.as_ref());
        }
        tag(&mut h, ctx);
        ctx.audit.audited = route.is_some();
        let late_body = refusal == Refusal::BodyTimeout;
        ctx.audit.refused = Some(refusal);
        ctx.route = route;
        if late_body {
            respond::answer_closing(session.as_mut(), h, b).await;
        } else {
            respond::answer(session.as_mut(), h, b).await;
        }
    }

    /// A stream may not outlive its token (plus the route's grace), nor its revocation.
    fn check_stream(&self, ctx: &mut Ctx) -> Result<()> {
        // (A stream ended for a refused answer is not failed here: the pieces queued with its
        // error event must still go out; the judge drops what follows.)
        if let Some(why) = ctx
            .response
            .watchdog
            .as_ref()
            .and_then(|w| w.closed())
            .filter(|w| *w != streams::Closed::Refused)
        {
            return Err(closing(why));
        }
        let (Some(p), Some(route)) = (ctx.principal(), ctx.route.as_ref()) else {
            return Ok(());
        };
        let now = crate::clock::now_unix();
        let first = |why| ctx.response.watchdog.as_ref().is_none_or(|w| w.close(why));
        if now > p.exp + p.skew + route.stream_expiry_grace {
            if first(streams::Closed::Expired) {
                metrics::stream_closed_expired(&route.name);
            }
            return Err(closing(streams::Closed::Expired));
        }
        let generation = self.state.revocations.generation();
        if generation != ctx.response.revocation_gen {
            let revoked = self.state.revocations.revoked(p, now).is_some();
            if revoked && first(streams::Closed::Revoked) {
                metrics::stream_closed_revoked(&route.name);
            }
            ctx.response.revocation_gen = generation;
            if revoked {
                return Err(closing(streams::Closed::Revoked));
            }
        }
        Ok(())
    }

    /// Give an open-ended answer its watchdog (a stream may not outlive its token, even
    /// idle; a filtered one may be ended early).
    fn watch_stream(&self, ctx: &mut Ctx, resp: &ResponseHeader, head_request: bool) {
        let (Some(route), Some(fd)) = (ctx.route.as_ref(), ctx.response.upstream_fd) else {
            return;
        };
        let principal = ctx.forward.as_ref().and_then(|f| f.principal.clone());
        let filtered = route.mcp.judges_answers();
        if (principal.is_none() && !filtered) || !streams::is_open_ended(resp, head_request) {
            return;
        }
        if ctx.response.watchdog.is_none() {
            ctx.response.watchdog = streams::Watchdog::new(fd);
        }
        if let (Some(w), Some(p)) = (ctx.response.watchdog.as_mut(), principal) {
            let until = p.exp + p.skew + route.stream_expiry_grace;
            w.watch(until, p, self.state.revocations.clone(), route.name.clone());
        }
    }

    /// The audit line of a request that made an auth decision.
    fn audit(&self, session: &Session, e: Option<&pingora_core::Error>, ctx: &Ctx, route: &Route) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let audit = &ctx.audit;
        let decision_us = match (audit.started, audit.decided) {
            (Some(s), Some(d)) => (d - s).as_micros() as u64,
            _ => 0,
        };
        let p = audit.principal.as_deref();
        let token = audit.token.as_ref().map(hash_prefix);
        let outcome = audit.refused.as_ref().or(audit.failure.as_ref());
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let mut client_buf = [0u8; 48];
        let client = client.and_then(|ip| ip_str(ip, &mut client_buf));
        // Its text may quote the raw upstream bytes or a request target's query.
        let upstream_error = e.map(|e| crate::logs::redact_message(&e.to_string()));
        let req = session.req_header();
        let path = ctx.forward.as_ref().map_or(req.uri.path(), |f| &f.path);
        let description = outcome.map(|r| r.description());
        // One line per auth decision: what was decided, why, and for whom. Never a token.
        crate::audit::write(&crate::audit::Record {
            route: &route.name,
            method: req.method.as_str(),
            path,
            decision: if audit.refused.is_some() {
                "deny"
            } else {
                "allow"
            },
            reason: outcome.map_or("ok", |r| r.reason().as_str()),
            description: description.as_deref(),
            limit: audit
                .refused
                .as_ref()
                .and_then(|r| r.throttle())
                .map(|t| &*t.limit),
            status,
            auth_method: p.map(|p| p.method.as_str()),
            issuer: p.map(|p| &*p.issuer_name).filter(|n| !n.is_empty()),
            subject: p.and_then(|p| p.subject.as_deref()),
            client_id: p.and_then(|p| p.client_id.as_deref()),
            token: token.as_deref(),
            dpop_jkt: audit.dpop_jkt.as_deref(),
            mcp_method: audit.mcp_op.as_ref().map(|o| o.method()),
            mcp_name: audit.mcp_op.as_ref().and_then(|o| o.name()),
            decision_us,
            upstream_error: upstream_error.as_deref(),
            upstream_auth: Some(route.upstream_auth.mode())
                .filter(|m| *m != Mode::None)
                .map(Mode::as_str),
            upstream_credential: audit.upstream_credential.as_deref(),
            request_id: audit.request_id.as_deref(),
            client,
            user_agent: crate::observe::user_agent(&req.headers),
        });
    }
}

/// Count and log what [`steps::tool_calls`] let through unchecked.
fn report_calls(route: &Route, notes: &CallNotes) {
    if notes.params_unchecked {
        metrics::mcp_params_unchecked(&route.name);
    }
    for tool in &notes.changed {
        metrics::tool_definition_changed(&route.name, "report");
        tracing::warn!(target: "mcpgate::audit", route = %route.name, tool = %tool,
            "tools/call of a tool whose definition differs from its pin (pin_tools mode report): forwarded");
    }
}

/// Count and log a tool definition that differs from its pin, seen in a list.
fn report_change(route: &Route, c: &Change) {
    let mode = route
        .mcp
        .pins
        .as_ref()
        .map_or("report", |p| p.mode.as_str());
    metrics::tool_definition_changed(&route.name, mode);
    tracing::warn!(target: "mcpgate::audit", route = %route.name, tool = %c.tool,
        verdict = ?c.verdict, definition = %crate::mcp::pins::to_hex(&c.seen), mode,
        "a tools/list answer gives a tool definition other than its pin");
}

/// The request id on a response the gateway writes itself.
fn tag(h: &mut ResponseHeader, ctx: &Ctx) {
    if let Some(id) = ctx.audit.request_id.as_deref() {
        respond::set_header(h, crate::observe::REQUEST_ID, id, false);
    }
}

/// `ip` in text, in `buf` (no allocation on the audit path).
fn ip_str(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> Option<&str> {
    use std::io::Write as _;
    let mut w = &mut buf[..];
    write!(w, "{ip}").ok()?;
    let n = 48 - w.len();
    std::str::from_utf8(&buf[..n]).ok()
}

/// The error that makes pingora end a response stream without its clean end.
fn closing(why: streams::Closed) -> Box<pingora_core::Error> {
    pingora_core::Error::explain(pingora_core::ErrorType::InternalError, why.describe())
}

/// A phase that needs the decision ran without one: an invariant broken, failed as 500.
fn undecided() -> Box<pingora_core::Error> {
    pingora_core::Error::explain(pingora_core::ErrorType::InternalError, "no route decided")
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let started = Instant::now();
        ctx.audit.started = Some(started);
        ctx._in_flight = Some(self.state.enter());
        let snapshot = self.state.snapshot.load_full();
        ctx.request.body_deadline = tokio::time::Instant::from_std(started)
            + snapshot.config.connections.request_body_timeout;
        let decision = self.decide(&snapshot, session, ctx).await;
        ctx.config = Some(snapshot.config.clone());
        let decided = Instant::now();
        ctx.audit.decided = Some(decided);
        let seconds = (decided - started).as_secs_f64();
        match decision {
            Ok(Decision::Forward(route, forward)) => {
                route.metrics.allow(seconds);
                ctx.audit.audited = true;
                ctx.route = Some(route);
                ctx.forward = Some(forward);
                Ok(false)
            }
            Ok(Decision::Respond(mut h, b)) => {
                tag(&mut h, ctx);
                // Every answer the gateway writes itself goes through `respond::answer`,
                // which also disposes of the unread request body.
                respond::answer(session.as_mut(), h, b).await;
                Ok(true)
            }
            Err(refused) => {
                self.refuse(session, ctx, refused, seconds).await;
                Ok(true)
            }
        }
    }

    /// What pingora's own error lines say about a request: its method and path, never the
    /// query (it may carry `access_token` or a signed URL's secret) nor the host.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        let path = ctx
            .forward
            .as_ref()
            .map_or_else(|| req.uri.path(), |f| f.path.as_str());
        format!("{} {}", req.method, path)
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        // HTTP/1.1 requests pipelined behind this one are answered in order.
        session.as_mut().set_pipelining_enabled(true);
        ctx._in_flight_gauge = Some(metrics::request_in_flight());
        ctx.audit.request_id = Some(crate::observe::request_id(&session.req_header().headers));
        crate::connections::request_started(session.as_ref());
        // A client that stops reading its answer is cut after this long without progress
        // (HTTP/1.1 and HTTP/2: the connection's, or the stream's, writes).
        let send_timeout = self.state.snapshot.load().config.connections.send_timeout;
        session.as_mut().set_write_timeout(Some(send_timeout));
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
        let body_late = ctx.response.watchdog.as_ref().and_then(|w| w.closed())
            == Some(streams::Closed::BodyTimeout);
        let refusal = if body_late {
            // The exchange was cut because the body missed its deadline (whatever error
            // pingora saw on the upstream side as a result).
            Some(crate::error::Refusal::BodyTimeout)
        } else {
            respond::for_failure(e)
        };
        let Some(refusal) = refusal else {
            return pingora_proxy::FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let challenge = ctx.route.as_deref().map(|r| &r.challenge);
        let (mut h, b) = respond::refusal(&refusal, challenge, ctx.request.dpop_used);
        if ctx.route.is_some() {
            cors::decorate(&mut h, ctx.request.cors_origin.as_ref());
        }
        tag(&mut h, ctx);
        if ctx.audit.audited && ctx.audit.refused.is_none() {
            ctx.audit.failure = Some(refusal.clone());
        }
        // The upstream exchange broke off: never reuse this connection.
        session.as_mut().set_keepalive(None);
        if refusal == crate::error::Refusal::BodyTimeout {
            // Do not wait any longer for the body that missed its deadline.
            respond::answer_closing(session.as_mut(), h, b).await;
        } else {
            respond::answer(session.as_mut(), h, b).await;
        }
        pingora_proxy::FailToProxy {
            error_code: refusal.status(),
            can_reuse_downstream: false,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Err(undecided());
        };
        let up = &route.upstream.addr;
        let addr = self.state.resolver.resolve(up).await.map_err(|e| {
            pingora_core::Error::explain(pingora_core::ErrorType::ConnectNoRoute, e)
        })?;
        let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
        if let Some(t) = &route.upstream.tls {
            peer.options.ca = t.ca.clone();
            peer.client_cert_key = t.client.clone();
        }
        peer.options.connection_timeout = Some(UPSTREAM_CONNECT_TIMEOUT);
        peer.options.total_connection_timeout = Some(UPSTREAM_TOTAL_CONNECT_TIMEOUT);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        // No read timeout: SSE and streamable HTTP responses may idle between events.
        Ok(Box::new(peer))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if end_of_stream {
            if let Some(w) = ctx.response.watchdog.as_mut() {
                w.body_done();
            }
        }
        // A body read before the decision goes upstream whole (it was bounded when read).
        if ctx.request.inspected.substitute(body) {
            return Ok(());
        }
        if !end_of_stream && tokio::time::Instant::now() >= ctx.request.body_deadline {
            // A body trickled in pieces: its deadline is for the whole body.
            metrics::connection_timeout("request_body");
            return Err(pingora_core::Error::explain(
                pingora_core::ErrorType::HTTPStatus(408),
                "request body not received within limits.request_body_timeout_seconds",
            ));
        }
        // Content-Length over the limit was refused before connecting; this catches
        // chunked bodies that grow past it (the upstream sees a truncated request, the
        // client the 413 of `respond::for_failure`).
        if let (Some(b), Some(config)) = (body.as_ref(), ctx.config.as_ref()) {
            ctx.request.body_bytes += b.len() as u64;
            if ctx.request.body_bytes > config.requests.max_body_bytes {
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
        _session: &mut Session,
        upstream_request: &mut pingora_http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(route), Some(forward)) = (ctx.route.as_ref(), ctx.forward.as_ref()) else {
            return Err(undecided());
        };
        if let Err(e) =
            crate::identity::apply(upstream_request, &route.forwarding, &forward.upstream)
        {
            // Never forward without the identity the gateway decided: fail it (500).
            tracing::error!(route = %route.name, error = %e, "the upstream request could not be prepared; refusing");
            return Err(pingora_core::Error::explain(
                pingora_core::ErrorType::InternalError,
                "the upstream request could not be prepared",
            ));
        }
        if let Some(id) = ctx.audit.request_id.as_deref() {
            upstream_request.insert_header(crate::observe::REQUEST_ID, id)?;
        }
        if ctx.request.inspected.is_read() {
            // We already answered 100 Continue and hold the whole body.
            upstream_request.remove_header(&http::header::EXPECT);
        }
        if route.mcp.judges_answers() || ctx.request.lists_tools {
            // The answer is read (to be filtered, or to learn its tools): ask for it unencoded.
            upstream_request.remove_header(&http::header::ACCEPT_ENCODING);
        }
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        fd: std::os::fd::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An HTTP/1.x connection carries this response alone until it ends.
        ctx.response.upstream_fd =
            (peer.options.alpn == pingora_core::protocols::ALPN::H1).then_some(fd);
        // A body still to stream: its whole-body deadline cuts the exchange, even while the
        // client sends nothing at all.
        if !session.as_mut().is_body_done() {
            if let Some(fd) = ctx.response.upstream_fd {
                if ctx.response.watchdog.is_none() {
                    ctx.response.watchdog = streams::Watchdog::new(fd);
                }
                if let Some(w) = ctx.response.watchdog.as_mut() {
                    w.body_deadline(ctx.request.body_deadline);
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Ok(());
        };
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // The gateway refuses every `Upgrade` request, so a 101 is an answer to a request
            // that asked for none: what follows it is not HTTP the gateway could judge.
            // Failing here sends nothing of it; the client gets the 502 of `fail_to_proxy`.
            let mut e = pingora_core::Error::explain(
                pingora_core::ErrorType::InvalidHTTPHeader,
                "the upstream switched protocols (101) without an upgrade request",
            );
            e.esource = pingora_core::ErrorSource::Upstream;
            return Err(e);
        }
        cors::decorate(resp, ctx.request.cors_origin.as_ref());
        if let Some(id) = ctx.audit.request_id.as_deref() {
            respond::set_header(resp, crate::observe::REQUEST_ID, id, false);
        }
        let head_request = session.req_header().method == http::Method::HEAD;
        if !ctx.response.from_upstream && resp.status.as_u16() >= 200 {
            ctx.response.from_upstream = true;
            if let Some(d) = ctx.audit.decided {
                route.metrics.ttfb(d.elapsed().as_secs_f64());
            }
            if streams::is_open_ended(resp, head_request) {
                ctx.response.stream = Some(metrics::stream_open());
            }
        }
        if ctx.audit.refused.is_none() {
            if let Some(sid) = resp
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
            {
                let p = ctx.principal().map(|p| &**p);
                // (The request's id passed `steps::session`: one unambiguous value.)
                let presented = session
                    .req_header()
                    .headers
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok());
                self.state
                    .sessions
                    .bind(&route.upstream.addr, sid, presented, p);
            }
        }
        if !streams::is_open_ended(resp, head_request) {
            // A complete answer is not an open stream: its `streams_per_subject` slot is free.
            if let Some(f) = ctx.forward.as_mut() {
                f.slot = None;
            }
        }
        self.watch_stream(ctx, resp, head_request);
        if route.mcp.judges_answers() {
            // Every answer on a filter route is judged, whatever the request was.
            let id = ctx.request.request_id.clone();
            let (judge, refused) = lists::Judge::start(resp, head_request, id);
            if let Some(why) = refused {
                metrics::answer_refused(&route.name, why.reason());
            }
            ctx.response.judge = Some(judge);
        } else if ctx.request.lists_tools {
            ctx.response.judge = Some(lists::Judge::learn(resp, head_request));
        }
        // Callers still on API keys learn that they are deprecated, and where OAuth is.
        if ctx
            .principal()
            .is_some_and(|p| p.method == AuthMethod::ApiKey)
        {
            if let Some(d) = &route.auth.deprecation {
                d.apply(resp);
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
        // The watchdog ends an idle stream; this catches the first piece after the deadline.
        self.check_stream(ctx)?;
        if let (Some(judge), Some(route)) = (ctx.response.judge.as_mut(), ctx.route.as_ref()) {
            let view = CallerView {
                required: &route.auth.scopes,
                policy: &route.mcp,
                principal: ctx.forward.as_ref().and_then(|f| f.principal.as_deref()),
                catalog: &self.state.catalog,
                server: &route.server,
                learn: ctx.request.lists_tools,
                now: crate::clock::now_unix(),
                changes: Default::default(),
            };
            let (flow, refused) = judge.body(body, end_of_stream, &view);
            if let Some(why) = refused {
                metrics::answer_refused(&route.name, why.reason());
            }
            for c in view.changes.into_inner() {
                report_change(route, &c);
            }
            if flow == lists::Flow::End {
                // The error event goes out with this piece; then the stream ends (without a
                // watchdog, it only falls silent: the judge drops everything after).
                if let Some(w) = ctx.response.watchdog.as_ref() {
                    w.close(streams::Closed::Refused);
                }
            }
        }
        if end_of_stream {
            // Disarm before pingora may pool the upstream connection.
            ctx.response.watchdog = None;
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora_core::Error>, ctx: &mut Ctx) {
        crate::connections::request_done(session.as_ref());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let m = ctx
            .route
            .as_deref()
            .map_or(&*metrics::UNROUTED, |r| &r.metrics);
        let source = match ctx.response.from_upstream {
            true => metrics::Source::Upstream,
            false => metrics::Source::Gateway,
        };
        m.response(source, status);
        let Some(route) = ctx.route.clone() else {
            return;
        };
        if !ctx.audit.audited {
            return;
        }
        if ctx.audit.refused.is_none() {
            if let Some(kind) = e.and_then(crate::observe::upstream_error_kind) {
                route.metrics.upstream_error(kind);
            }
            route
                .metrics
                .forwarded(ctx.audit.failure.as_ref().map(|r| r.reason()));
            if let (Some(d), true) = (ctx.audit.decided, ctx.response.from_upstream) {
                let seconds = d.elapsed().as_secs_f64();
                match ctx.response.stream.take() {
                    Some(_) => route.metrics.stream(seconds),
                    None => route.metrics.upstream(seconds),
                }
            }
        }
        if crate::audit::enabled() {
            self.audit(session, e, ctx, &route);
        }
    }
}
