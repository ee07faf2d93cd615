//! Reading a request body before the decision (inspected MCP bodies, and HTTP/2 bodies small
//! enough to check against their declared length), so that the same bytes are sent upstream.
//! The only steps that need the pingora `Session`.
//!
//! pingora 0.9 sends upstream a body that `request_filter` already read only through its
//! retry buffer, which holds 64 KiB ([`REPLAY_LIMIT`]; cloudflare/pingora#575): it calls
//! `request_body_filter` once, with that buffer, if and only if the buffer holds something.
//! So for a body of known length the buffer is switched on just before its last 64 KiB
//! arrive (each read is at most 64 KiB on HTTP/1.1, one DATA frame on HTTP/2), the whole
//! body is kept in [`Inspected`], and `request_body_filter` hands the whole body to pingora
//! in the buffer's place ([`Inspected::substitute`]). A body of unknown length (chunked,
//! HTTP/2 without `content-length`) cannot be cut that way: it stays bounded by the buffer.

use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

use crate::error::Refusal;

/// What pingora replays upstream of a body read before connecting (its `BODY_BUF_LIMIT`):
/// the bound of an inspected body sent without a length.
pub const REPLAY_LIMIT: usize = 64 * 1024;

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
/// head has gone upstream. A declared body of at most [`REPLAY_LIMIT`] is read before
/// connecting, so one that disagrees is refused with nothing sent (issue 21). Larger
/// declared bodies stream (see the README's security section).
pub fn h2_body_to_check(session: &mut Session) -> bool {
    let declared = declared_length(session);
    let s = session.as_mut();
    s.is_http2() && !s.is_body_done() && declared.is_some_and(|n| n <= REPLAY_LIMIT)
}

/// A body read before the decision, forwarded whole in place of pingora's retry buffer.
#[derive(Debug, Clone, Default)]
pub struct Inspected(Option<Bytes>);

impl Inspected {
    pub fn new(body: Bytes) -> Inspected {
        Inspected(Some(body))
    }

    /// Whether a body was read before the decision.
    pub fn is_read(&self) -> bool {
        self.0.is_some()
    }

    /// In `request_body_filter`: the piece pingora is about to send (its retry buffer, the
    /// tail of the body) becomes the whole body. Cloned, not taken: a retried attempt
    /// replays the buffer again. Returns whether it substituted (the bytes were counted when
    /// read).
    pub fn substitute(&self, piece: &mut Option<Bytes>) -> bool {
        match (&self.0, piece.as_ref()) {
            (Some(full), Some(_)) => {
                *piece = Some(full.clone());
                true
            }
            _ => false,
        }
    }
}

/// When to switch pingora's retry buffer on, before the next read: for a known length,
/// once what is left fits it (so it ends up holding the tail, never truncated); for an
/// unknown length, from the start (then the body must fit it whole).
fn buffer_now(declared: Option<usize>, read: usize) -> bool {
    declared.is_none_or(|d| d.saturating_sub(read) <= REPLAY_LIMIT)
}

/// The bound of a body: `limit` when its length is declared, else what the retry buffer
/// holds.
fn bound(declared: Option<usize>, limit: usize) -> usize {
    match declared {
        Some(_) => limit,
        None => limit.min(REPLAY_LIMIT),
    }
}

/// Read a whole request body for inspection, within `limit` (`limits.max_inspected_body_bytes`;
/// [`REPLAY_LIMIT`] without a declared length) and by `deadline` (the request's whole-body
/// deadline, `limits.request_body_timeout_seconds` after its head: a stalled body is refused
/// with 408 rather than held). The caller keeps it in [`Inspected`] so that exactly these
/// bytes go upstream.
pub async fn read(
    session: &mut Session,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Refusal> {
    let declared = declared_length(session);
    let limit = bound(declared, limit);
    if declared.is_some_and(|n| n > limit) {
        // Before any `100 Continue`: the client never sends the body.
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
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
    let mut buffering = false;
    let read = async {
        loop {
            if !buffering && buffer_now(declared, body.len()) {
                session.as_mut().enable_retry_buffering();
                buffering = true;
            }
            match session.as_mut().read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
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
    if declared.is_some_and(|d| d != body.len()) {
        return Err(Refusal::BadRequest(
            "the request body does not match its Content-Length",
        ));
    }
    // pingora sends a pre-read body only through a retry buffer that holds something: a
    // body it would not send (truncated buffer, or a first read that jumped past the
    // threshold) is refused rather than left hanging upstream.
    let s = session.as_ref();
    if !body.is_empty() && (s.retry_buffer_truncated() || s.get_retry_buffer().is_none()) {
        return Err(Refusal::McpBodyTooLarge);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_retry_buffer_is_switched_on_for_the_tail_only() {
        let mib = 1024 * 1024;
        assert!(!buffer_now(Some(mib), 0));
        assert!(!buffer_now(Some(mib), mib - REPLAY_LIMIT - 1));
        assert!(buffer_now(Some(mib), mib - REPLAY_LIMIT));
        assert!(buffer_now(Some(10), 0));
        assert!(buffer_now(None, 0));
        assert_eq!(bound(Some(1), mib), mib);
        assert_eq!(bound(None, mib), REPLAY_LIMIT);
        assert_eq!(bound(None, 1024), 1024);
    }

    #[test]
    fn the_whole_body_replaces_the_buffer_each_time_it_is_sent() {
        let full = Bytes::from_static(b"the whole body");
        let inspected = Inspected::new(full.clone());
        for _ in 0..2 {
            let mut piece = Some(Bytes::from_static(b"body"));
            assert!(inspected.substitute(&mut piece));
            assert_eq!(piece, Some(full.clone()));
        }
        let mut none = None;
        assert!(!inspected.substitute(&mut none));
        assert_eq!(none, None);
        let mut piece = Some(Bytes::from_static(b"x"));
        assert!(!Inspected::default().substitute(&mut piece));
        assert_eq!(piece.as_deref(), Some(&b"x"[..]));
    }
}
