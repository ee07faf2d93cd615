//! Per-issuer settings that the IdP guides (`config/idp/`) rely on: `scope_claims` (which
//! claims carry scopes: Entra app-only tokens carry `roles`) and `ca_file` (an issuer
//! behind a private CA, for discovery and JWKS).

use serde_json::json;

use crate::harness::*;

/// A gateway on [`ISSUER_SETTINGS`] with `issuer` lines and this IdP.
async fn start(idp: MockIdp, issuer: &str, ready: bool) -> Env {
    let b = Env::builder(ISSUER_SETTINGS).idp(idp).var("ISSUER", issuer);
    if ready { b } else { b.not_ready() }.start().await
}

#[tokio::test]
async fn scope_claims_roles_accepted_when_configured() {
    let env = start(
        MockIdp::start(),
        "    scope_claims: [scope, scp, roles]",
        true,
    )
    .await;
    // An Entra app-only token: the granted application roles, no `scope`.
    let t = env
        .tok()
        .no_c("scope")
        .c("roles", json!(["mcp:read"]))
        .build();
    env.assert_accepted(&t, "roles carry mcp:read").await;
    let seen = env.up.requests();
    assert_eq!(
        seen.last().unwrap().header("x-auth-scopes"),
        Some("mcp:read"),
        "the roles are the scopes sent upstream"
    );
    // Scopes from every listed claim count, once each.
    let t = env
        .tok()
        .scope("a")
        .c("scp", json!("b"))
        .c("roles", json!(["mcp:read", "a"]))
        .build();
    env.assert_accepted(&t, "scope + scp + roles").await;
    assert_eq!(
        env.up.requests().last().unwrap().header("x-auth-scopes"),
        Some("a b mcp:read")
    );
    // `roles` named but not an array of strings: the token is refused, not read as empty.
    for bad in [json!("mcp:read"), json!([1]), json!({"mcp:read": true})] {
        let t = env.tok().no_c("scope").c("roles", bad.clone()).build();
        env.assert_rejected(&t, &format!("roles = {bad}")).await;
    }
}

#[tokio::test]
async fn roles_are_not_scopes_unless_configured() {
    // The default is [scope, scp]: a token whose only grant is in `roles` has no scope.
    let env = start(MockIdp::start(), "", true).await;
    let t = env
        .tok()
        .no_c("scope")
        .c("roles", json!(["mcp:read"]))
        .build();
    let r = env.post_mcp(&t).await;
    assert_insufficient_scope(&r, "mcp:read", PRM);
    env.assert_nothing_forwarded();
    // And a route reading only `roles` ignores `scope` and `scp`.
    let env = start(MockIdp::start(), "    scope_claims: [roles]", true).await;
    for t in [
        env.tok().build(),
        env.tok()
            .no_c("scope")
            .c("scp", json!(["mcp:read"]))
            .build(),
    ] {
        let r = env.post_mcp(&t).await;
        assert_insufficient_scope(&r, "mcp:read", PRM);
    }
    env.assert_nothing_forwarded();
    let t = env.tok().c("roles", json!(["mcp:read"])).build();
    env.assert_accepted(&t, "roles only").await;
}

#[tokio::test]
async fn scp_as_string_or_array_by_default() {
    let env = start(MockIdp::start(), "", true).await;
    // Entra delegated: a space-delimited string; Okta: an array.
    let t = env
        .tok()
        .no_c("scope")
        .c("scp", json!("openid mcp:read"))
        .build();
    env.assert_accepted(&t, "scp string").await;
    let t = env
        .tok()
        .no_c("scope")
        .c("scp", json!(["mcp:read"]))
        .build();
    env.assert_accepted(&t, "scp array").await;
}

#[tokio::test]
async fn ca_file_trusts_a_private_ca_for_discovery_and_keys() {
    let pki = Pki::new();
    let idp = MockIdp::start_tls(&pki);
    assert!(idp.issuer().starts_with("https://127.0.0.1:"));
    let env = start(
        idp,
        &format!("    ca_file: {}", pki.ca_file().display()),
        true,
    )
    .await;
    let t = env.tok().build();
    env.assert_accepted(&t, "keys fetched over TLS with the private CA")
        .await;
    assert!(env.idp.jwks_fetches() >= 1);
    assert!(
        env.idp.count("/.well-known/oauth-authorization-server") >= 1,
        "discovery went through the same client"
    );
}

#[tokio::test]
async fn without_its_ca_the_issuer_is_not_trusted() {
    // No ca_file (system roots), then the CA of another PKI: the TLS handshake fails, no
    // key is ever fetched, and tokens get 503 (keys unavailable), never a verdict.
    let pki = Pki::new();
    let other = Pki::new();
    for extra in [
        String::new(),
        format!("    ca_file: {}", other.ca_file().display()),
    ] {
        let idp = MockIdp::start_tls(&pki);
        let env = start(idp, &extra, false).await;
        let t = env.tok().build();
        let r = env.post_mcp(&t).await;
        assert_eq!(r.status, 503, "{extra:?}: {r}");
        assert_json_error(&r, Some("temporarily_unavailable"));
        env.assert_nothing_forwarded();
        assert_eq!(
            env.idp.total_requests(),
            0,
            "{extra:?}: a request got through TLS"
        );
        assert!(env.admin("/readyz").await.status != 200);
        // The log names the cause by kind, as `check --online` does: an unknown CA, or
        // another CA of the same name (the two test PKIs name their CAs alike).
        let why = if extra.is_empty() {
            "TLS: certificate problem: the server's certificate is signed by an unknown CA"
        } else {
            "TLS: certificate problem: the server's certificate does not verify with the \
             trusted CA of its issuer's name"
        };
        env.gw.wait_log(why, 1).await;
    }
}

#[test]
fn ca_file_must_be_a_readable_certificate_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let config = |issuer: &str| {
        render(
            ISSUER_SETTINGS,
            &[
                ("PORT", "18080"),
                ("ADMIN", "19090"),
                ("IDP", "https://idp.example.com"),
                ("UP", "http://127.0.0.1:3001"),
                ("ISSUER", issuer),
            ],
        )
    };
    for (extra, want) in [
        (
            format!("    ca_file: {}", junk.display()),
            "no PEM certificate found",
        ),
        (
            format!("    ca_file: {}", dir.path().join("missing.pem").display()),
            "No such file",
        ),
    ] {
        let path = dir.path().join("gw.yaml");
        std::fs::write(&path, config(&extra)).unwrap();
        let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], "");
        assert_eq!(code, 1, "{out}{err}");
        let want_prefix = format!("{}:10:14: issuer \"as\": ca_file ", path.display());
        assert!(err.starts_with(&want_prefix), "{err}");
        assert!(err.contains(want), "{err}");
    }
}
