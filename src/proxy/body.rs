//! Reading a request body before the decision (inspected MCP bodies, and HTTP/2 bodies small
//! enough to check against their declared length), kept in pingora's retry buffer so that
//! the same bytes are sent upstream. The only steps that need the pingora `Session`.

use bytes::Bytes;
use pingora_proxy::Session;

use crate::error::Refusal;

/// Largest body we inspect: what pingora can replay upstream after we read it (its retry
/// buffer, 64 KiB). Larger bodies on inspected routes get 413.
pub const MCP_BODY_LIMIT: usize = 64 * 1024;

/// The declared `Content-Length`, when it is a number.
fn declared_length(session: &Session) -> Option<usize> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// HTTP/2 checks DATA against a declared `content-length` only as they arrive, after the
/// head has gone upstream. A declared body small enough to hold (pingora's 64 KiB replay
/// buffer) is read before connecting, so one that disagrees is refused with nothing sent
/// (issue 21). Larger declared bodies stream (see the README's security section).
pub fn h2_body_to_check(session: &mut Session) -> bool {
    let declared = declared_length(session);
    let s = session.as_mut();
    s.is_http2() && !s.is_body_done() && declared.is_some_and(|n| n <= MCP_BODY_LIMIT)
}

/// Read a whole request body for inspection, within [`MCP_BODY_LIMIT`] and by `deadline`
/// (the request's whole-body deadline, `limits.request_body_timeout_seconds` after its
/// head: a stalled body is refused with 408 rather than held), keeping it in pingora's
/// retry buffer so that the same bytes are sent upstream.
pub async fn read(session: &mut Session, deadline: tokio::time::Instant) -> Result<Bytes, Refusal> {
    if declared_length(session).is_some_and(|n| n > MCP_BODY_LIMIT) {
        return Err(Refusal::McpBodyTooLarge);
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // The request is authorized so far: let the client send its body. If the interim
        // answer cannot be written, the read below fails or times out and refuses.
        if let Err(e) = session.as_mut().write_continue_response().await {
            tracing::debug!(error = %e, "100 Continue could not be written");
        }
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
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(())) => {}
        Ok(Err(r)) => return Err(r),
        Err(_) => {
            crate::metrics::connection_timeout("request_body");
            return Err(Refusal::BodyTimeout);
        }
    }
    if session.as_ref().retry_buffer_truncated() {
        return Err(Refusal::McpBodyTooLarge);
    }
    Ok(body.freeze())
}
