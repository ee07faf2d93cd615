//! DPoP (RFC 9449, SPEC-CHECKLIST §6): sender-constrained tokens, end to end.
//!
//! The proof key `P` is the attacker fixture key (a client key the IdP never trusts for
//! tokens); `Q` is the rotation key `k3`, used as "another client's key". Tokens are
//! issued by the mock IdP (signed with `k1`) and bound with `cnf.jkt`.

use aws_lc_rs::signature::EcdsaKeyPair;
use serde_json::json;

use crate::harness::*;

fn q_key() -> &'static EcdsaKeyPair {
    &keys().k3
}

/// A token bound to `P`.
pub(crate) fn bound_token(env: &Env) -> String {
    env.tok().c("cnf", json!({"jkt": jkt(p_key())})).build()
}

pub(crate) fn dpop_req(target: &str, token: &str, proof: Option<&str>) -> Req {
    let r = Req::post(target)
        .h("authorization", &format!("DPoP {token}"))
        .h("content-type", "application/json")
        .body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec());
    match proof {
        Some(p) => r.h("dpop", p),
        None => r,
    }
}

/// Asserts a 401 with a DPoP challenge carrying `error` (and `algs`, `resource_metadata`).
fn assert_dpop_challenge(r: &Resp, error: &str) {
    assert_eq!(r.status, 401, "{r}");
    let dpop = r
        .header_all("www-authenticate")
        .into_iter()
        .flat_map(split_challenges)
        .find(|c| c.to_ascii_lowercase().starts_with("dpop"))
        .unwrap_or_else(|| panic!("no DPoP challenge in {r}"));
    let c = parse_challenge(&dpop).unwrap_or_else(|e| panic!("{e}: {dpop}"));
    assert_eq!(c.param("error"), Some(error), "{r}");
    assert!(
        c.param("algs")
            .is_some_and(|a| a.split(' ').any(|x| x == "ES256")),
        "{r}"
    );
    assert!(c.param("resource_metadata").is_some(), "{r}");
}

/// Split a header value that may hold several challenges (`Bearer ..., DPoP ...`).
fn split_challenges(v: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_quotes = false;
    let mut cur = String::new();
    let bytes: Vec<char> = v.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let ch = bytes[i];
        if ch == '"' {
            in_quotes = !in_quotes;
        }
        if ch == ',' && !in_quotes {
            // A new challenge starts when the next token is followed by a space (a scheme).
            let rest: String = bytes[i + 1..].iter().collect();
            let rest = rest.trim_start();
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !word.is_empty()
                && rest[word.len()..].starts_with(' ')
                && !rest[word.len()..].trim_start().starts_with('=')
            {
                out.push(cur.trim().to_string());
                cur.clear();
                i += 1;
                continue;
            }
        }
        cur.push(ch);
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

pub(crate) async fn refused(env: &Env, req: Req, error: &str, what: &str) {
    let before = env.up.count();
    let r = env.send(req).await;
    assert_eq!(r.status, 401, "{what}: {r}");
    if error == "invalid_token" {
        let c = r
            .header_all("www-authenticate")
            .into_iter()
            .flat_map(split_challenges)
            .filter_map(|c| parse_challenge(&c).ok())
            .find(|c| c.param("error").is_some())
            .unwrap_or_else(|| panic!("{what}: no challenge with an error: {r}"));
        assert_eq!(c.param("error"), Some("invalid_token"), "{what}: {r}");
    } else {
        assert_dpop_challenge(&r, error);
    }
    assert_eq!(env.up.count(), before, "{what}: reached the upstream");
}

#[tokio::test]
async fn c6_1_valid_proof_accepted_and_not_forwarded() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let r = env
        .send(dpop_req("/mcp", &t, Some(&Proof::new(&t).build())))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let got = env.up.only();
    assert!(got.header("authorization").is_none(), "{got:?}");
    assert!(got.header("dpop").is_none(), "{got:?}");
    assert_eq!(got.header("x-auth-subject"), Some("alice"));
}

#[tokio::test]
async fn c6_2_missing_proof() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    refused(
        &env,
        dpop_req("/mcp", &t, None),
        "invalid_dpop_proof",
        "no proof",
    )
    .await;
}

#[tokio::test]
async fn c6_3_two_proofs() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let (a, b) = (Proof::new(&t).build(), Proof::new(&t).build());
    let req = dpop_req("/mcp", &t, Some(&a)).h("dpop", &b);
    refused(&env, req, "invalid_dpop_proof", "two DPoP headers").await;
    let joined = format!("{a}, {b}");
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&joined)),
        "invalid_dpop_proof",
        "comma-joined",
    )
    .await;
}

#[tokio::test]
async fn c6_4_to_7_malformed_proofs() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let cases: Vec<(&str, String)> = vec![
        ("not a jwt", "not-a-jwt".to_string()),
        ("missing jti", Proof::new(&t).no_c("jti").build()),
        ("missing htm", Proof::new(&t).no_c("htm").build()),
        ("missing htu", Proof::new(&t).no_c("htu").build()),
        ("missing iat", Proof::new(&t).no_c("iat").build()),
        ("wrong typ", Proof::new(&t).h("typ", json!("JWT")).build()),
        (
            "alg none",
            Proof::new(&t)
                .h("alg", json!("none"))
                .signature(vec![])
                .build(),
        ),
        (
            "HS256 with an oct jwk",
            Proof::new(&t)
                .h("alg", json!("HS256"))
                .h("jwk", json!({"kty": "oct", "k": "c2VjcmV0"}))
                .build(),
        ),
        (
            "ES256 with an RSA jwk",
            Proof::new(&t)
                .h("jwk", rsa_jwk(&keys().k2, "x", "RS256"))
                .build(),
        ),
        ("private key in jwk", {
            let mut jwk = public_jwk(p_key());
            jwk["d"] = json!("AAAA");
            Proof::new(&t).h("jwk", jwk).build()
        }),
        ("missing jwk", Proof::new(&t).no_h("jwk").build()),
    ];
    for (what, proof) in cases {
        refused(
            &env,
            dpop_req("/mcp", &t, Some(&proof)),
            "invalid_dpop_proof",
            what,
        )
        .await;
    }
}

/// RFC 7515 §5.2: the proof's header and claims are UTF-8, also in members the gateway does
/// not read (serde_json skips those without checking; a JWT had the same gap). A proof signed
/// by its key with a byte that is not UTF-8 in an unread member is refused.
#[tokio::test]
async fn proof_not_utf8_in_an_unread_member_is_refused() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    // The same proofs with UTF-8 in that place are accepted: the refusal is the bytes'.
    for ok in [
        Proof::new(&t).h("x", json!("ODD")),
        Proof::new(&t).c("x", json!("ODD")),
    ] {
        let r = env
            .send(dpop_req("/mcp", &t, Some(&ok.odd(b"\xC3\xA9").build())))
            .await;
        assert_eq!(r.status, 200, "{r}");
    }
    for odd in [&b"\xFF"[..], b"\x85", b"\xED\xA0\x80"] {
        for (what, proof) in [
            ("header", Proof::new(&t).h("x", json!("ODD"))),
            (
                "nested header",
                Proof::new(&t).h("x", json!({"y": ["ODD"]})),
            ),
            ("claims", Proof::new(&t).c("x", json!("ODD"))),
        ] {
            let before = env.up.count();
            let r = env
                .send(dpop_req("/mcp", &t, Some(&proof.odd(odd).build())))
                .await;
            assert_dpop_challenge(&r, "invalid_dpop_proof");
            let v = r.json();
            assert_eq!(v["error"], "invalid_dpop_proof", "{what} {odd:?}: {r}");
            assert!(
                v["error_description"]
                    .as_str()
                    .is_some_and(|d| d.contains("not UTF-8")),
                "{what} {odd:?}: {r}"
            );
            assert_eq!(
                env.up.count(),
                before,
                "{what} {odd:?}: reached the upstream"
            );
        }
    }
}

#[tokio::test]
async fn c6_8_tampered_signature() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let p = Proof::new(&t).build();
    let (head, sig) = p.rsplit_once('.').unwrap();
    let mut raw = percent_free_b64(sig);
    raw[0] ^= 1;
    let tampered = format!("{head}.{}", b64u(&raw));
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&tampered)),
        "invalid_dpop_proof",
        "tampered",
    )
    .await;
}

fn percent_free_b64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn c6_9_and_10_htm_and_htu() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    for (what, proof) in [
        ("GET proof on POST", Proof::for_htu(&t, "GET", HTU)),
        ("htm lower case", Proof::for_htu(&t, "post", HTU)),
        (
            "other path",
            Proof::for_htu(&t, "POST", "https://mcp.example.com/admin/mcp"),
        ),
        (
            "other host",
            Proof::for_htu(&t, "POST", "https://evil.example/mcp"),
        ),
        (
            "htu with query",
            Proof::for_htu(&t, "POST", "https://mcp.example.com/mcp?x=1"),
        ),
        (
            "htu with fragment",
            Proof::for_htu(&t, "POST", "https://mcp.example.com/mcp#f"),
        ),
        (
            "internal URL",
            Proof::for_htu(&t, "POST", "http://127.0.0.1:3000/mcp"),
        ),
    ] {
        refused(
            &env,
            dpop_req("/mcp", &t, Some(&proof.build())),
            "invalid_dpop_proof",
            what,
        )
        .await;
    }
    // The query of the request is ignored; scheme and host case and the default port are normalized.
    let ok = Proof::new(&t).build();
    let r = env.send(dpop_req("/mcp?x=1", &t, Some(&ok))).await;
    assert_eq!(r.status, 200, "query ignored: {r}");
    let ok = Proof::for_htu(&t, "POST", "HTTPS://MCP.EXAMPLE.COM:443/mcp").build();
    let r = env.send(dpop_req("/mcp", &t, Some(&ok))).await;
    assert_eq!(r.status, 200, "normalized htu: {r}");
    // A forged Host or X-Forwarded-Host never feeds htu.
    let forged = Proof::for_htu(&t, "POST", "https://evil.example/mcp").build();
    let req = dpop_req("/mcp", &t, Some(&forged))
        .host("evil.example")
        .h("x-forwarded-host", "evil.example");
    refused(&env, req, "invalid_dpop_proof", "htu from forged Host").await;
}

#[tokio::test]
async fn c6_11_iat_window() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    for (what, iat) in [("303 s ahead", now() + 303), ("303 s old", now() - 303)] {
        let p = Proof::new(&t).c("iat", json!(iat)).build();
        refused(
            &env,
            dpop_req("/mcp", &t, Some(&p)),
            "invalid_dpop_proof",
            what,
        )
        .await;
    }
    let p = Proof::new(&t).c("iat", json!(now() - 10)).build();
    assert_eq!(env.send(dpop_req("/mcp", &t, Some(&p))).await.status, 200);
}

#[tokio::test]
async fn c6_12_replay_refused() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let p = Proof::new(&t).build();
    assert_eq!(env.send(dpop_req("/mcp", &t, Some(&p))).await.status, 200);
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&p)),
        "invalid_dpop_proof",
        "replay",
    )
    .await;
    let long = Proof::new(&t).c("jti", json!("j".repeat(257))).build();
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&long)),
        "invalid_dpop_proof",
        "jti > 256",
    )
    .await;
}

#[tokio::test]
async fn c6_13_ath() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let p = Proof::new(&t).no_c("ath").build();
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&p)),
        "invalid_dpop_proof",
        "ath absent",
    )
    .await;
    let p = Proof::new(&t).c("ath", json!(ath("another token"))).build();
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&p)),
        "invalid_dpop_proof",
        "wrong ath",
    )
    .await;
}

#[tokio::test]
async fn c6_14_key_binding_mismatch_is_invalid_token() {
    let env = Env::start(DPOP).await;
    let t = env.tok().c("cnf", json!({"jkt": jkt(q_key())})).build();
    let p = Proof::new(&t).build(); // signed by P
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&p)),
        "invalid_token",
        "cnf.jkt mismatch",
    )
    .await;
    // and the right key works
    let p = Proof::new(&t)
        .signed_by(q_key())
        .h("jwk", public_jwk(q_key()))
        .build();
    assert_eq!(env.send(dpop_req("/mcp", &t, Some(&p))).await.status, 200);
}

#[tokio::test]
async fn c6_15_downgrade_to_bearer_refused() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let before = env.up.count();
    let r = env.send(Req::post("/mcp").bearer(&t)).await;
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(env.up.count(), before);
    // A valid proof alongside does not rescue a Bearer presentation.
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("dpop", &Proof::new(&t).build()),
        )
        .await;
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(env.up.count(), before);
}

#[tokio::test]
async fn c6_16_both_schemes_and_unbound_tokens() {
    let env = Env::start(DPOP).await;
    let t = bound_token(&env);
    let req = Req::post("/mcp")
        .h("authorization", &format!("Bearer {t}"))
        .h("authorization", &format!("DPoP {t}"))
        .h("dpop", &Proof::new(&t).build());
    let r = env.send(req).await;
    assert_eq!(r.status, 400, "{r}");
    env.assert_nothing_forwarded();
    // An unbound token under the DPoP scheme.
    let unbound = env.tok().build();
    let p = Proof::new(&unbound).build();
    refused(
        &env,
        dpop_req("/mcp", &unbound, Some(&p)),
        "invalid_token",
        "unbound under DPoP",
    )
    .await;
}

#[tokio::test]
async fn c6_17_wrong_audience_with_valid_proof() {
    let env = Env::start(DPOP).await;
    let t = Tok::new(&env.idp.issuer(), "https://other.example/mcp")
        .c("cnf", json!({"jkt": jkt(p_key())}))
        .build();
    let p = Proof::new(&t).build();
    refused(
        &env,
        dpop_req("/mcp", &t, Some(&p)),
        "invalid_token",
        "wrong aud",
    )
    .await;
}

#[tokio::test]
async fn c6_18_server_nonce() {
    let env = Env::start(DPOP).await;
    let htu = "https://mcp.example.com/nonce/mcp";
    let t = Tok::new(&env.idp.issuer(), "https://mcp.example.com/nonce/mcp")
        .c("cnf", json!({"jkt": jkt(p_key())}))
        .build();
    let r = env
        .send(dpop_req(
            "/nonce/mcp",
            &t,
            Some(&Proof::for_htu(&t, "POST", htu).build()),
        ))
        .await;
    assert_dpop_challenge(&r, "use_dpop_nonce");
    let nonces = r.header_all("dpop-nonce");
    assert_eq!(nonces.len(), 1, "{r}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r}");
    env.assert_nothing_forwarded();
    let nonce = nonces[0].to_string();
    let p = Proof::for_htu(&t, "POST", htu)
        .c("nonce", json!(nonce))
        .build();
    let r = env.send(dpop_req("/nonce/mcp", &t, Some(&p))).await;
    assert_eq!(r.status, 200, "{r}");
    let p = Proof::for_htu(&t, "POST", htu)
        .c("nonce", json!("wrong"))
        .build();
    let r = env.send(dpop_req("/nonce/mcp", &t, Some(&p))).await;
    assert_dpop_challenge(&r, "use_dpop_nonce");
}

#[tokio::test]
async fn required_route_refuses_bearer_and_unbound() {
    let env = Env::start(DPOP).await;
    let htu = "https://mcp.example.com/strict/mcp";
    let unbound = Tok::new(&env.idp.issuer(), htu).build();
    let r = env.send(Req::post("/strict/mcp").bearer(&unbound)).await;
    assert_eq!(r.status, 401, "{r}");
    // the challenge offers DPoP
    assert!(
        r.header_all("www-authenticate")
            .iter()
            .any(|v| v.contains("DPoP")),
        "{r}"
    );
    let bound = Tok::new(&env.idp.issuer(), htu)
        .c("cnf", json!({"jkt": jkt(p_key())}))
        .build();
    let p = Proof::for_htu(&bound, "POST", htu).build();
    assert_eq!(
        env.send(dpop_req("/strict/mcp", &bound, Some(&p)))
            .await
            .status,
        200
    );
    env.up.clear();
    let p = Proof::for_htu(&unbound, "POST", htu).build();
    refused(
        &env,
        dpop_req("/strict/mcp", &unbound, Some(&p)),
        "invalid_token",
        "no cnf on required",
    )
    .await;
}

#[tokio::test]
async fn disabled_route_refuses_the_dpop_scheme() {
    let env = Env::start(DPOP).await;
    let htu = "https://mcp.example.com/plain/mcp";
    let t = Tok::new(&env.idp.issuer(), htu).build();
    let p = Proof::for_htu(&t, "POST", htu).build();
    let r = env.send(dpop_req("/plain/mcp", &t, Some(&p))).await;
    assert_eq!(r.status, 401, "{r}");
    env.assert_nothing_forwarded();
    // Bearer still works there, and the challenge never mentions DPoP.
    assert_eq!(
        env.send(Req::post("/plain/mcp").bearer(&t)).await.status,
        200
    );
    let r = env.send(Req::post("/plain/mcp")).await;
    assert!(
        r.header_all("www-authenticate")
            .iter()
            .all(|v| !v.contains("DPoP")),
        "{r}"
    );
}

#[tokio::test]
async fn c2_6_metadata_advertises_dpop() {
    let env = Env::start(DPOP).await;
    let r = env
        .send(Req::get("/.well-known/oauth-protected-resource/strict/mcp"))
        .await;
    let doc = r.json();
    assert_eq!(
        doc["dpop_bound_access_tokens_required"],
        json!(true),
        "{doc}"
    );
    let algs = doc["dpop_signing_alg_values_supported"].as_array().unwrap();
    assert!(algs.iter().any(|a| a == "ES256"), "{doc}");
    let doc = env
        .send(Req::get("/.well-known/oauth-protected-resource/mcp"))
        .await
        .json();
    assert!(doc["dpop_signing_alg_values_supported"].is_array(), "{doc}");
    assert_ne!(
        doc["dpop_bound_access_tokens_required"],
        json!(true),
        "{doc}"
    );
    let doc = env
        .send(Req::get("/.well-known/oauth-protected-resource/plain/mcp"))
        .await
        .json();
    assert!(
        doc.get("dpop_signing_alg_values_supported").is_none(),
        "{doc}"
    );
}

#[tokio::test]
async fn allowed_route_challenges_offer_both_schemes() {
    let env = Env::start(DPOP).await;
    let r = env.send(Req::post("/mcp")).await;
    assert_eq!(r.status, 401);
    let all: Vec<String> = r
        .header_all("www-authenticate")
        .into_iter()
        .flat_map(split_challenges)
        .collect();
    assert!(all.iter().any(|c| c.starts_with("Bearer")), "{all:?}");
    let dpop = all
        .iter()
        .find(|c| c.starts_with("DPoP"))
        .expect("DPoP challenge");
    let c = parse_challenge(dpop).unwrap();
    assert!(c.param("algs").is_some(), "{dpop}");
    assert_eq!(c.param("resource_metadata"), Some(PRM), "{dpop}");
    assert!(c.param("error").is_none(), "{dpop}");
}
