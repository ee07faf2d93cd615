//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and `/revocations` (the
//! revocation list: `POST` to revoke, `GET` to read; both need the admin token). Never
//! served on the public listener (the config refuses the same address for both).
//!
//! Every answer is built by `respond` (its JSON errors and `WWW-Authenticate` included);
//! this module only decides which.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::auth::revocation::{self, AddError};
use crate::error::AdminRefusal;
use crate::respond::{admin_json, admin_refusal, admin_text};
use crate::state::GatewayState;

pub struct Admin {
    pub state: Arc<GatewayState>,
}

/// Largest `POST /revocations` body: a revocation is a few short strings.
const MAX_BODY: usize = 16 * 1024;
/// Longest wait for a `POST /revocations` body: it is small and sent at once.
const BODY_TIME: Duration = Duration::from_secs(10);

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

/// The whole request body, or why it is refused.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, AdminRefusal> {
    let read = async {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(AdminRefusal::BodyTooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(_) => return Err(AdminRefusal::BodyUnreadable),
            }
        }
    };
    tokio::time::timeout(BODY_TIME, read)
        .await
        .unwrap_or(Err(AdminRefusal::BodyTimeout))
}

fn peer(session: &ServerSession) -> Option<String> {
    session.client_addr().map(|a| a.to_string())
}

impl Admin {
    /// Whether the request carries the admin token (exactly one `Authorization`).
    fn authorize(&self, session: &ServerSession) -> Result<(), AdminRefusal> {
        let config = self.state.config();
        let Some(admin_token) = config.listeners.admin_token.as_ref() else {
            return Err(AdminRefusal::RevocationsDisabled);
        };
        let mut authorization = session
            .req_header()
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter();
        if authorization.next().is_some() && authorization.next().is_some() {
            // Which one would an intermediary have checked? Neither is judged.
            tracing::warn!(target: "mcpgate::audit", peer = peer(session), "admin request refused: Authorization appears more than once");
            return Err(AdminRefusal::TwoAuthorizations);
        }
        if !bearer(session).is_some_and(|t| admin_token.matches(t)) {
            tracing::warn!(target: "mcpgate::audit", peer = peer(session), "admin request refused: missing or wrong admin token");
            return Err(AdminRefusal::BadToken);
        }
        Ok(())
    }

    async fn revocations(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Err(r) = self.authorize(session) {
            return admin_refusal(&r);
        }
        let answer = match session.req_header().method {
            http::Method::GET => Ok(self.list()),
            http::Method::POST => self.revoke(session).await,
            _ => Err(AdminRefusal::MethodNotAllowed),
        };
        answer.unwrap_or_else(|r| admin_refusal(&r))
    }

    /// `GET /revocations`.
    fn list(&self) -> Response<Vec<u8>> {
        let revocations = &self.state.revocations;
        let set = revocations.snapshot();
        admin_json(
            200,
            &serde_json::json!({
                "revocations": set.entries(),
                "shared": revocations.is_shared(),
                "cache_age_seconds": revocations.age_seconds(),
            }),
        )
    }

    /// `POST /revocations`.
    async fn revoke(&self, session: &mut ServerSession) -> Result<Response<Vec<u8>>, AdminRefusal> {
        let body = read_body(session).await?;
        let r = revocation::parse_request(&body, crate::clock::now_unix())?;
        if let Some(iss) = r.issuer.as_deref() {
            // An `issuer` no token can carry would revoke nothing (a trailing slash, a
            // typo): refused, naming what is configured.
            let snap = self.state.snapshot.load();
            let configured: Vec<&str> = snap.issuers.configs.iter().map(|c| &*c.issuer).collect();
            if !configured.contains(&iss) {
                let mut names: Vec<&str> = configured.clone();
                names.dedup();
                return Err(AdminRefusal::InvalidRevocation(format!(
                    "issuer is not a configured issuer (configured: {})",
                    serde_json::to_string(&names).unwrap_or_default()
                )));
            }
        }
        let entry = serde_json::to_value(&r).unwrap_or_default();
        let revocations = &self.state.revocations;
        match revocations.add(r.clone()).await {
            Ok(()) => {
                tracing::info!(
                    target: "mcpgate::audit",
                    peer = peer(session),
                    kind = r.kind.as_str(),
                    value = %r.value,
                    issuer = r.issuer.as_deref(),
                    expires_at = r.expires_at,
                    reason = r.reason.as_deref(),
                    shared = revocations.is_shared(),
                    "revocation recorded"
                );
                Ok(admin_json(
                    201,
                    &serde_json::json!({"revocation": entry, "shared": revocations.is_shared()}),
                ))
            }
            Err(AddError::Full) => Err(AdminRefusal::ListFull),
            Err(AddError::Unavailable(e)) => {
                tracing::error!(error = %e, "cannot record a revocation: Redis cannot answer");
                Err(AdminRefusal::StoreUnavailable)
            }
        }
    }

    /// `GET /readyz`.
    fn readyz(&self) -> Response<Vec<u8>> {
        let not_ready = self.state.unready_issuers();
        let why = if !not_ready.is_empty() {
            format!(
                "not ready: no usable keys for issuer(s) {}\n",
                not_ready.join(", ")
            )
        } else if self.state.redis_unready() {
            "not ready: Redis cannot answer (state.redis.readyz)\n".to_string()
        } else if self.state.revocations_unready() {
            "not ready: the revocation list in Redis diverges from this replica's \
             copy and is not reconciled yet (state.redis.readyz)\n"
                .to_string()
        } else {
            return admin_text(200, "text/plain", b"ready\n".to_vec());
        };
        admin_text(503, "text/plain", why.into_bytes())
    }

    /// `GET /metrics`: key ages and the revocation cache's age are updated just before.
    fn metrics(&self) -> Response<Vec<u8>> {
        let snap = self.state.snapshot.load();
        let now = crate::clock::now_unix();
        for (ic, keys) in snap.issuers.configs.iter().zip(&snap.issuers.keys) {
            if let Some(fetched) = keys.last_success_unix() {
                crate::metrics::jwks_age(&ic.name, now - fetched);
            }
        }
        crate::metrics::revocations_age(self.state.revocations.age_seconds());
        admin_text(200, "text/plain; version=0.0.4", crate::metrics::render())
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => admin_text(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => self.readyz(),
            "/metrics" => self.metrics(),
            "/revocations" => self.revocations(session).await,
            _ => admin_text(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
