//! Opaque tokens through RFC 7662 introspection: SPEC-CHECKLIST §5 and issue 3.
//!
//! [`MockAs`] is an introspection endpoint (and RFC 8414 metadata naming it) that checks the
//! request format and the gateway's client credentials, answers per token, can be slowed
//! down, and counts every call, so each test can assert exactly how many times the gateway
//! asked.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

pub const CLIENT_ID: &str = "mcpgate";
/// Has characters RFC 6749 §2.3.1 form-encodes before Basic.
pub const CLIENT_SECRET: &str = "s3cret:+/ é";

/// What the mock answers for a token.
#[derive(Clone, Debug)]
pub enum Answer {
    Json(Value),
    /// Status, content type, body.
    Raw(u16, &'static str, &'static str),
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct AsState {
    issuer: String,
    calls: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    answers: Mutex<HashMap<String, Answer>>,
    delay: Mutex<Duration>,
    /// `post`: expect client_secret_post instead of Basic.
    post_auth: Mutex<bool>,
}

/// Mock authorization server with an introspection endpoint at `/introspect`.
pub struct MockAs {
    state: Arc<AsState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockAs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn form_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode(&s.replace('+', " "))).to_string()
}

impl MockAs {
    pub fn start() -> MockAs {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(AsState {
            issuer: format!("http://{addr}"),
            calls: AtomicUsize::new(0),
            seen: Mutex::default(),
            answers: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            post_auth: Mutex::new(false),
        });
        let st = state.clone();
        let task = bg().spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, st).await;
                });
            }
        });
        MockAs { state, task }
    }

    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }
    pub fn endpoint(&self) -> String {
        format!("{}/introspect", self.state.issuer)
    }
    /// Introspection calls received (every POST to `/introspect`, whatever the answer).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
    pub fn answer(&self, token: &str, a: Answer) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_string(), a);
    }
    /// `{"active": true, ...}` with the given members added.
    pub fn active(&self, token: &str, extra: Value) {
        let mut v = json!({"active": true});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        self.answer(token, Answer::Json(v));
    }
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }
    pub fn expect_post_auth(&self, on: bool) {
        *self.state.post_auth.lock().unwrap() = on;
    }
}

/// A good active answer for the `/mcp` route of the fixtures.
pub fn good(extra: Value) -> Value {
    let mut v = json!({
        "iss": "{ISS}",
        "aud": R,
        "exp": now() + 300,
        "scope": "mcp:read",
        "sub": "alice",
        "client_id": "client-1",
        "token_type": "Bearer",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

async fn serve(mut stream: TcpStream, st: Arc<AsState>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let (status, ctype, out) = handle(&st, &method, &path, &headers, &body).await;
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\r\n{out}",
            out.len()
        );
        stream.write_all(resp.as_bytes()).await?;
    }
}

async fn handle(
    st: &AsState,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    if path == "/.well-known/oauth-authorization-server" {
        let meta = json!({
            "issuer": st.issuer,
            "introspection_endpoint": format!("{}/introspect", st.issuer),
            "token_endpoint": format!("{}/token", st.issuer),
        });
        return (200, JSON, meta.to_string());
    }
    if path != "/introspect" {
        return (404, JSON, r#"{"error":"not_found"}"#.into());
    }
    st.calls.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(body).to_string();
    let form: Vec<(String, String)> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    let seen = Seen {
        method: method.to_string(),
        path: path.to_string(),
        headers: headers.to_vec(),
        form: form.clone(),
    };
    st.seen.lock().unwrap().push(seen.clone());
    let delay = *st.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // RFC 7662 §2.1: POST, form-encoded, and the caller must authenticate.
    let form_ct = seen
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if method != "POST" || !form_ct {
        return (400, JSON, r#"{"error":"invalid_request"}"#.into());
    }
    let authenticated = if *st.post_auth.lock().unwrap() {
        seen.param("client_id") == Some(CLIENT_ID)
            && seen.param("client_secret") == Some(CLIENT_SECRET)
            && seen.header("authorization").is_none()
    } else {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
                        (b as char).to_string()
                    } else if b == b' ' {
                        "+".to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let want = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{}:{}", enc(CLIENT_ID), enc(CLIENT_SECRET))
            )
        );
        seen.header("authorization") == Some(want.as_str()) && seen.param("client_id").is_none()
    };
    if !authenticated {
        return (401, JSON, r#"{"error":"invalid_client"}"#.into());
    }
    let Some(token) = seen.param("token") else {
        return (400, JSON, r#"{"error":"invalid_request"}"#.into());
    };
    let answer = st.answers.lock().unwrap().get(token).cloned();
    match answer {
        Some(Answer::Json(v)) => (200, JSON, v.to_string().replace("{ISS}", &st.issuer)),
        Some(Answer::Raw(status, ctype, body)) => (status, ctype, body.to_string()),
        None => (200, JSON, r#"{"active":false}"#.into()),
    }
}

/// One issuer whose tokens are all introspected (no key set), and the usual routes.
/// Placeholders beyond the harness's: `{AS}` (issuer), `{EP}` (endpoint), `{INTRO}` (extra
/// introspection settings, one per line, indented 6).
pub const OPAQUE: &str = r#"
listen:
  address: 127.0.0.1:{PORT}
  public_url: https://mcp.example.com
  threads: 2
admin:
  address: 127.0.0.1:{ADMIN}
issuers:
  - name: opaque
    issuer: {AS}
    token_format: opaque
    clock_skew_seconds: 0
    introspection:
      endpoint: {EP}
      client_id: mcpgate
      client_secret: "s3cret:+/ é"
      negative_cache_seconds: 2
      timeout_ms: 500
{INTRO}
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: {UP}
    scopes: [mcp:read]
  - name: admin
    path_prefix: /admin/mcp
    upstream: {UP}
    scopes: [admin]
"#;

pub async fn opaque_env(mock: &MockAs, intro: &str) -> Env {
    let t = OPAQUE
        .replace("{AS}", &mock.issuer())
        .replace("{EP}", &mock.endpoint())
        .replace("{INTRO}", intro);
    Env::start(&t).await
}

/// A fresh random opaque token (not JWT-shaped).
pub fn opaque() -> String {
    format!("at_{}", random_hex(16))
}

async fn metric(env: &Env, line_prefix: &str) -> f64 {
    let text = env.admin("/metrics").await.text();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn c5_1_request_format_and_accepted_token() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(mock.calls(), 1);
    let s = &mock.seen()[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/introspect");
    assert_eq!(s.param("token"), Some(t.as_str()));
    assert_eq!(s.param("token_type_hint"), Some("access_token"));
    assert!(s.header("authorization").unwrap().starts_with("Basic "));
    assert!(s
        .header("accept")
        .is_some_and(|a| a.contains("application/json")));

    // The upstream gets the same identity as for a JWT, and never the token.
    let u = env.up.only();
    assert_eq!(u.header("x-auth-subject"), Some("alice"));
    assert_eq!(u.header("x-auth-client-id"), Some("client-1"));
    assert_eq!(u.header("x-auth-scopes"), Some("mcp:read"));
    assert_eq!(u.header("x-auth-issuer"), Some(mock.issuer().as_str()));
    assert_eq!(u.header("x-auth-method"), Some("oauth"));
    assert!(u.header_all_loose("authorization").is_empty(), "{u:#?}");
    // Never logged either.
    let logs = env.gw.logs();
    assert!(!logs.contains(&t), "token in the logs");
    assert!(!logs.contains(CLIENT_SECRET), "client secret in the logs");
}

#[tokio::test]
async fn c5_1_client_secret_post() {
    let mock = MockAs::start();
    mock.expect_post_auth(true);
    let env = opaque_env(&mock, "      auth_method: client_secret_post").await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(mock.seen()[0].param("client_id"), Some(CLIENT_ID));
}

#[tokio::test]
async fn cache_hits_make_one_call_for_n_requests() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await;
    let hits_before = metric(
        &env,
        "mcpgate_cache_requests_total{cache=\"introspection\",result=\"hit\"}",
    )
    .await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    for i in 0..20 {
        let r = env.post_mcp(&t).await;
        assert_eq!(r.status, 200, "request {i}: {r}");
    }
    assert_eq!(mock.calls(), 1, "one introspection call for 20 requests");
    assert_eq!(env.up.count(), 20);
    let hits = metric(
        &env,
        "mcpgate_cache_requests_total{cache=\"introspection\",result=\"hit\"}",
    )
    .await;
    assert_eq!(hits - hits_before, 19.0);
    let active = metric(
        &env,
        "mcpgate_introspection_requests_total{issuer=\"opaque\",result=\"active\"}",
    )
    .await;
    assert_eq!(active, 1.0);
    let timed = metric(
        &env,
        "mcpgate_introspection_seconds_count{issuer=\"opaque\"}",
    )
    .await;
    assert_eq!(timed, 1.0);
    // Route policy still applies on cache hits: the same token lacks `admin`.
    let r = env.send(Req::post("/admin/mcp").bearer(&t)).await;
    assert_eq!(r.status, 401, "{r}"); // its aud is /mcp, not /admin/mcp
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn cache_entry_never_outlives_cache_max_seconds() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "      cache_max_seconds: 1").await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(mock.calls(), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Revoked at the AS meanwhile: the gateway asks again and refuses.
    mock.answer(&t, Answer::Json(json!({"active": false})));
    env.assert_rejected(&t, "revoked after the cache bound")
        .await;
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn cache_entry_never_outlives_the_token_exp() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await; // cache_max_seconds: 300 (default)
    let t = opaque();
    mock.active(&t, good(json!({"exp": now() + 2})));
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(mock.calls(), 1);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    mock.answer(&t, Answer::Json(json!({"active": false})));
    env.assert_rejected(&t, "expired").await;
    assert_eq!(
        mock.calls(),
        2,
        "the expired entry was not served from cache"
    );
}

#[tokio::test]
async fn negative_answers_are_cached_briefly() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await; // negative_cache_seconds: 2
    let t = opaque();
    mock.answer(&t, Answer::Json(json!({"active": false})));
    env.assert_rejected(&t, "inactive").await;
    env.assert_rejected(&t, "inactive, cached").await;
    env.assert_rejected(&t, "inactive, cached").await;
    assert_eq!(mock.calls(), 1, "inactive answers are cached");
    mock.active(&t, good(json!({})));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    env.assert_accepted(&t, "after the negative entry expired")
        .await;
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn concurrent_requests_for_one_token_make_one_call() {
    let mock = MockAs::start();
    let env = Arc::new(opaque_env(&mock, "").await);
    let t = opaque();
    mock.active(&t, good(json!({})));
    mock.set_delay(Duration::from_millis(300));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let env = env.clone();
        let t = t.clone();
        set.spawn(async move { env.post_mcp(&t).await.status });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(
        mock.calls(),
        1,
        "single-flight: one call for 16 concurrent requests"
    );
    assert_eq!(env.up.count(), 16);
}

async fn assert_503(env: &Env, token: &str, what: &str) {
    let before = env.up.count();
    let r = env.post_mcp(token).await;
    assert_eq!(r.status, 503, "{what}: {r}");
    assert!(
        r.header("retry-after").is_some(),
        "{what}: Retry-After: {r}"
    );
    assert!(r.header("www-authenticate").is_none(), "{what}: {r}");
    assert_json_error(&r, Some("temporarily_unavailable"));
    assert_eq!(env.up.count(), before, "{what}: nothing forwarded");
}

#[tokio::test]
async fn c5_2_timeout_is_503_and_not_cached() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await; // timeout_ms: 500
    let t = opaque();
    mock.active(&t, good(json!({})));
    mock.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    assert_503(&env, &t, "slow AS").await;
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "timeout_ms bounds the wait: {:?}",
        started.elapsed()
    );
    mock.set_delay(Duration::ZERO);
    env.assert_accepted(&t, "AS back").await;
    assert_eq!(mock.calls(), 2, "a failure is never cached");
    assert!(env.gw.logs().contains("introspection timed out"));
}

#[tokio::test]
async fn c5_2_unreachable_and_5xx_are_503() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await;
    let t = opaque();
    mock.answer(
        &t,
        Answer::Raw(500, "application/json", r#"{"error":"server_error"}"#),
    );
    assert_503(&env, &t, "AS 500").await;
    mock.answer(
        &t,
        Answer::Raw(502, "text/html", "<html>Bad gateway</html>"),
    );
    assert_503(&env, &t, "AS 502").await;

    let dead = Env::start(
        &OPAQUE
            .replace("{AS}", "http://127.0.0.1:9")
            .replace(
                "{EP}",
                &format!("http://127.0.0.1:{}/introspect", closed_port()),
            )
            .replace("{INTRO}", ""),
    )
    .await;
    assert_503(&dead, &opaque(), "AS unreachable").await;
}

#[tokio::test]
async fn c5_2_as_rejecting_our_credentials_is_503_and_logged_loudly() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await;
    mock.expect_post_auth(true); // the gateway sends Basic: the AS says 401
    let t = opaque();
    mock.active(&t, good(json!({})));
    assert_503(&env, &t, "AS 401 to our credentials").await;
    let logs = env.gw.logs();
    assert!(
        logs.contains("ERROR") && logs.contains("refused mcpgate's client credentials"),
        "{logs}"
    );
    assert!(!logs.contains(&t), "token in the logs");
    let unauthorized = metric(
        &env,
        "mcpgate_introspection_requests_total{issuer=\"opaque\",result=\"unauthorized\"}",
    )
    .await;
    assert_eq!(unauthorized, 1.0);
}

#[tokio::test]
async fn c5_2_malformed_answers_are_refused() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await;
    // Well-formed JSON that does not say active: true → 401.
    for (what, v) in [
        ("active false", json!({"active": false})),
        (
            "active \"true\" (a string)",
            good(json!({"active": "true"})),
        ),
        ("active 1", good(json!({"active": 1}))),
        ("missing active", good(json!({}))),
    ] {
        let t = opaque();
        let mut v = v;
        if what == "missing active" {
            v.as_object_mut().unwrap().remove("active");
        }
        mock.answer(&t, Answer::Json(v));
        env.assert_rejected(&t, what).await;
    }
    // An endpoint that does not speak RFC 7662 at all → 503 (not the caller's fault).
    for (what, body) in [
        ("HTML", "<!doctype html><html><body>Login</body></html>"),
        ("JSON array", "[true]"),
        ("empty", ""),
    ] {
        let t = opaque();
        mock.answer(&t, Answer::Raw(200, "text/html", body));
        assert_503(&env, &t, what).await;
    }
}

#[tokio::test]
async fn c5_3_claims_are_still_checked() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await;
    let cases: Vec<(&str, Value)> = vec![
        ("missing aud", {
            let mut v = good(json!({}));
            v.as_object_mut().unwrap().remove("aud");
            v
        }),
        (
            "wrong aud",
            good(json!({"aud": "https://mcp.example.com/other"})),
        ),
        (
            "aud prefix",
            good(json!({"aud": "https://mcp.example.com/mcp-evil"})),
        ),
        (
            "wrong iss",
            good(json!({"iss": "https://evil.example.com"})),
        ),
        ("past exp", good(json!({"exp": now() - 10}))),
        ("future nbf", good(json!({"nbf": now() + 100}))),
        (
            "cnf.jkt as Bearer",
            good(json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}})),
        ),
        ("token_type DPoP", good(json!({"token_type": "DPoP"}))),
        ("refresh token", good(json!({"token_use": "refresh_token"}))),
    ];
    for (what, v) in cases {
        let t = opaque();
        mock.active(&t, v);
        env.assert_rejected(&t, what).await;
    }
    // Scopes from `scope`: a token without the route's scope gets 403.
    let t = opaque();
    mock.active(&t, good(json!({"scope": "mcp:readx other"})));
    let r = env.post_mcp(&t).await;
    assert_insufficient_scope(&r, "mcp:read", PRM);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c5_3_require_aud_false_accepts_a_missing_aud_only() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "      require_aud: false").await;
    let t = opaque();
    let mut v = good(json!({}));
    v.as_object_mut().unwrap().remove("aud");
    mock.active(&t, v);
    env.assert_accepted(&t, "no aud, require_aud: false").await;
    let t = opaque();
    mock.active(&t, good(json!({"aud": "https://mcp.example.com/other"})));
    env.assert_rejected(&t, "a present but wrong aud is still refused")
        .await;
}

/// Issuer `as` verifies its JWTs locally and introspects its opaque tokens.
const MIXED: &str = r#"
listen:
  address: 127.0.0.1:{PORT}
  public_url: https://mcp.example.com
  threads: 1
admin:
  address: 127.0.0.1:{ADMIN}
issuers:
  - name: as
    issuer: {IDP}
    jwks_uri: {JWKS}
    introspection:
      endpoint: {EP}
      client_id: mcpgate
      client_secret: "s3cret:+/ é"
  - name: legacy
    issuer: {AS}
    token_format: opaque
    introspection:
      endpoint: {EP}
      client_id: mcpgate
      client_secret: "s3cret:+/ é"
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: {UP}
    issuers: [as]
    scopes: [mcp:read]
  - name: legacy
    path_prefix: /legacy
    upstream: {UP}
    issuers: [legacy]
    scopes: [mcp:read]
"#;

#[tokio::test]
async fn jwts_are_verified_locally_and_opaque_tokens_introspected() {
    let mock = MockAs::start();
    let env = Env::start(
        &MIXED
            .replace("{AS}", &mock.issuer())
            .replace("{EP}", &mock.endpoint()),
    )
    .await;
    env.assert_accepted(&env.tok().build(), "JWT").await;
    assert_eq!(mock.calls(), 0, "a JWT is never introspected");
    let t = opaque();
    mock.active(&t, good(json!({"iss": env.idp.issuer()})));
    env.assert_accepted(&t, "opaque token of the JWT issuer")
        .await;
    assert_eq!(mock.calls(), 1);
    // A bad JWT is refused as a JWT, not sent to the AS.
    env.assert_rejected(&env.tok().signer(Signer::Evil).build(), "forged JWT")
        .await;
    assert_eq!(mock.calls(), 1);

    // `token_format: opaque`: even a JWT-shaped token (here signed by a key nobody
    // publishes) is judged by the AS, picked by its `iss`.
    let jwt_shaped = Tok::new(&mock.issuer(), R).signer(Signer::Evil).build();
    mock.active(
        &jwt_shaped,
        good(json!({"aud": "https://mcp.example.com/legacy"})),
    );
    let r = env.send(Req::post("/legacy").bearer(&jwt_shaped)).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(mock.calls(), 2);
    assert_eq!(mock.seen()[1].param("token"), Some(jwt_shaped.as_str()));
}

#[tokio::test]
async fn endpoint_is_discovered_from_the_issuer_metadata() {
    let mock = MockAs::start();
    let template = OPAQUE.replace("      endpoint: {EP}\n", "");
    let env = Env::start(
        &template
            .replace("{AS}", &mock.issuer())
            .replace("{INTRO}", ""),
    )
    .await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    env.assert_accepted(&t, "discovered endpoint").await;
    assert_eq!(mock.calls(), 1);
    assert!(env.gw.logs().contains("introspection endpoint discovered"));
}

async fn wait_reloads(env: &Env, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(env, "mcpgate_config_reloads_total{result=\"success\"}").await < n {
        assert!(Instant::now() < deadline, "no reload: {}", env.gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_cache_survives_a_reload_unless_the_issuer_changes() {
    let mock = MockAs::start();
    let env = opaque_env(&mock, "").await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    env.assert_accepted(&t, "first").await;
    assert_eq!(mock.calls(), 1);

    // A reload that does not touch the issuer keeps its cache.
    let text = std::fs::read_to_string(&env.gw.config_path).unwrap();
    let text = text.replace("    scopes: [admin]", "    scopes: [admin, more]");
    std::fs::write(&env.gw.config_path, &text).unwrap();
    wait_reloads(&env, 1.0).await;
    env.assert_accepted(&t, "after an unrelated reload").await;
    assert_eq!(mock.calls(), 1, "cache kept across the reload");

    // Changing the issuer's introspection settings starts a fresh cache.
    let text = text.replace("timeout_ms: 500", "timeout_ms: 600");
    std::fs::write(&env.gw.config_path, &text).unwrap();
    wait_reloads(&env, 2.0).await;
    env.assert_accepted(&t, "after the issuer changed").await;
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn switching_an_issuer_to_opaque_tokens_drops_its_cached_jwts() {
    let mock = MockAs::start();
    let env = Env::start(
        &MIXED
            .replace("{AS}", &mock.issuer())
            .replace("{EP}", &mock.endpoint()),
    )
    .await;
    let t = env.tok().build();
    env.assert_accepted(&t, "JWT verified locally (and cached)")
        .await;
    assert_eq!(mock.calls(), 0);
    // The operator wants every token of `as` checked at the AS from now on (revocation).
    let text = std::fs::read_to_string(&env.gw.config_path).unwrap();
    let text = text.replacen(
        "    introspection:\n",
        "    token_format: opaque\n    introspection:\n",
        1,
    );
    std::fs::write(&env.gw.config_path, text).unwrap();
    wait_reloads(&env, 1.0).await;
    // The AS does not know this token: the cached JWT verification no longer counts.
    env.assert_rejected(&t, "JWT of an issuer now opaque").await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.seen()[0].param("token"), Some(t.as_str()));
}
