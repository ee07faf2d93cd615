//! A verdict holds only where it was made (issue 21 items 1–3, issue 13 item 10 in part):
//! the verified-token cache across issuer entries, reloads that tighten an issuer's
//! settings, revocation edges, the introspection budget, the admin listener's
//! `Authorization` and the escaping of admin-supplied values in the log.
//!
//! Tests are named after the item they cover (`i21_1_...`, `i13_10_...`). Every refusal
//! asserts the status, the JSON body and that nothing reached the upstream (or the
//! introspection endpoint, where that is the point).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

const ADMIN_TOKEN: &str = "verdicts-admin-token-0123456789";
const R_STAGING: &str = "https://mcp.example.com/staging";
const R_LIVE: &str = "https://mcp.example.com/live";

/// POST with `token` to `path`; the response.
async fn post(env: &Env, path: &str, token: &str) -> Resp {
    env.send(Req::post(path).bearer(token)).await
}

/// Asserts a 401 `invalid_token` with its JSON body, and that the upstream got nothing
/// from this request. (The helpers box their futures: a test's state machine holding
/// dozens of them inline overflows the test thread's stack in a debug build.)
async fn assert_refused(env: &Env, path: &str, token: &str, what: &str) -> Resp {
    Box::pin(async {
        let before = env.up.count();
        let r = post(env, path, token).await;
        assert_eq!(r.status, 401, "{what}: {r}");
        let c = r.challenge();
        assert_eq!(c.param("error"), Some("invalid_token"), "{what}: {r}");
        let v = r.json();
        assert_eq!(v["error"], "invalid_token", "{what}: {r}");
        assert!(
            v["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{what}: {r}"
        );
        assert_eq!(
            env.up.count(),
            before,
            "{what}: the refusal reached the upstream"
        );
        r
    })
    .await
}

async fn assert_ok(env: &Env, path: &str, token: &str, what: &str) {
    Box::pin(async {
        let before = env.up.count();
        let r = post(env, path, token).await;
        assert_eq!(r.status, 200, "{what}: {r}");
        assert_eq!(env.up.count(), before + 1, "{what}: not forwarded");
    })
    .await
}

/// The value of one series (boxed: see [`assert_refused`]).
async fn metric(env: &Env, name: &str, labels: &[(&str, &str)]) -> f64 {
    Box::pin(env.metric(name, labels)).await
}

/// Rewrites the config file with `edit` and waits (bounded) until the gateway counted
/// one more successful reload (boxed: see [`assert_refused`]).
async fn reload(env: &Env, edit: impl Fn(&str) -> String) {
    Box::pin(env.gw.reload(edit)).await
}

/// The staging key set: only the second issuer's key `o1`.
fn staging_jwks() -> Value {
    json!({"keys": [ec_jwk(&keys().other, "o1", "P-256", "ES256")]})
}

// ---------------------------------------------------------------------------------------------
// Item 1: the verified-token cache does not cross issuer entries
// ---------------------------------------------------------------------------------------------

/// A `typ: JWT` token signed with a key only the staging key set holds is refused on the
/// production route before and after the staging route accepted (and cached) it; a
/// production token is refused on the staging route likewise. A route that accepts both
/// entries tries each.
#[tokio::test]
async fn i21_1_cached_verdict_does_not_cross_issuer_entries() {
    let staging = MockIdp::start();
    staging.set_jwks(staging_jwks());
    let env = Env::builder(TWO_ENTRIES)
        .var("STAGING_JWKS", staging.jwks_uri())
        .start()
        .await;
    let aud = json!([R, R_STAGING, "https://mcp.example.com/both"]);
    let staging_token = Tok::new(&env.idp.issuer(), R)
        .c("aud", aud.clone())
        .h("typ", json!("JWT"))
        .key("ES256", "o1", Signer::Other)
        .build();
    assert_refused(&env, "/mcp", &staging_token, "cold, production route").await;
    assert_ok(&env, "/staging", &staging_token, "staging route").await;
    assert_ok(&env, "/staging", &staging_token, "staging route, cached").await;
    let r = assert_refused(
        &env,
        "/mcp",
        &staging_token,
        "production route after staging",
    )
    .await;
    assert_eq!(
        r.json()["error_description"],
        "token typ must be at+jwt (RFC 9068)",
        "judged by the production entry: {r}"
    );
    // The other way round: a production token is not a staging verdict.
    let prod_token = Tok::new(&env.idp.issuer(), R).c("aud", aud).build();
    assert_ok(&env, "/mcp", &prod_token, "production route").await;
    assert_ok(&env, "/mcp", &prod_token, "production route, cached").await;
    assert_refused(
        &env,
        "/staging",
        &prod_token,
        "staging route after production",
    )
    .await;
    // A route accepting both entries: each is tried, in order.
    assert_ok(&env, "/both", &prod_token, "both: production token").await;
    assert_ok(&env, "/both", &staging_token, "both: staging token").await;
    // And the production route still refuses the staging token.
    assert_refused(&env, "/mcp", &staging_token, "production route, at the end").await;
}

#[tokio::test]
async fn i21_1_jwt_cached_by_a_jwks_entry_is_introspected_on_a_live_route() {
    let mock = MockIdp::start();
    let env = Env::builder(JWKS_AND_LIVE)
        .var("EP", mock.endpoint())
        .start()
        .await;
    let t = env.tok().c("aud", json!([R, R_LIVE])).build();
    assert_ok(&env, "/mcp", &t, "JWKS route").await;
    assert_ok(&env, "/mcp", &t, "JWKS route, cached").await;
    assert_eq!(
        mock.calls(),
        0,
        "a JWT of the JWKS entry is never introspected"
    );
    // The AS revoked it (does not know it): refused on the live route.
    let r = assert_refused(&env, "/live", &t, "live route, token inactive at the AS").await;
    assert_eq!(
        r.json()["error_description"],
        "the token is not active",
        "{r}"
    );
    assert_eq!(mock.calls(), 1, "the live route asked the AS");
    assert_eq!(mock.seen()[0].param("token"), Some(t.as_str()));
    // A token the AS vouches for passes there, after its own call.
    let t2 = env.tok().c("aud", json!([R, R_LIVE])).build();
    assert_ok(&env, "/mcp", &t2, "JWKS route").await;
    mock.active(&t2, good(json!({"iss": env.idp.issuer(), "aud": R_LIVE})));
    assert_ok(&env, "/live", &t2, "live route, token active").await;
    assert_eq!(mock.calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// Item 2: a reload that tightens an issuer's settings reaches cached tokens
// ---------------------------------------------------------------------------------------------

/// Each tightening of an issuer entry, by reload, is applied on the next request to tokens
/// accepted (and cached) just before it: `require_at_jwt`, `clock_skew_seconds`,
/// `algorithms`, the key source (`jwks_uri`), while fresh tokens of the same shapes get the
/// same answer.
#[tokio::test]
async fn i21_2_each_tightened_issuer_setting_reaches_cached_tokens() {
    let env = Env::start(LOOSE).await;
    let iss = env.idp.issuer();
    let cached = |t: &str| t.to_string();
    let plain_jwt = cached(&env.tok().h("typ", json!("JWT")).build());
    let bare = cached(&env.tok().no_c("jti").no_c("client_id").build());
    let expired = cached(&env.tok().c("exp", json!(now() - 300)).build());
    let es256 = cached(&env.tok().build());
    for (t, what) in [
        (&plain_jwt, "typ JWT"),
        (&bare, "no jti, no client_id"),
        (&expired, "expired 300 s ago, skew 600"),
        (&es256, "ES256"),
    ] {
        assert_ok(&env, "/mcp", t, what).await;
        assert_ok(&env, "/mcp", t, what).await;
    }
    let hits = metric(
        &env,
        "mcpgate_cache_requests_total",
        &[("cache", "token"), ("result", "hit")],
    )
    .await;
    assert!(hits >= 4.0, "the tokens were cached: {hits} hits");

    // require_at_jwt: false -> true
    reload(&env, |t| {
        t.replace("require_at_jwt: false", "require_at_jwt: true")
    })
    .await;
    let r = assert_refused(&env, "/mcp", &plain_jwt, "require_at_jwt: cached typ JWT").await;
    assert_eq!(
        r.json()["error_description"],
        "token typ must be at+jwt (RFC 9068)"
    );
    let r = assert_refused(
        &env,
        "/mcp",
        &bare,
        "require_at_jwt: cached token without jti",
    )
    .await;
    assert_eq!(
        r.json()["error_description"],
        "token lacks a claim RFC 9068 requires (sub, client_id, iat, jti)"
    );
    let fresh = env.tok().h("typ", json!("JWT")).build();
    assert_refused(&env, "/mcp", &fresh, "require_at_jwt: fresh typ JWT").await;
    // The expired token is still within the skew: accepted (and cached) again.
    assert_ok(&env, "/mcp", &expired, "skew 600 still").await;
    assert_ok(&env, "/mcp", &expired, "skew 600 still, cached").await;

    // clock_skew_seconds: 600 -> 0
    reload(&env, |t| {
        t.replace("clock_skew_seconds: 600", "clock_skew_seconds: 0")
    })
    .await;
    let r = assert_refused(&env, "/mcp", &expired, "skew 0: cached expired token").await;
    assert_eq!(r.json()["error_description"], "token is expired");
    assert_ok(&env, "/mcp", &es256, "ES256 before the key source change").await;

    // jwks_uri: another key set, holding only `o1`
    let other = MockIdp::start();
    other.set_jwks(staging_jwks());
    let jwks = env.idp.jwks_uri();
    let moved = format!("jwks_uri: {}", other.jwks_uri());
    reload(&env, |t| t.replace(&format!("jwks_uri: {jwks}"), &moved)).await;
    let r = assert_refused(&env, "/mcp", &es256, "key source: cached ES256 token").await;
    assert_eq!(
        r.json()["error_description"],
        "no issuer key matches the token's kid and alg"
    );
    let o1 = Tok::new(&iss, R).key("ES256", "o1", Signer::Other).build();
    assert_ok(&env, "/mcp", &o1, "a token of the new key set").await;
    assert_ok(&env, "/mcp", &o1, "a token of the new key set, cached").await;

    // algorithms: [ES256, RS256] -> [RS256]
    reload(&env, |t| {
        t.replace("algorithms: [ES256, RS256]", "algorithms: [RS256]")
    })
    .await;
    let r = assert_refused(&env, "/mcp", &o1, "algorithms: cached ES256 token").await;
    assert_eq!(
        r.json()["error_description"],
        "token alg is not allowed for this issuer"
    );
}

/// The same for an issuer that switches to `token_format: opaque` (its cached JWTs are
/// then asked at the AS) and for introspection settings (`require_aud: false -> true`
/// refuses a cached answer without `aud`), each with the introspection calls counted.
#[tokio::test]
async fn i21_2_token_format_and_introspection_settings_reach_cached_tokens() {
    let mock = MockIdp::start();
    let env = Env::builder(JWT_WITH_INTROSPECTION)
        .var("EP", mock.endpoint())
        .start()
        .await;
    let jwt = env.tok().build();
    assert_ok(&env, "/mcp", &jwt, "JWT").await;
    assert_ok(&env, "/mcp", &jwt, "JWT, cached").await;
    let no_aud = opaque();
    let mut answer = good(json!({"iss": env.idp.issuer()}));
    answer.as_object_mut().unwrap().remove("aud");
    mock.active(&no_aud, answer);
    assert_ok(
        &env,
        "/mcp",
        &no_aud,
        "opaque without aud, require_aud: false",
    )
    .await;
    assert_ok(&env, "/mcp", &no_aud, "cached").await;
    assert_eq!(mock.calls(), 1);

    // introspection.require_aud: false -> true
    reload(&env, |t| {
        t.replace("require_aud: false", "require_aud: true")
    })
    .await;
    let r = assert_refused(
        &env,
        "/mcp",
        &no_aud,
        "require_aud: cached answer without aud",
    )
    .await;
    assert_eq!(
        r.json()["error_description"],
        "the introspection response has no aud for this resource"
    );
    assert_eq!(mock.calls(), 2, "asked again under the new settings");
    assert_ok(
        &env,
        "/mcp",
        &jwt,
        "the JWT is untouched by introspection settings",
    )
    .await;

    // token_format: jwt -> opaque
    reload(&env, |t| {
        t.replace("token_format: jwt", "token_format: opaque")
    })
    .await;
    let r = assert_refused(&env, "/mcp", &jwt, "token_format: cached JWT").await;
    assert_eq!(r.json()["error_description"], "the token is not active");
    assert_eq!(mock.calls(), 3);
    assert_eq!(mock.seen()[2].param("token"), Some(jwt.as_str()));
}

// ---------------------------------------------------------------------------------------------
// Item 3: revocation edges
// ---------------------------------------------------------------------------------------------

/// An environment whose admin listener takes [`ADMIN_TOKEN`].
async fn admin_env() -> Env {
    Env::builder(WITH_ADMIN)
        .admin_token(ADMIN_TOKEN)
        .start()
        .await
}

async fn revoke(env: &Env, body: &Value) -> Resp {
    let req = Req::new("POST", "/revocations")
        .host("localhost")
        .bearer(ADMIN_TOKEN)
        .h("Content-Type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    send_to(env.gw.admin_addr(), &req).await.unwrap()
}

async fn assert_revoked(env: &Env, token: &str, what: &str) {
    let r = assert_refused(env, "/mcp", token, what).await;
    assert_eq!(
        r.json()["error_description"],
        "token has been revoked",
        "{what}: {r}"
    );
}

/// A token issued by an AS whose clock runs 30 s ahead is revoked by a revocation of its
/// subject (issued up to the skew after the revocation); a token issued more than the
/// skew after it works.
#[tokio::test]
async fn i21_3_revocation_by_subject_covers_the_allowed_future_skew() {
    let env = admin_env().await;
    let ahead = env
        .tok()
        .c("sub", json!("carol"))
        .c("iat", json!(now() + 30))
        .build();
    assert_ok(
        &env,
        "/mcp",
        &ahead,
        "iat 30 s ahead, before the revocation",
    )
    .await;
    let r = revoke(&env, &json!({"subject": "carol"})).await;
    assert_eq!(r.status, 201, "{r}");
    let revoked_at = r.json()["revocation"]["revoked_at"].as_i64().unwrap();
    assert_revoked(&env, &ahead, "cached token issued 30 s ahead").await;
    let later_ahead = env
        .tok()
        .c("sub", json!("carol"))
        .c("iat", json!(now() + 30))
        .build();
    assert_revoked(&env, &later_ahead, "a token issued just after, 30 s ahead").await;
    let edge = env
        .tok()
        .c("sub", json!("carol"))
        .c("iat", json!(revoked_at + 60))
        .build();
    assert_revoked(&env, &edge, "iat = revoked_at + skew").await;
    // Past revoked_at + skew (the gateway accepts iat up to now + skew): a new token.
    within(Duration::from_secs(3), || async { now() > revoked_at })
        .await
        .unwrap();
    let fresh = env
        .tok()
        .c("sub", json!("carol"))
        .c("iat", json!(revoked_at + 61))
        .build();
    assert_ok(&env, "/mcp", &fresh, "issued after revoked_at + skew").await;
    assert_ok(
        &env,
        "/mcp",
        &env.tok().c("sub", json!("dan")).build(),
        "bystander",
    )
    .await;
}

/// Revoking a client catches a token whose `azp` names it while its `client_id` differs,
/// and one with `azp` alone; other clients are untouched.
#[tokio::test]
async fn i21_3_revocation_by_client_matches_azp() {
    let env = admin_env().await;
    let both = env
        .tok()
        .c("client_id", json!("web"))
        .c("azp", json!("mobile"))
        .build();
    let azp_only = env
        .tok()
        .no_c("client_id")
        .c("azp", json!("mobile"))
        .build();
    let other = env
        .tok()
        .c("client_id", json!("web"))
        .c("azp", json!("web"))
        .build();
    for (t, what) in [
        (&both, "client_id web, azp mobile"),
        (&azp_only, "azp mobile only"),
        (&other, "web"),
    ] {
        assert_ok(&env, "/mcp", t, what).await;
    }
    let r = revoke(&env, &json!({"client_id": "mobile"})).await;
    assert_eq!(r.status, 201, "{r}");
    assert_revoked(&env, &both, "azp names the revoked client").await;
    assert_revoked(&env, &azp_only, "azp alone").await;
    assert_ok(&env, "/mcp", &other, "another client").await;
    let r = revoke(&env, &json!({"client_id": "web"})).await;
    assert_eq!(r.status, 201, "{r}");
    assert_revoked(&env, &other, "client_id names the revoked client").await;
}

// ---------------------------------------------------------------------------------------------
// Issue 13 item 10: the introspection budget and breaker, the admin listener's
// Authorization, admin-supplied values in the log
// ---------------------------------------------------------------------------------------------

/// The introspection fixture of `introspection.rs` with a small budget or breaker.
async fn budget_env(mock: &MockIdp, intro: &str) -> Env {
    crate::introspection::opaque_env(mock, intro).await
}

fn assert_503_budget(r: &Resp, what: &str) {
    assert_eq!(r.status, 503, "{what}: {r}");
    assert!(
        r.header("retry-after").is_some(),
        "{what}: Retry-After: {r}"
    );
    assert_eq!(r.json()["error"], "temporarily_unavailable", "{what}: {r}");
}

/// A flood of 300 random opaque tokens (30 at a time) makes at most the budget of calls
/// to the AS (`burst` + `max_calls_per_second` × the flood's duration); the rest get 503 +
/// `Retry-After`, counted as `rate_limited`; nothing reaches the upstream. A token the AS
/// vouched for before the flood keeps working from the cache, and once the budget has
/// refilled a new token is introspected again.
#[tokio::test]
async fn i13_10_an_opaque_token_flood_makes_at_most_the_budget_of_calls() {
    let mock = MockIdp::start();
    let env = budget_env(
        &mock,
        "      max_calls_per_second: 10\n      burst: 20\n      breaker_failures: 100",
    )
    .await;
    let known = opaque();
    mock.active(&known, good(json!({})));
    env.assert_accepted(&known, "before the flood").await;
    assert_eq!(mock.calls(), 1);
    let forwarded = env.up.count();

    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let batch: Vec<_> = (0..30)
            .map(|_| {
                let addr = env.gw.addr();
                tokio::spawn(async move {
                    send_to(addr, &Req::post("/mcp").bearer(&opaque()))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for h in batch {
            statuses.push(h.await.unwrap());
        }
    }
    let took = started.elapsed().as_secs_f64();
    let calls = mock.calls() - 1;
    let allowed = 20.0 + 10.0 * took.ceil();
    eprintln!(
        "flood: {} requests in {took:.2} s, {calls} introspection calls",
        statuses.len()
    );
    assert!(
        calls as f64 <= allowed,
        "{calls} calls for a budget of {allowed} in {took:.2} s"
    );
    // The call for `known` took one token of the burst of 20 before the flood.
    assert!(calls >= 19, "the burst was usable: {calls} calls");
    let mut limited = 0;
    for r in &statuses {
        match r.status {
            401 => assert_eq!(r.json()["error"], "invalid_token", "{r}"),
            503 => {
                assert_503_budget(r, "flood");
                let d = r.json()["error_description"].as_str().unwrap().to_string();
                if d.contains("budget") {
                    limited += 1;
                } else {
                    // A call that was made but not answered in time (a loaded machine).
                    assert!(d.contains("could not be asked"), "{r}");
                }
            }
            _ => panic!("unexpected answer in the flood: {r}"),
        }
    }
    assert_eq!(
        limited + calls,
        300,
        "every token was either asked or refused"
    );
    assert_eq!(
        env.up.count(),
        forwarded,
        "a flood token reached the upstream"
    );
    let rate_limited = metric(
        &env,
        "mcpgate_introspection_requests_total",
        &[("issuer", "opaque"), ("result", "rate_limited")],
    )
    .await;
    assert_eq!(rate_limited as usize, limited);
    // The cached token does not need the budget.
    env.assert_accepted(&known, "during the spent budget").await;
    // The budget refills: a new token is asked again (bounded wait).
    let fresh = opaque();
    mock.active(&fresh, good(json!({})));
    within(Duration::from_secs(5), || async {
        post(&env, "/mcp", &fresh).await.status == 200
    })
    .await
    .expect("the budget did not refill");
}

/// An AS that keeps failing is not asked again for `breaker_open_ms` after
/// `breaker_failures` failures in a row (503 at once, counted as `circuit_open`); one probe
/// after that period closes the breaker when the AS answers again.
#[tokio::test]
async fn i13_10_a_failing_as_opens_the_introspection_breaker() {
    let mock = MockIdp::start();
    let env = budget_env(
        &mock,
        "      breaker_failures: 3\n      breaker_open_ms: 2000",
    )
    .await;
    let failing = || {
        let t = opaque();
        mock.answer(
            &t,
            Answer::Raw(500, "application/json", r#"{"error":"server_error"}"#),
        );
        t
    };
    for i in 0..3 {
        let r = post(&env, "/mcp", &failing()).await;
        assert_503_budget(&r, &format!("failure {i}"));
    }
    assert_eq!(mock.calls(), 3);
    let opened = Instant::now();
    for i in 0..5 {
        let r = post(&env, "/mcp", &failing()).await;
        assert_503_budget(&r, &format!("open {i}"));
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains("keeps failing"),
            "{r}"
        );
    }
    assert!(
        opened.elapsed() < Duration::from_millis(1800),
        "the test was too slow to see the breaker open"
    );
    assert_eq!(
        mock.calls(),
        3,
        "the AS was asked while the breaker was open"
    );
    env.assert_nothing_forwarded();
    let open = metric(
        &env,
        "mcpgate_introspection_requests_total",
        &[("issuer", "opaque"), ("result", "circuit_open")],
    )
    .await;
    assert_eq!(open, 5.0);
    assert!(
        env.gw.logs().contains("circuit breaker open"),
        "{}",
        env.gw.logs()
    );
    // The AS is back: after the open period, one probe closes the breaker.
    let good_token = opaque();
    mock.active(&good_token, good(json!({})));
    within(Duration::from_secs(5), || async {
        post(&env, "/mcp", &good_token).await.status == 200
    })
    .await
    .expect("the breaker did not close");
    assert!(
        opened.elapsed() >= Duration::from_millis(2000),
        "closed before its open period"
    );
    assert_eq!(mock.calls(), 4, "one probe");
}

/// Two `Authorization` headers on the admin listener are 400 whatever their order, case
/// and values; nothing is recorded.
#[tokio::test]
async fn i13_10_admin_listener_refuses_two_authorization_headers() {
    let env = admin_env().await;
    let body = serde_json::to_vec(&json!({"subject": "victim"})).unwrap();
    let good = format!("Bearer {ADMIN_TOKEN}");
    for (a, b) in [
        (good.as_str(), "Bearer wrong-wrong-wrong-wrong"),
        ("Bearer wrong-wrong-wrong-wrong", good.as_str()),
        (good.as_str(), good.as_str()),
        (good.as_str(), ""),
    ] {
        for (n1, n2) in [
            ("Authorization", "Authorization"),
            ("authorization", "AUTHORIZATION"),
        ] {
            for method in ["POST", "GET"] {
                let mut req = Req::new(method, "/revocations")
                    .host("localhost")
                    .h(n1, a)
                    .h(n2, b);
                if method == "POST" {
                    req = req.h("Content-Type", "application/json").body(body.clone());
                }
                let r = send_to(env.gw.admin_addr(), &req).await.unwrap();
                assert_eq!(r.status, 400, "{method} {n1}: {a:?} + {n2}: {b:?}: {r}");
                let v = r.json();
                assert_eq!(v["error"], "invalid_request", "{r}");
                assert_eq!(
                    v["error_description"],
                    "the Authorization header appears more than once"
                );
            }
        }
    }
    let list = send_to(
        env.gw.admin_addr(),
        &Req::get("/revocations")
            .host("localhost")
            .bearer(ADMIN_TOKEN),
    )
    .await
    .unwrap();
    assert_eq!(list.status, 200, "{list}");
    assert_eq!(
        list.json()["revocations"],
        json!([]),
        "a refused request recorded something"
    );
}

/// Revocations whose `subject`, `client_id`, `jti` and `reason` hold newlines,
/// carriage returns and ESC/BEL/C1 sequences are logged escaped in both log formats: no
/// line is forged, no control character reaches the log. A token of that subject is
/// refused, and its audit line is escaped too.
#[tokio::test]
async fn i13_10_admin_supplied_values_cannot_forge_log_lines() {
    let forged = "\n2026-01-01T00:00:00.000000Z ERROR mcpgate: FORGED\x1b[31m\r\x07\u{9b}2J";
    for format in ["pretty", "json"] {
        let env = Env::builder(WITH_ADMIN)
            .admin_token(ADMIN_TOKEN)
            .args(&["--log-format", format])
            .start()
            .await;
        let (gw, idp, up) = (&env.gw, &env.idp, &env.up);
        let subject = format!("mallory{forged}");
        for field in ["subject", "client_id", "jti"] {
            // (An `issuer` must be a configured one since the red team's finding 14, so it
            // cannot carry a forgery any more: `redteam::finding14_revocation_for_unknown_issuer_refused`.)
            let body = json!({field: format!("{field}{forged}"), "reason": format!("why{forged}")});
            let body = if field == "subject" {
                json!({"subject": subject, "reason": format!("why{forged}")})
            } else {
                body
            };
            let req = Req::new("POST", "/revocations")
                .host("localhost")
                .bearer(ADMIN_TOKEN)
                .h("Content-Type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
            let r = send_to(gw.admin_addr(), &req).await.unwrap();
            assert_eq!(r.status, 201, "{format} {field}: {r}");
        }
        let t = Tok::new(&idp.issuer(), R)
            .c("sub", json!(subject))
            .c("iat", json!(now() - 5))
            .build();
        let r = send_to(gw.addr(), &Req::post("/mcp").bearer(&t))
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{r}");
        assert_eq!(up.count(), 0);
        let logs = gw.wait_log("revocation recorded", 3).await;
        for line in logs.lines() {
            assert!(
                !line.contains("FORGED")
                    || line.contains("revocation")
                    || line.contains("mcpgate::audit"),
                "{format}: a forged line: {line:?}"
            );
            assert!(
                !line.starts_with("2026-01-01"),
                "{format}: a forged line: {line:?}"
            );
            if format == "json" {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
            }
        }
        assert!(
            !logs.chars().any(|c| c.is_control() && c != '\n'),
            "{format}: a control character reached the log"
        );
        assert!(
            logs.contains("FORGED"),
            "{format}: the values were not logged at all"
        );
        assert!(
            logs.contains("token_revoked") || logs.contains("revoked"),
            "{logs}"
        );
    }
}
