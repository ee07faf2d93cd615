//! Fail closed on every response shape (issue 13, item 2 and the stream rule). A route with
//! `filter_tools_list` must never hand the client an unfiltered or truncated tool list, whatever
//! shape the answer takes: a batch answer (to `[tools/list]` or `[ping, tools/list]`, over
//! HTTP/1.1 and HTTP/2), a GET stream resumed with `Last-Event-ID`, a byte order mark,
//! `text/plain`, status 201 or 202, a content-encoded answer, an answer over the 8 MiB buffer,
//! an SSE event over its bound, a JSON body labelled as an event stream. What the gateway cannot
//! read becomes a JSON-RPC error (`-32603`). And a response stream ends when its token expires
//! or is revoked, even while the upstream sends nothing.
//!
//! The upstream here is a small MCP-like server: it answers each JSON-RPC message of the body
//! (`ping`, `tools/list`, anything else), in the shape the `X-Reply` header asks for.

use std::ops::Deref;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::mcp::gzip_stored;

const R_PLAIN: &str = "https://mcp.example.com/plain";
const ADMIN_TOKEN: &str = "failclosed-admin-token-0123456789";

/// The upstream's whole tool list; a caller with `mcp:tools mcp:read` may see only `read_file`.
fn all_tools() -> Value {
    json!([
        {"name": "read_file", "inputSchema": {"type": "object"}},
        {"name": "delete_everything"},
        {"name": "secret_tool"},
    ])
}

const DENIED: [&str; 2] = ["delete_everything", "secret_tool"];

/// The answer to one JSON-RPC message.
fn answer(msg: &Value) -> Value {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    match msg["method"].as_str() {
        Some("tools/list") => {
            json!({"jsonrpc": "2.0", "id": id, "result": {"tools": all_tools(), "nextCursor": "n2"}})
        }
        Some("ping") => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
        _ => json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}}),
    }
}

/// The answer to a body: one message, a batch, or (a GET: no body) the list, replayed.
fn answer_body(body: &[u8]) -> Vec<u8> {
    let v = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(msgs)) => Value::Array(msgs.iter().map(answer).collect()),
        Ok(m) => answer(&m),
        Err(_) => answer(&json!({"id": 1, "method": "tools/list"})),
    };
    serde_json::to_vec(&v).unwrap()
}

/// A `tools/list` answer of about `size` bytes (a long description on a denied tool).
fn big_list(size: usize) -> Vec<u8> {
    let pad = "a".repeat(size);
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
        {"name": "read_file"}, {"name": "delete_everything", "description": pad}
    ]}}))
    .unwrap()
}

/// The whole `tools/list` answer, with `odd` (bytes the gateway cannot read as JSON text)
/// inside a description.
fn odd_list(odd: &[u8]) -> Vec<u8> {
    let list = serde_json::to_vec(&answer(&json!({"id": 1, "method": "tools/list"}))).unwrap();
    let name = b"\"secret_tool\"";
    let at = list.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    [&list[..at], b",\"description\":\"", odd, b"\"", &list[at..]].concat()
}

fn full(status: u16, ct: &str, body: Vec<u8>) -> Reply {
    Reply::Full {
        status,
        headers: vec![("Content-Type".into(), ct.into())],
        body,
    }
}

fn upstream() -> Upstream {
    Upstream::with(|req: &Request| {
        let answer = answer_body(&req.body);
        match req.header("x-reply").unwrap_or("json") {
            "bom" => full(200, "application/json", [b"\xEF\xBB\xBF".as_slice(), &answer].concat()),
            "text" => full(200, "text/plain", answer),
            "201" => full(201, "application/json", answer),
            "202" => full(202, "application/json", answer),
            "dup" => full(
                200,
                "application/json",
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":{}}},"result":{{"content":[]}}}}"#,
                    all_tools()
                )
                .into_bytes(),
            ),
            // Encoded whatever the request allowed (the gateway asks for identity).
            "gzip" => Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Content-Encoding".into(), "gzip".into()),
                ],
                body: gzip_stored(&answer),
            },
            "huge" => full(200, "application/json", big_list(9 << 20)),
            // The same, chunked: its size shows only once the head was sent.
            "huge-chunked" => Reply::Events {
                headers: vec![("Content-Type".into(), "application/json".into())],
                events: big_list(9 << 20).chunks(1 << 20).map(<[u8]>::to_vec).collect(),
                interval: Duration::from_millis(5),
            },
            "sse" => Reply::sse(
                vec![
                    b": replay\n\n".to_vec(),
                    [b"event: message\nid: 7\ndata: ".as_slice(), &answer, b"\n\n"].concat(),
                ],
                Duration::from_millis(20),
            ),
            // A notification and one event over 8 MiB, then silence for 20 s, then a late event.
            "sse-huge" => {
                let first = [
                    b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n".as_slice(),
                    b"event: message\ndata: ",
                    &big_list(9 << 20),
                    b"\n\n",
                ]
                .concat();
                let late = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"late\"}\n\n";
                Reply::sse(vec![first, late.to_vec()], Duration::from_secs(20))
            }
            // The list in an event of another type, with a byte that is not UTF-8 in a
            // description (fuzz finding list_filter): a client decoding with replacement
            // reads the list.
            "sse-other-not-utf8" => Reply::sse(
                vec![[
                    b"event: msseage\ndata: ".as_slice(),
                    &odd_list(b"\xD4"),
                    b"\n\n",
                ]
                .concat()],
                Duration::from_millis(5),
            ),
            // An empty `event` field (the type stays `message`), a lone surrogate in the list.
            "sse-empty-event" => Reply::sse(
                vec![[b"event:\ndata: ".as_slice(), &odd_list(b"\\ud800"), b"\n\n"].concat()],
                Duration::from_millis(5),
            ),
            // An error status with the list and a lone surrogate: JSON to a lenient client.
            "404-surrogate" => full(404, "application/json", odd_list(b"\\ud800")),
            // The JSON answer under an event-stream content type.
            "sse-json" => Reply::sse(vec![answer], Duration::from_millis(5)),
            // One event, then silence for 20 s, then another.
            "idle" => Reply::sse(
                vec![
                    b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"first\"}\n\n".to_vec(),
                    b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"late\"}\n\n".to_vec(),
                ],
                Duration::from_secs(20),
            ),
            _ => full(200, "application/json", answer),
        }
    })
}

/// The [`FAILCLOSED_RESPONSE`] fixture in front of the MCP-like upstream.
struct Env(crate::harness::Env);

impl Deref for Env {
    type Target = crate::harness::Env;
    fn deref(&self) -> &crate::harness::Env {
        &self.0
    }
}

impl Env {
    /// A gateway on plain HTTP/1.1, or (`tls`) on TLS with HTTP/2 and HTTP/1.1.
    async fn start(tls: bool) -> Env {
        let b = crate::harness::Env::builder(FAILCLOSED_RESPONSE)
            .upstream(upstream())
            .admin_token(ADMIN_TOKEN);
        Env(if tls { b.tls() } else { b }.start().await)
    }

    fn tok_with(&self, f: impl FnOnce(Tok) -> Tok) -> String {
        f(Tok::new(&self.idp.issuer(), R)
            .c("aud", json!([R, R_PLAIN]))
            .c("sub", json!("alice"))
            .scope("mcp:tools mcp:read"))
        .build()
    }

    /// A token that may list `read_*` tools only.
    fn reader(&self) -> String {
        self.tok_with(|t| t)
    }

    /// A POST over plain HTTP/1.1.
    async fn post(&self, path: &str, body: &[u8], reply: &str) -> Resp {
        let req = Req::new("POST", path)
            .bearer(&self.reader())
            .h("Content-Type", "application/json")
            .h("Accept", "application/json, text/event-stream")
            .h("X-Reply", reply)
            .body(body.to_vec());
        send(self.gw.addr(), &req).await
    }

    /// A client for the TLS gateway, over HTTP/1.1 (`h1`) or HTTP/2.
    fn client(&self, h1: bool) -> reqwest::Client {
        https_client(self.pki.as_ref().unwrap(), self.gw.addr(), h1)
    }

    async fn admin_revoke(&self, body: Value) -> Resp {
        let req = Req::post("/revocations")
            .host("localhost")
            .bearer(ADMIN_TOKEN)
            .body(serde_json::to_vec(&body).unwrap());
        send(self.gw.admin_addr(), &req).await
    }
}

const TOOLS_LIST: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// No denied tool name anywhere in `text`.
fn assert_no_denied(text: &str) {
    for d in DENIED {
        assert!(!text.contains(d), "{d} reached the client: {text}");
    }
}

/// `v` is a filtered list: `read_file` only, other members kept.
fn assert_filtered(v: &Value) {
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no result.tools in {v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["read_file"], "{v}");
    assert_eq!(v["result"]["nextCursor"], "n2", "{v}");
}

/// `body` is the gateway's JSON-RPC error for an unreadable answer, with `id`.
fn assert_unreadable(body: &[u8], id: Value) -> Value {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(v["id"], id, "{v}");
    assert!(v.get("result").is_none(), "{v}");
    v
}

/// The `data:` payloads of an SSE body, parsed.
fn sse_messages(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| {
            let data: Vec<&str> = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Batches, over HTTP/1.1 and HTTP/2
// ---------------------------------------------------------------------------------------------

async fn batch_over_both(body: &str, list_at: usize) {
    let env = Env::start(true).await;
    for (h1, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let before = env.up.count();
        let r = env
            .client(h1)
            .post(env.url("/mcp"))
            .bearer_auth(env.reader())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200, "{version:?}");
        assert_eq!(env.up.count(), before + 1, "{version:?}: forwarded once");
        let text = r.text().await.unwrap();
        assert_no_denied(&text);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_filtered(&v[list_at]);
        assert_eq!(v[list_at]["id"], 1, "{version:?}: {v}");
    }
}

#[tokio::test]
async fn batch_tools_list_is_filtered_over_http1_and_http2() {
    batch_over_both(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#, 0).await;
}

#[tokio::test]
async fn batch_ping_then_tools_list_is_filtered_over_http1_and_http2() {
    batch_over_both(
        r#"[{"jsonrpc":"2.0","id":0,"method":"ping"},{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
        1,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Streams: a GET stream resumed with Last-Event-ID, a JSON body labelled as a stream
// ---------------------------------------------------------------------------------------------

/// The resumption of a GET stream replays a `tools/list` answer: filtered like a POST answer.
#[tokio::test]
async fn get_stream_with_last_event_id_replaying_a_list_is_filtered() {
    let env = Env::start(true).await;
    for h1 in [true, false] {
        let r = env
            .client(h1)
            .get(env.url("/mcp"))
            .bearer_auth(env.reader())
            .header("accept", "text/event-stream")
            .header("last-event-id", "6")
            .header("x-reply", "sse")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            env.up.last().header("last-event-id"),
            Some("6"),
            "the resumption reached the upstream"
        );
        let text = r.text().await.unwrap();
        assert_no_denied(&text);
        assert!(
            text.starts_with(": replay\n\nevent: message\nid: 7\ndata: {"),
            "{text:?}"
        );
        let msgs = sse_messages(&text);
        assert_eq!(msgs.len(), 1, "{text:?}");
        assert_filtered(&msgs[0]);
    }
}

/// A body that is not the SSE stream its content type says: an error event, then the end.
#[tokio::test]
async fn json_labelled_as_event_stream_is_refused() {
    let env = Env::start(false).await;
    let r = env.post("/mcp", TOOLS_LIST, "sse-json").await;
    assert_eq!(r.status, 200, "{r}");
    let text = r.text();
    assert_no_denied(&text);
    let msgs = sse_messages(&text);
    assert_eq!(msgs.len(), 1, "{text:?}");
    assert_unreadable(&serde_json::to_vec(&msgs[0]).unwrap(), json!(1));
}

/// One SSE event over 8 MiB: the events before it pass, then an error event, and the stream
/// ends at once (the gateway shuts the upstream connection down): nothing of the huge event,
/// nothing after it.
#[tokio::test]
async fn sse_stream_with_a_huge_event_ends_with_an_error_event() {
    let env = Env::start(false).await;
    let before = env
        .metric(
            "mcpgate_upstream_answers_refused_total",
            &[("route", "mcp"), ("reason", "event_too_large")],
        )
        .await;
    let req = Req::new("POST", "/mcp")
        .bearer(&env.reader())
        .h("Content-Type", "application/json")
        .h("X-Reply", "sse-huge")
        .body(TOOLS_LIST.to_vec());
    let mut s = Stream::open(env.gw.addr(), &req).await.unwrap();
    assert_eq!(s.status, 200);
    let started = Instant::now();
    let pieces = s.collect(Duration::from_secs(10)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stream was not ended"
    );
    let text: String = pieces
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).to_string())
        .collect();
    assert!(
        text.len() < 4096,
        "part of the huge event passed: {} bytes",
        text.len()
    );
    assert_no_denied(&text);
    assert!(
        !text.contains("late"),
        "an event after the refusal passed: {text:?}"
    );
    let msgs = sse_messages(&text);
    assert_eq!(msgs.len(), 2, "{text:?}");
    assert_eq!(msgs[0]["method"], "notifications/message");
    assert_unreadable(&serde_json::to_vec(&msgs[1]).unwrap(), json!(1));
    assert_ne!(
        s.clean_end,
        Some(true),
        "the stream was ended by the gateway, not by the upstream"
    );
    let after = env
        .metric(
            "mcpgate_upstream_answers_refused_total",
            &[("route", "mcp"), ("reason", "event_too_large")],
        )
        .await;
    assert_eq!(after, before + 1.0);
}

// ---------------------------------------------------------------------------------------------
// Answers of any status and content type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn text_plain_answer_is_filtered() {
    let env = Env::start(false).await;
    let r = env.post("/mcp", TOOLS_LIST, "text").await;
    assert_eq!(r.status, 200, "{r}");
    assert_no_denied(&r.text());
    assert_filtered(&r.json());
}

#[tokio::test]
async fn status_201_and_202_answers_are_filtered() {
    let env = Env::start(false).await;
    for (reply, status) in [("201", 201), ("202", 202)] {
        let r = env.post("/mcp", TOOLS_LIST, reply).await;
        assert_eq!(r.status, status, "{r}");
        assert_no_denied(&r.text());
        assert_filtered(&r.json());
    }
}

/// A BOM before the JSON: a client that skips it would read an unfiltered list. The head (200)
/// has gone out before the first byte of the body is seen: the body is the JSON-RPC error.
#[tokio::test]
async fn answer_with_bom_is_refused() {
    let env = Env::start(false).await;
    let r = env.post("/mcp", TOOLS_LIST, "bom").await;
    assert_eq!(r.status, 200, "{r}");
    assert_no_denied(&r.text());
    assert_unreadable(&r.body, json!(1));
}

/// A list the gateway cannot read but a client may (fuzz finding list_filter): in an SSE event
/// of another type with a byte that is not UTF-8 (a client decoding with replacement reads the
/// list), in an event whose empty `event` field leaves it a `message`, in a 404 answer with a
/// lone surrogate (JSON to JavaScript's `JSON.parse`). Each is refused, over HTTP/1.1 and
/// HTTP/2: no denied tool reaches the client.
#[tokio::test]
async fn lists_a_client_may_read_but_the_gateway_cannot_are_refused() {
    let env = Env::start(true).await;
    for h1 in [true, false] {
        for (reply, status) in [
            ("sse-other-not-utf8", 200),
            ("sse-empty-event", 200),
            ("404-surrogate", 404),
        ] {
            let r = env
                .client(h1)
                .post(env.url("/mcp"))
                .bearer_auth(env.reader())
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("x-reply", reply)
                .body(TOOLS_LIST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{reply} h1={h1}");
            let sse = status == 200;
            let body = r.bytes().await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert_no_denied(&text);
            if sse {
                let msgs = sse_messages(&text);
                assert_eq!(msgs.len(), 1, "{reply} h1={h1}: {text:?}");
                assert_unreadable(&serde_json::to_vec(&msgs[0]).unwrap(), json!(1));
            } else {
                assert_unreadable(&body, json!(1));
            }
        }
    }
}

/// Two `result` members: a client reading the first would see what the gateway did not judge.
#[tokio::test]
async fn answer_with_a_repeated_result_is_refused() {
    let env = Env::start(false).await;
    let r = env.post("/mcp", TOOLS_LIST, "dup").await;
    assert_no_denied(&r.text());
    assert_unreadable(&r.body, json!(1));
}

/// The gateway asks for identity; an upstream that encodes anyway gets its answer replaced by a
/// 502 JSON-RPC error, never passed through (and never pingora's own page).
#[tokio::test]
async fn encoded_answer_is_refused_with_502() {
    let env = Env::start(false).await;
    let before = env
        .metric(
            "mcpgate_upstream_answers_refused_total",
            &[("route", "mcp"), ("reason", "encoded")],
        )
        .await;
    let r = env.post("/mcp", TOOLS_LIST, "gzip").await;
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r}");
    assert_eq!(r.header("content-encoding"), None, "{r}");
    assert!(
        r.header("server").is_none_or(|s| !s.contains("Pingora")),
        "{r}"
    );
    assert_unreadable(&r.body, json!(1));
    assert!(
        env.up.last().header("accept-encoding").is_none(),
        "the gateway must ask for an unencoded answer"
    );
    let after = env
        .metric(
            "mcpgate_upstream_answers_refused_total",
            &[("route", "mcp"), ("reason", "encoded")],
        )
        .await;
    assert_eq!(after, before + 1.0);
}

/// The same refusals over HTTP/2 and HTTP/1.1 on TLS: the gateway's own 502 JSON-RPC error.
#[tokio::test]
async fn encoded_and_oversized_answers_are_refused_over_http1_and_http2() {
    let env = Env::start(true).await;
    for h1 in [true, false] {
        for reply in ["gzip", "huge"] {
            let r = env
                .client(h1)
                .post(env.url("/mcp"))
                .bearer_auth(env.reader())
                .header("content-type", "application/json")
                .header("x-reply", reply)
                .body(TOOLS_LIST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 502, "{reply} h1={h1}");
            assert!(r.headers().get("content-encoding").is_none());
            let body = r.bytes().await.unwrap();
            assert_unreadable(&body, json!(1));
        }
    }
}

/// Over 8 MiB: the client gets the JSON-RPC error, not an empty 200 nor a truncated list. With a
/// Content-Length the head is still the gateway's to choose (502); a chunked answer shows its size
/// only after the head went out (its status stays, the body is the whole error).
#[tokio::test]
async fn answer_over_the_limit_is_refused_not_an_empty_200() {
    let env = Env::start(false).await;
    let r = env.post("/mcp", TOOLS_LIST, "huge").await;
    assert_eq!(r.status, 502, "{}", r.status);
    assert_unreadable(&r.body, json!(1));
    let r = env.post("/mcp", TOOLS_LIST, "huge-chunked").await;
    assert_eq!(r.status, 200, "{}", r.status);
    assert!(r.body.len() < 4096, "{} bytes", r.body.len());
    assert_no_denied(&r.text());
    assert_unreadable(&r.body, json!(1));
}

// ---------------------------------------------------------------------------------------------
// Idle streams end with their token
// ---------------------------------------------------------------------------------------------

/// Over HTTP/1.1: opens an idle GET stream, returns it after its first event.
async fn open_idle(env: &Env, path: &str, token: &str) -> Stream {
    let req = Req::get(path)
        .bearer(token)
        .h("Accept", "text/event-stream")
        .h("X-Reply", "idle");
    let mut s = Stream::open(env.gw.addr(), &req).await.unwrap();
    assert_eq!(s.status, 200);
    let first = s.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    s
}

/// A token expiring 3 s ahead, a stream that goes quiet after one event: closed within a bound
/// of `exp` (not at the upstream's next event, 20 s later), on a policy route and on a plain
/// one, and counted.
#[tokio::test]
async fn idle_stream_is_closed_at_token_expiry() {
    let env = Env::start(false).await;
    for (path, route) in [("/mcp", "mcp"), ("/plain", "plain")] {
        let labels = [("route", route)];
        let name = "mcpgate_streams_closed_token_expired_total";
        let before = env.metric(name, &labels).await;
        let exp = now() + 3;
        let t = env.tok_with(|t| t.c("exp", json!(exp)));
        let mut s = open_idle(&env, path, &t).await;
        let rest = s.collect(Duration::from_secs(10)).await.unwrap();
        let ended = Instant::now();
        let exp_at = instant_of_unix(exp);
        assert!(
            ended < exp_at + Duration::from_millis(1500),
            "{path}: the stream stayed open {:?} after exp",
            ended.saturating_duration_since(exp_at)
        );
        assert!(
            ended + Duration::from_millis(100) >= exp_at,
            "{path}: closed {:?} before exp",
            exp_at - ended
        );
        assert!(rest.is_empty(), "{path}: {rest:?}");
        assert_ne!(
            s.clean_end,
            Some(true),
            "{path}: a cut stream must not look complete"
        );
        let after = env.metric(name, &labels).await;
        assert_eq!(after, before + 1.0, "{path}: {name}");
    }
}

/// The same over HTTP/2: the stream is reset at exp.
#[tokio::test]
async fn idle_stream_is_closed_at_token_expiry_over_http2() {
    let env = Env::start(true).await;
    let exp = now() + 3;
    let t = env.tok_with(|t| t.c("exp", json!(exp)));
    let mut r = env
        .client(false)
        .get(env.url("/mcp"))
        .bearer_auth(&t)
        .header("x-reply", "idle")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    let next = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("the stream outlived its token by 10 s");
    let ended = Instant::now();
    assert!(next.is_err(), "a cut stream must not end cleanly: {next:?}");
    let exp_at = instant_of_unix(exp);
    assert!(
        ended < exp_at + Duration::from_millis(1500),
        "closed {:?} after exp",
        ended.saturating_duration_since(exp_at)
    );
}

/// Revoked while idle (the local revocation list, applied at once): closed within a bound of the
/// revocation, counted; another stream of another token goes on.
#[tokio::test]
async fn idle_stream_is_closed_at_revocation() {
    let env = Env::start(false).await;
    let name = "mcpgate_streams_closed_token_revoked_total";
    let before = env.metric(name, &[("route", "mcp")]).await;
    let doomed = env.tok_with(|t| t.c("jti", json!("doomed")));
    let other = env.tok_with(|t| t.c("jti", json!("other")));
    let mut s = open_idle(&env, "/mcp", &doomed).await;
    let mut s2 = open_idle(&env, "/mcp", &other).await;
    let r = env.admin_revoke(json!({"jti": "doomed"})).await;
    assert_eq!(r.status, 201, "{r}");
    let revoked_at = Instant::now();
    let rest = s.collect(Duration::from_secs(10)).await.unwrap();
    let took = revoked_at.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "closed {took:?} after the revocation"
    );
    assert!(rest.is_empty(), "{rest:?}");
    assert_ne!(
        s.clean_end,
        Some(true),
        "a cut stream must not look complete"
    );
    let after = env.metric(name, &[("route", "mcp")]).await;
    assert_eq!(after, before + 1.0, "{name}");
    // The other stream is still open (its next event is 20 s away).
    assert!(
        s2.next(Duration::from_millis(500)).await.is_err(),
        "the unrevoked stream was closed too"
    );
}
