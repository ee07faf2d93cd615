//! The development authorization server of `mcpgate dev`, on loopback.
//!
//! RFC 8414 metadata (also at the OIDC discovery path), its JWKS (one P-256 key generated
//! at start), `/token` for `client_credentials` (the two fixed clients), `authorization_code`
//! with PKCE `S256` and `refresh_token` (rotated, reuse revokes the family), `/register` for
//! RFC 7591 dynamic registration (loopback redirect URIs only), and `/authorize`: a consent
//! page that shows who asks for what and approves by itself, as [`grants::SUBJECT`]. Tokens
//! are ES256 `at+jwt` (RFC 9068) whose `aud` is the requested resource (RFC 8707).
//! Authorization responses carry `iss` (RFC 9207). JSON answers carry
//! `Access-Control-Allow-Origin: *` so a browser-based client can read them; nothing here
//! uses cookies.
//!
//! The rules live in [`grants`]; this file parses HTTP and mints tokens.

use std::sync::Mutex;

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::grants::{self, Authorize, ClientAuth, Granted, Grants, OAuthError, Params, Policy};
use super::web::{json_response, read_body};
use crate::clock::now_unix;

/// A fixed `client_credentials` client of the dev issuer.
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

/// Lifetime of a `client_credentials` token.
const TOKEN_TTL: i64 = 3600;
/// Lifetime of an access token from an interactive login (short: the refresh token renews it).
pub const INTERACTIVE_TTL: i64 = 900;
/// The scope an interactive login gets when it asks for none.
const DEFAULT_SCOPE: &str = "mcp:tools";
/// Largest request body read (a token request or a registration).
const BODY_LIMIT: usize = 64 * 1024;
/// Seconds the consent page shows before it approves.
const CONSENT_SECONDS: u32 = 2;

pub struct DevIssuer {
    issuer: String,
    encoding: jsonwebtoken::EncodingKey,
    kid: String,
    jwk: Value,
    policy: Policy,
    grants: Mutex<Grants>,
}

/// Every scope a fixed client has: what the issuer grants.
fn known_scopes() -> Vec<String> {
    let mut s: Vec<String> = CLIENTS
        .iter()
        .flat_map(|c| c.scopes.iter().map(|s| s.to_string()))
        .collect();
    s.sort_unstable();
    s.dedup();
    s
}

fn error_response(e: &OAuthError) -> Response<Vec<u8>> {
    let mut r = json_response(
        e.status,
        &json!({"error": e.code, "error_description": e.description}),
    );
    if e.status == 401 {
        if let Ok(v) = http::HeaderValue::from_str("Basic realm=\"mcpgate dev issuer\"") {
            r.headers_mut().insert("www-authenticate", v);
        }
    }
    r
}

/// `Authorization: Basic` credentials (RFC 6749 §2.3.1: each part form-urlencoded).
fn basic_credentials(header: Option<&str>) -> Result<Option<(String, String)>, OAuthError> {
    let Some(h) = header else {
        return Ok(None);
    };
    let Some((scheme, value)) = h.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = || grants::oauth_error(401, "invalid_client", "malformed basic credentials");
    let raw = STANDARD.decode(value.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.to_string())
            .map_err(|_| bad())
    };
    Ok(Some((decode(id)?, decode(secret)?)))
}

/// Text for HTML (element content and quoted attributes).
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The consent page: who asks (client name and id), for what (scopes, resource), where the
/// answer goes, as which user; it approves by itself after [`CONSENT_SECONDS`].
pub fn consent_page(handle: &str, request: &grants::AuthRequest) -> String {
    let approve = format!("/authorize/approve?request={handle}");
    let deny = format!("/authorize/deny?request={handle}");
    let name = request
        .client_name
        .as_deref()
        .unwrap_or("an unnamed client");
    let scopes: String = request
        .scope
        .split(' ')
        .map(|s| format!("<li><code>{}</code></li>", html_escape(s)))
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{secs};url={approve}">
<title>mcpgate dev: authorize {name_e}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42em;margin:2em auto;padding:0 1em}}dt{{font-weight:bold;margin-top:.6em}}</style>
</head><body>
<h1>Authorize {name_e}</h1>
<p>The mcpgate development issuer approves every request of a registered client by itself, as user <b id="subject">{subject}</b> (there is no password in development).</p>
<dl>
<dt>Client</dt><dd id="client">{name_e} (<code id="client_id">{client_id}</code>)</dd>
<dt>Scopes</dt><dd><ul id="scopes">{scopes}</ul></dd>
<dt>Resource</dt><dd><code id="resource">{resource}</code></dd>
<dt>Then back to</dt><dd><code id="redirect_uri">{redirect}</code></dd>
</dl>
<p><a id="approve" href="{approve}">Approve</a> &middot; <a id="deny" href="{deny}">Deny</a></p>
<p>Approving in {secs} seconds.</p>
</body></html>
"#,
        secs = CONSENT_SECONDS,
        name_e = html_escape(name),
        subject = grants::SUBJECT,
        client_id = html_escape(&request.client_id),
        resource = html_escape(&request.resource),
        redirect = html_escape(&request.redirect_uri),
    )
}

fn html_response(body: String) -> Response<Vec<u8>> {
    let bytes = body.into_bytes();
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-length", bytes.len())
        .header("cache-control", "no-store")
        .header(
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        )
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "no-referrer")
        .body(bytes)
        .unwrap_or_default()
}

fn redirect(url: &url::Url) -> Response<Vec<u8>> {
    Response::builder()
        .status(302)
        .header("location", url.as_str())
        .header("content-length", 0)
        .header("cache-control", "no-store")
        .header("referrer-policy", "no-referrer")
        .body(Vec::new())
        .unwrap_or_default()
}

impl DevIssuer {
    /// An issuer at `issuer` (its URL) that issues tokens for `resources` (the gateway's
    /// route resources; the first is the default).
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
            policy: Policy {
                scopes: known_scopes(),
                default_scope: DEFAULT_SCOPE.to_string(),
                resources,
            },
            grants: Mutex::new(Grants::default()),
        })
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        // A panic while holding it cannot leave a half-applied rule behind that matters in
        // development; keep serving.
        self.grants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mint an access token (RFC 9068 shape) for a subject, client, resource and scopes.
    pub fn mint(
        &self,
        subject: &str,
        client_id: &str,
        resource: &str,
        scope: &str,
        ttl: i64,
    ) -> Result<String, String> {
        let now = now_unix();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no randomness".to_string())?;
        let claims = json!({
            "iss": self.issuer, "sub": subject, "aud": resource, "client_id": client_id,
            "scope": scope, "iat": now, "exp": now + ttl, "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| format!("cannot sign token: {e}"))
    }

    /// RFC 8414 authorization server metadata.
    pub fn metadata(&self) -> Value {
        let i = &self.issuer;
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "registration_endpoint": format!("{i}/register"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "scopes_supported": self.policy.scopes,
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": false,
        })
    }

    /// The token answer for a grant: an access token for its resource, and its refresh token.
    fn issue(&self, g: Granted) -> Response<Vec<u8>> {
        match self.mint(
            &g.subject,
            &g.client_id,
            &g.resource,
            &g.scope,
            INTERACTIVE_TTL,
        ) {
            Ok(t) => {
                let mut answer = json!({
                    "access_token": t, "token_type": "Bearer", "expires_in": INTERACTIVE_TTL,
                    "scope": g.scope,
                });
                if let Some(r) = g.refresh_token {
                    answer["refresh_token"] = json!(r);
                }
                json_response(200, &answer)
            }
            Err(e) => error_response(&grants::oauth_error(500, "server_error", e)),
        }
    }

    /// `client_credentials` for the fixed clients.
    fn client_credentials(
        &self,
        form: &Params,
        basic: Option<(String, String)>,
    ) -> Result<Response<Vec<u8>>, OAuthError> {
        let (id, secret) = match basic {
            Some(b) => b,
            None => (
                form.one("client_id")?.unwrap_or("").to_string(),
                form.one("client_secret")?.unwrap_or("").to_string(),
            ),
        };
        let Some(client) = CLIENTS.iter().find(|c| c.id == id && c.secret == secret) else {
            return Err(grants::oauth_error(
                401,
                "invalid_client",
                "unknown client or wrong secret (client_credentials is for reader and admin)",
            ));
        };
        let resource = self.policy.resource(&form.all("resource"))?;
        let scope = match form.one("scope")? {
            Some(s) => {
                if let Some(bad) = s
                    .split(' ')
                    .find(|x| !x.is_empty() && !client.scopes.contains(x))
                {
                    return Err(grants::oauth_error(
                        400,
                        "invalid_scope",
                        format!("client may not request {bad}"),
                    ));
                }
                s.to_string()
            }
            None => client.scopes.join(" "),
        };
        let token = self
            .mint(client.id, client.id, &resource, &scope, TOKEN_TTL)
            .map_err(|e| grants::oauth_error(500, "server_error", e))?;
        Ok(json_response(
            200,
            &json!({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL, "scope": scope}),
        ))
    }

    /// `POST /token`.
    pub fn token(&self, authorization: Option<&str>, body: &[u8]) -> Response<Vec<u8>> {
        let form = Params::parse(body);
        let answer = (|| {
            let basic = basic_credentials(authorization)?;
            let now = now_unix();
            match form.required("grant_type")? {
                "client_credentials" => self.client_credentials(&form, basic),
                "authorization_code" => {
                    let auth = ClientAuth { basic, form: &form };
                    let g = self
                        .grants()
                        .redeem_code(&form, &auth, &self.policy, now)?;
                    Ok(self.issue(g))
                }
                "refresh_token" => {
                    let auth = ClientAuth { basic, form: &form };
                    let g = self.grants().refresh(&form, &auth, &self.policy, now)?;
                    Ok(self.issue(g))
                }
                other => Err(grants::oauth_error(
                    400,
                    "unsupported_grant_type",
                    format!(
                        "grant_type {other:?}: authorization_code, refresh_token or client_credentials"
                    ),
                )),
            }
        })();
        answer.unwrap_or_else(|e| error_response(&e))
    }

    /// `GET /authorize`.
    pub fn authorize(&self, query: &str) -> Response<Vec<u8>> {
        let q = Params::parse(query.as_bytes());
        let outcome = self
            .grants()
            .authorize(&q, &self.policy, &self.issuer, now_unix());
        match outcome {
            Authorize::Consent { handle, request } => {
                html_response(consent_page(&handle, &request))
            }
            Authorize::Redirect(url) => redirect(&url),
            Authorize::Error(e) => error_response(&e),
        }
    }

    /// `GET /authorize/approve` and `/authorize/deny`.
    pub fn decide(&self, query: &str, approve: bool) -> Response<Vec<u8>> {
        let q = Params::parse(query.as_bytes());
        let decided = q.required("request").and_then(|handle| {
            self.grants()
                .decide(handle, approve, &self.issuer, now_unix())
        });
        match decided {
            Ok(url) => redirect(&url),
            Err(e) => error_response(&e),
        }
    }

    /// `POST /register`.
    pub fn register(&self, body: &[u8]) -> Response<Vec<u8>> {
        match self.grants().register(body, now_unix()) {
            Ok(answer) => json_response(201, &answer),
            Err(e) => error_response(&e),
        }
    }
}

/// The answer to a CORS preflight: any origin may call the issuer's JSON endpoints.
fn preflight() -> Response<Vec<u8>> {
    Response::builder()
        .status(204)
        .header("access-control-allow-origin", "*")
        .header("access-control-allow-methods", "GET, POST")
        .header(
            "access-control-allow-headers",
            "Authorization, Content-Type, MCP-Protocol-Version",
        )
        .header("access-control-max-age", "600")
        .header("content-length", 0)
        .body(Vec::new())
        .unwrap_or_default()
}

fn method_not_allowed(allow: &str) -> Response<Vec<u8>> {
    let mut r = json_response(
        405,
        &json!({"error": "invalid_request", "error_description": format!("method not allowed here; use {allow}")}),
    );
    if let Ok(v) = http::HeaderValue::from_str(allow) {
        r.headers_mut().insert("allow", v);
    }
    r
}

#[async_trait]
impl ServeHttp for DevIssuer {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let uri = session.req_header().uri.clone();
        let method = session.req_header().method.clone();
        let query = uri.query().unwrap_or("");
        let get = method == http::Method::GET || method == http::Method::HEAD;
        let post = method == http::Method::POST;
        if method == http::Method::OPTIONS {
            return preflight();
        }
        match uri.path() {
            "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
                if get {
                    json_response(200, &self.metadata())
                } else {
                    method_not_allowed("GET")
                }
            }
            "/jwks" if get => json_response(200, &json!({"keys": [self.jwk]})),
            "/authorize" if get => self.authorize(query),
            "/authorize/approve" if get => self.decide(query, true),
            "/authorize/deny" if get => self.decide(query, false),
            "/token" | "/register" if post => {
                let authorization = session
                    .req_header()
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let Some(body) = read_body(session, BODY_LIMIT).await else {
                    return error_response(&grants::oauth_error(
                        400,
                        "invalid_request",
                        format!("the body is unreadable or larger than {BODY_LIMIT} bytes"),
                    ));
                };
                if uri.path() == "/token" {
                    self.token(authorization.as_deref(), &body)
                } else {
                    self.register(&body)
                }
            }
            "/jwks" | "/authorize" | "/authorize/approve" | "/authorize/deny" => {
                method_not_allowed("GET")
            }
            "/token" | "/register" => method_not_allowed("POST"),
            _ => json_response(
                404,
                &json!({"error": "not_found", "error_description": "the dev issuer serves /.well-known/oauth-authorization-server, /jwks, /authorize, /token, /register"}),
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn consent_page_escapes_what_the_client_chose() {
        let mut g = Grants::default();
        let cb = "http://127.0.0.1:1/cb?a=<b>";
        let r = g
            .register(
                json!({"redirect_uris": [cb], "client_name": "<script>alert(1)</script>"})
                    .to_string()
                    .as_bytes(),
                0,
            )
            .unwrap();
        let id = r["client_id"].as_str().unwrap();
        let policy = Policy {
            scopes: vec!["mcp:tools".into()],
            default_scope: "mcp:tools".into(),
            resources: vec!["http://127.0.0.1:8080/mcp".into()],
        };
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("response_type", "code")
            .append_pair("client_id", id)
            .append_pair("redirect_uri", cb)
            .append_pair("code_challenge", &"a".repeat(43))
            .append_pair("code_challenge_method", "S256");
        let q = Params::parse(s.finish().as_bytes());
        let Authorize::Consent { handle, request } = g.authorize(&q, &policy, "http://i", 0) else {
            panic!("no consent");
        };
        let page = consent_page(&handle, &request);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("a=&lt;b&gt;"));
        assert!(page.contains("<code>mcp:tools</code>"));
        assert!(page.contains(&format!("/authorize/approve?request={handle}")));
    }

    #[test]
    fn metadata_offers_what_interactive_clients_need() {
        let i = DevIssuer::new("http://127.0.0.1:8081", vec!["http://r".into()]).unwrap();
        let m = i.metadata();
        assert_eq!(m["response_types_supported"], json!(["code"]));
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert!(m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("refresh_token")));
        assert_eq!(m["registration_endpoint"], "http://127.0.0.1:8081/register");
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let h = format!("Basic {}", STANDARD.encode("a%3Ab:c+d"));
        assert_eq!(
            basic_credentials(Some(&h)).unwrap(),
            Some(("a:b".into(), "c d".into()))
        );
        assert_eq!(basic_credentials(Some("Bearer x")).unwrap(), None);
        assert!(basic_credentials(Some("Basic !!!")).is_err());
    }
}
