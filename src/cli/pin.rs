//! `mcpgate pin --config FILE --route NAME`: ask a route's MCP server for its tools and write
//! the pinned file a route's `pin_tools.file` reads ([`crate::mcp::pins`]).
//!
//! By default it calls the route's upstream directly (its origin and the path the route
//! forwards to), so the list is the server's whole list, unfiltered; `--url` calls another
//! URL instead (the gateway's public URL of the route, say, whose list is filtered for the
//! token given). It speaks MCP as a 2025-11-25 client: `initialize` (keeping an
//! `Mcp-Session-Id`), `notifications/initialized`, then `tools/list` page by page; answers
//! in JSON or SSE. `--token-file` sends `Authorization: Bearer` (an upstream that checks
//! tokens itself, or the gateway); `--header 'Name: value'` adds any other header. An
//! `https://` server is verified against the system roots (`upstream_tls` is not used: for a
//! private CA or mutual TLS, go through the gateway with `--url`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::compile::strip_one_newline;
use crate::config::Config;

/// Deadline of each call to the server.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most `tools/list` pages followed.
const MAX_PAGES: usize = 100;
/// The protocol version `initialize` offers.
const PROTOCOL: &str = "2025-11-25";

/// What `mcpgate pin` was given on its command line.
pub struct Args {
    pub config: PathBuf,
    pub route: String,
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub headers: Vec<String>,
    pub out: Option<PathBuf>,
}

/// The JSON-RPC response with `id` in an answer body (JSON, or SSE `data:` events).
pub fn response_in(content_type: &str, body: &str, id: u64) -> Option<Value> {
    let is_it = |v: &Value| v.get("id").and_then(Value::as_u64) == Some(id);
    if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/event-stream")
    {
        let mut data = String::new();
        for line in body.lines().chain(std::iter::once("")) {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if let Ok(v) = serde_json::from_str::<Value>(&data) {
                    if is_it(&v) {
                        return Some(v);
                    }
                }
                data.clear();
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        return None;
    }
    serde_json::from_str::<Value>(body).ok().filter(is_it)
}

struct Session {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    session: Option<String>,
}

impl Session {
    async fn post(&mut self, msg: Value) -> Result<Option<Value>, String> {
        let id = msg.get("id").and_then(Value::as_u64);
        let mut req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .json(&msg);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        let resp = req.send().await.map_err(|e| format!("{}: {e}", self.url))?;
        let status = resp.status();
        if let Some(s) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.session = Some(s.to_string());
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        if !status.is_success() {
            return Err(format!(
                "{}: HTTP {}: {}",
                self.url,
                status.as_u16(),
                text.trim()
            ));
        }
        let Some(id) = id else { return Ok(None) };
        let v = response_in(&ct, &text, id)
            .ok_or_else(|| format!("{}: no JSON-RPC answer with id {id}", self.url))?;
        if let Some(e) = v.get("error") {
            return Err(format!("{}: JSON-RPC error: {e}", self.url));
        }
        Ok(v.get("result").cloned())
    }
}

/// Fetch the tools of the route's server and render the pinned file.
pub fn run_cli(args: &Args) -> Result<String, String> {
    crate::server::install_crypto_provider();
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let route = config
        .routes
        .iter()
        .find(|r| *r.name == *args.route)
        .ok_or_else(|| format!("the config has no route {:?}", args.route))?;
    let url = args.url.clone().unwrap_or_else(|| route.server.to_string());
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(f) = &args.token_file {
        let raw = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let token = std::str::from_utf8(strip_one_newline(&raw))
            .map_err(|_| format!("{} does not hold a text token", f.display()))?;
        let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| format!("{} does not hold a token", f.display()))?;
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    for h in &args.headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: write 'Name: value'"))?;
        let n = reqwest::header::HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| format!("--header {h:?}: not a header name"))?;
        let v = reqwest::header::HeaderValue::from_str(v.trim())
            .map_err(|_| format!("--header {h:?}: not a header value"))?;
        headers.append(n, v);
    }
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let tools = runtime.block_on(async move {
        let mut s = Session {
            client,
            url,
            headers,
            session: None,
        };
        s.post(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "mcpgate-pin", "version": env!("CARGO_PKG_VERSION")}}}))
            .await?;
        s.post(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        let mut tools: Vec<Map<String, Value>> = Vec::new();
        let mut cursor: Option<Value> = None;
        for page in 0..MAX_PAGES {
            let mut params = serde_json::json!({});
            if let Some(c) = cursor.take() {
                params["cursor"] = c;
            }
            let id = 2 + page as u64;
            let result = s
                .post(serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params}))
                .await?
                .ok_or("tools/list: no result")?;
            let list = result
                .get("tools")
                .and_then(Value::as_array)
                .ok_or("tools/list: the result has no tools array")?;
            for t in list {
                let t = t.as_object().ok_or("tools/list: a tool is not an object")?;
                if t.get("name").and_then(Value::as_str).is_none() {
                    return Err("tools/list: a tool has no string name".to_string());
                }
                tools.push(t.clone());
            }
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => return Ok(tools),
            }
        }
        Err(format!("tools/list: more than {MAX_PAGES} pages"))
    })?;
    crate::mcp::pins::render_file(&args.route, &tools)
}

/// Run `mcpgate pin`: write the file (or print it), exit 1 on any failure.
pub fn run(args: Args) -> std::process::ExitCode {
    let text = match run_cli(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mcpgate pin: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match &args.out {
        None => print!("{text}"),
        Some(p) => {
            if let Err(e) = std::fs::write(p, text) {
                eprintln!("mcpgate pin: cannot write {}: {e}", p.display());
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn answers_in_json_or_sse() {
        let v = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#;
        assert!(response_in("application/json", v, 3).is_some());
        assert!(response_in("application/json", v, 4).is_none());
        let sse = format!(
            "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"x\"}}\n\nevent: message\r\ndata: {v}\r\n\r\n"
        );
        assert_eq!(
            response_in("text/event-stream", &sse, 3).unwrap()["result"],
            serde_json::json!({"tools": []})
        );
    }
}
