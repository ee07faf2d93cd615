//! `impl ProxyHttp`: sequences the phases of the request flow and nothing else.
//!
//! listener → routing (host, path, metadata) → credentials → token → policy →
//! identity headers → upstream. Every decision is a plain function in its own module;
//! every refusal is rendered by `error::Refusal`. The decision is made in
//! `request_filter`, before pingora connects upstream, so a refused request sends
//! nothing upstream, not even headers; the body is never read for that decision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

use crate::auth::{hash_prefix, token_hash, Principal, TokenHash};
use crate::config::{AuthMode, Config, Route};
use crate::credentials::{self, Credentials};
use crate::error::{response_header, Refusal};
use crate::routing::{self, Target};
use crate::state::{InFlight, Snapshot};
use crate::{identity, metrics, policy, Gateway};

/// Per-request state, carried across phases.
#[derive(Default)]
pub struct Ctx {
    config: Option<Arc<Config>>,
    route: Option<Arc<Route>>,
    path: String,
    principal: Option<Arc<Principal>>,
    /// Short hash of the presented token, for the audit line (never the token).
    token: Option<TokenHash>,
    /// `Some(reason)` when refused.
    refused: Option<&'static str>,
    /// Set for requests that made an auth decision (not metadata, not unrouted).
    audited: bool,
    started: Option<Instant>,
    decided: Option<Instant>,
    /// Request body bytes seen so far (for `limits.max_body_bytes` on streamed bodies).
    body_bytes: u64,
    _in_flight: Option<InFlight>,
}

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
        session: &Session,
        token_seen: &mut Option<TokenHash>,
    ) -> std::result::Result<Decision, (Refusal, Option<Arc<Route>>)> {
        let req = session.req_header();
        let target = routing::classify(&snapshot.config, req).map_err(|r| (r, None))?;
        let (route, path) = match target {
            Target::Metadata(route) => {
                let (h, b) = metadata_response(&route, req.method == http::Method::HEAD);
                return Ok(Decision::Respond(Box::new(h), b, true));
            }
            Target::MetadataPreflight => {
                let (h, b) = preflight_response();
                return Ok(Decision::Respond(Box::new(h), b, true));
            }
            Target::Route { route, path } => (route, path),
        };
        if route.auth == AuthMode::None {
            return Ok(Decision::Forward {
                route,
                path,
                principal: None,
            });
        }
        let creds = credentials::extract(&req.headers, req.uri.query())
            .map_err(|e| (Refusal::Credentials(e), Some(route.clone())))?;
        let token = match creds {
            Credentials::None => return Err((Refusal::NoCredentials, Some(route))),
            Credentials::Bearer(t) => t,
        };
        let hash = token_hash(token);
        *token_seen = Some(hash);
        let principal = match self
            .state
            .auth
            .authenticate(snapshot, &route, token, &hash)
            .await
        {
            Ok(p) => p,
            Err(r) => return Err((r, Some(route))),
        };
        policy::authorize(&route, &principal).map_err(|r| (r, Some(route.clone())))?;
        Ok(Decision::Forward {
            route,
            path,
            principal: Some(principal),
        })
    }
}

fn metadata_response(route: &Route, head: bool) -> (ResponseHeader, Bytes) {
    let body = route.metadata_body.clone();
    let mut h = response_header(200);
    let _ = h.insert_header("content-type", "application/json");
    let _ = h.insert_header("content-length", body.len().to_string());
    let _ = h.insert_header("access-control-allow-origin", "*");
    let _ = h.insert_header("cache-control", "public, max-age=300");
    (h, if head { Bytes::new() } else { body })
}

fn preflight_response() -> (ResponseHeader, Bytes) {
    let mut h = response_header(204);
    let _ = h.insert_header("access-control-allow-origin", "*");
    let _ = h.insert_header("access-control-allow-methods", "GET, HEAD, OPTIONS");
    let _ = h.insert_header(
        "access-control-allow-headers",
        "mcp-protocol-version, content-type",
    );
    let _ = h.insert_header("access-control-max-age", "86400");
    let _ = h.insert_header("content-length", "0");
    (h, Bytes::new())
}

async fn respond(session: &mut Session, header: Box<ResponseHeader>, body: Bytes, keepalive: bool) {
    if keepalive {
        if session
            .write_response_header(header, body.is_empty())
            .await
            .is_ok()
            && !body.is_empty()
        {
            let _ = session.write_response_body(Some(body), true).await;
        }
    } else {
        // A refusal closes the connection: any unread request body is never parsed.
        let _ = session.as_mut().write_error_response(*header, body).await;
    }
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
        let decision = self.decide(&snapshot, session, &mut ctx.token).await;
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
                respond(session, h, b, keepalive).await;
                Ok(true)
            }
            Err((refusal, route)) => {
                let reason = refusal.reason();
                match &route {
                    Some(r) => r.metrics.deny(reason, seconds),
                    None => metrics::UNROUTED.deny(reason, seconds),
                }
                let (h, b) = refusal.render(route.as_deref());
                ctx.audited = route.is_some();
                ctx.refused = Some(refusal.description());
                ctx.route = route;
                respond(session, Box::new(h), b, false).await;
                Ok(true)
            }
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
            if ctx.body_bytes > config.max_body_bytes {
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
            &config.public,
        );
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora_core::Error>, ctx: &mut Ctx) {
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
        let p = ctx.principal.as_deref();
        let token = ctx.token.as_ref().map(hash_prefix);
        // One line per auth decision: what was decided, why, and for whom. Never a token.
        tracing::info!(
            target: "mcpgate::audit",
            route = %route.name,
            method = %session.req_header().method,
            path = if ctx.path.is_empty() { session.req_header().uri.path() } else { &ctx.path },
            decision = if ctx.refused.is_some() { "deny" } else { "allow" },
            reason = ctx.refused.unwrap_or("ok"),
            status,
            issuer = p.map(|p| &*p.issuer_name),
            subject = p.and_then(|p| p.subject.as_deref()),
            client_id = p.and_then(|p| p.client_id.as_deref()),
            token = token.as_deref(),
            decision_us,
            upstream_error = e.map(|e| e.to_string()),
        );
    }
}
