//! JWT access-token validation: SPEC-CHECKLIST §1.4, §1.5, §2.10 and §4 (1-17, 19).

use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test]
async fn c4_1_happy_path_forwards_identity_without_authorization() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json()["ok"],
        json!(true),
        "upstream body passes through: {r}"
    );
    assert_eq!(r.header("x-upstream"), Some("recorder"));
    let u = env.up.only();
    assert_eq!(u.method, "POST");
    assert_eq!(u.target, "/mcp");
    assert_eq!(
        u.body,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec()
    );
    assert!(u.header_all("authorization").is_empty(), "{u:#?}");
    assert_eq!(u.header_all("x-auth-subject"), vec!["alice"]);
    assert_eq!(u.header_all("x-auth-client-id"), vec!["client-1"]);
    assert_eq!(u.header_all("x-auth-scopes"), vec!["mcp:read"]);
    assert_eq!(
        u.header_all("x-auth-issuer"),
        vec![env.idp.issuer().as_str()]
    );
}

#[tokio::test]
async fn c1_4_expired_token_gets_401_invalid_token() {
    let env = Env::standard().await;
    let t = env
        .tok()
        .c("exp", json!(now() - 3600))
        .c("iat", json!(now() - 4000))
        .build();
    env.assert_rejected(&t, "expired").await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_5_wrong_audience_gets_401() {
    let env = Env::standard().await;
    let t = Tok::new(&env.idp.issuer(), "https://other.example.com/mcp").build();
    env.assert_rejected(&t, "wrong aud").await;
    // A token for the admin resource is not valid for /mcp either.
    let t = Tok::new(&env.idp.issuer(), R_ADMIN).build();
    env.assert_rejected(&t, "aud of another route").await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_2_alg_none_rejected() {
    let env = Env::standard().await;
    let k1 = env.tok().build();
    let k1_sig = k1.rsplit('.').next().unwrap().to_string();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let base = env.tok().h("alg", json!(alg));
        let empty = base.clone().signer(Signer::Fixed(vec![])).build();
        env.assert_rejected(&empty, &format!("alg {alg}, empty signature"))
            .await;
        let no_kid = base
            .clone()
            .no_h("kid")
            .signer(Signer::Fixed(vec![]))
            .build();
        env.assert_rejected(&no_kid, &format!("alg {alg}, no kid"))
            .await;
        // alg none but carrying a valid ES256 signature from another token.
        let unsigned = jws(
            &base.header_text(),
            &base.claims_text(),
            &Signer::Fixed(vec![]),
        );
        let with_sig = format!("{}{k1_sig}", unsigned);
        env.assert_rejected(&with_sig, &format!("alg {alg}, foreign signature"))
            .await;
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_2_hs256_keyed_with_public_key_rejected() {
    let env = Env::standard().await;
    let (n, _e) = rsa_n_e(&keys().k2);
    let pem = k2_pem();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("PEM", pem.clone().into_bytes()),
        (
            "PEM without final newline",
            pem.trim_end().as_bytes().to_vec(),
        ),
        ("DER", k2_spki_der()),
        ("raw n", n),
        (
            "JWK JSON",
            serde_json::to_vec(&rsa_jwk(&keys().k2, "k2", "RS256")).unwrap(),
        ),
    ];
    for (what, secret) in secrets {
        for alg in ["HS256", "HS384", "HS512"] {
            let t = env
                .tok()
                .key(alg, "k2", Signer::Hmac(secret.clone()))
                .build();
            env.assert_rejected(&t, &format!("{alg} keyed with k2 {what}"))
                .await;
        }
    }
    // No kid at all.
    let t = env
        .tok()
        .h("alg", json!("HS256"))
        .no_h("kid")
        .signer(Signer::Hmac(k2_pem().into_bytes()))
        .build();
    env.assert_rejected(&t, "HS256 without kid").await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_2_alg_key_mismatch_rejected() {
    let env = Env::standard().await;
    // RS256 pointing at an EC kid (signed with the RSA key).
    let t = env.tok().key("RS256", "k1", Signer::K2).build();
    env.assert_rejected(&t, "RS256 with EC kid").await;
    // ES256 pointing at the RSA kid.
    let t = env.tok().key("ES256", "k2", Signer::K1).build();
    env.assert_rejected(&t, "ES256 with RSA kid").await;
    // PS256 with a key whose alg is RS256.
    let t = env.tok().key("PS256", "k2", Signer::K2Pss).build();
    env.assert_rejected(&t, "PS256 with RS256 key").await;
    // EdDSA pointing at an EC kid.
    let t = env.tok().key("EdDSA", "k1", Signer::Ed).build();
    env.assert_rejected(&t, "EdDSA with EC kid").await;
    // ES384 pointing at the P-256 key.
    let t = env.tok().key("ES384", "k1", Signer::K1).build();
    env.assert_rejected(&t, "ES384 with P-256 kid").await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_2_enc_keys_ignored() {
    let idp = MockIdp::start();
    let k = keys();
    let mut enc = ec_jwk(&k.k3, "kenc", "P-256", "ES256");
    enc["use"] = json!("enc");
    let mut enc_noalg = rsa_jwk(&k.k2, "k2enc", "RS256");
    enc_noalg["use"] = json!("enc");
    enc_noalg.as_object_mut().unwrap().remove("alg");
    let mut jwks = default_jwks();
    jwks["keys"].as_array_mut().unwrap().push(enc);
    jwks["keys"].as_array_mut().unwrap().push(enc_noalg);
    idp.set_jwks(jwks);
    let env = Env::start_with(STANDARD, idp, true).await;
    let t = env.tok().key("ES256", "kenc", Signer::K3).build();
    env.assert_rejected(&t, "use:enc EC key").await;
    let t = env.tok().key("RS256", "k2enc", Signer::K2).build();
    env.assert_rejected(&t, "use:enc RSA key").await;
    // Without kid the enc key must not be tried either.
    let t = env.tok().no_h("kid").signer(Signer::K3).build();
    env.assert_rejected(&t, "no kid, only an enc key matches")
        .await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_2_alg_outside_issuer_allow_list_rejected() {
    let tpl = STANDARD.replace(
        "    jwks_uri: {JWKS}\n",
        "    jwks_uri: {JWKS}\n    algorithms: [ES256]\n",
    );
    let env = Env::start(&tpl).await;
    env.assert_accepted(&env.tok().build(), "ES256 allowed")
        .await;
    env.up.clear();
    for (alg, kid, s) in [
        ("RS256", "k2", Signer::K2),
        ("EdDSA", "ed1", Signer::Ed),
        ("ES384", "p384", Signer::P384),
    ] {
        let t = env.tok().key(alg, kid, s).build();
        env.assert_rejected(&t, &format!("{alg} not in algorithms"))
            .await;
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_3_typ_at_jwt_variants_accepted() {
    let env = Env::standard().await;
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/At+Jwt",
    ] {
        env.assert_accepted(&env.tok().h("typ", json!(typ)).build(), typ)
            .await;
    }
    // Default mode (require_at_jwt: false): JWT and absent typ are accepted.
    env.assert_accepted(&env.tok().h("typ", json!("JWT")).build(), "typ JWT")
        .await;
    env.assert_accepted(&env.tok().no_h("typ").build(), "no typ")
        .await;
}

#[tokio::test]
async fn c4_3_typ_other_values_rejected() {
    let env = Env::standard().await;
    let mut failures = Vec::new();
    for typ in [
        json!("dpop+jwt"),
        json!("application/dpop+jwt"),
        json!("JOSE"),
        json!("id_token"),
        json!("at+jwt+x"),
        json!("logout+jwt"),
        json!(""),
        json!(123),
        json!(null),
        json!(["at+jwt"]),
    ] {
        let t = env.tok().h("typ", typ.clone()).build();
        failures.extend(env.check_rejected(&t, &format!("typ {typ}")).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    env.assert_nothing_forwarded();
}

const STRICT: &str = "    jwks_uri: {JWKS}\n    require_at_jwt: true\n";

#[tokio::test]
async fn c4_3_strict_mode_requires_at_jwt_typ() {
    let env = Env::start(&STANDARD.replace("    jwks_uri: {JWKS}\n", STRICT)).await;
    env.assert_accepted(&env.tok().build(), "at+jwt").await;
    env.assert_accepted(
        &env.tok().h("typ", json!("application/at+jwt")).build(),
        "application/at+jwt",
    )
    .await;
    env.up.clear();
    for t in [
        env.tok().h("typ", json!("JWT")).build(),
        env.tok().no_h("typ").build(),
        env.tok().h("typ", json!("dpop+jwt")).build(),
    ] {
        env.assert_rejected(&t, "strict typ").await;
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_4_id_token_confusion_rejected() {
    let env = Env::standard().await;
    // An OIDC ID token from the same issuer: aud = client_id, typ JWT, nonce, auth_time.
    let t = env
        .tok()
        .h("typ", json!("JWT"))
        .c("aud", json!("client-1"))
        .c("azp", json!("client-1"))
        .c("nonce", json!("n-0S6_WzA2Mj"))
        .c("auth_time", json!(now() - 10))
        .no_c("scope")
        .build();
    env.assert_rejected(&t, "id token").await;
    // Even with a scope claim added.
    let t = env
        .tok()
        .h("typ", json!("JWT"))
        .c("aud", json!("client-1"))
        .c("nonce", json!("abc"))
        .build();
    env.assert_rejected(&t, "id token with scope").await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_5_exp_required_integer_in_future() {
    let mut env = Env::standard().await;
    let n = now();
    let base = env.tok();
    let mut cases: Vec<(String, String)> = vec![
        ("missing".into(), base.clone().no_c("exp").build()),
        (
            "past the leeway".into(),
            base.clone().c("exp", json!(n - 120)).build(),
        ),
        (
            "long past".into(),
            base.clone().c("exp", json!(n - 86400)).build(),
        ),
        (
            "string".into(),
            base.clone().c("exp", json!((n + 300).to_string())).build(),
        ),
        ("negative".into(), base.clone().c("exp", json!(-1)).build()),
        ("zero".into(), base.clone().c("exp", json!(0)).build()),
        ("null".into(), base.clone().c("exp", Value::Null).build()),
        ("bool".into(), base.clone().c("exp", json!(true)).build()),
        (
            "array".into(),
            base.clone().c("exp", json!([n + 300])).build(),
        ),
        (
            "float".into(),
            base.clone().c("exp", json!((n + 300) as f64 + 0.5)).build(),
        ),
    ];
    // Raw JSON numbers that serde_json would not produce.
    let claims = base.claims_text();
    let raw_exp = |v: &str| {
        let mut m: serde_json::Map<String, Value> = serde_json::from_str(&claims).unwrap();
        m.insert("exp".into(), json!("__EXP__"));
        serde_json::to_string(&m).unwrap().replace("\"__EXP__\"", v)
    };
    for v in [
        "1e20".to_string(),
        "1E3".to_string(),
        format!("{}.0", n + 300),
        "18446744073709551616".to_string(),
        "-9223372036854775809".to_string(),
        "99999999999999999999999999999999".to_string(),
    ] {
        let payload = raw_exp(&v);
        cases.push((
            format!("raw {v}"),
            jws(&base.header_text(), &payload, &Signer::K1),
        ));
    }
    for (what, t) in cases {
        env.assert_rejected(&t, &format!("exp {what}")).await;
    }
    env.assert_nothing_forwarded();
    assert!(env.gw.alive(), "gateway died");
    assert_eq!(env.admin("/healthz").await.status, 200);
}

#[tokio::test]
async fn c4_6_nbf_and_iat_in_the_future_rejected() {
    let env = Env::standard().await;
    let n = now();
    env.assert_rejected(&env.tok().c("nbf", json!(n + 600)).build(), "nbf future")
        .await;
    env.assert_rejected(
        &env.tok().c("nbf", json!((n + 600).to_string())).build(),
        "nbf string",
    )
    .await;
    env.assert_rejected(&env.tok().c("iat", json!(n + 600)).build(), "iat future")
        .await;
    env.assert_rejected(
        &env.tok().c("iat", json!("yesterday")).build(),
        "iat string",
    )
    .await;
    env.assert_nothing_forwarded();
    // Within the skew both are fine.
    env.assert_accepted(
        &env.tok().c("nbf", json!(n + 10)).build(),
        "nbf within skew",
    )
    .await;
    env.assert_accepted(
        &env.tok().c("iat", json!(n + 10)).build(),
        "iat within skew",
    )
    .await;
}

#[tokio::test]
async fn c4_7_iss_must_match_exactly() {
    let env = Env::standard().await;
    let iss = env.idp.issuer();
    let upper = iss.replace("http://", "HTTP://");
    for bad in [
        format!("{iss}/"),
        upper,
        iss.replace("127.0.0.1", "localhost"),
        format!("{iss}/x"),
        format!(" {iss}"),
        "https://evil.example".to_string(),
    ] {
        let t = env.tok().c("iss", json!(bad)).build();
        env.assert_rejected(&t, &format!("iss {bad}")).await;
    }
    env.assert_rejected(&env.tok().no_c("iss").build(), "iss missing")
        .await;
    env.assert_rejected(&env.tok().c("iss", json!([iss])).build(), "iss array")
        .await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_8_audience_accepted_forms() {
    let tpl = STANDARD.replace(
        "    scopes: [mcp:read]\n",
        "    scopes: [mcp:read]\n    audience_aliases: [\"urn:mcp:alias\"]\n",
    );
    let env = Env::start(&tpl).await;
    for aud in [
        json!(R),
        json!(["https://x.example/api", R]),
        json!([R]),
        json!("HTTPS://MCP.EXAMPLE.COM/mcp"),
        json!("https://MCP.example.com/mcp"),
        json!("urn:mcp:alias"),
        json!(["urn:other", "urn:mcp:alias"]),
    ] {
        env.assert_accepted(
            &env.tok().c("aud", aud.clone()).build(),
            &format!("aud {aud}"),
        )
        .await;
    }
}

#[tokio::test]
async fn c4_8_audience_rejected_forms() {
    let env = Env::standard().await;
    let cases = [
        json!(["https://x.example/api"]),
        json!([]),
        Value::Null,
        json!(42),
        json!({"aud": R}),
        json!("https://mcp.example.com/mcp-evil"),
        json!("https://mcp.example.com.evil/mcp"),
        json!("https://mcp.example.com/mcp/"),
        json!("https://mcp.example.com"),
        json!("https://mcp.example.com/"),
        json!("https://mcp.example.com/MCP"),
        json!("http://mcp.example.com/mcp"),
        json!("https://mcp.example.com:8443/mcp"),
        json!("https://mcp.example.com/mcp?x=1"),
        json!("https://mcp.example.com/mcp#f"),
        json!("mcp.example.com/mcp"),
        json!(" https://mcp.example.com/mcp"),
        json!("https://mcp.example.com/mcp/sub"),
        json!("https://evil.example/mcp"),
        json!("https://mcp.example.com/admin/mcp"),
        json!([[R]]),
    ];
    for aud in cases {
        env.assert_rejected(
            &env.tok().c("aud", aud.clone()).build(),
            &format!("aud {aud}"),
        )
        .await;
    }
    env.assert_rejected(&env.tok().no_c("aud").build(), "aud missing")
        .await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_9_strict_mode_requires_rfc9068_claims() {
    let env = Env::start(&STANDARD.replace("    jwks_uri: {JWKS}\n", STRICT)).await;
    env.assert_accepted(&env.tok().build(), "all claims").await;
    env.up.clear();
    for claim in ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"] {
        env.assert_rejected(&env.tok().no_c(claim).build(), &format!("missing {claim}"))
            .await;
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_10_scope_matching_is_exact() {
    let env = Env::standard().await;
    for scope in [
        "mcp:readx",
        "MCP:READ",
        "mcp:rea",
        "mcp",
        "xmcp:read",
        "mcp:read,admin",
        "",
    ] {
        let r = env.post_mcp(&env.tok().scope(scope).build()).await;
        assert_insufficient_scope(&r, "mcp:read", PRM);
    }
    let r = env.post_mcp(&env.tok().no_c("scope").build()).await;
    assert_insufficient_scope(&r, "mcp:read", PRM);
    env.assert_nothing_forwarded();
    env.assert_accepted(
        &env.tok().scope("openid mcp:read other").build(),
        "among others",
    )
    .await;
}

#[tokio::test]
async fn c4_10_scp_array_claim() {
    let env = Env::standard().await;
    let t = env
        .tok()
        .no_c("scope")
        .c("scp", json!(["openid", "mcp:read"]))
        .build();
    env.assert_accepted(&t, "scp array").await;
    let u = env.up.last();
    let scopes = u.header("x-auth-scopes").unwrap();
    let mut got: Vec<&str> = scopes.split(' ').collect();
    got.sort_unstable();
    assert_eq!(got, vec!["mcp:read", "openid"]);
    env.up.clear();
    let t = env
        .tok()
        .no_c("scope")
        .c("scp", json!(["mcp:readx"]))
        .build();
    let r = env.post_mcp(&t).await;
    assert_insufficient_scope(&r, "mcp:read", PRM);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_11_kid_is_untrusted_input() {
    let mut env = Env::standard().await;
    let mut failures = Vec::new();
    let kids = [
        json!("unknown-kid"),
        json!("../../dev/null"),
        json!("/etc/passwd"),
        json!("' OR '1'='1"),
        json!("k1' --"),
        json!("x".repeat(10_000)),
        json!("k1\u{0}"),
        json!("\u{0}"),
        json!(""),
        json!("K1"),
        json!(" k1"),
        json!(1),
        json!(null),
        json!(["k1"]),
        json!({"kid": "k1"}),
        json!(true),
    ];
    for kid in kids {
        let t = env.tok().h("kid", kid.clone()).build();
        let r = env.post_mcp(&t).await;
        let shown: String = kid.to_string().chars().take(40).collect();
        if r.status != 401 {
            failures.push(format!("kid {shown}: want 401, got {r}"));
            continue;
        }
        assert_invalid_token(&r, PRM);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    env.assert_nothing_forwarded();
    assert!(env.gw.alive());
}

#[tokio::test]
async fn c4_11_missing_kid_tries_keys_matching_alg() {
    let env = Env::standard().await;
    for (alg, s) in [
        ("ES256", Signer::K1),
        ("RS256", Signer::K2),
        ("EdDSA", Signer::Ed),
        ("ES384", Signer::P384),
    ] {
        let t = env.tok().h("alg", json!(alg)).no_h("kid").signer(s).build();
        env.assert_accepted(&t, &format!("{alg} without kid")).await;
    }
    env.up.clear();
    // No kid and no trusted key verifies.
    let t = env.tok().no_h("kid").signer(Signer::Evil).build();
    env.assert_rejected(&t, "no kid, attacker key").await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_12_token_supplied_keys_rejected_and_never_fetched() {
    let env = Env::standard().await;
    let canary = Canary::start();
    let evil_jwk = ec_jwk(&keys().evil, "k1", "P-256", "ES256");
    let cases = vec![
        (
            "embedded jwk",
            env.tok()
                .h("jwk", evil_jwk.clone())
                .no_h("kid")
                .signer(Signer::Evil),
        ),
        (
            "embedded jwk + kid",
            env.tok().h("jwk", evil_jwk.clone()).signer(Signer::Evil),
        ),
        // A legit signature but a jwk header is still refused.
        (
            "jwk header with good signature",
            env.tok()
                .h("jwk", ec_jwk(&keys().k1, "k1", "P-256", "ES256")),
        ),
        (
            "jku",
            env.tok()
                .h("jku", json!(format!("{}/jwks", canary.url())))
                .h("kid", json!("evil"))
                .signer(Signer::Evil),
        ),
        (
            "jku good sig",
            env.tok().h("jku", json!(format!("{}/jwks", canary.url()))),
        ),
        (
            "x5u",
            env.tok()
                .h("x5u", json!(format!("{}/cert.pem", canary.url())))
                .signer(Signer::Evil),
        ),
        (
            "x5c",
            env.tok()
                .h("x5c", json!([STANDARD_B64_CERT]))
                .signer(Signer::Evil),
        ),
        (
            "x5c good sig",
            env.tok().h("x5c", json!([STANDARD_B64_CERT])),
        ),
    ];
    for (what, tok) in cases {
        env.assert_rejected(&tok.build(), what).await;
    }
    // A fetch of a token-supplied URL has no event to wait for: watch the canary a while.
    never(
        std::time::Duration::from_millis(300),
        "the gateway contacted a token-supplied URL",
        || async { canary.hits() > 0 },
    )
    .await;
    env.assert_nothing_forwarded();
}

/// Any base64 blob standing in for a certificate (never parsed successfully as one).
const STANDARD_B64_CERT: &str = "MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGVGb3JUZXN0czAKBggqhkjOPQQDAjAPMQ0wCwYDVQQDDARldmlsMB4XDTI2MDEwMTAwMDAwMFoXDTM2MDEwMTAwMDAwMFowDzENMAsGA1UEAwwEZXZpbA==";

#[tokio::test]
async fn c4_13_crit_rejected() {
    let env = Env::standard().await;
    let mut failures = Vec::new();
    let cases = vec![
        (
            "crit unknown",
            env.tok().h("crit", json!(["exp"])).h("exp", json!(1)),
        ),
        ("crit empty", env.tok().h("crit", json!([]))),
        (
            "crit b64",
            env.tok().h("crit", json!(["b64"])).h("b64", json!(false)),
        ),
        (
            "crit b64 true",
            env.tok().h("crit", json!(["b64"])).h("b64", json!(true)),
        ),
        (
            "crit string",
            env.tok().h("crit", json!("foo")).h("foo", json!(1)),
        ),
        ("crit null", env.tok().h("crit", Value::Null)),
        ("crit absent member", env.tok().h("crit", json!(["foo"]))),
    ];
    for (what, tok) in cases {
        failures.extend(env.check_rejected(&tok.build(), what).await);
    }
    // b64:false without crit is not a valid unencoded-payload JWS either.
    let t = env.tok().h("b64", json!(false)).build();
    failures.extend(env.check_rejected(&t, "b64 false").await);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_14_structure_rejected() {
    let env = Env::standard().await;
    // Pick a token whose segments differ between the url-safe and standard alphabets.
    let mut t = env.tok().build();
    for _ in 0..50 {
        if t.rsplit('.').next().unwrap().contains(['-', '_']) {
            break;
        }
        t = env.tok().build();
    }
    let parts: Vec<&str> = t.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let to_std = |x: &str| x.replace('-', "+").replace('_', "/");
    let mut cases: Vec<(&str, String)> = vec![
        ("2 segments", format!("{h}.{p}")),
        ("4 segments", format!("{h}.{p}.{s}.{s}")),
        ("5 segment JWE", format!("{h}.{p}.{s}.{s}.{s}")),
        ("trailing dot", format!("{h}.{p}.{s}.")),
        ("leading dot", format!(".{h}.{p}.{s}")),
        ("empty header", format!(".{p}.{s}")),
        ("empty payload", format!("{h}..{s}")),
        ("empty signature", format!("{h}.{p}.")),
        ("all empty", "..".to_string()),
        ("padding on signature", format!("{h}.{p}.{s}==")),
        ("single segment", h.to_string()),
        ("not base64", "a~b.c~d.e~f".to_string()),
    ];
    // Standard alphabet where it differs from url-safe.
    let std_sig = to_std(s);
    if std_sig != s {
        cases.push(("+/ in signature", format!("{h}.{p}.{std_sig}")));
    }
    let std_payload = to_std(p);
    if std_payload != p {
        cases.push(("+/ in payload", format!("{h}.{std_payload}.{s}")));
    }
    for (what, tok) in cases {
        let r = env.post_mcp(&tok).await;
        // Characters that are b64token-legal give 401 invalid_token.
        assert_eq!(r.status, 401, "{what}: {r}");
        assert_invalid_token(&r, PRM);
    }
    // Whitespace, JSON serialization or inner `=` cannot be a b64token: 400 invalid_request.
    let json_ser = format!(r#"{{"payload":"{p}","protected":"{h}","signature":"{s}"}}"#);
    for (what, tok) in [
        ("space inside", format!("{h}.{p} .{s}")),
        ("tab inside", format!("{h}.{p}\t.{s}")),
        ("JSON serialization", json_ser),
        ("padding on header", format!("{h}==.{p}.{s}")),
        ("padding on payload", format!("{h}.{p}=.{s}")),
    ] {
        let r = env.post_mcp(&tok).await;
        assert_eq!(r.status, 400, "{what}: {r}");
        assert_invalid_request(&r);
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_15_odd_json_rejected() {
    let mut env = Env::standard().await;
    let mut failures = Vec::new();
    let base = env.tok();
    let claims = base.claims_text();
    let header = base.header_text();
    let iss = env.idp.issuer();
    let n = now();
    let inner = format!(
        r#""iss":"{iss}","client_id":"client-1","jti":"j1","iat":{n},"exp":{},"scope":"mcp:read""#,
        n + 300
    );
    let cases: Vec<(&str, String, String)> = vec![
        (
            "duplicate alg (RS256 then ES256)",
            r#"{"alg":"RS256","typ":"at+jwt","kid":"k1","alg":"ES256"}"#.into(),
            claims.clone(),
        ),
        (
            "duplicate alg (identical)",
            r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","alg":"ES256"}"#.into(),
            claims.clone(),
        ),
        (
            "duplicate kid",
            r#"{"alg":"ES256","typ":"at+jwt","kid":"nope","kid":"k1"}"#.into(),
            claims.clone(),
        ),
        (
            "duplicate aud",
            header.clone(),
            format!(r#"{{{inner},"sub":"alice","aud":"https://x.example","aud":"{R}"}}"#),
        ),
        (
            "duplicate sub",
            header.clone(),
            format!(r#"{{{inner},"aud":"{R}","sub":"alice","sub":"admin"}}"#),
        ),
        (
            "duplicate scope",
            header.clone(),
            format!(
                r#"{{"iss":"{iss}","aud":"{R}","sub":"alice","exp":{},"scope":"x","scope":"mcp:read"}}"#,
                n + 300
            ),
        ),
        ("payload array", header.clone(), format!("[{claims}]")),
        ("payload string", header.clone(), "\"hello\"".into()),
        ("payload number", header.clone(), "123".into()),
        ("payload null", header.clone(), "null".into()),
        ("payload empty", header.clone(), String::new()),
        (
            "payload trailing garbage",
            header.clone(),
            format!("{claims}xyz"),
        ),
        (
            "payload two objects",
            header.clone(),
            format!("{claims}{claims}"),
        ),
        ("header array", format!("[{header}]"), claims.clone()),
        ("header string", "\"ES256\"".into(), claims.clone()),
        ("header empty", String::new(), claims.clone()),
        (
            "deep nesting",
            header.clone(),
            format!(
                r#"{{{inner},"aud":"{R}","sub":"alice","x":{}1{}}}"#,
                "[".repeat(5_000),
                "]".repeat(5_000)
            ),
        ),
        (
            "deep object nesting",
            header.clone(),
            format!(
                r#"{{{inner},"aud":"{R}","sub":"alice","x":{}1{}}}"#,
                "{\"a\":".repeat(1_500),
                "}".repeat(1_500)
            ),
        ),
    ];
    for (what, h, p) in cases {
        let t = jws(&h, &p, &Signer::K1);
        failures.extend(env.check_rejected(&t, what).await);
    }
    // 10k-deep nesting: a 27 KiB Authorization header, over the gateway's 16 KiB bound for a
    // credential: refused as a malformed request before any parsing, never a crash.
    let deep = format!(
        r#"{{{inner},"aud":"{R}","sub":"alice","x":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let r = env.post_mcp(&jws(&header, &deep, &Signer::K1)).await;
    assert_eq!(r.status, 400, "10k-deep nesting: {r}");
    assert_invalid_request(&r);
    // Invalid UTF-8 in payload and header.
    let mut bad_payload = claims.clone().into_bytes();
    let pos = bad_payload.iter().position(|&b| b == b'a').unwrap();
    bad_payload[pos] = 0xff;
    let t = jws_bytes(header.as_bytes(), &bad_payload, &Signer::K1);
    env.assert_rejected(&t, "bad utf-8 payload").await;
    let bad_sub = claims.replace("alice", "ali\u{1}ce").into_bytes();
    let mut bad_sub2 = bad_sub.clone();
    let pos = bad_sub2.iter().position(|&b| b == 1).unwrap();
    bad_sub2[pos] = 0xc0;
    let t = jws_bytes(header.as_bytes(), &bad_sub2, &Signer::K1);
    env.assert_rejected(&t, "overlong utf-8 in sub").await;
    let mut bad_header = header.clone().into_bytes();
    bad_header.insert(bad_header.len() - 1, b' ');
    bad_header.insert(bad_header.len() - 1, 0xfe);
    let t = jws_bytes(&bad_header, claims.as_bytes(), &Signer::K1);
    env.assert_rejected(&t, "bad utf-8 header").await;
    assert!(env.gw.alive(), "gateway died");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_16_oversized_authorization_header_refused() {
    let mut env = Env::standard().await;
    let big = "a".repeat(64 * 1024);
    // Over limits.max_header_bytes (32 KiB by default): 431.
    match env.try_send(Req::post("/mcp").bearer(&big)).await {
        Ok(r) => {
            assert_eq!(r.status, 431, "64 KiB token: {r}");
            assert_json_error(&r, None);
        }
        Err(e) => panic!("64 KiB Authorization: expected 431, got no response: {e}"),
    }
    // A 16 KiB token (under typical header limits) is refused as a token, not a crash.
    let mid = format!(
        "{}.{}.{}",
        "a".repeat(8000),
        "b".repeat(8000),
        "c".repeat(100)
    );
    let r = env.post_mcp(&mid).await;
    assert_eq!(r.status, 401, "{r}");
    assert_invalid_token(&r, PRM);
    env.assert_nothing_forwarded();
    assert!(env.gw.alive());
    env.assert_accepted(&env.tok().build(), "still serving")
        .await;
}

#[tokio::test]
async fn c4_17_bad_signatures_rejected() {
    let idp = MockIdp::start();
    let mut jwks = default_jwks();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(weak_rsa_jwk("weak"));
    idp.set_jwks(jwks);
    let env = Env::start_with(STANDARD, idp, true).await;
    let base = env.tok();
    let good = base.build();
    let (signing_input, sig) = good.rsplit_once('.').unwrap();
    let sig_bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    let mut flipped = sig_bytes.clone();
    flipped[10] ^= 1;
    // Tampered payload: re-encode claims with sub=admin but keep the old signature.
    let tampered_payload = b64u(
        base.clone()
            .c("sub", json!("admin"))
            .claims_text()
            .as_bytes(),
    );
    let h = signing_input.split('.').next().unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "DER-encoded ES256",
            base.clone().signer(Signer::K1Der).build(),
        ),
        (
            "r=s=0",
            base.clone().signer(Signer::Fixed(vec![0; 64])).build(),
        ),
        (
            "r=s=0 short",
            base.clone().signer(Signer::Fixed(vec![0; 2])).build(),
        ),
        (
            "all ff",
            base.clone().signer(Signer::Fixed(vec![0xff; 64])).build(),
        ),
        ("flipped bit", format!("{signing_input}.{}", b64u(&flipped))),
        (
            "truncated",
            format!("{signing_input}.{}", b64u(&sig_bytes[..63])),
        ),
        (
            "extended",
            format!(
                "{signing_input}.{}",
                b64u(&[sig_bytes.clone(), vec![0]].concat())
            ),
        ),
        ("tampered payload", format!("{h}.{tampered_payload}.{sig}")),
        (
            "ES256 with P-384 key",
            base.clone().key("ES256", "p384", Signer::P384).build(),
        ),
        (
            "attacker key under k1",
            base.clone().signer(Signer::Evil).build(),
        ),
        (
            "RSA-1024",
            base.clone().key("RS256", "weak", Signer::Weak).build(),
        ),
        (
            "RSA-1024 no kid",
            base.clone()
                .h("alg", json!("RS256"))
                .no_h("kid")
                .signer(Signer::Weak)
                .build(),
        ),
        (
            "RS256 under k2 empty sig",
            base.clone()
                .key("RS256", "k2", Signer::Fixed(vec![]))
                .build(),
        ),
        (
            "RS256 under k2 zero sig",
            base.clone()
                .key("RS256", "k2", Signer::Fixed(vec![0; 256]))
                .build(),
        ),
    ];
    for (what, t) in cases {
        env.assert_rejected(&t, what).await;
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_19_key_types_accepted() {
    let env = Env::standard().await;
    for (alg, kid, s) in [
        ("ES256", "k1", Signer::K1),
        ("RS256", "k2", Signer::K2),
        ("ES384", "p384", Signer::P384),
        ("EdDSA", "ed1", Signer::Ed),
    ] {
        env.assert_accepted(&env.tok().key(alg, kid, s).build(), alg)
            .await;
    }
    assert_eq!(env.up.count(), 4);
}

#[tokio::test]
async fn c4_19_ps256_with_ps256_key_accepted() {
    let idp = MockIdp::start();
    let mut jwks = default_jwks();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(rsa_jwk(&keys().k2, "k2pss", "PS256"));
    idp.set_jwks(jwks);
    let env = Env::start_with(STANDARD, idp, true).await;
    env.assert_accepted(
        &env.tok().key("PS256", "k2pss", Signer::K2Pss).build(),
        "PS256",
    )
    .await;
    // The same key material under the PS256 kid cannot be used with RS256.
    env.up.clear();
    env.assert_rejected(
        &env.tok().key("RS256", "k2pss", Signer::K2).build(),
        "RS256 under PS256 key",
    )
    .await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c4_19_x25519_key_used_for_signing_rejected() {
    let idp = MockIdp::start();
    let mut jwks = default_jwks();
    let x = ed_jwk(&keys().ed, "x")["x"].clone();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "OKP", "crv": "X25519", "x": x, "kid": "x1", "alg": "EdDSA"}));
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "OKP", "crv": "X25519", "x": x, "kid": "x2"}));
    idp.set_jwks(jwks);
    let env = Env::start_with(STANDARD, idp, true).await;
    env.assert_rejected(
        &env.tok().key("EdDSA", "x1", Signer::Ed).build(),
        "X25519 kid x1",
    )
    .await;
    env.assert_rejected(
        &env.tok().key("EdDSA", "x2", Signer::Ed).build(),
        "X25519 kid x2",
    )
    .await;
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c2_10_token_from_unlisted_issuer_rejected() {
    let other = MockIdp::start();
    other.set_jwks(json!({"keys": [ec_jwk(&keys().other, "o1", "P-256", "ES256")]}));
    let tpl = STANDARD.replace(
        "routes:",
        &format!(
            "  - name: other\n    issuer: {}\n    jwks_uri: {}\nroutes:",
            other.issuer(),
            other.jwks_uri()
        ),
    );
    let tpl = tpl.replace(
        "    scopes: [mcp:read]\n",
        "    scopes: [mcp:read]\n    issuers: [as]\n",
    ) + &route("both", "/both", &["scopes: [mcp:read]"]);
    let env = Env::start(&tpl).await;
    let from_other = Tok::new(&other.issuer(), R)
        .key("ES256", "o1", Signer::Other)
        .build();
    env.assert_rejected(&from_other, "token from an issuer not allowed on /mcp")
        .await;
    // Claiming the allowed issuer with the other issuer's key fails too.
    let forged = env.tok().key("ES256", "o1", Signer::Other).build();
    env.assert_rejected(&forged, "allowed iss, other issuer's key")
        .await;
    env.assert_nothing_forwarded();
    // PRM lists only the allowed issuer.
    let r = env
        .send(Req::get("/.well-known/oauth-protected-resource/mcp"))
        .await;
    assert_eq!(
        r.json()["authorization_servers"],
        json!([env.idp.issuer()]),
        "{r}"
    );
    // On /both (issuers default = all) the other issuer's token works.
    let t = Tok::new(&other.issuer(), "https://mcp.example.com/both")
        .key("ES256", "o1", Signer::Other)
        .build();
    let r = env.send(Req::post("/both").bearer(&t)).await;
    assert_eq!(r.status, 200, "{r}");
    let r = env
        .send(Req::get("/.well-known/oauth-protected-resource/both"))
        .await;
    let mut servers: Vec<String> = r.json()["authorization_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    servers.sort();
    let mut want = vec![env.idp.issuer(), other.issuer()];
    want.sort();
    assert_eq!(servers, want);
}
