//! MCP-aware authorization (issue 6): tool/resource/prompt scopes decided before the upstream
//! sees anything, step-up challenges, `default_tool_policy: deny`, malformed bodies and batches,
//! the 2026-07-28 mirrored headers, the inspection limit, byte-identical forwarding,
//! `tools/list` filtering (JSON and SSE), `Origin`, `Mcp-Session-Id` binding, and streams closed
//! when their token expires. SPEC-CHECKLIST §1.11–1.16.
//!
//! Every refusal is checked to have opened no upstream connection and sent no request
//! ([`McpEnv::refused`]).

use std::ops::Deref;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::*;

const R_STRICT: &str = "https://mcp.example.com/strict";
const R_PLAIN: &str = "https://mcp.example.com/plain";

/// The upstream's `tools/list` answer.
const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_file","inputSchema":{"type":"object"}},{"name":"read_secrets"},{"name":"delete_repo"},{"name":"search"},{"name":"safe_echo"}],"nextCursor":"page-2"}}"#;

/// The upstream's answer to anything else: odd spacing and a `tools` array that a filter must
/// not touch, since this is not a `tools/list` response.
const OTHER: &[u8] = b"{\"jsonrpc\":\"2.0\",  \"id\":7 ,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"caf\\u00e9 \xe2\x9c\x93\"}],\"tools\":[{\"name\":\"delete_repo\"}]}}\n";

/// Answers according to the `X-Test-Reply` header the test sends (the gateway forwards it).
fn mcp_upstream() -> Upstream {
    Upstream::with(|req: &Request| {
        match req.header("x-test-reply") {
        Some("tools-json") => Reply::json_bytes(TOOLS.as_bytes()),
        // Compressed when the request allows it (as most HTTP servers do).
        Some("tools-gzip") => {
            let gzip = req
                .header("accept-encoding")
                .is_some_and(|v| v.contains("gzip"));
            let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
            if gzip {
                headers.push(("Content-Encoding".into(), "gzip".into()));
            }
            Reply::Full {
                status: 200,
                headers,
                body: if gzip {
                    gzip_stored(TOOLS.as_bytes())
                } else {
                    TOOLS.as_bytes().to_vec()
                },
            }
        }
        // CRLF line endings (allowed by the SSE format), a notification before the result.
        Some("tools-sse-crlf") => Reply::sse(
            vec![
                b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"x\"}}\r\n\r\n".to_vec(),
                format!("event: message\r\ndata: {TOOLS}\r\n\r\n").into_bytes(),
            ],
            Duration::from_millis(20),
        ),
        // The upstream sends one event, then nothing for 8 s, then another.
        Some("idle") => Reply::sse(
            vec![
                b"event: message\ndata: {\"first\":true}\n\n".to_vec(),
                b"event: message\ndata: {\"late\":true}\n\n".to_vec(),
            ],
            Duration::from_secs(8),
        ),
        Some("tools-sse") => Reply::sse(
            vec![
                b": warming up\n\n".to_vec(),
                format!("event: message\nid: 42\ndata: {TOOLS}\n\n").into_bytes(),
            ],
            Duration::from_millis(50),
        ),
        Some("other-sse") => Reply::sse(
            vec![
                b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
                    .to_vec(),
                [b"event: message\ndata: ".as_slice(), OTHER, b"\n"].concat(),
            ],
            Duration::from_millis(50),
        ),
        Some("session") => Reply::Full {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                (
                    "Mcp-Session-Id".into(),
                    req.header("x-test-session").unwrap_or("s").to_string(),
                ),
            ],
            body: br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25"}}"#.to_vec(),
        },
        Some(t) if t.starts_with("ticks:") => {
            let n: usize = t[6..].parse().unwrap_or(1);
            Reply::sse(
                (0..n)
                    .map(|i| format!("event: message\nid: {i}\ndata: {{\"tick\":{i}}}\n\n").into_bytes())
                    .collect(),
                Duration::from_millis(500),
            )
        }
        _ => Reply::json_bytes(OTHER),
    }
    })
}

/// The [`MCP`] fixture in front of [`mcp_upstream`], with the requests and checks of these
/// tests. Every refusal is checked to have opened no upstream connection and sent no request.
struct McpEnv(Env);

impl Deref for McpEnv {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.0
    }
}

impl McpEnv {
    async fn start() -> McpEnv {
        McpEnv::start_skew(60).await
    }

    async fn start_skew(skew: u64) -> McpEnv {
        let env = Env::builder(MCP)
            .upstream(mcp_upstream())
            .var("SKEW", skew)
            .start()
            .await;
        McpEnv(env)
    }

    /// A token for all three routes with `scope`.
    fn tok(&self, scope: &str) -> String {
        self.tok_for("alice", scope)
    }

    fn tok_for(&self, sub: &str, scope: &str) -> String {
        Tok::new(&self.idp.issuer(), R)
            .c("aud", json!([R, R_STRICT, R_PLAIN]))
            .c("sub", json!(sub))
            .scope(scope)
            .build()
    }

    async fn post(&self, path: &str, token: &str, body: &[u8], headers: &[(&str, &str)]) -> Resp {
        let mut req = Req::new("POST", path)
            .bearer(token)
            .h("Content-Type", "application/json")
            .h("Accept", "application/json, text/event-stream");
        for (n, v) in headers {
            req = req.h(n, v);
        }
        send(self.gw.addr(), &req.body(body.to_vec())).await
    }

    /// Sends, expects the upstream to have received exactly `body`, and returns the response.
    async fn allowed(
        &self,
        path: &str,
        token: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Resp {
        let before = self.up.count();
        let r = self.post(path, token, body, headers).await;
        assert_eq!(r.status, 200, "expected the request to be forwarded: {r}");
        assert_eq!(self.up.count(), before + 1, "upstream request count");
        let got = self.up.last();
        assert_eq!(
            got.body,
            body,
            "the upstream must receive the body byte for byte; got {:?}",
            String::from_utf8_lossy(&got.body)
        );
        r
    }

    /// Sends and expects `status` with no upstream connection and no upstream request.
    async fn refused(
        &self,
        path: &str,
        token: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        status: u16,
    ) -> Resp {
        let (conns, reqs) = (self.up.connections(), self.up.count());
        let r = self.post(path, token, body, headers).await;
        assert_eq!(r.status, status, "{r}");
        self.assert_untouched(conns, reqs);
        r
    }

    fn assert_untouched(&self, conns: usize, reqs: usize) {
        assert_eq!(
            self.up.count(),
            reqs,
            "a refused request reached the upstream: {:#?}",
            self.up.requests().last()
        );
        assert_eq!(
            self.up.connections(),
            conns,
            "a refused request opened an upstream connection"
        );
    }
}

fn call(name: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{{"q":"x"}}}}}}"#)
        .into_bytes()
}

fn read(uri: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":8,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#)
        .into_bytes()
}

fn prompt(name: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":9,"method":"prompts/get","params":{{"name":"{name}"}}}}"#)
        .into_bytes()
}

const TOOLS_LIST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// A JSON-RPC error body with `code` (and the request id when given).
fn assert_jsonrpc_error(r: &Resp, code: i64, id: Value) {
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r}"
    );
    let v = r.json();
    assert_eq!(v["jsonrpc"], "2.0", "{r}");
    assert_eq!(v["error"]["code"], code, "{r}");
    assert!(v["error"]["message"].is_string(), "{r}");
    assert_eq!(v["id"], id, "{r}");
}

/// CRC-32 (IEEE), bitwise.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A gzip member holding `data` in one stored (uncompressed) deflate block, so the test can
/// read it back without a decompressor: the payload sits verbatim at offset 15.
pub(crate) fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    out
}

fn names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no result.tools in {v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tool, resource and prompt policy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tools_call_allowed_and_denied_by_glob_first_match_wins() {
    let env = McpEnv::start().await;
    let reader = env.tok("mcp:read repo:read");
    // `read_*` needs repo:read; the catch-all needs nothing beyond the route scope.
    env.allowed("/mcp", &reader, &call("read_file"), &[]).await;
    env.allowed("/mcp", &reader, &call("search"), &[]).await;
    // `read_secrets` also matches `read_*`, but `read_secret*` comes first and wins.
    let r = env
        .refused("/mcp", &reader, &call("read_secrets"), &[], 403)
        .await;
    assert_insufficient_scope(&r, "mcp:read secrets:read", PRM);
    // The challenge names every scope of the operation: route + tool, not only the missing one.
    let r = env
        .refused("/mcp", &reader, &call("delete_repo"), &[], 403)
        .await;
    assert_insufficient_scope(&r, "mcp:read repo:admin repo:write", PRM);
    let half = env.tok("mcp:read repo:admin");
    let r = env
        .refused("/mcp", &half, &call("delete_repo"), &[], 403)
        .await;
    assert_insufficient_scope(&r, "mcp:read repo:admin repo:write", PRM);
    let admin = env.tok("mcp:read repo:admin repo:write");
    env.allowed("/mcp", &admin, &call("delete_repo"), &[]).await;
    // Tool scope without the route scope: both are named.
    let no_route = env.tok("repo:read");
    let r = env
        .refused("/mcp", &no_route, &call("read_file"), &[], 403)
        .await;
    assert_insufficient_scope(&r, "mcp:read repo:read", PRM);
    // A JSON-escaped name is matched decoded: `delete\u005frepo` is delete_repo.
    let r = env
        .refused(
            "/mcp",
            &reader,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete\u005frepo"}}"#,
            &[],
            403,
        )
        .await;
    assert_insufficient_scope(&r, "mcp:read repo:admin repo:write", PRM);
}

#[tokio::test]
async fn resources_read_and_prompts_get_by_glob() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read");
    let r = env
        .refused("/mcp", &t, &read("file:///secrets/db/password"), &[], 403)
        .await;
    assert_insufficient_scope(&r, "mcp:read secrets:read", PRM);
    env.allowed("/mcp", &t, &read("file:///etc/motd"), &[])
        .await;
    // No pattern matches and the default is allow.
    env.allowed("/mcp", &t, &read("https://example.com/doc"), &[])
        .await;
    let s = env.tok("mcp:read secrets:read");
    env.allowed("/mcp", &s, &read("file:///secrets/db/password"), &[])
        .await;
    // prompts: `"*": []` comes before `"admin_*"`, so the first match lets admin_reset through.
    env.allowed("/mcp", &t, &prompt("admin_reset"), &[]).await;
    env.allowed("/mcp", &t, &prompt("summarize"), &[]).await;
}

#[tokio::test]
async fn step_up_scopes_are_advertised_in_metadata() {
    let env = McpEnv::start().await;
    let r = send(
        env.gw.addr(),
        &Req::get("/.well-known/oauth-protected-resource/mcp"),
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    let supported: Vec<String> = r.json()["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    for s in [
        "mcp:read",
        "repo:read",
        "repo:admin",
        "repo:write",
        "secrets:read",
        "prompts:admin",
    ] {
        assert!(
            supported.iter().any(|x| x == s),
            "a scope a challenge can name must be in scopes_supported: {s} not in {supported:?}"
        );
    }
}

#[tokio::test]
async fn default_tool_policy_deny_refuses_unmatched_operations() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read repo:admin repo:write secrets:read prompts:admin");
    env.allowed("/strict", &t, &call("safe_echo"), &[]).await;
    for body in [
        call("rm_rf"),
        call("read_file"),
        read("file:///etc/motd"),
        prompt("summarize"),
    ] {
        let r = env.refused("/strict", &t, &body, &[], 403).await;
        assert_json_error(&r, Some("access_denied"));
        assert!(
            r.header("www-authenticate").is_none(),
            "no scope can help, so no step-up challenge: {r}"
        );
    }
    // Methods without a name are not policed by the tool policy.
    env.allowed("/strict", &t, TOOLS_LIST, &[]).await;
    env.allowed(
        "/strict",
        &t,
        br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        &[],
    )
    .await;
    env.allowed(
        "/strict",
        &t,
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &[],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Malformed bodies and batches
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_gets_400_jsonrpc_error_and_nothing_forwarded() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    for body in [
        b"{not json".as_slice(),
        b"",
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file"}"#,
        b"42",
        b"\"tools/call\"",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}",
        // Not UTF-8 in members the gateway does not read (fuzz finding mcp_request): an
        // allowed operation, but not the JSON that was judged.
        b"{\"jsonrpc\":\"4\xC9\xC9.0\",\"id\":1,\"method\":\"ping\"}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read_file\",\"x\":\"\xE0\"}}",
        b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"cursor\":\"\xED\xA0\x80\"}}]",
    ] {
        let r = env.refused("/mcp", &t, body, &[], 400).await;
        assert_jsonrpc_error(&r, -32700, Value::Null);
    }
    // Valid JSON that is not a valid request: -32600 with the request's id.
    let r = env
        .refused(
            "/mcp",
            &t,
            br#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{}}"#,
            &[],
            400,
        )
        .await;
    assert_jsonrpc_error(&r, -32600, json!("abc"));
    let r = env.refused("/mcp", &t, b"[]", &[], 400).await;
    assert_eq!(r.json()["error"]["code"], -32600, "{r}");
    // Duplicate members: an upstream parser keeping the last `name` would run delete_repo while
    // the gateway authorized read_file. Must never be forwarded: not a JSON-RPC message.
    let (conns, reqs) = (env.up.connections(), env.up.count());
    let r = env
        .post(
            "/mcp",
            &t,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","name":"delete_repo"}}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert_jsonrpc_error(&r, -32700, Value::Null);
    env.assert_untouched(conns, reqs);
    let r = env
        .post(
            "/mcp",
            &t,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","method":"tools/call","params":{"name":"delete_repo"}}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert_jsonrpc_error(&r, -32700, Value::Null);
    env.assert_untouched(conns, reqs);
}

#[tokio::test]
async fn batch_is_forwarded_only_if_every_element_is_allowed() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    let ok = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}},{"jsonrpc":"2.0","id":2,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
    env.allowed("/mcp", &t, ok, &[]).await;
    let mixed = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_repo"}}]"#;
    let r = env.refused("/mcp", &t, mixed, &[], 403).await;
    // One challenge naming every scope any element needs.
    let c = r.challenge();
    assert_eq!(c.param("error"), Some("insufficient_scope"), "{r}");
    assert_eq!(c.param("resource_metadata"), Some(PRM), "{r}");
    let mut scopes: Vec<&str> = c.param("scope").unwrap().split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(
        scopes,
        ["mcp:read", "repo:admin", "repo:read", "repo:write"],
        "{r}"
    );
    // The denied element last or first makes no difference.
    let mixed2 = br#"[{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///secrets/k"}},{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#;
    env.refused("/mcp", &t, mixed2, &[], 403).await;
    let strict = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe_echo"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"rm"}}]"#;
    env.refused("/strict", &t, strict, &[], 403).await;
    // One malformed element spoils the batch.
    let bad = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}]"#;
    env.refused("/mcp", &t, bad, &[], 400).await;
}

// ---------------------------------------------------------------------------------------------
// 2026-07-28 mirrored headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mirrored_headers_must_match_the_body() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read repo:admin repo:write");
    let delete = call("delete_repo");
    // Header says read_file, body says delete_repo: 400 -32020 even though the token could do both.
    for path in ["/mcp", "/plain"] {
        let r = env
            .refused(
                path,
                &t,
                &delete,
                &[("Mcp-Method", "tools/call"), ("Mcp-Name", "read_file")],
                400,
            )
            .await;
        assert_jsonrpc_error(&r, -32020, json!(7));
        let r = env
            .refused(
                path,
                &t,
                &delete,
                &[("Mcp-Method", "tools/list"), ("Mcp-Name", "delete_repo")],
                400,
            )
            .await;
        assert_jsonrpc_error(&r, -32020, json!(7));
        // Mcp-Method without Mcp-Name on a method that has a name.
        let r = env
            .refused(path, &t, &delete, &[("Mcp-Method", "tools/call")], 400)
            .await;
        assert_jsonrpc_error(&r, -32020, json!(7));
        // Mcp-Name alone, disagreeing.
        let r = env
            .refused(path, &t, &delete, &[("Mcp-Name", "read_file")], 400)
            .await;
        assert_jsonrpc_error(&r, -32020, json!(7));
        // Matching headers: forwarded unchanged, headers included.
        env.allowed(
            path,
            &t,
            &delete,
            &[("Mcp-Method", "tools/call"), ("Mcp-Name", "delete_repo")],
        )
        .await;
        let got = env.up.last();
        assert_eq!(got.header("mcp-name"), Some("delete_repo"), "{got:?}");
    }
    // A resource URI in Mcp-Name.
    env.allowed(
        "/mcp",
        &t,
        &read("file:///etc/motd"),
        &[
            ("Mcp-Method", "resources/read"),
            ("Mcp-Name", "file:///etc/motd"),
        ],
    )
    .await;
    // A batch cannot be described by one method and name.
    let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#;
    let r = env
        .refused("/mcp", &t, batch, &[("Mcp-Method", "tools/list")], 400)
        .await;
    assert_eq!(r.json()["error"]["code"], -32020, "{r}");
}

#[tokio::test]
async fn mirrored_headers_compare_decoded_values() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    // Body name written with a \u escape, header in the base64 sentinel form: both say "café".
    let cafe = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"caf\u00e9"}}"#;
    let sentinel = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("café")
    );
    env.allowed(
        "/mcp",
        &t,
        cafe,
        &[("Mcp-Method", "tools/call"), ("Mcp-Name", &sentinel)],
    )
    .await;
    // The same with the raw UTF-8 name in the body.
    let raw =
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"café\"}}";
    env.allowed(
        "/mcp",
        &t,
        raw.as_bytes(),
        &[("Mcp-Method", "tools/call"), ("Mcp-Name", &sentinel)],
    )
    .await;
    // A sentinel of another value is a mismatch.
    let other = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("cafe")
    );
    let r = env
        .refused(
            "/mcp",
            &t,
            cafe,
            &[("Mcp-Method", "tools/call"), ("Mcp-Name", &other)],
            400,
        )
        .await;
    assert_jsonrpc_error(&r, -32020, json!(7));
    // \u-escaped ASCII in the body against a plain header value: equal once decoded.
    let escaped =
        br#"{"jsonrpc":"2.0","id":7,"method":"tools\/call","params":{"name":"read\u005ffile"}}"#;
    env.allowed(
        "/mcp",
        &t,
        escaped,
        &[("Mcp-Method", "tools/call"), ("Mcp-Name", "read_file")],
    )
    .await;
    // ... and the policy applies to the decoded name too (read_* needs repo:read).
    let no_repo = env.tok("mcp:read");
    let r = env
        .refused(
            "/mcp",
            &no_repo,
            escaped,
            &[("Mcp-Method", "tools/call"), ("Mcp-Name", "read_file")],
            403,
        )
        .await;
    assert_insufficient_scope(&r, "mcp:read repo:read", PRM);
}

#[tokio::test]
async fn protocol_2026_07_28_requires_mirrored_headers() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    let body = call("read_file");
    for path in ["/mcp", "/plain"] {
        let r = env
            .refused(
                path,
                &t,
                &body,
                &[("MCP-Protocol-Version", "2026-07-28")],
                400,
            )
            .await;
        assert_jsonrpc_error(&r, -32020, json!(7));
        // Mcp-Method alone is not enough for a named method.
        let r = env
            .refused(
                path,
                &t,
                &body,
                &[
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", "tools/call"),
                ],
                400,
            )
            .await;
        assert_jsonrpc_error(&r, -32020, json!(7));
        env.allowed(
            path,
            &t,
            &body,
            &[
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "read_file"),
            ],
        )
        .await;
        assert_eq!(
            env.up.last().header("mcp-protocol-version"),
            Some("2026-07-28"),
            "MCP-Protocol-Version is forwarded unchanged"
        );
        // tools/list has no name: Mcp-Method suffices.
        env.allowed(
            path,
            &t,
            TOOLS_LIST,
            &[
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "tools/list"),
            ],
        )
        .await;
        // Older revisions without the headers pass.
        env.allowed(path, &t, &body, &[("MCP-Protocol-Version", "2025-11-25")])
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Body size and byte-identical forwarding
// ---------------------------------------------------------------------------------------------

/// A `tools/call` body of exactly `len` bytes (padding in an argument).
/// A `tools/call` body of exactly `len` bytes (padding in an argument).
pub(crate) fn padded_call(len: usize) -> Vec<u8> {
    let head = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"pad":""#;
    let tail = br#""}}}"#;
    let mut b = head.to_vec();
    b.extend(std::iter::repeat_n(b'a', len - head.len() - tail.len()));
    b.extend_from_slice(tail);
    assert_eq!(b.len(), len);
    b
}

/// An inspected route caps bodies at `limits.max_inspected_body_bytes` (64 KiB in this
/// fixture; the 1 MiB default is `mcp2026::i17_7_...`) and answers 413 above that, before
/// connecting upstream.
#[tokio::test]
async fn inspected_body_over_64_kib_gets_413_and_nothing_forwarded() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    // Up to the limit: forwarded intact (several reads replayed from the buffer).
    env.allowed("/mcp", &t, &padded_call(60 * 1024), &[]).await;
    env.allowed("/mcp", &t, &padded_call(64 * 1024), &[]).await;

    // Declared too large: refused from the head alone (the body is never sent here).
    let (conns, reqs) = (env.up.connections(), env.up.count());
    let head = Req::new("POST", "/mcp")
        .bearer(&t)
        .h("Content-Type", "application/json")
        .h("Content-Length", &(64 * 1024 + 1).to_string());
    let r = send_raw(env.gw.addr(), &head.to_bytes(), false)
        .await
        .unwrap();
    assert_eq!(r.status, 413, "{r}");
    assert_json_error(&r, Some("invalid_request"));
    env.assert_untouched(conns, reqs);

    // Declared and sent. The gateway answers from the head and closes without reading the
    // body, so the client may get a reset while still writing it instead of the 413.
    let big = padded_call(64 * 1024 + 1);
    let req = Req::new("POST", "/mcp")
        .bearer(&t)
        .h("Content-Type", "application/json")
        .body(big.clone());
    match send_to(env.gw.addr(), &req).await {
        Ok(r) => assert_eq!(r.status, 413, "{r}"),
        Err(e) => assert!(
            e.contains("reset") || e.contains("roken pipe") || e.contains("closed"),
            "{e}"
        ),
    }
    env.assert_untouched(conns, reqs);

    // Chunked, so only reading finds out.
    let req = Req::new("POST", "/mcp")
        .bearer(&t)
        .h("Content-Type", "application/json");
    let r = send_chunked(env.gw.addr(), &req, &[&big[..40_000], &big[40_000..]])
        .await
        .unwrap();
    assert_eq!(r.status, 413, "{r}");
    env.assert_untouched(conns, reqs);

    // A route without MCP policy streams bodies: no 64 KiB cap there.
    let huge = padded_call(300 * 1024);
    env.allowed("/plain", &t, &huge, &[]).await;
}

#[tokio::test]
async fn forwarded_body_is_byte_identical() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    // Odd spacing, member order, escapes, raw UTF-8, trailing newline: nothing is re-serialized.
    let body = "  {\"params\" : {\"arguments\":{\"s\":\"a\\\"b\\\\c\\u0000\\n é ✓\",\"n\":1.50e3}, \"name\":\"read_file\"},\n\t\"id\" : \"x-1\", \"method\":\"tools/call\",\"jsonrpc\":\"2.0\" }\r\n";
    env.allowed("/mcp", &t, body.as_bytes(), &[]).await;
    env.allowed("/strict", &t, &call("safe_echo"), &[]).await;

    // Chunked request body, in pieces that split a UTF-8 character and a JSON token.
    let b = body.as_bytes();
    let req = Req::new("POST", "/mcp")
        .bearer(&t)
        .h("Content-Type", "application/json");
    let cut = body.find('é').unwrap() + 1;
    let r = send_chunked(env.gw.addr(), &req, &[&b[..10], &b[10..cut], &b[cut..]])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.up.last().body, b, "chunked body forwarded intact");
}

#[tokio::test]
async fn expect_100_continue_is_answered_and_the_body_forwarded_intact() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    let body = padded_call(20 * 1024);
    for path in ["/mcp", "/plain"] {
        let before = env.up.count();
        let req = Req::new("POST", path)
            .bearer(&t)
            .h("Content-Type", "application/json")
            .body(body.clone());
        let (continued, r) = send_expect_continue(env.gw.addr(), &req).await.unwrap();
        assert!(
            continued,
            "{path}: no 100 Continue before the final answer: {r}"
        );
        assert_eq!(r.status, 200, "{path}: {r}");
        assert_eq!(env.up.count(), before + 1);
        assert_eq!(env.up.last().body, body, "{path}: body forwarded intact");
    }
    // A refusal decided from the head comes before any 100 Continue: the body is never sent.
    let (conns, reqs) = (env.up.connections(), env.up.count());
    let req = Req::new("POST", "/mcp")
        .h("Content-Type", "application/json")
        .body(body.clone());
    let (continued, r) = send_expect_continue(env.gw.addr(), &req).await.unwrap();
    assert!(!continued, "100 Continue sent to a request without a token");
    assert_eq!(r.status, 401, "{r}");
    env.assert_untouched(conns, reqs);
    // A denied tool after 100 Continue: 403, nothing forwarded.
    let req = Req::new("POST", "/mcp")
        .bearer(&t)
        .h("Content-Type", "application/json")
        .body(call("delete_repo"));
    let (_, r) = send_expect_continue(env.gw.addr(), &req).await.unwrap();
    assert_eq!(r.status, 403, "{r}");
    env.assert_untouched(conns, reqs);
}

// ---------------------------------------------------------------------------------------------
// tools/list filtering
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tools_list_json_response_is_filtered() {
    let env = McpEnv::start().await;
    let reader = env.tok("mcp:read repo:read");
    let r = env
        .allowed(
            "/mcp",
            &reader,
            TOOLS_LIST,
            &[("X-Test-Reply", "tools-json")],
        )
        .await;
    let v = r.json();
    assert_eq!(names(&v), ["read_file", "search", "safe_echo"], "{r}");
    assert_eq!(
        v["result"]["nextCursor"], "page-2",
        "other members kept: {r}"
    );
    assert_eq!(v["id"], 1, "{r}");
    assert_eq!(
        v["result"]["tools"][0]["inputSchema"],
        json!({"type": "object"}),
        "tool definitions kept whole: {r}"
    );
    let all = env.tok("mcp:read repo:read repo:admin repo:write secrets:read");
    let r = env
        .allowed("/mcp", &all, TOOLS_LIST, &[("X-Test-Reply", "tools-json")])
        .await;
    assert_eq!(
        names(&r.json()),
        [
            "read_file",
            "read_secrets",
            "delete_repo",
            "search",
            "safe_echo"
        ]
    );
    // default_tool_policy: deny hides whatever no pattern matches.
    let r = env
        .allowed(
            "/strict",
            &all,
            TOOLS_LIST,
            &[("X-Test-Reply", "tools-json")],
        )
        .await;
    assert_eq!(names(&r.json()), ["safe_echo"], "{r}");
}

#[tokio::test]
async fn tools_list_sse_response_is_filtered() {
    let env = McpEnv::start().await;
    let reader = env.tok("mcp:read repo:read");
    let r = env
        .allowed(
            "/mcp",
            &reader,
            TOOLS_LIST,
            &[("X-Test-Reply", "tools-sse")],
        )
        .await;
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{r}"
    );
    let text = r.text();
    assert!(
        text.starts_with(": warming up\n\nevent: message\nid: 42\ndata: "),
        "event framing kept: {text:?}"
    );
    assert!(text.ends_with("\n\n"), "event terminated: {text:?}");
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect::<Vec<_>>();
    assert_eq!(data.len(), 1, "{text:?}");
    let v: Value = serde_json::from_str(data[0]).unwrap();
    assert_eq!(names(&v), ["read_file", "search", "safe_echo"], "{text}");
    assert_eq!(v["result"]["nextCursor"], "page-2");
}

/// The filter must fail closed: a `tools/list` answer it cannot read (compressed because the
/// client allowed it) must not reach the caller with the tools it could not call.
#[tokio::test]
async fn tools_list_filter_is_not_bypassed_by_content_encoding() {
    let env = McpEnv::start().await;
    let reader = env.tok("mcp:read repo:read");
    let r = env
        .allowed(
            "/mcp",
            &reader,
            TOOLS_LIST,
            &[("X-Test-Reply", "tools-gzip"), ("Accept-Encoding", "gzip")],
        )
        .await;
    let plain = if r.header("content-encoding") == Some("gzip") {
        r.body[15..r.body.len() - 8].to_vec()
    } else {
        r.body.clone()
    };
    let text = String::from_utf8_lossy(&plain);
    assert!(
        !text.contains("delete_repo") && !text.contains("read_secrets"),
        "tools the caller cannot call were listed: {text}"
    );
}

/// SSE lines may end in CRLF; a notification event before the result must not make the filter
/// give up.
#[tokio::test]
async fn tools_list_sse_with_crlf_and_two_events_is_filtered() {
    let env = McpEnv::start().await;
    let reader = env.tok("mcp:read repo:read");
    let r = env
        .allowed(
            "/mcp",
            &reader,
            TOOLS_LIST,
            &[("X-Test-Reply", "tools-sse-crlf")],
        )
        .await;
    let text = r.text();
    assert!(
        text.contains("\"read_file\"") && text.contains("notifications/message"),
        "{text:?}"
    );
    assert!(
        !text.contains("delete_repo") && !text.contains("read_secrets"),
        "tools the caller cannot call were listed: {text:?}"
    );
}

#[tokio::test]
async fn non_tools_list_responses_pass_unchanged() {
    let env = McpEnv::start().await;
    let reader = env.tok("mcp:read repo:read");
    // A tools/call answer that contains a `tools` array: not filtered, not re-serialized.
    let r = env.allowed("/mcp", &reader, &call("read_file"), &[]).await;
    assert_eq!(r.body, OTHER, "{r}");
    let r = env
        .allowed(
            "/mcp",
            &reader,
            &call("read_file"),
            &[("X-Test-Reply", "other-sse")],
        )
        .await;
    let expected = [
        b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
            .as_slice(),
        b"event: message\ndata: ",
        OTHER,
        b"\n",
    ]
    .concat();
    assert_eq!(r.body, expected, "{r}");
    // The answer to tools/list on a route without filtering is untouched too.
    let r = env
        .allowed(
            "/plain",
            &reader,
            TOOLS_LIST,
            &[("X-Test-Reply", "tools-json")],
        )
        .await;
    assert_eq!(r.body, TOOLS.as_bytes(), "{r}");
}

// ---------------------------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn origin_allow_list() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    let body = call("read_file");
    for origin in [
        "https://evil.example",
        "null",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "https://mcp.example.com", // the public origin is not on this route's explicit list
    ] {
        let r = env
            .refused("/mcp", &t, &body, &[("Origin", origin)], 403)
            .await;
        assert_json_error(&r, Some("access_denied"));
    }
    // Checked before the token: a bad Origin without a token is still 403.
    let (conns, reqs) = (env.up.connections(), env.up.count());
    let r = send(
        env.gw.addr(),
        &Req::post("/mcp").h("Origin", "https://evil.example"),
    )
    .await;
    assert_eq!(r.status, 403, "{r}");
    env.assert_untouched(conns, reqs);

    env.allowed("/mcp", &t, &body, &[("Origin", "https://app.example.com")])
        .await;
    env.allowed("/mcp", &t, &body, &[]).await;
    // A route without allowed_origins accepts the gateway's own public origin only.
    env.allowed(
        "/plain",
        &t,
        &body,
        &[("Origin", "https://mcp.example.com")],
    )
    .await;
    env.allowed("/plain", &t, &body, &[]).await;
    env.refused(
        "/plain",
        &t,
        &body,
        &[("Origin", "https://app.example.com")],
        403,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn session_id_is_bound_to_the_subject_that_opened_it() {
    let env = McpEnv::start().await;
    let alice = env.tok_for("alice", "mcp:read");
    let bob = env.tok_for("bob", "mcp:read");
    let sid = format!("sess-{}", random_hex(8));
    let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let r = env
        .allowed(
            "/mcp",
            &alice,
            init,
            &[("X-Test-Reply", "session"), ("X-Test-Session", &sid)],
        )
        .await;
    assert_eq!(r.header("mcp-session-id"), Some(sid.as_str()), "{r}");

    // Bob presenting alice's session: 404 as for an unknown session, never forwarded.
    let r = env
        .refused("/mcp", &bob, TOOLS_LIST, &[("Mcp-Session-Id", &sid)], 404)
        .await;
    assert_json_error(&r, None);
    let (conns, reqs) = (env.up.connections(), env.up.count());
    for method in ["GET", "DELETE"] {
        let r = send(
            env.gw.addr(),
            &Req::new(method, "/mcp")
                .bearer(&bob)
                .h("Mcp-Session-Id", &sid),
        )
        .await;
        assert_eq!(r.status, 404, "{method}: {r}");
    }
    env.assert_untouched(conns, reqs);

    // Alice keeps using it.
    env.allowed("/mcp", &alice, TOOLS_LIST, &[("Mcp-Session-Id", &sid)])
        .await;
    assert_eq!(env.up.last().header("mcp-session-id"), Some(sid.as_str()));
    // Alice with another token (same issuer and subject) too.
    let alice2 = env.tok_for("alice", "mcp:read repo:read");
    env.allowed("/mcp", &alice2, TOOLS_LIST, &[("Mcp-Session-Id", &sid)])
        .await;
    // A session is never a substitute for a token.
    let (conns, reqs) = (env.up.connections(), env.up.count());
    let r = send(env.gw.addr(), &Req::post("/mcp").h("Mcp-Session-Id", &sid)).await;
    assert_401_no_error(&r, PRM, Some("mcp:read"));
    env.assert_untouched(conns, reqs);
    // A session id the upstream never issued is the upstream's business.
    env.allowed(
        "/mcp",
        &bob,
        TOOLS_LIST,
        &[("Mcp-Session-Id", "never-issued")],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Token expiry on streams
// ---------------------------------------------------------------------------------------------

fn streams_closed(ex: &Exposition) -> f64 {
    ex.value(
        "mcpgate_streams_closed_token_expired_total",
        &[("route", "mcp")],
    )
}

/// `clock_skew_seconds: 0`, a token expiring in 3 s, an upstream SSE stream with an event every
/// 500 ms for 10 s: the client's stream must end shortly after `exp`, with no event the upstream
/// wrote after that, and the metric must count it.
#[tokio::test]
async fn stream_is_closed_when_its_token_expires() {
    let env = McpEnv::start_skew(0).await;
    let before = streams_closed(&env.metrics().await);
    let exp = now() + 3;
    let t = mint(
        Tok::new(&env.idp.issuer(), R)
            .c("aud", json!([R, R_STRICT, R_PLAIN]))
            .c("exp", json!(exp))
            .scope("mcp:read"),
    );
    let started = Instant::now();
    let exp_at = instant_of_unix(exp);
    let req = Req::new("POST", "/mcp")
        .bearer(&t)
        .h("Content-Type", "application/json")
        .h("Accept", "text/event-stream")
        .h("X-Test-Reply", "ticks:20")
        // Any answer: on this route it is filtered event by event, and still streams.
        .body(call("search"));
    let mut s = Stream::open(env.gw.addr(), &req).await.unwrap();
    assert_eq!(s.status, 200);
    let pieces = s.collect(Duration::from_secs(15)).await.unwrap();
    let ended = Instant::now();
    let got: String = pieces
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).to_string())
        .collect();
    let ticks = got.matches("data: {\"tick\"").count();
    assert!(ticks >= 2, "events before exp must flow: {got:?}");
    assert!(
        ticks < 20,
        "the stream outlived its token: all 20 events arrived"
    );
    assert_ne!(
        s.clean_end,
        Some(true),
        "a stream cut for expiry must not look complete to the client"
    );
    // `exp` has one-second resolution and the check runs when an event passes: the stream ends
    // within ~1.5 s after exp.
    let late = ended.saturating_duration_since(exp_at);
    assert!(
        ended < exp_at + Duration::from_millis(2500),
        "stream ended {late:?} after exp"
    );
    // Nothing the upstream wrote after exp (+1 s of clock resolution) reached the client.
    let last_piece = pieces.last().map(|(at, _)| *at).unwrap_or(started);
    assert!(
        last_piece < exp_at + Duration::from_millis(1600),
        "an event arrived {:?} after exp",
        last_piece.saturating_duration_since(exp_at)
    );
    let after = streams_closed(&env.metrics().await);
    assert_eq!(
        after,
        before + 1.0,
        "mcpgate_streams_closed_token_expired_total"
    );
    // A stream with a valid token runs to its end.
    let long = env.tok("mcp:read");
    let req = Req::new("POST", "/mcp")
        .bearer(&long)
        .h("Content-Type", "application/json")
        .h("X-Test-Reply", "ticks:3")
        .body(call("search"));
    let mut s = Stream::open(env.gw.addr(), &req).await.unwrap();
    let pieces = s.collect(Duration::from_secs(10)).await.unwrap();
    let all: String = pieces
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).to_string())
        .collect();
    assert_eq!(all.matches("data: {\"tick\"").count(), 3, "{all:?}");
    assert_eq!(s.clean_end, Some(true));
}

/// The issue: "A long-lived SSE / streamable HTTP response is closed by the gateway when the
/// token that opened it expires". An upstream that goes quiet must not keep it open past exp
/// (issue 13: the stream's watchdog closes it).
#[tokio::test]
async fn idle_stream_is_closed_when_its_token_expires() {
    let env = McpEnv::start_skew(0).await;
    let exp = now() + 3;
    let t = mint(
        Tok::new(&env.idp.issuer(), R)
            .c("aud", json!([R, R_STRICT, R_PLAIN]))
            .c("exp", json!(exp))
            .scope("mcp:read"),
    );
    let req = Req::new("POST", "/mcp")
        .bearer(&t)
        .h("Content-Type", "application/json")
        .h("X-Test-Reply", "idle")
        .body(call("search"));
    let mut s = Stream::open(env.gw.addr(), &req).await.unwrap();
    assert_eq!(s.status, 200);
    let _ = s.collect(Duration::from_secs(12)).await.unwrap();
    let late = Instant::now().saturating_duration_since(instant_of_unix(exp));
    assert!(
        late < Duration::from_millis(2500),
        "the stream stayed open {late:?} after its token expired"
    );
}

/// JSON member names are case-sensitive in JSON-RPC, but common upstream parsers are not (Go's
/// encoding/json matches struct fields case-insensitively, last key wins). A body the gateway
/// reads as "no method" (so: a response, not policed) or as calling `search`, while such an
/// upstream reads `tools/call delete_repo` / `rm_rf`, must not be forwarded on an inspected
/// route.
#[tokio::test]
async fn case_variant_members_are_not_forwarded_unpoliced() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read");
    let (conns, reqs) = (env.up.connections(), env.up.count());
    let mut forwarded = Vec::new();
    for (path, body) in [
        (
            "/strict",
            br#"{"jsonrpc":"2.0","id":1,"Method":"tools/call","Params":{"Name":"rm_rf"}}"#.as_slice(),
        ),
        (
            "/mcp",
            br#"{"jsonrpc":"2.0","id":1,"METHOD":"tools/call","params":{"name":"delete_repo"}}"#,
        ),
        (
            "/mcp",
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","Name":"delete_repo"}}"#,
        ),
        (
            "/mcp",
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","Method":"tools/call","params":{"name":"delete_repo"}}"#,
        ),
    ] {
        let r = env.post(path, &t, body, &[]).await;
        if r.status == 200 {
            forwarded.push(format!("{path} {}", String::from_utf8_lossy(body)));
        }
    }
    assert!(forwarded.is_empty(), "forwarded: {forwarded:#?}");
    env.assert_untouched(conns, reqs);
}

/// `Mcp-Method` / `Mcp-Name` exist so that intermediaries can route without reading the body;
/// a second, different copy that the gateway does not compare must not travel upstream.
#[tokio::test]
async fn duplicate_mirrored_headers_are_refused() {
    let env = McpEnv::start().await;
    let t = env.tok("mcp:read repo:read repo:admin repo:write");
    let (conns, reqs) = (env.up.connections(), env.up.count());
    let body = call("read_file");
    for headers in [
        [
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "read_file"),
            ("Mcp-Name", "delete_repo"),
        ],
        [
            ("Mcp-Method", "tools/call"),
            ("Mcp-Method", "tools/list"),
            ("Mcp-Name", "read_file"),
        ],
    ] {
        let r = env.post("/mcp", &t, &body, &headers).await;
        if r.status == 200 {
            let got = env.up.last();
            let names = got.header_all("mcp-name");
            let methods = got.header_all("mcp-method");
            assert!(
                names.len() <= 1 && methods.len() <= 1,
                "duplicate mirrored headers forwarded: {got:?}"
            );
            continue;
        }
        assert_eq!(r.status, 400, "{r}");
        env.assert_untouched(conns, reqs);
    }
}
