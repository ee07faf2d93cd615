//! Issue 21, items 6 and 7: routing cannot be talked past by letter case, trailing dots or white
//! space, Unicode look-alikes, or the host's spelling; browsers get CORS from the gateway; every
//! request names its host; DPoP `htu` is compared after the request's own normalization only.
//!
//! Every refusal asserts status, JSON body and that nothing reached the upstream.

use serde_json::{json, Value};

use crate::dpop::{bound_token, dpop_req, refused};
use crate::harness::*;

const R_ADMIN_ROUTE: &str = "https://mcp.example.com/admin";
const PRM_ADMIN_ROUTE: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/admin";
const APP: &str = "https://app.example";

async fn routes_env() -> Env {
    Env::builder(ROUTES).var("ADMIN_EXTRA", "").start().await
}

/// Sends `req` and asserts a refusal: `status`, a JSON body with `error` = `code`, and nothing
/// forwarded. Returns the response for further checks.
async fn assert_refused(env: &Env, req: Req, status: u16, code: &str) -> Resp {
    let what = format!("{} {}", req.method, req.target);
    let before = env.up.count();
    let r = env.send(req).await;
    assert_eq!(r.status, status, "{what}: {r}");
    assert_json_error(&r, Some(code));
    assert_eq!(
        env.up.count(),
        before,
        "{what}: a refused request reached the upstream: {:#?}",
        env.up.requests()
    );
    r
}

/// Sends `req`, asserts 200 from the upstream and returns the path the upstream received.
async fn forwarded_path(env: &Env, req: Req) -> String {
    let what = format!("{} {}", req.method, req.target);
    let before = env.up.count();
    let r = env.send(req).await;
    assert_eq!(r.status, 200, "{what}: {r}");
    assert_eq!(env.up.count(), before + 1, "{what}: upstream count");
    env.up.last().path().to_string()
}

#[tokio::test]
async fn i21_6_case_variants_of_a_protected_prefix_get_its_policy() {
    let env = routes_env().await;
    let variants = [
        "/ADMIN",
        "/Admin",
        "/aDmIn/",
        "/Admin/x",
        "/ADM%49N",
        "/%41DMIN/x",
        "/adm%69n",
        "/ADMIN?x=1",
    ];
    // No token: the admin route's discovery challenge, for every method.
    for target in variants {
        for method in ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"] {
            let r = assert_refused(&env, Req::new(method, target), 401, "unauthorized").await;
            assert_401_no_error(&r, PRM_ADMIN_ROUTE, Some("admin"));
        }
    }
    // A token for the route without its scope: 403, as on `/admin`.
    let reader = Tok::new(&env.idp.issuer(), R_ADMIN_ROUTE).build();
    for target in variants {
        let r = assert_refused(
            &env,
            Req::get(target).bearer(&reader),
            403,
            "insufficient_scope",
        )
        .await;
        assert_insufficient_scope(&r, "admin", PRM_ADMIN_ROUTE);
    }
    // With the scope: forwarded, and the upstream gets the normalized path in the client's
    // letter case (a case-sensitive upstream answers 404 for it, which is safe).
    let admin = Tok::new(&env.idp.issuer(), R_ADMIN_ROUTE)
        .scope("admin")
        .build();
    for (target, upstream_path) in [
        ("/ADMIN", "/ADMIN"),
        ("/Admin/x", "/Admin/x"),
        ("/ADM%49N", "/ADMIN"),
        ("/adm%69n", "/admin"),
    ] {
        let path = forwarded_path(&env, Req::get(target).bearer(&admin)).await;
        assert_eq!(path, upstream_path, "{target}");
    }
    // The open route still serves what is not under /admin in any case.
    for (target, upstream_path) in [("/adminx", "/adminx"), ("/ADMINX/y", "/ADMINX/y")] {
        assert_eq!(forwarded_path(&env, Req::get(target)).await, upstream_path);
    }
}

#[tokio::test]
async fn i21_6_segments_ending_in_a_dot_or_white_space_are_refused() {
    let env = routes_env().await;
    let admin = Tok::new(&env.idp.issuer(), R_ADMIN_ROUTE)
        .scope("admin")
        .build();
    let targets = [
        "/admin.",
        "/ADMIN.",
        "/admin%2e",
        "/admin%2E",
        "/admin..",
        "/admin./x",
        "/admin%20",
        "/admin%20/x",
        "/%20admin",
        "/admin%09",
        "/admin%0b",
        "/admin%0c",
        "/admin%0d%0a",
        "/admin%a0",
        "/admin%c2%a0",
        "/admin%e3%80%80",
        "/admin%20.",
        "/x/y.",
        "/mcp.",
        "/mcp/...",
    ];
    for target in targets {
        for token in [None, Some(admin.as_str())] {
            let req = match token {
                Some(t) => Req::get(target).bearer(t),
                None => Req::get(target),
            };
            let r = assert_refused(&env, req, 400, "invalid_request").await;
            assert!(
                r.json()["error_description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("request path")),
                "{target}: {r}"
            );
        }
    }
}

#[tokio::test]
async fn i21_6_non_ascii_that_reads_as_ascii_is_refused() {
    let env = routes_env().await;
    for target in [
        "/adm%C4%B1n",      // ı: upper-cases to I
        "/%C5%BFcript",     // ſ: upper-cases to S
        "/%E2%84%AAey",     // Kelvin sign: lower-cases to k
        "/%EF%BD%81dmin",   // fullwidth a
        "/%EF%BC%A1DMIN",   // fullwidth A
        "/admin%EF%BC%8Fx", // fullwidth solidus
        "/admin%E2%80%A4",  // one dot leader
        "/%EF%AC%81le",     // ﬁ ligature
        "/ad%C2%A0min",     // no-break space inside a segment
    ] {
        let r = assert_refused(&env, Req::get(target), 400, "invalid_request").await;
        assert!(r.text().contains("non-ASCII"), "{target}: {r}");
    }
    // Non-ASCII text that stays non-ASCII is data, on the open route.
    assert_eq!(
        forwarded_path(&env, Req::get("/caf%C3%A9")).await,
        "/caf%C3%A9"
    );
}

#[tokio::test]
async fn i21_6_case_sensitive_prefix_is_opt_in_and_warned_about() {
    let extra = "\n    case_sensitive_prefix: true";
    // `mcpgate check` prints the warning in its summary, and still succeeds.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    let fixed = render(
        ROUTES,
        &[
            ("ADMIN_EXTRA", extra),
            ("TLS", ""),
            ("PORT", "18080"),
            ("ADMIN", "19090"),
            ("IDP", "http://127.0.0.1:4000"),
            ("JWKS", "http://127.0.0.1:4000/jwks"),
            ("UP", "http://127.0.0.1:3001"),
        ],
    );
    std::fs::write(&path, &fixed).unwrap();
    let check = || run_cli(&["check", "--config", path.to_str().unwrap()], "");
    let (code, text, _) = check();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning: route \"admin\" has case_sensitive_prefix")
            && text.contains("route \"open\" (/), which has auth: none"),
        "{text}"
    );
    // The same config without the option: no warning.
    let plain = fixed.replace(extra, "");
    std::fs::write(&path, &plain).unwrap();
    let (code, text, _) = check();
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("warning"));

    // At run time: logged at load; `/admin` keeps its policy, other cases are the open
    // route's (the operator says the upstream is case-sensitive).
    let env = Env::builder(ROUTES).var("ADMIN_EXTRA", extra).start().await;
    assert!(
        env.gw.logs().contains("configuration warning"),
        "{}",
        env.gw.logs()
    );
    assert_refused(&env, Req::get("/admin/x"), 401, "unauthorized").await;
    assert_eq!(forwarded_path(&env, Req::get("/ADMIN/x")).await, "/ADMIN/x");
}

#[tokio::test]
async fn i21_6_hosts_match_in_any_case_and_without_the_trailing_dot() {
    let env = Env::start(HOSTS).await;
    for host in [
        "mcp.example.com",
        "MCP.EXAMPLE.COM",
        "mcp.example.com.",
        "Mcp.Example.Com.:443",
        "mcp.example.com:8443",
    ] {
        let r = assert_refused(&env, Req::get("/mcp").host(host), 401, "unauthorized").await;
        assert_401_no_error(&r, PRM, Some("mcp:read"));
    }
    for host in [
        "mcp.example.com..",
        ".mcp.example.com",
        "mcp..example.com",
        "mcp%2eexample.com",
        "mcp.example.com:",
        "mcp.example.com:x",
        "mcp.example.com:443:443",
        "mcp.example.com/x",
        "",
    ] {
        assert_refused(&env, Req::get("/mcp").host(host), 400, "invalid_request").await;
    }
    // Userinfo in Host is refused by pingora itself, before the gateway's filters (so its
    // 400 is pingora's, without the JSON body); nothing is forwarded either way.
    let before = env.up.count();
    let r = env
        .send(Req::get("/mcp").host("user@mcp.example.com"))
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(env.up.count(), before);
    // Absolute-form targets name the same host (pingora requires the Host header to repeat the
    // target's authority byte for byte, and refuses a mismatch itself, without a JSON body).
    assert_refused(
        &env,
        Req::get("http://MCP.example.com./mcp").host("MCP.example.com."),
        401,
        "unauthorized",
    )
    .await;
    let before = env.up.count();
    let r = env
        .send(Req::get("http://other.example/mcp").host("mcp.example.com"))
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(env.up.count(), before);
    // Another host is the open route's.
    assert_eq!(
        forwarded_path(&env, Req::get("/mcp").host("other.example")).await,
        "/mcp"
    );
}

#[tokio::test]
async fn i21_7_requests_without_host_are_refused() {
    let env = routes_env().await;
    for raw in [
        "GET /open HTTP/1.1\r\n\r\n",
        "GET /mcp HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET http://mcp.example.com/open HTTP/1.1\r\n\r\n",
        "GET https://mcp.example.com/mcp HTTP/1.1\r\n\r\n",
        "GET /open HTTP/1.0\r\n\r\n",
        "GET http://mcp.example.com/open HTTP/1.0\r\n\r\n",
    ] {
        let before = env.up.count();
        let r = send_raw(env.gw.addr(), raw.as_bytes(), false)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{raw:?}: {r}");
        assert_json_error(&r, Some("invalid_request"));
        assert!(r.text().contains("Host"), "{raw:?}: {r}");
        assert_eq!(env.up.count(), before, "{raw:?} reached the upstream");
    }
    // With a Host, the same requests are routed.
    let r = send_raw(
        env.gw.addr(),
        b"GET http://mcp.example.com/open HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n",
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r}");
}

fn preflight(target: &str, origin: &str) -> Req {
    Req::new("OPTIONS", target)
        .h("Origin", origin)
        .h("Access-Control-Request-Method", "POST")
        .h(
            "Access-Control-Request-Headers",
            "authorization, content-type, mcp-protocol-version",
        )
}

fn assert_preflight_answer(r: &Resp) {
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{r}");
    assert_eq!(r.header("vary"), Some("Origin"), "{r}");
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, DELETE"),
        "{r}"
    );
    let allow = r
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in [
        "authorization",
        "dpop",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "content-type",
        "last-event-id",
    ] {
        assert!(allow.split(", ").any(|a| a == h), "{h} not allowed: {r}");
    }
    assert!(r.header("access-control-max-age").is_some(), "{r}");
    assert!(
        r.header("access-control-allow-credentials").is_none(),
        "{r}"
    );
    assert!(r.body.is_empty(), "{r}");
}

#[tokio::test]
async fn i21_7_preflight_from_an_allowed_origin_is_answered_by_the_gateway() {
    let env = routes_env().await;
    // No token, any route (protected, its case variant, open), nothing upstream.
    for target in ["/mcp", "/mcp/x", "/ADMIN", "/admin", "/open", "/"] {
        let r = env.send(preflight(target, APP)).await;
        assert_preflight_answer(&r);
        env.assert_nothing_forwarded();
    }
    // A preflight asking for another method is answered the same way (the browser compares).
    let r = env
        .send(preflight("/mcp", APP).h("Access-Control-Request-Method", "PUT"))
        .await;
    assert_preflight_answer(&r);
    // Not preflights: an OPTIONS without Access-Control-Request-Method, and `options` (methods
    // are case-sensitive) are ordinary requests and need a token.
    let plain = Req::new("OPTIONS", "/mcp").h("Origin", APP);
    let r = assert_refused(&env, plain, 401, "unauthorized").await;
    assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{r}");
    let lower = Req::new("options", "/mcp")
        .h("Origin", APP)
        .h("Access-Control-Request-Method", "POST");
    let before = env.up.count();
    let r = env.send(lower).await;
    assert_ne!(r.status, 204, "{r}");
    assert!(r.status >= 400, "{r}");
    assert_eq!(env.up.count(), before, "`options` reached the upstream");
    // A preflight has no body: one with a body is refused, not answered.
    let with_body = preflight("/mcp", APP).body(b"hello".to_vec());
    assert_refused(&env, with_body, 400, "invalid_request").await;
    let chunked = preflight("/open", APP).h("Transfer-Encoding", "chunked");
    let mut bytes = chunked.to_bytes();
    bytes.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    let r = send_raw(env.gw.addr(), &bytes, false).await.unwrap();
    assert_eq!(r.status, 400, "{r}");
    assert_json_error(&r, Some("invalid_request"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn i21_7_preflight_from_another_origin_is_refused() {
    let env = routes_env().await;
    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
        "https://app.example:443",
        "null",
    ] {
        for target in ["/mcp", "/open", "/ADMIN"] {
            let r = assert_refused(&env, preflight(target, origin), 403, "access_denied").await;
            assert!(r.header("access-control-allow-origin").is_none(), "{r}");
        }
    }
    // Two Origin headers: refused.
    let two = preflight("/mcp", APP).h("Origin", "https://evil.example");
    assert_refused(&env, two, 400, "invalid_request").await;
}

#[tokio::test]
async fn i21_7_every_response_to_an_allowed_origin_carries_cors() {
    let env = routes_env().await;
    let check = |r: &Resp| {
        assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{r}");
        assert!(
            r.header_all("vary").iter().any(|v| v.contains("Origin")),
            "{r}"
        );
        let expose = r.header("access-control-expose-headers").unwrap_or("");
        for h in [
            "Mcp-Session-Id",
            "WWW-Authenticate",
            "DPoP-Nonce",
            "MCP-Protocol-Version",
        ] {
            assert!(expose.contains(h), "{h} not exposed: {r}");
        }
    };
    // The gateway's own refusals: the 401 challenge must be readable by the page.
    let r = assert_refused(
        &env,
        Req::post("/mcp").h("Origin", APP),
        401,
        "unauthorized",
    )
    .await;
    check(&r);
    assert_401_no_error(&r, PRM, Some("mcp:read"));
    let r = assert_refused(
        &env,
        Req::post("/mcp").h("Origin", APP).bearer("not a token"),
        400,
        "invalid_request",
    )
    .await;
    check(&r);
    // The upstream's answer.
    let t = env.tok().build();
    let r = env
        .send(Req::post("/mcp").h("Origin", APP).bearer(&t))
        .await;
    assert_eq!(r.status, 200, "{r}");
    check(&r);
    // Without Origin: no Access-Control-Allow-Origin, but the response still varies on it.
    let r = env.send(Req::post("/mcp").bearer(&t)).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.header("access-control-allow-origin").is_none(), "{r}");
    assert!(
        r.header_all("vary").iter().any(|v| v.contains("Origin")),
        "{r}"
    );
    // A disallowed origin gets no CORS headers on its 403.
    let r = assert_refused(
        &env,
        Req::post("/mcp")
            .h("Origin", "https://evil.example")
            .bearer(&t),
        403,
        "access_denied",
    )
    .await;
    assert!(r.header("access-control-allow-origin").is_none(), "{r}");
}

#[tokio::test]
async fn i21_7_the_upstreams_cors_headers_are_replaced() {
    // An upstream that allows every origin (as the MCP SDK examples' `cors()` does).
    let server = Upstream::with(|_req: &Request| Reply::Full {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Access-Control-Allow-Origin".into(), "*".into()),
            ("Access-Control-Allow-Credentials".into(), "true".into()),
            ("Access-Control-Expose-Headers".into(), "*".into()),
            ("Vary".into(), "Accept-Encoding".into()),
        ],
        body: b"{}".to_vec(),
    });
    let config = ROUTES.replace(
        "upstream: {UP}\n    auth: none",
        &format!("upstream: {}\n    auth: none", server.url()),
    );
    let env = Env::builder(&config).var("ADMIN_EXTRA", "").start().await;
    let r = env.send(Req::get("/open").h("Origin", APP)).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(server.count(), 1);
    assert_eq!(r.header_all("access-control-allow-origin"), [APP], "{r}");
    assert!(
        r.header("access-control-allow-credentials").is_none(),
        "{r}"
    );
    assert!(
        r.header("access-control-expose-headers")
            .is_some_and(|v| v.contains("WWW-Authenticate")),
        "{r}"
    );
    let r = env.send(Req::get("/open")).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(r.header("access-control-allow-origin").is_none(), "{r}");
    assert!(
        r.header("access-control-allow-credentials").is_none(),
        "{r}"
    );
}

#[tokio::test]
async fn i21_7_dpop_htu_is_compared_after_the_requests_normalization_only() {
    let env = Env::builder(DPOP_PUBLIC)
        .var("PUBLIC", "https://mcp.example.com")
        .start()
        .await;
    let t = bound_token(&env);
    let accepted = [
        ("/mcp", "https://mcp.example.com/mcp"),
        ("/mcp", "HTTPS://MCP.EXAMPLE.COM:443/mcp"),
        // The percent-encoded spelling of the request path, and the other way round.
        ("/mcp", "https://mcp.example.com/%6Dcp"),
        ("/%6Dcp", "https://mcp.example.com/mcp"),
        ("/%6dc%70", "https://mcp.example.com/m%63p"),
    ];
    for (target, htu) in accepted {
        let proof = Proof::for_htu(&t, "POST", htu).build();
        let before = env.up.count();
        let r = env.send(dpop_req(target, &t, Some(&proof))).await;
        assert_eq!(r.status, 200, "{target} with htu {htu}: {r}");
        assert_eq!(env.up.count(), before + 1);
        assert_eq!(env.up.last().path(), "/mcp");
    }
    let refused_htus = [
        "https://mcp.example.com./mcp",
        " https://mcp.example.com/mcp",
        "https://mcp.example.com/mcp ",
        "https://user@mcp.example.com/mcp",
        "https://mcp.example.com/mcp#frag",
        "https://mcp.example.com/mcp?",
        "https://mcp.example.com:0443/mcp",
        "https://mcp.example.com:/mcp",
        "https://mcp.example.com/MCP",
        "https://mcp.example.com/mcp/",
        "https://mcp.example.com/x/../mcp",
        "https://mcp.example.com//mcp",
        "http://mcp.example.com/mcp",
    ];
    for htu in refused_htus {
        let proof = Proof::for_htu(&t, "POST", htu).build();
        refused(
            &env,
            dpop_req("/mcp", &t, Some(&proof)),
            "invalid_dpop_proof",
            &format!("htu {htu:?}"),
        )
        .await;
    }
    // Case variants reach the route; the proof names the path as requested.
    let proof = Proof::for_htu(&t, "POST", "https://mcp.example.com/mcp").build();
    refused(
        &env,
        dpop_req("/MCP", &t, Some(&proof)),
        "invalid_dpop_proof",
        "htu /mcp for a request to /MCP",
    )
    .await;
    let proof = Proof::for_htu(&t, "POST", "https://mcp.example.com/MCP").build();
    let r = env.send(dpop_req("/MCP", &t, Some(&proof))).await;
    assert_eq!(r.status, 200, "{r}");

    // An IP-address public URL: only its own spelling of the address.
    let env = Env::builder(DPOP_PUBLIC)
        .var("PUBLIC", "http://127.0.0.1:{PORT}")
        .start()
        .await;
    let (port, public) = (env.gw.port, format!("http://127.0.0.1:{}", env.gw.port));
    let t = Tok::new(&env.idp.issuer(), &format!("{public}/mcp"))
        .c("cnf", json!({"jkt": jkt(p_key())}))
        .build();
    for host in [
        "127.0.0.1.",
        "0x7f.0.0.1",
        "0x7f000001",
        "2130706433",
        "127.1",
        "0177.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
    ] {
        let htu = format!("http://{host}:{port}/mcp");
        let proof = Proof::for_htu(&t, "POST", &htu).build();
        refused(
            &env,
            dpop_req("/mcp", &t, Some(&proof)),
            "invalid_dpop_proof",
            &htu,
        )
        .await;
    }
    let proof = Proof::for_htu(&t, "POST", &format!("{public}/mcp")).build();
    let r = env.send(dpop_req("/mcp", &t, Some(&proof))).await;
    assert_eq!(r.status, 200, "{r}");
}

// ---------------------------------------------------------------------------------------------
// The same over HTTP/2 (TLS with ALPN h2)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn i21_6_and_7_over_http2() {
    let env = Env::builder(ROUTES)
        .var("ADMIN_EXTRA", "")
        .tls()
        .start()
        .await;
    let client = https_client(env.pki.as_ref().unwrap(), env.gw.addr(), false);
    let url = |p: &str| env.url(p);
    let json = |body: &str| serde_json::from_str::<Value>(body).unwrap();

    // A case variant of /admin: the admin route's 401.
    let r = client.get(url("/ADMIN")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(www.contains(PRM_ADMIN_ROUTE), "{www}");
    assert_eq!(
        json(&r.text().await.unwrap())["error"],
        json!("unauthorized")
    );
    // A trailing dot: 400.
    let r = client.get(url("/admin.")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        json(&r.text().await.unwrap())["error"],
        json!("invalid_request")
    );
    // A preflight: 204 from the gateway.
    let r = client
        .request(reqwest::Method::OPTIONS, url("/mcp"))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    // The 401 of a real request from the allowed origin is readable.
    let r = client
        .post(url("/mcp"))
        .header("origin", APP)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("WWW-Authenticate"));
    // A disallowed origin's preflight: 403 JSON.
    let r = client
        .request(reqwest::Method::OPTIONS, url("/mcp"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        json(&r.text().await.unwrap())["error"],
        json!("access_denied")
    );
    env.assert_nothing_forwarded();
    // With a token, the upstream gets the request.
    let t = env.tok().build();
    let r = client
        .post(url("/MCP"))
        .bearer_auth(&t)
        .header("origin", APP)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert_eq!(env.up.only().path(), "/MCP");
}
