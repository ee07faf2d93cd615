//! Path handling and routing: SPEC-CHECKLIST §7.4 (normalisation invariant), §7.5 (escape from
//! unauthenticated prefixes), plus route matching and rewriting from the CONTRACT.
//!
//! All requests here are raw HTTP so the targets reach the gateway exactly as written.

use serde_json::json;

use crate::harness::*;

/// Upper-cases `%xx` escapes so forwarded paths compare independently of hex case.
fn canon_pct(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push('%');
            out.push_str(&s[i + 1..i + 3].to_ascii_uppercase());
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// What the gateway must do with one target.
enum Expect {
    /// Refused with this status; nothing forwarded.
    Refuse(u16),
    /// Forwarded; the upstream must see exactly this path (hex case ignored).
    Forward(&'static str),
}

/// A token with scope `mcp:read` whose audience covers both `/mcp` and `/admin/mcp`, so only the
/// scope decides between the two.
fn read_token(env: &Env) -> String {
    env.tok().c("aud", json!([R, R_ADMIN])).build()
}

async fn check_paths(env: &Env, token: &str, cases: &[(&str, Expect)]) {
    let mut failures = Vec::new();
    for (target, expect) in cases {
        let before = env.up.count();
        let r = env.send(Req::get(target).bearer(token)).await;
        let forwarded: Vec<Request> = env.up.requests().into_iter().skip(before).collect();
        let got_path = forwarded.first().map(|q| q.path().to_string());
        let ok = match expect {
            Expect::Refuse(code) => {
                let json_ok = r
                    .header("content-type")
                    .is_some_and(|c| c.starts_with("application/json"))
                    && serde_json::from_slice::<serde_json::Value>(&r.body)
                        .is_ok_and(|v| v["error"].is_string());
                r.status == *code && forwarded.is_empty() && json_ok
            }
            Expect::Forward(p) => {
                r.status == 200
                    && forwarded.len() == 1
                    && got_path.as_deref().map(canon_pct) == Some(canon_pct(p))
            }
        };
        if !ok {
            let want = match expect {
                Expect::Refuse(c) => format!("{c} (JSON), nothing forwarded"),
                Expect::Forward(p) => format!("200, upstream path {p}"),
            };
            failures.push(format!(
                "GET {target}: want {want}; got {} {}; upstream saw {:?}",
                r.status,
                r.text(),
                forwarded
                    .iter()
                    .map(|q| q.target.clone())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} path case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn c7_4_path_normalization_invariant() {
    let env = Env::standard().await;
    let t = read_token(&env);
    use Expect::*;
    let cases = [
        // The checklist list.
        ("/mcp/../admin/mcp", Refuse(400)),
        ("/mcp/%2e%2e/admin/mcp", Refuse(400)),
        ("/admin%2fmcp", Refuse(400)),
        ("//admin/mcp", Refuse(400)),
        ("/./admin/mcp", Refuse(400)),
        // Prefixes match in any letter case (issue 21.6): the admin route's scope applies.
        ("/ADMIN/mcp", Refuse(403)),
        ("/admin/mcp/", Refuse(403)),
        ("/admin/mcp;x=1", Refuse(400)),
        ("/admin/mcp%00", Refuse(400)),
        ("/admin\\mcp", Refuse(400)),
        ("/%61dmin/mcp", Refuse(403)),
        ("/mcp/%c0%ae%c0%ae/admin/mcp", Refuse(400)),
        // Variants.
        ("/mcp/%2E%2E/admin/mcp", Refuse(400)),
        ("/mcp/.%2e/admin/mcp", Refuse(400)),
        ("/mcp/%2e./admin/mcp", Refuse(400)),
        ("/mcp/x/../../admin/mcp", Refuse(400)),
        ("/mcp/..", Refuse(400)),
        ("/mcp/.", Refuse(400)),
        ("/mcp/%2e", Refuse(400)),
        ("/mcp/./x", Refuse(400)),
        ("/mcp//x", Refuse(400)),
        ("/mcp%2f..%2fadmin/mcp", Refuse(400)),
        ("/admin%2Fmcp", Refuse(400)),
        ("/admin%5cmcp", Refuse(400)),
        ("/admin%5Cmcp", Refuse(400)),
        ("/mcp/..%5cadmin", Refuse(400)),
        ("/mcp;/../admin/mcp", Refuse(400)),
        ("/mcp/x;jsessionid=1", Refuse(400)),
        ("/mcp/%00", Refuse(400)),
        ("/mcp/%0d%0aX-Injected:%201", Refuse(400)),
        ("/mcp/%09", Refuse(400)),
        ("/mcp/%7f", Refuse(400)),
        ("/mcp/%1b", Refuse(400)),
        ("/mcp/%ff", Refuse(400)),
        ("/mcp/%c0%af", Refuse(400)),
        ("/mcp/%e0%80%ae", Refuse(400)),
        ("/mcp/%zz", Refuse(400)),
        ("/mcp/%2", Refuse(400)),
        ("/mcp/%", Refuse(400)),
        ("/%61dmin%2fmcp", Refuse(400)),
        ("/%2e%2e/admin/mcp", Refuse(400)),
        ("/%2fadmin/mcp", Refuse(400)),
        ("/ADMIN/MCP", Refuse(403)),
        ("/Mcp", Forward("/Mcp")),
        ("/mcpx", Refuse(404)),
        ("/mcp.json", Refuse(404)),
        ("/admin/mcpx", Refuse(404)),
        ("/admin", Refuse(404)),
        ("/admin/%6dcp", Refuse(403)),
        ("/admin/mcp/x", Refuse(403)),
        // Accepted: the upstream sees exactly the normalized path that was authorized.
        ("/mcp", Forward("/mcp")),
        ("/mcp/", Forward("/mcp/")),
        ("/mcp/tools", Forward("/mcp/tools")),
        ("/m%63p", Forward("/mcp")),
        ("/%6D%63%70/x", Forward("/mcp/x")),
        ("/mcp/%7euser", Forward("/mcp/~user")),
        ("/mcp/a%2Db", Forward("/mcp/a-b")),
        ("/mcp/a%3Fb", Forward("/mcp/a%3Fb")),
        ("/mcp/a%23b", Forward("/mcp/a%23b")),
        ("/mcp/a%20b", Forward("/mcp/a%20b")),
        ("/mcp/%e2%82%ac", Forward("/mcp/%E2%82%AC")),
        ("/mcp/a%25b", Forward("/mcp/a%25b")),
        // `%25` is not decoded: the segment is the literal `%2e%2e`, not a dot-segment.
        (
            "/mcp/%252e%252e/admin/mcp",
            Forward("/mcp/%252e%252e/admin/mcp"),
        ),
        // A segment ending in `.` (the README's `/admin.` rule).
        ("/mcp/...", Refuse(400)),
    ];
    check_paths(&env, &t, &cases).await;
}

#[tokio::test]
async fn c7_4_admin_token_sees_same_normalization() {
    let env = Env::standard().await;
    let t = env
        .tok()
        .c("aud", json!([R, R_ADMIN]))
        .scope("mcp:read admin")
        .build();
    use Expect::*;
    let cases = [
        ("/%61dmin/mcp", Forward("/admin/mcp")),
        ("/admin/mcp/", Forward("/admin/mcp/")),
        ("/admin/%6dcp/x", Forward("/admin/mcp/x")),
        ("/admin/mcp/../../mcp", Refuse(400)),
        ("/admin/mcp/%2e%2e/%2e%2e/mcp", Refuse(400)),
        ("//admin/mcp", Refuse(400)),
    ];
    check_paths(&env, &t, &cases).await;
}

#[tokio::test]
async fn c7_4_query_is_forwarded_unchanged() {
    let env = Env::standard().await;
    let t = env.tok().build();
    let r = env
        .send(Req::get("/mcp/x?a=1&b=%2F..%2F&c=a+b&d=%zz").bearer(&t))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let u = env.up.only();
    assert_eq!(u.path(), "/mcp/x");
    assert_eq!(u.query(), Some("a=1&b=%2F..%2F&c=a+b&d=%zz"));
}

#[tokio::test]
async fn c7_5_unauthenticated_prefix_escape_never_reaches_upstream() {
    let env = Env::standard().await;
    let targets = [
        "/.well-known/oauth-protected-resource/../../mcp",
        "/.well-known/oauth-protected-resource/..%2f..%2fmcp",
        "/.well-known/oauth-protected-resource/..%2F..%2Fmcp",
        "/.well-known/oauth-protected-resource/%2e%2e/%2e%2e/mcp",
        "/.well-known/oauth-protected-resource/mcp/../../../admin/mcp",
        "/.well-known/oauth-protected-resource/mcp/%2e%2e/%2e%2e/%2e%2e/mcp",
        "/.well-known/../mcp",
        "/.well-known/%2e%2e/mcp",
        "/.well-known/oauth-protected-resource%2f..%2f..%2fmcp",
        "/.well-known/oauth-protected-resource/..\\..\\mcp",
        "/.well-known/oauth-protected-resource/mcp;/../../mcp",
        "/open/../mcp",
        "/open/%2e%2e/mcp",
        "/open%2f..%2fmcp",
        "/open/..%2fadmin/mcp",
    ];
    for target in targets {
        for method in ["GET", "POST"] {
            let r = env
                .send(Req::new(method, target).body(b"{}".to_vec()))
                .await;
            assert_eq!(r.status, 400, "{method} {target}: {r}");
            assert_json_error(&r, Some("invalid_request"));
        }
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn routing_matches_whole_segments_and_longest_prefix() {
    let tpl = STANDARD.to_string() + &route("special", "/mcp/special", &["scopes: [special]"]);
    let env = Env::start(&tpl).await;
    let t = env.tok().build();
    // /mcp/special/x belongs to the longer prefix (needs `special`).
    let r = env.send(Req::get("/mcp/special/x")).await;
    assert_401_no_error(
        &r,
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/special",
        Some("special"),
    );
    // /mcp/specialx is still /mcp.
    let r = env.send(Req::get("/mcp/specialx").bearer(&t)).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.up.only().target, "/mcp/specialx");
    env.up.clear();
    // No route at all: 404 JSON, also with a good token.
    for target in ["/", "/mcpx", "/other", "/favicon.ico"] {
        let r = env.send(Req::get(target).bearer(&t)).await;
        assert_eq!(r.status, 404, "{target}: {r}");
        assert_json_error(&r, None);
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn routing_virtual_host_is_case_insensitive_and_ignores_port() {
    let tpl = STANDARD.to_string() + &route("vh", "/vh", &["host: vh.example.com", "auth: none"]);
    let env = Env::start(&tpl).await;
    for host in [
        "vh.example.com",
        "VH.Example.COM",
        "vh.example.com:443",
        "vh.example.com:8080",
    ] {
        let r = env.send(Req::get("/vh/x").host(host)).await;
        assert_eq!(r.status, 200, "Host {host}: {r}");
    }
    assert_eq!(env.up.count(), 4);
    env.up.clear();
    for host in [
        "other.example.com",
        "vh.example.com.evil",
        "evil-vh.example.com",
    ] {
        let r = env.send(Req::get("/vh/x").host(host)).await;
        assert_eq!(r.status, 404, "Host {host}: {r}");
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn routing_rewrite_prefix() {
    let tpl = STANDARD.to_string()
        + &route("rw", "/rw", &["rewrite_prefix: /v1", "auth: none"])
        + &route("rwroot", "/rr", &["rewrite_prefix: /", "auth: none"]);
    let env = Env::start(&tpl).await;
    for (target, want) in [
        ("/rw/tools?a=1", "/v1/tools?a=1"),
        ("/rw", "/v1"),
        ("/rw/", "/v1/"),
        ("/r%77/x", "/v1/x"),
        ("/rr/x/y", "/x/y"),
        ("/rr", "/"),
        ("/rr/", "/"),
    ] {
        env.up.clear();
        let r = env.send(Req::get(target)).await;
        assert_eq!(r.status, 200, "{target}: {r}");
        assert_eq!(env.up.only().target, want, "{target}");
    }
    env.up.clear();
    let r = env.send(Req::get("/rw/../admin/mcp")).await;
    assert_eq!(r.status, 400, "{r}");
    let r = env.send(Req::get("/rwx")).await;
    assert_eq!(r.status, 404, "{r}");
    env.assert_nothing_forwarded();
}
