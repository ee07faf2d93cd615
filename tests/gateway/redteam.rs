//! The red team's findings against main after issues 13 and 21 (finding N of the report is
//! `findingN_*`): HTTP/2 streams and slow clients against the descriptor caps, slow TLS
//! handshakes, an upstream's unasked-for 101, HTTP/2 `HEAD` refusals, pingora's log lines,
//! and the default caps at any open-file limit.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connections::{h2_frame, hpack, raw_h2, RawEnd};
use crate::harness::*;

/// [`REDTEAM`] with these deadlines (seconds), streams per HTTP/2 connection and caps.
struct Knobs {
    tls: bool,
    head: u32,
    body: u32,
    send: u32,
    handshake: u32,
    streams: u32,
    per: u32,
    total: u32,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            tls: true,
            head: 30,
            body: 30,
            send: 30,
            handshake: 10,
            streams: 32,
            per: 64,
            total: 128,
        }
    }
}

impl Knobs {
    fn builder(&self) -> EnvBuilder {
        self.builder_on(REDTEAM)
    }

    /// On `template`, a variant of [`REDTEAM`].
    fn builder_on(&self, template: &str) -> EnvBuilder {
        let b = Env::builder(template)
            .var("HEAD_TIMEOUT", self.head)
            .var("BODY_TIMEOUT", self.body)
            .var("SEND_TIMEOUT", self.send)
            .var("TLS_TIMEOUT", self.handshake)
            .var("STREAMS", self.streams)
            .var("PER", self.per)
            .var("TOTAL", self.total);
        if self.tls {
            b.tls()
        } else {
            b
        }
    }
}

fn assert_h2_json(r: &H2Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json()["error"], code, "{r:?}");
    assert!(r.headers.get("server").is_none(), "{r:?}");
}

fn assert_h1_json(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r}");
    assert_eq!(r.json()["error"], code, "{r}");
    assert!(r.header("server").is_none(), "{r}");
}

/// Opens an HTTP/2 request whose body never comes (HEADERS without END_STREAM): what it
/// holds until the gateway ends it.
fn hold_stream(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let req = h2_req("POST", path)
        .header("content-length", "10")
        .body(())
        .unwrap();
    send.send_request(req, false).unwrap()
}

async fn h2_answer(resp: h2::client::ResponseFuture, limit: Duration) -> Result<H2Resp, String> {
    tokio::time::timeout(limit, async {
        let resp = resp.await.map_err(|e| format!("response: {e:?}"))?;
        let (parts, mut recv) = resp.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                // A reset after the answer (the body that never came is abandoned).
                Err(_) => break,
            }
        }
        Ok(H2Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    })
    .await
    .map_err(|_| format!("no answer within {limit:?}"))?
}

// ---------------------------------------------------------------------------------------------
// Finding 1: HTTP/2 streams around the connection caps
// ---------------------------------------------------------------------------------------------

/// Finding 1: every request an HTTP/2 connection carries takes places (two: the upstream
/// connection it holds and a watchdog's duplicate) against the same per-address and total
/// caps as the connections, so streams on one connection cannot hold more descriptors than
/// the caps; the stream beyond gets the JSON 429 (with `Retry-After`) and nothing reaches
/// the upstream; the connection's `SETTINGS_MAX_CONCURRENT_STREAMS` is the configured one.
#[tokio::test]
async fn finding1_h2_streams_count_against_caps() {
    let env = Knobs {
        per: 7,
        streams: 5,
        ..Knobs::default()
    }
    .builder()
    .start()
    .await;
    let mut send = h2_connect(env.gw.addr(), env.ca()).await;
    // One request answered: the client has the server's SETTINGS by then.
    let r = h2_send(&mut send, h2_req("GET", "/open/a").body(()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        send.current_max_send_streams(),
        5,
        "max_streams_per_connection"
    );
    // The connection holds 1 place; three held streams 6 more: 7 of 7.
    let mut held = Vec::new();
    for i in 0..3 {
        send = send.ready().await.unwrap();
        held.push(hold_stream(&mut send, &format!("/open/held{i}")));
    }
    // (Each waits for its declared body, read before forwarding on HTTP/2.)
    eventually(Duration::from_secs(10), "3 requests held", || async {
        env.metric("mcpgate_requests_open", &[]).await >= 3.0
    })
    .await;
    let before = env.up.connections();
    send = send.ready().await.unwrap();
    let r = h2_send(
        &mut send,
        h2_req("GET", "/open/more").body(()).unwrap(),
        None,
    )
    .await
    .unwrap();
    assert_h2_json(&r, 429, "too_many_requests");
    assert!(r.headers.get("retry-after").is_some(), "{r:?}");
    // A request that would need a token is refused before any introspection or upstream.
    let r = h2_send(
        &mut send,
        h2_req("POST", "/mcp")
            .header("authorization", format!("Bearer {}", env.tok().build()))
            .header("content-type", "application/json")
            .body(())
            .unwrap(),
        Some(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    )
    .await
    .unwrap();
    assert_h2_json(&r, 429, "too_many_requests");
    assert_eq!(
        env.up.connections(),
        before,
        "a refused stream reached the upstream"
    );
    // A new connection from the same address is refused at the accept as well.
    let mut extra = TcpStream::connect(env.gw.addr()).await.unwrap();
    closed_within(&mut extra, Duration::from_secs(3))
        .await
        .expect("connection over the per-address cap left open");
    // Ending a held stream frees its places.
    let (_, mut s) = held.pop().unwrap();
    s.send_reset(h2::Reason::CANCEL);
    let ok = std::cell::Cell::new(false);
    eventually(Duration::from_secs(10), "places freed", || async {
        let Ok(mut s2) = send.clone().ready().await else {
            return false;
        };
        let r = h2_send(
            &mut s2,
            h2_req("GET", "/open/after").body(()).unwrap(),
            None,
        )
        .await;
        let good = r.is_ok_and(|r| r.status == 200);
        ok.set(good);
        good
    })
    .await;
    assert!(ok.get());
}

/// Finding 1 (and 2): a streamed request body has a whole-body deadline on every route,
/// not only inspected ones: an HTTP/2 stream that sends HEADERS and never any DATA gets the
/// JSON 408 at `request_body_timeout_seconds`, on an `auth: none` route (its head already
/// forwarded: the upstream connection is cut) and on a policy route (nothing forwarded).
#[tokio::test]
async fn finding1_h2_stream_without_data_cut_at_body_deadline() {
    let env = Knobs {
        body: 2,
        ..Knobs::default()
    }
    .builder()
    .start()
    .await;
    let mut send = h2_connect(env.gw.addr(), env.ca()).await;
    // With a declared length the body is read before forwarding; without one it streams
    // (the head is forwarded, the exchange cut at the deadline).
    for (path, length) in [
        ("/open/nodata", Some("10")),
        ("/open/nolength", None),
        ("/mcp", Some("10")),
    ] {
        send = send.ready().await.unwrap();
        let mut req = h2_req("POST", path);
        if let Some(n) = length {
            req = req.header("content-length", n);
        }
        let req = req
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", env.tok().build()))
            .body(())
            .unwrap();
        let start = Instant::now();
        let (resp, _body) = send.send_request(req, false).unwrap();
        let r = h2_answer(resp, Duration::from_secs(10)).await.unwrap();
        let took = start.elapsed();
        assert_h2_json(&r, 408, "invalid_request");
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
            "{path}: {took:?}"
        );
    }
    eventually(
        Duration::from_secs(5),
        "upstream connection released",
        || async { env.up.open_connections() == 0 },
    )
    .await;
    // The policy route read nothing to judge: nothing forwarded there.
    assert!(env.up.requests().iter().all(|r| r.path() != "/mcp"));
    assert!(
        env.metric(
            "mcpgate_connection_timeouts_total",
            &[("kind", "request_body")]
        )
        .await
            >= 3.0
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 2: slow bodies, slow readers, the default caps
// ---------------------------------------------------------------------------------------------

/// Finding 2: an HTTP/1.1 body trickled one byte a second (each read well within any
/// per-read timeout) is cut at the whole-body deadline with the JSON 408 and the connection
/// closed, on a streamed (`auth: none`) route and on an inspected one.
#[tokio::test]
async fn finding2_slow_body_cut_at_whole_body_deadline() {
    let env = Knobs {
        tls: false,
        body: 2,
        ..Knobs::default()
    }
    .builder()
    .start()
    .await;
    let token = env.tok().build();
    for path in ["/open/slow", "/mcp"] {
        let mut s = TcpStream::connect(env.gw.addr()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: mcp.example.com\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 7\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let start = Instant::now();
        let (mut r, mut w) = s.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..7 {
                if w.write_all(b"{").await.is_err() {
                    break;
                }
                pace(Duration::from_secs(1)).await;
            }
            w
        });
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            read_response(&mut r, &mut Vec::new(), false),
        )
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within 10 s"))
        .unwrap();
        let took = start.elapsed();
        assert_h1_json(&resp, 408, "invalid_request");
        assert!(took < Duration::from_secs(6), "{path}: {took:?}");
        closed_within(&mut r, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{path}: connection {e}"));
        trickle.abort();
    }
    eventually(
        Duration::from_secs(5),
        "upstream connection released",
        || async { env.up.open_connections() == 0 },
    )
    .await;
    assert!(env.up.requests().iter().all(|r| r.path() != "/mcp"));
}

/// Finding 2: a client that never reads its (large) answer is cut after
/// `send_timeout_seconds` without progress, over HTTP/1.1 and HTTP/2, and the upstream
/// connection it held is released.
#[tokio::test]
async fn finding2_slow_reader_cut_by_send_timeout() {
    const SIZE: usize = 48 << 20;
    let up = Upstream::with(|_| Reply::full(200, "application/octet-stream", vec![b'x'; SIZE]));
    let env = Knobs {
        send: 2,
        ..Knobs::default()
    }
    .builder()
    .upstream(up)
    .start()
    .await;
    // HTTP/1.1 over TLS: send the request, read nothing.
    let mut tls = tls_h1(env.gw.addr(), env.ca()).await;
    tls.write_all(b"GET /open/big HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "request forwarded", || async {
        env.up.count() >= 1
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "upstream released (HTTP/1.1)",
        || async { env.up.open_connections() == 0 },
    )
    .await;
    // What the client can still read ends well short of the answer.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "HTTP/1.1 connection still open");
    assert!(got < SIZE, "the whole answer was delivered: {got}");
    // HTTP/2: a stream whose window is never released.
    let mut send = h2_connect(env.gw.addr(), env.ca()).await;
    send = send.ready().await.unwrap();
    let (resp, _) = send
        .send_request(h2_req("GET", "/open/big2").body(()).unwrap(), true)
        .unwrap();
    let resp = tokio::time::timeout(IO_TIMEOUT, resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually(
        Duration::from_secs(20),
        "upstream released (HTTP/2)",
        || async { env.up.open_connections() == 0 },
    )
    .await;
    drop(resp);
}

/// Finding 11: the default caps are consistent at any open-file limit (the red team's
/// `ulimit -n 511` made `check` fail on the defaults alone).
#[test]
fn finding11_default_caps_consistent_at_any_ulimit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "listen:\n  address: 127.0.0.1:18080\n  public_url: https://mcp.example.com\n\
         admin:\n  address: 127.0.0.1:18081\n\
         routes:\n  - name: open\n    path_prefix: /\n    upstream: http://127.0.0.1:1\n    auth: none\n",
    )
    .unwrap();
    for n in [96, 256, 511, 512, 1024] {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {n} && exec \"$0\" check --config \"$1\""
            ))
            .arg(gateway_bin())
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ulimit -n {n}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 5: slow TLS handshakes
// ---------------------------------------------------------------------------------------------

/// Finding 5: a connection counts from its accept, its TLS handshake included (three silent
/// connections fill a per-address cap of 3: the fourth is closed at once), and a handshake
/// that does not finish within `tls_handshake_timeout_seconds` is cut.
#[tokio::test]
async fn finding5_slow_tls_handshake_counted_and_cut() {
    let env = Knobs {
        handshake: 2,
        per: 3,
        total: 64,
        ..Knobs::default()
    }
    .builder()
    .start()
    .await;
    let addr = env.gw.addr();
    let start = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut silent2 = TcpStream::connect(addr).await.unwrap();
    // Half a ClientHello record, then nothing.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "3 connections admitted", || async {
        env.metric("mcpgate_connections_open", &[]).await >= 3.0
    })
    .await;
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let t = closed_within(&mut fourth, Duration::from_secs(1))
        .await
        .expect("a fourth handshaking connection was admitted");
    assert!(t < Duration::from_secs(1));
    for s in [&mut silent, &mut silent2, &mut partial] {
        closed_within(s, Duration::from_secs(6))
            .await
            .expect("slow handshake not cut");
    }
    assert!(start.elapsed() >= Duration::from_millis(1500));
    assert!(
        env.metric(
            "mcpgate_connection_timeouts_total",
            &[("kind", "tls_handshake")]
        )
        .await
            >= 3.0
    );
    // The places are free again: a real client is served.
    let mut send = h2_connect(addr, env.ca()).await;
    let r = h2_send(&mut send, h2_req("GET", "/open/x").body(()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Finding 7: an upstream's 101 without an upgrade request
// ---------------------------------------------------------------------------------------------

/// Finding 7: an upstream that answers 101 to a request that asked for no upgrade gets the
/// client the gateway's JSON 502, and nothing of what followed the 101 (HTTP/1.1 and
/// HTTP/2).
#[tokio::test]
async fn finding7_upstream_101_without_upgrade_is_502() {
    let up = Upstream::with(|_| Reply::Full {
        status: 101,
        headers: vec![
            ("Upgrade".into(), "websocket".into()),
            ("Connection".into(), "Upgrade".into()),
        ],
        body: b"RAW-AFTER-101 {\"tools\":[\"delete_everything\"]}".to_vec(),
    });
    let env = Knobs::default().builder().upstream(up).start().await;
    let tls = tls_h1(env.gw.addr(), env.ca()).await;
    let r = tokio::time::timeout(
        IO_TIMEOUT,
        exchange(
            &mut { tls },
            b"GET /open/x HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n",
            false,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_h1_json(&r, 502, "bad_gateway");
    assert!(!r.text().contains("RAW-AFTER"), "{r}");
    let mut send = h2_connect(env.gw.addr(), env.ca()).await;
    let r = h2_send(&mut send, h2_req("GET", "/open/y").body(()).unwrap(), None)
        .await
        .unwrap();
    assert_h2_json(&r, 502, "bad_gateway");
    assert!(!String::from_utf8_lossy(&r.body).contains("RAW-AFTER"));
}

// ---------------------------------------------------------------------------------------------
// Finding 8: HTTP/2 HEAD refusals
// ---------------------------------------------------------------------------------------------

/// The frames the server sent on stream 1, (type, flags, payload length), until it ended.
async fn h2_frames_of(
    addr: std::net::SocketAddr,
    ca: &str,
    fields: &[(&str, &str)],
) -> Vec<(u8, u8, usize)> {
    let mut tls = tls_connect(addr, ca, b"h2").await;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x5, 1, &hpack(fields)));
    tls.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let mut frames = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, async {
        loop {
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let (ty, flags) = (buf[3], buf[4]);
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                buf.drain(..9 + len);
                if ty == 0x4 && stream == 0 && flags & 1 == 0 {
                    tls.write_all(&h2_frame(0x4, 0x1, 0, &[])).await.unwrap();
                }
                if stream == 1 {
                    frames.push((ty, flags, len));
                    if ty == 0x3 || flags & 1 == 1 {
                        return;
                    }
                }
            }
            let n = tls.read(&mut tmp).await.unwrap_or(0);
            assert!(n > 0, "closed before stream 1 ended");
            buf.extend_from_slice(&tmp[..n]);
        }
    })
    .await
    .expect("stream 1 did not end");
    frames
}

/// Finding 8: the gateway's answers to an HTTP/2 `HEAD` (a refusal, a route-less path)
/// end the stream on their HEADERS frame: no DATA frame at all (curl reported
/// PROTOCOL_ERROR on the empty one that followed).
#[tokio::test]
async fn finding8_h2_head_refusals_carry_no_data() {
    let env = Knobs::default().builder().start().await;
    for path in ["/mcp", "/nowhere", "/mcp/x"] {
        let frames = h2_frames_of(
            env.gw.addr(),
            env.ca(),
            &[
                (":method", "HEAD"),
                (":scheme", "https"),
                (":authority", "mcp.example.com"),
                (":path", path),
            ],
        )
        .await;
        assert_eq!(frames.len(), 1, "{path}: {frames:?}");
        let (ty, flags, _) = frames[0];
        assert_eq!((ty, flags & 1), (0x1, 1), "{path}: {frames:?}");
    }
    // HTTP/1.1 HEAD refusals carry their headers and no body either.
    let mut tls = tls_h1(env.gw.addr(), env.ca()).await;
    let r = exchange(
        &mut tls,
        b"HEAD /mcp HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n",
        true,
    )
    .await
    .unwrap();
    assert!(r.status >= 400, "{r}");
    assert!(r.body.is_empty(), "{r}");
    env.assert_nothing_forwarded();
}

// ---------------------------------------------------------------------------------------------
// Finding 10: pingora's log lines
// ---------------------------------------------------------------------------------------------

/// Finding 10: with an upstream that answers garbage, pingora's ERROR line neither carries
/// the request target's query (`?access_token=…`) nor the raw upstream bytes, in either log
/// format.
#[tokio::test]
async fn finding10_pingora_error_lines_redacted() {
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gaddr = garbage.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = garbage.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"GARBAGE-UPSTREAM-0123456789abcdef\r\nX: UPSTREAMSECRETVALUE42\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    let secret = "QUERYSECRET-0123456789abcdefghij";
    remember(secret);
    remember("UPSTREAMSECRETVALUE42");
    remember("GARBAGE-UPSTREAM-0123456789abcdef");
    for format in ["json", "pretty"] {
        let t = REDTEAM.to_string()
            + &route_to(
                "garbage",
                "/garbage",
                &format!("http://{gaddr}"),
                &["auth: none"],
            );
        let env = Knobs {
            tls: false,
            ..Knobs::default()
        }
        .builder_on(&t)
        .args(&["--log-format", format])
        .start()
        .await;
        let r = env
            .send(Req::get(&format!(
                "/garbage/x?access_token={secret}&api_key={secret}"
            )))
            .await;
        assert_h1_json(&r, 502, "bad_gateway");
        let logs = env.gw.wait_log("pingora", 1).await;
        assert!(!logs.contains(secret), "{format}: {logs}");
        assert!(!logs.contains("UPSTREAMSECRET"), "{format}: {logs}");
        env.gw.assert_no_tokens();
    }
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Findings 3 and 4: session bindings
// ---------------------------------------------------------------------------------------------

/// An MCP server that issues the session id of `X-Test-Session` when the request carries
/// none, and echoes the request's `Mcp-Session-Id` otherwise (as the red team's did).
fn session_upstream() -> Upstream {
    Upstream::with(|req: &Request| {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(s) = req
            .header("mcp-session-id")
            .or_else(|| req.header("x-test-session"))
        {
            headers.push(("Mcp-Session-Id".into(), s.to_string()));
        }
        Reply::Full {
            status: 200,
            headers,
            body: br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec(),
        }
    })
}

const LIST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// A POST of `tools/list` to `path` with `token` and these extra headers, over HTTP/1.1 (TLS)
/// or HTTP/2: (status, `error`, session id answered).
async fn session_post(
    env: &Env,
    h2: bool,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (u16, Option<String>, Option<String>) {
    if h2 {
        let mut send = h2_connect(env.gw.addr(), env.ca()).await;
        let mut req = h2_req("POST", path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (n, v) in extra {
            req = req.header(*n, *v);
        }
        let r = h2_send(&mut send, req.body(()).unwrap(), Some(LIST))
            .await
            .unwrap();
        let err = (r.status >= 400).then(|| r.json()["error"].as_str().unwrap().to_string());
        let sid = r
            .headers
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status, err, sid)
    } else {
        let mut req = Req::post(path)
            .bearer(token)
            .h("Accept", "application/json, text/event-stream");
        for (n, v) in extra {
            req = req.h(n, v);
        }
        let mut tls = tls_h1(env.gw.addr(), env.ca()).await;
        let r = exchange(&mut tls, &req.to_bytes(), false).await.unwrap();
        let err = (r.status >= 400).then(|| r.json()["error"].as_str().unwrap().to_string());
        (
            r.status,
            err,
            r.header("mcp-session-id").map(str::to_string),
        )
    }
}

/// Finding 3: a session id the gateway holds no binding for (opened before a restart or on
/// another replica: here, directly at the upstream) is never bound to whoever presents it
/// first (the upstream's echo binds nothing, so alice still uses her session afterwards);
/// a route with `unknown_sessions: refuse` answers it 404 `session_unknown` and forwards
/// nothing; a session opened through the gateway stays its opener's (bob gets 404).
#[tokio::test]
async fn finding3_unknown_session_never_taken_over() {
    let t = REDTEAM.to_string()
        + "    unknown_sessions: forward\n"
        + &route_to(
            "strict",
            "/strict",
            "{UP}",
            &["scopes: [mcp:read]", "unknown_sessions: refuse"],
        );
    let env = Knobs::default()
        .builder_on(&t)
        .upstream(session_upstream())
        .start()
        .await;
    let aud = serde_json::json!([R, "https://mcp.example.com/strict"]);
    let alice = env.tok().c("aud", aud.clone()).build();
    let bob = env
        .tok()
        .c("aud", aud)
        .c("sub", serde_json::json!("bob"))
        .build();
    for h2 in [false, true] {
        // Opened behind the gateway's back (what a restart or another replica looks like).
        let s = format!("sess-{}", random_hex(8));
        let sid = [("Mcp-Session-Id", s.as_str())];
        let (st, _, echoed) = session_post(&env, h2, "/open/x", &bob, &sid).await;
        assert_eq!((st, echoed.as_deref()), (200, Some(s.as_str())), "h2={h2}");
        // Bob presents it on a forward route: forwarded, but he does not become its owner.
        let (st, _, _) = session_post(&env, h2, "/mcp", &bob, &sid).await;
        assert_eq!(st, 200, "h2={h2}");
        let (st, err, _) = session_post(&env, h2, "/mcp", &alice, &sid).await;
        assert_eq!(
            (st, err),
            (200, None),
            "h2={h2}: alice lost her session to bob"
        );
        // The refusing route: 404 session_unknown for both, nothing forwarded.
        let before = env.up.count();
        for who in [&alice, &bob] {
            let (st, err, _) = session_post(&env, h2, "/strict", who, &sid).await;
            assert_eq!((st, err.as_deref()), (404, Some("not_found")), "h2={h2}");
        }
        assert_eq!(
            env.up.count(),
            before,
            "h2={h2}: an unknown session was forwarded"
        );
        // Opened through the gateway: bound to alice; bob gets 404 on both routes, and
        // alice keeps it even after bob's attempts.
        let s2 = format!("sess-{}", random_hex(8));
        let (st, _, got) = session_post(
            &env,
            h2,
            "/strict",
            &alice,
            &[("X-Test-Session", s2.as_str())],
        )
        .await;
        assert_eq!((st, got.as_deref()), (200, Some(s2.as_str())), "h2={h2}");
        let sid2 = [("Mcp-Session-Id", s2.as_str())];
        let before = env.up.count();
        for path in ["/mcp", "/strict"] {
            let (st, err, _) = session_post(&env, h2, path, &bob, &sid2).await;
            assert_eq!(
                (st, err.as_deref()),
                (404, Some("not_found")),
                "h2={h2} {path}"
            );
        }
        assert_eq!(env.up.count(), before);
        let (st, _, _) = session_post(&env, h2, "/strict", &alice, &sid2).await;
        assert_eq!(st, 200, "h2={h2}");
    }
    assert!(env.gw.logs().contains("session_unknown"));
    // The ids forwarded without a binding are counted (lost bindings are not silent).
    assert!(
        env.metric("mcpgate_sessions_unknown_total", &[("route", "mcp")])
            .await
            >= 2.0
    );
}

/// Finding 4: a session is bound to the issuer *entry* that verified its opener's token,
/// not the `iss` string: a token of the staging entry (same `iss`, same `sub`) cannot use a
/// session the production entry's alice opened.
#[tokio::test]
async fn finding4_session_bound_to_issuer_entry() {
    let staging = MockIdp::start();
    staging.set_jwks(serde_json::json!({"keys": [ec_jwk(&keys().other, "o1", "P-256", "ES256")]}));
    // (On TLS, for HTTP/2.)
    let template = TWO_ENTRIES.replace("  threads: 1\n", "  threads: 1\n{TLS}");
    let env = Env::builder(&template)
        .var("STAGING_JWKS", staging.jwks_uri())
        .upstream(session_upstream())
        .tls()
        .start()
        .await;
    let aud = serde_json::json!(["https://mcp.example.com/both"]);
    let prod = Tok::new(&env.idp.issuer(), R).c("aud", aud.clone()).build();
    let stage = Tok::new(&env.idp.issuer(), R)
        .c("aud", aud)
        .key("ES256", "o1", Signer::Other)
        .build();
    for h2 in [false, true] {
        let s = format!("sess-{}", random_hex(8));
        let (st, _, got) =
            session_post(&env, h2, "/both", &prod, &[("X-Test-Session", s.as_str())]).await;
        assert_eq!((st, got.as_deref()), (200, Some(s.as_str())), "h2={h2}");
        let sid = [("Mcp-Session-Id", s.as_str())];
        let before = env.up.count();
        let (st, err, _) = session_post(&env, h2, "/both", &stage, &sid).await;
        assert_eq!((st, err.as_deref()), (404, Some("not_found")), "h2={h2}");
        assert_eq!(env.up.count(), before, "h2={h2}");
        let (st, _, _) = session_post(&env, h2, "/both", &prod, &sid).await;
        assert_eq!(st, 200, "h2={h2}");
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 12: identity and client-address headers of other proxies
// ---------------------------------------------------------------------------------------------

/// What the red team still got through, and the families they belong to.
const FOREIGN_HEADERS: &[&str] = &[
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "Client-IP",
    "X-Original-Forwarded-For",
    "X-Forwarded",
    "Forwarded-For",
    "X-Original-URI",
    "X-Original-Method",
    "X-Envoy-Original-Path",
    "X-Envoy-External-Address",
    "X-Authenticated-User",
    "X-Authenticated-Userid",
    "X-Consumer-ID",
    "X-Consumer-Username",
    "X-Consumer-Custom-ID",
    "X-Credential-Identifier",
    "X-Userinfo",
    "OIDC_CLAIM_sub",
    "Oidc-Claim-Email",
    "Tailscale-User-Login",
    "Tailscale-User-Name",
    "X-Jwt-Payload",
    "X-Auth-Token",
    "X-Auth-Anything",
    "X-Method-Override",
    "X-User-Email",
    "X-Remote-IP",
    "X-Remote-Addr",
    "X-Originating-IP",
    "Fastly-Client-IP",
    "X-Kong-Jwt-Claim-Sub",
    "X-Spiffe-Id",
    "X-Oidc-Sub",
    "X-Iap-User",
    "X-Appengine-User-Email",
    "X-Vercel-Ip",
    "X-Jwt-Assertion",
    "X-Principal",
    "X-Authorization",
    "X-Proxy-User",
    "X-Groups",
    "X-Roles",
];

/// Finding 12: none of these client-sent headers reaches the upstream (HTTP/1.1 and
/// HTTP/2, a token route and an `auth: none` route), while the gateway's own identity
/// headers and an unrelated header still arrive.
#[tokio::test]
async fn finding12_foreign_identity_headers_stripped() {
    let env = Knobs::default().builder().start().await;
    let token = env.tok().build();
    for h2 in [false, true] {
        for path in ["/open/h", "/mcp"] {
            let before = env.up.count();
            let status = if h2 {
                let mut send = h2_connect(env.gw.addr(), env.ca()).await;
                let mut req = h2_req("GET", path)
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-keep", "1");
                for n in FOREIGN_HEADERS {
                    req = req.header(*n, "spoofed");
                }
                h2_send(&mut send, req.body(()).unwrap(), None)
                    .await
                    .unwrap()
                    .status
            } else {
                let mut req = Req::get(path).bearer(&token).h("X-Keep", "1");
                for n in FOREIGN_HEADERS {
                    req = req.h(n, "spoofed");
                }
                let mut tls = tls_h1(env.gw.addr(), env.ca()).await;
                exchange(&mut tls, &req.to_bytes(), false)
                    .await
                    .unwrap()
                    .status
            };
            assert!(status < 500, "h2={h2} {path}: {status}");
            assert_eq!(env.up.count(), before + 1, "h2={h2} {path}");
            let got = env.up.requests().pop().unwrap();
            for n in FOREIGN_HEADERS {
                assert_eq!(
                    got.header_all_loose(n),
                    Vec::<&str>::new(),
                    "h2={h2} {path}: {n}"
                );
            }
            assert_eq!(got.header("x-keep"), Some("1"));
            if path == "/mcp" {
                assert_eq!(got.header("x-auth-subject"), Some("alice"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 13: HTTP/2 authority
// ---------------------------------------------------------------------------------------------

/// Finding 13: an HTTP/2 request with neither `:authority` nor `host`, or with userinfo in
/// `:authority`, reaches nothing. pingora answers it before any hook of ours (its
/// body-less 400, `invalid_request_authority` in pingora-core's `v2/server.rs`; the README
/// names the change a JSON body would need): this records that behaviour.
#[tokio::test]
async fn finding13_h2_authority_missing_or_with_userinfo_reaches_nothing() {
    let env = Knobs::default().builder().start().await;
    let (addr, ca) = (env.gw.addr(), env.ca().to_string());
    for (what, fields) in [
        (
            "no :authority, no host",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/open/x"),
            ],
        ),
        (
            "userinfo",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "user:pw@mcp.example.com"),
                (":path", "/open/x"),
            ],
        ),
    ] {
        let r = raw_h2(addr, &ca, &fields, None).await;
        assert_eq!(r, RawEnd::Answer(0x8c, Vec::new()), "{what}");
    }
    env.assert_nothing_forwarded();
}

// ---------------------------------------------------------------------------------------------
// Finding 14 (info)
// ---------------------------------------------------------------------------------------------

/// Finding 14: `:scheme` other than http/https is our JSON 400 (nothing forwarded); two
/// HTTP/2 `cookie` fields reach an HTTP/1.1 upstream as one `Cookie` joined with `; `
/// (RFC 9113 §8.2.3).
#[tokio::test]
async fn finding14_h2_scheme_and_cookies() {
    let env = Knobs::default().builder().start().await;
    let (addr, ca) = (env.gw.addr(), env.ca().to_string());
    for scheme in ["javascript", "file", "ftp"] {
        let fields = [
            (":method", "GET"),
            (":scheme", scheme),
            (":authority", "mcp.example.com"),
            (":path", "/open/x"),
        ];
        match raw_h2(addr, &ca, &fields, None).await {
            RawEnd::Answer(0x8c, body) => {
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("{scheme}: not JSON ({e}): {body:?}"));
                assert_eq!(v["error"], "invalid_request", "{scheme}");
            }
            other => panic!("{scheme}: {other:?}"),
        }
    }
    env.assert_nothing_forwarded();
    let mut send = h2_connect(addr, &ca).await;
    let req = h2_req("GET", "/open/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(())
        .unwrap();
    let r = h2_send(&mut send, req, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(env.up.only().header_all("cookie"), vec!["a=1; b=2"]);
}

/// Finding 14: `POST /revocations` with an issuer no configured entry has (a trailing
/// slash) is refused with 400 naming the configured issuers, and records nothing.
#[tokio::test]
async fn finding14_revocation_for_unknown_issuer_refused() {
    const ADMIN: &str = "admin-token-0123456789abcdef";
    let t = REDTEAM.replace(
        "admin:\n  address: 127.0.0.1:{ADMIN}\n",
        "admin:\n  address: 127.0.0.1:{ADMIN}\n  token_file: {ADMIN_TOKEN_FILE}\n",
    );
    let env = Knobs {
        tls: false,
        ..Knobs::default()
    }
    .builder_on(&t)
    .admin_token(ADMIN)
    .start()
    .await;
    let iss = env.idp.issuer();
    let post = |issuer: String| {
        Req::post("/revocations")
            .host("localhost")
            .bearer(ADMIN)
            .body(
                serde_json::to_vec(&serde_json::json!({"subject": "alice", "issuer": issuer}))
                    .unwrap(),
            )
    };
    let r = send(env.gw.admin_addr(), &post(format!("{iss}/"))).await;
    assert_eq!(r.status, 400, "{r}");
    let d = r.json()["error_description"].as_str().unwrap().to_string();
    assert!(d.contains(&iss), "{d}");
    let list = send(
        env.gw.admin_addr(),
        &Req::get("/revocations").host("localhost").bearer(ADMIN),
    )
    .await;
    assert_eq!(list.json()["revocations"], serde_json::json!([]), "{list}");
    let r = send(env.gw.admin_addr(), &post(iss.clone())).await;
    assert_eq!(r.status, 201, "{r}");
}
