//! Connections and the gateway's own responses (issue 13 items 7, 8, 9, 10's pipelining;
//! issue 21 item 7's HTTP/2 content-length).
//!
//! HTTP/2 is spoken with the `h2` crate over rustls (ALPN `h2`) against a gateway that
//! terminates TLS with a throw-away CA (the harness's TLS clients), and as raw frames, so a
//! test can send what reqwest would never send: a `:authority` that disagrees with `host`,
//! odd `:path` forms, DATA frames that overrun their `content-length`. HTTP/1.1 is the raw
//! client of [`crate::harness`]. Every refusal asserts the status, the gateway's JSON body, no
//! `Server: Pingora`, and that nothing reached the upstream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::harness::*;

/// A gateway terminating TLS with a certificate of a fresh CA, on `template`.
async fn tls_env(template: &str) -> Env {
    Env::builder(template).tls().start().await
}

/// Threads that keep every core busy while they live (the races of item 7 show under load).
struct Burn(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Burn {
    fn start(n: usize) -> Burn {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Burn(stop, handles)
    }
}

impl Drop for Burn {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for h in self.1.drain(..) {
            let _ = h.join();
        }
    }
}

const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// How a client sends its request body.
#[derive(Clone, Copy, Debug)]
enum Send {
    /// Right after the HEADERS, as most clients do.
    Eager,
    /// Only once the answer has arrived (as a client that is slow to produce it).
    Late,
}

/// One refused request on its own connection: the answer, then whether the server reset
/// the stream (it must not: it reads the body and both ends close cleanly).
async fn h2_refusal(
    addr: SocketAddr,
    ca: &str,
    req: http::Request<()>,
    how: Send,
) -> Result<H2Resp, String> {
    let mut send = h2_connect(addr, ca).await;
    let mut ready = send.clone().ready().await.map_err(|e| e.to_string())?;
    let (resp, mut stream) = ready
        .send_request(req, false)
        .map_err(|e| format!("send_request: {e}"))?;
    if let Send::Eager = how {
        stream
            .send_data(Bytes::from_static(BODY), true)
            .map_err(|e| format!("send_data: {e}"))?;
    }
    let resp = tokio::time::timeout(IO_TIMEOUT, resp)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("no answer, stream ended with {e:?}"))?;
    let (parts, mut recv) = resp.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| format!("answer body: {e:?}"))?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    if let Send::Late = how {
        stream
            .send_data(Bytes::from_static(BODY), true)
            .map_err(|e| format!("late send_data: {e}"))?;
    }
    // A round trip on the same connection: a reset of the first stream, sent when it was
    // dropped, arrives before this answer.
    h2_send(
        &mut send,
        h2_req("GET", "/.well-known/oauth-protected-resource/mcp")
            .body(())
            .unwrap(),
        None,
    )
    .await
    .map_err(|e| format!("second request: {e}"))?;
    if let Some(Ok(reason)) =
        futures_util::FutureExt::now_or_never(std::future::poll_fn(|cx| stream.poll_reset(cx)))
    {
        return Err(format!(
            "stream reset ({reason:?}) after a {} answer to a body the client sent",
            parts.status
        ));
    }
    Ok(H2Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// The gateway's JSON refusal: status, `error`, and no pingora `Server` header.
fn assert_h2_refusal(r: &H2Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json()["error"], code, "{r:?}");
    assert!(r.json()["error_description"].is_string(), "{r:?}");
    assert!(r.headers.get("server").is_none(), "{r:?}");
}

/// Item 7: over HTTP/2 a POST with a body and no token (or a wrong-audience one) gets its
/// 401, challenge and JSON body every time, with the cores busy, whether the client sends
/// its body at once or only after the answer; the stream is never reset, and nothing is
/// forwarded. Before the fix the gateway reset every such stream (curl 7.88 then reports
/// "Stream error in the HTTP/2 framing layer" instead of the 401).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item7_h2_refusal_with_body_under_load() {
    let env = tls_env(STANDARD).await;
    let wrong_aud = Tok::new(&env.idp.issuer(), "https://other.example.com/mcp").build();
    let _burn = Burn::start(3);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (addr, ca) = (env.gw.addr(), env.ca().to_string());
        let wrong_aud = wrong_aud.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..20 {
                let mut b = h2_req("POST", "/mcp").header("content-type", "application/json");
                let bad_token = (c + i) % 2 == 1;
                if bad_token {
                    b = b.header("authorization", format!("Bearer {wrong_aud}"));
                }
                let how = if i % 4 < 2 { Send::Eager } else { Send::Late };
                match h2_refusal(addr, &ca, b.body(()).unwrap(), how).await {
                    Ok(r)
                        if r.status == 401
                            && r.headers.contains_key("www-authenticate")
                            && r.json()["error"]
                                == if bad_token {
                                    "invalid_token"
                                } else {
                                    "unauthorized"
                                }
                            && r.headers.get("server").is_none() => {}
                    other => out.push(format!("{c}/{i} {how:?}: {other:?}")),
                }
            }
            out
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of 160 HTTP/2 refusals failed ({:?}): {failures:#?}",
        failures.len(),
        started.elapsed()
    );
    env.assert_nothing_forwarded();

    // The client of the report, where the machine has it (curl 7.88 fails on a reset).
    if let Ok(out) = std::process::Command::new("curl").arg("--version").output() {
        if String::from_utf8_lossy(&out.stdout).contains("nghttp2") {
            let url = format!("https://mcp.example.com:{}/mcp", env.gw.port);
            let resolve = format!("mcp.example.com:{}:127.0.0.1", env.gw.port);
            let ca = env.files.path().join("ca.pem");
            std::fs::write(&ca, env.ca()).unwrap();
            for i in 0..20 {
                let out = tokio::process::Command::new("curl")
                    .args(["-sS", "--http2", "--max-time", "10", "--cacert"])
                    .arg(&ca)
                    .args([
                        "--resolve",
                        &resolve,
                        "-d",
                        std::str::from_utf8(BODY).unwrap(),
                    ])
                    .args([
                        "-H",
                        "content-type: application/json",
                        "-w",
                        "\n%{http_code} %{http_version}",
                        &url,
                    ])
                    .output()
                    .await
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success() && text.ends_with("401 2"),
                    "curl {i}: {:?} {text} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(text.contains(r#""error":"unauthorized""#), "{text}");
            }
        }
    }
    env.assert_nothing_forwarded();
}

// ---------------------------------------------------------------------------------------------
// Item 8: idle and slow connections, caps
// ---------------------------------------------------------------------------------------------

async fn connect_from(local: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{local}:0").parse().unwrap())?;
    sock.connect(addr).await
}

/// [`CONN_LIMITS`] with these deadlines (seconds) and caps.
fn limits(tls: bool, head: u32, idle: u32, per: u32, total: u32) -> EnvBuilder {
    let b = Env::builder(CONN_LIMITS)
        .var("HEAD_TIMEOUT", head)
        .var("IDLE_TIMEOUT", idle)
        .var("PER", per)
        .var("TOTAL", total);
    if tls {
        b.tls()
    } else {
        b
    }
}

/// Item 8: a keep-alive connection left idle after an answered request is closed after
/// `limits.idle_timeout_seconds` (HTTP/1.1 and HTTP/2), and counted.
#[tokio::test]
async fn item8_idle_keepalive_closed_after_timeout() {
    let env = limits(true, 2, 1, 64, 128).start().await;
    // HTTP/1.1 over TLS (the deadlines apply under the HTTP layer, over TLS too).
    let tls = tls_h1(env.gw.addr(), env.ca()).await;
    let (mut r, mut w) = tokio::io::split(tls);
    w.write_all(
        b"GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) | Ok(Err(_)) => break Some(start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let closed = closed.expect("idle HTTP/1.1 connection still open after 5 s");
    assert!(
        closed >= Duration::from_millis(900),
        "closed too early: {closed:?}"
    );
    // HTTP/2: pingora's idle timeout, set from the same setting.
    let mut send = h2_connect(env.gw.addr(), env.ca()).await;
    let r = h2_send(&mut send, h2_req("GET", "/open/x").body(()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // Each probe is a cheap readiness check of the connection.
    within(Duration::from_secs(5), || async {
        send.clone().ready().await.is_err()
    })
    .await
    .expect("idle HTTP/2 connection still open after 5 s");
    assert!(
        env.metric("mcpgate_connection_timeouts_total", &[("kind", "idle")])
            .await
            >= 1.0
    );
}

/// Item 8: a client that sends one header line every second is cut at the request-head
/// deadline (2 s here), however long each pause is; nothing is forwarded.
#[tokio::test]
async fn item8_slow_loris_cut_at_head_deadline() {
    let env = limits(false, 2, 1, 64, 128).start().await;
    // A connection that sends nothing at all is cut at the same deadline.
    let mut silent = TcpStream::connect(env.gw.addr()).await.unwrap();
    let mut s = TcpStream::connect(env.gw.addr()).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET /open/x HTTP/1.1\r\nHost: mcp.example.com\r\n")
        .await
        .unwrap();
    // The slow client: one more header line every second, until the gateway cuts it.
    let (mut r, mut w) = s.into_split();
    let dribble = tokio::spawn(async move {
        for i in 0..10 {
            pace(Duration::from_secs(1)).await;
            if w.write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    closed_within(&mut r, Duration::from_secs(10))
        .await
        .expect("slow head not cut within 10 s");
    let cut = start.elapsed();
    dribble.abort();
    assert!(
        cut >= Duration::from_millis(1900) && cut < Duration::from_secs(5),
        "cut after {cut:?}"
    );
    let idle = closed_within(&mut silent, Duration::from_secs(4))
        .await
        .unwrap();
    assert!(idle < Duration::from_secs(4), "{idle:?}");
    env.assert_nothing_forwarded();
    assert!(
        env.metric(
            "mcpgate_connection_timeouts_total",
            &[("kind", "request_head")]
        )
        .await
            >= 2.0
    );
    // A normal request still works.
    let r = env.send(Req::get("/open/ok")).await;
    assert_eq!(r.status, 200, "{r}");
}

/// Item 8: connections beyond the per-address cap are closed at once while another
/// address is still served; beyond the total cap every address is refused; a flood of
/// connections holds no more descriptors than the caps.
#[tokio::test]
async fn item8_connection_caps_per_address_and_total() {
    // (A request in flight takes two places beside its connection's: see `redteam`.)
    let env = limits(false, 30, 30, 3, 6).start().await;
    let addr = env.gw.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", addr).await.unwrap());
    }
    // Admitted connections stay open (poll until the gateway counts them).
    let open = || async { env.metric("mcpgate_connections_open", &[]).await };
    eventually(Duration::from_secs(5), "3 connections admitted", || async {
        open().await >= 3.0
    })
    .await;
    // A flood from the same address: each is closed at once.
    for i in 0..50 {
        let mut extra = connect_from("127.0.0.1", addr).await.unwrap();
        let took = closed_within(&mut extra, Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("connection {i} over the per-address cap: {e}"));
        assert!(took < Duration::from_secs(3));
    }
    assert!(
        env.metric(
            "mcpgate_connections_refused_total",
            &[("reason", "per_address")]
        )
        .await
            >= 50.0
    );
    assert_eq!(open().await, 3.0);
    // Another address is served (and its connection counts towards the total).
    let mut other = connect_from("127.0.0.2", addr).await.unwrap();
    other
        .write_all(b"GET /open/b HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut other, &mut Vec::new(), false)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    held.push(connect_from("127.0.0.2", addr).await.unwrap());
    held.push(connect_from("127.0.0.2", addr).await.unwrap());
    // Six open: the total cap refuses a third address too.
    eventually(Duration::from_secs(5), "6 connections admitted", || async {
        open().await >= 6.0
    })
    .await;
    let mut third = connect_from("127.0.0.3", addr).await.unwrap();
    closed_within(&mut third, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(
        env.metric("mcpgate_connections_refused_total", &[("reason", "total")])
            .await
            >= 1.0
    );
    // Closing connections frees their places.
    held.clear();
    drop(other);
    let answer = std::cell::RefCell::new(None);
    eventually(Duration::from_secs(5), "places freed", || async {
        let Ok(mut s) = connect_from("127.0.0.1", addr).await else {
            return false;
        };
        let bytes = b"GET /open/c HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n";
        let r = exchange(&mut s, bytes, false).await.ok();
        // The server notices the closed connections a moment later: until then a new
        // request may still be refused (503), which is not yet the condition awaited.
        let got = r.as_ref().is_some_and(|r| r.status == 200);
        *answer.borrow_mut() = r;
        got
    })
    .await;
    let r = answer.into_inner().unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.up.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Item 10: pipelining
// ---------------------------------------------------------------------------------------------

/// Item 10: HTTP/1.1 requests pipelined on one connection, refusals among them, are all
/// answered, in order; the refused one reaches nothing.
#[tokio::test]
async fn item10_pipelined_requests_answered_in_order() {
    let env = Env::standard().await;
    let mut s = TcpStream::connect(env.gw.addr()).await.unwrap();
    let reqs = [
        Req::get("/open/1"),
        Req::get("/mcp"),
        Req::new("POST", "/open/3").body(b"three".to_vec()),
        Req::post("/mcp"),
        Req::get("/open/5"),
    ];
    let bytes: Vec<u8> = reqs.iter().flat_map(|r| r.to_bytes()).collect();
    s.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..reqs.len() {
        let r = tokio::time::timeout(IO_TIMEOUT, read_response(&mut s, &mut buf, false))
            .await
            .expect("pipelined answer missing")
            .unwrap_or_else(|e| panic!("after {statuses:?}: {e}"));
        if r.status == 401 {
            assert_eq!(r.json()["error"], "unauthorized", "{r}");
        } else {
            let target = r.json()["target"].as_str().unwrap_or("").to_string();
            assert!(target.starts_with("/open/"), "{r}");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 401, 200, 401, 200]);
    let targets: Vec<String> = env.up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/open/1", "/open/3", "/open/5"]);
    assert_eq!(env.up.requests()[1].body, b"three");
}

// ---------------------------------------------------------------------------------------------
// Item 9: the gateway's own responses
// ---------------------------------------------------------------------------------------------

fn assert_h1_json(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r}");
    assert_eq!(r.json()["error"], code, "{r}");
    assert!(r.json()["error_description"].is_string(), "{r}");
    assert!(r.header("server").is_none(), "{r}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r}");
    // Every answer carries a request id, the pages of requests that never parsed too.
    assert!(
        r.header("x-request-id")
            .is_some_and(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())),
        "{r}"
    );
}

/// Item 9: upstream down → 502, upstream silent → 504, a streamed body over the limit →
/// 413, a head pingora cannot parse → 400, `CONNECT` → 405: each the gateway's JSON, over
/// HTTP/1.1 and HTTP/2, never `Server: Pingora`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item9_upstream_failures_and_pingora_pages_are_json() {
    // Accepts TCP (backlog) and never answers the TLS handshake.
    let (down, hang) = (ClosedPort::new(), SilentPort::new());
    let env = Env::builder(FAILURES)
        .tls()
        .var("DOWN", down.port())
        .var("HANG", hang.port())
        .start()
        .await;
    let addr = env.gw.addr();
    let ca = env.ca().to_string();

    let ca1 = ca.clone();
    let h1 = move |req: Req| {
        let ca = ca1.clone();
        async move {
            let tls = tls_h1(addr, &ca).await;
            h1_over(tls, &req.to_bytes()).await
        }
    };
    let ca2 = ca.clone();
    let h2 = move |method: &'static str, path: &'static str, body: Option<Vec<u8>>| {
        let ca = ca2.clone();
        async move {
            let mut send = h2_connect(addr, &ca).await;
            h2_send(
                &mut send,
                h2_req(method, path).body(()).unwrap(),
                body.as_deref(),
            )
            .await
        }
    };
    // The 504s take the upstream connect timeout (10 s): run them alongside the rest.
    let slow = tokio::spawn({
        let (h1, h2) = (h1.clone(), h2.clone());
        async move {
            (
                h1(Req::get("/hang/x")).await,
                h2("GET", "/hang/x", None).await,
            )
        }
    });

    assert_h1_json(&h1(Req::get("/down/x")).await, 502, "bad_gateway");
    assert_h2_refusal(
        &h2("GET", "/down/x", None).await.unwrap(),
        502,
        "bad_gateway",
    );

    // A body with no declared length that grows past limits.max_body_bytes.
    let big = vec![b'a'; 8192];
    let chunked = {
        let mut b =
            b"POST /open/x HTTP/1.1\r\nHost: mcp.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for c in big.chunks(1024) {
            b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            b.extend_from_slice(c);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"0\r\n\r\n");
        b
    };
    let tls = tls_h1(addr, &ca).await;
    assert_h1_json(&h1_over(tls, &chunked).await, 413, "invalid_request");
    assert_h2_refusal(
        &h2("POST", "/open/x", Some(big)).await.unwrap(),
        413,
        "invalid_request",
    );

    // Pages pingora writes before any hook runs.
    for (raw, status, code) in [
        (&b"GARBAGE\r\n\r\n"[..], 400, "invalid_request"),
        (
            &b"GET /open/x HTTP/1.1\r\nHost: mcp.example.com\r\nBad Name: x\r\n\r\n"[..],
            400,
            "invalid_request",
        ),
        (
            &b"CONNECT mcp.example.com:443 HTTP/1.1\r\nHost: mcp.example.com:443\r\n\r\n"[..],
            405,
            "method_not_allowed",
        ),
    ] {
        let tls = tls_h1(addr, &ca).await;
        assert_h1_json(&h1_over(tls, raw).await, status, code);
        // And on plain TCP the same (no TLS in front).
    }

    let (s1, s2) = tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("504s not answered within 30 s")
        .unwrap();
    assert_h1_json(&s1, 504, "gateway_timeout");
    assert_h2_refusal(&s2.unwrap(), 504, "gateway_timeout");
    env.assert_nothing_forwarded();
}

/// Writes `bytes` on a TLS HTTP/1.1 connection and reads one answer (the 504s take the
/// upstream connect timeout of 10 s: 20 s here).
async fn h1_over(mut tls: tokio_rustls::client::TlsStream<TcpStream>, bytes: &[u8]) -> Resp {
    tokio::time::timeout(Duration::from_secs(20), exchange(&mut tls, bytes, false))
        .await
        .expect("no answer within 20 s")
        .unwrap_or_else(|e| panic!("no answer: {e}"))
}

/// How a raw HTTP/2 exchange ended on stream 1.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RawEnd {
    /// Response HEADERS: the first byte of the header block (`0x8c` is `:status 400`,
    /// `0x88` `:status 200`), and the DATA that followed.
    Answer(u8, Vec<u8>),
    /// RST_STREAM with this error code (1 = PROTOCOL_ERROR).
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
}

pub(crate) fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Header block of literal fields (no indexing, no Huffman): anything, however malformed.
pub(crate) fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0x00);
        for s in [n, v] {
            assert!(s.len() < 127);
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// Sends one request as raw frames (what no well-behaved client library would send) and
/// reports how stream 1 ended.
pub(crate) async fn raw_h2(
    addr: SocketAddr,
    ca: &str,
    fields: &[(&str, &str)],
    data: Option<&[u8]>,
) -> RawEnd {
    raw_h2_gated(addr, ca, fields, data, async {}).await
}

/// [`raw_h2`] that sends the DATA only once `gate` is done.
async fn raw_h2_gated(
    addr: SocketAddr,
    ca: &str,
    fields: &[(&str, &str)],
    data: Option<&[u8]>,
    gate: impl std::future::Future<Output = ()>,
) -> RawEnd {
    let mut tls = tls_connect(addr, ca, b"h2").await;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    let flags = 0x4 | if data.is_none() { 0x1 } else { 0 };
    out.extend(h2_frame(0x1, flags, 1, &hpack(fields)));
    tls.write_all(&out).await.unwrap();
    gate.await;
    if let Some(d) = data {
        tls.write_all(&h2_frame(0x0, 0x1, 1, d)).await.unwrap();
    }
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let mut answer: Option<(u8, Vec<u8>)> = None;
    tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let (ty, flags) = (buf[3], buf[4]);
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let payload = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                match (ty, stream) {
                    (0x4, 0) if flags & 1 == 0 => {
                        tls.write_all(&h2_frame(0x4, 0x1, 0, &[])).await.unwrap();
                    }
                    (0x1, 1) => {
                        answer = Some((payload[0], Vec::new()));
                        if flags & 1 == 1 {
                            return RawEnd::Answer(payload[0], Vec::new());
                        }
                    }
                    (0x0, 1) => {
                        let a = answer.as_mut().expect("DATA before HEADERS");
                        a.1.extend_from_slice(&payload);
                        if flags & 1 == 1 {
                            let (s, b) = answer.take().unwrap();
                            return RawEnd::Answer(s, b);
                        }
                    }
                    (0x3, 1) => {
                        return RawEnd::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()))
                    }
                    (0x7, 0) => {
                        return RawEnd::GoAway(u32::from_be_bytes(
                            payload[4..8].try_into().unwrap(),
                        ))
                    }
                    _ => {}
                }
            }
            let n = tls.read(&mut tmp).await.unwrap_or(0);
            assert!(n > 0, "connection closed without an end for stream 1");
            buf.extend_from_slice(&tmp[..n]);
        }
    })
    .await
    .expect("no end for stream 1")
}

/// Item 9 (HTTP/2 part) and issue 21 item 7: malformed HTTP/2 requests never reach the
/// upstream. pingora and the h2 codec refuse them all before any hook of ours runs, so
/// this records (as the README's evidence) what the client gets: a body-less 400 from
/// pingora for authority confusion; RST_STREAM(PROTOCOL_ERROR) from h2 for an absolute or
/// slash-less `:path`, connection-specific fields (`te` other than `trailers`,
/// `connection`, `upgrade`, `transfer-encoding`), and DATA that disagree with the
/// declared `content-length` (read before connecting, so not even the head goes up).
#[tokio::test]
async fn item9_h2_malformed_requests_refused_before_upstream() {
    // An upstream that counts every byte it receives, complete request or not.
    let raw = Upstream::start();
    let t = STANDARD.to_string() + &route_to("raw", "/raw", &raw.url(), &["auth: none"]);
    let env = tls_env(&t).await;
    let (addr, ca) = (env.gw.addr(), env.ca().to_string());
    let base = |method: &'static str, path: &'static str| {
        vec![
            (":method", method),
            (":scheme", "https"),
            (":authority", "mcp.example.com"),
            (":path", path),
        ]
    };
    let with = |mut f: Vec<(&'static str, &'static str)>,
                extra: &[(&'static str, &'static str)]| {
        f.extend_from_slice(extra);
        f
    };
    // pingora answers authority confusion with a body-less 400 before any hook.
    let r = raw_h2(
        addr,
        &ca,
        &with(base("GET", "/open/x"), &[("host", "other.example.com")]),
        None,
    )
    .await;
    assert_eq!(r, RawEnd::Answer(0x8c, Vec::new()), ":authority vs host");
    // The h2 codec resets connection-specific fields and malformed pseudo-headers.
    for (what, fields) in [
        (
            "absolute :path",
            base("GET", "https://mcp.example.com/open/x"),
        ),
        ("te: gzip", with(base("GET", "/open/x"), &[("te", "gzip")])),
        (
            "connection",
            with(base("GET", "/open/x"), &[("connection", "keep-alive")]),
        ),
        (
            "upgrade",
            with(base("GET", "/open/x"), &[("upgrade", "websocket")]),
        ),
        (
            "transfer-encoding",
            with(base("POST", "/open/x"), &[("transfer-encoding", "chunked")]),
        ),
    ] {
        let r = raw_h2(addr, &ca, &fields, None).await;
        assert_eq!(r, RawEnd::Reset(1), "{what}");
    }
    // A :path without its slash: reset by the codec as well.
    let r = raw_h2(addr, &ca, &base("GET", "open/x"), None).await;
    assert_eq!(r, RawEnd::Reset(1), ":path without slash");
    // Issue 21 item 7: DATA that overrun or fall short of content-length, on an auth: none
    // route whose bodies otherwise stream: reset, and not even the head is forwarded. The
    // DATA go out once the upstream has seen bytes or 1 s has passed, so that a gateway
    // that forwards the head first is caught doing it.
    let post = |cl: &'static str| with(base("POST", "/raw/x"), &[("content-length", cl)]);
    for (cl, what) in [("5", "overrun"), ("20", "short")] {
        let gate = async {
            let _ = within(Duration::from_secs(1), || async {
                raw.bytes_received() > 0
            })
            .await;
        };
        let r = raw_h2_gated(addr, &ca, &post(cl), Some(b"0123456789"), gate).await;
        assert_eq!(r, RawEnd::Reset(1), "{what}");
        assert_eq!(
            raw.bytes_received(),
            0,
            "{what}: bytes reached the upstream"
        );
    }
    env.assert_nothing_forwarded();
    // The same request with an honest length is forwarded intact.
    match raw_h2(
        addr,
        &ca,
        &with(base("POST", "/open/x"), &[("content-length", "10")]),
        Some(b"0123456789"),
    )
    .await
    {
        RawEnd::Answer(0x88, _) => {}
        other => panic!("honest POST: {other:?}"),
    }
    assert_eq!(env.up.only().body, b"0123456789");
}

// ---------------------------------------------------------------------------------------------
// Every refusal, both protocols
// ---------------------------------------------------------------------------------------------

/// Every refusal the gateway can be driven to from outside, over HTTP/1.1 and HTTP/2:
/// the documented status, a JSON body with `error`, `Content-Type: application/json`, no
/// `Server: Pingora`, and nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_gateway_json_over_both_protocols() {
    let admin_token = "admin-token-0123456789abcdef";
    let down = ClosedPort::new();
    let env = Env::builder(REFUSALS)
        .tls()
        .admin_token(admin_token)
        .var("DOWN", down.port())
        .start()
        .await;
    // Revoke every token of subject bob issued until now (bob's is from 10 s ago: a token
    // minted in the same second as the revocation may count as issued after it).
    let bob = env
        .tok()
        .c("sub", serde_json::json!("bob"))
        .c("iat", serde_json::json!(now() - 10))
        .build();
    let r = send_to(
        env.gw.admin_addr(),
        &Req::new("POST", "/revocations")
            .host("localhost")
            .bearer(admin_token)
            .h("content-type", "application/json")
            .body(br#"{"subject": "bob"}"#.to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{r}");

    let (addr, ca) = (env.gw.addr(), env.ca().to_string());
    let good = env.tok().build();
    let bare = env.tok().scope("other").build();
    let wrong_aud = Tok::new(&env.idp.issuer(), "https://other.example.com/mcp").build();
    let call = |name: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#)
            .into_bytes()
    };
    let mut big_mcp = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":""#.to_vec();
    big_mcp.extend(std::iter::repeat_n(b'a', 70_000));
    big_mcp.extend_from_slice(br#""}}"#);
    let bearer = |t: &str| ("authorization".to_string(), format!("Bearer {t}"));
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Vec<(String, String)>,
        Option<Vec<u8>>,
        u16,
    );
    let cases: Vec<Case> = vec![
        ("no route", "GET", "/nowhere", vec![], None, 404),
        ("bad path", "GET", "/mcp/%2e%2e/x", vec![], None, 400),
        ("no token", "POST", "/mcp", vec![], Some(BODY.to_vec()), 401),
        (
            "two Authorization",
            "POST",
            "/mcp",
            vec![bearer(&good), bearer(&good)],
            Some(BODY.to_vec()),
            400,
        ),
        (
            "bad token",
            "POST",
            "/mcp",
            vec![bearer(&wrong_aud)],
            Some(BODY.to_vec()),
            401,
        ),
        (
            "missing scope",
            "POST",
            "/mcp",
            vec![bearer(&bare)],
            Some(BODY.to_vec()),
            403,
        ),
        (
            "origin",
            "POST",
            "/mcp",
            vec![
                bearer(&good),
                ("origin".into(), "https://evil.example".into()),
            ],
            Some(BODY.to_vec()),
            403,
        ),
        (
            "body over max_body_bytes",
            "POST",
            "/mcp",
            vec![bearer(&good)],
            Some(vec![b'a'; 100_001]),
            413,
        ),
        (
            "inspected body over 64 KiB",
            "POST",
            "/mcp",
            vec![bearer(&good)],
            Some(big_mcp),
            413,
        ),
        (
            "not JSON-RPC",
            "POST",
            "/mcp",
            vec![bearer(&good)],
            Some(b"not json".to_vec()),
            400,
        ),
        (
            "tool scope",
            "POST",
            "/mcp",
            vec![bearer(&good)],
            Some(call("delete_all")),
            403,
        ),
        (
            "policy deny",
            "POST",
            "/mcp",
            vec![bearer(&good)],
            Some(call("other_tool")),
            403,
        ),
        (
            "DPoP without proof",
            "POST",
            "/mcp",
            vec![("authorization".into(), format!("DPoP {good}"))],
            Some(BODY.to_vec()),
            401,
        ),
        (
            "headers too large",
            "GET",
            "/mcp",
            vec![("x-pad".into(), "a".repeat(5000))],
            None,
            431,
        ),
        ("upstream down", "GET", "/down/x", vec![], None, 502),
        (
            "introspection unavailable",
            "POST",
            "/mcp",
            vec![bearer("opaque-token-0123456789")],
            Some(BODY.to_vec()),
            503,
        ),
        (
            "revoked",
            "POST",
            "/mcp",
            vec![bearer(&bob)],
            Some(BODY.to_vec()),
            401,
        ),
    ];
    let mut failures = Vec::new();
    for (what, method, path, headers, body, status) in cases {
        // HTTP/1.1
        let mut req = Req::new(method, path);
        for (n, v) in &headers {
            req = req.h(n, v);
        }
        if let Some(b) = &body {
            req = req.h("content-type", "application/json").body(b.clone());
        }
        let r = h1_over(tls_h1(addr, &ca).await, &req.to_bytes()).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status != status
            || v["error"].is_null()
            || r.header("server").is_some()
            || r.header("content-type") != Some("application/json")
        {
            failures.push(format!("HTTP/1.1 {what}: {r}"));
        }
        // HTTP/2
        let mut b = h2_req(method, path);
        for (n, v) in &headers {
            b = b.header(n.as_str(), v.as_str());
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let mut send = h2_connect(addr, &ca).await;
        match h2_send(&mut send, b.body(()).unwrap(), body.as_deref()).await {
            Ok(r) => {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                if r.status != status
                    || v["error"].is_null()
                    || r.headers.get("server").is_some()
                    || r.headers.get("content-type").map(|v| v.as_bytes())
                        != Some(b"application/json")
                {
                    failures.push(format!("HTTP/2 {what}: {r:?}"));
                }
            }
            Err(e) => failures.push(format!("HTTP/2 {what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    env.assert_nothing_forwarded();
}
