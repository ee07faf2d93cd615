//! Opaque tokens through RFC 7662 introspection: SPEC-CHECKLIST §5 and issue 3.
//!
//! The mock IdP's introspection endpoint checks the request format and the gateway's client
//! credentials, answers per token, can be slowed down, and counts every call, so each test
//! can assert exactly how many times the gateway asked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// The [`OPAQUE`] fixture with `mock` as its issuer and introspection endpoint, and `intro`
/// as further introspection settings.
pub async fn opaque_env(mock: &MockIdp, intro: &str) -> Env {
    Env::builder(OPAQUE)
        .var("AS", mock.issuer())
        .var("EP", mock.endpoint())
        .var("INTRO", intro)
        .start()
        .await
}

#[tokio::test]
async fn c5_1_request_format_and_accepted_token() {
    let mock = MockIdp::start();
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
    let mock = MockIdp::start();
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
    let mock = MockIdp::start();
    let env = opaque_env(&mock, "").await;
    let hits_before = env
        .metric(
            "mcpgate_cache_requests_total",
            &[("cache", "introspection"), ("result", "hit")],
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
    let hits = env
        .metric(
            "mcpgate_cache_requests_total",
            &[("cache", "introspection"), ("result", "hit")],
        )
        .await;
    assert_eq!(hits - hits_before, 19.0);
    let active = env
        .metric(
            "mcpgate_introspection_requests_total",
            &[("issuer", "opaque"), ("result", "active")],
        )
        .await;
    assert_eq!(active, 1.0);
    let timed = env
        .metric(
            "mcpgate_introspection_seconds_count",
            &[("issuer", "opaque")],
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
    let mock = MockIdp::start();
    let env = opaque_env(&mock, "      cache_max_seconds: 1").await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(mock.calls(), 1);
    // Revoked at the AS: served from the cache until its bound, then asked again and refused.
    mock.answer(&t, Answer::Json(json!({"active": false})));
    eventually(
        Duration::from_millis(1300),
        "refused after the cache bound",
        || async { env.post_mcp(&t).await.status == 401 },
    )
    .await;
    env.assert_rejected(&t, "revoked after the cache bound")
        .await;
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn cache_entry_never_outlives_the_token_exp() {
    let mock = MockIdp::start();
    let env = opaque_env(&mock, "").await; // cache_max_seconds: 300 (default)
    let t = opaque();
    mock.active(&t, good(json!({"exp": now() + 2})));
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(env.post_mcp(&t).await.status, 200);
    assert_eq!(mock.calls(), 1);
    // Served from the cache until the token's exp, then asked again (and refused).
    mock.answer(&t, Answer::Json(json!({"active": false})));
    eventually(Duration::from_millis(2600), "refused after exp", || async {
        env.post_mcp(&t).await.status == 401
    })
    .await;
    env.assert_rejected(&t, "expired").await;
    // At `exp` the cached answer is refused as expired (RFC 7519 §4.1.4: now must be before
    // exp) whether or not the entry was evicted first and the AS asked again; what matters
    // is that nothing was served from it after exp.
    assert!((1..=2).contains(&mock.calls()), "calls: {}", mock.calls());
}

#[tokio::test]
async fn negative_answers_are_cached_briefly() {
    let mock = MockIdp::start();
    let env = opaque_env(&mock, "").await; // negative_cache_seconds: 2
    let t = opaque();
    mock.answer(&t, Answer::Json(json!({"active": false})));
    env.assert_rejected(&t, "inactive").await;
    env.assert_rejected(&t, "inactive, cached").await;
    env.assert_rejected(&t, "inactive, cached").await;
    assert_eq!(mock.calls(), 1, "inactive answers are cached");
    mock.active(&t, good(json!({})));
    // Refused from the cache until the negative entry expires, then asked again.
    eventually(
        Duration::from_millis(2300),
        "accepted after the negative entry expired",
        || async { env.post_mcp(&t).await.status == 200 },
    )
    .await;
    env.assert_accepted(&t, "after the negative entry expired")
        .await;
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn concurrent_requests_for_one_token_make_one_call() {
    let mock = MockIdp::start();
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
    let mock = MockIdp::start();
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
    let mock = MockIdp::start();
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

    let down = ClosedPort::new();
    let dead = Env::builder(OPAQUE)
        .var("AS", "http://127.0.0.1:9")
        .var("EP", format!("{}/introspect", down.url()))
        .var("INTRO", "")
        .start()
        .await;
    assert_503(&dead, &opaque(), "AS unreachable").await;
}

/// A redirect from the introspection endpoint is an answer, never followed: following it
/// would send the gateway's client secret and the caller's token a second time (red team,
/// second pass, as F5 for token endpoints).
#[tokio::test]
async fn c5_2_a_redirecting_introspection_endpoint_is_503_and_never_followed() {
    let mock = MockIdp::start();
    let env = opaque_env(&mock, "").await;
    for status in [301, 302, 303, 307, 308] {
        let t = opaque();
        mock.answer(&t, Answer::Redirect(status));
        let before = mock.calls();
        assert_503(&env, &t, &format!("AS {status}")).await;
        assert_eq!(
            mock.calls(),
            before + 1,
            "{status}: the redirect was followed"
        );
    }
}

#[tokio::test]
async fn c5_2_as_rejecting_our_credentials_is_503_and_logged_loudly() {
    let mock = MockIdp::start();
    let env = opaque_env(&mock, "").await;
    mock.expect_post_auth(true); // the gateway sends Basic: the AS says 401
    let t = opaque();
    mock.active(&t, good(json!({})));
    assert_503(&env, &t, "AS 401 to our credentials").await;
    // The log line may reach the file just after the answer: wait for it (bounded).
    let logs = env
        .gw
        .wait_log("refused mcpgate's client credentials", 1)
        .await;
    assert!(
        logs.contains("ERROR") && logs.contains("refused mcpgate's client credentials"),
        "{logs}"
    );
    assert!(!logs.contains(&t), "token in the logs");
    let unauthorized = env
        .metric(
            "mcpgate_introspection_requests_total",
            &[("issuer", "opaque"), ("result", "unauthorized")],
        )
        .await;
    assert_eq!(unauthorized, 1.0);
}

#[tokio::test]
async fn c5_2_malformed_answers_are_refused() {
    let mock = MockIdp::start();
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
    let mock = MockIdp::start();
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
    let mock = MockIdp::start();
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

/// The [`MIXED`] fixture with `mock` as the `legacy` issuer and the introspection endpoint.
async fn mixed_env(mock: &MockIdp) -> Env {
    Env::builder(MIXED)
        .var("AS", mock.issuer())
        .var("EP", mock.endpoint())
        .start()
        .await
}

#[tokio::test]
async fn jwts_are_verified_locally_and_opaque_tokens_introspected() {
    let mock = MockIdp::start();
    let env = mixed_env(&mock).await;
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
    let mock = MockIdp::start();
    let env = Env::builder(&OPAQUE.replace("      endpoint: {EP}\n", ""))
        .var("AS", mock.issuer())
        .var("INTRO", "")
        .start()
        .await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    env.assert_accepted(&t, "discovered endpoint").await;
    assert_eq!(mock.calls(), 1);
    assert!(env.gw.logs().contains("introspection endpoint discovered"));
}

#[tokio::test]
async fn the_cache_survives_a_reload_unless_the_issuer_changes() {
    let mock = MockIdp::start();
    let env = opaque_env(&mock, "").await;
    let t = opaque();
    mock.active(&t, good(json!({})));
    env.assert_accepted(&t, "first").await;
    assert_eq!(mock.calls(), 1);

    // A reload that does not touch the issuer keeps its cache.
    let text = std::fs::read_to_string(&env.gw.config_path).unwrap();
    let text = text.replace("    scopes: [admin]", "    scopes: [admin, more]");
    std::fs::write(&env.gw.config_path, &text).unwrap();
    env.gw.wait_reloads(1.0).await;
    env.assert_accepted(&t, "after an unrelated reload").await;
    assert_eq!(mock.calls(), 1, "cache kept across the reload");

    // Changing the issuer's introspection settings starts a fresh cache.
    let text = text.replace("timeout_ms: 500", "timeout_ms: 600");
    std::fs::write(&env.gw.config_path, &text).unwrap();
    env.gw.wait_reloads(2.0).await;
    env.assert_accepted(&t, "after the issuer changed").await;
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn switching_an_issuer_to_opaque_tokens_drops_its_cached_jwts() {
    let mock = MockIdp::start();
    let env = mixed_env(&mock).await;
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
    env.gw.wait_reloads(1.0).await;
    // The AS does not know this token: the cached JWT verification no longer counts.
    env.assert_rejected(&t, "JWT of an issuer now opaque").await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.seen()[0].param("token"), Some(t.as_str()));
}
