//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and `/revocations` (the
//! revocation list: `POST` to revoke, `GET` to read; both need the admin token). Never
//! served on the public listener (the config refuses the same address for both).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::revocation::{self, AddError};
use crate::GatewayState;

pub struct Admin {
    pub state: Arc<GatewayState>,
}

/// Largest `POST /revocations` body.
const MAX_BODY: usize = 16 * 1024;

fn text(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

fn json(status: u16, v: &serde_json::Value) -> Response<Vec<u8>> {
    text(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error(status: u16, code: &str, description: &str) -> Response<Vec<u8>> {
    json(
        status,
        &serde_json::json!({"error": code, "error_description": description}),
    )
}

/// The `Authorization: Bearer` value, if any.
fn bearer(session: &ServerSession) -> Option<&str> {
    let v = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The whole request body, or the status and reason to refuse it with.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, (u16, &'static str)> {
    let read = async {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err((413, "the body is too large"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(_) => return Err((400, "cannot read the body")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(Err((408, "the body did not arrive in time")))
}

impl Admin {
    async fn revocations(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let config = self.state.config();
        let Some(admin_token) = config.admin_token.as_ref() else {
            return error(
                403,
                "access_denied",
                "revocations are disabled: set admin.token_file",
            );
        };
        let mut authorization = session
            .req_header()
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter();
        if authorization.next().is_some() && authorization.next().is_some() {
            // Which one would an intermediary have checked? Neither is judged.
            let peer = session.client_addr().map(|a| a.to_string());
            tracing::warn!(target: "mcpgate::audit", peer, "admin request refused: Authorization appears more than once");
            return error(
                400,
                "invalid_request",
                "the Authorization header appears more than once",
            );
        }
        if !bearer(session).is_some_and(|t| admin_token.matches(t)) {
            let peer = session.client_addr().map(|a| a.to_string());
            tracing::warn!(target: "mcpgate::audit", peer, "admin request refused: missing or wrong admin token");
            let mut r = error(401, "invalid_token", "the admin token is missing or wrong");
            if let Ok(v) = http::HeaderValue::from_str("Bearer realm=\"mcpgate-admin\"") {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            return r;
        }
        let revocations = &self.state.revocations;
        match session.req_header().method {
            http::Method::GET => {
                let set = revocations.snapshot();
                json(
                    200,
                    &serde_json::json!({
                        "revocations": set.entries(),
                        "shared": revocations.is_shared(),
                        "cache_age_seconds": revocations.age_seconds(),
                    }),
                )
            }
            http::Method::POST => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err((status, why)) => return error(status, "invalid_request", why),
                };
                let r = match revocation::parse_request(&body, crate::clock::now_unix()) {
                    Ok(r) => r,
                    Err(e) => return error(400, "invalid_request", &e),
                };
                let entry = serde_json::to_value(&r).unwrap_or_default();
                let peer = session.client_addr().map(|a| a.to_string());
                match revocations.add(r.clone()).await {
                    Ok(()) => {
                        tracing::info!(
                            target: "mcpgate::audit",
                            peer,
                            kind = r.kind.as_str(),
                            value = %r.value,
                            issuer = r.issuer.as_deref(),
                            expires_at = r.expires_at,
                            reason = r.reason.as_deref(),
                            shared = revocations.is_shared(),
                            "revocation recorded"
                        );
                        json(
                            201,
                            &serde_json::json!({
                                "revocation": entry,
                                "shared": revocations.is_shared(),
                            }),
                        )
                    }
                    Err(AddError::Full) => error(
                        409,
                        "invalid_request",
                        "the revocation list is full (100000 unexpired entries)",
                    ),
                    Err(AddError::Unavailable(e)) => {
                        tracing::error!(error = %e, "cannot record a revocation: Redis cannot answer");
                        let mut resp = error(
                            503,
                            "temporarily_unavailable",
                            "Redis cannot answer: the revocation was not recorded, retry",
                        );
                        resp.headers_mut().insert(
                            http::header::RETRY_AFTER,
                            http::HeaderValue::from_static("1"),
                        );
                        resp
                    }
                }
            }
            _ => {
                let mut r = error(405, "invalid_request", "use GET or POST");
                r.headers_mut().insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, POST"),
                );
                r
            }
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => text(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let not_ready = self.state.unready_issuers();
                if !not_ready.is_empty() {
                    let msg = format!(
                        "not ready: no usable keys for issuer(s) {}\n",
                        not_ready.join(", ")
                    );
                    text(503, "text/plain", msg.into_bytes())
                } else if self.state.redis_unready() {
                    text(
                        503,
                        "text/plain",
                        b"not ready: Redis cannot answer (state.redis.readyz)\n".to_vec(),
                    )
                } else if self.state.revocations_unready() {
                    text(
                        503,
                        "text/plain",
                        b"not ready: the revocation list in Redis diverges from this replica's \
                          copy and is not reconciled yet (state.redis.readyz)\n"
                            .to_vec(),
                    )
                } else {
                    text(200, "text/plain", b"ready\n".to_vec())
                }
            }
            "/metrics" => {
                let snap = self.state.snapshot.load();
                let now = crate::clock::now_unix();
                for (ic, keys) in snap.config.issuers.iter().zip(&snap.keys) {
                    if let Some(fetched) = keys.last_success_unix() {
                        crate::metrics::jwks_age(&ic.name, now - fetched);
                    }
                }
                crate::metrics::revocations_age(self.state.revocations.age_seconds());
                text(200, "text/plain; version=0.0.4", crate::metrics::render())
            }
            "/revocations" => self.revocations(session).await,
            _ => text(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
