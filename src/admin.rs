//! The admin listener: `/healthz`, `/readyz`, `/metrics`. Never served on the public
//! listener (the config refuses the same address for both).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::GatewayState;

pub struct Admin {
    pub state: Arc<GatewayState>,
}

fn text(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => text(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let not_ready = self.state.unready_issuers();
                if not_ready.is_empty() {
                    text(200, "text/plain", b"ready\n".to_vec())
                } else {
                    let msg = format!(
                        "not ready: no usable keys for issuer(s) {}\n",
                        not_ready.join(", ")
                    );
                    text(503, "text/plain", msg.into_bytes())
                }
            }
            "/metrics" => {
                let snap = self.state.snapshot.load();
                let now = crate::jwks::now_unix();
                for (ic, keys) in snap.config.issuers.iter().zip(&snap.keys) {
                    if let Some(fetched) = keys.last_success_unix() {
                        crate::metrics::jwks_age(&ic.name, now - fetched);
                    }
                }
                text(200, "text/plain; version=0.0.4", crate::metrics::render())
            }
            _ => text(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
