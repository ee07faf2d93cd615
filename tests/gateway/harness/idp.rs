//! The mock authorization server: a key set at `<issuer>/jwks`, RFC 8414 metadata at
//! `/.well-known/oauth-authorization-server<issuer path>` and OIDC discovery at
//! `<issuer>/.well-known/openid-configuration` (both naming the key set and the introspection
//! endpoint), and an RFC 7662 introspection endpoint at `<issuer>/introspect` that checks the
//! request format and the gateway's client credentials and answers per token. The key set is
//! swappable, every request is recorded, and failure modes (500, hang-up, redirect, slowness)
//! can be switched on, so each test can assert exactly what the gateway asked and how often.
//! Its token endpoint (`<issuer>/token`, in the metadata) serves the gateway's own requests
//! for upstream credentials: RFC 8693 token exchange and client credentials, with the
//! gateway's client authenticated by secret (Basic or post) or `private_key_jwt`; it issues
//! fresh random tokens (remembered for the log checks), or refuses, stalls, hangs up or
//! answers garbage as the test says ([`TokenMode`]), and records every request.
//!
//! Also [`Canary`]: a host that must never be contacted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::http::Request;
use super::server::{Reply, Server};
use super::tls::Pki;
use super::tokens::{attacker_jwks, default_jwks, now, percent_decode, random_hex};

/// The gateway's introspection client id in the fixtures.
pub const CLIENT_ID: &str = "mcpgate";
/// Its secret. Has characters RFC 6749 §2.3.1 form-encodes before Basic.
pub const CLIENT_SECRET: &str = "s3cret:+/ é";

/// The gateway's client id at the token endpoint (`upstream_auth` tests).
pub const UA_CLIENT_ID: &str = "mcp-gateway";
/// Its secret (form-encoded before Basic: `+`, `/`, `:`, space and `%` change).
pub const UA_CLIENT_SECRET: &str = "ua-s3cret:+/ %x-0123456789";
/// The description the mock puts in its refusals: the gateway must never repeat it.
pub const AS_TEXT: &str = "mock-as-private-detail-7f3a";

/// What the token endpoint does.
#[derive(Clone, Debug)]
pub enum TokenMode {
    /// Issue a token to an authenticated client.
    Issue,
    /// Refuse: this status and `error` code (with [`AS_TEXT`] as `error_description`).
    Refuse(u16, &'static str),
    /// Status, content type, body.
    Raw(u16, &'static str, &'static str),
    /// Close the connection without answering.
    Hangup,
    /// This status with `Location` = the issuer's origin followed by this path (the same
    /// origin), no body.
    Redirect(u16, &'static str),
}

/// How the gateway must authenticate at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAuth {
    Basic,
    Post,
    /// `client_assertion` of the right type (its claims are checked by the test).
    PrivateKeyJwt,
}

/// A token the token endpoint issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub grant_type: String,
    /// The subject token of an exchange.
    pub subject: Option<String>,
    pub token: String,
}

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
    /// This status with `Location` = the introspection endpoint itself (the same origin),
    /// no body: a client that follows it asks again.
    Redirect(u16),
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
    token_mode: Mutex<TokenMode>,
    token_auth: Mutex<TokenAuth>,
    /// `expires_in` of issued tokens (`None`: the member is left out).
    token_expires_in: Mutex<Option<u64>>,
    token_delay: Mutex<Duration>,
    /// What the token endpoint does for an exchange whose subject token's `sub` is the key
    /// (instead of `token_mode`).
    token_mode_for: Mutex<HashMap<String, TokenMode>>,
    issued: Mutex<Vec<Issued>>,
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
        if path == format!("{ipath}/token") {
            let reply = self.token(&seen(req));
            let delay = *self.token_delay.lock().unwrap();
            return if delay.is_zero() {
                reply
            } else {
                Reply::Delayed(delay, Box::new(reply))
            };
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
            Some(Answer::Redirect(status)) => Reply::Full {
                status,
                headers: vec![("Location".into(), format!("{}/introspect", self.issuer))],
                body: Vec::new(),
            },
            None => json_reply(200, r#"{"active":false}"#.into()),
        }
    }
}

impl IdpState {
    fn token(&self, seen: &Seen) -> Reply {
        let form_ct = seen
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if seen.method != "POST" || !form_ct {
            return json_reply(400, r#"{"error":"invalid_request"}"#.into());
        }
        let authenticated = match *self.token_auth.lock().unwrap() {
            TokenAuth::Basic => {
                seen.header("authorization") == Some(basic(UA_CLIENT_ID, UA_CLIENT_SECRET).as_str())
                    && seen.param("client_secret").is_none()
            }
            TokenAuth::Post => {
                seen.param("client_id") == Some(UA_CLIENT_ID)
                    && seen.param("client_secret") == Some(UA_CLIENT_SECRET)
                    && seen.header("authorization").is_none()
            }
            TokenAuth::PrivateKeyJwt => {
                seen.param("client_assertion_type")
                    == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    && seen.param("client_assertion").is_some()
                    && seen.header("authorization").is_none()
            }
        };
        if !authenticated {
            return json_reply(401, r#"{"error":"invalid_client"}"#.into());
        }
        let sub = seen.param("subject_token").and_then(jwt_sub);
        let for_sub = sub.and_then(|s| self.token_mode_for.lock().unwrap().get(&s).cloned());
        let mode = for_sub.unwrap_or_else(|| self.token_mode.lock().unwrap().clone());
        match mode {
            TokenMode::Issue => {}
            TokenMode::Refuse(status, code) => {
                let body = json!({"error": code, "error_description": AS_TEXT});
                return json_reply(status, body.to_string());
            }
            TokenMode::Raw(status, ctype, body) => {
                return Reply::Full {
                    status,
                    headers: vec![("Content-Type".into(), ctype.into())],
                    body: body.as_bytes().to_vec(),
                }
            }
            TokenMode::Hangup => return Reply::Hangup,
            TokenMode::Redirect(status, path) => {
                let origin = self
                    .issuer
                    .strip_suffix(&self.issuer_path)
                    .unwrap_or(&self.issuer);
                return Reply::Full {
                    status,
                    headers: vec![("Location".into(), format!("{origin}{path}"))],
                    body: Vec::new(),
                };
            }
        }
        let grant = seen.param("grant_type").unwrap_or("").to_string();
        let (prefix, subject) = match grant.as_str() {
            "urn:ietf:params:oauth:grant-type:token-exchange" => {
                let Some(subject) = seen.param("subject_token") else {
                    return json_reply(400, r#"{"error":"invalid_request"}"#.into());
                };
                ("xch", Some(subject.to_string()))
            }
            "client_credentials" => ("own", None),
            _ => return json_reply(400, r#"{"error":"unsupported_grant_type"}"#.into()),
        };
        let token = format!("{prefix}_{}", random_hex(16));
        super::tokens::remember(&token);
        let mut body = json!({"access_token": token, "token_type": "Bearer"});
        if subject.is_some() {
            body["issued_token_type"] = json!("urn:ietf:params:oauth:token-type:access_token");
        }
        if let Some(e) = *self.token_expires_in.lock().unwrap() {
            body["expires_in"] = json!(e);
        }
        self.issued.lock().unwrap().push(Issued {
            grant_type: grant,
            subject,
            token,
        });
        json_reply(200, body.to_string())
    }
}

/// The `sub` of a JWT (unverified: the mock only sorts requests by it).
fn jwt_sub(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["sub"].as_str().map(str::to_string)
}

impl MockIdp {
    /// An IdP whose issuer is `http://127.0.0.1:<port>` serving [`default_jwks`].
    pub fn start() -> MockIdp {
        MockIdp::start_at("")
    }

    /// Same with an issuer path (e.g. `/tenant`).
    pub fn start_at(issuer_path: &str) -> MockIdp {
        MockIdp::start_with(issuer_path, None)
    }

    /// An IdP at `https://127.0.0.1:<port>` presenting a certificate of `pki` (for
    /// 127.0.0.1), so only a client trusting that CA can fetch from it.
    pub fn start_tls(pki: &Pki) -> MockIdp {
        MockIdp::start_with(
            "",
            Some(pki.acceptor(
                "idp",
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )),
        )
    }

    fn start_with(issuer_path: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> MockIdp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(IdpState {
            issuer: format!("{scheme}://{addr}{issuer_path}"),
            issuer_path: issuer_path.to_string(),
            jwks: Mutex::new(default_jwks()),
            mode: Mutex::new(IdpMode::Ok),
            rfc8414: Mutex::new(true),
            oidc: Mutex::new(true),
            cache_control: Mutex::new(None),
            answers: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            post_auth: Mutex::new(false),
            token_mode: Mutex::new(TokenMode::Issue),
            token_auth: Mutex::new(TokenAuth::Basic),
            token_expires_in: Mutex::new(Some(300)),
            token_delay: Mutex::new(Duration::ZERO),
            token_mode_for: Mutex::default(),
            issued: Mutex::default(),
        });
        let st = state.clone();
        let handler: super::server::Handler = Arc::new(move |req: &Request| st.handle(req));
        let server = match tls {
            None => Server::start_on(listener, handler),
            Some(tls) => Server::start_tls_on(listener, handler, tls),
        };
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

impl MockIdp {
    // Token endpoint

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.state.issuer)
    }
    /// Requests received on the token endpoint.
    pub fn token_calls(&self) -> usize {
        self.count(&format!("{}/token", self.state.issuer_path))
    }
    /// The token endpoint requests received, in order.
    pub fn token_seen(&self) -> Vec<Seen> {
        let path = format!("{}/token", self.state.issuer_path);
        self.server
            .requests()
            .iter()
            .filter(|r| r.path() == path)
            .map(seen)
            .collect()
    }
    /// The tokens issued, in order.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.issued.lock().unwrap().clone()
    }
    /// The last token issued for `subject` by exchange.
    pub fn exchanged_for(&self, subject: &str) -> Option<String> {
        self.issued()
            .into_iter()
            .rev()
            .find(|i| i.subject.as_deref() == Some(subject))
            .map(|i| i.token)
    }
    pub fn set_token_mode(&self, m: TokenMode) {
        *self.state.token_mode.lock().unwrap() = m;
    }
    /// What the token endpoint does for exchanges of tokens whose `sub` is `sub` (the
    /// others get [`MockIdp::set_token_mode`]'s).
    pub fn set_token_mode_for(&self, sub: &str, m: TokenMode) {
        self.state
            .token_mode_for
            .lock()
            .unwrap()
            .insert(sub.to_string(), m);
    }
    pub fn set_token_auth(&self, a: TokenAuth) {
        *self.state.token_auth.lock().unwrap() = a;
    }
    pub fn set_token_expires_in(&self, e: Option<u64>) {
        *self.state.token_expires_in.lock().unwrap() = e;
    }
    pub fn set_token_delay(&self, d: Duration) {
        *self.state.token_delay.lock().unwrap() = d;
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
