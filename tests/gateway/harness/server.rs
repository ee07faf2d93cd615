//! The one mock HTTP/1.1 server under every mock of the suite (the recording upstream, the
//! mock IdP, the canary): one accept loop on a listener it owns, one connection handler that
//! records every request (method, target as received, headers, body) before a handler chosen
//! by the mock answers it, and counters (connections accepted and still open, bytes received,
//! events written) a test can assert or poll on.
//!
//! Servers run on one background runtime shared by the whole test binary, so they keep
//! serving while a test blocks, and each stops accepting when its handle is dropped.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::http::{header, read_body, read_head, Request};
use super::poll::pace;

/// The runtime that hosts every mock server of this test binary.
pub fn bg() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mock-servers")
            .enable_all()
            .build()
            .unwrap()
    })
}

/// What a mock answers.
pub enum Reply {
    /// A complete response with `Content-Length` (no body on a `HEAD`).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `200` chunked; each event is one chunk, written `interval` apart (the first at once),
    /// then the last chunk. Stops early if the peer goes away. Every event written is
    /// recorded with its time ([`Server::sent_events`]).
    Events {
        headers: Vec<(String, String)>,
        events: Vec<Vec<u8>>,
        interval: Duration,
    },
    /// A chunked `text/event-stream`: `first` at once, `rest` once `gate` is notified (or
    /// after 15 s), then the last chunk.
    Gated {
        first: Vec<u8>,
        gate: Arc<Notify>,
        rest: Vec<u8>,
    },
    /// Close the connection without answering.
    Hangup,
    /// The reply, after a delay (a slow server).
    Delayed(Duration, Box<Reply>),
    /// Raw bytes, each part written after its delay, then the connection ends as [`End`]
    /// says (a misbehaving server: slow headers, a slow body, a reset mid-response, a stall).
    Script(Vec<(Duration, Vec<u8>)>, End),
}

/// How a [`Reply::Script`] connection ends.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// A clean close (FIN).
    Close,
    /// A reset (RST: linger 0).
    Reset,
    /// Held open, silent, until the peer goes away (at most 60 s).
    Stall,
}

impl Reply {
    /// `status` with a JSON body.
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::full(status, "application/json", serde_json::to_vec(v).unwrap())
    }
    /// `200` with these bytes as an `application/json` body.
    pub fn json_bytes(body: &[u8]) -> Reply {
        Reply::full(200, "application/json", body.to_vec())
    }
    /// `status` with a body of this content type.
    pub fn full(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }
    /// `text/event-stream` events, `interval` apart.
    pub fn sse(events: Vec<Vec<u8>>, interval: Duration) -> Reply {
        Reply::Events {
            headers: vec![
                ("Content-Type".into(), "text/event-stream".into()),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            events,
            interval,
        }
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

#[derive(Default)]
struct Stats {
    log: Mutex<Vec<Request>>,
    accepted: AtomicUsize,
    open: AtomicUsize,
    bytes: AtomicUsize,
    /// (event index, time written) of every event of every [`Reply::Events`] answer.
    sent: Mutex<Vec<(usize, Instant)>>,
}

/// A running mock server; stops accepting when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts an open connection until dropped.
struct Open(Arc<Stats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// Serves `handler` on a fresh loopback port (bound here and held while it runs).
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_on(StdListener::bind("127.0.0.1:0").unwrap(), Arc::new(handler))
    }

    /// Serves `handler` on `listener` from the background runtime until dropped.
    pub fn start_on(listener: StdListener, handler: Handler) -> Server {
        Server::start_with(listener, handler, None)
    }

    /// The same over TLS: every connection is accepted by `tls` first (a connection whose
    /// handshake fails is counted, then closed).
    pub fn start_tls_on(
        listener: StdListener,
        handler: Handler,
        tls: tokio_rustls::TlsAcceptor,
    ) -> Server {
        Server::start_with(listener, handler, Some(tls))
    }

    fn start_with(
        listener: StdListener,
        handler: Handler,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        let task = bg().spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                st.open.fetch_add(1, Ordering::SeqCst);
                let (handler, st, tls) = (handler.clone(), st.clone(), tls.clone());
                tokio::spawn(async move {
                    let _open = Open(st.clone());
                    match tls {
                        None => {
                            let _ = serve(stream, handler, &st).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = serve(stream, handler, &st).await;
                            }
                        }
                    }
                });
            }
        });
        Server { addr, stats, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Every complete request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.stats.log.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.stats.log.lock().unwrap().len()
    }
    /// Forgets the requests received so far (the counters go on).
    pub fn clear(&self) {
        self.stats.log.lock().unwrap().clear();
    }
    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }
    /// TCP connections open now.
    pub fn open_connections(&self) -> usize {
        self.stats.open.load(Ordering::SeqCst)
    }
    /// Bytes received on every connection, complete requests or not.
    pub fn bytes_received(&self) -> usize {
        self.stats.bytes.load(Ordering::SeqCst)
    }
    /// (event index, time written) of every event of every [`Reply::Events`] answer.
    pub fn sent_events(&self) -> Vec<(usize, Instant)> {
        self.stats.sent.lock().unwrap().clone()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The TCP connection under a served stream (for a scripted reset).
trait Socket {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin + Socket>(
    mut stream: S,
    handler: Handler,
    st: &Stats,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut counted = |n: usize| {
        st.bytes.fetch_add(n, Ordering::SeqCst);
    };
    loop {
        let Some((line, headers)) = read_head(&mut stream, &mut buf, &mut counted).await? else {
            return Ok(());
        };
        let mut parts = line.splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        if header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = read_body(&mut stream, &mut buf, &headers, false, &mut counted).await?;
        let close = header(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let req = Request {
            method,
            target,
            headers,
            body,
        };
        st.log.lock().unwrap().push(req.clone());
        let mut reply = handler(&req);
        while let Reply::Delayed(d, inner) = reply {
            // The mock's own latency (a slow authorization server), not a wait of the test.
            pace(d).await;
            reply = *inner;
        }
        match reply {
            Reply::Hangup => return Ok(()),
            Reply::Script(parts, end) => {
                for (d, bytes) in parts {
                    // The server's own pacing, as the test scripted it.
                    pace(d).await;
                    stream.write_all(&bytes).await?;
                    stream.flush().await?;
                }
                match end {
                    End::Close => {}
                    // Linger 0 makes the drop send RST at once; it never blocks (the
                    // deprecation is about a non-zero linger blocking the thread on drop).
                    #[allow(deprecated)]
                    End::Reset => stream.tcp().set_linger(Some(Duration::ZERO))?,
                    End::Stall => {
                        let mut sink = [0u8; 1024];
                        let wait =
                            async { while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
                        let _ = tokio::time::timeout(Duration::from_secs(60), wait).await;
                    }
                }
                return Ok(());
            }
            Reply::Delayed(..) => unreachable!(),
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (n, v) in &headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                let body = if req.method == "HEAD" {
                    Vec::new()
                } else {
                    body
                };
                out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                stream.write_all(&bytes).await?;
            }
            Reply::Events {
                headers,
                events,
                interval,
            } => {
                let mut out = String::from("HTTP/1.1 200 OK\r\n");
                for (n, v) in &headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("Transfer-Encoding: chunked\r\n\r\n");
                stream.write_all(out.as_bytes()).await?;
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        // The stream's pacing, as the test asked for it.
                        pace(interval).await;
                    }
                    write_chunk(&mut stream, e).await?;
                    st.sent.lock().unwrap().push((i, Instant::now()));
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
            Reply::Gated { first, gate, rest } => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
                stream.write_all(head.as_bytes()).await?;
                write_chunk(&mut stream, &first).await?;
                let _ = tokio::time::timeout(Duration::from_secs(15), gate.notified()).await;
                write_chunk(&mut stream, &rest).await?;
                stream.write_all(b"0\r\n\r\n").await?;
                stream.flush().await?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

async fn write_chunk<S: AsyncWrite + Unpin>(stream: &mut S, data: &[u8]) -> std::io::Result<()> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    stream.write_all(&chunk).await?;
    stream.flush().await
}
