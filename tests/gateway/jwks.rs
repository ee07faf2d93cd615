//! Key sets: SPEC-CHECKLIST §4.18 (outages, rotation, refetch bounds, discovery, redirects).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// Asserts a 503 outage answer: `Retry-After`, JSON error body, nothing forwarded.
fn assert_outage(env: &Env, r: &Resp) {
    assert_eq!(r.status, 503, "{r}");
    let ra = r.header("retry-after");
    assert!(
        ra.is_some_and(|v| v.trim().parse::<u64>().is_ok()),
        "503 needs a delta-seconds Retry-After: {r}"
    );
    assert_json_error(r, None);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_18_cold_start_unreachable_jwks_gives_503() {
    let down = ClosedPort::new();
    let env = Env::builder(STANDARD)
        .var("JWKS", format!("{}/jwks", down.url()))
        .not_ready()
        .start()
        .await;
    let t = env.tok().build();
    let r = env.post_mcp(&t).await;
    assert_outage(&env, &r);
    // Readiness reflects the missing keys.
    assert_eq!(env.admin("/readyz").await.status, 503);
    // Requests without a token still get the normal 401 challenge.
    let r = env.send(Req::post("/mcp")).await;
    assert_401_no_error(&r, PRM, Some("mcp:read"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_18_cold_start_jwks_500_gives_503() {
    let idp = MockIdp::start();
    idp.set_mode(IdpMode::Fail500);
    let env = Env::start_with(STANDARD, idp, false).await;
    let r = env.post_mcp(&env.tok().build()).await;
    assert_outage(&env, &r);
    assert_eq!(env.admin("/readyz").await.status, 503);
    // The log says what the failure means: there are no keys to fall back on.
    let logs = env.gw.wait_log("JWKS fetch failed; no keys yet", 1).await;
    assert!(!logs.contains("last good keys"), "{logs}");
}

#[tokio::test]
async fn c4_18_cold_start_jwks_hangup_gives_503() {
    let idp = MockIdp::start();
    idp.set_mode(IdpMode::Hangup);
    let env = Env::start_with(STANDARD, idp, false).await;
    let r = env.post_mcp(&env.tok().build()).await;
    assert_outage(&env, &r);
}

#[tokio::test]
async fn c4_18_cold_start_outage_recovers_when_idp_returns() {
    let idp = MockIdp::start();
    idp.set_mode(IdpMode::Fail500);
    let env = Env::start_with(STANDARD, idp, false).await;
    let r = env.post_mcp(&env.tok().build()).await;
    assert_outage(&env, &r);
    env.idp.set_mode(IdpMode::Ok);
    eventually(
        Duration::from_secs(20),
        "gateway recovered after the IdP came back",
        || async {
            let r = env.post_mcp(&env.tok().build()).await;
            if r.status != 200 {
                assert_eq!(r.status, 503, "{r}");
            }
            r.status == 200
        },
    )
    .await;
    assert_eq!(env.admin("/readyz").await.status, 200);
}

#[tokio::test]
async fn c4_18_jwks_redirect_not_followed_off_host() {
    let canary = Canary::start();
    let idp = MockIdp::start();
    // Same loopback machine, but another host name (and port): off-host for the JWKS origin.
    let canary_url = canary.url().replace("127.0.0.1", "localhost");
    idp.set_mode(IdpMode::Redirect(format!("{canary_url}/jwks")));
    let env = Env::start_with(STANDARD, idp, false).await;
    // The canary serves the attacker's key under kid k1.
    let t = env.tok().signer(Signer::Evil).build();
    let r = env.post_mcp(&t).await;
    // Not following the redirect leaves the issuer without keys: the outage answer.
    assert_outage(&env, &r);
    assert_eq!(
        canary.hits(),
        0,
        "gateway followed an off-host JWKS redirect"
    );
}

#[tokio::test]
async fn c4_18_rotation_unknown_kid_triggers_refetch() {
    let idp = MockIdp::start();
    let k = keys();
    idp.set_jwks(json!({"keys": [ec_jwk(&k.k1, "k1", "P-256", "ES256")]}));
    let env = Env::start_with(STANDARD, idp, true).await;
    env.assert_accepted(&env.tok().build(), "k1 before rotation")
        .await;
    let before = env.idp.jwks_fetches();
    // The IdP rotates in k3; a token signed with it must work without waiting for the TTL.
    env.idp.set_jwks(json!({"keys": [
        ec_jwk(&k.k1, "k1", "P-256", "ES256"),
        ec_jwk(&k.k3, "k3", "P-256", "ES256"),
    ]}));
    // The refetch is rate-limited (the interval is the gateway's choice), so retry for a while;
    // every attempt must be a clean 401 and the IdP must see only a bounded number of fetches.
    let took = within(Duration::from_secs(15), || async {
        let t = env.tok().key("ES256", "k3", Signer::K3).build();
        let r = env.post_mcp(&t).await;
        if r.status != 200 {
            assert_invalid_token(&r, PRM);
        }
        r.status == 200
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "k3 still refused 15 s after rotation; fetches since: {}",
            env.idp.jwks_fetches() - before
        )
    });
    eprintln!("rotation honoured after {took:?}");
    let after = env.idp.jwks_fetches();
    assert!(after > before, "no JWKS refetch on unknown kid");
    assert!(
        after - before <= 3,
        "too many refetches: {}",
        after - before
    );
    env.assert_accepted(&env.tok().build(), "k1 still valid")
        .await;
}

#[tokio::test]
async fn c4_18_random_kids_cause_bounded_fetches() {
    let env = Env::standard().await;
    let before = env.idp.jwks_fetches();
    let addr = env.gw.addr();
    let base = env.tok();
    let started = Instant::now();
    let mut statuses = std::collections::HashMap::<u16, usize>::new();
    for batch in 0..50 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..20 {
            let t = base
                .clone()
                .h("kid", json!(format!("rnd-{batch}-{i}-{}", random_hex(8))))
                .build();
            set.spawn(async move { send_to(addr, &Req::post("/mcp").bearer(&t)).await });
        }
        while let Some(res) = set.join_next().await {
            let r = res.unwrap().unwrap();
            *statuses.entry(r.status).or_default() += 1;
        }
    }
    assert_eq!(
        statuses.get(&401).copied(),
        Some(1000),
        "statuses {statuses:?}"
    );
    let fetched = env.idp.jwks_fetches() - before;
    eprintln!(
        "1000 random kids: {fetched} JWKS fetches in {:?}",
        started.elapsed()
    );
    assert!(
        fetched <= 5,
        "1000 random kids caused {fetched} JWKS fetches"
    );
    env.assert_nothing_forwarded();
    env.assert_accepted(&env.tok().build(), "good token still works")
        .await;
}

#[tokio::test]
async fn c4_18_cached_keys_survive_idp_outage() {
    let env = Env::standard().await;
    env.assert_accepted(&env.tok().build(), "before outage")
        .await;
    env.idp.set_mode(IdpMode::Fail500);
    // A different token (new jti) with a known kid still verifies from cached keys.
    env.assert_accepted(&env.tok().build(), "during outage")
        .await;
    env.assert_accepted(
        &env.tok().key("RS256", "k2", Signer::K2).build(),
        "other cached key during outage",
    )
    .await;
    env.up.clear();
    // An unknown kid cannot be resolved: refused, never forwarded.
    let t = env.tok().key("ES256", "k3", Signer::K3).build();
    let r = env.post_mcp(&t).await;
    // The cached keys are usable, so this is a bad token, not an outage.
    assert_invalid_token(&r, PRM);
    env.assert_nothing_forwarded();
    env.idp.set_mode(IdpMode::Hangup);
    env.assert_accepted(&env.tok().build(), "IdP hanging up")
        .await;
}

#[tokio::test]
async fn c4_18_discovery_via_rfc8414_with_issuer_path() {
    let idp = MockIdp::start_at("/tenant");
    idp.set_discovery(true, false);
    let tpl = STANDARD.replace("    jwks_uri: {JWKS}\n", "");
    let env = Env::start_with(&tpl, idp, true).await;
    env.assert_accepted(&env.tok().build(), "discovered keys")
        .await;
    assert!(
        env.idp
            .count("/.well-known/oauth-authorization-server/tenant")
            >= 1
    );
    assert!(env.idp.jwks_fetches() >= 1);
}

#[tokio::test]
async fn c4_18_discovery_falls_back_to_openid_configuration() {
    let idp = MockIdp::start();
    idp.set_discovery(false, true);
    let tpl = STANDARD.replace("    jwks_uri: {JWKS}\n", "");
    let env = Env::start_with(&tpl, idp, true).await;
    env.assert_accepted(&env.tok().build(), "keys via OIDC discovery")
        .await;
    assert!(env.idp.count("/.well-known/openid-configuration") >= 1);
}

#[tokio::test]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let env = Env::standard().await;
    let r = env.admin("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), "ok");
    assert_eq!(env.admin("/readyz").await.status, 200);
    env.assert_accepted(&env.tok().build(), "one request").await;
    let m = env.admin("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.text().lines().any(|l| l.starts_with("# TYPE ")),
        "Prometheus text expected: {}",
        m.text()
    );
    // The admin listener is not reachable through the public port.
    let r = env.send(Req::get("/metrics")).await;
    assert_eq!(r.status, 404, "{r}");
    let r = env.send(Req::get("/healthz")).await;
    assert_eq!(r.status, 404, "{r}");
    assert_eq!(env.up.count(), 1);
}
