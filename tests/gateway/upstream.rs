//! What reaches the upstream: SPEC-CHECKLIST §1.9, §7 (1, 2, 3, 6, 10, 11, 12), streaming,
//! identity header encoding, Host handling and `Upgrade`.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::*;

const IDENTITY: [&str; 4] = [
    "x-auth-subject",
    "x-auth-client-id",
    "x-auth-scopes",
    "x-auth-issuer",
];

#[tokio::test]
async fn c1_9_upstream_never_receives_tokens() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert!(u.header_all_loose("authorization").is_empty(), "{u:#?}");
    assert!(
        u.header_all_loose("proxy-authorization").is_empty(),
        "{u:#?}"
    );
    let dump = format!("{:?}{}", u.headers, u.target);
    assert!(
        !dump.contains(t.rsplit('.').next().unwrap()),
        "token leaked: {dump}"
    );
    env.up.clear();

    let r = env
        .send(Req::post("/mcp").h("Authorization", &format!("DPoP {t}")))
        .await;
    assert_eq!(r.status, 401, "{r}");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_9_dpop_header_never_forwarded() {
    let env = Env::standard().await;
    let t = env.tok().build();
    // A Bearer request that also carries a `DPoP` header is judged as Bearer and forwarded,
    // but a DPoP proof (another token-bound credential) must never transit to the upstream.
    let r = env.send(Req::post("/mcp").bearer(&t).h("DPoP", &t)).await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert!(
        u.header_all_loose("dpop").is_empty(),
        "DPoP forwarded: {u:#?}"
    );
    assert!(u.header_all_loose("authorization").is_empty());
}

#[tokio::test]
async fn c7_1_identity_spoofing_on_oauth_route() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("X-Auth-Subject", "admin")
                .h("x-auth-subject", "admin2")
                .h("X-AUTH-SUBJECT", "admin3")
                .h("X_Auth_Subject", "admin4")
                .h("x_auth_subject", "admin5")
                .h("X-Auth-Scopes", "admin")
                .h("X_AUTH_SCOPES", "admin")
                .h("X-Auth-Client-Id", "evil")
                .h("X_Auth_Client_Id", "evil")
                .h("X-Auth-Issuer", "https://evil.example")
                .h("x_auth_issuer", "https://evil.example"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(
        u.header_all_loose("x-auth-subject"),
        vec!["alice"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-auth-scopes"),
        vec!["mcp:read"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-auth-client-id"),
        vec!["client-1"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-auth-issuer"),
        vec![env.idp.issuer().as_str()],
        "{u:#?}"
    );
    let dump = format!("{:?}", u.headers);
    assert!(!dump.contains("admin") && !dump.contains("evil"), "{dump}");
}

#[tokio::test]
async fn c7_1_identity_spoofing_with_whitespace_before_colon() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(Req::post("/mcp").bearer(&t).h("X-Auth-Subject ", "admin"))
        .await;
    // RFC 9112 §5.1: whitespace before the colon MUST be rejected with 400.
    if r.status == 200 {
        let u = env.up.only();
        assert_eq!(
            u.header_all_loose("x-auth-subject"),
            vec!["alice"],
            "{u:#?}"
        );
        panic!("request with whitespace before a header colon was accepted (RFC 9112 §5.1: 400)");
    }
    assert_eq!(r.status, 400, "{r}");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c7_1_identity_spoofing_on_auth_none_route() {
    let env = Env::standard().await;
    let r = env
        .send(
            Req::post("/open/x")
                .h("X-Auth-Subject", "admin")
                .h("X_Auth_Subject", "admin")
                .h("x-auth-scopes", "admin")
                .h("X-AUTH-CLIENT-ID", "evil")
                .h("X_AUTH_ISSUER", "evil"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    for h in IDENTITY {
        assert!(
            u.header_all_loose(h).is_empty(),
            "{h} reached upstream: {u:#?}"
        );
    }
    // Even with a valid token on an auth:none route no identity is asserted... and the token
    // itself is not forwarded.
    env.up.clear();
    let t = env.tok().build();
    let r = env
        .send(Req::post("/open/x").bearer(&t).h("X-Auth-Subject", "admin"))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert!(
        u.header_all_loose("x-auth-subject")
            .iter()
            .all(|v| *v != "admin"),
        "{u:#?}"
    );
    assert!(u.header_all_loose("authorization").is_empty(), "{u:#?}");
}

#[tokio::test]
async fn c7_1_identity_spoofing_with_renamed_headers() {
    let tpl = STANDARD.to_string()
        + &route(
            "renamed",
            "/renamed",
            &[
                "scopes: [mcp:read]",
                "audience_aliases: [\"https://mcp.example.com/mcp\"]",
                "identity_headers:\n  subject: X-MCP-Sub\n  client_id: X-MCP-Client\n  scopes: X-MCP-Scopes\n  issuer: X-MCP-Iss",
            ],
        );
    let env = Env::start(&tpl).await;
    let t = env.tok().build();
    let r = env
        .send(
            Req::post("/renamed")
                .bearer(&t)
                .h("X-MCP-Sub", "admin")
                .h("x-mcp-sub", "admin")
                .h("X_MCP_Sub", "admin")
                .h("X-MCP-Scopes", "admin")
                .h("X-Auth-Subject", "admin"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(u.header_all_loose("x-mcp-sub"), vec!["alice"], "{u:#?}");
    assert_eq!(
        u.header_all_loose("x-mcp-client"),
        vec!["client-1"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-mcp-scopes"),
        vec!["mcp:read"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-mcp-iss"),
        vec![env.idp.issuer().as_str()]
    );
    // Strict choice: the default identity header names never pass through either.
    assert!(u.header_all_loose("x-auth-subject").is_empty(), "{u:#?}");
}

#[tokio::test]
async fn c7_2_connection_listed_identity_headers_still_arrive() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h(
                    "Connection",
                    "keep-alive, X-Auth-Subject, x-auth-scopes, X-Custom",
                )
                .h("X-Custom", "drop-me")
                .h("X-Kept", "keep-me"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(
        u.header_all_loose("x-auth-subject"),
        vec!["alice"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-auth-scopes"),
        vec!["mcp:read"],
        "{u:#?}"
    );
    assert!(
        u.header_all("x-custom").is_empty(),
        "Connection-listed header forwarded: {u:#?}"
    );
    assert_eq!(u.header_all("x-kept"), vec!["keep-me"]);
    for c in u.header_all("connection") {
        assert!(!c.to_ascii_lowercase().contains("x-auth"), "{u:#?}");
    }
    env.up.clear();
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("Connection", "close, X-Auth-Client-Id, X-Auth-Issuer"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(
        u.header_all_loose("x-auth-client-id"),
        vec!["client-1"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-auth-issuer"),
        vec![env.idp.issuer().as_str()]
    );
}

#[tokio::test]
async fn c7_3_forwarding_headers_are_overwritten() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("Forwarded", "for=1.2.3.4;host=evil.example;proto=http")
                .h("X-Forwarded-For", "1.2.3.4")
                .h("X-Forwarded-For", "5.6.7.8")
                .h("X-Forwarded-Host", "evil.example")
                .h("X-Forwarded-Proto", "http")
                .h("x_forwarded_for", "1.2.3.4"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(
        u.header_all_loose("x-forwarded-for"),
        vec!["127.0.0.1"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-forwarded-proto"),
        vec!["https"],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-forwarded-host"),
        vec!["mcp.example.com"],
        "{u:#?}"
    );
    let dump = format!("{:?}", u.headers);
    assert!(
        !dump.contains("evil") && !dump.contains("1.2.3.4") && !dump.contains("5.6.7.8"),
        "client forwarding headers leaked: {dump}"
    );
    env.up.clear();
    // They never feed the resource or the audience.
    let evil_aud = Tok::new(&env.idp.issuer(), "https://evil.example/mcp").build();
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&evil_aud)
                .host("evil.example")
                .h("X-Forwarded-Host", "evil.example")
                .h("Forwarded", "host=evil.example;proto=https"),
        )
        .await;
    assert_invalid_token(&r, PRM);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c7_6_options_and_head_without_token_never_forwarded() {
    let env = Env::standard().await;
    // No token: 401 (the route has no MCP policy, so every method is the token's business);
    // a preflight from an origin the route does not allow: 403.
    let reqs = [
        (Req::new("OPTIONS", "/mcp"), 401, Some("unauthorized")),
        (
            Req::new("OPTIONS", "/mcp")
                .h("Origin", "https://client.example")
                .h("Access-Control-Request-Method", "POST")
                .h(
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            403,
            Some("access_denied"),
        ),
        (Req::new("HEAD", "/mcp"), 401, None),
        (Req::new("HEAD", "/admin/mcp"), 401, None),
        (Req::new("TRACE", "/mcp"), 401, Some("unauthorized")),
    ];
    for (req, status, code) in reqs {
        let what = format!("{} {}", req.method, req.target);
        let r = env.send(req).await;
        assert_eq!(r.status, status, "{what}: {r}");
        // A HEAD answer has no body.
        if let Some(code) = code {
            assert_json_error(&r, Some(code));
        }
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c7_6_method_and_url_override_headers_stripped() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&t)
                .h("X-HTTP-Method-Override", "DELETE")
                .h("x_http_method_override", "DELETE")
                .h("X-Original-URL", "/admin/mcp")
                .h("X-Rewrite-URL", "/admin/mcp")
                .h("x_original_url", "/admin/mcp"),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(u.method, "POST");
    assert_eq!(u.target, "/mcp");
    for h in ["x-http-method-override", "x-original-url", "x-rewrite-url"] {
        assert!(u.header_all_loose(h).is_empty(), "{h} forwarded: {u:#?}");
    }
}

/// Sends headers announcing a huge body plus only `sent` bytes of it, and waits for a response.
async fn partial_upload(env: &Env, head: &str, sent: usize) -> (Resp, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(env.gw.addr()).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0;
    while written < sent {
        if s.write_all(&chunk).await.is_err() {
            break;
        }
        written += chunk.len();
    }
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        read_response(&mut s, &mut Vec::new(), false),
    )
    .await
    .expect("no response while the body was still incomplete (auth must not wait for the body)")
    .unwrap();
    (r, started.elapsed())
}

#[tokio::test]
async fn c7_10_large_body_without_token_gets_fast_401() {
    let env = Env::standard().await;
    let h = "Host: mcp.example.com\r\nContent-Type: application/json";
    let cases = [
        // Checklist: a 100 MB body with no token gets a fast 401 (the client must learn to
        // authenticate; the body is never read).
        (
            "100 MB, no token",
            format!("POST /mcp HTTP/1.1\r\n{h}\r\nContent-Length: 104857600\r\n\r\n"),
            256 * 1024,
            None,
        ),
        (
            "5 MB, no token",
            format!("POST /mcp HTTP/1.1\r\n{h}\r\nContent-Length: 5000000\r\n\r\n"),
            256 * 1024,
            None,
        ),
        (
            "endless chunked, no token",
            format!("POST /mcp HTTP/1.1\r\n{h}\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n"),
            64 * 1024,
            None,
        ),
        (
            "5 MB, bad token",
            format!("POST /mcp HTTP/1.1\r\n{h}\r\nAuthorization: Bearer aaa.bbb.ccc\r\nContent-Length: 5000000\r\n\r\n"),
            256 * 1024,
            Some("invalid_token"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, head, sent, error) in cases {
        let (r, took) = partial_upload(&env, &head, sent).await;
        let err = r
            .header("www-authenticate")
            .and_then(|v| parse_challenge(v).ok())
            .map(|c| c.param("error").map(str::to_string));
        if r.status != 401
            || err != Some(error.map(str::to_string))
            || took >= Duration::from_secs(2)
        {
            failures.push(format!(
                "{what}: want a fast 401 (error={error:?}), got {r} after {took:?}"
            ));
        } else {
            assert_eq!(
                r.challenge().param("resource_metadata"),
                Some(PRM),
                "{what}: {r}"
            );
        }
    }
    env.assert_nothing_forwarded();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn c7_11_responses_not_cached_across_users() {
    let env = Env::standard().await;
    let alice = env.tok().build();
    let bob = env.tok().c("sub", json!("bob")).build();
    let r = env.send(Req::get("/mcp/data").bearer(&alice)).await;
    assert_eq!(r.json()["sub"], json!("alice"), "{r}");
    let r = env.send(Req::get("/mcp/data").bearer(&bob)).await;
    assert_eq!(r.json()["sub"], json!("bob"), "{r}");
    let r = env.send(Req::get("/mcp/data")).await;
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(env.up.count(), 2);
}

#[tokio::test]
async fn c7_12_error_precedence() {
    let env = Env::standard().await;
    let read = env.tok().c("aud", json!([R, R_ADMIN])).build();
    let cases: Vec<(&str, Req, u16)> = vec![
        (
            "malformed creds before 404",
            Req::get("/nope").h("Authorization", "Bearer a b"),
            400,
        ),
        (
            "two Authorization before 404",
            Req::get("/nope").bearer(&read).bearer(&read),
            400,
        ),
        (
            "malformed creds before 401",
            Req::post("/mcp").h("Authorization", "Bearer"),
            400,
        ),
        ("bad path before 404", Req::get("/nope/../x"), 400),
        ("bad path before 401", Req::get("/mcp/../admin/mcp"), 400),
        ("404 before 401 (no token)", Req::get("/nope"), 404),
        (
            "404 before 401 (bad token)",
            Req::get("/nope").bearer("aaa.bbb.ccc"),
            404,
        ),
        (
            "401 before scope 403 (no token)",
            Req::post("/admin/mcp"),
            401,
        ),
        (
            "401 before scope 403 (bad token)",
            Req::post("/admin/mcp").bearer("aaa.bbb.ccc"),
            401,
        ),
        (
            "401 before scope 403 (expired)",
            Req::post("/admin/mcp").bearer(
                &env.tok()
                    .c("aud", json!([R, R_ADMIN]))
                    .c("exp", json!(now() - 3600))
                    .build(),
            ),
            401,
        ),
        ("scope 403", Req::post("/admin/mcp").bearer(&read), 403),
    ];
    let mut failures = Vec::new();
    for (what, req, want) in cases {
        let r = env.send(req).await;
        if r.status != want {
            failures.push(format!("{what}: want {want}, got {r}"));
        } else {
            assert_json_error(&r, None);
        }
    }
    assert!(
        failures.is_empty(),
        "precedence violations:\n{}",
        failures.join("\n")
    );
    env.assert_nothing_forwarded();
    let r = env.send(Req::post("/mcp").bearer(&read)).await;
    assert_eq!(r.status, 200, "{r}");
}

#[tokio::test]
async fn streaming_response_passes_through_unbuffered() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let mut s = TcpStream::connect(env.gw.addr()).await.unwrap();
    let req = Req::get("/mcp/sse")
        .bearer(&t)
        .h("Accept", "text/event-stream")
        .to_bytes();
    s.write_all(&req).await.unwrap();
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, b"data: one")
        .await
        .expect("first event not delivered while the upstream stream is still open (buffered?)");
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    assert!(!head.contains("data: two"));
    env.up.release();
    read_until(&mut s, &mut buf, b"data: two")
        .await
        .expect("second event not delivered");
    read_until(&mut s, &mut buf, b"0\r\n\r\n")
        .await
        .expect("stream did not end");
    let u = env.up.only();
    assert_eq!(u.header_all_loose("x-auth-subject"), vec!["alice"]);
}

#[tokio::test]
async fn request_body_streams_to_upstream_intact() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let r = env
        .send(Req::post("/mcp").bearer(&t).body(big.clone()))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.up.only().body, big);
    env.up.clear();
    // Chunked request body.
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    let r = send_raw(env.gw.addr(), head.as_bytes(), false)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.up.only().body, b"hello world".to_vec());
}

#[tokio::test]
async fn identity_header_values_are_percent_encoded() {
    let env = Env::standard().await;
    let sub = "a%b \u{fc}\r\nX-Evil: 1\u{7f}\"\\";
    let t = env
        .tok()
        .c("sub", json!(sub))
        .no_c("client_id")
        .c("azp", json!("azp-client"))
        .build();
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    let got = u.header_all_loose("x-auth-subject");
    assert_eq!(got.len(), 1, "{u:#?}");
    assert!(
        got[0].bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "{:?}",
        got[0]
    );
    assert_eq!(
        percent_decode(got[0]),
        sub.as_bytes().to_vec(),
        "{:?}",
        got[0]
    );
    assert!(u.header("x-evil").is_none(), "{u:#?}");
    // client_id falls back to azp.
    assert_eq!(u.header_all_loose("x-auth-client-id"), vec!["azp-client"]);
}

#[tokio::test]
async fn identity_subjects_differing_by_whitespace_stay_distinct() {
    // HTTP strips leading/trailing whitespace from field values, so an unencoded space would let
    // " alice " reach the upstream as "alice".
    let env = Env::standard().await;
    for sub in [" alice", "alice ", "\talice", "al ice"] {
        env.up.clear();
        let r = env.post_mcp(&env.tok().c("sub", json!(sub)).build()).await;
        assert_eq!(r.status, 200, "{r}");
        let u = env.up.only();
        let got = u.header_all_loose("x-auth-subject");
        assert_eq!(got.len(), 1, "{u:#?}");
        assert_eq!(
            percent_decode(got[0]),
            sub.as_bytes().to_vec(),
            "sub {sub:?} arrived as {:?}",
            got[0]
        );
    }
}

#[tokio::test]
async fn host_header_handling() {
    let tpl =
        STANDARD.to_string() + &route("keep", "/keep", &["preserve_host: true", "auth: none"]);
    let env = Env::start(&tpl).await;
    let t = env.tok().build();
    let r = env.post_mcp(&t).await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(
        u.header_all("host"),
        vec![env.up.addr().to_string().as_str()],
        "{u:#?}"
    );
    assert_eq!(
        u.header_all_loose("x-forwarded-host"),
        vec!["mcp.example.com"]
    );
    env.up.clear();
    let r = env
        .send(Req::get("/keep/x").host("client.example:1234"))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(u.header_all("host"), vec!["client.example:1234"], "{u:#?}");
}

#[tokio::test]
async fn forward_token_route_passes_authorization() {
    let tpl = STANDARD.to_string()
        + &route(
            "fwd",
            "/fwd",
            &["scopes: [mcp:read]", "forward_token: true"],
        );
    let env = Env::start(&tpl).await;
    let t = Tok::new(&env.idp.issuer(), "https://mcp.example.com/fwd").build();
    let r = env.send(Req::post("/fwd").bearer(&t)).await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(
        u.header_all_loose("authorization"),
        vec![format!("Bearer {t}").as_str()]
    );
    assert_eq!(u.header_all_loose("x-auth-subject"), vec!["alice"]);
}

#[tokio::test]
async fn upgrade_requests_rejected() {
    let env = Env::standard().await;
    let t = env.tok().build();
    for (target, up) in [
        ("/mcp", "websocket"),
        ("/mcp", "h2c"),
        ("/open/x", "websocket"),
    ] {
        let mut req = Req::get(target)
            .h("Connection", "Upgrade")
            .h("Upgrade", up)
            .h("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .h("Sec-WebSocket-Version", "13");
        if target == "/mcp" {
            req = req.bearer(&t);
        }
        let r = env.send(req).await;
        assert_eq!(r.status, 400, "Upgrade {up} on {target}: {r}");
        assert_json_error(&r, None);
    }
    env.assert_nothing_forwarded();
}
