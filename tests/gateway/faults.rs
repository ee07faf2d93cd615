//! The fault matrix (README, "Fault matrix"): one test per dependency × fault that no other
//! test already measures, each asserting what a client sees, how fast (a bound), and what
//! `/metrics` and `/readyz` say. Each prints one `fault-matrix | …` line with the measured
//! values (`cargo test --test gateway faults:: -- --nocapture | grep fault-matrix`); the
//! README's table is written from those lines, and its bounds are the ones asserted here.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// One measured row, printed for the README's table.
fn row(fault: &str, client: &str, took: Duration, readyz: u16, metrics: &str) {
    println!(
        "fault-matrix | {fault} | {client} | {} ms | readyz {readyz} | {metrics}",
        took.as_millis()
    );
}

async fn timed(env: &Env, req: Req) -> (Resp, Duration) {
    let started = Instant::now();
    let r = env.send(req).await;
    (r, started.elapsed())
}

async fn readyz(env: &Env) -> u16 {
    env.admin("/readyz").await.status
}

/// A 503 outage answer: `Retry-After`, the gateway's JSON, nothing forwarded.
fn assert_outage(env: &Env, r: &Resp) {
    assert_eq!(r.status, 503, "{r}");
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.trim().parse::<u64>().is_ok()),
        "{r}"
    );
    assert_json_error(r, None);
    env.assert_nothing_forwarded();
}

fn refreshes(m: &Exposition, result: &str) -> f64 {
    m.value(
        "mcpgate_jwks_refreshes_total",
        &[("issuer", "as"), ("result", result)],
    )
}

// ---------------------------------------------------------------------------------------------
// JWKS
// ---------------------------------------------------------------------------------------------

/// JWKS slower than the fetch deadline (5 s): at a cold start the first requests wait for
/// the fetch at most that long and get 503; once keys are cached a slow endpoint costs a
/// request nothing.
#[tokio::test]
async fn fault_jwks_slow() {
    let idp = MockIdp::start();
    idp.set_mode(IdpMode::Slow(Duration::from_secs(8)));
    let env = Env::start_with(STANDARD, idp, false).await;
    let (r, took) = timed(&env, Req::post("/mcp").bearer(&env.tok().build())).await;
    assert_outage(&env, &r);
    assert!(took < Duration::from_secs(7), "waited {took:?}");
    assert_eq!(readyz(&env).await, 503);
    row(
        "JWKS slow (8 s), cold start",
        "503 + Retry-After",
        took,
        503,
        "jwks_refreshes_total{result=error} after the 5 s deadline",
    );
    eventually(
        Duration::from_secs(10),
        "a failed refresh counted",
        || async { refreshes(&env.metrics().await, "error") >= 1.0 },
    )
    .await;

    // Warm: keys cached, then the endpoint turns slow.
    let env = Env::standard().await;
    env.idp.set_mode(IdpMode::Slow(Duration::from_secs(8)));
    let (r, took) = timed(&env, Req::post("/mcp").bearer(&env.tok().build())).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(took < Duration::from_secs(1), "waited {took:?}");
    // An unknown kid asks for a refetch, which must not hold the request past the deadline.
    let t = env.tok().key("ES256", "k3", Signer::K3).build();
    let (r, took_kid) = timed(&env, Req::post("/mcp").bearer(&t)).await;
    assert!(r.status == 401 || r.status == 503, "{r}");
    assert!(took_kid < Duration::from_secs(7), "waited {took_kid:?}");
    assert_eq!(readyz(&env).await, 200);
    row(
        "JWKS slow (8 s), keys cached",
        &format!(
            "200 for known keys; unknown kid {} after {} ms",
            r.status,
            took_kid.as_millis()
        ),
        took,
        200,
        "-",
    );
}

/// A JWKS endpoint answering 200 with something that is not a key set.
#[tokio::test]
async fn fault_jwks_garbage() {
    let idp = MockIdp::start();
    idp.set_jwks(json!({"keys": "not a key set"}));
    let env = Env::start_with(STANDARD, idp, false).await;
    let (r, took) = timed(&env, Req::post("/mcp").bearer(&env.tok().build())).await;
    assert_outage(&env, &r);
    assert!(took < Duration::from_secs(2), "waited {took:?}");
    assert_eq!(readyz(&env).await, 503);
    let m = env.metrics().await;
    assert!(refreshes(&m, "error") >= 1.0);
    assert_eq!(refreshes(&m, "success"), 0.0);
    row(
        "JWKS garbage, cold start",
        "503 + Retry-After",
        took,
        503,
        "jwks_refreshes_total{result=error}",
    );

    // Warm: the cached keys stay; the garbage never replaces them.
    let env = Env::standard().await;
    env.idp.set_jwks(json!(["garbage"]));
    let t = env.tok().key("ES256", "k3", Signer::K3).build(); // forces a refetch
    let (r, _) = timed(&env, Req::post("/mcp").bearer(&t)).await;
    assert_invalid_token(&r, PRM);
    env.assert_nothing_forwarded();
    eventually(
        Duration::from_secs(10),
        "the garbage refetch counted as an error",
        || async { refreshes(&env.metrics().await, "error") >= 1.0 },
    )
    .await;
    let (r, took) = timed(&env, Req::post("/mcp").bearer(&env.tok().build())).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(readyz(&env).await, 200);
    row(
        "JWKS garbage, keys cached",
        "200 with the cached keys; an unknown kid 401",
        took,
        200,
        "jwks_refreshes_total{result=error}",
    );
}

/// JWKS unreachable after the keys were loaded: the cached keys keep serving.
#[tokio::test]
async fn fault_jwks_down_after_start() {
    let env = Env::standard().await;
    env.idp.set_mode(IdpMode::Hangup);
    let (r, took) = timed(&env, Req::post("/mcp").bearer(&env.tok().build())).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(took < Duration::from_secs(1), "waited {took:?}");
    assert_eq!(readyz(&env).await, 200);
    row(
        "JWKS down, keys cached",
        "200 (cached keys)",
        took,
        200,
        "jwks_age_seconds grows",
    );
}

// ---------------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------------

fn script(parts: Vec<(u64, &'static [u8])>, end: End) -> Upstream {
    Upstream::with(move |_req: &Request| {
        Reply::Script(
            parts
                .iter()
                .map(|(ms, b)| (Duration::from_millis(*ms), b.to_vec()))
                .collect(),
            end,
        )
    })
}

/// The upstream resets the connection after half of a declared body.
#[tokio::test]
async fn fault_upstream_reset_mid_response() {
    let up = script(
        vec![(
            0,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":",
        )],
        End::Reset,
    );
    let env = Env::builder(STANDARD).upstream(up).start().await;
    let started = Instant::now();
    let got = Stream::open(env.gw.addr(), &Req::get("/open/x")).await;
    let took = started.elapsed();
    // The head was already relayed: the client sees 200 and then a body cut short (never a
    // complete one of the declared length).
    let mut s = got.unwrap();
    assert_eq!(s.status, 200);
    let mut body = Vec::new();
    while let Ok(Some(piece)) = s.next(Duration::from_secs(5)).await {
        body.extend(piece);
    }
    assert!(body.len() < 100, "a complete body from a reset upstream");
    // The client can tell: a declared length that never arrives, or a chunked body without
    // its last chunk.
    if s.header("transfer-encoding").is_some() {
        assert_eq!(s.clean_end, Some(false), "a cut body ended cleanly");
    } else {
        assert_eq!(s.header("content-length"), Some("100"));
    }
    row(
        "upstream reset mid-response",
        "200 head, then the body cut short (connection closed)",
        took,
        readyz(&env).await,
        "-",
    );
}

/// The upstream takes 3 s to send its response head: no read timeout cuts it (streams may
/// idle), the client waits and gets the answer.
#[tokio::test]
async fn fault_upstream_slow_headers() {
    let up = script(
        vec![(
            3000,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )],
        End::Close,
    );
    let env = Env::builder(STANDARD).upstream(up).start().await;
    let (r, took) = timed(&env, Req::get("/open/x")).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    row(
        "upstream slow headers (3 s)",
        "200 when the upstream answers",
        took,
        readyz(&env).await,
        "upstream_seconds",
    );
}

/// The upstream sends its body slowly: each piece reaches the client as it comes.
#[tokio::test]
async fn fault_upstream_slow_body() {
    let up = script(
        vec![
            (
                0,
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
            ),
            (1500, b"6\r\nsecond\r\n"),
            (1500, b"0\r\n\r\n"),
        ],
        End::Close,
    );
    let env = Env::builder(STANDARD).upstream(up).start().await;
    let started = Instant::now();
    let mut s = Stream::open(env.gw.addr(), &Req::get("/open/x"))
        .await
        .unwrap();
    let first = s.next(Duration::from_secs(5)).await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(first, b"first");
    assert!(first_at < Duration::from_secs(1), "{first_at:?}");
    let mut rest = Vec::new();
    while let Some(p) = s.next(Duration::from_secs(5)).await.unwrap() {
        rest.extend(p);
    }
    assert_eq!(rest, b"second");
    assert_eq!(s.clean_end, Some(true));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    row(
        "upstream slow body (3 s)",
        &format!(
            "200; first bytes after {} ms, complete body",
            first_at.as_millis()
        ),
        took,
        readyz(&env).await,
        "-",
    );
}

/// The upstream opens an event stream and then goes silent: the client's stream stays open
/// (no read timeout: MCP streams idle), and closing it closes the upstream connection.
#[tokio::test]
async fn fault_upstream_stalled_stream() {
    let up = script(
        vec![(
            0,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nd\r\ndata: hello\n\n\r\n",
        )],
        End::Stall,
    );
    let env = Env::builder(STANDARD).upstream(up).start().await;
    let started = Instant::now();
    let mut s = Stream::open(env.gw.addr(), &Req::get("/open/sse"))
        .await
        .unwrap();
    let first = s.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(first, b"data: hello\n\n");
    let took = started.elapsed();
    // Nothing more, and the stream is not cut.
    assert!(
        s.next(Duration::from_secs(2)).await.is_err(),
        "stream ended"
    );
    assert_eq!(env.up.open_connections(), 1);
    drop(s);
    let closed = eventually(
        Duration::from_secs(5),
        "the upstream connection closed after the client left",
        || async { env.up.open_connections() == 0 },
    )
    .await;
    row(
        "upstream stalled stream",
        &format!(
            "stream stays open; upstream closed {} ms after the client left",
            closed.as_millis()
        ),
        took,
        readyz(&env).await,
        "connections_open",
    );
}

// ---------------------------------------------------------------------------------------------
// Config file
// ---------------------------------------------------------------------------------------------

async fn reload_errors(env: &Env) -> f64 {
    env.metric("mcpgate_config_reloads_total", &[("result", "error")])
        .await
}

/// After a broken config change: the last good config keeps serving, the failure is counted
/// and `mcpgate_config_last_reload_successful` is 0.
async fn assert_keeps_serving(env: &Env, fault: &str, started: Instant) {
    eventually(
        Duration::from_secs(10),
        "the failed reload counted",
        || async { reload_errors(env).await >= 1.0 },
    )
    .await;
    let noticed = started.elapsed();
    let m = env.metrics().await;
    assert_eq!(m.value("mcpgate_config_last_reload_successful", &[]), 0.0);
    let (r, _) = timed(env, Req::post("/mcp").bearer(&env.tok().build())).await;
    assert_eq!(r.status, 200, "{r}");
    let ready = readyz(env).await;
    assert_eq!(ready, 200);
    row(
        fault,
        "200: the last good config serves",
        noticed,
        ready,
        "config_reloads_total{result=error}, config_last_reload_successful 0",
    );
}

#[tokio::test]
async fn fault_config_invalid() {
    let env = Env::standard().await;
    let started = Instant::now();
    env.gw.write_rename("routes: [this is not a config\n");
    assert_keeps_serving(&env, "config file invalid", started).await;
}

#[tokio::test]
async fn fault_config_deleted() {
    let env = Env::standard().await;
    let started = Instant::now();
    std::fs::remove_file(&env.gw.config_path).unwrap();
    env.gw.signal("HUP");
    assert_keeps_serving(&env, "config file deleted (+ SIGHUP)", started).await;
}

/// Unreadable: the tests run as root, for whom mode 000 is readable, so the path is made a
/// directory, which no one can read as a file.
#[tokio::test]
async fn fault_config_unreadable() {
    let env = Env::standard().await;
    let started = Instant::now();
    std::fs::remove_file(&env.gw.config_path).unwrap();
    std::fs::create_dir(&env.gw.config_path).unwrap();
    env.gw.signal("HUP");
    assert_keeps_serving(&env, "config file unreadable (+ SIGHUP)", started).await;
}

// ---------------------------------------------------------------------------------------------
// Clock skew
// ---------------------------------------------------------------------------------------------

/// `exp`, `nbf` and `iat` at the edges of `clock_skew_seconds` (60): a token is expired at
/// `exp + skew`, not yet valid until `nbf - skew`, and refused with an `iat` more than the
/// skew ahead. Margins of 5 s keep the test independent of when within a second it runs.
#[tokio::test]
async fn fault_clock_skew_at_the_limits() {
    let env = Env::standard().await;
    let t = now();
    let cases = [
        ("exp 55 s ago", env.tok().c("exp", json!(t - 55)), 200),
        (
            "exp 60 s ago",
            env.tok().c("exp", json!(t - 60)).c("iat", json!(t - 600)),
            401,
        ),
        ("nbf 55 s ahead", env.tok().c("nbf", json!(t + 55)), 200),
        ("nbf 65 s ahead", env.tok().c("nbf", json!(t + 65)), 401),
        ("iat 55 s ahead", env.tok().c("iat", json!(t + 55)), 200),
        ("iat 65 s ahead", env.tok().c("iat", json!(t + 65)), 401),
    ];
    let mut seen = Vec::new();
    let started = Instant::now();
    for (what, tok, want) in cases {
        let r = env.post_mcp(&tok.build()).await;
        assert_eq!(r.status, want, "{what}: {r}");
        if want == 401 {
            assert_invalid_token(&r, PRM);
        }
        seen.push(format!("{what}: {}", r.status));
    }
    row(
        "clock skew at the limits (60 s)",
        &seen.join(", "),
        started.elapsed() / 6,
        readyz(&env).await,
        "requests_total{reason=invalid_token}",
    );
}
