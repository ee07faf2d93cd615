//! What the development issuer remembers between requests of an interactive login, and
//! every rule it applies to them: registered clients (RFC 7591, loopback redirect URIs
//! only), authorization requests waiting on the consent page, authorization codes (single
//! use, PKCE `S256` only, RFC 6749 §4.1.2: a code redeemed twice revokes what it gave), and
//! refresh-token families (rotated on every use; a used token presented again revokes the
//! whole family, OAuth 2.1 §4.3.1).
//!
//! Plain data and plain functions over the request parameters, with the time passed in, so
//! the unit tests below cover every rule; `issuer.rs` only parses HTTP, calls these and
//! mints the tokens. Everything lives in memory, bounded ([`MAX_ENTRIES`]), and is lost
//! when `mcpgate dev` stops.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use url::{Host, Url};

/// The user every interactive login signs in as (there is no password in development).
pub const SUBJECT: &str = "dev-user";
/// How long the consent page's approval link works.
const REQUEST_TTL: i64 = 600;
/// How long an authorization code can be redeemed.
const CODE_TTL: i64 = 60;
/// How long a refresh-token family lives from the login that started it.
pub const REFRESH_TTL: i64 = 86_400;
/// Most entries of each kind (clients, waiting requests, codes, families): past it the
/// oldest goes, so a client that registers or authorizes in a loop cannot grow the process.
pub const MAX_ENTRIES: usize = 1000;
/// Most redirect URIs one client registers.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest `client_name` kept.
const MAX_NAME: usize = 200;
/// A scope a client may ask for that the issuer grants nothing for: it says "give me a
/// refresh token", which the issuer does for every client that registered the
/// `refresh_token` grant anyway (and for no other).
const OFFLINE_ACCESS: &str = "offline_access";

/// An OAuth error answer: status, `error` code and `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: u16,
    pub code: &'static str,
    pub description: String,
}

pub fn oauth_error(status: u16, code: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError {
        status,
        code,
        description: description.into(),
    }
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    oauth_error(400, "invalid_request", description)
}

fn invalid_grant(description: impl Into<String>) -> OAuthError {
    oauth_error(400, "invalid_grant", description)
}

/// 32 random bytes, base64url: client ids, codes, request handles, refresh tokens.
pub fn random_token() -> Result<String, OAuthError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| oauth_error(500, "server_error", "no randomness"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Form or query parameters (`application/x-www-form-urlencoded`). A parameter given twice
/// is refused (RFC 6749 §3.1), except `resource`, which RFC 8707 lets repeat; one sent
/// without a value counts as absent.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(bytes: &[u8]) -> Params {
        Params {
            pairs: url::form_urlencoded::parse(bytes)
                .into_owned()
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        }
    }

    /// The one value of `name`, if given.
    pub fn one(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self.pairs.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(invalid_request(format!("{name} is given more than once")));
        }
        Ok(first)
    }

    /// The one value of `name`, which must be given.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.one(name)?
            .ok_or_else(|| invalid_request(format!("{name} is missing")))
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the issuer grants: the scopes it knows and the resources (RFC 8707) it issues for,
/// each with its default.
#[derive(Debug, Clone)]
pub struct Policy {
    pub scopes: Vec<String>,
    pub default_scope: String,
    /// The gateway's route resources; the first is the default.
    pub resources: Vec<String>,
}

impl Policy {
    /// The scope to grant for a requested `scope` parameter: known scopes only, each once,
    /// `offline_access` dropped; nothing asked for means the default.
    pub fn scope(&self, asked: Option<&str>) -> Result<String, OAuthError> {
        let mut granted: Vec<&str> = Vec::new();
        for s in asked.unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
            if s == OFFLINE_ACCESS || granted.contains(&s) {
                continue;
            }
            if !self.scopes.iter().any(|k| k == s) {
                return Err(oauth_error(
                    400,
                    "invalid_scope",
                    format!(
                        "unknown scope {s:?}; this issuer grants {}",
                        self.scopes.join(", ")
                    ),
                ));
            }
            granted.push(s);
        }
        Ok(if granted.is_empty() {
            self.default_scope.clone()
        } else {
            granted.join(" ")
        })
    }

    /// The resource a token is for: the one `resource` parameter, which must be one of the
    /// gateway's, or the default when none is given.
    pub fn resource(&self, asked: &[&str]) -> Result<String, OAuthError> {
        let target = |d: String| oauth_error(400, "invalid_target", d);
        match asked {
            [] => self
                .resources
                .first()
                .cloned()
                .ok_or_else(|| target("this issuer knows no resource".into())),
            [one] if self.resources.iter().any(|r| r == one) => Ok(one.to_string()),
            [one] => Err(target(format!(
                "unknown resource {one:?}; this issuer issues tokens for {}",
                self.resources.join(", ")
            ))),
            _ => Err(target("one resource per request".into())),
        }
    }
}

/// A client registered at `/register`.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// SHA-256 of the secret of a confidential client; `None` for a public one.
    secret: Option<[u8; 32]>,
    grant_types: Vec<String>,
    issued: i64,
}

/// An authorization request shown on the consent page, until approved or denied.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uri: String,
    /// Whether the request named its `redirect_uri` (then the token request must repeat it).
    redirect_given: bool,
    pub state: Option<String>,
    challenge: String,
    pub scope: String,
    pub resource: String,
    created: i64,
}

#[derive(Debug)]
struct Code {
    request: AuthRequest,
    created: i64,
    /// Set at the first redemption: the family it started, if any.
    redeemed: Option<Option<String>>,
}

#[derive(Debug)]
struct Family {
    client_id: String,
    scope: String,
    resource: String,
    created: i64,
    revoked: bool,
    /// SHA-256 of the one refresh token of the family that is still good.
    current: [u8; 32],
}

/// What a successful token request grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub client_id: String,
    pub subject: String,
    pub scope: String,
    pub resource: String,
    /// A refresh token, for a client that registered the `refresh_token` grant.
    pub refresh_token: Option<String>,
}

/// What `/authorize` answers.
#[derive(Debug)]
pub enum Authorize {
    /// The consent page for this request, approved through `handle`.
    Consent {
        handle: String,
        request: AuthRequest,
    },
    /// Back to the client's redirect URI with an error (the URL is complete).
    Redirect(Url),
    /// An error page: the client or its redirect URI is not known, so nothing may be sent
    /// back to it.
    Error(OAuthError),
}

/// Who presented itself at the token endpoint: `Authorization: Basic` or the form's
/// `client_id`/`client_secret`.
pub struct ClientAuth<'a> {
    pub basic: Option<(String, String)>,
    pub form: &'a Params,
}

impl ClientAuth<'_> {
    fn claimed(&self) -> Result<(String, Option<String>), OAuthError> {
        let form_id = self.form.one("client_id")?;
        let form_secret = self.form.one("client_secret")?;
        match &self.basic {
            Some((id, secret)) => {
                if form_secret.is_some() || form_id.is_some_and(|f| f != id) {
                    return Err(invalid_request(
                        "client credentials in both the Authorization header and the form",
                    ));
                }
                Ok((id.clone(), Some(secret.clone())))
            }
            None => Ok((
                form_id
                    .ok_or_else(|| invalid_request("client_id is missing"))?
                    .to_string(),
                form_secret.map(str::to_string),
            )),
        }
    }
}

/// Drops the oldest entries (by `age`) until there is room for one more.
fn make_room<V>(map: &mut HashMap<String, V>, age: impl Fn(&V) -> i64) {
    while map.len() >= MAX_ENTRIES {
        let oldest = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => map.remove(&k),
            None => return,
        };
    }
}

/// A redirect URI a client may register here: `http` or `https` on a loopback host
/// (`127.0.0.1`, `[::1]`, `localhost`), no user info, no fragment (RFC 6749 §3.1.2).
fn loopback_redirect(uri: &str) -> Result<Url, String> {
    let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{uri:?}: the scheme must be http or https"));
    }
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if !loopback {
        return Err(format!(
            "{uri:?}: the development issuer only redirects to loopback (http://127.0.0.1, http://[::1], http://localhost)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{uri:?}: no user info in a redirect URI"));
    }
    if url.fragment().is_some() {
        return Err(format!("{uri:?}: no fragment in a redirect URI"));
    }
    Ok(url)
}

/// Whether `asked` is the registered redirect URI `registered`: the same string, or, for a
/// loopback IP literal, the same but for the port (OAuth 2.1 §8.4.2, RFC 8252 §7.3: a native
/// client may pick its port when it starts). `localhost` gets no such latitude.
fn redirect_matches(registered: &str, asked: &str) -> bool {
    if registered == asked {
        return true;
    }
    let (Ok(mut r), Ok(mut a)) = (Url::parse(registered), Url::parse(asked)) else {
        return false;
    };
    let ip_loopback = match r.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    if !ip_loopback || a.fragment().is_some() || !a.username().is_empty() {
        return false;
    }
    (r.set_port(None).is_ok() && a.set_port(None).is_ok()) && r == a
}

/// RFC 7636 §4.2: BASE64URL(SHA-256(verifier)) is 43 characters.
fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The redirect back to the client: its redirect URI with `params` and `iss` (RFC 9207)
/// appended to the query it already has.
fn redirect_with(
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
    issuer: &str,
) -> Result<Url, OAuthError> {
    let mut url = Url::parse(redirect_uri)
        .map_err(|_| oauth_error(500, "server_error", "stored redirect URI does not parse"))?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", issuer);
    }
    Ok(url)
}

/// Every client, request, code and refresh-token family of the development issuer.
#[derive(Default)]
pub struct Grants {
    clients: HashMap<String, Client>,
    requests: HashMap<String, AuthRequest>,
    codes: HashMap<String, Code>,
    families: HashMap<String, Family>,
    /// SHA-256 of every refresh token handed out (current or used) → its family.
    refresh: HashMap<[u8; 32], String>,
}

impl Grants {
    /// Forgets what expired.
    fn purge(&mut self, now: i64) {
        self.requests.retain(|_, r| now - r.created < REQUEST_TTL);
        // A redeemed code is kept for its lifetime so a second redemption is recognised.
        self.codes.retain(|_, c| now - c.created < CODE_TTL);
        self.families.retain(|_, f| now - f.created < REFRESH_TTL);
        let families = &self.families;
        self.refresh.retain(|_, fam| families.contains_key(fam));
    }

    /// RFC 7591 registration from a JSON client metadata document. Returns the registered
    /// metadata (with `client_id`, and `client_secret` for a confidential client).
    pub fn register(&mut self, body: &[u8], now: i64) -> Result<Value, OAuthError> {
        let meta_err = |d: String| oauth_error(400, "invalid_client_metadata", d);
        let meta: Value = serde_json::from_slice(body)
            .map_err(|e| meta_err(format!("the body is not a JSON object: {e}")))?;
        let Some(meta) = meta.as_object() else {
            return Err(meta_err("the body is not a JSON object".into()));
        };
        let strings = |key: &str, default: &[&str]| -> Result<Vec<String>, OAuthError> {
            match meta.get(key) {
                None | Some(Value::Null) => Ok(default.iter().map(|s| s.to_string()).collect()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| meta_err(format!("{key} must be a list of strings")))
                    })
                    .collect(),
                Some(_) => Err(meta_err(format!("{key} must be a list of strings"))),
            }
        };
        let redirect_uris = strings("redirect_uris", &[])?;
        if redirect_uris.is_empty() {
            return Err(oauth_error(
                400,
                "invalid_redirect_uri",
                "redirect_uris is missing (a loopback URI such as http://127.0.0.1:PORT/callback)",
            ));
        }
        if redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(oauth_error(
                400,
                "invalid_redirect_uri",
                format!("at most {MAX_REDIRECT_URIS} redirect_uris"),
            ));
        }
        for uri in &redirect_uris {
            loopback_redirect(uri).map_err(|e| oauth_error(400, "invalid_redirect_uri", e))?;
        }
        let grant_types = strings("grant_types", &["authorization_code"])?;
        if let Some(g) = grant_types
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        {
            return Err(meta_err(format!(
                "grant type {g:?} cannot be registered here (authorization_code, refresh_token)"
            )));
        }
        let response_types = strings("response_types", &["code"])?;
        if response_types.iter().any(|r| r != "code") {
            return Err(meta_err("response_types may only hold \"code\"".into()));
        }
        let method = match meta.get("token_endpoint_auth_method") {
            None | Some(Value::Null) => "none",
            Some(Value::String(m))
                if matches!(
                    m.as_str(),
                    "none" | "client_secret_basic" | "client_secret_post"
                ) =>
            {
                m.as_str()
            }
            Some(other) => {
                return Err(meta_err(format!(
                    "token_endpoint_auth_method {other} is not supported (none, client_secret_basic, client_secret_post)"
                )))
            }
        };
        let name = match meta.get("client_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) => Some(n.chars().take(MAX_NAME).collect::<String>()),
            Some(_) => return Err(meta_err("client_name must be a string".into())),
        };
        let scope = match meta.get("scope") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(meta_err("scope must be a string".into())),
        };
        let id = random_token()?;
        let secret = if method == "none" {
            None
        } else {
            Some(random_token()?)
        };
        self.purge(now);
        make_room(&mut self.clients, |c| c.issued);
        self.clients.insert(
            id.clone(),
            Client {
                id: id.clone(),
                name: name.clone(),
                redirect_uris: redirect_uris.clone(),
                secret: secret.as_deref().map(sha256),
                grant_types: grant_types.clone(),
                issued: now,
            },
        );
        let mut answer = json!({
            "client_id": id,
            "client_id_issued_at": now,
            "redirect_uris": redirect_uris,
            "grant_types": grant_types,
            "response_types": response_types,
            "token_endpoint_auth_method": method,
        });
        if let Some(s) = secret {
            answer["client_secret"] = json!(s);
            answer["client_secret_expires_at"] = json!(0);
        }
        if let Some(n) = name {
            answer["client_name"] = json!(n);
        }
        if let Some(s) = scope {
            answer["scope"] = json!(s);
        }
        Ok(answer)
    }

    /// `GET /authorize`: checks the request; errors about the client or its redirect URI
    /// are shown, every other error goes back to the client (RFC 6749 §4.1.2.1).
    pub fn authorize(&mut self, q: &Params, policy: &Policy, issuer: &str, now: i64) -> Authorize {
        let client_id = match q.required("client_id") {
            Ok(c) => c,
            Err(e) => return Authorize::Error(e),
        };
        let Some(client) = self.clients.get(client_id) else {
            return Authorize::Error(oauth_error(
                400,
                "invalid_client",
                format!(
                    "unknown client_id {client_id:?}: register the client first (POST /register)"
                ),
            ));
        };
        let (redirect_uri, redirect_given) = match q.one("redirect_uri") {
            Err(e) => return Authorize::Error(e),
            Ok(Some(asked)) => {
                if !client
                    .redirect_uris
                    .iter()
                    .any(|r| redirect_matches(r, asked))
                {
                    return Authorize::Error(invalid_request(format!(
                        "redirect_uri {asked:?} is not registered for this client (registered: {})",
                        client.redirect_uris.join(", ")
                    )));
                }
                (asked.to_string(), true)
            }
            Ok(None) => match client.redirect_uris.as_slice() {
                [only] => (only.clone(), false),
                _ => {
                    return Authorize::Error(invalid_request(
                        "redirect_uri is missing and the client registered several",
                    ))
                }
            },
        };
        let state = match q.one("state") {
            Ok(s) => s.map(str::to_string),
            Err(e) => return Authorize::Error(e),
        };
        let back = |e: OAuthError| match redirect_with(
            &redirect_uri,
            &[("error", e.code), ("error_description", &e.description)],
            state.as_deref(),
            issuer,
        ) {
            Ok(url) => Authorize::Redirect(url),
            Err(e) => Authorize::Error(e),
        };
        let checked = (|| -> Result<AuthRequest, OAuthError> {
            match q.required("response_type")? {
                "code" => {}
                other => {
                    return Err(oauth_error(
                        400,
                        "unsupported_response_type",
                        format!("response_type {other:?}: only \"code\" is supported"),
                    ))
                }
            }
            if !client.grant_types.iter().any(|g| g == "authorization_code") {
                return Err(oauth_error(
                    400,
                    "unauthorized_client",
                    "the client did not register the authorization_code grant",
                ));
            }
            let challenge = q.one("code_challenge")?.ok_or_else(|| {
                invalid_request("code_challenge is missing: PKCE (S256) is required")
            })?;
            match q.one("code_challenge_method")? {
                Some("S256") => {}
                Some(other) => {
                    return Err(invalid_request(format!(
                        "code_challenge_method {other:?} is not supported: only S256"
                    )))
                }
                None => {
                    return Err(invalid_request(
                        "code_challenge_method is missing (it would mean \"plain\"): only S256",
                    ))
                }
            }
            if !valid_challenge(challenge) {
                return Err(invalid_request(
                    "code_challenge is not an S256 challenge (43 base64url characters)",
                ));
            }
            Ok(AuthRequest {
                client_id: client.id.clone(),
                client_name: client.name.clone(),
                redirect_uri: redirect_uri.clone(),
                redirect_given,
                state: state.clone(),
                challenge: challenge.to_string(),
                scope: policy.scope(q.one("scope")?)?,
                resource: policy.resource(&q.all("resource"))?,
                created: now,
            })
        })();
        let request = match checked {
            Ok(r) => r,
            Err(e) => return back(e),
        };
        let handle = match random_token() {
            Ok(h) => h,
            Err(e) => return back(e),
        };
        self.purge(now);
        make_room(&mut self.requests, |r| r.created);
        self.requests.insert(handle.clone(), request.clone());
        Authorize::Consent { handle, request }
    }

    /// The consent page's answer for the request `handle`: the redirect back to the client,
    /// with a code when approved, `access_denied` otherwise. A handle works once.
    pub fn decide(
        &mut self,
        handle: &str,
        approve: bool,
        issuer: &str,
        now: i64,
    ) -> Result<Url, OAuthError> {
        self.purge(now);
        let request = self.requests.remove(handle).ok_or_else(|| {
            invalid_request("unknown or expired authorization request (start the login again)")
        })?;
        if !approve {
            return redirect_with(
                &request.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the user denied the request"),
                ],
                request.state.as_deref(),
                issuer,
            );
        }
        let code = random_token()?;
        let url = redirect_with(
            &request.redirect_uri,
            &[("code", &code)],
            request.state.as_deref(),
            issuer,
        )?;
        make_room(&mut self.codes, |c| c.created);
        self.codes.insert(
            code,
            Code {
                request,
                created: now,
                redeemed: None,
            },
        );
        Ok(url)
    }

    /// Authenticates a registered client at the token endpoint.
    fn client(&self, auth: &ClientAuth) -> Result<&Client, OAuthError> {
        let (id, secret) = auth.claimed()?;
        let client = self
            .clients
            .get(&id)
            .ok_or_else(|| oauth_error(401, "invalid_client", "unknown client"))?;
        match (&client.secret, secret) {
            (None, None) => Ok(client),
            (None, Some(_)) => Err(oauth_error(
                401,
                "invalid_client",
                "this client is public (token_endpoint_auth_method none): no secret",
            )),
            (Some(_), None) => Err(oauth_error(
                401,
                "invalid_client",
                "this client must authenticate with its client_secret",
            )),
            (Some(want), Some(got)) => {
                if aws_lc_rs::constant_time::verify_slices_are_equal(want, &sha256(&got)).is_ok() {
                    Ok(client)
                } else {
                    Err(oauth_error(401, "invalid_client", "wrong client_secret"))
                }
            }
        }
    }

    /// Starts a refresh-token family; returns its first token.
    fn new_family(
        &mut self,
        client_id: &str,
        scope: &str,
        resource: &str,
        now: i64,
    ) -> Result<(String, String), OAuthError> {
        let id = random_token()?;
        let token = random_token()?;
        if self.families.len() >= MAX_ENTRIES {
            make_room(&mut self.families, |f| f.created);
            let families = &self.families;
            self.refresh.retain(|_, fam| families.contains_key(fam));
        }
        self.families.insert(
            id.clone(),
            Family {
                client_id: client_id.to_string(),
                scope: scope.to_string(),
                resource: resource.to_string(),
                created: now,
                revoked: false,
                current: sha256(&token),
            },
        );
        self.refresh.insert(sha256(&token), id.clone());
        Ok((id, token))
    }

    fn revoke_family(&mut self, family: &str) {
        if let Some(f) = self.families.get_mut(family) {
            f.revoked = true;
        }
    }

    /// `grant_type=authorization_code`.
    pub fn redeem_code(
        &mut self,
        form: &Params,
        auth: &ClientAuth,
        policy: &Policy,
        now: i64,
    ) -> Result<Granted, OAuthError> {
        self.purge(now);
        let client = self.client(auth)?;
        let client_id = client.id.clone();
        let refreshes = client.grant_types.iter().any(|g| g == "refresh_token");
        let code = form.required("code")?;
        let verifier = form.one("code_verifier")?;
        let redirect_uri = form.one("redirect_uri")?;
        let resource = form.all("resource");
        let Some(entry) = self.codes.get_mut(code) else {
            return Err(invalid_grant("unknown or expired authorization code"));
        };
        if entry.request.client_id != client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if let Some(family) = entry.redeemed.clone() {
            // RFC 6749 §4.1.2: revoke what the code gave the first time.
            if let Some(f) = family {
                self.revoke_family(&f);
            }
            return Err(invalid_grant(
                "the authorization code was already used; the tokens issued with it are revoked",
            ));
        }
        // Whatever follows, this was the code's one redemption.
        entry.redeemed = Some(None);
        let request = entry.request.clone();
        let verifier = verifier
            .ok_or_else(|| invalid_request("code_verifier is missing: PKCE is required"))?;
        if !valid_verifier(verifier) {
            return Err(invalid_request(
                "code_verifier must be 43 to 128 unreserved characters (RFC 7636)",
            ));
        }
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            computed.as_bytes(),
            request.challenge.as_bytes(),
        )
        .is_err()
        {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge (PKCE S256)",
            ));
        }
        match (request.redirect_given, redirect_uri) {
            (true, Some(r)) if r == request.redirect_uri => {}
            (true, Some(r)) => {
                return Err(invalid_grant(format!(
                    "redirect_uri {r:?} differs from the authorization request's"
                )))
            }
            (true, None) => {
                return Err(invalid_request(
                    "redirect_uri is missing (the authorization request had one)",
                ))
            }
            (false, Some(r)) if r != request.redirect_uri => {
                return Err(invalid_grant(format!(
                    "redirect_uri {r:?} differs from the registered one"
                )))
            }
            (false, _) => {}
        }
        if !resource.is_empty() && policy.resource(&resource)? != request.resource {
            return Err(oauth_error(
                400,
                "invalid_target",
                "resource differs from the authorization request's",
            ));
        }
        // RFC 7591 §2: a client that did not register the refresh_token grant gets none.
        let refresh_token = if refreshes {
            let (family, token) =
                self.new_family(&client_id, &request.scope, &request.resource, now)?;
            if let Some(entry) = self.codes.get_mut(code) {
                entry.redeemed = Some(Some(family));
            }
            Some(token)
        } else {
            None
        };
        Ok(Granted {
            client_id,
            subject: SUBJECT.to_string(),
            scope: request.scope,
            resource: request.resource,
            refresh_token,
        })
    }

    /// `grant_type=refresh_token`: rotates the token; a used one presented again revokes
    /// its family.
    pub fn refresh(
        &mut self,
        form: &Params,
        auth: &ClientAuth,
        policy: &Policy,
        now: i64,
    ) -> Result<Granted, OAuthError> {
        self.purge(now);
        let client = self.client(auth)?;
        if !client.grant_types.iter().any(|g| g == "refresh_token") {
            return Err(oauth_error(
                400,
                "unauthorized_client",
                "the client did not register the refresh_token grant",
            ));
        }
        let client_id = client.id.clone();
        let token = form.required("refresh_token")?;
        let hash = sha256(token);
        let Some(family_id) = self.refresh.get(&hash).cloned() else {
            return Err(invalid_grant("unknown or expired refresh token"));
        };
        let Some(family) = self.families.get(&family_id) else {
            return Err(invalid_grant("unknown or expired refresh token"));
        };
        if family.client_id != client_id {
            return Err(invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if family.revoked {
            return Err(invalid_grant(
                "the refresh token was revoked (its family saw a reused token or code)",
            ));
        }
        if family.current != hash {
            self.revoke_family(&family_id);
            return Err(invalid_grant(
                "the refresh token was already used: the whole family is revoked, log in again",
            ));
        }
        let scope = match form.one("scope")? {
            None => family.scope.clone(),
            Some(asked) => {
                let asked = policy.scope(Some(asked))?;
                let had: Vec<&str> = family.scope.split(' ').collect();
                if let Some(extra) = asked.split(' ').find(|s| !had.contains(s)) {
                    return Err(oauth_error(
                        400,
                        "invalid_scope",
                        format!("{extra:?} was not granted to this refresh token"),
                    ));
                }
                asked
            }
        };
        let resource = form.all("resource");
        if !resource.is_empty() && policy.resource(&resource)? != family.resource {
            return Err(oauth_error(
                400,
                "invalid_target",
                "resource differs from the one the refresh token was issued for",
            ));
        }
        let resource = family.resource.clone();
        let next = random_token()?;
        if let Some(f) = self.families.get_mut(&family_id) {
            f.current = sha256(&next);
        }
        self.refresh.insert(sha256(&next), family_id);
        Ok(Granted {
            client_id,
            subject: SUBJECT.to_string(),
            scope,
            resource,
            refresh_token: Some(next),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const ISS: &str = "http://127.0.0.1:8081";
    const RES: &str = "http://127.0.0.1:8080/mcp";
    const CB: &str = "http://127.0.0.1:33333/callback";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    // RFC 7636 appendix B.
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn policy() -> Policy {
        Policy {
            scopes: vec!["mcp:admin".into(), "mcp:tools".into()],
            default_scope: "mcp:tools".into(),
            resources: vec![RES.into()],
        }
    }

    fn q(pairs: &[(&str, &str)]) -> Params {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        Params::parse(s.finish().as_bytes())
    }

    fn register(g: &mut Grants, meta: Value) -> Result<Value, OAuthError> {
        g.register(meta.to_string().as_bytes(), 1000)
    }

    fn public_client(g: &mut Grants) -> String {
        let r = register(
            g,
            json!({"redirect_uris": [CB], "grant_types": ["authorization_code", "refresh_token"], "client_name": "t"}),
        )
        .unwrap();
        r["client_id"].as_str().unwrap().to_string()
    }

    fn authorize_params<'a>(
        client: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut p = vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", CB),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", "st"),
            ("resource", RES),
            ("scope", "mcp:tools"),
        ];
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            if !v.is_empty() {
                p.push((k, v));
            }
        }
        p
    }

    /// Authorize and approve; returns the code.
    fn code(g: &mut Grants, client: &str) -> String {
        let Authorize::Consent { handle, .. } =
            g.authorize(&q(&authorize_params(client, &[])), &policy(), ISS, 1000)
        else {
            panic!("no consent page");
        };
        let url = g.decide(&handle, true, ISS, 1001).unwrap();
        let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["state"], "st");
        assert_eq!(pairs["iss"], ISS);
        pairs["code"].clone()
    }

    fn redeem(
        g: &mut Grants,
        client: &str,
        code: &str,
        extra: &[(&str, &str)],
    ) -> Result<Granted, OAuthError> {
        let mut p = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", CB),
            ("client_id", client),
            ("resource", RES),
        ];
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            if !v.is_empty() {
                p.push((k, v));
            }
        }
        let form = q(&p);
        let auth = ClientAuth {
            basic: None,
            form: &form,
        };
        g.redeem_code(&form, &auth, &policy(), 1002)
    }

    fn refresh(g: &mut Grants, client: &str, token: &str) -> Result<Granted, OAuthError> {
        let form = q(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", client),
        ]);
        let auth = ClientAuth {
            basic: None,
            form: &form,
        };
        g.refresh(&form, &auth, &policy(), 1003)
    }

    #[test]
    fn registration_accepts_loopback_redirects_only() {
        let mut g = Grants::default();
        for ok in [
            "http://127.0.0.1:1234/cb",
            "http://[::1]:5/x",
            "http://localhost:6274/oauth/callback",
            "https://localhost/cb?x=1",
        ] {
            assert!(
                register(&mut g, json!({ "redirect_uris": [ok] })).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1.example.com/cb",
            "http://localhost.evil.com/cb",
            "myapp://callback",
            "http://user@127.0.0.1/cb",
            "http://127.0.0.1/cb#frag",
            "/relative",
        ] {
            let e = register(&mut g, json!({ "redirect_uris": [bad] })).unwrap_err();
            assert_eq!(e.code, "invalid_redirect_uri", "{bad}");
        }
        assert_eq!(
            register(&mut g, json!({})).unwrap_err().code,
            "invalid_redirect_uri"
        );
        for meta in [
            json!({"redirect_uris": [CB], "grant_types": ["client_credentials"]}),
            json!({"redirect_uris": [CB], "response_types": ["token"]}),
            json!({"redirect_uris": [CB], "token_endpoint_auth_method": "private_key_jwt"}),
            json!({"redirect_uris": CB}),
            json!([CB]),
        ] {
            assert_eq!(
                register(&mut g, meta.clone()).unwrap_err().code,
                "invalid_client_metadata",
                "{meta}"
            );
        }
        let r = register(
            &mut g,
            json!({"redirect_uris": [CB], "token_endpoint_auth_method": "client_secret_basic"}),
        )
        .unwrap();
        assert!(r["client_secret"].is_string());
        let r = register(&mut g, json!({"redirect_uris": [CB]})).unwrap();
        assert!(r.get("client_secret").is_none());
        assert_eq!(r["token_endpoint_auth_method"], "none");
    }

    #[test]
    fn registrations_are_bounded() {
        let mut g = Grants::default();
        for _ in 0..MAX_ENTRIES + 5 {
            public_client(&mut g);
        }
        assert_eq!(g.clients.len(), MAX_ENTRIES);
    }

    #[test]
    fn code_flow_grants_the_asked_scope_and_resource() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let code = code(&mut g, &c);
        let granted = redeem(&mut g, &c, &code, &[]).unwrap();
        assert_eq!(granted.client_id, c);
        assert_eq!(granted.subject, SUBJECT);
        assert_eq!(granted.scope, "mcp:tools");
        assert_eq!(granted.resource, RES);
    }

    #[test]
    fn authorize_errors_before_the_redirect_is_known_are_shown() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let p = policy();
        for (what, extra) in [
            ("unknown client", vec![("client_id", "nope")]),
            (
                "unregistered redirect",
                vec![("redirect_uri", "http://127.0.0.1:33333/other")],
            ),
            (
                "other host",
                vec![("redirect_uri", "http://localhost:33333/callback")],
            ),
            ("duplicate client_id", vec![]),
        ] {
            let mut params = authorize_params(&c, &extra);
            if what == "duplicate client_id" {
                params.push(("client_id", "x"));
            }
            match g.authorize(&q(&params), &p, ISS, 1000) {
                Authorize::Error(e) => assert_eq!(e.status, 400, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        // A loopback IP literal may change its port (RFC 8252 §7.3).
        let moved = authorize_params(&c, &[("redirect_uri", "http://127.0.0.1:40000/callback")]);
        assert!(matches!(
            g.authorize(&q(&moved), &p, ISS, 1000),
            Authorize::Consent { .. }
        ));
    }

    #[test]
    fn authorize_errors_go_back_to_the_client() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let p = policy();
        for (extra, code) in [
            (vec![("code_challenge_method", "plain")], "invalid_request"),
            (vec![("code_challenge_method", "")], "invalid_request"),
            (vec![("code_challenge", "")], "invalid_request"),
            (vec![("code_challenge", "short")], "invalid_request"),
            (
                vec![("response_type", "token")],
                "unsupported_response_type",
            ),
            (vec![("scope", "mcp:tools root")], "invalid_scope"),
            (
                vec![("resource", "http://127.0.0.1:8080/other")],
                "invalid_target",
            ),
        ] {
            let params = authorize_params(&c, &extra);
            let Authorize::Redirect(url) = g.authorize(&q(&params), &p, ISS, 1000) else {
                panic!("{extra:?}: not redirected");
            };
            let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
            assert_eq!(pairs["error"], code, "{extra:?}");
            assert_eq!(pairs["state"], "st");
            assert_eq!(pairs["iss"], ISS);
            assert!(url.as_str().starts_with(CB));
        }
        let mut two = authorize_params(&c, &[]);
        two.push(("resource", RES));
        let Authorize::Redirect(url) = g.authorize(&q(&two), &p, ISS, 1000) else {
            panic!("two resources");
        };
        assert!(url.as_str().contains("error=invalid_target"));
    }

    #[test]
    fn denied_and_used_requests() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let Authorize::Consent { handle, .. } =
            g.authorize(&q(&authorize_params(&c, &[])), &policy(), ISS, 1000)
        else {
            panic!()
        };
        let url = g.decide(&handle, false, ISS, 1001).unwrap();
        assert!(url.as_str().contains("error=access_denied"));
        assert_eq!(
            g.decide(&handle, true, ISS, 1001).unwrap_err().code,
            "invalid_request"
        );
        // Expired.
        let Authorize::Consent { handle, .. } =
            g.authorize(&q(&authorize_params(&c, &[])), &policy(), ISS, 1000)
        else {
            panic!()
        };
        assert!(g.decide(&handle, true, ISS, 1000 + REQUEST_TTL).is_err());
    }

    #[test]
    fn pkce_is_checked() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let other = "A".repeat(43);
        let code1 = code(&mut g, &c);
        assert_eq!(
            redeem(&mut g, &c, &code1, &[("code_verifier", &other)])
                .unwrap_err()
                .code,
            "invalid_grant"
        );
        // The failed attempt used the code up.
        assert_eq!(
            redeem(&mut g, &c, &code1, &[]).unwrap_err().code,
            "invalid_grant"
        );
        let code2 = code(&mut g, &c);
        assert_eq!(
            redeem(&mut g, &c, &code2, &[("code_verifier", "")])
                .unwrap_err()
                .code,
            "invalid_request"
        );
        let code3 = code(&mut g, &c);
        assert_eq!(
            redeem(&mut g, &c, &code3, &[("code_verifier", "short")])
                .unwrap_err()
                .code,
            "invalid_request"
        );
    }

    #[test]
    fn code_checks_client_redirect_and_resource() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let c2 = public_client(&mut g);
        let k = code(&mut g, &c);
        assert_eq!(
            redeem(&mut g, &c2, &k, &[]).unwrap_err().code,
            "invalid_grant"
        );
        // Another client's attempt does not use the code up.
        assert!(redeem(&mut g, &c, &k, &[]).is_ok());
        let k = code(&mut g, &c);
        assert_eq!(
            redeem(
                &mut g,
                &c,
                &k,
                &[("redirect_uri", "http://127.0.0.1:33333/x")]
            )
            .unwrap_err()
            .code,
            "invalid_grant"
        );
        let k = code(&mut g, &c);
        assert_eq!(
            redeem(&mut g, &c, &k, &[("redirect_uri", "")])
                .unwrap_err()
                .code,
            "invalid_request"
        );
        let k = code(&mut g, &c);
        assert_eq!(
            redeem(&mut g, &c, &k, &[("resource", "http://127.0.0.1:8080/x")])
                .unwrap_err()
                .code,
            "invalid_target"
        );
        let k = code(&mut g, &c);
        assert_eq!(
            redeem(&mut g, &c, &k, &[("client_id", "unknown")])
                .unwrap_err()
                .status,
            401
        );
        // Expired.
        let k = code(&mut g, &c);
        let form = q(&[
            ("grant_type", "authorization_code"),
            ("code", &k),
            ("code_verifier", VERIFIER),
            ("redirect_uri", CB),
            ("client_id", &c),
        ]);
        let auth = ClientAuth {
            basic: None,
            form: &form,
        };
        assert_eq!(
            g.redeem_code(&form, &auth, &policy(), 1001 + CODE_TTL)
                .unwrap_err()
                .code,
            "invalid_grant"
        );
    }

    #[test]
    fn code_reuse_revokes_the_family() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let k = code(&mut g, &c);
        let first = redeem(&mut g, &c, &k, &[]).unwrap();
        let e = redeem(&mut g, &c, &k, &[]).unwrap_err();
        assert_eq!(e.code, "invalid_grant");
        assert!(e.description.contains("already used"), "{e:?}");
        assert_eq!(
            refresh(&mut g, &c, first.refresh_token.as_deref().unwrap())
                .unwrap_err()
                .code,
            "invalid_grant"
        );
    }

    #[test]
    fn refresh_rotates_and_reuse_revokes_the_family() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let k = code(&mut g, &c);
        let r0 = redeem(&mut g, &c, &k, &[])
            .unwrap()
            .refresh_token
            .clone()
            .unwrap();
        let r1 = refresh(&mut g, &c, &r0).unwrap();
        assert_ne!(r1.refresh_token.clone().unwrap(), r0);
        assert_eq!(r1.scope, "mcp:tools");
        assert_eq!(r1.resource, RES);
        let r2 = refresh(&mut g, &c, r1.refresh_token.as_deref().unwrap())
            .unwrap()
            .refresh_token
            .clone()
            .unwrap();
        // r0 again: reuse. The family is revoked, so r2 (the current one) no longer works.
        let e = refresh(&mut g, &c, &r0).unwrap_err();
        assert!(e.description.contains("already used"), "{e:?}");
        let e = refresh(&mut g, &c, &r2).unwrap_err();
        assert!(e.description.contains("revoked"), "{e:?}");
        // Another client cannot use a token, and that does not count as reuse.
        let c2 = public_client(&mut g);
        let k = code(&mut g, &c);
        let r = redeem(&mut g, &c, &k, &[])
            .unwrap()
            .refresh_token
            .clone()
            .unwrap();
        assert_eq!(refresh(&mut g, &c2, &r).unwrap_err().code, "invalid_grant");
        assert!(refresh(&mut g, &c, &r).is_ok());
    }

    #[test]
    fn no_refresh_token_without_the_refresh_grant() {
        let mut g = Grants::default();
        // RFC 7591: grant_types defaults to authorization_code alone.
        let r = register(&mut g, json!({"redirect_uris": [CB]})).unwrap();
        let c = r["client_id"].as_str().unwrap().to_string();
        let k = code(&mut g, &c);
        let granted = redeem(&mut g, &c, &k, &[]).unwrap();
        assert_eq!(granted.refresh_token, None);
        // A refresh token of another client's family is refused as unauthorized first.
        let other = public_client(&mut g);
        let k = code(&mut g, &other);
        let theirs = redeem(&mut g, &other, &k, &[])
            .unwrap()
            .refresh_token
            .unwrap();
        assert_eq!(
            refresh(&mut g, &c, &theirs).unwrap_err().code,
            "unauthorized_client"
        );
        // The one that registered it gets one, and it works.
        assert!(refresh(&mut g, &other, &theirs).is_ok());
    }

    #[test]
    fn refresh_may_narrow_but_not_widen() {
        let mut g = Grants::default();
        let c = public_client(&mut g);
        let Authorize::Consent { handle, .. } = g.authorize(
            &q(&authorize_params(
                &c,
                &[("scope", "mcp:tools mcp:admin offline_access")],
            )),
            &policy(),
            ISS,
            1000,
        ) else {
            panic!()
        };
        let url = g.decide(&handle, true, ISS, 1000).unwrap();
        let k = url
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .to_string();
        let r = redeem(&mut g, &c, &k, &[]).unwrap();
        assert_eq!(r.scope, "mcp:tools mcp:admin");
        let form = q(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", r.refresh_token.as_deref().unwrap()),
            ("client_id", &c),
            ("scope", "mcp:tools"),
        ]);
        let auth = ClientAuth {
            basic: None,
            form: &form,
        };
        let narrowed = g.refresh(&form, &auth, &policy(), 1003).unwrap();
        assert_eq!(narrowed.scope, "mcp:tools");

        let k = code(&mut g, &c);
        let r = redeem(&mut g, &c, &k, &[]).unwrap();
        let form = q(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", r.refresh_token.as_deref().unwrap()),
            ("client_id", &c),
            ("scope", "mcp:tools mcp:admin"),
        ]);
        let auth = ClientAuth {
            basic: None,
            form: &form,
        };
        assert_eq!(
            g.refresh(&form, &auth, &policy(), 1003).unwrap_err().code,
            "invalid_scope"
        );
    }

    #[test]
    fn confidential_clients_authenticate() {
        let mut g = Grants::default();
        let r = register(
            &mut g,
            json!({"redirect_uris": [CB], "token_endpoint_auth_method": "client_secret_basic"}),
        )
        .unwrap();
        let (id, secret) = (
            r["client_id"].as_str().unwrap(),
            r["client_secret"].as_str().unwrap(),
        );
        let k = code(&mut g, id);
        let form = q(&[
            ("grant_type", "authorization_code"),
            ("code", &k),
            ("code_verifier", VERIFIER),
            ("redirect_uri", CB),
        ]);
        let wrong = ClientAuth {
            basic: Some((id.into(), "wrong".into())),
            form: &form,
        };
        assert_eq!(
            g.redeem_code(&form, &wrong, &policy(), 1002)
                .unwrap_err()
                .status,
            401
        );
        let right = ClientAuth {
            basic: Some((id.into(), secret.into())),
            form: &form,
        };
        assert!(g.redeem_code(&form, &right, &policy(), 1002).is_ok());
        // Without a secret.
        let k = code(&mut g, id);
        let form = q(&[
            ("grant_type", "authorization_code"),
            ("code", &k),
            ("code_verifier", VERIFIER),
            ("redirect_uri", CB),
            ("client_id", id),
        ]);
        let none = ClientAuth {
            basic: None,
            form: &form,
        };
        assert_eq!(
            g.redeem_code(&form, &none, &policy(), 1002)
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn redirect_matching() {
        assert!(redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:1/cb"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:2/cb"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:2/cb"
        ));
        assert!(redirect_matches("http://[::1]:1/cb", "http://[::1]:9/cb"));
        assert!(!redirect_matches(
            "http://localhost:1/cb",
            "http://localhost:2/cb"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:1/cb2"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:1/cb?x=1"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/cb",
            "https://127.0.0.1:1/cb"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.2:1/cb"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1:1/cb",
            "http://127.0.0.1:1/cb#x"
        ));
    }

    #[test]
    fn params_refuse_duplicates_but_not_resources() {
        let p = Params::parse(b"a=1&a=2&resource=x&resource=y&empty=");
        assert_eq!(p.one("a").unwrap_err().code, "invalid_request");
        assert_eq!(p.all("resource"), vec!["x", "y"]);
        assert_eq!(p.one("empty").unwrap(), None);
        assert_eq!(p.required("empty").unwrap_err().code, "invalid_request");
    }
}
