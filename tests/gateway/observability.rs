//! Observability (issue 18 items 7 and 8): metrics that show the upstream (failures with
//! their own reasons and kinds, responses by status class and source, time to first byte
//! apart from stream duration, in-flight and open-stream gauges, `process_*`, every series
//! from the start) and an audit line worth reading (request id, who, which MCP operation,
//! client address, user agent), over both log formats.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// `mcpgate_requests_total` of route `mcp`.
fn requests(ex: &Exposition, decision: &str, reason: &str) -> f64 {
    ex.value(
        "mcpgate_requests_total",
        &[("route", "mcp"), ("decision", decision), ("reason", reason)],
    )
}

fn responses(ex: &Exposition, route: &str, source: &str, class: &str) -> f64 {
    ex.value(
        "mcpgate_responses_total",
        &[("route", route), ("source", source), ("class", class)],
    )
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The audit lines of a JSON-format log, as their `fields` objects.
fn json_audit_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "mcpgate::audit")
        .map(|v| v["fields"].clone())
        .collect()
}

/// A route to a dead upstream: the 502 counts as `upstream_error` (not `ok`), as an upstream
/// error of kind `refused`, and as a gateway-written 5xx; the audit line says the same.
#[tokio::test]
async fn dead_upstream_counts_as_upstream_error() {
    let dead = ClosedPort::new();
    let env = Env::builder(STANDARD)
        .var("UP", dead.url())
        .env("RUST_LOG", "info")
        .args(&["--log-format", "json"])
        .start()
        .await;
    let before = env.metrics().await;
    let r = env.post_mcp(&mint(env.tok())).await;
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(r.json()["error"], "bad_gateway", "{r}");
    assert!(r.header("x-request-id").is_some_and(is_generated_id), "{r}");
    eventually(Duration::from_secs(5), "the 502 counted", || async {
        env.metric(
            "mcpgate_requests_total",
            &[
                ("route", "mcp"),
                ("decision", "allow"),
                ("reason", "upstream_error"),
            ],
        )
        .await
            == 1.0
    })
    .await;
    let ex = env.metrics().await;
    assert_eq!(
        requests(&ex, "allow", "ok"),
        requests(&before, "allow", "ok")
    );
    assert_eq!(
        ex.value(
            "mcpgate_upstream_errors_total",
            &[("route", "mcp"), ("kind", "refused")]
        ),
        1.0
    );
    assert_eq!(
        ex.sum("mcpgate_upstream_errors_total", &[("route", "mcp")]),
        1.0
    );
    assert_eq!(responses(&ex, "mcp", "gateway", "5xx"), 1.0);
    assert_eq!(responses(&ex, "mcp", "upstream", "5xx"), 0.0);
    // No upstream answer: neither a first byte nor a duration.
    assert_eq!(
        ex.value("mcpgate_upstream_ttfb_seconds_count", &[("route", "mcp")]),
        0.0
    );
    let logs = env.gw.wait_log("mcpgate::audit", 1).await;
    let lines = json_audit_lines(&logs);
    let f = &lines[0];
    assert_eq!(f["decision"], "allow", "{f}");
    assert_eq!(f["reason"], "upstream_error", "{f}");
    assert_eq!(f["status"], 502, "{f}");
    assert!(
        f["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{f}"
    );
    assert_eq!(f["request_id"], r.header("x-request-id").unwrap(), "{f}");
}

/// An upstream that closes the connection without answering: 502, kind `reset`.
#[tokio::test]
async fn upstream_hangup_counts_as_reset() {
    let env = Env::builder(STANDARD)
        .upstream(Upstream::with(|_| Reply::Hangup))
        .start()
        .await;
    let r = env.post_mcp(&mint(env.tok())).await;
    assert_eq!(r.status, 502, "{r}");
    eventually(
        Duration::from_secs(5),
        "the upstream error counted",
        || async {
            env.metrics()
                .await
                .sum("mcpgate_upstream_errors_total", &[("route", "mcp")])
                == 1.0
        },
    )
    .await;
    let ex = env.metrics().await;
    let kinds: Vec<(String, f64)> = ex
        .samples
        .iter()
        .filter(|s| s.name == "mcpgate_upstream_errors_total" && s.value > 0.0)
        .map(|s| (format!("{:?}", s.labels), s.value))
        .collect();
    assert_eq!(
        ex.value(
            "mcpgate_upstream_errors_total",
            &[("route", "mcp"), ("kind", "reset")]
        ),
        1.0,
        "{kinds:?}"
    );
    assert_eq!(requests(&ex, "allow", "upstream_error"), 1.0);
}

/// A slow upstream: its time to first byte is in `mcpgate_upstream_ttfb_seconds`, and its
/// answer counts as an upstream 2xx.
#[tokio::test]
async fn slow_upstream_time_to_first_byte() {
    let delay = Duration::from_millis(400);
    let env = Env::builder(STANDARD)
        .upstream(Upstream::with(move |_| {
            Reply::Delayed(delay, Box::new(Reply::json(200, &serde_json::json!({}))))
        }))
        .start()
        .await;
    let r = env.post_mcp(&mint(env.tok())).await;
    assert_eq!(r.status, 200, "{r}");
    eventually(Duration::from_secs(5), "the request counted", || async {
        env.metric(
            "mcpgate_requests_total",
            &[("route", "mcp"), ("decision", "allow"), ("reason", "ok")],
        )
        .await
            == 1.0
    })
    .await;
    let ex = env.metrics().await;
    let route = [("route", "mcp")];
    assert_eq!(ex.value("mcpgate_upstream_ttfb_seconds_count", &route), 1.0);
    let ttfb = ex.value("mcpgate_upstream_ttfb_seconds_sum", &route);
    assert!(ttfb >= delay.as_secs_f64() && ttfb < 5.0, "ttfb {ttfb}");
    assert_eq!(ex.value("mcpgate_upstream_seconds_count", &route), 1.0);
    assert_eq!(responses(&ex, "mcp", "upstream", "2xx"), 1.0);
    assert_eq!(responses(&ex, "mcp", "gateway", "2xx"), 0.0);
}

/// An SSE stream: counted in `mcpgate_streams_open` (and in flight) while it lasts, timed in
/// `mcpgate_upstream_stream_seconds` when it ends, and never in `mcpgate_upstream_seconds`.
#[tokio::test]
async fn sse_stream_is_timed_apart_and_gauged() {
    let env = Env::standard().await;
    let ex = env.metrics().await;
    assert_eq!(ex.get("mcpgate_streams_open", &[]), Some(0.0));
    let mut s = Stream::open(
        env.gw.addr(),
        &Req::get("/mcp/sse")
            .bearer(&mint(env.tok()))
            .h("Accept", "text/event-stream"),
    )
    .await
    .unwrap();
    assert_eq!(s.status, 200);
    assert!(s.header("x-request-id").is_some());
    eventually(Duration::from_secs(5), "one stream open", || async {
        env.metric("mcpgate_streams_open", &[]).await == 1.0
    })
    .await;
    assert!(env.metric("mcpgate_requests_in_flight", &[]).await >= 1.0);
    env.up.release();
    s.collect(Duration::from_secs(10)).await.unwrap();
    eventually(Duration::from_secs(5), "the stream timed", || async {
        env.metric("mcpgate_upstream_stream_seconds_count", &[("route", "mcp")])
            .await
            == 1.0
    })
    .await;
    let ex = env.metrics().await;
    assert_eq!(ex.value("mcpgate_streams_open", &[]), 0.0);
    assert_eq!(ex.value("mcpgate_requests_in_flight", &[]), 0.0);
    assert_eq!(
        ex.value("mcpgate_upstream_seconds_count", &[("route", "mcp")]),
        0.0
    );
    assert_eq!(
        ex.value("mcpgate_upstream_ttfb_seconds_count", &[("route", "mcp")]),
        1.0
    );
}

/// Families exposed (at zero) before any event, `process_*` included.
#[tokio::test]
async fn series_present_from_start() {
    let env = Env::standard().await;
    let ex = env.metrics().await;
    for (family, ty) in [
        ("mcpgate_responses_total", "counter"),
        ("mcpgate_upstream_errors_total", "counter"),
        ("mcpgate_upstream_ttfb_seconds", "histogram"),
        ("mcpgate_upstream_stream_seconds", "histogram"),
        ("mcpgate_requests_in_flight", "gauge"),
        ("mcpgate_streams_open", "gauge"),
        ("mcpgate_streams_closed_token_expired_total", "counter"),
        ("mcpgate_streams_closed_token_revoked_total", "counter"),
        ("mcpgate_revocations_applied_total", "counter"),
        ("mcpgate_revocations_active", "gauge"),
        ("mcpgate_config_reloads_total", "counter"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(
            ex.types.get(family).map(String::as_str),
            Some(ty),
            "{family} is not exposed at start"
        );
        assert!(
            ex.samples.iter().any(|s| s.name.starts_with(family)),
            "{family} has no sample at start"
        );
    }
    assert_eq!(
        ex.get(
            "mcpgate_requests_total",
            &[
                ("route", "mcp"),
                ("decision", "allow"),
                ("reason", "upstream_timeout")
            ]
        ),
        Some(0.0)
    );
    assert!(ex.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(ex.value("process_open_fds", &[]) > 0.0);
    let start = ex.value("process_start_time_seconds", &[]);
    assert!((start - now() as f64).abs() < 600.0, "start time {start}");
}

/// A sane client `X-Request-Id` is kept: forwarded upstream and returned.
#[tokio::test]
async fn request_id_accepted_forwarded_returned() {
    let env = Env::standard().await;
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let r = env
        .send(
            Req::post("/mcp")
                .bearer(&mint(env.tok()))
                .h("X-Request-Id", id),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header_all("x-request-id"), [id], "{r}");
    assert_eq!(env.up.last().header_all("x-request-id"), [id]);
}

/// Without one, each request gets its own generated id, forwarded and returned.
#[tokio::test]
async fn request_id_generated() {
    let env = Env::standard().await;
    let tok = mint(env.tok());
    let a = env.post_mcp(&tok).await;
    let forwarded_a = env.up.last();
    let b = env.post_mcp(&tok).await;
    let (ida, idb) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert!(is_generated_id(ida) && is_generated_id(idb), "{ida} {idb}");
    assert_ne!(ida, idb);
    assert_eq!(forwarded_a.header_all("x-request-id"), [ida]);
    assert_eq!(env.up.last().header_all("x-request-id"), [idb]);
}

/// A malformed, oversized or repeated `X-Request-Id` is never echoed nor forwarded: the
/// request gets a generated one instead.
#[tokio::test]
async fn request_id_malformed_is_replaced() {
    let env = Env::standard().await;
    let tok = mint(env.tok());
    let long = "a".repeat(129);
    let cases: Vec<Req> = vec![
        Req::post("/mcp").h("X-Request-Id", "has space"),
        Req::post("/mcp").h("X-Request-Id", "quote\"d"),
        Req::post("/mcp").h("X-Request-Id", &long),
        Req::post("/mcp")
            .h("X-Request-Id", "")
            .h("X-Request-Id", "b"),
        Req::post("/mcp")
            .h("X-Request-Id", "a")
            .h("x-request-id", "b"),
        Req::post("/mcp").h("X-Request-Id", "<script>"),
    ];
    for req in cases {
        let what = format!("{:?}", req.headers);
        let r = env.send(req.bearer(&tok)).await;
        assert_eq!(r.status, 200, "{what}: {r}");
        let ids = r.header_all("x-request-id");
        assert!(ids.len() == 1 && is_generated_id(ids[0]), "{what}: {r}");
        assert_eq!(env.up.last().header_all("x-request-id"), ids, "{what}");
    }
}

/// The gateway's own answers carry the request id too: refusals, metadata, no route, and
/// an HTTP/2 refusal.
#[tokio::test]
async fn request_id_on_the_gateways_own_answers() {
    let env = Env::standard().await;
    let id = "trace-42";
    for req in [
        Req::post("/mcp"),
        Req::post("/mcp").bearer("not-a-jwt"),
        Req::get("/.well-known/oauth-protected-resource/mcp"),
        Req::get("/nowhere"),
    ] {
        let target = req.target.clone();
        let r = env.send(req.h("X-Request-Id", id)).await;
        assert_eq!(r.header_all("x-request-id"), [id], "{target}: {r}");
        let r = env
            .send(Req::get(&target).h("X-Request-Id", "bad id"))
            .await;
        assert!(
            r.header("x-request-id").is_some_and(is_generated_id),
            "{target}: {r}"
        );
    }
    env.assert_nothing_forwarded();
}

/// Audit lines of an allowed request, a refusal after a valid token (tool scope) and a
/// refusal without a token, in the JSON format: who, which operation, request id, client
/// address, user agent, and `reason` as in the metric with a description.
async fn audit_lines(json: bool) -> String {
    let mut b = Env::builder(MCP).var("SKEW", "0").env("RUST_LOG", "info");
    if json {
        b = b.args(&["--log-format", "json"]);
    }
    let env = b.start().await;
    let tok = mint(env.tok());
    let accept = "application/json, text/event-stream";
    let ua = "inspector/1.0 \"q\" \\ é";
    let allow = Req::post("/mcp")
        .bearer(&tok)
        .h("Accept", accept)
        .h("X-Request-Id", "req-allow")
        .h("User-Agent", ua)
        .body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#.to_vec(),
        );
    let deny_scope = Req::post("/mcp")
        .bearer(&tok)
        .h("Accept", accept)
        .h("X-Request-Id", "req-scope")
        .h("User-Agent", "cli/2")
        .body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo"}}"#
                .to_vec(),
        );
    let deny_none = Req::post("/mcp").h("X-Request-Id", "req-none");
    let weak = Req::post("/mcp")
        .bearer(&mint(env.tok().scope("other")))
        .h("Accept", accept)
        .h("X-Request-Id", "req-weak");
    let r = env.send(allow).await;
    let before = env.up.count();
    assert_eq!(before, 1, "the allowed call was not forwarded: {r}");
    assert_eq!(env.send(deny_scope).await.status, 403);
    assert_eq!(env.send(deny_none).await.status, 401);
    assert_eq!(env.send(weak).await.status, 403);
    assert_eq!(env.up.count(), before, "a refusal reached the upstream");
    let logs = env.gw.wait_log("mcpgate::audit", 4).await;
    if json {
        let lines = json_audit_lines(&logs);
        let by_id = |id: &str| {
            lines
                .iter()
                .find(|f| f["request_id"] == id)
                .unwrap_or_else(|| panic!("no audit line for {id}: {logs}"))
                .clone()
        };
        let a = by_id("req-allow");
        assert_eq!(a["decision"], "allow");
        assert_eq!(a["reason"], "ok");
        assert_eq!(a["subject"], "alice");
        assert_eq!(a["client_id"], "client-1");
        assert_eq!(a["issuer"], "as");
        assert_eq!(a["client"], "127.0.0.1");
        assert_eq!(a["user_agent"], ua);
        assert_eq!(a["mcp_method"], "tools/call");
        assert_eq!(a["mcp_name"], "echo");
        let d = by_id("req-scope");
        assert_eq!(d["decision"], "deny");
        assert_eq!(d["reason"], "tool_scope");
        assert!(
            d["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{d}"
        );
        assert_eq!(d["subject"], "alice", "{d}");
        assert_eq!(d["client_id"], "client-1", "{d}");
        assert_eq!(d["issuer"], "as", "{d}");
        assert_eq!(d["mcp_method"], "tools/call", "{d}");
        assert_eq!(d["mcp_name"], "delete_repo", "{d}");
        assert_eq!(d["user_agent"], "cli/2", "{d}");
        assert_eq!(d["client"], "127.0.0.1", "{d}");
        let w = by_id("req-weak");
        assert_eq!(w["reason"], "insufficient_scope", "{w}");
        assert_eq!(w["subject"], "alice", "{w}");
        assert_eq!(w["issuer"], "as", "{w}");
        assert_eq!(w["mcp_method"], "tools/list", "{w}");
        let n = by_id("req-none");
        assert_eq!(n["decision"], "deny");
        assert_eq!(n["reason"], "no_credentials");
        assert!(n.get("subject").is_none(), "{n}");
        assert!(n.get("user_agent").is_none(), "{n}");
        assert_eq!(n["client"], "127.0.0.1");
        // The reason label is the metric's.
        assert_eq!(
            env.metric(
                "mcpgate_requests_total",
                &[
                    ("route", "mcp"),
                    ("decision", "deny"),
                    ("reason", "tool_scope")
                ]
            )
            .await,
            1.0
        );
    }
    logs
}

#[tokio::test]
async fn audit_line_json_names_who_and_what() {
    audit_lines(true).await;
}

/// The pretty format carries the same fields, each value quoted and escaped.
#[tokio::test]
async fn audit_line_pretty_names_who_and_what() {
    let logs = audit_lines(false).await;
    let line = |id: &str| {
        logs.lines()
            .find(|l| l.contains("mcpgate::audit") && l.contains(&format!("request_id=\"{id}\"")))
            .unwrap_or_else(|| panic!("no audit line for {id}: {logs}"))
            .to_string()
    };
    let a = line("req-allow");
    assert!(
        a.contains(r#"user_agent="inspector/1.0 \"q\" \\ é""#),
        "{a}"
    );
    assert!(a.contains(r#"client="127.0.0.1""#), "{a}");
    let d = line("req-scope");
    for want in [
        r#"decision="deny""#,
        r#"reason="tool_scope""#,
        r#"subject="alice""#,
        r#"issuer="as""#,
        r#"client_id="client-1""#,
        r#"mcp_method="tools/call""#,
        r#"mcp_name="delete_repo""#,
        "description=",
    ] {
        assert!(d.contains(want), "{want} missing: {d}");
    }
    let n = line("req-none");
    assert!(
        n.contains(r#"reason="no_credentials""#) && !n.contains("subject="),
        "{n}"
    );
}

/// A config with every optional family: an introspecting issuer, and `state.redis` (on a
/// closed port: the Redis families exist whether or not it answers).
const EVERY_FAMILY: &str = r#"listen:
  address: 127.0.0.1:{PORT}
  public_url: https://mcp.example.com
  threads: 1
admin:
  address: 127.0.0.1:{ADMIN}
state:
  redis:
    url: redis://127.0.0.1:{REDIS}/0
issuers:
  - name: as
    issuer: {IDP}
    jwks_uri: {JWKS}
    introspection:
      endpoint: {IDP}/introspect
      client_id: mcpgate
      client_secret: not-a-secret
routes:
  - name: mcp
    path_prefix: /mcp
    upstream: {UP}
    scopes: [mcp:read]
"#;

/// One row of the README's metric table: name, type, labels, help.
type Family = (String, String, String, String);

/// The README's metric table (between its `metrics-table` markers).
fn readme_families() -> Vec<Family> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- metrics-table -->")
        .expect("README has no metrics-table marker");
    let end = readme
        .find("<!-- /metrics-table -->")
        .expect("README has no /metrics-table marker");
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a metric row has 4 cells: {l}");
            let name = cells[0].trim_matches('`').to_string();
            let labels = cells[2].replace('`', "");
            let help = cells[3].replace("\\|", "|");
            (name, cells[1].to_string(), labels, help)
        })
        .collect()
}

/// The families a fresh gateway exposes (`mcpgate_*` and `process_*`), as README rows.
fn scraped_families(ex: &Exposition) -> Vec<Family> {
    let mut out: Vec<Family> = ex
        .types
        .iter()
        .filter(|(name, _)| name.starts_with("mcpgate_") || name.starts_with("process_"))
        .map(|(name, ty)| {
            let mut labels: Vec<String> = ex
                .samples
                .iter()
                .filter(|s| {
                    s.name == *name
                        || (ty == "histogram"
                            && s.name
                                .strip_prefix(name.as_str())
                                .is_some_and(|r| ["_bucket", "_sum", "_count"].contains(&r)))
                })
                .flat_map(|s| s.labels.iter().map(|(k, _)| k.clone()))
                .filter(|k| k != "le")
                .collect();
            labels.sort();
            labels.dedup();
            let labels = if labels.is_empty() {
                "–".to_string()
            } else {
                labels.join(", ")
            };
            (name.clone(), ty.clone(), labels, ex.help[name].clone())
        })
        .collect();
    out.sort();
    out
}

/// The README's metric table is what a fresh gateway exposes: the same families, types,
/// labels and help texts (on a mismatch the message holds the table to paste).
#[tokio::test]
async fn readme_metric_table_matches_metrics() {
    let redis = ClosedPort::new();
    let env = Env::builder(EVERY_FAMILY)
        .var("REDIS", redis.port())
        .not_ready()
        .start()
        .await;
    let ex = env.metrics().await;
    let scraped = scraped_families(&ex);
    let mut documented = readme_families();
    documented.sort();
    if documented != scraped {
        let table: Vec<String> = scraped
            .iter()
            .map(|(n, t, l, h)| {
                let l = if l == "–" {
                    l.clone()
                } else {
                    l.split(", ")
                        .map(|x| format!("`{x}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("| `{n}` | {t} | {l} | {} |", h.replace('|', "\\|"))
            })
            .collect();
        let names = |v: &[Family]| {
            v.iter()
                .map(|f| f.0.clone())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let (d, s) = (names(&documented), names(&scraped));
        panic!(
            "README metric table differs from /metrics.\nonly in README: {:?}\nonly in /metrics: {:?}\n\
             differing rows: {:?}\nthe table:\n| metric | type | labels | help |\n|---|---|---|---|\n{}",
            d.difference(&s).collect::<Vec<_>>(),
            s.difference(&d).collect::<Vec<_>>(),
            documented.iter().filter(|r| !scraped.contains(r)).collect::<Vec<_>>(),
            table.join("\n")
        );
    }
}

/// Over HTTP/2 too: the id is kept (or replaced when malformed), forwarded and returned, on
/// the upstream's answers and the gateway's own refusals.
#[tokio::test]
async fn request_id_over_http2() {
    let env = Env::builder(STANDARD).tls().start().await;
    let mut send = h2_connect(env.gw.addr(), env.ca()).await;
    let tok = mint(env.tok());
    let req = h2_req("GET", "/mcp")
        .header("authorization", format!("Bearer {tok}"))
        .header("x-request-id", "h2-id")
        .body(())
        .unwrap();
    let r = h2_send(&mut send, req, None).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers.get_all("x-request-id").iter().count(), 1);
    assert_eq!(r.headers["x-request-id"], "h2-id");
    assert_eq!(env.up.last().header_all("x-request-id"), ["h2-id"]);
    let before = env.up.count();
    let req = h2_req("GET", "/mcp")
        .header("x-request-id", "not ok")
        .body(())
        .unwrap();
    let r = h2_send(&mut send, req, None).await.unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert!(is_generated_id(id), "{id}");
    assert_eq!(env.up.count(), before, "a refusal reached the upstream");
}

/// An `https://` upstream that speaks plain HTTP and waits for a request head: the TLS
/// handshake never completes, so the gateway answers 504, counted as `upstream_timeout` (not
/// `ok`) with an upstream error of kind `timeout`.
#[tokio::test]
async fn upstream_timeout_counts_as_upstream_timeout() {
    let up = Upstream::start();
    let env = Env::builder(STANDARD)
        .var("UP", format!("https://127.0.0.1:{}", up.addr().port()))
        .start()
        .await;
    let r = env.post_mcp(&mint(env.tok())).await;
    assert_eq!(r.status, 504, "{r}");
    assert_eq!(r.json()["error"], "gateway_timeout", "{r}");
    eventually(
        Duration::from_secs(5),
        "the upstream error counted",
        || async {
            env.metrics()
                .await
                .sum("mcpgate_upstream_errors_total", &[("route", "mcp")])
                == 1.0
        },
    )
    .await;
    let ex = env.metrics().await;
    let kinds: Vec<String> = ex
        .samples
        .iter()
        .filter(|s| s.name == "mcpgate_upstream_errors_total" && s.value > 0.0)
        .map(|s| format!("{:?}", s.labels))
        .collect();
    assert_eq!(
        ex.value(
            "mcpgate_upstream_errors_total",
            &[("route", "mcp"), ("kind", "timeout")]
        ),
        1.0,
        "{kinds:?}"
    );
    assert_eq!(requests(&ex, "allow", "upstream_timeout"), 1.0);
    assert_eq!(requests(&ex, "allow", "ok"), 0.0);
    assert_eq!(responses(&ex, "mcp", "gateway", "5xx"), 1.0);
}
