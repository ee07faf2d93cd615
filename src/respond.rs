//! Writing the gateway's own responses: refusals, metadata, and answers for requests that
//! got no upstream answer.
//!
//! Sits at the end of the request flow: `proxy` hands a rendered [`Refusal`] (or a metadata
//! document) to [`answer`], and pingora's failure hook hands its error to [`for_failure`]
//! so that no pingora page reaches a client.
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
use pingora_core::protocols::http::ServerSession;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;

use crate::error::{GatewayFailure, Refusal};

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
/// HTTP/1.1 connection closed (`Connection: close` when known before the answer).
pub async fn answer(session: &mut ServerSession, mut header: ResponseHeader, body: Bytes) {
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
    let plan = disposal(done, expects_continue, declared.as_deref());
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
    let ok = session
        .write_response_header(Box::new(header))
        .await
        .is_ok()
        && session.write_response_body(body, true).await.is_ok();
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
         cache-control: no-store\r\nconnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("allow: GET, POST, DELETE, OPTIONS, HEAD\r\n");
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
