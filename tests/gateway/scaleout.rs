//! Scale-out (issue 9): replicas sharing DPoP replay protection and a revocation list
//! through a real Redis.
//!
//! Each test starts its own `redis-server` on a free loopback port (`--save '' --appendonly
//! no`, stopped on drop) and two gateway replicas, A and B, on their own ports, sharing it
//! with one mock IdP and one upstream. Redis is killed, paused (SIGSTOP: it accepts
//! connections but never answers) and restarted on the same port to check the fail
//! policies, the circuit breaker, `/readyz` and recovery. `redis-server` comes from the
//! test command's setup (`.ci/setup test`); without it these tests fail and say so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

// ---------------------------------------------------------------------------------------------
// Two replicas
// ---------------------------------------------------------------------------------------------

const ADMIN_TOKEN: &str = "scaleout-admin-token-0123456789";
/// `timeout_ms` of the replicas: a debug build under a parallel test run needs slack.
const TIMEOUT_MS: u64 = 300;

/// Options of a cluster.
#[derive(Default, Clone)]
struct Opts {
    /// Lines under `state:` (fail policies).
    state: &'static str,
    /// Lines under `state.redis:`.
    redis: &'static str,
    /// Give every replica the same `state.redis.hmac_key_file`.
    hmac: bool,
}

/// Two replicas on the [`SCALEOUT`] fixture sharing one Redis, IdP and upstream.
struct Cluster {
    a: Gateway,
    b: Gateway,
    idp: MockIdp,
    up: Upstream,
    redis: Redis,
    _dir: tempfile::TempDir,
    /// The replicas' config, to start another one.
    render: Arc<dyn Fn(u16, u16) -> String + Send + Sync>,
}

fn upstream() -> Upstream {
    Upstream::with(|req: &Request| {
        if req.path().ends_with("/sse") {
            return Reply::sse(
                (0..60)
                    .map(|i| format!("data: {{\"n\":{i}}}\n\n").into_bytes())
                    .collect(),
                Duration::from_millis(100),
            );
        }
        Reply::json_bytes(br#"{"ok":true}"#)
    })
}

impl Cluster {
    async fn start(opts: Opts) -> Cluster {
        let redis = Redis::start().await;
        let idp = MockIdp::start();
        let up = upstream();
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
        let prefix = format!("t{}:", random_hex(4));
        let hmac_line = if opts.hmac {
            let key = dir.path().join("revocations.key");
            std::fs::write(&key, format!("{}\n", random_hex(24))).unwrap();
            format!("    hmac_key_file: {}\n", key.display())
        } else {
            String::new()
        };
        let redis_extra = format!("{}{hmac_line}", opts.redis);
        let vars: Vec<(&str, String)> = vec![
            ("ADMIN_TOKEN_FILE", token_file.display().to_string()),
            ("REDIS", redis.port.to_string()),
            ("PREFIX", prefix),
            ("TIMEOUT", TIMEOUT_MS.to_string()),
            ("REDIS_EXTRA", redis_extra),
            ("STATE", opts.state.to_string()),
            ("IDP", idp.issuer()),
            ("JWKS", idp.jwks_uri()),
            ("UP", up.url()),
        ];
        let render = move |p: u16, a: u16| {
            let (p, a) = (p.to_string(), a.to_string());
            let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            all.extend([("PORT", p.as_str()), ("ADMIN", a.as_str())]);
            render(SCALEOUT, &all)
        };
        let a = Gateway::launch(Launch::default(), render.clone()).await;
        let b = Gateway::launch(Launch::default(), render.clone()).await;
        Cluster {
            a,
            b,
            idp,
            up,
            redis,
            _dir: dir,
            render: Arc::new(render),
        }
    }

    /// Another replica with the same config.
    async fn replica(&self) -> Gateway {
        let render = self.render.clone();
        Gateway::launch(Launch::default(), move |p, a| render(p, a)).await
    }

    fn tok(&self) -> Tok {
        Tok::new(&self.idp.issuer(), R).c("iat", json!(now() - 5))
    }

    async fn bearer(&self, gw: &Gateway, token: &str) -> Resp {
        send_to(gw.addr(), &Req::post("/mcp").bearer(token))
            .await
            .unwrap()
    }

    async fn dpop(&self, gw: &Gateway, token: &str, proof: &str) -> Resp {
        let req = Req::post("/mcp")
            .h("Authorization", &format!("DPoP {token}"))
            .h("DPoP", proof);
        send_to(gw.addr(), &req).await.unwrap()
    }
}

async fn admin_post(gw: &Gateway, body: &Value, token: Option<&str>) -> Resp {
    let mut req = Req::post("/revocations")
        .host("localhost")
        .body(serde_json::to_vec(body).unwrap());
    req.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
    let req = req.h("Content-Type", "application/json");
    let req = match token {
        Some(t) => req.bearer(t),
        None => req,
    };
    send_to(gw.admin_addr(), &req).await.unwrap()
}

async fn admin_get(gw: &Gateway, path: &str, token: Option<&str>) -> Resp {
    let req = Req::get(path).host("localhost");
    let req = match token {
        Some(t) => req.bearer(t),
        None => req,
    };
    send_to(gw.admin_addr(), &req).await.unwrap()
}

fn is_revoked(r: &Resp) -> bool {
    r.status == 401
        && serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| {
            v["error"] == "invalid_token" && v["error_description"] == "token has been revoked"
        })
        && r.header_all("www-authenticate")
            .iter()
            .any(|c| c.contains("error=\"invalid_token\""))
}

// ---------------------------------------------------------------------------------------------
// DPoP proofs (key P: the fixture's "evil" key, which the IdP never uses for tokens)
// ---------------------------------------------------------------------------------------------

/// A fresh proof for `POST https://mcp.example.com/mcp` with this token.
fn proof(token: &str) -> String {
    Proof::new(token).build()
}

fn bound_token(c: &Cluster) -> String {
    c.tok().c("cnf", json!({"jkt": jkt(p_key())})).build()
}

fn dpop_error(r: &Resp) -> Option<String> {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
}

// ---------------------------------------------------------------------------------------------
// DPoP replay across replicas
// ---------------------------------------------------------------------------------------------

/// A proof accepted at A is a replay at B (and at A); a fresh proof works at B. The shared
/// check is one `SET NX` per proof, visible in Redis and in the metrics.
#[tokio::test]
async fn dpop_proof_accepted_at_a_is_refused_at_b() {
    let c = Cluster::start(Opts::default()).await;
    let token = bound_token(&c);
    let p1 = proof(&token);
    let r = c.dpop(&c.a, &token, &p1).await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.dpop(&c.b, &token, &p1).await;
    assert_eq!(r.status, 401, "replay at the other replica: {r}");
    assert_eq!(dpop_error(&r).as_deref(), Some("invalid_dpop_proof"), "{r}");
    assert!(r.text().contains("already used"), "{r}");
    let r = c.dpop(&c.a, &token, &p1).await;
    assert_eq!(r.status, 401, "replay at the same replica: {r}");
    assert_eq!(c.up.count(), 1, "a replayed proof reached the upstream");
    let r = c.dpop(&c.b, &token, &proof(&token)).await;
    assert_eq!(r.status, 200, "a fresh proof at B: {r}");
    assert_eq!(c.up.count(), 2);

    let keys = c.redis.cmd(&["DBSIZE"]).await.unwrap();
    assert!(keys.starts_with(':'), "{keys}");
    let m = c.b.metrics().await;
    assert!(
        m.value(
            "mcpgate_redis_calls_total",
            &[("op", "dpop_replay"), ("result", "ok")]
        ) >= 2.0
    );
    assert!(m.sum("mcpgate_redis_call_seconds_count", &[("op", "dpop_replay")]) >= 2.0);
    assert_eq!(m.get("mcpgate_redis_circuit_open", &[]), Some(0.0));
}

// ---------------------------------------------------------------------------------------------
// Revocations across replicas
// ---------------------------------------------------------------------------------------------

/// Revoking at A (by jti, subject, client_id) refuses the token at B within one second, even
/// though B has it cached; tokens of the same subject or client issued after the revocation
/// still work; other tokens are untouched.
#[tokio::test]
async fn revocation_at_a_refuses_the_token_at_b_within_one_second() {
    let c = Cluster::start(Opts::default()).await;
    let cases = [
        ("jti", "jti-1", json!({"jti": "jti-1"})),
        (
            "subject",
            "sub-1",
            json!({"subject": "sub-1", "expires_in": 600}),
        ),
        (
            "client_id",
            "client-9",
            json!({"client_id": "client-9", "reason": "leaked"}),
        ),
    ];
    let bystander = c.tok().c("sub", json!("bystander")).build();
    for (kind, value, body) in cases {
        let t = match kind {
            "jti" => c.tok().c("jti", json!(value)),
            "subject" => c.tok().c("sub", json!(value)),
            _ => c.tok().c("client_id", json!(value)),
        }
        .build();
        // Accepted (and cached) at both replicas first.
        assert_eq!(c.bearer(&c.a, &t).await.status, 200, "{kind}");
        assert_eq!(c.bearer(&c.b, &t).await.status, 200, "{kind}");

        let r = admin_post(&c.a, &body, Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status, 201, "{kind}: {r}");
        let v = r.json();
        assert_eq!(v["revocation"]["kind"], kind, "{r}");
        assert_eq!(v["shared"], true, "{r}");
        let posted = Instant::now();
        assert!(
            is_revoked(&c.bearer(&c.a, &t).await),
            "{kind}: A applies its own revocation at once"
        );
        let took = within(Duration::from_secs(1), || async {
            is_revoked(&c.bearer(&c.b, &t).await)
        })
        .await
        .unwrap_or_else(|d| panic!("{kind}: B still accepts the token {d:?} after the revocation"));
        assert!(posted.elapsed() < Duration::from_secs(1) || took < Duration::from_secs(1));
        eprintln!("{kind}: revoked at B {took:?} after the POST to A");

        if kind != "jti" {
            // Issued after the revocation plus the issuer's skew (60 s; the gateway
            // accepts an iat up to that far ahead): fine again.
            let revoked_at = v["revocation"]["revoked_at"].as_i64().unwrap();
            within(Duration::from_secs(3), || async { now() > revoked_at })
                .await
                .unwrap();
            let claim = if kind == "subject" {
                "sub"
            } else {
                "client_id"
            };
            let fresh = c
                .tok()
                .c(claim, json!(value))
                .c("iat", json!(revoked_at + 61))
                .build();
            assert_eq!(
                c.bearer(&c.b, &fresh).await.status,
                200,
                "{kind}: new token"
            );
        }
        assert_eq!(
            c.bearer(&c.b, &bystander).await.status,
            200,
            "{kind}: bystander"
        );
    }
    let m = c.b.metrics().await;
    for kind in ["jti", "subject", "client_id"] {
        assert_eq!(
            m.value("mcpgate_revocations_applied_total", &[("kind", kind)]),
            1.0,
            "{kind}"
        );
    }
    assert_eq!(m.get("mcpgate_revocations_active", &[]), Some(3.0));
    assert!(
        m.value(
            "mcpgate_requests_total",
            &[
                ("route", "mcp"),
                ("decision", "deny"),
                ("reason", "token_revoked")
            ]
        ) >= 3.0
    );
    assert!(m.get("mcpgate_revocations_cache_age_seconds", &[]).unwrap() < 2.0);
    let list = admin_get(&c.b, "/revocations", Some(ADMIN_TOKEN)).await;
    assert_eq!(list.status, 200, "{list}");
    assert_eq!(
        list.json()["revocations"].as_array().unwrap().len(),
        3,
        "{list}"
    );
}

/// A response stream open at B is closed at its next event once its token is revoked at A.
#[tokio::test]
async fn revocation_closes_an_open_stream_at_the_other_replica() {
    let c = Cluster::start(Opts::default()).await;
    let t = c.tok().c("jti", json!("streamed")).build();
    let mut s = Stream::open(c.b.addr(), &Req::get("/mcp/sse").bearer(&t))
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    let first = s.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"n\":0"));
    // Another, unrevoked stream keeps flowing.
    let other = c.tok().build();
    let mut s2 = Stream::open(c.b.addr(), &Req::get("/mcp/sse").bearer(&other))
        .await
        .unwrap();
    assert_eq!(s2.status, 200);

    let r = admin_post(&c.a, &json!({"jti": "streamed"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    let revoked_at = Instant::now();
    let rest = s.collect(Duration::from_secs(5)).await.unwrap();
    let ended = revoked_at.elapsed();
    assert_ne!(
        s.clean_end,
        Some(true),
        "a revoked stream must not look complete"
    );
    assert!(
        ended < Duration::from_millis(1500),
        "stream ended {ended:?} after the revocation"
    );
    let got: String = rest
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).to_string())
        .collect();
    assert!(
        got.matches("data:").count() < 15,
        "the stream kept flowing: {got:?}"
    );
    let more = s2.next(Duration::from_secs(2)).await.unwrap();
    assert!(more.is_some(), "the unrevoked stream was cut too");
    let m = c.b.metrics().await;
    assert_eq!(
        m.value(
            "mcpgate_streams_closed_token_revoked_total",
            &[("route", "mcp")]
        ),
        1.0
    );
}

/// `/revocations` needs the admin token: none or a wrong one is 401 and changes nothing; a
/// gateway without `admin.token_file` refuses with 403; bad bodies are 400.
#[tokio::test]
async fn admin_endpoint_requires_the_admin_token() {
    let c = Cluster::start(Opts::default()).await;
    let body = json!({"subject": "mallory-victim"});
    for token in [None, Some("wrong-token-wrong-token"), Some("")] {
        let r = admin_post(&c.a, &body, token).await;
        assert_eq!(r.status, 401, "{token:?}: {r}");
        assert!(r.header("www-authenticate").is_some(), "{r}");
        let r = admin_get(&c.a, "/revocations", token).await;
        assert_eq!(r.status, 401, "{token:?}: {r}");
    }
    let basic = Req::post("/revocations")
        .host("localhost")
        .h("Authorization", &format!("Basic {ADMIN_TOKEN}"))
        .body(serde_json::to_vec(&body).unwrap());
    assert_eq!(send_to(c.a.admin_addr(), &basic).await.unwrap().status, 401);
    let list = admin_get(&c.b, "/revocations", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        list.json()["revocations"],
        json!([]),
        "a refused POST changed the list"
    );
    assert_eq!(c.redis.cmd(&["EXISTS", "nothing"]).await.unwrap(), ":0");

    for bad in [
        json!({}),
        json!({"jti": "a", "subject": "b"}),
        json!({"jti": "a", "nope": 1}),
    ] {
        let r = admin_post(&c.a, &bad, Some(ADMIN_TOKEN)).await;
        assert_eq!(r.status, 400, "{bad}: {r}");
    }
    let del = Req::new("DELETE", "/revocations")
        .host("localhost")
        .bearer(ADMIN_TOKEN);
    assert_eq!(send_to(c.a.admin_addr(), &del).await.unwrap().status, 405);

    // Without admin.token_file the endpoint is off.
    let up = c.up.url();
    let (issuer, jwks) = (c.idp.issuer(), c.idp.jwks_uri());
    let plain = Gateway::start(|p, a| {
        let (p, a) = (p.to_string(), a.to_string());
        let vars = [
            ("PORT", p.as_str()),
            ("ADMIN", a.as_str()),
            ("IDP", &issuer),
            ("JWKS", &jwks),
            ("UP", &up),
            ("TLS", ""),
        ];
        render(STANDARD, &vars)
    })
    .await;
    let r = admin_post(&plain, &body, Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 403, "{r}");
}

/// `mcpgate revoke --config` posts to the admin listener named by the config, with its token
/// file; the other replica applies it; `--list` shows it.
#[tokio::test]
async fn cli_revoke_reaches_every_replica() {
    let c = Cluster::start(Opts::default()).await;
    let t = c.tok().c("sub", json!("carol")).build();
    assert_eq!(c.bearer(&c.b, &t).await.status, 200);
    let config = c.a.config_path.display().to_string();
    let (code, out, err) = run_cli(
        &[
            "revoke",
            "--config",
            &config,
            "--subject",
            "carol",
            "--expires-in",
            "2h",
            "--reason",
            "offboarded",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["revocation"]["value"], "carol");
    let r = &answer["revocation"];
    assert_eq!(
        r["expires_at"].as_i64().unwrap() - r["revoked_at"].as_i64().unwrap(),
        7200
    );
    within(Duration::from_secs(1), || async {
        is_revoked(&c.bearer(&c.b, &t).await)
    })
    .await
    .expect("B still accepts carol's token");

    let (b_url, token_file) = (
        format!("http://{}", c.b.admin_addr()),
        c._dir.path().join("admin-token").display().to_string(),
    );
    let (code, out, err) = run_cli(
        &[
            "revoke",
            "--list",
            "--admin-url",
            &b_url,
            "--token-file",
            &token_file,
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["revocations"][0]["reason"], "offboarded", "{list}");

    // A wrong token file: a clear failure, non-zero exit.
    let wrong = c._dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-admin-token-at-all").unwrap();
    let (a_url, wrong) = (
        format!("http://{}", c.a.admin_addr()),
        wrong.display().to_string(),
    );
    let (code, _, err) = run_cli(
        &[
            "revoke",
            "--jti",
            "x",
            "--admin-url",
            &a_url,
            "--token-file",
            &wrong,
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("401"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Redis unavailable
// ---------------------------------------------------------------------------------------------

/// Default policies with Redis killed: DPoP requests are refused with 503 (replay fails
/// closed), Bearer requests keep working and revoked tokens stay refused (revocations fail
/// open, from the cache, counted); nothing hangs. When Redis comes back (empty), the
/// replicas write their revocations back and DPoP works again.
#[tokio::test]
async fn redis_killed_dpop_fails_closed_revocations_fail_open_then_recover() {
    let mut c = Cluster::start(Opts {
        state: "  revocations: {max_stale_seconds: 1}\n",
        ..Opts::default()
    })
    .await;
    let revoked = c.tok().c("sub", json!("dave")).build();
    let fine = c.tok().build();
    let r = admin_post(&c.a, &json!({"subject": "dave"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    within(Duration::from_secs(1), || async {
        is_revoked(&c.bearer(&c.b, &revoked).await)
    })
    .await
    .unwrap();
    let token = bound_token(&c);
    // The polls above may have reached the upstream before B learnt of the revocation.
    let before = c.up.count();

    c.redis.kill();
    for gw in [&c.a, &c.b] {
        let started = Instant::now();
        let r = c.dpop(gw, &token, &proof(&token)).await;
        assert_eq!(r.status, 503, "{r}");
        assert_eq!(
            dpop_error(&r).as_deref(),
            Some("temporarily_unavailable"),
            "{r}"
        );
        assert!(r.header("retry-after").is_some(), "{r}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    // Past max_stale_seconds the revocation list is unconfirmed: answered from the cache.
    // (Each replica's copy is older than max_stale once its gauge says so.)
    for gw in [&c.a, &c.b] {
        eventually(
            Duration::from_secs(3),
            "the revocation list stale",
            || async {
                gw.metrics()
                    .await
                    .get("mcpgate_revocations_cache_age_seconds", &[])
                    .is_some_and(|age| age > 1.0)
            },
        )
        .await;
    }
    for gw in [&c.a, &c.b] {
        assert_eq!(c.bearer(gw, &fine).await.status, 200);
        assert!(
            is_revoked(&c.bearer(gw, &revoked).await),
            "a revoked token came back"
        );
    }
    let m = c.b.metrics().await;
    assert!(
        m.value(
            "mcpgate_state_fail_open_total",
            &[("feature", "revocations")]
        ) >= 1.0
    );
    assert!(m.get("mcpgate_revocations_cache_age_seconds", &[]).unwrap() >= 1.0);
    assert!(
        m.value(
            "mcpgate_requests_total",
            &[
                ("route", "mcp"),
                ("decision", "deny"),
                ("reason", "state_unavailable")
            ]
        ) >= 1.0
    );
    assert!(
        m.value(
            "mcpgate_redis_calls_total",
            &[("op", "revocations_sync"), ("result", "error")]
        ) + m.value(
            "mcpgate_redis_calls_total",
            &[("op", "revocations_sync"), ("result", "circuit_open")]
        ) >= 1.0
    );
    // The breaker half-opens for a probe every breaker_open_ms, so a scrape may catch it
    // at 0; that it opened is shown by the log line below.
    assert!(m.get("mcpgate_redis_circuit_open", &[]).is_some());
    assert!(
        c.b.logs().contains("circuit breaker open"),
        "{}",
        c.b.logs()
    );
    // Logged by the revocation refresher once its copy is older than max_stale: under a
    // loaded test run that tick can come a little after the requests above.
    within(Duration::from_secs(3), || async {
        c.b.logs()
            .contains("revocations are checked against this replica's last copy")
    })
    .await
    .unwrap_or_else(|_| panic!("no fail-open log line:\n{}", c.b.logs()));
    assert_eq!(c.up.count() - before, 2 /* the two `fine` requests */);

    c.redis.restart().await;
    for gw in [&c.a, &c.b] {
        within(Duration::from_secs(5), || async {
            c.dpop(gw, &token, &proof(&token)).await.status == 200
        })
        .await
        .unwrap_or_else(|d| panic!("DPoP did not recover {d:?} after Redis came back"));
    }
    // The revocation survived the empty restart: the replicas put it back.
    within(Duration::from_secs(3), || async {
        c.redis
            .cmd(&["HLEN", &format!("{}revocations", prefix_of(&c))])
            .await
            .as_deref()
            == Ok(":1")
    })
    .await
    .expect("the replicas did not write their revocations back");
    assert!(is_revoked(&c.bearer(&c.b, &revoked).await));
    let m = c.b.metrics().await;
    assert_eq!(m.get("mcpgate_redis_circuit_open", &[]), Some(0.0));
    // Refreshed again (under a loaded test run the refresh tick may be a little late).
    within(Duration::from_secs(3), || async {
        c.b.metrics()
            .await
            .get("mcpgate_revocations_cache_age_seconds", &[])
            .is_some_and(|age| age < 1.0)
    })
    .await
    .expect("the revocation cache was not refreshed after Redis came back");
}

/// The key prefix the cluster's replicas use (from A's config file).
fn prefix_of(c: &Cluster) -> String {
    let text = std::fs::read_to_string(&c.a.config_path).unwrap();
    let line = text.lines().find(|l| l.contains("key_prefix")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// Redis paused (it accepts connections but never answers): every DPoP request is answered
/// 503 within the timeout, the breaker then answers at once, and requests flow again when
/// Redis resumes.
#[tokio::test]
async fn redis_paused_requests_never_hang() {
    let c = Cluster::start(Opts::default()).await;
    let token = bound_token(&c);
    assert_eq!(c.dpop(&c.a, &token, &proof(&token)).await.status, 200);
    c.redis.pause();
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        let r = c.dpop(&c.a, &token, &proof(&token)).await;
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{r}");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_millis(TIMEOUT_MS + 700),
        "a request waited {slowest:?} (timeout_ms {TIMEOUT_MS})"
    );
    let m = c.a.metrics().await;
    assert!(
        m.value(
            "mcpgate_redis_calls_total",
            &[("op", "dpop_replay"), ("result", "timeout")]
        ) >= 1.0
    );
    assert!(
        m.value(
            "mcpgate_redis_calls_total",
            &[("op", "dpop_replay"), ("result", "circuit_open")]
        ) >= 1.0
    );
    // Bearer requests do not touch Redis at all.
    let started = Instant::now();
    assert_eq!(c.bearer(&c.a, &c.tok().build()).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS));
    c.redis.resume();
    within(Duration::from_secs(5), || async {
        c.dpop(&c.a, &token, &proof(&token)).await.status == 200
    })
    .await
    .expect("no recovery after Redis resumed");
}

/// Sends Redis `CLIENT PAUSE <ms> WRITE` on a connection of its own: every write (a DPoP
/// proof's `SET NX`) is held that long, while reads go on (a slow Redis, not a frozen one).
async fn redis_slow_writes(redis: &Redis, ms: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ms = ms.to_string();
    let cmd = format!(
        "*4\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n${}\r\n{ms}\r\n$5\r\nWRITE\r\n",
        ms.len()
    );
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", redis.port))
        .await
        .unwrap();
    c.write_all(cmd.as_bytes()).await.unwrap();
    let mut ok = [0u8; 5];
    c.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"+OK\r\n");
}

/// Fault matrix, Redis slow: a write slower than usual but inside `timeout_ms` is served
/// (slower); one past it is 503 within `timeout_ms` plus slack, counted as a timeout; the
/// next request after the pause is served again.
#[tokio::test]
async fn fault_redis_slow() {
    let c = Cluster::start(Opts::default()).await;
    let token = bound_token(&c);
    assert_eq!(c.dpop(&c.a, &token, &proof(&token)).await.status, 200);
    redis_slow_writes(&c.redis, 150).await;
    let started = Instant::now();
    let r = c.dpop(&c.a, &token, &proof(&token)).await;
    let inside = started.elapsed();
    assert_eq!(r.status, 200, "{r}");
    redis_slow_writes(&c.redis, 2000).await;
    let started = Instant::now();
    let r = c.dpop(&c.a, &token, &proof(&token)).await;
    let past = started.elapsed();
    assert_eq!(r.status, 503, "{r}");
    assert!(r.header("retry-after").is_some(), "{r}");
    assert!(
        past < Duration::from_millis(TIMEOUT_MS + 700),
        "waited {past:?} (timeout_ms {TIMEOUT_MS})"
    );
    let m = c.a.metrics().await;
    assert!(
        m.value(
            "mcpgate_redis_calls_total",
            &[("op", "dpop_replay"), ("result", "timeout")]
        ) >= 1.0
    );
    let ready = c.a.admin("/readyz").await.status;
    // Bearer requests do not touch Redis.
    assert_eq!(c.bearer(&c.a, &c.tok().build()).await.status, 200);
    let recovered = eventually(
        Duration::from_secs(5),
        "DPoP served again after the pause",
        || async { c.dpop(&c.a, &token, &proof(&token)).await.status == 200 },
    )
    .await;
    println!(
        "fault-matrix | Redis slow | 150 ms writes: 200 after {} ms; 2 s writes: 503 + Retry-After after {} ms; served again {} ms later | {} ms | readyz {ready} | redis_calls_total{{op=dpop_replay,result=timeout}}",
        inside.as_millis(),
        past.as_millis(),
        recovered.as_millis(),
        past.as_millis()
    );
}

/// `fail: open` for DPoP replay: with Redis down a proof is judged locally (accepted once,
/// refused when replayed at the same replica), counted and logged.
#[tokio::test]
async fn dpop_fail_open_judges_locally() {
    let mut c = Cluster::start(Opts {
        state: "  dpop_replay: {fail: open}\n",
        ..Opts::default()
    })
    .await;
    let token = bound_token(&c);
    c.redis.kill();
    let p = proof(&token);
    let r = c.dpop(&c.a, &token, &p).await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.dpop(&c.a, &token, &p).await;
    assert_eq!(r.status, 401, "{r}");
    let m = c.a.metrics().await;
    assert_eq!(
        m.value(
            "mcpgate_state_fail_open_total",
            &[("feature", "dpop_replay")]
        ),
        1.0
    );
    assert!(c
        .a
        .logs()
        .contains("checked for replay at this replica only"));
}

/// `fail: closed` for revocations: once the list cannot be confirmed for
/// `max_stale_seconds`, OAuth requests get 503; they flow again when Redis returns.
#[tokio::test]
async fn revocations_fail_closed_refuses_when_the_list_is_stale() {
    let mut c = Cluster::start(Opts {
        state: "  revocations: {fail: closed, max_stale_seconds: 1}\n",
        ..Opts::default()
    })
    .await;
    let t = c.tok().build();
    assert_eq!(c.bearer(&c.b, &t).await.status, 200);
    c.redis.kill();
    within(Duration::from_secs(4), || async {
        c.bearer(&c.b, &t).await.status == 503
    })
    .await
    .expect("still answering from an unconfirmed list");
    let r = c.bearer(&c.b, &t).await;
    assert_eq!(
        dpop_error(&r).as_deref(),
        Some("temporarily_unavailable"),
        "{r}"
    );
    c.redis.restart().await;
    within(Duration::from_secs(5), || async {
        c.bearer(&c.b, &t).await.status == 200
    })
    .await
    .expect("no recovery after Redis came back");
}

/// With `readyz: true`, `/readyz` answers 503 while Redis cannot answer, 200 again after.
#[tokio::test]
async fn readyz_reflects_redis_when_configured() {
    let mut c = Cluster::start(Opts {
        redis: "    readyz: true\n",
        ..Opts::default()
    })
    .await;
    assert_eq!(admin_get(&c.a, "/readyz", None).await.status, 200);
    c.redis.kill();
    within(Duration::from_secs(4), || async {
        admin_get(&c.a, "/readyz", None).await.status == 503
    })
    .await
    .expect("/readyz stayed 200 with Redis down");
    assert!(admin_get(&c.a, "/readyz", None)
        .await
        .text()
        .contains("Redis"));
    c.redis.restart().await;
    within(Duration::from_secs(5), || async {
        admin_get(&c.a, "/readyz", None).await.status == 200
    })
    .await
    .expect("/readyz did not recover");
}

/// `rediss://` with a password and a private CA (`ca_file`): replay protection and
/// revocations work over TLS; a wrong password is a Redis that cannot answer (503 for DPoP);
/// the password never reaches the log.
#[tokio::test]
async fn rediss_with_password_and_private_ca() {
    // A private CA, and a server certificate for 127.0.0.1 that it signs.
    let pki = Pki::new();
    let (cert, key) = pki.issue("redis", "subjectAltName=IP:127.0.0.1\n");
    // A port the kernel just handed out (the plain port is the launcher's, with retries).
    let tls_port = free_port();
    let password = "s3cret-redis-password";
    let redis = Redis::start_with(
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    let idp = MockIdp::start();
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let ca = pki.dir().join("ca.pem").display().to_string();
    let vars: Vec<(&str, String)> = vec![
        ("ADMIN_TOKEN_FILE", token_file.display().to_string()),
        ("REDIS_CA", ca),
        ("IDP", idp.issuer()),
        ("JWKS", idp.jwks_uri()),
        ("UP", up.url()),
    ];
    let config = |pass: &str| {
        let mut vars = vars.clone();
        vars.push((
            "REDIS_URL",
            format!("rediss://:{pass}@127.0.0.1:{tls_port}/0"),
        ));
        move |p: u16, a: u16| {
            let (p, a) = (p.to_string(), a.to_string());
            let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            all.extend([("PORT", p.as_str()), ("ADMIN", a.as_str())]);
            render(SCALEOUT_REDISS, &all)
        }
    };
    let a = Gateway::start(config(password)).await;
    let b = Gateway::start(config(password)).await;
    let c = Cluster {
        a,
        b,
        idp,
        up,
        redis,
        _dir: dir,
        render: Arc::new(|_, _| String::new()),
    };
    let token = bound_token(&c);
    let p = proof(&token);
    assert_eq!(c.dpop(&c.a, &token, &p).await.status, 200);
    let r = c.dpop(&c.b, &token, &p).await;
    assert_eq!(dpop_error(&r).as_deref(), Some("invalid_dpop_proof"), "{r}");
    let t = c.tok().c("sub", json!("erin")).build();
    assert_eq!(c.bearer(&c.b, &t).await.status, 200);
    let r = admin_post(&c.a, &json!({"subject": "erin"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    within(Duration::from_secs(1), || async {
        is_revoked(&c.bearer(&c.b, &t).await)
    })
    .await
    .expect("revocation not applied at B over TLS");

    let wrong = Gateway::start(config("not-the-password")).await;
    let r = c.dpop(&wrong, &token, &proof(&token)).await;
    assert_eq!(r.status, 503, "{r}");
    for gw in [&c.a, &c.b, &wrong] {
        assert!(
            !gw.logs().contains("s3cret-redis-password"),
            "the Redis password was logged"
        );
        assert!(
            !gw.logs().contains("not-the-password"),
            "the Redis password was logged"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 21 items 4 and 5: a replica notices when Redis's list is not the one it confirmed,
// and (with state.redis.hmac_key_file) what it loads is authenticated
// ---------------------------------------------------------------------------------------------

/// The head of the list in Redis, parsed.
async fn head(c: &Cluster) -> Option<Value> {
    let key = format!("{}revocations:head", prefix_of(c));
    c.redis
        .get(&["GET", &key])
        .await
        .map(|s| serde_json::from_str(&s).unwrap())
}

async fn hlen(c: &Cluster) -> String {
    let key = format!("{}revocations", prefix_of(c));
    c.redis.cmd(&["HLEN", &key]).await.unwrap()
}

/// Asserts `token` is refused as revoked at `gw` and that the upstream got nothing. (These
/// helpers box their futures: the long tests below would overflow the test thread's
/// stack in a debug build otherwise.)
async fn assert_revoked_at(c: &Cluster, gw: &Gateway, token: &str, what: &str) {
    Box::pin(async {
        let before = c.up.count();
        let r = c.bearer(gw, token).await;
        assert!(is_revoked(&r), "{what}: {r}");
        assert_eq!(
            c.up.count(),
            before,
            "{what}: the refusal reached the upstream"
        );
    })
    .await
}

/// The sum of a metric over both replicas.
async fn both(c: &Cluster, name: &str, labels: &[(&str, &str)]) -> f64 {
    Box::pin(async {
        c.a.metrics().await.value(name, labels) + c.b.metrics().await.value(name, labels)
    })
    .await
}

/// Polls (bounded) until a replica refuses `token` as revoked.
async fn until_revoked(c: &Cluster, gw: &Gateway, token: &str, limit: Duration) -> bool {
    Box::pin(within(limit, || async {
        is_revoked(&c.bearer(gw, token).await)
    }))
    .await
    .is_ok()
}

/// Polls (bounded) until `HGET hash field` is `want`.
async fn until_field(c: &Cluster, hash: &str, field: &str, want: Option<&str>) -> bool {
    Box::pin(within(Duration::from_secs(3), || async {
        c.redis.get(&["HGET", hash, field]).await.as_deref() == want
    }))
    .await
    .is_ok()
}

/// Redis restarts empty and another (fresh) replica writes it back up to the very version
/// replica B had confirmed, without B's revocation and with one B never saw. B, stopped
/// meanwhile (SIGSTOP), notices when it runs again, although the version is the same: the
/// epoch differs. It counts the divergence and writes back the union, so both
/// revocations are enforced everywhere and are in Redis again.
#[tokio::test]
async fn i21_4_a_replica_notices_redis_lost_its_data_at_the_same_version() {
    let mut c = Cluster::start(Opts::default()).await;
    let t1 = c.tok().c("sub", json!("first")).build();
    let t2 = c.tok().c("sub", json!("second")).build();
    assert_eq!(c.bearer(&c.b, &t2).await.status, 200);
    let r = admin_post(&c.a, &json!({"subject": "first"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    within(Duration::from_secs(1), || async {
        is_revoked(&c.bearer(&c.b, &t1).await)
    })
    .await
    .expect("B did not apply the revocation");
    let confirmed = head(&c).await.expect("no head in Redis");
    assert_eq!(confirmed["version"], 1, "{confirmed}");

    // B stops looking; A goes away; Redis loses everything.
    c.b.signal("STOP");
    c.a.signal("KILL");
    c.redis.restart().await;
    assert_eq!(hlen(&c).await, ":0");
    // A fresh replica writes the list back up to B's version, without B's revocation.
    let fresh = c.replica().await;
    let r = admin_post(&fresh, &json!({"subject": "second"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    let now_head = head(&c).await.unwrap();
    assert_eq!(
        now_head["version"], confirmed["version"],
        "the same version: {now_head}"
    );
    assert_ne!(now_head["epoch"], confirmed["epoch"], "{now_head}");
    assert_eq!(
        c.bearer(&fresh, &t1).await.status,
        200,
        "the lost revocation"
    );

    c.b.signal("CONT");
    // B enforces the revocation it never saw...
    within(Duration::from_secs(5), || async {
        is_revoked(&c.bearer(&c.b, &t2).await)
    })
    .await
    .expect("B kept confirming its stale copy");
    assert_revoked_at(&c, &c.b, &t1, "B keeps its own").await;
    // ... and put its own back, so the fresh replica enforces it too.
    within(Duration::from_secs(5), || async { hlen(&c).await == ":2" })
        .await
        .expect("B's revocation was not written back to Redis");
    within(Duration::from_secs(2), || async {
        is_revoked(&c.bearer(&fresh, &t1).await)
    })
    .await
    .expect("the fresh replica did not get B's revocation");
    let m = c.b.metrics().await;
    assert_eq!(
        m.value(
            "mcpgate_revocations_divergence_total",
            &[("reason", "epoch")]
        ),
        1.0
    );
    assert_eq!(m.get("mcpgate_revocations_diverged", &[]), Some(0.0));
    assert!(c.b.logs().contains("diverges from this replica's copy"));
    let healed = head(&c).await.unwrap();
    assert_eq!(
        healed["epoch"], now_head["epoch"],
        "B joined the new epoch: {healed}"
    );
    assert!(healed["version"].as_u64().unwrap() > 1, "{healed}");
}

/// With `readyz: true`, a divergence that cannot be reconciled (Redis refuses writes:
/// `min-replicas-to-write`) makes `/readyz` answer 503 and `mcpgate_revocations_diverged`
/// 1, while the replicas keep enforcing their copy; once Redis takes writes again, the
/// list is written back and both are ready.
#[tokio::test]
async fn i21_4_an_unreconciled_divergence_is_reported_in_readyz() {
    let c = Cluster::start(Opts {
        redis: "    readyz: true\n",
        ..Opts::default()
    })
    .await;
    let t = c.tok().c("sub", json!("gone")).build();
    let r = admin_post(&c.a, &json!({"subject": "gone"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    within(Duration::from_secs(1), || async {
        is_revoked(&c.bearer(&c.b, &t).await)
    })
    .await
    .unwrap();
    let key = format!("{}revocations", prefix_of(&c));
    let head_key = format!("{key}:head");
    // The list is lost, and Redis refuses writes from then on, in one transaction.
    let reply = c
        .redis
        .pipeline(
            &[
                &["MULTI"],
                &["DEL", &key, &head_key],
                &["CONFIG", "SET", "min-replicas-to-write", "1"],
                &["EXEC"],
            ],
            6,
        )
        .await
        .unwrap();
    assert!(reply.contains("*2"), "{reply}");
    for gw in [&c.a, &c.b] {
        within(Duration::from_secs(4), || async {
            let r = admin_get(gw, "/readyz", None).await;
            r.status == 503 && r.text().contains("revocation list")
        })
        .await
        .unwrap_or_else(|_| panic!("/readyz did not report the divergence"));
        assert_eq!(
            gw.metrics().await.get("mcpgate_revocations_diverged", &[]),
            Some(1.0)
        );
        assert_revoked_at(&c, gw, &t, "the copy is still enforced").await;
    }
    assert_eq!(hlen(&c).await, ":0");
    assert_eq!(
        c.redis
            .cmd(&["CONFIG", "SET", "min-replicas-to-write", "0"])
            .await
            .unwrap(),
        "+OK"
    );
    for gw in [&c.a, &c.b] {
        within(Duration::from_secs(10), || async {
            admin_get(gw, "/readyz", None).await.status == 200
        })
        .await
        .expect("/readyz did not recover");
        assert_eq!(
            gw.metrics().await.get("mcpgate_revocations_diverged", &[]),
            Some(0.0)
        );
    }
    assert_eq!(hlen(&c).await, ":1", "the revocation was written back");
    assert!(head(&c).await.is_some());
    assert!(
        both(
            &c,
            "mcpgate_revocations_divergence_total",
            &[("reason", "epoch")]
        )
        .await
            >= 2.0,
        "each replica counted it"
    );
}

/// With `state.redis.hmac_key_file`, whoever can write to Redis can no longer cancel or
/// forge revocations: a deleted entry (HDEL), an altered one (its expiry moved to the
/// past), a forged head and a rollback to an older authentic state are each detected and
/// repaired by the replicas, which kept enforcing the revocation; a forged entry is
/// ignored and counted. Every value in Redis carries a MAC.
#[tokio::test]
async fn i21_5_hmac_authenticated_revocations_resist_redis_writers() {
    let c = Cluster::start(Opts {
        hmac: true,
        ..Opts::default()
    })
    .await;
    let hash = format!("{}revocations", prefix_of(&c));
    let eve = c.tok().c("sub", json!("eve")).build();
    let r = admin_post(&c.a, &json!({"subject": "eve"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    let rev = r.json()["revocation"].clone();
    assert!(until_revoked(&c, &c.b, &eve, Duration::from_secs(1)).await);
    let id = rev["id"].as_str().unwrap().to_string();
    let stored = c.redis.get(&["HGET", &hash, &id]).await.unwrap();
    assert!(stored.contains("\"mac\""), "{stored}");
    assert!(head(&c).await.unwrap()["mac"].is_string());

    Box::pin(hmac_deleted_and_altered_entries(
        &c, &eve, &id, &stored, &rev,
    ))
    .await;
    Box::pin(hmac_forged_entry(&c)).await;
    Box::pin(hmac_forged_head(&c, &eve)).await;
    Box::pin(hmac_rollback(&c)).await;
    for gw in [&c.a, &c.b] {
        assert_revoked_at(&c, gw, &eve, "at the end").await;
    }
    assert_eq!(both(&c, "mcpgate_revocations_diverged", &[]).await, 0.0);
}

async fn hmac_deleted_and_altered_entries(
    c: &Cluster,
    eve: &str,
    id: &str,
    stored: &str,
    rev: &Value,
) {
    let hash = format!("{}revocations", prefix_of(c));
    // Cancel by deleting the entry (and announcing a change).
    c.redis.cmd(&["HDEL", &hash, id]).await.unwrap();
    c.redis.cmd(&["PUBLISH", &hash, "99"]).await.unwrap();
    for gw in [&c.a, &c.b] {
        assert_revoked_at(c, gw, eve, "after HDEL").await;
    }
    assert!(
        until_field(c, &hash, id, Some(stored)).await,
        "the deleted entry was not written back"
    );
    let digest = [("reason", "digest")];
    assert!(both(c, "mcpgate_revocations_divergence_total", &digest).await >= 1.0);

    // Cancel by moving its expiry to the past (the MAC no longer matches).
    let expires = rev["expires_at"].as_i64().unwrap();
    let altered = stored.replace(
        &format!("\"expires_at\":{expires}"),
        &format!("\"expires_at\":{}", now() - 1),
    );
    assert_ne!(altered, stored);
    c.redis.cmd(&["HSET", &hash, id, &altered]).await.unwrap();
    c.redis.cmd(&["PUBLISH", &hash, "100"]).await.unwrap();
    for gw in [&c.a, &c.b] {
        assert_revoked_at(c, gw, eve, "after altering the expiry").await;
    }
    assert!(
        until_field(c, &hash, id, Some(stored)).await,
        "the altered entry was not written back"
    );
    let failures = [("what", "entry")];
    assert!(both(c, "mcpgate_revocations_integrity_failures_total", &failures).await >= 1.0);
}

async fn hmac_forged_entry(c: &Cluster) {
    let hash = format!("{}revocations", prefix_of(c));
    let victim = c.tok().c("sub", json!("victim")).build();
    assert_eq!(c.bearer(&c.b, &victim).await.status, 200);
    let failures = [("what", "entry")];
    let before = both(c, "mcpgate_revocations_integrity_failures_total", &failures).await;
    let forged = json!({"id": "forged1", "kind": "subject", "value": "victim",
        "revoked_at": now(), "expires_at": now() + 600, "mac": "AAAA"});
    c.redis
        .cmd(&["HSET", &hash, "forged1", &forged.to_string()])
        .await
        .unwrap();
    c.redis.cmd(&["PUBLISH", &hash, "101"]).await.unwrap();
    let noticed = Box::pin(within(Duration::from_secs(3), || async {
        both(c, "mcpgate_revocations_integrity_failures_total", &failures).await > before
    }))
    .await;
    assert!(noticed.is_ok(), "the forged entry was not noticed");
    for gw in [&c.a, &c.b] {
        let r = c.bearer(gw, &victim).await;
        assert_eq!(r.status, 200, "a forged revocation applied: {r}");
    }
}

async fn hmac_forged_head(c: &Cluster, eve: &str) {
    let hash = format!("{}revocations", prefix_of(c));
    let head_key = format!("{hash}:head");
    let forged_head = r#"{"epoch":"x","version":99,"digest":"y","mac":"z"}"#;
    c.redis.cmd(&["SET", &head_key, forged_head]).await.unwrap();
    c.redis.cmd(&["PUBLISH", &hash, "102"]).await.unwrap();
    for gw in [&c.a, &c.b] {
        assert_revoked_at(c, gw, eve, "after forging the head").await;
    }
    let replaced = Box::pin(within(Duration::from_secs(3), || async {
        c.redis.get(&["GET", &head_key]).await.as_deref() != Some(forged_head)
    }))
    .await;
    assert!(replaced.is_ok(), "the forged head was not replaced");
    let unauthenticated = [("reason", "unauthenticated")];
    assert!(both(c, "mcpgate_revocations_divergence_total", &unauthenticated).await >= 1.0);
    let head_failures = [("what", "head")];
    assert!(
        both(
            c,
            "mcpgate_revocations_integrity_failures_total",
            &head_failures
        )
        .await
            >= 1.0
    );
    // The compare-and-set lets one replica replace it; the other then takes that head.
    let settled = Box::pin(within(Duration::from_secs(3), || async {
        both(c, "mcpgate_revocations_diverged", &[]).await == 0.0
    }))
    .await;
    assert!(settled.is_ok(), "the replicas did not settle");
}

/// Roll back to an older authentic state: the head before a second revocation, and the
/// list without it.
async fn hmac_rollback(c: &Cluster) {
    let hash = format!("{}revocations", prefix_of(c));
    let head_key = format!("{hash}:head");
    let old_head = c.redis.get(&["GET", &head_key]).await.unwrap();
    let frank = c.tok().c("sub", json!("frank")).build();
    let r = admin_post(&c.a, &json!({"subject": "frank"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 201, "{r}");
    let frank_id = r.json()["revocation"]["id"].as_str().unwrap().to_string();
    assert!(until_revoked(c, &c.b, &frank, Duration::from_secs(1)).await);
    let reply = c
        .redis
        .pipeline(
            &[
                &["MULTI"],
                &["SET", &head_key, &old_head],
                &["HDEL", &hash, &frank_id],
                &["EXEC"],
            ],
            6,
        )
        .await
        .unwrap();
    assert!(reply.contains("*2"), "{reply}");
    c.redis.cmd(&["PUBLISH", &hash, "103"]).await.unwrap();
    for gw in [&c.a, &c.b] {
        assert_revoked_at(c, gw, &frank, "after the rollback").await;
    }
    let restored = Box::pin(within(Duration::from_secs(3), || async {
        c.redis.get(&["HGET", &hash, &frank_id]).await.is_some()
    }))
    .await;
    assert!(
        restored.is_ok(),
        "the rolled-back revocation was not written back"
    );
    let version = [("reason", "version")];
    assert!(both(c, "mcpgate_revocations_divergence_total", &version).await >= 1.0);
}
