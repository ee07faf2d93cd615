//! The demo MCP server of `mcpgate dev`: stateless streamable HTTP with JSON answers, the
//! tools `echo`, `add`, `whoami` (the identity headers the gateway forwarded) and
//! `reset_demo`, which it allows only when the forwarded scopes hold `mcp:admin`.

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use super::web::{empty, json_response, read_body};

/// The demo MCP server: stateless streamable HTTP with JSON responses.
pub struct DemoMcp;

const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

fn tools() -> Value {
    json!([
        {"name": "echo", "description": "Echo the given text.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "add", "description": "Add two numbers.",
         "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
        {"name": "whoami", "description": "Show the identity the gateway forwarded.",
         "inputSchema": {"type": "object", "properties": {}}},
        {"name": "reset_demo", "description": "Admin only: pretend to reset the demo (needs scope mcp:admin).",
         "inputSchema": {"type": "object", "properties": {}}}
    ])
}

fn text_result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

impl DemoMcp {
    fn call_tool(&self, params: &Value, headers: &http::HeaderMap) -> Result<Value, (i64, String)> {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params.get("arguments").cloned().unwrap_or(json!({}));
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        match name {
            "echo" => Ok(text_result(
                args.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                false,
            )),
            "add" => {
                let a = args.get("a").and_then(Value::as_f64);
                let b = args.get("b").and_then(Value::as_f64);
                match (a, b) {
                    (Some(a), Some(b)) => Ok(text_result(format!("{}", a + b), false)),
                    _ => Err((-32602, "add needs numbers a and b".into())),
                }
            }
            "whoami" => Ok(text_result(
                json!({
                    "subject": header("x-auth-subject"), "client_id": header("x-auth-client-id"),
                    "scopes": header("x-auth-scopes"), "issuer": header("x-auth-issuer"),
                    "authorization_forwarded": headers.contains_key("authorization"),
                })
                .to_string(),
                false,
            )),
            "reset_demo" => {
                let scopes = header("x-auth-scopes");
                if scopes.split(' ').any(|s| s == "mcp:admin") {
                    Ok(text_result(
                        "demo reset (nothing to reset, but you were allowed)".into(),
                        false,
                    ))
                } else {
                    Ok(text_result(
                        "reset_demo requires scope mcp:admin".into(),
                        true,
                    ))
                }
            }
            other => Err((-32602, format!("unknown tool {other:?}"))),
        }
    }

    fn handle(&self, msg: &Value, headers: &http::HeaderMap) -> Option<Value> {
        let id = msg.get("id").cloned()?; // notifications get no answer
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let params = msg.get("params").cloned().unwrap_or(json!({}));
        let result = match method {
            "initialize" => {
                let asked = params
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let version = PROTOCOL_VERSIONS
                    .iter()
                    .find(|v| **v == asked)
                    .unwrap_or(&PROTOCOL_VERSIONS[0]);
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "mcpgate-demo", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Demo MCP server behind mcpgate dev."
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": tools()})),
            "tools/call" => self.call_tool(&params, headers),
            other => Err((-32601, format!("method not found: {other}"))),
        };
        Some(match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
        })
    }
}

#[async_trait]
impl ServeHttp for DemoMcp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        if session.req_header().uri.path() != "/mcp" {
            return json_response(404, &json!({"error": "not_found"}));
        }
        if method != http::Method::POST {
            return empty(405, &[("allow", "POST")]);
        }
        let headers = session.req_header().headers.clone();
        let Some(body) = read_body(session, 1024 * 1024).await else {
            return json_response(413, &json!({"error": "body too large"}));
        };
        let msg: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return json_response(
                    400,
                    &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}),
                )
            }
        };
        match self.handle(&msg, &headers) {
            Some(answer) => json_response(200, &answer),
            None => empty(202, &[]),
        }
    }
}
