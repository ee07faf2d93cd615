//! The mock authorization server: a key set at `<issuer>/jwks`, RFC 8414 metadata at
//! `/.well-known/oauth-authorization-server<issuer path>` and OIDC discovery at
//! `<issuer>/.well-known/openid-configuration` (both naming the key set and the introspection
//! endpoint), and an RFC 7662 introspection endpoint at `<issuer>/introspect` that checks the
//! request format and the gateway's client credentials and answers per token. The key set is
//! swappable, every request is recorded, and failure modes (500, hang-up, redirect, slowness)
//! can be switched on, so each test can assert exactly what the gateway asked and how often.
//!
//! Also [`Canary`]: a host that must never be contacted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::http::Request;
use super::server::{Reply, Server};
use super::tokens::{attacker_jwks, default_jwks, now, percent_decode, random_hex};

/// The gateway's introspection client id in the fixtures.
pub const CLIENT_ID: &str = "mcpgate";
/// Its secret. Has characters RFC 6749 §2.3.1 form-encodes before Basic.
pub const CLIENT_SECRET: &str = "s3cret:+/ é";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdpMode {
    Ok,
    /// Every request gets a 500.
    Fail500,
    /// Every connection is closed without an answer.
    Hangup,
    /// Every request gets a 302 to this URL.
    Redirect(String),
    /// Every answer comes after this delay (a slow AS).
    Slow(Duration),
}

/// What the introspection endpoint answers for a token (unknown tokens are inactive).
#[derive(Clone, Debug)]
pub enum Answer {
    /// A 200 JSON answer; `{ISS}` in it becomes the issuer.
    Json(Value),
    /// Status, content type, body.
    Raw(u16, &'static str, &'static str),
}

/// One introspection request the mock received, its form decoded.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct IdpState {
    issuer: String,
    issuer_path: String,
    jwks: Mutex<Value>,
    mode: Mutex<IdpMode>,
    rfc8414: Mutex<bool>,
    oidc: Mutex<bool>,
    cache_control: Mutex<Option<String>>,
    answers: Mutex<HashMap<String, Answer>>,
    delay: Mutex<Duration>,
    /// Expect client_secret_post instead of Basic.
    post_auth: Mutex<bool>,
}

/// The mock authorization server; stops when dropped.
pub struct MockIdp {
    server: Server,
    state: Arc<IdpState>,
}

fn form_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode(&s.replace('+', " "))).to_string()
}

fn seen(req: &Request) -> Seen {
    let text = String::from_utf8_lossy(&req.body).to_string();
    let form = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect();
    Seen {
        method: req.method.clone(),
        path: req.path().to_string(),
        headers: req.headers.clone(),
        form,
    }
}

/// RFC 6749 §2.3.1: `application/x-www-form-urlencoded`, then Basic.
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
                    (b as char).to_string()
                } else if b == b' ' {
                    "+".to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", enc(id), enc(secret))
        )
    )
}

fn json_reply(status: u16, body: String) -> Reply {
    Reply::Full {
        status,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: body.into_bytes(),
    }
}

impl IdpState {
    fn handle(&self, req: &Request) -> Reply {
        match self.mode.lock().unwrap().clone() {
            IdpMode::Ok => {}
            IdpMode::Slow(d) => return Reply::Delayed(d, Box::new(self.serve(req))),
            IdpMode::Fail500 => return Reply::json(500, &json!({"error": "server_error"})),
            IdpMode::Hangup => return Reply::Hangup,
            IdpMode::Redirect(to) => {
                return Reply::Full {
                    status: 302,
                    headers: vec![("Location".into(), to)],
                    body: Vec::new(),
                }
            }
        }
        self.serve(req)
    }

    /// The answer of a working AS.
    fn serve(&self, req: &Request) -> Reply {
        let (path, ipath) = (req.path(), self.issuer_path.as_str());
        let metadata = || {
            json!({
                "issuer": self.issuer,
                "jwks_uri": format!("{}/jwks", self.issuer),
                "authorization_endpoint": format!("{}/authorize", self.issuer),
                "token_endpoint": format!("{}/token", self.issuer),
                "introspection_endpoint": format!("{}/introspect", self.issuer),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            })
        };
        if path == format!("{ipath}/jwks") {
            let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
            if let Some(cc) = self.cache_control.lock().unwrap().clone() {
                headers.push(("Cache-Control".into(), cc));
            }
            return Reply::Full {
                status: 200,
                headers,
                body: serde_json::to_vec(&*self.jwks.lock().unwrap()).unwrap(),
            };
        }
        if path == format!("/.well-known/oauth-authorization-server{ipath}")
            && *self.rfc8414.lock().unwrap()
        {
            return Reply::json(200, &metadata());
        }
        if path == format!("{ipath}/.well-known/openid-configuration") && *self.oidc.lock().unwrap()
        {
            return Reply::json(200, &metadata());
        }
        if path == format!("{ipath}/introspect") {
            let reply = self.introspect(&seen(req));
            let delay = *self.delay.lock().unwrap();
            return if delay.is_zero() {
                reply
            } else {
                Reply::Delayed(delay, Box::new(reply))
            };
        }
        Reply::json(404, &json!({"error": "not_found"}))
    }

    fn introspect(&self, seen: &Seen) -> Reply {
        // RFC 7662 §2.1: POST, form-encoded, and the caller must authenticate.
        let form_ct = seen
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if seen.method != "POST" || !form_ct {
            return json_reply(400, r#"{"error":"invalid_request"}"#.into());
        }
        let authenticated = if *self.post_auth.lock().unwrap() {
            seen.param("client_id") == Some(CLIENT_ID)
                && seen.param("client_secret") == Some(CLIENT_SECRET)
                && seen.header("authorization").is_none()
        } else {
            seen.header("authorization") == Some(basic(CLIENT_ID, CLIENT_SECRET).as_str())
                && seen.param("client_id").is_none()
        };
        if !authenticated {
            return json_reply(401, r#"{"error":"invalid_client"}"#.into());
        }
        let Some(token) = seen.param("token") else {
            return json_reply(400, r#"{"error":"invalid_request"}"#.into());
        };
        match self.answers.lock().unwrap().get(token).cloned() {
            Some(Answer::Json(v)) => json_reply(200, v.to_string().replace("{ISS}", &self.issuer)),
            Some(Answer::Raw(status, ctype, body)) => Reply::Full {
                status,
                headers: vec![
                    ("Content-Type".into(), ctype.into()),
                    ("Cache-Control".into(), "no-store".into()),
                ],
                body: body.as_bytes().to_vec(),
            },
            None => json_reply(200, r#"{"active":false}"#.into()),
        }
    }
}

impl MockIdp {
    /// An IdP whose issuer is `http://127.0.0.1:<port>` serving [`default_jwks`].
    pub fn start() -> MockIdp {
        MockIdp::start_at("")
    }

    /// Same with an issuer path (e.g. `/tenant`).
    pub fn start_at(issuer_path: &str) -> MockIdp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(IdpState {
            issuer: format!("http://{addr}{issuer_path}"),
            issuer_path: issuer_path.to_string(),
            jwks: Mutex::new(default_jwks()),
            mode: Mutex::new(IdpMode::Ok),
            rfc8414: Mutex::new(true),
            oidc: Mutex::new(true),
            cache_control: Mutex::new(None),
            answers: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            post_auth: Mutex::new(false),
        });
        let st = state.clone();
        let server = Server::start_on(listener, Arc::new(move |req: &Request| st.handle(req)));
        MockIdp { server, state }
    }

    /// The issuer identifier (`iss`).
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    pub fn set_jwks(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }
    pub fn set_mode(&self, mode: IdpMode) {
        *self.state.mode.lock().unwrap() = mode;
    }
    pub fn set_discovery(&self, rfc8414: bool, oidc: bool) {
        *self.state.rfc8414.lock().unwrap() = rfc8414;
        *self.state.oidc.lock().unwrap() = oidc;
    }
    pub fn set_cache_control(&self, v: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = v.map(str::to_string);
    }
    /// Requests received on a path (exact, without query).
    pub fn count(&self, path: &str) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path() == path)
            .count()
    }
    /// Requests received on `<issuer path>/jwks`.
    pub fn jwks_fetches(&self) -> usize {
        self.count(&format!("{}/jwks", self.state.issuer_path))
    }
    pub fn total_requests(&self) -> usize {
        self.server.count()
    }

    // Introspection

    /// The introspection endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/introspect", self.state.issuer)
    }
    /// Introspection calls received (every request to the endpoint, whatever the answer).
    pub fn calls(&self) -> usize {
        self.count(&format!("{}/introspect", self.state.issuer_path))
    }
    /// The introspection calls received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        let path = format!("{}/introspect", self.state.issuer_path);
        self.server
            .requests()
            .iter()
            .filter(|r| r.path() == path)
            .map(seen)
            .collect()
    }
    pub fn answer(&self, token: &str, a: Answer) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_string(), a);
    }
    /// `{"active": true, ...}` with the given members added.
    pub fn active(&self, token: &str, extra: Value) {
        let mut v = json!({"active": true});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        self.answer(token, Answer::Json(v));
    }
    /// Introspection answers come this much later.
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }
    /// Expect `client_secret_post` credentials instead of Basic.
    pub fn expect_post_auth(&self, on: bool) {
        *self.state.post_auth.lock().unwrap() = on;
    }
}

/// A good active introspection answer for the `/mcp` route of the fixtures (`{ISS}`: the
/// issuer that answers), with `extra` members added.
pub fn good(extra: Value) -> Value {
    let mut v = json!({
        "iss": "{ISS}",
        "aud": super::env::R,
        "exp": now() + 300,
        "scope": "mcp:read",
        "sub": "alice",
        "client_id": "client-1",
        "token_type": "Bearer",
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// A fresh random opaque token (not JWT-shaped), remembered for the log checks.
pub fn opaque() -> String {
    let t = format!("at_{}", random_hex(16));
    super::tokens::remember(&t);
    t
}

/// A host that must never be contacted (for `jku`/`x5u` tests and redirects); counts every
/// request and serves the attacker's key set.
pub struct Canary {
    server: Server,
}

impl Canary {
    pub fn start() -> Canary {
        let jwks = attacker_jwks();
        Canary {
            server: Server::start(move |_req: &Request| Reply::json(200, &jwks)),
        }
    }
    pub fn url(&self) -> String {
        self.server.url()
    }
    /// Connections made to it (a connection is already contact, complete request or not).
    pub fn hits(&self) -> usize {
        self.server.connections()
    }
}
