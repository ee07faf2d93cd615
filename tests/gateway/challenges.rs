//! Credentials and challenges: SPEC-CHECKLIST §1 (1, 6, 7, 8, 10, 11, 17) and §3 (RFC 6750).

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn c1_1_unauthenticated_post_gets_401_with_prm_and_scope() {
    let env = Env::standard().await;
    let r = env.send(Req::post("/mcp")).await;
    assert_401_no_error(&r, PRM, Some("mcp:read"));
    assert_json_error(&r, Some("unauthorized"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_1_challenge_omits_scope_when_route_has_none() {
    let tpl = STANDARD.to_string() + &route("noscope", "/noscope", &[]);
    let env = Env::start(&tpl).await;
    let r = env.send(Req::post("/noscope")).await;
    assert_401_no_error(
        &r,
        "https://mcp.example.com/.well-known/oauth-protected-resource/noscope",
        None,
    );
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_6_insufficient_scope_gets_403_naming_required_scope() {
    let env = Env::standard().await;
    let t = Tok::new(&env.idp.issuer(), R_ADMIN).build(); // right audience, scope mcp:read only
    let r = env.send(Req::post("/admin/mcp").bearer(&t)).await;
    assert_insufficient_scope(&r, "admin", PRM_ADMIN);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_6_challenge_names_every_required_scope() {
    let tpl =
        STANDARD.to_string() + &route("multi", "/multi", &["scopes: [files:read, files:write]"]);
    let env = Env::start(&tpl).await;
    let prm = "https://mcp.example.com/.well-known/oauth-protected-resource/multi";
    let r = env.send(Req::post("/multi")).await;
    assert_401_no_error(&r, prm, Some("files:read files:write"));
    let t = Tok::new(&env.idp.issuer(), "https://mcp.example.com/multi")
        .scope("files:read")
        .build();
    let r = env.send(Req::post("/multi").bearer(&t)).await;
    assert_insufficient_scope(&r, "files:read files:write", prm);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_7_scope_hierarchy_parent_satisfies_child() {
    let tpl = STANDARD.replace(
        "issuers:",
        "scope_hierarchy:\n  files: [files:read, files:write]\nissuers:",
    ) + &route("files", "/files", &["scopes: [files:read]"])
        + &route("filesall", "/filesall", &["scopes: [files]"]);
    let env = Env::start(&tpl).await;
    let t = Tok::new(&env.idp.issuer(), "https://mcp.example.com/files")
        .scope("files")
        .build();
    let r = env.send(Req::post("/files").bearer(&t)).await;
    assert_eq!(r.status, 200, "parent scope must satisfy files:read: {r}");
    assert_eq!(env.up.count(), 1);
    env.up.clear();

    // The hierarchy is not reversed: files:read does not satisfy files.
    let t = Tok::new(&env.idp.issuer(), "https://mcp.example.com/filesall")
        .scope("files:read files:write")
        .build();
    let r = env.send(Req::post("/filesall").bearer(&t)).await;
    assert_insufficient_scope(
        &r,
        "files",
        "https://mcp.example.com/.well-known/oauth-protected-resource/filesall",
    );
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_8_offline_access_never_advertised() {
    let tpl = STANDARD.replace(
        "    scopes: [mcp:read]\n",
        "    scopes: [mcp:read]\n    scopes_supported: [offline_access, mcp:write]\n",
    );
    let env = Env::start(&tpl).await;
    let r = env
        .send(Req::get("/.well-known/oauth-protected-resource/mcp"))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let scopes: Vec<String> = r.json()["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(scopes.contains(&"mcp:read".to_string()), "{scopes:?}");
    assert!(scopes.contains(&"mcp:write".to_string()), "{scopes:?}");
    assert!(
        !scopes.contains(&"offline_access".to_string()),
        "{scopes:?}"
    );
    let r = env.send(Req::post("/mcp")).await;
    let c = r.challenge();
    assert!(!c.param("scope").unwrap_or("").contains("offline_access"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_10_query_token_alone_is_ignored_401_no_error() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env.send(Req::post(&format!("/mcp?access_token={t}"))).await;
    assert_401_no_error(&r, PRM, Some("mcp:read"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_10_query_token_with_header_is_400() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(Req::post(&format!("/mcp?access_token={t}")).bearer(&t))
        .await;
    assert_invalid_request(&r);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_10_query_token_never_logged() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let _ = env.send(Req::post(&format!("/mcp?access_token={t}"))).await;
    let _ = env
        .send(Req::post(&format!("/mcp?x=1&access_token={t}")).bearer(&t))
        .await;
    // Also a header-only token: the log must not carry it either.
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200, "{r}");
    // Every decision writes one audit line: once the three are in, so is everything else
    // these requests made the gateway log.
    let logs = env.gw.wait_log("mcpgate::audit", 3).await;
    let sig = t.rsplit('.').next().unwrap();
    assert!(
        !logs.contains(sig),
        "token signature found in gateway logs:\n{logs}"
    );
}

#[tokio::test]
async fn c1_11_session_id_is_not_authentication() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200, "{r}");
    env.up.clear();
    let r = env
        .send(Req::post("/mcp").h("Mcp-Session-Id", "session-abc"))
        .await;
    assert_401_no_error(&r, PRM, Some("mcp:read"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_17_other_methods_without_token_get_401() {
    let env = Env::standard().await;
    let reqs = [
        Req::get("/mcp").h("Accept", "text/event-stream"),
        Req::new("DELETE", "/mcp").h("Mcp-Session-Id", "s1"),
        Req::new("PUT", "/mcp").body(b"{}".to_vec()),
        Req::new("PATCH", "/mcp").body(b"{}".to_vec()),
        Req::new("POST", "/mcp")
            .h("Content-Type", "application/json")
            .body(
                br#"{"jsonrpc":"2.0","id":2,"method":"subscriptions/listen","params":{}}"#.to_vec(),
            ),
        Req::get("/mcp/anything/below"),
    ];
    for req in reqs {
        let what = format!("{} {}", req.method, req.target);
        let r = env.send(req).await;
        assert_eq!(r.status, 401, "{what}: {r}");
        assert_401_no_error(&r, PRM, Some("mcp:read"));
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c3_1_scheme_is_case_insensitive_and_allows_extra_spaces() {
    let env = Env::standard().await;
    let t = env.tok().build();
    for auth in [
        format!("bearer {t}"),
        format!("BEARER {t}"),
        format!("BeArEr {t}"),
        format!("Bearer  {t}"),
    ] {
        let r = env.send(Req::post("/mcp").h("Authorization", &auth)).await;
        assert_eq!(r.status, 200, "{auth:?}: {r}");
    }
    assert_eq!(env.up.count(), 4);
}

#[tokio::test]
async fn c3_2_malformed_credentials_get_400_invalid_request() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let cases = [
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Bearer a b".to_string(),
        format!("Bearer {t} extra"),
        format!("Bearer {t},"),
        format!("Bearer \"{t}\""),
        format!("Bearer {t}\\"),
        "Bearer a,b".to_string(),
        "Bearer ab\"c".to_string(),
        "Bearer a\\b".to_string(),
        "Bearer a{b}".to_string(),
    ];
    for auth in cases {
        let r = env.send(Req::post("/mcp").h("Authorization", &auth)).await;
        assert_eq!(r.status, 400, "{auth:?}: {r}");
        assert_invalid_request(&r);
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c3_3_no_usable_credentials_get_401_without_error() {
    let env = Env::standard().await;
    let cases = [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Token abcdef"),
        Some("Negotiate YIIB"),
    ];
    for auth in cases {
        let mut req = Req::post("/mcp");
        if let Some(a) = auth {
            req = req.h("Authorization", a);
        }
        let r = env.send(req).await;
        assert_eq!(r.status, 401, "{auth:?}: {r}");
        assert_401_no_error(&r, PRM, Some("mcp:read"));
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c3_4_status_mapping() {
    let env = Env::standard().await;
    // invalid_request -> 400
    let r = env
        .send(Req::post("/mcp").h("Authorization", "Bearer a b"))
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(r.challenge().param("error"), Some("invalid_request"));
    // invalid_token -> 401
    let r = env.post_mcp("aaa.bbb.ccc").await;
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(r.challenge().param("error"), Some("invalid_token"));
    // insufficient_scope -> 403
    let t = Tok::new(&env.idp.issuer(), R_ADMIN).build();
    let r = env.send(Req::post("/admin/mcp").bearer(&t)).await;
    assert_eq!(r.status, 403, "{r}");
    assert_eq!(r.challenge().param("error"), Some("insufficient_scope"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c3_5_two_authorization_headers_get_400() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env.send(Req::post("/mcp").bearer(&t).bearer(&t)).await;
    assert_invalid_request(&r);
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("Authorization", "Basic dXNlcjpwYXNz"),
        )
        .await;
    assert_invalid_request(&r);
    // Header plus query token.
    let r = env
        .send(Req::post(&format!("/mcp?access_token={t}")).bearer(&t))
        .await;
    assert_invalid_request(&r);
    env.assert_nothing_forwarded();
}

/// Scope/description characters allowed by RFC 6750 §3.
fn hygienic(s: &str) -> bool {
    s.bytes()
        .all(|b| b == 0x20 || b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[tokio::test]
async fn c3_6_challenge_hygiene_with_hostile_claims() {
    let env = Env::standard().await;
    let iss = env.idp.issuer();
    let evil = "x\"y\\z\r\nX-Injected: 1 \u{e9}\u{202e}";
    let tokens = [
        // Bad audience with hostile characters.
        Tok::new(&iss, evil).build(),
        // Bad issuer with hostile characters.
        Tok::new(&format!("{iss}{evil}"), R).build(),
        // Hostile kid.
        env.tok().h("kid", json!(evil)).build(),
        // Hostile typ.
        env.tok().h("typ", json!(evil)).build(),
        // Hostile alg.
        env.tok().h("alg", json!(evil)).build(),
    ];
    for t in &tokens {
        let r = env.post_mcp(t).await;
        assert_eq!(r.status, 401, "{r}");
        let c = r.challenge(); // strict parse: no escapes, no duplicates, ASCII only
        assert!(r.header("x-injected").is_none(), "{r}");
        for (name, value) in &c.params {
            assert!(
                hygienic(value),
                "param {name} has forbidden chars: {value:?}"
            );
            assert!(!value.contains("X-Injected"), "claim reflected: {value:?}");
        }
        assert!(
            c.param("realm").is_none()
                || c.params.iter().filter(|(n, _)| n == "realm").count() == 1
        );
    }
    // Hostile scope claim on a 403.
    let t = Tok::new(&iss, R_ADMIN)
        .scope(&format!("mcp:read {evil}"))
        .build();
    let r = env.send(Req::post("/admin/mcp").bearer(&t)).await;
    assert_insufficient_scope(&r, "admin", PRM_ADMIN);
    for (_, value) in &r.challenge().params {
        assert!(hygienic(value), "{value:?}");
    }
    env.assert_nothing_forwarded();
}
