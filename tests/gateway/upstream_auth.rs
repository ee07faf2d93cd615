//! Upstream credentials (issue 16): a route's `upstream_auth` — RFC 8693 token exchange,
//! the gateway's own client-credentials token, a static secret, or the client's token
//! forwarded.
//!
//! The mock IdP's token endpoint records every request and issues fresh random tokens
//! (remembered, so the log check on drop catches any of them in the gateway's log), or
//! refuses, stalls, hangs up or answers garbage. Each test asserts the request format the
//! AS saw, what the upstream received (never the client's token), and for every failure its
//! status with nothing forwarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

const ADMIN_TOKEN: &str = "upstream-auth-admin-token-0123456789";

/// The exchange of the issue's example, client_secret_basic.
const EXCHANGE: &str = "      mode: token_exchange
      issuer: as
      audience: https://api.github.internal
      resource: https://api.github.internal/v1
      scopes: [repo:read, repo:status]
      client_id: mcp-gateway
      client_secret_file: {SECRET}";

const CLIENT_CREDENTIALS: &str = "      mode: client_credentials
      issuer: as
      audience: https://api.github.internal
      scopes: [gw]
      client_id: mcp-gateway
      client_secret_file: {SECRET}";

const NONE: &str = "      mode: none";

/// The fixture with `ua` on `/mcp` and `open` on `/open`, and the gateway's client secret
/// in `{SECRET}`.
async fn env_with(idp: MockIdp, ua: &str, open: &str) -> Env {
    remember(UA_CLIENT_SECRET);
    Env::builder(UPSTREAM_AUTH)
        .idp(idp)
        .var("UA", ua)
        .var("OPEN_UA", open)
        .file("SECRET", "gw-secret", format!("{UA_CLIENT_SECRET}\n"))
        .admin_token(ADMIN_TOKEN)
        .start()
        .await
}

/// A good token for `/mcp` of user `sub`.
fn user(env: &Env, sub: &str) -> String {
    env.tok().c("sub", json!(sub)).build()
}

/// The one credential the upstream's request carried in `Authorization`.
fn upstream_bearer(r: &Request) -> String {
    let all = r.header_all_loose("authorization");
    assert_eq!(all.len(), 1, "one Authorization upstream: {r:#?}");
    all[0]
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not Bearer: {}", all[0]))
        .to_string()
}

/// `r` is our 503 with Retry-After, and nothing reached the upstream.
fn assert_unavailable(env: &Env, r: &Resp, what: &str) {
    assert_eq!(r.status, 503, "{what}: {r}");
    assert!(r.header("retry-after").is_some(), "{what}: no Retry-After");
    let v = r.json();
    assert_eq!(v["error"], "temporarily_unavailable", "{what}: {v}");
    assert!(v["error_description"].as_str().is_some(), "{what}");
    assert!(!r.text().contains(AS_TEXT), "{what}: the AS's text echoed");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn exchange_request_format_and_the_upstream_gets_the_exchanged_token() {
    let env = env_with(MockIdp::start(), EXCHANGE, NONE).await;
    let t = user(&env, "alice");
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                // A client-sent copy of the header the gateway sets, in both spellings.
                .h("X_Upstream", "x"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.idp.token_calls(), 1);
    let s = &env.idp.token_seen()[0];
    assert_eq!(s.method, "POST");
    assert_eq!(
        s.param("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(s.param("subject_token"), Some(t.as_str()));
    assert_eq!(
        s.param("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(
        s.param("requested_token_type"),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(s.param("audience"), Some("https://api.github.internal"));
    assert_eq!(s.param("resource"), Some("https://api.github.internal/v1"));
    assert_eq!(s.param("scope"), Some("repo:read repo:status"));
    assert_eq!(s.param("actor_token"), None);
    assert_eq!(s.param("actor_token_type"), None);
    assert_eq!(s.param("client_secret"), None);
    assert!(s.header("authorization").unwrap().starts_with("Basic "));

    // The upstream gets the exchanged token, never the client's.
    let exchanged = env.idp.exchanged_for(&t).unwrap();
    let u = env.up.only();
    assert_eq!(upstream_bearer(&u), exchanged);
    assert!(u.header_all_loose("dpop").is_empty());
    assert_eq!(u.header("x-auth-subject"), Some("alice"));

    // Audited: the mode and the exchanged token's hash prefix, never a token.
    let logs = env.gw.wait_log("mcpgate::audit", 1).await;
    let audit = logs.lines().find(|l| l.contains("mcpgate::audit")).unwrap();
    assert!(audit.contains("token_exchange"), "{audit}");
    assert!(
        audit.contains(&token_hash_prefix(&exchanged)),
        "no hash prefix of the credential sent: {audit}"
    );
    let m = env
        .metric(
            "mcpgate_upstream_token_requests_total",
            &[
                ("route", "mcp"),
                ("grant", "token_exchange"),
                ("result", "issued"),
            ],
        )
        .await;
    assert_eq!(m, 1.0);
    let timed = env
        .metric(
            "mcpgate_upstream_token_request_seconds_count",
            &[("route", "mcp"), ("grant", "token_exchange")],
        )
        .await;
    assert_eq!(timed, 1.0);
}

#[tokio::test]
async fn exchange_with_client_secret_post_and_jwt_subject_type() {
    let idp = MockIdp::start();
    idp.set_token_auth(TokenAuth::Post);
    let ua = format!(
        "{EXCHANGE}\n      client_auth: client_secret_post\n      subject_token_type: jwt\n      header: X-Upstream"
    );
    let env = env_with(idp, &ua, NONE).await;
    let t = user(&env, "alice");
    let r = env
        .send(Req::post("/mcp").bearer(&t).h("x_upstream", "client-sent"))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let s = &env.idp.token_seen()[0];
    assert_eq!(s.param("client_id"), Some(UA_CLIENT_ID));
    assert_eq!(s.param("client_secret"), Some(UA_CLIENT_SECRET));
    assert!(s.header("authorization").is_none());
    assert_eq!(
        s.param("subject_token_type"),
        Some("urn:ietf:params:oauth:token-type:jwt")
    );
    // In its own header, alone; the client's Authorization and its copies are gone.
    let u = env.up.only();
    assert_eq!(
        u.header_all_loose("x-upstream"),
        vec![env.idp.exchanged_for(&t).unwrap().as_str()]
    );
    assert!(u.header_all_loose("authorization").is_empty(), "{u:#?}");
}

/// `actor: true`: the gateway's own client-credentials token goes along as `actor_token`
/// (delegation), fetched once for every caller.
#[tokio::test]
async fn exchange_with_the_gateways_token_as_actor() {
    let ua = format!("{EXCHANGE}\n      actor: {{audience: gateway-actor, scopes: [act]}}");
    let env = env_with(MockIdp::start(), &ua, NONE).await;
    let (a, b) = (user(&env, "alice"), user(&env, "bob"));
    assert_eq!(env.post_mcp(&a).await.status, 200);
    assert_eq!(env.post_mcp(&b).await.status, 200);
    let issued = env.idp.issued();
    let own: Vec<_> = issued
        .iter()
        .filter(|i| i.grant_type == "client_credentials")
        .collect();
    assert_eq!(
        own.len(),
        1,
        "one actor token for every caller: {issued:#?}"
    );
    let seen = env.idp.token_seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].param("grant_type"), Some("client_credentials"));
    assert_eq!(seen[0].param("audience"), Some("gateway-actor"));
    assert_eq!(seen[0].param("scope"), Some("act"));
    for (s, subject) in [(&seen[1], &a), (&seen[2], &b)] {
        assert_eq!(s.param("subject_token"), Some(subject.as_str()));
        assert_eq!(s.param("actor_token"), Some(own[0].token.as_str()));
        assert_eq!(
            s.param("actor_token_type"),
            Some("urn:ietf:params:oauth:token-type:access_token")
        );
    }
    // The upstream gets each caller's exchanged token, never the actor token.
    let reqs = env.up.requests();
    assert_eq!(
        upstream_bearer(&reqs[0]),
        env.idp.exchanged_for(&a).unwrap()
    );
    assert_eq!(
        upstream_bearer(&reqs[1]),
        env.idp.exchanged_for(&b).unwrap()
    );
}

#[tokio::test]
async fn a_thousand_requests_of_ten_users_make_ten_exchanges() {
    let env = Arc::new(env_with(MockIdp::start(), EXCHANGE, NONE).await);
    let users: Vec<String> = (0..10).map(|i| user(&env, &format!("user{i}"))).collect();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in users.clone() {
        let env = env.clone();
        set.spawn(async move {
            for _ in 0..100 {
                let r = env.post_mcp(&t).await;
                assert_eq!(r.status, 200, "{r}");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    eprintln!("1000 requests of 10 users in {:?}", started.elapsed());
    assert_eq!(env.up.count(), 1000);
    assert_eq!(env.idp.token_calls(), 10, "one exchange per user");
    // Each user's requests carried that user's exchanged token.
    let issued = env.idp.issued();
    assert_eq!(issued.len(), 10);
    for t in &users {
        assert!(issued.iter().any(|i| i.subject.as_deref() == Some(t)));
    }
    for req in env.up.requests() {
        let sent = upstream_bearer(&req);
        let i = issued.iter().find(|i| i.token == sent).unwrap();
        let sub = req.header("x-auth-subject").unwrap().to_string();
        let subject_of = |t: &str| {
            users
                .iter()
                .position(|u| u == t)
                .map(|n| format!("user{n}"))
        };
        assert_eq!(
            subject_of(i.subject.as_deref().unwrap()),
            Some(sub),
            "a token exchanged for another user"
        );
    }
    let hits = env
        .metric(
            "mcpgate_cache_requests_total",
            &[("cache", "upstream_token"), ("result", "hit")],
        )
        .await;
    let misses = env
        .metric(
            "mcpgate_cache_requests_total",
            &[("cache", "upstream_token"), ("result", "miss")],
        )
        .await;
    assert_eq!((hits, misses), (990.0, 10.0));
}

#[tokio::test]
async fn sixteen_concurrent_first_requests_make_one_exchange() {
    let idp = MockIdp::start();
    idp.set_token_delay(Duration::from_millis(300));
    let env = Arc::new(env_with(idp, EXCHANGE, NONE).await);
    let t = user(&env, "alice");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (env, t) = (env.clone(), t.clone());
        set.spawn(async move { env.post_mcp(&t).await.status });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    assert_eq!(env.idp.token_calls(), 1, "single flight");
    let x = env.idp.exchanged_for(&t).unwrap();
    assert!(env.up.requests().iter().all(|r| upstream_bearer(r) == x));
}

#[tokio::test]
async fn the_cache_never_outlives_the_exchanged_token() {
    let idp = MockIdp::start();
    idp.set_token_expires_in(Some(2)); // usable 1.8 s
    let env = env_with(idp, EXCHANGE, NONE).await;
    let t = user(&env, "alice");
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.idp.token_calls(), 1);
    let first = env.idp.exchanged_for(&t).unwrap();
    eventually(Duration::from_secs(4), "a second exchange", || async {
        assert_eq!(env.post_mcp(&t).await.status, 200);
        env.idp.token_calls() == 2
    })
    .await;
    let second = env.idp.exchanged_for(&t).unwrap();
    assert_ne!(first, second);
    assert_eq!(upstream_bearer(&env.up.last()), second);
}

#[tokio::test]
async fn the_cache_never_outlives_the_subject_token() {
    let env = env_with(MockIdp::start(), EXCHANGE, NONE).await; // expires_in 300
                                                                // Expires in 2 s (still accepted for the issuer's default clock skew after that).
    let t = env.tok().c("exp", json!(now() + 2)).build();
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.idp.token_calls(), 1);
    eventually(Duration::from_secs(4), "exchanged again", || async {
        assert_eq!(env.post_mcp(&t).await.status, 200);
        env.idp.token_calls() >= 2
    })
    .await;
}

#[tokio::test]
async fn a_revocation_drops_the_tokens_exchanged_for_the_revoked_token() {
    let env = env_with(MockIdp::start(), EXCHANGE, NONE).await;
    let doomed = env.tok().c("jti", json!("doomed-jti")).build();
    let other = user(&env, "bob");
    assert_eq!(env.post_mcp(&doomed).await.status, 200);
    assert_eq!(env.post_mcp(&other).await.status, 200);
    let r = send(
        env.gw.admin_addr(),
        &Req::post("/revocations")
            .host("localhost")
            .bearer(ADMIN_TOKEN)
            .body(serde_json::to_vec(&json!({"jti": "doomed-jti"})).unwrap()),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    let line = env
        .gw
        .wait_log(
            "exchanged upstream tokens derived from revoked tokens dropped",
            1,
        )
        .await;
    let line = line
        .lines()
        .find(|l| l.contains("derived from revoked tokens dropped"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("dropped=1") || line.contains("\"dropped\":1"),
        "{line}"
    );
    env.up.clear();
    env.assert_rejected(&doomed, "revoked").await;
    // The other user's exchanged token is still cached.
    assert_eq!(env.post_mcp(&other).await.status, 200);
    assert_eq!(env.idp.token_calls(), 2);
}

#[tokio::test]
async fn refusals_of_the_as_are_403_naming_the_route_and_the_code() {
    let env = env_with(MockIdp::start(), EXCHANGE, NONE).await;
    for code in [
        "invalid_grant",
        "invalid_target",
        "invalid_scope",
        "unauthorized_client",
        "invalid_request",
        // Codes that concern the caller's token or its user are the caller's too.
        "invalid_token",
        "expired_token",
        "consent_required",
        "interaction_required",
        "login_required",
    ] {
        env.idp.set_token_mode(TokenMode::Refuse(400, code));
        let t = user(&env, "alice");
        let calls = env.idp.token_calls();
        let r = env.post_mcp(&t).await;
        assert_eq!(r.status, 403, "{code}: {r}");
        let v = r.json();
        assert_eq!(v["error"], "access_denied", "{code}: {v}");
        assert_eq!(v["route"], "mcp", "{code}: {v}");
        assert_eq!(v["as_error"], code, "{code}: {v}");
        let d = v["error_description"].as_str().unwrap();
        assert!(d.contains("mcp") && d.contains(code), "{d}");
        assert!(!r.text().contains(AS_TEXT), "{code}: the AS's text echoed");
        assert!(r.header("retry-after").is_none());
        env.assert_nothing_forwarded();
        assert_eq!(env.idp.token_calls(), calls + 1);
        // Remembered briefly: a client retrying does not hammer the AS.
        assert_eq!(env.post_mcp(&t).await.status, 403);
        assert_eq!(
            env.idp.token_calls(),
            calls + 1,
            "{code}: refusal not cached"
        );
    }
    let m = env
        .metric(
            "mcpgate_upstream_token_requests_total",
            &[
                ("route", "mcp"),
                ("grant", "token_exchange"),
                ("result", "refused"),
            ],
        )
        .await;
    assert_eq!(m, 10.0);
    let refused = env
        .metric(
            "mcpgate_requests_total",
            &[
                ("route", "mcp"),
                ("decision", "deny"),
                ("reason", "upstream_credential_refused"),
            ],
        )
        .await;
    assert!(refused >= 20.0, "{refused}");
}

#[tokio::test]
async fn an_as_that_cannot_answer_is_503_with_nothing_forwarded() {
    let idp = MockIdp::start();
    let ua = format!("{EXCHANGE}\n      timeout_ms: 300\n      breaker_failures: 100");
    let env = env_with(idp, &ua, NONE).await;
    let cases: Vec<(&str, TokenMode)> = vec![
        ("500", TokenMode::Refuse(500, "server_error")),
        ("invalid_client", TokenMode::Refuse(401, "invalid_client")),
        (
            "unsupported_grant_type",
            TokenMode::Refuse(400, "unsupported_grant_type"),
        ),
        ("unknown code", TokenMode::Refuse(400, "something_else")),
        ("a 302", TokenMode::Raw(302, "text/html", "")),
        (
            "not JSON",
            TokenMode::Raw(200, "application/json", "{not json"),
        ),
        (
            "HTML",
            TokenMode::Raw(200, "text/html", "<html>oops</html>"),
        ),
        ("an array", TokenMode::Raw(200, "application/json", "[]")),
        (
            "no access_token",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":60}"#,
            ),
        ),
        (
            "empty access_token",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"access_token":"","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
        ),
        (
            "token_type N_A",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"access_token":"abcdefghijklmnopqrstuvwx","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
        ),
        (
            "no token_type",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"access_token":"abcdefghijklmnopqrstuvwx","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
        ),
        (
            "an id_token issued",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"access_token":"abcdefghijklmnopqrstuvwx","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:id_token"}"#,
            ),
        ),
        (
            "no issued_token_type",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"access_token":"abcdefghijklmnopqrstuvwx","token_type":"Bearer"}"#,
            ),
        ),
        (
            "expires_in negative",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"access_token":"abcdefghijklmnopqrstuvwx","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":-5}"#,
            ),
        ),
        (
            "a token with a newline",
            TokenMode::Raw(
                200,
                "application/json",
                r#"{"access_token":"abc\r\nX-Evil: 1","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
        ),
        ("hang-up", TokenMode::Hangup),
    ];
    for (what, mode) in cases {
        env.idp.set_token_mode(mode);
        let t = user(&env, "alice");
        let calls = env.idp.token_calls();
        let r = env.post_mcp(&t).await;
        assert_unavailable(&env, &r, what);
        assert_eq!(env.idp.token_calls(), calls + 1, "{what}");
    }
    // Slow: answered after the timeout.
    env.idp.set_token_mode(TokenMode::Issue);
    env.idp.set_token_delay(Duration::from_secs(3));
    let t = user(&env, "alice");
    let started = Instant::now();
    let r = env.post_mcp(&t).await;
    assert_unavailable(&env, &r, "slow");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let timeouts = env
        .metric(
            "mcpgate_upstream_token_requests_total",
            &[
                ("route", "mcp"),
                ("grant", "token_exchange"),
                ("result", "timeout"),
            ],
        )
        .await;
    assert_eq!(timeouts, 1.0);
}

#[tokio::test]
async fn an_unreachable_token_endpoint_is_503() {
    let closed = ClosedPort::new();
    let ua = CLIENT_CREDENTIALS.replace(
        "issuer: as",
        &format!("token_endpoint: {}/token", closed.url()),
    );
    let env = env_with(MockIdp::start(), &ua, NONE).await;
    let t = user(&env, "alice");
    let r = env.post_mcp(&t).await;
    assert_unavailable(&env, &r, "unreachable");
}

#[tokio::test]
async fn the_breaker_stops_asking_a_failing_as() {
    let idp = MockIdp::start();
    idp.set_token_mode(TokenMode::Refuse(500, "server_error"));
    let ua = format!("{EXCHANGE}\n      breaker_failures: 2\n      breaker_open_ms: 800");
    let env = env_with(idp, &ua, NONE).await;
    // Failing for every caller: two distinct callers are the evidence.
    for sub in ["alice", "bob"] {
        let r = env.post_mcp(&user(&env, sub)).await;
        assert_unavailable(&env, &r, "failing");
    }
    assert_eq!(env.idp.token_calls(), 2);
    // Open: refused without a call.
    for _ in 0..5 {
        let r = env.post_mcp(&user(&env, "alice")).await;
        assert_unavailable(&env, &r, "open");
    }
    assert_eq!(env.idp.token_calls(), 2, "the breaker let calls through");
    let open = env
        .metric(
            "mcpgate_upstream_token_requests_total",
            &[
                ("route", "mcp"),
                ("grant", "token_exchange"),
                ("result", "circuit_open"),
            ],
        )
        .await;
    assert_eq!(open, 5.0);
    // The AS recovers; after the open period, one probe goes through and closes it.
    env.idp.set_token_mode(TokenMode::Issue);
    eventually(Duration::from_secs(3), "the breaker to close", || async {
        env.post_mcp(&user(&env, "alice")).await.status == 200
    })
    .await;
}

/// The AS fails for one user's tokens only (F1): however often and with however many
/// tokens that user asks, each token costs the AS one call per refusal period, the breaker
/// stays closed, and every other user's exchange reaches the AS and succeeds.
#[tokio::test]
async fn one_callers_failures_never_open_the_breaker_for_others() {
    let ua = format!(
        "{EXCHANGE}\n      timeout_ms: 500\n      breaker_failures: 2\n      breaker_open_ms: 60000"
    );
    let env = env_with(MockIdp::start(), &ua, NONE).await;
    let modes: Vec<(&str, TokenMode)> = vec![
        ("500", TokenMode::Refuse(500, "server_error")),
        ("unknown 400 code", TokenMode::Refuse(400, "something_else")),
        ("401", TokenMode::Refuse(401, "invalid_client")),
        ("502 HTML", TokenMode::Raw(502, "text/html", "<html>")),
        ("garbage", TokenMode::Raw(200, "application/json", "[]")),
        ("hang-up", TokenMode::Hangup),
    ];
    for (what, mode) in modes {
        env.idp.set_token_mode_for("mallory", mode);
        for _ in 0..4 {
            let m = user(&env, "mallory");
            let calls = env.idp.token_calls();
            for _ in 0..3 {
                let r = env.post_mcp(&m).await;
                assert_unavailable(&env, &r, what);
            }
            assert_eq!(
                env.idp.token_calls(),
                calls + 1,
                "{what}: a failing token is asked once per period"
            );
        }
    }
    let circuit_open = [
        ("route", "mcp"),
        ("grant", "token_exchange"),
        ("result", "circuit_open"),
    ];
    assert_eq!(
        env.metric("mcpgate_upstream_token_requests_total", &circuit_open)
            .await,
        0.0
    );
    for sub in ["bob", "carol", "dave"] {
        let t = user(&env, sub);
        let calls = env.idp.token_calls();
        let r = env.post_mcp(&t).await;
        assert_eq!(r.status, 200, "{sub}: {r}");
        assert_eq!(env.idp.token_calls(), calls + 1, "{sub}: not asked");
        assert_eq!(
            upstream_bearer(&env.up.last()),
            env.idp.exchanged_for(&t).unwrap()
        );
    }
    assert_eq!(
        env.metric("mcpgate_upstream_token_requests_total", &circuit_open)
            .await,
        0.0
    );
}

/// A token endpoint that does not take connections fails for everyone before any caller's
/// token is sent: the breaker opens on one caller's requests.
#[tokio::test]
async fn an_unreachable_token_endpoint_opens_the_breaker() {
    let closed = ClosedPort::new();
    let ua = format!(
        "{}\n      breaker_failures: 2\n      breaker_open_ms: 60000",
        EXCHANGE.replace(
            "issuer: as",
            &format!("issuer: as\n      token_endpoint: {}/token", closed.url()),
        )
    );
    let env = env_with(MockIdp::start(), &ua, NONE).await;
    for _ in 0..4 {
        let r = env.post_mcp(&user(&env, "alice")).await;
        assert_unavailable(&env, &r, "unreachable");
    }
    let m = env
        .metric(
            "mcpgate_upstream_token_requests_total",
            &[
                ("route", "mcp"),
                ("grant", "token_exchange"),
                ("result", "circuit_open"),
            ],
        )
        .await;
    assert_eq!(m, 2.0);
}

/// A token endpoint that redirects, even to its own origin, gets no second copy of the
/// client's secret or the caller's token (F5): the redirect is an unusable answer, 503, and
/// its target is never asked. Discovery still follows same-origin redirects.
#[tokio::test]
async fn a_redirecting_token_endpoint_is_503_and_never_followed() {
    const ELSEWHERE: &str = "/token-elsewhere";
    for (ua, grant) in [
        (EXCHANGE, "token_exchange"),
        (CLIENT_CREDENTIALS, "client_credentials"),
    ] {
        let env = env_with(MockIdp::start(), ua, NONE).await;
        for status in [301, 302, 303, 307, 308] {
            env.idp
                .set_token_mode(TokenMode::Redirect(status, ELSEWHERE));
            let calls = env.idp.token_calls();
            let r = env.post_mcp(&user(&env, "alice")).await;
            let what = format!("{grant} {status}");
            assert_unavailable(&env, &r, &what);
            assert_eq!(env.idp.token_calls(), calls + 1, "{what}");
            assert_eq!(
                env.idp.count(ELSEWHERE),
                0,
                "{what}: the redirect was followed"
            );
        }
    }
}

#[tokio::test]
async fn client_credentials_token_is_shared_and_renewed_ahead_of_expiry() {
    let idp = MockIdp::start();
    idp.set_token_expires_in(Some(4)); // renewed from 3 s on, usable 3.6 s
    let env = env_with(idp, CLIENT_CREDENTIALS, CLIENT_CREDENTIALS).await;
    for sub in ["alice", "bob", "carol"] {
        let t = user(&env, sub);
        assert_eq!(env.post_mcp(&t).await.status, 200);
    }
    assert_eq!(env.idp.token_calls(), 1, "one token for every caller");
    let s = &env.idp.token_seen()[0];
    assert_eq!(s.param("grant_type"), Some("client_credentials"));
    assert_eq!(s.param("scope"), Some("gw"));
    assert_eq!(s.param("audience"), Some("https://api.github.internal"));
    assert_eq!(s.param("subject_token"), None);
    assert!(s.header("authorization").unwrap().starts_with("Basic "));
    let own = env.idp.issued()[0].token.clone();
    assert_eq!(env.idp.issued()[0].grant_type, "client_credentials");
    for r in env.up.requests() {
        assert_eq!(upstream_bearer(&r), own);
    }
    // `auth: none` routes may send the gateway's own token too (their own client).
    let r = env.send(Req::get("/open/x")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.idp.token_calls(), 2);
    // Renewed in the background ahead of expiry; requests never wait nor fail meanwhile.
    let t = user(&env, "alice");
    eventually(Duration::from_secs(6), "a renewal", || async {
        let r = env.post_mcp(&t).await;
        assert_eq!(r.status, 200, "{r}");
        env.metric("mcpgate_upstream_token_renewals_total", &[("route", "mcp")])
            .await
            >= 1.0
    })
    .await;
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200);
    assert_ne!(upstream_bearer(&env.up.last()), own, "the renewed token");
}

#[tokio::test]
async fn client_credentials_with_private_key_jwt() {
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
        ECDSA_P256_SHA256_FIXED_SIGNING,
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    remember(&b64);
    let idp = MockIdp::start();
    idp.set_token_auth(TokenAuth::PrivateKeyJwt);
    idp.set_token_expires_in(Some(1)); // usable 0.9 s: a second call soon
    let ua = CLIENT_CREDENTIALS.replace(
        "client_secret_file: {SECRET}",
        "private_key_jwt: {key_file: {KEY}, alg: ES256}",
    );
    let env = Env::builder(UPSTREAM_AUTH)
        .idp(idp)
        .var("UA", ua)
        .var("OPEN_UA", NONE)
        .file("KEY", "gw-key.pem", pem)
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    let t = user(&env, "alice");
    assert_eq!(env.post_mcp(&t).await.status, 200);
    eventually(Duration::from_secs(3), "a second token", || async {
        assert_eq!(env.post_mcp(&t).await.status, 200);
        env.idp.token_calls() >= 2
    })
    .await;
    let seen = env.idp.token_seen();
    let mut jtis = Vec::new();
    for s in &seen[..2] {
        assert_eq!(s.param("client_id"), Some(UA_CLIENT_ID));
        assert!(s.header("authorization").is_none());
        let a = s.param("client_assertion").unwrap();
        let parts: Vec<&str> = a.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |p: &str| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).unwrap()
        };
        let header: serde_json::Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(claims["iss"], UA_CLIENT_ID);
        assert_eq!(claims["sub"], UA_CLIENT_ID);
        // rfc7523bis: the issuer identifier, one string.
        assert_eq!(claims["aud"], json!(env.idp.issuer()));
        let exp = claims["exp"].as_i64().unwrap();
        assert!(exp > now() - 5 && exp <= now() + 300, "{claims}");
        jtis.push(claims["jti"].as_str().unwrap().to_string());
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, kp.public_key().as_ref())
            .verify(signed.as_bytes(), &dec(parts[2]))
            .expect("the assertion verifies with the gateway's key");
    }
    assert_ne!(jtis[0], jtis[1], "a fresh jti per assertion");
}

#[tokio::test]
async fn static_secret_from_a_watched_file() {
    let idp = MockIdp::start();
    let env = Env::builder(UPSTREAM_AUTH)
        .idp(idp)
        .var(
            "UA",
            "      mode: static\n      header: X-Api-Key\n      value_file: {VALUE}",
        )
        .var("OPEN_UA", NONE)
        .file("VALUE", "upstream-key", "sk-upstream-0123456789abcdef\n")
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    remember("sk-upstream-0123456789abcdef");
    remember("sk-upstream-rotated-9876543210");
    let t = user(&env, "alice");
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("X-Api-Key", "client-sent-key")
                .h("x_api_key", "client-sent-key-2"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(
        u.header_all_loose("x-api-key"),
        vec!["sk-upstream-0123456789abcdef"]
    );
    assert!(u.header_all_loose("authorization").is_empty(), "{u:#?}");
    assert_eq!(env.idp.token_calls(), 0);
    // Rotated: the watched file applies without a restart.
    let file = env.files.path().join("upstream-key");
    std::fs::write(&file, "sk-upstream-rotated-9876543210\n").unwrap();
    eventually(Duration::from_secs(10), "the rotated value", || async {
        assert_eq!(env.post_mcp(&t).await.status, 200);
        env.up.last().header("x-api-key") == Some("sk-upstream-rotated-9876543210")
    })
    .await;
}

#[tokio::test]
async fn forward_passes_the_clients_token_and_none_strips_it() {
    let env = env_with(MockIdp::start(), "      mode: forward", NONE).await;
    let t = user(&env, "alice");
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(upstream_bearer(&env.up.only()), t);
    let logs = env.gw.wait_log("mcpgate::audit", 1).await;
    assert!(logs
        .lines()
        .any(|l| l.contains("mcpgate::audit") && l.contains("forward")));

    let env = env_with(MockIdp::start(), NONE, NONE).await;
    let t = user(&env, "alice");
    assert_eq!(env.post_mcp(&t).await.status, 200);
    let u = env.up.only();
    assert!(u.header_all_loose("authorization").is_empty(), "{u:#?}");
    assert_eq!(env.idp.token_calls(), 0);
}

/// `mcpgate check`: a block of the wrong shape is located at FILE:LINE:COLUMN (serde's
/// position); a block that does not hold together names its route and field (the config
/// layer locates compile errors by path, not by line).
#[tokio::test]
async fn check_validates_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "gw-secret-value\n").unwrap();
    let config = |block: &str| {
        format!(
            "listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}
admin: {{address: '127.0.0.1:2'}}
issuers:
  - name: as
    issuer: https://as.example.com
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: http://127.0.0.1:3
    upstream_auth:
{block}      client_id: gw
      client_secret_file: {}
",
            secret.display()
        )
    };
    let path = dir.path().join("mcpgate.yaml");
    let check = |text: String| {
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], "");
        (code, format!("{out}{err}"))
    };
    // Wrong shape: FILE:LINE:COLUMN.
    let (code, out) = check(config("      mode: exchange\n      issuer: as\n"));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("{}:11:", path.display())), "{out}");
    let (code, out) = check(config("      mode: token_exchange\n      isuer: as\n"));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("{}:12:", path.display())), "{out}");
    // Inconsistent: the route and the field named.
    for (block, why) in [
        (
            "      mode: token_exchange\n      issuer: nope\n",
            "issuer \"nope\" is not a configured issuer",
        ),
        (
            "      mode: static\n      header: X-Key\n",
            "client_id does not apply to mode static",
        ),
        (
            "      mode: client_credentials\n      issuer: as\n      timeout_ms: 1\n",
            "timeout_ms must be between",
        ),
    ] {
        let (code, out) = check(config(block));
        assert_ne!(code, 0, "{out}");
        assert!(
            out.contains("route \"mcp\"") && out.contains(why),
            "{why}: {out}"
        );
    }
    let missing = dir.path().join("missing");
    let (code, out) = check(
        config("      mode: client_credentials\n      issuer: as\n").replace(
            &secret.display().to_string(),
            &missing.display().to_string(),
        ),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("cannot read"), "{out}");
    // A good block: summarised without its secret.
    let (code, out) = check(config("      mode: client_credentials\n      issuer: as\n"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("client_credentials"), "{out}");
    assert!(!out.contains("gw-secret-value"), "{out}");
    assert!(!out.contains("warning"), "{out}");
    // On an `auth: none` route (F12): token_exchange has no token to exchange, an error;
    // the gateway's own credential reaches anonymous callers' upstream, a warning.
    let anonymous = |block: &str| {
        config(block).replace(
            "    upstream: http://127.0.0.1:3\n",
            "    upstream: http://127.0.0.1:3\n    auth: none\n",
        )
    };
    let (code, out) = check(anonymous("      mode: token_exchange\n      issuer: as\n"));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("route \"mcp\"") && out.contains("mode token_exchange needs auth: oauth"),
        "{out}"
    );
    let (code, out) = check(anonymous(
        "      mode: client_credentials\n      issuer: as\n",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: route \"mcp\": upstream_auth mode client_credentials on a route with auth: none"),
        "{out}"
    );
    let value = dir.path().join("v");
    std::fs::write(&value, "sk-static-value-0123\n").unwrap();
    let (code, out) = check(format!(
        "listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}
admin: {{address: '127.0.0.1:2'}}
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: http://127.0.0.1:3
    auth: none
    upstream_auth: {{mode: static, header: X-Key, value_file: {}}}
",
        value.display()
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: route \"mcp\": upstream_auth mode static on a route with auth: none"
        ),
        "{out}"
    );
    assert!(!out.contains("sk-static-value-0123"), "{out}");
}

/// An introspection `active: false` drops what was exchanged for that token: once the AS
/// says it is active again, it is exchanged anew rather than served from the cache.
#[tokio::test]
async fn an_inactive_token_drops_its_exchanged_tokens() {
    remember(UA_CLIENT_SECRET);
    let mock = MockIdp::start();
    let block = EXCHANGE.replace("issuer: as", "issuer: opaque");
    let fixture = OPAQUE.replace(
        "    scopes: [mcp:read]\n",
        &format!("    scopes: [mcp:read]\n    upstream_auth:\n{block}\n"),
    );
    let env = Env::builder(&fixture)
        .var("AS", mock.issuer())
        .var("EP", mock.endpoint())
        .var("INTRO", "      cache_max_seconds: 1")
        .file("SECRET", "gw-secret", format!("{UA_CLIENT_SECRET}\n"))
        .start()
        .await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(mock.token_calls(), 1);
    let first = mock.exchanged_for(&t).unwrap();
    assert_eq!(upstream_bearer(&env.up.last()), first);
    // Inactive at the AS: refused once the introspection cache lets go.
    mock.answer(&t, Answer::Json(json!({"active": false})));
    eventually(Duration::from_secs(3), "refused as inactive", || async {
        env.post_mcp(&t).await.status == 401
    })
    .await;
    // Active again (after the negative cache): a new exchange, not the dropped token.
    mock.active(&t, good(json!({})));
    eventually(Duration::from_secs(4), "accepted again", || async {
        env.post_mcp(&t).await.status == 200
    })
    .await;
    assert_eq!(
        mock.token_calls(),
        2,
        "the exchanged token outlived its subject's refusal"
    );
    assert_ne!(upstream_bearer(&env.up.last()), first);
}

/// The client secret file is watched: a rotated secret applies without a restart (and the
/// AS's refusal of the old one is a 503: the gateway's client is at fault, not the caller).
#[tokio::test]
async fn a_rotated_client_secret_applies_without_a_restart() {
    remember(UA_CLIENT_SECRET);
    remember("ua-old-secret-0123456789");
    let env = Env::builder(UPSTREAM_AUTH)
        .var("UA", EXCHANGE)
        .var("OPEN_UA", NONE)
        .file("SECRET", "gw-secret", "ua-old-secret-0123456789\n")
        .admin_token(ADMIN_TOKEN)
        .start()
        .await;
    let r = env.post_mcp(&user(&env, "alice")).await;
    assert_unavailable(&env, &r, "the AS refuses the old secret");
    let m = env
        .metric(
            "mcpgate_upstream_token_requests_total",
            &[
                ("route", "mcp"),
                ("grant", "token_exchange"),
                ("result", "client_refused"),
            ],
        )
        .await;
    assert_eq!(m, 1.0);
    std::fs::write(
        env.files.path().join("gw-secret"),
        format!("{UA_CLIENT_SECRET}\n"),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the rotated secret", || async {
        env.post_mcp(&user(&env, "alice")).await.status == 200
    })
    .await;
}
