//! The small HTTP pieces the dev issuer and the demo MCP server share: JSON and empty
//! answers, and reading a bounded request body.

use http::Response;
use pingora_core::protocols::http::ServerSession;
use serde_json::Value;

/// A JSON answer, never cached, readable by a page of any origin (the dev servers use no
/// cookies).
pub fn json_response(status: u16, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .header("cache-control", "no-store")
        .header("access-control-allow-origin", "*")
        .body(bytes)
        .unwrap_or_default()
}

/// An answer without a body.
pub fn empty(status: u16, extra: &[(&str, &str)]) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-length", 0);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Vec::new()).unwrap_or_default()
}

/// The request body, or `None` when it cannot be read or is larger than `limit`.
pub async fn read_body(session: &mut ServerSession, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}
