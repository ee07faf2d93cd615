//! `mcpgate dev`: the embedded default, needing nothing else running.
//!
//! Next to the gateway it serves, on loopback, a development authorization server
//! (RFC 8414 metadata, JWKS, and a `client_credentials` token endpoint honouring
//! `resource` (RFC 8707) and `scope`, signing ES256 `at+jwt` tokens with a key generated
//! at start) and a demo MCP server (streamable HTTP, JSON responses, a few tools, one of
//! them admin-only, which it decides from the identity headers the gateway forwards).
//! The gateway itself runs on `config/dev.yaml`, compiled in, unchanged.

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::clock::now_unix;

/// The gateway config `mcpgate dev` runs on.
pub const DEV_CONFIG: &str = include_str!("../../config/dev.yaml");
pub const ISSUER_ADDR: &str = "127.0.0.1:8081";
pub const ISSUER_URL: &str = "http://127.0.0.1:8081";
pub const DEMO_ADDR: &str = "127.0.0.1:8082";
pub const RESOURCE: &str = "http://127.0.0.1:8080/mcp";

/// A development client of the dev issuer.
pub struct DevClient {
    pub id: &'static str,
    pub secret: &'static str,
    pub scopes: &'static [&'static str],
}

pub const CLIENTS: [DevClient; 2] = [
    DevClient {
        id: "reader",
        secret: "reader-secret",
        scopes: &["mcp:tools"],
    },
    DevClient {
        id: "admin",
        secret: "admin-secret",
        scopes: &["mcp:tools", "mcp:admin"],
    },
];

const TOKEN_TTL: i64 = 3600;

pub struct DevIssuer {
    issuer: String,
    encoding: jsonwebtoken::EncodingKey,
    kid: String,
    jwk: Value,
    resources: Vec<String>,
}

fn json_response(status: u16, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .header("cache-control", "no-store")
        .body(bytes)
        .unwrap_or_default()
}

fn empty(status: u16, extra: &[(&str, &str)]) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-length", 0);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Vec::new()).unwrap_or_default()
}

async fn read_body(session: &mut ServerSession, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}

impl DevIssuer {
    pub fn new(issuer: &str, resources: Vec<String>) -> Result<DevIssuer, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a P-256 key".to_string())?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| "cannot load the generated key".to_string())?;
        let point = key.public_key().as_ref();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        // RFC 7638 thumbprint as kid.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let jwk = json!({"kty":"EC","crv":"P-256","x":x,"y":y,"kid":kid,"alg":"ES256","use":"sig"});
        Ok(DevIssuer {
            issuer: issuer.to_string(),
            encoding: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
            kid,
            jwk,
            resources,
        })
    }

    /// Mint an access token (RFC 9068 shape) for a client, resource and scopes.
    pub fn mint(
        &self,
        client_id: &str,
        resource: &str,
        scope: &str,
        ttl: i64,
    ) -> Result<String, String> {
        let now = now_unix();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no randomness".to_string())?;
        let claims = json!({
            "iss": self.issuer, "sub": client_id, "aud": resource, "client_id": client_id,
            "scope": scope, "iat": now, "exp": now + ttl, "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| format!("cannot sign token: {e}"))
    }

    fn metadata(&self) -> Value {
        let scopes: Vec<&str> = {
            let mut s: Vec<&str> = CLIENTS
                .iter()
                .flat_map(|c| c.scopes.iter().copied())
                .collect();
            s.sort_unstable();
            s.dedup();
            s
        };
        json!({
            "issuer": self.issuer,
            "token_endpoint": format!("{}/token", self.issuer),
            "jwks_uri": format!("{}/jwks", self.issuer),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": [],
            "scopes_supported": scopes,
        })
    }

    fn token(&self, basic: Option<&str>, body: &[u8]) -> Response<Vec<u8>> {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let err = |status, code: &str, desc: &str| {
            json_response(status, &json!({"error": code, "error_description": desc}))
        };
        if get("grant_type") != Some("client_credentials") {
            return err(
                400,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
        let (id, secret) = match basic.and_then(|b| STANDARD.decode(b.trim()).ok()) {
            Some(raw) => {
                let s = String::from_utf8_lossy(&raw).to_string();
                match s.split_once(':') {
                    Some((i, p)) => (i.to_string(), p.to_string()),
                    None => return err(401, "invalid_client", "malformed basic credentials"),
                }
            }
            None => (
                get("client_id").unwrap_or("").to_string(),
                get("client_secret").unwrap_or("").to_string(),
            ),
        };
        let Some(client) = CLIENTS.iter().find(|c| c.id == id && c.secret == secret) else {
            return err(401, "invalid_client", "unknown client or wrong secret");
        };
        let resource = get("resource").unwrap_or(RESOURCE);
        if !self.resources.iter().any(|r| r == resource) {
            return err(400, "invalid_target", "unknown resource");
        }
        let scope = match get("scope") {
            Some(s) => {
                if let Some(bad) = s
                    .split(' ')
                    .find(|x| !x.is_empty() && !client.scopes.contains(x))
                {
                    return err(
                        400,
                        "invalid_scope",
                        &format!("client may not request {bad}"),
                    );
                }
                s.to_string()
            }
            None => client.scopes.join(" "),
        };
        match self.mint(client.id, resource, &scope, TOKEN_TTL) {
            Ok(t) => json_response(
                200,
                &json!({"access_token": t, "token_type": "Bearer", "expires_in": TOKEN_TTL, "scope": scope}),
            ),
            Err(e) => err(500, "server_error", &e),
        }
    }
}

#[async_trait]
impl ServeHttp for DevIssuer {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        match (method.as_str(), path.as_str()) {
            ("GET", "/.well-known/oauth-authorization-server")
            | ("GET", "/.well-known/openid-configuration") => json_response(200, &self.metadata()),
            ("GET", "/jwks") => json_response(200, &json!({"keys": [self.jwk]})),
            ("POST", "/token") => {
                let basic = session
                    .req_header()
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Basic ").map(str::to_string));
                match read_body(session, 64 * 1024).await {
                    Some(body) => self.token(basic.as_deref(), &body),
                    None => json_response(400, &json!({"error": "invalid_request"})),
                }
            }
            _ => json_response(404, &json!({"error": "not_found"})),
        }
    }
}

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

/// What `mcpgate dev` prints once everything listens.
pub fn banner(reader: &str, admin: &str) -> String {
    let url = "http://127.0.0.1:8080/mcp";
    format!(
        r#"
mcpgate dev is running (nothing else needed; Ctrl-C stops everything)
  gateway          {url}  (route "mcp", requires scope mcp:tools)
  metadata         http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp
  dev issuer       {ISSUER_URL}  (clients reader/reader-secret, admin/admin-secret)
  demo MCP server  http://{DEMO_ADDR}/mcp  (tools echo, add, whoami, reset_demo [admin only])
  admin            http://127.0.0.1:9090/metrics  /healthz  /readyz

Tokens (valid 1 hour):
  export READER_TOKEN='{reader}'
  export ADMIN_TOKEN='{admin}'

Try it:
  # no token: 401 with the discovery challenge
  curl -si {url} -X POST -H 'Content-Type: application/json' -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'
  # list tools through the gateway
  curl -s {url} -H "Authorization: Bearer $READER_TOKEN" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'
  # call a tool
  curl -s {url} -H "Authorization: Bearer $READER_TOKEN" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"whoami","arguments":{{}}}}}}'
  # the admin-only tool: 403 insufficient_scope (step-up) with the reader token, allowed with the admin token
  curl -si {url} -H "Authorization: Bearer $READER_TOKEN" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d '{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"reset_demo","arguments":{{}}}}}}'
  curl -s {url} -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d '{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"reset_demo","arguments":{{}}}}}}'
  # a fresh token from the dev issuer (client_credentials with an RFC 8707 resource)
  curl -s {ISSUER_URL}/token -u reader:reader-secret -d grant_type=client_credentials -d resource={url} -d scope=mcp:tools

MCP Inspector (CLI mode, Node 20+):
  npx -y @modelcontextprotocol/inspector@2 --cli {url} --transport http --header "Authorization: Bearer $READER_TOKEN" --method tools/list
  npx -y @modelcontextprotocol/inspector@2 --cli {url} --transport http --header "Authorization: Bearer $READER_TOKEN" --method tools/call --tool-name whoami
"#
    )
}
/// Lifetime of the two tokens `mcpgate dev` prints.
const BANNER_TOKEN_TTL: i64 = 3600;

/// Run `mcpgate dev`: the gateway on the embedded `config/dev.yaml`, the development
/// issuer and the demo MCP server, until the process is stopped.
pub fn run() -> std::process::ExitCode {
    match serve() {
        Ok(never) => never,
        Err(e) => {
            crate::logs::flush();
            eprintln!("mcpgate dev: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<std::process::ExitCode, String> {
    let config = crate::config::Config::from_yaml("config/dev.yaml (embedded)", DEV_CONFIG)
        .map_err(|e| e.to_string())?;
    let resources: Vec<String> = config
        .routes
        .iter()
        .map(|r| r.resource.resource.clone())
        .collect();
    let issuer = DevIssuer::new(ISSUER_URL, resources)?;
    let reader = issuer.mint("reader", RESOURCE, "mcp:tools", BANNER_TOKEN_TTL)?;
    let admin = issuer.mint("admin", RESOURCE, "mcp:tools mcp:admin", BANNER_TOKEN_TTL)?;
    let (mut server, _) =
        crate::server::build_server(config, crate::server::RunOptions::default())?;
    let mut issuer_svc = Service::new("dev issuer".to_string(), issuer);
    issuer_svc.add_tcp(ISSUER_ADDR);
    server.add_service(issuer_svc);
    let mut demo = Service::new("demo MCP server".to_string(), DemoMcp);
    demo.add_tcp(DEMO_ADDR);
    server.add_service(demo);
    println!("{}", banner(&reader, &admin));
    server.run_forever()
}
