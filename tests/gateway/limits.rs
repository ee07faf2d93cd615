//! Rate limits and quotas (issue 19): per identity and per tool, the 429 an agent can back off
//! from, the concurrency cap on streams, `trusted_proxies`, reloads that keep buckets, and two
//! replicas sharing one limit through a real `redis-server` (killed and paused for the fail
//! modes).
//!
//! Rates are chosen so that a test never depends on timing except the one that measures the
//! rate itself (`i19_rate_and_burst_are_honoured_within_tolerance`, whose tolerance is
//! stated): the others use limits per hour, whose buckets do not refill during a test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// The limits fixture with `limits` (lines under `limits:`), `state` and extra `routes`.
fn env(limits: &str, state: &str, routes: &str) -> EnvBuilder {
    Env::builder(LIMITS)
        .var("LIMITS", limits)
        .var("STATE", state)
        .var("ROUTES", routes)
}

/// A token of `sub` for client `client` on `/mcp`.
fn token(env: &Env, sub: &str, client: &str) -> String {
    env.tok()
        .c("sub", json!(sub))
        .c("client_id", json!(client))
        .build()
}

/// A `tools/call` of `tool`, id 7.
fn call(tool: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
        .into_bytes()
}

fn post(token: &str, body: Vec<u8>) -> Req {
    Req::post("/mcp").bearer(token).body(body)
}

/// A structured-field list of items with parameters (`"a";q=1;w=2, "b";r=0`), as
/// name → parameter → value (strings unquoted).
fn sf_list(v: &str) -> Vec<(String, HashMap<String, String>)> {
    v.split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap();
            assert!(
                name.starts_with('"') && name.ends_with('"'),
                "item value must be an sf-string: {v}"
            );
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.trim_matches('"').to_string(), params)
        })
        .collect()
}

/// The checks every 429 passes: `Retry-After` (positive seconds), the two RateLimit fields
/// naming `limit`, whose `t` is no earlier than `Retry-After` wants, no challenge, the JSON
/// type. Returns the `Retry-After` seconds.
fn assert_throttled(r: &Resp, limit: &str) -> u64 {
    assert_eq!(r.status, 429, "{r}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r}");
    assert!(r.header("www-authenticate").is_none(), "{r}");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {r}"));
    assert!(retry >= 1, "{r}");
    let policy = sf_list(
        r.header("ratelimit-policy")
            .unwrap_or_else(|| panic!("{r}")),
    );
    let state = sf_list(r.header("ratelimit").unwrap_or_else(|| panic!("{r}")));
    let p = policy
        .iter()
        .find(|(n, _)| n == limit)
        .unwrap_or_else(|| panic!("{limit} not in RateLimit-Policy: {r}"));
    assert!(p.1["q"].parse::<u64>().unwrap() >= 1, "{r}");
    let s = state
        .iter()
        .find(|(n, _)| n == limit)
        .unwrap_or_else(|| panic!("{limit} not in RateLimit: {r}"));
    assert_eq!(s.1["r"], "0", "{r}");
    if let Some(t) = s.1.get("t") {
        assert_eq!(
            t.parse::<u64>().unwrap(),
            retry,
            "t and Retry-After agree: {r}"
        );
    }
    assert_eq!(policy.len(), state.len(), "one state per policy: {r}");
    retry
}

/// Sends `req` and asserts it was refused by `limit` with nothing forwarded.
async fn assert_refused_by(env: &Env, req: Req, limit: &str) -> Resp {
    let before = env.up.count();
    let r = env.send(req).await;
    assert_throttled(&r, limit);
    assert_eq!(
        env.up.count(),
        before,
        "a refused request reached the upstream"
    );
    r
}

async fn assert_passes(env: &Env, req: Req, what: &str) {
    let before = env.up.count();
    let r = env.send(req).await;
    assert_eq!(r.status, 200, "{what}: {r}");
    assert_eq!(env.up.count(), before + 1, "{what}");
}

// ---------------------------------------------------------------------------------------------
// Rate, burst, keys, tools
// ---------------------------------------------------------------------------------------------

/// 20/second with a burst of 10, requests sent back to back for 1.5 s: the gateway lets
/// through `10 + 20 × t` of them (t: between the first and the last request), within 2 either
/// way (the client's clock and the gateway's differ by a request's latency, 50 ms is one
/// unit). Every refused one is a 429 that never reached the upstream.
#[tokio::test]
async fn i19_rate_and_burst_are_honoured_within_tolerance() {
    let env = env(
        "  rate:\n    - {name: per-user, key: [issuer, subject], rate: 20/second, burst: 10}\n",
        "",
        "",
    )
    .start()
    .await;
    let t = env.tok().build();
    // Warm the token cache with another identity's limit untouched: alice's bucket is full.
    let first = Instant::now();
    let mut last = first;
    let (mut allowed, mut refused) = (0usize, 0usize);
    while first.elapsed() < Duration::from_millis(1500) {
        last = Instant::now();
        let r = env.post_mcp(&t).await;
        match r.status {
            200 => allowed += 1,
            429 => refused += 1,
            _ => panic!("{r}"),
        }
    }
    let secs = (last - first).as_secs_f64();
    let expected = 10.0 + 20.0 * secs;
    assert!(
        (allowed as f64 - expected).abs() <= 2.0,
        "allowed {allowed} in {secs:.3} s, expected {expected:.1} ± 2 ({refused} refused)"
    );
    assert!(refused > 0, "the test never reached the limit");
    assert_eq!(
        env.up.count(),
        allowed,
        "only allowed requests reach the upstream"
    );
}

/// Per user and per agent client at once: a user's bucket is spent by that user alone, a
/// client's by all its users; each refusal names its limit (body, audit line, metrics) and
/// carries the RateLimit fields of both limits.
#[tokio::test]
async fn i19_keys_isolate_users_and_clients() {
    let env = env(
        "  rate:\n    - {name: per-user, key: [issuer, subject], rate: 5/hour}\n    - {name: per-client, key: [issuer, client_id], rate: 8/hour}\n",
        "",
        "",
    )
    .start()
    .await;
    let alice = token(&env, "alice", "agent-a");
    let bob = token(&env, "bob", "agent-a");
    let carol = token(&env, "carol", "agent-b");
    for i in 0..5 {
        assert_passes(
            &env,
            Req::post("/mcp").bearer(&alice),
            &format!("alice {i}"),
        )
        .await;
    }
    let r = assert_refused_by(&env, Req::post("/mcp").bearer(&alice), "per-user").await;
    let v = r.json();
    assert_eq!(v["error"], "rate_limited", "{r}");
    assert_eq!(v["limit"], "per-user", "{r}");
    assert_eq!(
        v["retry_after_seconds"].as_u64(),
        r.header("retry-after").and_then(|h| h.parse().ok()),
        "{r}"
    );
    assert!(v["error_description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    // 5/hour: one unit every 720 s.
    assert_eq!(r.header("retry-after"), Some("720"), "{r}");
    let policy = sf_list(r.header("ratelimit-policy").unwrap());
    assert_eq!(policy[0].0, "per-user");
    assert_eq!(
        (policy[0].1["q"].as_str(), policy[0].1["w"].as_str()),
        ("5", "3600")
    );
    assert_eq!(policy[1].0, "per-client");
    let state = sf_list(r.header("ratelimit").unwrap());
    assert_eq!(state[1].1["r"], "3", "agent-a has 3 of 8 left: {r}");
    // Bob shares agent-a's 3 remaining units, not alice's spent bucket.
    for i in 0..3 {
        assert_passes(&env, Req::post("/mcp").bearer(&bob), &format!("bob {i}")).await;
    }
    let r = assert_refused_by(&env, Req::post("/mcp").bearer(&bob), "per-client").await;
    assert_eq!(r.json()["limit"], "per-client");
    assert_eq!(r.header("retry-after"), Some("450"), "8/hour: {r}");
    assert_passes(
        &env,
        Req::post("/mcp").bearer(&carol),
        "carol, another client",
    )
    .await;
    // Another token of alice's (same issuer and subject) is the same bucket.
    let alice2 = token(&env, "alice", "agent-b");
    assert_refused_by(&env, Req::post("/mcp").bearer(&alice2), "per-user").await;

    let m = env.metrics().await;
    let decided = |limit: &str, result: &str| {
        m.value(
            "mcpgate_rate_limit_decisions_total",
            &[("limit", limit), ("result", result)],
        )
    };
    assert_eq!(decided("per-user", "limited"), 2.0);
    assert_eq!(decided("per-client", "limited"), 1.0);
    assert_eq!(decided("per-user", "allowed"), 10.0);
    assert_eq!(
        m.value(
            "mcpgate_requests_total",
            &[
                ("route", "mcp"),
                ("decision", "deny"),
                ("reason", "rate_limited")
            ]
        ),
        3.0
    );
    let logs = env.gw.wait_log("limit=\"per-client\"", 1).await;
    assert!(logs.contains("reason=\"rate_limited\""), "{logs}");
}

/// A limit on tools counts only calls of its tools, per tool; the JSON-RPC spelling the
/// upstream might fold, a batch, and HTTP/1.1 or 2 count alike. Its route now reads every
/// body before forwarding, so shapes it cannot read are refused rather than uncounted.
#[tokio::test]
async fn i19_tool_limits_count_only_their_tools() {
    let env = env(
        "  rate:\n    - {name: writes, key: [subject, tool], rate: 2/hour, tools: ['delete_*', 'write_*']}\n",
        "",
        "",
    )
    .start()
    .await;
    let t = env.tok().build();
    for i in 0..4 {
        assert_passes(&env, post(&t, call("read_file")), &format!("read {i}")).await;
    }
    assert_passes(&env, Req::get("/mcp").bearer(&t), "a GET names no tool").await;
    assert_passes(&env, post(&t, call("delete_a")), "delete_a 1").await;
    assert_passes(&env, post(&t, call("delete_a")), "delete_a 2").await;
    let r = assert_refused_by(&env, post(&t, call("delete_a")), "writes").await;
    // The JSON-RPC error an agent can act on: its id, the limit and the wait in `data`.
    let v = r.json();
    assert_eq!(v["jsonrpc"], "2.0", "{r}");
    assert_eq!(v["id"], 7, "{r}");
    assert_eq!(v["error"]["code"], 429, "{r}");
    assert_eq!(v["error"]["data"]["limit"], "writes", "{r}");
    assert_eq!(
        v["error"]["data"]["retry_after_seconds"], 1800,
        "2/hour: {r}"
    );
    assert_eq!(r.header("retry-after"), Some("1800"));
    // Per tool: delete_b has its own bucket.
    assert_passes(&env, post(&t, call("delete_b")), "delete_b").await;
    // The same call spelled so that a lenient upstream would still run it.
    let folded =
        br#"{"jsonrpc":"2.0","id":8,"method":"Tools/Call","params":{"name":"delete_a"}}"#.to_vec();
    assert_refused_by(&env, post(&t, folded), "writes").await;
    // A batch of two calls takes two units; then the tool is spent; a batch's refusal is
    // the JSON error (there is no one id to answer).
    let two = format!(
        "[{},{}]",
        String::from_utf8(call("write_x")).unwrap(),
        String::from_utf8(call("write_x")).unwrap()
    );
    assert_passes(&env, post(&t, two.into_bytes()), "a batch of two").await;
    let one = format!("[{}]", String::from_utf8(call("write_x")).unwrap());
    let r = assert_refused_by(&env, post(&t, one.into_bytes()), "writes").await;
    assert_eq!(r.json()["error"], "rate_limited", "{r}");
    // Shapes the gateway cannot read for the tool are refused, not let through uncounted.
    let before = env.up.count();
    let r = env
        .send(Req::new("PUT", "/mcp").bearer(&t).body(call("delete_a")))
        .await;
    assert_eq!(r.status, 405, "{r}");
    let r = env
        .send(post(&t, call("delete_a")).h("Content-Encoding", "gzip"))
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(env.up.count(), before);
    // Another user's delete_a is another bucket.
    let bob = token(&env, "bob", "client-1");
    assert_passes(&env, post(&bob, call("delete_a")), "bob's delete_a").await;
}

/// HTTP/2 requests count in the same buckets and get the same 429.
#[tokio::test]
async fn i19_http2_requests_count_alike() {
    let env = env(
        "  rate:\n    - {name: writes, key: [subject, tool], rate: 2/hour, tools: ['delete_*']}\n",
        "",
        "",
    )
    .tls()
    .start()
    .await;
    let t = env.tok().build();
    let mut h2 = h2_connect(env.gw.addr(), env.ca()).await;
    let req = || {
        h2_req("POST", "/mcp")
            .header("authorization", format!("Bearer {t}"))
            .header("content-type", "application/json")
            .body(())
            .unwrap()
    };
    for _ in 0..2 {
        let r = h2_send(&mut h2, req(), Some(&call("delete_a")))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let r = h2_send(&mut h2, req(), Some(&call("delete_a")))
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1800");
    assert!(r.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"writes\";r=0"));
    assert_eq!(r.json()["error"]["data"]["limit"], "writes");
    assert_eq!(env.up.count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// An upstream whose `/mcp/sse` streams 20 events 100 ms apart; JSON elsewhere.
fn sse_upstream() -> Upstream {
    Upstream::with(|req: &Request| {
        if req.path().ends_with("/sse") {
            return Reply::sse(
                (0..20)
                    .map(|i| format!("data: {{\"n\":{i}}}\n\n").into_bytes())
                    .collect(),
                Duration::from_millis(100),
            );
        }
        Reply::json_bytes(br#"{"ok":true}"#)
    })
}

/// `streams_per_subject: 2`: a third open request of the same identity is refused (429,
/// nothing forwarded) while another identity's passes; a stream the client aborts and a
/// stream that ends give their slot back; answers of known length hold none once their head
/// is in.
#[tokio::test]
async fn i19_stream_cap_per_subject_released_on_end_and_abort() {
    let env = env("  concurrency: {streams_per_subject: 2}\n", "", "")
        .upstream(sse_upstream())
        .start()
        .await;
    let alice = env.tok().build();
    let bob = token(&env, "bob", "client-1");
    let sse = Req::get("/mcp/sse").bearer(&alice);
    let open = || Stream::open(env.gw.addr(), &sse);
    let s1 = open().await.unwrap();
    let mut s2 = open().await.unwrap();
    assert_eq!((s1.status, s2.status), (200, 200));
    let r = assert_refused_by(
        &env,
        Req::post("/mcp").bearer(&alice),
        "streams_per_subject",
    )
    .await;
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["limit"], "streams_per_subject");
    let policy = sf_list(r.header("ratelimit-policy").unwrap());
    assert_eq!(policy[0].1["qu"], "concurrent-requests");
    assert_eq!(policy[0].1["q"], "2");
    assert_passes(&env, Req::post("/mcp").bearer(&bob), "bob").await;
    assert_eq!(env.metric("mcpgate_stream_slots_held", &[]).await, 2.0);

    // The client aborts s1: its slot comes back.
    drop(s1);
    eventually(
        Duration::from_secs(5),
        "the aborted stream's slot back",
        || async { env.metric("mcpgate_stream_slots_held", &[]).await == 1.0 },
    )
    .await;
    // With one stream open, answers of known length come and go without holding a slot.
    for i in 0..4 {
        assert_passes(
            &env,
            Req::post("/mcp").bearer(&alice),
            &format!("alice {i}"),
        )
        .await;
    }
    let s3 = open().await.unwrap();
    assert_eq!(s3.status, 200);
    assert_refused_by(
        &env,
        Req::post("/mcp").bearer(&alice),
        "streams_per_subject",
    )
    .await;
    // s2 ends by itself: its slot comes back.
    s2.collect(Duration::from_secs(10)).await.unwrap();
    assert_eq!(s2.clean_end, Some(true));
    eventually(
        Duration::from_secs(5),
        "the ended stream's slot back",
        || async { env.metric("mcpgate_stream_slots_held", &[]).await == 1.0 },
    )
    .await;
    assert_passes(&env, Req::post("/mcp").bearer(&alice), "after the end").await;
    drop(s3);
    eventually(Duration::from_secs(5), "every slot back", || async {
        env.metric("mcpgate_stream_slots_held", &[]).await == 0.0
    })
    .await;
    let m = env.metrics().await;
    assert_eq!(
        m.value(
            "mcpgate_rate_limit_decisions_total",
            &[("limit", "streams_per_subject"), ("result", "limited")]
        ),
        2.0
    );
}

// ---------------------------------------------------------------------------------------------
// Client addresses, reloads, `check`
// ---------------------------------------------------------------------------------------------

/// On an `auth: none` route keyed by `client_address`: without `trusted_proxies` an
/// `X-Forwarded-For` changes nothing (spoofing it gets no new bucket); with the peer trusted,
/// the nearest untrusted hop is the key, and IPv6 clients are keyed by their /64.
#[tokio::test]
async fn i19_client_address_and_trusted_proxies() {
    let route = "  - name: anon\n    path_prefix: /anon\n    upstream: {UP}\n    auth: none\n    limits:\n      rate:\n        - {name: by-address, key: [client_address], rate: 2/hour}\n";
    let limits = "  rate: []\n";
    let untrusted = env(limits, "", route).start().await;
    let xff = |v: &str| Req::get("/anon").h("X-Forwarded-For", v);
    assert_passes(&untrusted, xff("203.0.113.1"), "1").await;
    assert_passes(&untrusted, xff("203.0.113.2"), "2").await;
    assert_refused_by(&untrusted, xff("203.0.113.3"), "by-address").await;
    assert_refused_by(&untrusted, Req::get("/anon"), "by-address").await;

    let trusting = env("  trusted_proxies: [127.0.0.0/8]\n  rate: []\n", "", route)
        .start()
        .await;
    let env = &trusting;
    assert_passes(env, xff("203.0.113.1"), "a").await;
    assert_passes(
        env,
        xff("6.6.6.6, 203.0.113.1"),
        "b (the client wrote 6.6.6.6)",
    )
    .await;
    assert_refused_by(env, xff("7.7.7.7, 203.0.113.1"), "by-address").await;
    assert_passes(env, xff("203.0.113.2"), "another client").await;
    assert_passes(env, xff("2001:db8:0:1::1"), "v6 a").await;
    assert_passes(env, xff("2001:db8:0:1::2"), "v6 b, same /64").await;
    assert_refused_by(env, xff("[2001:db8:0:1::3]:443"), "by-address").await;
    assert_passes(env, xff("2001:db8:0:2::1"), "another /64").await;
    // No header, or one that is not an address: the peer itself.
    assert_passes(env, Req::get("/anon"), "no header").await;
    assert_passes(env, xff("not-an-address"), "junk").await;
    assert_refused_by(env, xff("also junk"), "by-address").await;
}

/// A reload that leaves a limit's definition alone keeps its buckets (a spent one stays
/// spent); one that changes it starts the limit afresh.
#[tokio::test]
async fn i19_reload_keeps_unchanged_buckets() {
    let env = env(
        "  rate:\n    - {name: per-user, key: [issuer, subject], rate: 3/hour}\n",
        "",
        "",
    )
    .start()
    .await;
    let t = env.tok().build();
    for i in 0..3 {
        assert_passes(&env, Req::post("/mcp").bearer(&t), &format!("{i}")).await;
    }
    assert_refused_by(&env, Req::post("/mcp").bearer(&t), "per-user").await;
    // Another limit and another route added: per-user is untouched.
    env.gw
        .reload(|c| {
            c.replace(
                "  rate:\n",
                "  rate:\n    - {name: per-route, key: [route], rate: 1000/hour}\n",
            ) + "  - name: extra\n    path_prefix: /extra\n    upstream: http://127.0.0.1:9\n    auth: none\n"
        })
        .await;
    let r = assert_refused_by(&env, Req::post("/mcp").bearer(&t), "per-user").await;
    assert!(
        r.header("ratelimit-policy")
            .unwrap()
            .contains("\"per-route\""),
        "the new limit applies: {r}"
    );
    // Its fail policy is not part of the definition either (it needs state.redis, so only
    // the rate changes here): a new rate is a new limit with a full bucket.
    env.gw
        .reload(|c| c.replace("rate: 3/hour", "rate: 4/hour"))
        .await;
    assert_passes(&env, Req::post("/mcp").bearer(&t), "a changed definition").await;
}

/// `mcpgate check` says whether limits are per replica or shared.
#[test]
fn i19_check_says_per_replica_or_shared() {
    let base = |state: &str| {
        render(
            LIMITS,
            &[
                ("PORT", "18080"),
                ("ADMIN", "19090"),
                ("IDP", "http://127.0.0.1:4000"),
                ("JWKS", "http://127.0.0.1:4000/jwks"),
                ("UP", "http://127.0.0.1:3001"),
                ("TLS", ""),
                ("STATE", state),
                (
                    "LIMITS",
                    "  rate:\n    - {name: per-user, key: [issuer, subject], rate: 600/minute, burst: 60}\n  concurrency: {streams_per_subject: 20}\n",
                ),
                (
                    "ROUTES",
                    "    limits:\n      rate:\n        - {name: writes, key: [subject, tool], rate: 30/hour, tools: ['delete_*']}\n",
                ),
            ],
        )
    };
    let run = |yaml: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.yaml");
        std::fs::write(&path, yaml).unwrap();
        let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], "");
        (code, format!("{out}{err}"))
    };
    let (code, out) = run(&base(""));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rate limits: per replica"), "{out}");
    assert!(
        out.contains("per-user 600/minute burst 60 key [issuer, subject]"),
        "{out}"
    );
    assert!(
        out.contains("concurrency: 20 open requests per identity (per replica)"),
        "{out}"
    );
    assert!(out.contains("limits [per-user, writes]"), "{out}");
    assert!(
        out.contains(
            "route's own: writes 30/hour burst 30 key [subject, tool] on [tools:delete_*]"
        ),
        "{out}"
    );
    let (code, out) = run(&base("state:\n  redis: {url: 'redis://127.0.0.1:6399'}\n"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rate limits: shared by every replica through Redis"),
        "{out}"
    );
    assert!(
        out.contains("Redis down: this replica's buckets (fail open)"),
        "{out}"
    );
    // `fail` needs Redis; a bad rate names itself.
    let (code, out) = run(&base("").replace("burst: 60}", "burst: 60, fail: closed}"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("state.redis"), "{out}");
    let (code, out) = run(&base("").replace("600/minute", "600/fortnight"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("second, minute, hour, day"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Replicas sharing Redis
// ---------------------------------------------------------------------------------------------

/// `timeout_ms` of the replicas: a debug build under a parallel test run needs slack.
const TIMEOUT_MS: u64 = 300;

/// Two replicas of the limits fixture sharing one `redis-server`, IdP and upstream.
struct Pair {
    a: Gateway,
    b: Gateway,
    idp: MockIdp,
    up: Upstream,
    redis: Redis,
    prefix: String,
}

impl Pair {
    async fn start(limits: &str, routes: &str) -> Pair {
        let redis = Redis::start().await;
        let idp = MockIdp::start();
        let up = Upstream::start();
        let prefix = format!("t{}:", random_hex(4));
        let state = format!(
            "state:\n  redis:\n    url: redis://127.0.0.1:{}/0\n    key_prefix: \"{prefix}\"\n    timeout_ms: {TIMEOUT_MS}\n    connect_timeout_ms: 300\n    breaker_open_ms: 200\n",
            redis.port
        );
        let vars: Vec<(&str, String)> = vec![
            ("STATE", state),
            ("LIMITS", limits.to_string()),
            ("ROUTES", routes.to_string()),
            ("TLS", String::new()),
            ("IDP", idp.issuer()),
            ("JWKS", idp.jwks_uri()),
            ("UP", up.url()),
        ];
        let config = move |p: u16, a: u16| {
            let (p, a) = (p.to_string(), a.to_string());
            let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            all.extend([("PORT", p.as_str()), ("ADMIN", a.as_str())]);
            render(LIMITS, &all)
        };
        let a = Gateway::launch(Launch::default(), config.clone()).await;
        let b = Gateway::launch(Launch::default(), config).await;
        Pair {
            a,
            b,
            idp,
            up,
            redis,
            prefix,
        }
    }

    fn tok(&self, sub: &str) -> String {
        Tok::new(&self.idp.issuer(), R).c("sub", json!(sub)).build()
    }

    async fn send(&self, gw: &Gateway, req: &Req) -> Resp {
        send_to(gw.addr(), req).await.unwrap()
    }
}

/// One limit of 6 per hour, requests alternating between two replicas: 6 pass in total, not
/// 12; the buckets are Redis keys under the prefix, decided with one script call each.
#[tokio::test]
async fn i19_two_replicas_enforce_one_limit() {
    let c = Pair::start(
        "  rate:\n    - {name: per-user, key: [issuer, subject], rate: 6/hour}\n",
        "",
    )
    .await;
    let t = c.tok("alice");
    let mut allowed = 0;
    for i in 0..12 {
        let gw = if i % 2 == 0 { &c.a } else { &c.b };
        let r = c.send(gw, &Req::post("/mcp").bearer(&t)).await;
        match r.status {
            200 => allowed += 1,
            429 => {
                assert_throttled(&r, "per-user");
            }
            _ => panic!("{r}"),
        }
    }
    assert_eq!(allowed, 6, "one limit for both replicas");
    assert_eq!(c.up.count(), 6);
    // Bob's bucket is his own, at either replica.
    assert_eq!(
        c.send(&c.b, &Req::post("/mcp").bearer(&c.tok("bob")))
            .await
            .status,
        200
    );
    let keys = c
        .redis
        .pipeline(&[&["KEYS", &format!("{}rl:*", c.prefix)]], 1)
        .await
        .unwrap();
    assert!(keys.starts_with("*2\r\n"), "two buckets in Redis: {keys}");
    for gw in [&c.a, &c.b] {
        let m = gw.metrics().await;
        assert!(
            m.value(
                "mcpgate_redis_calls_total",
                &[("op", "rate_limit"), ("result", "ok")]
            ) >= 6.0
        );
        assert!(m.sum("mcpgate_redis_call_seconds_count", &[("op", "rate_limit")]) >= 6.0);
    }
}

/// Redis killed: a `fail: closed` limit refuses with 503 (nothing forwarded, at once, not
/// hanging); a `fail: open` one is enforced by each replica alone, from what Redis had
/// decided (A mirrored it) or from a full bucket (B never saw alice) — counted and logged.
/// Redis back (empty): decisions are shared again.
#[tokio::test]
async fn i19_redis_killed_each_limit_follows_its_fail_mode() {
    let closed = "  - name: strict\n    path_prefix: /strict\n    upstream: {UP}\n    scopes: [mcp:read]\n    audience_aliases: [https://mcp.example.com/mcp]\n    limits:\n      rate:\n        - {name: strict, key: [subject], rate: 100/hour, fail: closed}\n";
    let mut c = Pair::start(
        "  rate:\n    - {name: per-user, key: [issuer, subject], rate: 3/hour}\n",
        closed,
    )
    .await;
    let t = c.tok("alice");
    for _ in 0..2 {
        assert_eq!(
            c.send(&c.a, &Req::post("/mcp").bearer(&t)).await.status,
            200
        );
    }
    assert_eq!(
        c.send(&c.a, &Req::post("/strict").bearer(&t)).await.status,
        200
    );
    let before = c.up.count();
    c.redis.kill();
    // fail: closed: 503 at once, never forwarded.
    for gw in [&c.a, &c.b] {
        let started = Instant::now();
        let r = c.send(gw, &Req::post("/strict").bearer(&t)).await;
        assert_eq!(r.status, 503, "{r}");
        assert_eq!(r.json()["error"], "temporarily_unavailable", "{r}");
        assert!(r.header("retry-after").is_some(), "{r}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(c.up.count(), before);
    // fail: open at A: alice had spent 3 of 3 (2 here, 1 on /strict counts per-user too).
    let r = c.send(&c.a, &Req::post("/mcp").bearer(&t)).await;
    assert_throttled(&r, "per-user");
    // At B, which never decided for alice: a full local bucket.
    for i in 0..3 {
        let r = c.send(&c.b, &Req::post("/mcp").bearer(&t)).await;
        assert_eq!(r.status, 200, "B alone, {i}: {r}");
    }
    assert_throttled(
        &c.send(&c.b, &Req::post("/mcp").bearer(&t)).await,
        "per-user",
    );
    let m = c.b.metrics().await;
    assert!(
        m.value(
            "mcpgate_state_fail_open_total",
            &[("feature", "rate_limits")]
        ) >= 4.0
    );
    assert!(
        m.value(
            "mcpgate_rate_limit_decisions_total",
            &[("limit", "strict"), ("result", "unavailable")]
        ) >= 1.0
    );
    assert!(c
        .b
        .logs()
        .contains("rate limits are enforced by this replica alone"));

    c.redis.restart().await;
    // Back to Redis (which lost every bucket): once each replica's fail-closed limit answers
    // again (its breaker closed; probed with subjects of their own), bob's requests at A and
    // B are one count.
    for (gw, probe) in [(&c.a, "carol"), (&c.b, "dave")] {
        let t = c.tok(probe);
        within(Duration::from_secs(5), || async {
            c.send(gw, &Req::post("/strict").bearer(&t)).await.status == 200
        })
        .await
        .expect("the fail-closed limit did not recover when Redis came back");
    }
    let bob = c.tok("bob");
    assert_eq!(
        c.send(&c.a, &Req::post("/strict").bearer(&bob))
            .await
            .status,
        200
    );
    // (The request on /strict counted once in per-user too.)
    for gw in [&c.b, &c.a] {
        assert_eq!(
            c.send(gw, &Req::post("/mcp").bearer(&bob)).await.status,
            200
        );
    }
    assert_throttled(
        &c.send(&c.b, &Req::post("/mcp").bearer(&bob)).await,
        "per-user",
    );
}

/// Redis paused (it accepts connections, never answers): decisions wait at most
/// `timeout_ms`, then the breaker answers at once; fail open keeps serving.
#[tokio::test]
async fn i19_redis_paused_requests_never_hang() {
    let c = Pair::start(
        "  rate:\n    - {name: per-user, key: [issuer, subject], rate: 100/hour}\n",
        "",
    )
    .await;
    let t = c.tok("alice");
    assert_eq!(
        c.send(&c.a, &Req::post("/mcp").bearer(&t)).await.status,
        200
    );
    c.redis.pause();
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        let r = c.send(&c.a, &Req::post("/mcp").bearer(&t)).await;
        assert_eq!(r.status, 200, "fail open: {r}");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(TIMEOUT_MS + 700),
        "a request waited {slowest:?} (timeout_ms {TIMEOUT_MS})"
    );
    let m = c.a.metrics().await;
    for result in ["timeout", "circuit_open"] {
        assert!(
            m.value(
                "mcpgate_redis_calls_total",
                &[("op", "rate_limit"), ("result", result)]
            ) >= 1.0,
            "{result}"
        );
    }
    c.redis.resume();
}
