//! What a request leaves behind for the operator, beyond its decision: its request id
//! (accepted from the client or generated, forwarded upstream, returned, in the audit
//! line), the kind of an upstream failure, the status class of its answer and who wrote it.
//!
//! Plain functions over headers and errors, used by `proxy` (which sequences them) and
//! `metrics` (which counts their results); they import nothing of the request flow.

use http::HeaderMap;
use pingora_core::{Error, ErrorSource, ErrorType};

/// The header that carries the request id both ways.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The longest client request id accepted.
pub const REQUEST_ID_MAX: usize = 128;

/// A client's `X-Request-Id` when it is one sane token (1 to 128 characters of
/// `A-Z a-z 0-9 - _ . : @ / + =`, sent once); otherwise a fresh 128-bit random id in
/// hex. Anything else a client sends (spaces, quotes, controls, non-ASCII, a second header)
/// is never echoed, forwarded or logged.
pub fn request_id(headers: &HeaderMap) -> Box<str> {
    let mut all = headers.get_all(REQUEST_ID).iter();
    if let (Some(v), None) = (all.next(), all.next()) {
        let b = v.as_bytes();
        if (1..=REQUEST_ID_MAX).contains(&b.len()) && b.iter().all(|c| sane(*c)) {
            // All ASCII: always valid UTF-8.
            if let Ok(s) = std::str::from_utf8(b) {
                return s.into();
            }
        }
    }
    generate()
}

fn sane(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.:@/+=".contains(&c)
}

/// A new request id: 32 lowercase hex digits, a random 64-bit prefix drawn once per
/// process followed by a 64-bit counter. Unique within the process and, with overwhelming
/// probability, across replicas; not secret (a request id is a correlation handle, never a
/// credential), so one system-RNG call per process instead of one per request (2.1 k of
/// the 2.7 k instructions it cost per request, bench/README.md).
pub fn generate() -> Box<str> {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        if aws_lc_rs::rand::fill(&mut b).is_err() {
            // The system RNG failed: the start time still tells processes apart.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            b = (t ^ u64::from(std::process::id())).to_be_bytes();
        }
        u64::from_be_bytes(b)
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in prefix
        .to_be_bytes()
        .into_iter()
        .chain(n.to_be_bytes())
        .enumerate()
    {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&out).unwrap_or_default().into()
}

/// The kinds of upstream failure counted in `mcpgate_upstream_errors_total{kind}`.
pub const UPSTREAM_ERROR_KINDS: [&str; 6] =
    ["refused", "timeout", "reset", "tls", "protocol", "other"];

/// The kind of an upstream failure (an index into [`UPSTREAM_ERROR_KINDS`]), or `None` when
/// `e` is not the upstream's (the client went away, the gateway ended a stream itself).
pub fn upstream_error_kind(e: &Error) -> Option<usize> {
    use ErrorType::*;
    let kind = match e.etype() {
        ConnectRefused => 0,
        ConnectTimedout | TLSHandshakeTimedout => 1,
        TLSHandshakeFailure | TLSWantX509Lookup | InvalidCert | HandshakeError => 3,
        ConnectNoRoute | ConnectError | SocketError | BindError | ConnectProxyFailure => 5,
        _ if e.esource() != &ErrorSource::Upstream => return None,
        ReadTimedout | WriteTimedout => 1,
        ConnectionClosed | ReadError | WriteError => 2,
        InvalidHTTPHeader | H1Error | H2Error | H2Downgrade | InvalidH2 | HTTPStatus(_) => 4,
        _ => 5,
    };
    Some(kind)
}

/// Status classes counted in `mcpgate_responses_total{class}`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The class of `status` (an index into [`STATUS_CLASSES`]); `None` when nothing was
/// written (status 0).
pub fn status_class(status: u16) -> Option<usize> {
    match status {
        100..=599 => Some(usize::from(status / 100 - 1)),
        _ => None,
    }
}

/// The user agent for the audit line: at most this many bytes (cut at a character).
pub const USER_AGENT_MAX: usize = 256;

/// `User-Agent` bounded to [`USER_AGENT_MAX`] bytes (escaping is the audit line's).
pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::USER_AGENT)?;
    let s = std::str::from_utf8(v.as_bytes()).ok()?;
    if s.len() <= USER_AGENT_MAX {
        return Some(s);
    }
    let mut end = USER_AGENT_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(&s[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(REQUEST_ID, http::HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn generated(id: &str) -> bool {
        id.len() == 32
            && id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        for ok in [
            "abc",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "a.b:c@d/e+f=g_h",
        ] {
            assert_eq!(&*request_id(&headers(&[ok.as_bytes()])), ok);
        }
        let long = "a".repeat(REQUEST_ID_MAX);
        assert_eq!(&*request_id(&headers(&[long.as_bytes()])), long);
    }

    #[test]
    fn anything_else_gets_a_fresh_id() {
        let long = "a".repeat(REQUEST_ID_MAX + 1);
        for bad in [
            &b""[..],
            b"a b",
            b"a\"b",
            b"a\tb",
            b"\xc3\xa9",
            b"a,b",
            b"a;b",
            b"{x}",
            long.as_bytes(),
        ] {
            let id = request_id(&headers(&[bad]));
            assert!(generated(&id), "{bad:?} -> {id}");
        }
        assert!(generated(&request_id(&headers(&[b"a", b"b"]))));
        assert!(generated(&request_id(&HeaderMap::new())));
        assert_ne!(generate(), generate());
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(0), None);
        assert_eq!(status_class(101), Some(0));
        assert_eq!(status_class(200), Some(1));
        assert_eq!(status_class(404), Some(3));
        assert_eq!(status_class(599), Some(4));
        assert_eq!(status_class(600), None);
    }

    #[test]
    fn upstream_kinds() {
        let up = |t| {
            let mut e = *Error::explain(t, "x");
            e.as_up();
            e
        };
        let kind = |e: Error| upstream_error_kind(&e).map(|i| UPSTREAM_ERROR_KINDS[i]);
        assert_eq!(
            kind(*Error::explain(ErrorType::ConnectRefused, "x")),
            Some("refused")
        );
        assert_eq!(
            kind(*Error::explain(ErrorType::ConnectTimedout, "x")),
            Some("timeout")
        );
        assert_eq!(kind(up(ErrorType::ReadTimedout)), Some("timeout"));
        assert_eq!(kind(up(ErrorType::ConnectionClosed)), Some("reset"));
        assert_eq!(
            kind(*Error::explain(ErrorType::InvalidCert, "x")),
            Some("tls")
        );
        assert_eq!(kind(up(ErrorType::InvalidHTTPHeader)), Some("protocol"));
        // The client's side, and the gateway's own stream endings, are not the upstream's.
        let mut down = *Error::explain(ErrorType::ReadError, "x");
        down.as_down();
        assert_eq!(kind(down), None);
        assert_eq!(kind(*Error::explain(ErrorType::InternalError, "x")), None);
    }

    #[test]
    fn user_agents_are_bounded_at_a_character() {
        let mut h = HeaderMap::new();
        let ua = "é".repeat(200);
        h.insert(http::header::USER_AGENT, ua.parse().unwrap());
        let got = user_agent(&h).unwrap();
        assert_eq!(got.len(), USER_AGENT_MAX);
        assert!(ua.starts_with(got));
    }
}
