//! The recording upstream: every request as received (method, target, headers, body), the
//! connections it accepted (so a refusal can be shown to open none), and replies chosen by the
//! test ([`Upstream::with`]) or the default echo ([`Upstream::start`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::Notify;

use super::http::Request;
use super::server::{Reply, Server};

/// A recording upstream; stops when dropped.
pub struct Upstream {
    server: Server,
    gate: Arc<Notify>,
}

impl Upstream {
    /// The echo upstream. Answers 200 JSON `{"ok":true,"method","target","sub"}` (sub = the
    /// `X-Auth-Subject` it received) with `Cache-Control: public, max-age=600` (to catch a
    /// caching gateway). Paths ending in `/sse` get a chunked event stream: `data: one` at
    /// once, `data: two` after [`Upstream::release`].
    pub fn start() -> Upstream {
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let server = Server::start(move |req: &Request| {
            if req.path().ends_with("/sse") {
                return Reply::Gated {
                    first: b"event: message\ndata: one\n\n".to_vec(),
                    gate: g.clone(),
                    rest: b"event: message\ndata: two\n\n".to_vec(),
                };
            }
            let body = json!({
                "ok": true,
                "method": req.method,
                "target": req.target,
                "sub": req.header("x-auth-subject"),
            });
            Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Cache-Control".into(), "public, max-age=600".into()),
                    ("X-Upstream".into(), "recorder".into()),
                ],
                body: serde_json::to_vec(&body).unwrap(),
            }
        });
        Upstream { server, gate }
    }

    /// An upstream answering with `handler`.
    pub fn with(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream {
            server: Server::start(handler),
            gate: Arc::new(Notify::new()),
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }
    pub fn count(&self) -> usize {
        self.server.count()
    }
    /// TCP connections the upstream accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }
    /// TCP connections open now.
    pub fn open_connections(&self) -> usize {
        self.server.open_connections()
    }
    /// Bytes received, complete requests or not.
    pub fn bytes_received(&self) -> usize {
        self.server.bytes_received()
    }
    /// The only request received; panics unless exactly one arrived.
    pub fn only(&self) -> Request {
        let reqs = self.requests();
        assert_eq!(
            reqs.len(),
            1,
            "upstream expected exactly one request, got {reqs:#?}"
        );
        reqs.into_iter().next().unwrap()
    }
    pub fn last(&self) -> Request {
        self.requests().pop().expect("upstream received no request")
    }
    pub fn clear(&self) {
        self.server.clear()
    }
    /// Lets a pending `/sse` stream of the echo upstream send its second event and finish.
    pub fn release(&self) {
        self.gate.notify_one();
    }
    /// (event index, time written) of every event of every [`Reply::Events`] answer.
    pub fn sent_events(&self) -> Vec<(usize, Instant)> {
        self.server.sent_events()
    }
}
