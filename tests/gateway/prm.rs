//! RFC 9728 protected resource metadata: SPEC-CHECKLIST §1.2, §1.3, §2 (1-5, 9).

use serde_json::{json, Value};

use crate::harness::*;

const WK: &str = "/.well-known/oauth-protected-resource";

/// Turns an absolute PRM URL into the path to request from the gateway.
fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

fn assert_prm_shape(r: &Resp, resource: &str, issuers: &[String]) -> Value {
    assert_eq!(r.status, 200, "{r}");
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "{r}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r}");
    let v = r.json();
    assert_eq!(v["resource"], json!(resource), "{r}");
    assert_eq!(v["authorization_servers"], json!(issuers), "{r}");
    assert_eq!(v["bearer_methods_supported"], json!(["header"]), "{r}");
    assert!(
        v.get("jwks_uri").is_none(),
        "PRM must not carry jwks_uri: {r}"
    );
    for (k, val) in v.as_object().unwrap() {
        assert!(!val.is_null(), "{k} is null: {r}");
        if let Some(a) = val.as_array() {
            assert!(
                !a.is_empty(),
                "{k} is an empty array (omit it instead): {r}"
            );
        }
    }
    v
}

#[tokio::test]
async fn c1_2_prm_served_at_path_inserted_url() {
    let env = Env::standard().await;
    let r = env.send(Req::get(&format!("{WK}/mcp"))).await;
    let v = assert_prm_shape(&r, R, &[env.idp.issuer()]);
    assert_eq!(v["scopes_supported"], json!(["mcp:read"]), "{r}");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_3_root_prm_is_404_with_several_resources() {
    let env = Env::standard().await;
    let r = env.send(Req::get(WK)).await;
    assert_eq!(r.status, 404, "{r}");
    assert_json_error(&r, None);
    let r = env.send(Req::get(&format!("{WK}/"))).await;
    assert_eq!(r.status, 404, "{r}");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_3_root_prm_served_for_root_metadata_route() {
    let tpl = STANDARD.replace(
        "    scopes: [mcp:read]\n",
        "    scopes: [mcp:read]\n    root_metadata: true\n",
    );
    let env = Env::start(&tpl).await;
    let r = env.send(Req::get(WK)).await;
    assert_prm_shape(&r, R, &[env.idp.issuer()]);
    // The path-inserted URL keeps working.
    let r = env.send(Req::get(&format!("{WK}/mcp"))).await;
    assert_prm_shape(&r, R, &[env.idp.issuer()]);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c1_3_root_prm_served_for_resource_at_host_root() {
    let tpl = STANDARD.to_string() + &route("root", "/", &["scopes: [root:use]"]);
    let env = Env::start(&tpl).await;
    // The challenge on a root-route path points at the root PRM (no terminating slash).
    let r = env.send(Req::post("/something")).await;
    assert_401_no_error(&r, &format!("{PUBLIC}{WK}"), Some("root:use"));
    let r = env.send(Req::get(WK)).await;
    assert_eq!(r.status, 200, "{r}");
    let v = r.json();
    let resource = v["resource"].as_str().unwrap();
    assert_eq!(resource.trim_end_matches('/'), PUBLIC, "{r}");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c2_1_path_insertion_for_every_route() {
    let tpl = STANDARD.to_string()
        + &route("deep", "/deep/a/b", &["scopes: [deep]"])
        + &route(
            "api",
            "/api",
            &["resource: https://mcp.example.com/api/", "scopes: [api]"],
        );
    let env = Env::start(&tpl).await;
    let cases = [
        ("/mcp", R, PRM),
        ("/admin/mcp", R_ADMIN, PRM_ADMIN),
        (
            "/deep/a/b",
            "https://mcp.example.com/deep/a/b",
            "https://mcp.example.com/.well-known/oauth-protected-resource/deep/a/b",
        ),
        (
            "/api",
            "https://mcp.example.com/api/",
            "https://mcp.example.com/.well-known/oauth-protected-resource/api/",
        ),
    ];
    for (path, resource, prm) in cases {
        let r = env.send(Req::post(path)).await;
        assert_eq!(r.status, 401, "{path}: {r}");
        let c = r.challenge();
        assert_eq!(c.param("resource_metadata"), Some(prm), "{path}: {r}");
        // Follow it.
        let r = env.send(Req::get(&path_of(prm))).await;
        assert_prm_shape(&r, resource, &[env.idp.issuer()]);
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c2_2_response_shape_and_cors() {
    let tpl = STANDARD.to_string() + &route("noscope", "/noscope", &[]);
    let env = Env::start(&tpl).await;
    let r = env.send(Req::get(&format!("{WK}/noscope"))).await;
    let v = assert_prm_shape(&r, "https://mcp.example.com/noscope", &[env.idp.issuer()]);
    assert!(
        v.get("scopes_supported").is_none(),
        "no scopes: scopes_supported omitted: {r}"
    );
    // CORS preflight.
    let r = env
        .send(
            Req::new("OPTIONS", &format!("{WK}/mcp"))
                .h("Origin", "https://client.example")
                .h("Access-Control-Request-Method", "GET"),
        )
        .await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r}");
    let methods = r.header("access-control-allow-methods").unwrap_or("");
    assert!(methods.contains("GET"), "{r}");
    // A GET with an Origin still gets the document.
    let r = env
        .send(Req::get(&format!("{WK}/mcp")).h("Origin", "https://client.example"))
        .await;
    assert_prm_shape(&r, R, &[env.idp.issuer()]);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c2_3_resource_matches_url_behind_tls_termination() {
    let env = Env::standard().await;
    // Client used https://mcp.example.com/mcp; the gateway listens on plain HTTP.
    let r = env.send(Req::post("/mcp")).await;
    let prm = r
        .challenge()
        .param("resource_metadata")
        .unwrap()
        .to_string();
    assert_eq!(prm, PRM);
    let r = env.send(Req::get(&path_of(&prm))).await;
    assert_prm_shape(&r, R, &[env.idp.issuer()]);
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c2_3_resource_matches_url_on_non_default_port() {
    let tpl = STANDARD.replace(
        "public_url: https://mcp.example.com",
        "public_url: http://127.0.0.1:{PORT}",
    );
    let env = Env::start(&tpl).await;
    let base = format!("http://127.0.0.1:{}", env.gw.port);
    let resource = format!("{base}/mcp");
    let host = format!("127.0.0.1:{}", env.gw.port);
    let r = env.send(Req::post("/mcp").host(&host)).await;
    let prm = format!("{base}{WK}/mcp");
    assert_401_no_error(&r, &prm, Some("mcp:read"));
    let r = env.send(Req::get(&format!("{WK}/mcp")).host(&host)).await;
    assert_prm_shape(&r, &resource, &[env.idp.issuer()]);
    // The audience is the port-qualified resource.
    let t = Tok::new(&env.idp.issuer(), &resource).build();
    let r = env.send(Req::post("/mcp").host(&host).bearer(&t)).await;
    assert_eq!(r.status, 200, "{r}");
    let t = Tok::new(&env.idp.issuer(), "http://127.0.0.1/mcp").build();
    let r = env.send(Req::post("/mcp").host(&host).bearer(&t)).await;
    assert_invalid_token(&r, &prm);
    assert_eq!(env.up.count(), 1, "only the accepted request is forwarded");
}

#[tokio::test]
async fn c2_3_resource_with_and_without_trailing_slash() {
    let tpl = STANDARD.to_string()
        + &route(
            "slash",
            "/slash",
            &["resource: https://mcp.example.com/slash/", "scopes: [s]"],
        );
    let env = Env::start(&tpl).await;
    let r = env.send(Req::get(&format!("{WK}/slash/"))).await;
    assert_prm_shape(&r, "https://mcp.example.com/slash/", &[env.idp.issuer()]);
    let r = env.send(Req::get(&format!("{WK}/mcp"))).await;
    assert_prm_shape(&r, R, &[env.idp.issuer()]);
    // The non-slash form of a slash resource is not a different published resource.
    let r = env.send(Req::get(&format!("{WK}/mcp/"))).await;
    assert_eq!(r.status, 404, "{r}");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c2_4_host_headers_never_reflected() {
    let env = Env::standard().await;
    let spoof = |req: Req| {
        req.host("evil.example")
            .h("X-Forwarded-Host", "evil.example")
            .h("X-Forwarded-Proto", "http")
            .h("X-Forwarded-Port", "8666")
            .h("Forwarded", "host=evil.example;proto=http")
    };
    // The metadata is built from `public_url`, whatever the Host says.
    let r = env.send(spoof(Req::get(&format!("{WK}/mcp")))).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(!r.text().contains("evil"), "{r}");
    assert!(!format!("{:?}", r.headers).contains("evil"), "{r}");
    assert_prm_shape(&r, R, &[env.idp.issuer()]);
    let r = env.send(spoof(Req::post("/mcp"))).await;
    assert!(!format!("{:?}", r.headers).contains("evil"), "{r}");
    assert!(!r.text().contains("evil"), "{r}");
    assert_eq!(r.status, 401, "{r}");
    assert_eq!(r.challenge().param("resource_metadata"), Some(PRM));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn c2_5_prm_has_no_jwks_uri() {
    let env = Env::standard().await;
    let r = env.send(Req::get(&format!("{WK}/admin/mcp"))).await;
    let v = assert_prm_shape(&r, R_ADMIN, &[env.idp.issuer()]);
    assert!(v.get("jwks_uri").is_none());
    assert_eq!(v["scopes_supported"], json!(["admin"]));
}

#[tokio::test]
async fn c2_9_unknown_well_known_paths_are_404_and_never_proxied() {
    // Even with an unauthenticated catch-all route, /.well-known/* is answered by the gateway.
    let tpl = STANDARD.to_string() + &route("catchall", "/", &["auth: none"]);
    let env = Env::start(&tpl).await;
    let t = Tok::new(&env.idp.issuer(), R).build();
    for path in [
        format!("{WK}/unknown"),
        format!("{WK}/mcpx"),
        format!("{WK}/mcp/extra"),
        format!("{WK}/open"),
        format!("{WK}x/mcp"),
        "/.well-known/oauth-authorization-server".to_string(),
        "/.well-known/openid-configuration".to_string(),
        "/.well-known/jwks.json".to_string(),
        "/.well-known/foo".to_string(),
        "/.well-known/".to_string(),
    ] {
        for req in [
            Req::get(&path),
            Req::post(&path),
            Req::get(&path).bearer(&t),
        ] {
            let r = env.send(req).await;
            assert_eq!(r.status, 404, "{path}: {r}");
            assert_json_error(&r, None);
        }
    }
    env.assert_nothing_forwarded();
    // Sanity: the catch-all does proxy ordinary paths.
    let r = env.send(Req::get("/hello")).await;
    assert_eq!(r.status, 200, "{r}");
}
