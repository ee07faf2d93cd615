//! Response streams end when their token does, even while they are idle.
//!
//! Sits on the way back, beside `lists`: when an upstream answer's head arrives and its body
//! is open-ended (an SSE stream, or any body without a declared length), `proxy` gives it a
//! [`Watchdog`]. The watchdog waits for the token's `exp` (plus the issuer's clock skew and
//! the route's `stream_expiry_grace_seconds`) and for changes of the revocation list; at the
//! deadline, or when the list names the token, it ends the stream at once, whether or not the
//! upstream is sending anything. `lists` uses the same handle to end a stream it refused.
//!
//! How it ends the stream: pingora 0.9 gives a proxied response no timer. Its
//! `response_body_filter` runs only when the upstream sends a piece, and the `Option<Duration>`
//! it may return only delays that piece (`proxy_h1.rs` / `proxy_h2.rs`: `time::sleep`, a rate
//! limit). The proxy loop (`proxy_handle_downstream`) waits on the upstream's pieces and on the
//! client's socket, whose idle read has no timeout; a peer `read_timeout` restarts with every
//! read. What does wake that loop at any moment is the upstream connection ending. So the
//! watchdog holds a duplicate of the upstream connection's descriptor and, to end the stream,
//! shuts that connection down: the loop sees the upstream end, and the client's response ends
//! without its clean end (HTTP/1.1: no last chunk; HTTP/2: the stream is reset).
//!
//! Only HTTP/1.x upstream connections are watched (an HTTP/2 connection carries other streams
//! too); mcpgate's peers speak HTTP/1.1. The descriptor is duplicated while the upstream
//! session holds the connection open for this response, so the duplicate always names this
//! connection; the watchdog is disarmed (its duplicate closed, the connection untouched) when
//! the response ends, before pingora may pool the connection, and a close and a disarm never
//! interleave (one lock).

use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora_http::ResponseHeader;

use crate::auth::revocation::Revocations;
use crate::metrics;
use crate::principal::Principal;

/// Why a stream was ended by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Expired = 1,
    Revoked = 2,
    /// Its answer could not be read (`lists`).
    Refused = 3,
    /// The request body did not arrive by its deadline (the upstream exchange is cut so
    /// that the request, whatever it waits on, ends).
    BodyTimeout = 4,
}

impl Closed {
    pub fn describe(self) -> &'static str {
        match self {
            Closed::Expired => "token expired: closing the response stream",
            Closed::Revoked => "token revoked: closing the response stream",
            Closed::Refused => "unreadable answer: closing the response stream",
            Closed::BodyTimeout => "request body not received in time: closing the exchange",
        }
    }

    fn from_u8(v: u8) -> Option<Closed> {
        match v {
            1 => Some(Closed::Expired),
            2 => Some(Closed::Revoked),
            3 => Some(Closed::Refused),
            4 => Some(Closed::BodyTimeout),
            _ => None,
        }
    }
}

/// Whether an answer's body is open-ended: a stream, or a body whose end only its framing
/// tells. A HEAD answer, 1xx, 204 and 304 have no body.
pub fn is_open_ended(resp: &ResponseHeader, head_request: bool) -> bool {
    let s = resp.status.as_u16();
    if head_request || (100..200).contains(&s) || s == 204 || s == 304 {
        return false;
    }
    crate::mcp::lists::is_event_stream(resp)
        || resp.headers.get(http::header::CONTENT_LENGTH).is_none()
}

struct Shared {
    /// The duplicate of the upstream socket; `None` once closed or disarmed.
    socket: Mutex<Option<TcpStream>>,
    closed: AtomicU8,
}

impl Shared {
    /// Shut the upstream connection down, once. `true` for the call that did it.
    fn close(&self, why: Closed) -> bool {
        let Ok(mut socket) = self.socket.lock() else {
            return false;
        };
        let Some(s) = socket.take() else {
            return false;
        };
        // An error means the connection is already shut: the stream ends either way.
        let _ = s.shutdown(Shutdown::Both);
        self.closed.store(why as u8, Ordering::Release);
        true
    }

    fn release(&self) {
        if let Ok(mut socket) = self.socket.lock() {
            socket.take();
        }
    }
}

/// Ends one upstream exchange on demand, at its token's deadline, at its revocation, or when
/// its request body misses its deadline.
pub struct Watchdog {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    body_task: Option<tokio::task::JoinHandle<()>>,
}

impl Watchdog {
    /// A handle on the HTTP/1.x upstream connection `fd`, which must be the open socket of the
    /// upstream session reading the current response (as `connected_to_upstream` reported it).
    pub fn new(fd: RawFd) -> Option<Watchdog> {
        // SAFETY: `fd` is open for the whole call: pingora's upstream session for this request
        // owns it and is reading the response this watchdog is made for. The duplicate made
        // here is ours, so it names this connection for as long as we hold it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let owned = borrowed.try_clone_to_owned().ok()?;
        Some(Watchdog {
            shared: Arc::new(Shared {
                socket: Mutex::new(Some(TcpStream::from(owned))),
                closed: AtomicU8::new(0),
            }),
            task: None,
            body_task: None,
        })
    }

    /// End the exchange at `at` unless [`Self::body_done`] is called first: the request
    /// body streams to the upstream, and pingora bounds only each read of it (HTTP/1.1) or
    /// nothing at all (HTTP/2), so a body that never ends would hold the upstream connection.
    pub fn body_deadline(&mut self, at: tokio::time::Instant) {
        let shared = self.shared.clone();
        self.body_task = Some(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if shared.close(Closed::BodyTimeout) {
                metrics::connection_timeout("request_body");
            }
        }));
    }

    /// The request body has ended: its deadline no longer applies.
    pub fn body_done(&mut self) {
        if let Some(t) = self.body_task.take() {
            t.abort();
        }
    }

    /// End the stream at `until` (Unix seconds) or when the revocation list names `p`.
    /// Counts the closing in the route's `mcpgate_streams_closed_token_*_total`.
    pub fn watch(
        &mut self,
        until: i64,
        p: Arc<Principal>,
        revocations: Arc<Revocations>,
        route: Arc<str>,
    ) {
        let shared = self.shared.clone();
        let delay = seconds_until(until);
        self.task = Some(tokio::spawn(async move {
            let mut changes = revocations.changes();
            // A revocation between the request's check and this subscription.
            if revocations.revoked(&p, crate::clock::now_unix()).is_some() {
                if shared.close(Closed::Revoked) {
                    metrics::stream_closed_revoked(&route);
                }
                return;
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            let mut listening = true;
            loop {
                tokio::select! {
                    () = &mut sleep => {
                        if shared.close(Closed::Expired) {
                            metrics::stream_closed_expired(&route);
                        }
                        return;
                    }
                    changed = changes.changed(), if listening => {
                        if changed.is_err() {
                            listening = false;
                            continue;
                        }
                        if revocations.revoked(&p, crate::clock::now_unix()).is_some() {
                            if shared.close(Closed::Revoked) {
                                metrics::stream_closed_revoked(&route);
                            }
                            return;
                        }
                    }
                }
            }
        }));
    }

    /// End the stream now. `true` for the call that did (a later one, or the timer's, is a
    /// no-op), so that each closing is counted once.
    pub fn close(&self, why: Closed) -> bool {
        self.shared.close(why)
    }

    /// Why the stream was ended, if it was.
    pub fn closed(&self) -> Option<Closed> {
        Closed::from_u8(self.shared.closed.load(Ordering::Acquire))
    }
}

impl Drop for Watchdog {
    /// Disarm: stop the timer and close the duplicate, leaving the connection as it is.
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.body_done();
        self.shared.release();
    }
}

/// How long until `until` (Unix seconds, sub-second precise), at most a year.
fn seconds_until(until: i64) -> Duration {
    let now = crate::clock::now_unix_f64();
    Duration::from_secs_f64((until as f64 - now).clamp(0.0, 365.0 * 86_400.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn close_shuts_the_connection_once_and_drop_leaves_it_open() {
        let (ours, mut peer) = pair();
        let w = Watchdog::new(ours.as_raw_fd()).unwrap();
        assert_eq!(w.closed(), None);
        assert!(w.close(Closed::Refused));
        assert!(!w.close(Closed::Expired), "closed once");
        assert_eq!(w.closed(), Some(Closed::Refused));
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "the peer sees the end");

        let (ours, peer) = pair();
        let w = Watchdog::new(ours.as_raw_fd()).unwrap();
        drop(w);
        peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let r = (&peer).read(&mut buf);
        assert!(
            r.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "a disarmed watchdog leaves the connection open"
        );
        drop(ours);
    }

    #[test]
    fn open_ended_bodies() {
        let mut h = crate::respond::response_header(200);
        assert!(is_open_ended(&h, false));
        assert!(!is_open_ended(&h, true));
        h.insert_header("content-length", "5").unwrap();
        assert!(!is_open_ended(&h, false));
        h.insert_header("content-type", "text/event-stream")
            .unwrap();
        assert!(is_open_ended(&h, false));
        assert!(!is_open_ended(&crate::respond::response_header(204), false));
    }

    #[test]
    fn deadlines_in_the_past_fire_at_once_and_far_ones_are_capped() {
        assert_eq!(seconds_until(0), Duration::ZERO);
        assert!(seconds_until(i64::MAX) <= Duration::from_secs(365 * 86_400));
        let soon = seconds_until(crate::clock::now_unix() + 10);
        assert!(soon > Duration::from_secs(8) && soon <= Duration::from_secs(10));
    }
}
