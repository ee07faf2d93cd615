//! Identity headers: what the upstream learns about the caller, and only from us.
//!
//! The last step before the upstream. Client-sent copies of the identity headers are
//! removed on every route (any case; `_` counts as `-`, since some stacks fold them),
//! as are the identity headers other authenticating proxies set (oauth2-proxy, Pomerium,
//! Cloudflare Access, AWS ALB, Azure App Service, Google IAP, Authelia, authentik...),
//! headers the client lists in `Connection` (so a client cannot make a proxy
//! further along drop the headers we add), hop-by-hop headers, forwarding headers and
//! method/URL override headers, and the API key header (unless `forward_token`, like
//! `Authorization`). Then the gateway sets its own values from the verified principal,
//! including `X-Auth-Method` (`oauth` or `api_key`). The path sent upstream is the
//! normalized path that was authorized.
//!
//! The step is two plain functions: [`upstream_request`] computes, before anything is sent
//! upstream, the target and every header value (a value that cannot be a header refuses
//! the request with 500: never forwarded without its identity), and [`apply`] writes them
//! on the upstream request (an error there fails the request the same way). It owns a
//! route's `identity_headers`, `forward_token`, `preserve_host` and `rewrite_prefix`
//! ([`Forwarding`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use pingora_http::RequestHeader;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::compile::CompileError;
use crate::error::{GatewayFailure, Refusal};
use crate::listeners::PublicUrl;
use crate::path;
use crate::principal::{AuthMethod, Principal};

/// Headers never forwarded as sent by the client.
const STRIPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    // The gateway sets its own (`observe::request_id`) after stripping: any other spelling of
    // the client's would reach the upstream unchecked.
    "x-request-id",
    // A DPoP proof is for us; the upstream never sees it (MCP: no token passthrough).
    "dpop",
    // Client addresses as other proxies assert them.
    "true-client-ip",
    "cf-connecting-ip",
    "client-ip",
    "x-cluster-client-ip",
    "forwarded-for",
    // Identities and credentials asserted by API gateways (Kong: X-Credential-Identifier,
    // X-Userinfo; generic JWT filters: X-Jwt-Payload; token relays: X-Auth-Token).
    "x-credential-identifier",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
    "x-authorization",
    "x-principal",
    "x-proxy-user",
    "x-groups",
    "x-roles",
    "x-originating-ip",
    "fastly-client-ip",
    // Identity asserted by other authenticating proxies, which an upstream deployed
    // behind one of them trusts (see OTHER_PROXY_PREFIXES for whole families).
    "x-remote-user",
    "x-remote-group",
    "x-remote-groups",
    "x-remote-email",
    "x-user",
    "x-email",
    "x-username",
    "x-user-id",
    "x-auth-user",
    "x-auth-email",
    "gap-auth",
    "gap-signature",
    "x-client-cert",
    "x-client-dn",
    "x-client-verify",
    "x-arr-clientcert",
    "client-cert",
    "client-cert-chain",
];

/// Header families other proxies use to pass an authenticated identity upstream: removed
/// whatever follows the prefix (compared with `_` as `-`).
const OTHER_PROXY_PREFIXES: &[&str] = &[
    // Every X-Forwarded and X-Forwarded-* (the gateway sets its own -For, -Proto, -Host):
    // oauth2-proxy's -User, -Email, -Preferred-Username, -Groups, -Access-Token; Envoy's
    // -Client-Cert.
    "x-forwarded",
    // The request as a front proxy says it was: X-Original-URI, -Method, -Forwarded-For...
    "x-original-",
    // Envoy's own headers (X-Envoy-Original-Path, -External-Address...): Envoy strips them
    // from external clients, so an upstream behind it trusts them.
    "x-envoy-",
    // Client addresses and certificates: X-Client-IP, X-Client-Cert, -Dn, -Verify...
    "x-client-",
    // Every X-Auth-* (ours are set after stripping): X-Auth-Token, -User, -Email...
    "x-auth-",
    // X-Authenticated-User, X-Authenticated-Userid (Kong), X-Authenticated-Groups...
    "x-authenticated-",
    // Kong: X-Consumer-ID, -Username, -Custom-ID, -Groups
    "x-consumer-",
    // mod_auth_openidc: OIDC_CLAIM_* (as `oidc-claim-`), OIDC_access_token...
    "oidc-claim-",
    "oidc-access-token",
    "oidc-id-token",
    // Tailscale serve: Tailscale-User-Login, -Name, -Profile-Pic
    "tailscale-user-",
    // Generic: X-User-Email, X-User-Groups...
    "x-user-",
    // X-Remote-User, -Group(s), -Email, -Ip, -Addr...
    "x-remote-",
    // Kong's JWT plugin (X-Kong-Jwt-Claim-*), SPIFFE ids, OIDC filters, IAP and App Engine
    // users, Vercel client addresses, JWT assertions (X-Jwt-Payload, X-Jwt-Assertion).
    "x-kong-",
    "x-spiffe-",
    "x-oidc-",
    "x-iap-",
    "x-appengine-user-",
    "x-vercel-",
    "x-jwt-",
    // oauth2-proxy (nginx auth_request mode)
    "x-auth-request-",
    // Pomerium: X-Pomerium-Jwt-Assertion, X-Pomerium-Claim-*
    "x-pomerium-",
    // Cloudflare Access: Cf-Access-Jwt-Assertion, Cf-Access-Authenticated-User-Email...
    "cf-access-",
    // AWS ALB: X-Amzn-Oidc-Data, -Identity, -Accesstoken
    "x-amzn-oidc-",
    // Azure App Service: X-MS-CLIENT-PRINCIPAL, -ID, -NAME, -IDP; X-MS-TOKEN-*
    "x-ms-client-principal",
    "x-ms-token-",
    // Google IAP: X-Goog-Authenticated-User-Email, -Id; X-Goog-Iap-Jwt-Assertion
    "x-goog-authenticated-user-",
    "x-goog-iap-",
    // Kubernetes authenticating proxy: X-Remote-Extra-*
    "x-remote-extra-",
    // Authelia: Remote-User, Remote-Groups, Remote-Email, Remote-Name
    "remote-",
    // authentik: X-Authentik-Username, -Groups, -Email, -Jwt, -Meta-*
    "x-authentik-",
    // Vouch Proxy: X-Vouch-User, X-Vouch-Idp-Claims-*
    "x-vouch-",
    // Grafana-style auth proxy: X-Webauth-User
    "x-webauth-",
    // nginx/HAProxy client certificate headers: X-SSL-Client-Cert, -DN, -Verify...
    "x-ssl-client-",
    "ssl-client-",
];

/// The default identity header names: stripped even on routes that renamed theirs, so
/// an upstream reading the defaults can never see a client-sent value.
const DEFAULT_IDENTITY: &[&str] = &[
    "x-auth-subject",
    "x-auth-client-id",
    "x-auth-scopes",
    "x-auth-issuer",
    "x-auth-method",
];

/// Headers a `Connection` list may not remove: they frame the message or route it.
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
];

/// `name` (lower-case) equals `target` (lower-case, with `-`) when `_` counts as `-`.
fn folded_eq(name: &str, target: &str) -> bool {
    name.len() == target.len() && folded_prefix(name, target)
}

/// `name` starts with `prefix` when `_` counts as `-`.
fn folded_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// A token whose `sub` is the empty string: the upstream would get an empty subject
/// header, which many read as "no user" or match against a default. Refused on every
/// route (the subject header is always sent). A token without `sub` (client credentials)
/// is accepted: no subject header is sent, and a client-sent one is stripped.
pub fn check_subject(p: &Principal) -> Result<(), Refusal> {
    match p.subject.as_deref() {
        Some("") => Err(Refusal::InvalidToken("token has an empty sub")),
        _ => Ok(()),
    }
}

fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Percent-encode bytes outside visible ASCII (space and `%` included) so a claim can
/// never inject header syntax, smuggle non-ASCII upstream, or lose leading or trailing
/// spaces to header trimming (which would make ` alice` and `alice` the same subject).
pub fn header_safe(value: &str) -> Cow<'_, str> {
    if value.bytes().all(is_safe) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if is_safe(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Visible ASCII other than `%`: sent as is by [`header_safe`].
fn is_safe(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'%'
}

// ---------------------------------------------------------------------------------------------
// A route's forwarding settings: `identity_headers`, `forward_token`, `preserve_host`,
// `rewrite_prefix`
// ---------------------------------------------------------------------------------------------

/// A route's `identity_headers`.
#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct FileIdentityHeaders {
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Option<String>,
    pub issuer: Option<String>,
    pub method: Option<String>,
}

/// The names of the identity headers a route sets.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub subject: http::HeaderName,
    pub client_id: http::HeaderName,
    pub scopes: http::HeaderName,
    pub issuer: http::HeaderName,
    /// `oauth` or `api_key`.
    pub method: http::HeaderName,
    /// Lower-cased names with `_` folded to `-`, used to strip client-sent copies.
    pub folded: [String; 5],
}

fn header_name(value: Option<String>, default: &str) -> Result<http::HeaderName, String> {
    let v = value.unwrap_or_else(|| default.to_string());
    http::HeaderName::from_bytes(v.as_bytes())
        .map_err(|_| format!("identity header name {v:?} is not a valid header name"))
}

fn fold_header_name(n: &str) -> String {
    n.to_ascii_lowercase().replace('_', "-")
}

fn compile_headers(f: FileIdentityHeaders) -> Result<IdentityHeaders, String> {
    let subject = header_name(f.subject, "X-Auth-Subject")?;
    let client_id = header_name(f.client_id, "X-Auth-Client-Id")?;
    let scopes = header_name(f.scopes, "X-Auth-Scopes")?;
    let issuer = header_name(f.issuer, "X-Auth-Issuer")?;
    let method = header_name(f.method, "X-Auth-Method")?;
    let folded = [
        fold_header_name(subject.as_str()),
        fold_header_name(client_id.as_str()),
        fold_header_name(scopes.as_str()),
        fold_header_name(issuer.as_str()),
        fold_header_name(method.as_str()),
    ];
    let reserved = [
        "authorization",
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
    ];
    for n in &folded {
        if reserved.contains(&n.as_str()) {
            return Err(format!("identity header name {n:?} is reserved"));
        }
    }
    let unique: HashSet<&String> = folded.iter().collect();
    if unique.len() != folded.len() {
        return Err("identity header names must be distinct".into());
    }
    Ok(IdentityHeaders {
        subject,
        client_id,
        scopes,
        issuer,
        method,
        folded,
    })
}

/// How a route forwards: the identity header names, what it passes through, and the path
/// rewrite.
#[derive(Debug)]
pub struct Forwarding {
    pub headers: IdentityHeaders,
    /// `forward_token`: `Authorization` and the API key header reach the upstream.
    pub forward_token: bool,
    /// `preserve_host`: the client's `Host` reaches the upstream.
    pub preserve_host: bool,
    /// The route's `path_prefix`, replaced by `rewrite` when set.
    pub path_prefix: String,
    pub rewrite: Option<String>,
    /// The API key header, stripped unless `forward_token`.
    pub api_key_header: Option<http::HeaderName>,
    /// The header `upstream_auth` sets (lower-case, `_` as `-`): a client-sent copy is
    /// stripped in every spelling, so an upstream folding `_` never reads the client's.
    pub credential_header: Option<String>,
    /// The `Host` the upstream receives (its authority) unless `preserve_host`.
    pub upstream_host: http::HeaderValue,
}

/// A route's forwarding settings, as the file gives them.
pub struct FileForwarding<'a> {
    pub identity_headers: FileIdentityHeaders,
    pub forward_token: bool,
    pub preserve_host: bool,
    pub path_prefix: &'a str,
    pub rewrite_prefix: Option<&'a str>,
    pub api_key_header: Option<&'a http::HeaderName>,
    pub upstream_authority: &'a str,
    /// The header the route's `upstream_auth` sets, if any.
    pub credential_header: Option<&'a http::HeaderName>,
}

impl Forwarding {
    pub fn compile(f: FileForwarding<'_>) -> Result<Forwarding, CompileError> {
        if let Some(rw) = f.rewrite_prefix.filter(|rw| *rw != "/") {
            crate::path::check_prefix(rw, "rewrite_prefix")
                .map_err(|e| CompileError::new("rewrite_prefix", e))?;
        }
        let headers = compile_headers(f.identity_headers)
            .map_err(|e| CompileError::new("identity_headers", e))?;
        let credential_header = f.credential_header.map(|h| fold_header_name(h.as_str()));
        if let Some(c) = &credential_header {
            if headers.folded.contains(c) || DEFAULT_IDENTITY.contains(&c.as_str()) {
                return Err(CompileError::new(
                    "upstream_auth.header",
                    format!("upstream_auth.header {c:?} is an identity header"),
                ));
            }
        }
        let upstream_host = http::HeaderValue::from_str(f.upstream_authority).map_err(|_| {
            CompileError::new(
                "upstream",
                "the upstream authority is not a valid Host value",
            )
        })?;
        Ok(Forwarding {
            headers,
            forward_token: f.forward_token,
            preserve_host: f.preserve_host,
            path_prefix: f.path_prefix.to_string(),
            rewrite: f.rewrite_prefix.map(str::to_string),
            api_key_header: f.api_key_header.cloned(),
            credential_header,
            upstream_host,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The identity step
// ---------------------------------------------------------------------------------------------

/// What the upstream receives in place of what the client sent: the request target and
/// the headers the gateway sets. Computed before anything is sent upstream (so a value
/// that cannot be a header refuses the request, 500), applied by [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The normalized, authorized path, rewritten if configured; the query as sent.
    pub target: String,
    /// Set in this order, each replacing any client-sent copy.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// A header value the gateway sets, or the refusal when it cannot be one.
fn value(name: &http::HeaderName, v: &str) -> Result<http::HeaderValue, Refusal> {
    http::HeaderValue::from_str(v).map_err(|_| {
        tracing::error!(header = %name, "an identity or forwarding header value cannot be set; refusing the request");
        Refusal::Gateway(GatewayFailure::Internal)
    })
}

/// The identity step: what the upstream will receive, from the verified principal only.
/// `query`: the request's query, passed through as sent.
pub fn upstream_request(
    fwd: &Forwarding,
    principal: Option<&Principal>,
    normalized_path: &str,
    query: Option<&str>,
    client_ip: Option<IpAddr>,
    public: &PublicUrl,
) -> Result<UpstreamRequest, Refusal> {
    let mut target = match &fwd.rewrite {
        Some(rw) => path::rewrite(normalized_path, &fwd.path_prefix, rw),
        None => normalized_path.to_string(),
    };
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    let mut headers = Vec::with_capacity(9);
    if !fwd.preserve_host {
        headers.push((http::header::HOST, fwd.upstream_host.clone()));
    }
    let mut set = |name: http::HeaderName, v: &str| -> Result<(), Refusal> {
        let v = value(&name, v)?;
        headers.push((name, v));
        Ok(())
    };
    if let Some(ip) = client_ip {
        set(
            http::HeaderName::from_static("x-forwarded-for"),
            &ip.to_string(),
        )?;
    }
    set(
        http::HeaderName::from_static("x-forwarded-proto"),
        &public.scheme,
    )?;
    set(
        http::HeaderName::from_static("x-forwarded-host"),
        &public.authority,
    )?;
    if let Some(p) = principal {
        let id = &fwd.headers;
        if let Some(s) = &p.subject {
            set(id.subject.clone(), &header_safe(s))?;
        }
        if let Some(c) = &p.client_id {
            set(id.client_id.clone(), &header_safe(c))?;
        }
        // Scopes are space-separated tokens; each is encoded, the separators kept.
        let scopes = if p.scopes.header_safe() {
            Cow::Borrowed(p.scopes.as_str())
        } else {
            let encoded: Vec<Cow<'_, str>> =
                p.scopes.as_str().split(' ').map(header_safe).collect();
            Cow::Owned(encoded.join(" "))
        };
        set(id.scopes.clone(), &scopes)?;
        if p.method != AuthMethod::ApiKey {
            set(id.issuer.clone(), &header_safe(&p.iss))?;
        }
        set(id.method.clone(), p.method.header_value())?;
    }
    Ok(UpstreamRequest { target, headers })
}

/// The headers of `req` that never reach the upstream as the client sent them: the lists
/// above, the identity headers (default and the route's), what `Connection` names, and the
/// credentials unless `forward_token`.
fn doomed(req: &RequestHeader, fwd: &Forwarding) -> Vec<http::HeaderName> {
    let connection_listed: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| fold(t.trim()))
        .filter(|t| !t.is_empty() && !PROTECTED.contains(&t.as_str()))
        .collect();
    req.headers
        .keys()
        .filter(|name| {
            // Names from the http crate are lower-case already: compare with `_` as `-`
            // without allocating (this runs for every header of every request).
            let n = name.as_str();
            let is = |target: &str| folded_eq(n, target);
            // Any spelling of the API key header (`X_Api_Key`) is the credential too: an
            // upstream that folds `_` into `-` would read it as the key.
            let credential = n == "authorization"
                || fwd
                    .api_key_header
                    .as_ref()
                    .is_some_and(|h| folded_eq(n, h.as_str()));
            if credential {
                // The credential headers pass exactly when `forward_token` says so, even
                // when their name falls in a family below (an API key header `X-Auth-Key`).
                return !fwd.forward_token;
            }
            STRIPPED.iter().any(|t| is(t))
                || OTHER_PROXY_PREFIXES.iter().any(|p| folded_prefix(n, p))
                || DEFAULT_IDENTITY.iter().any(|t| is(t))
                || fwd.headers.folded.iter().any(|t| is(t))
                || connection_listed.iter().any(|t| is(t))
                || fwd.credential_header.as_deref().is_some_and(is)
        })
        .cloned()
        .collect()
}

/// Rewrite the request the upstream will receive: strip what must not pass, set the
/// target and the headers of `plan`. An error (a header pingora refuses to set) means the
/// request must not be forwarded: the caller fails it (500 through `respond`).
pub fn apply(
    req: &mut RequestHeader,
    fwd: &Forwarding,
    plan: &UpstreamRequest,
) -> Result<(), String> {
    for name in doomed(req, fwd) {
        req.remove_header(&name);
    }
    join_cookies(req)?;
    if req.raw_path() != plan.target.as_bytes() {
        req.set_raw_path(plan.target.as_bytes())
            .map_err(|e| format!("cannot set the upstream path: {e}"))?;
    }
    for (name, v) in &plan.headers {
        req.insert_header(name.clone(), v.clone())
            .map_err(|e| format!("cannot set {name}: {e}"))?;
    }
    Ok(())
}

/// Several `cookie` fields (HTTP/2 clients split them, RFC 9113 §8.2.3) become one, joined
/// with `; `, as an HTTP/1.1 upstream must receive them (RFC 6265 §5.4: one `Cookie`).
fn join_cookies(req: &mut RequestHeader) -> Result<(), String> {
    let values: Vec<&[u8]> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(http::HeaderValue::as_bytes)
        .collect();
    if values.len() < 2 {
        return Ok(());
    }
    let joined = http::HeaderValue::from_bytes(&values.join(&b"; "[..]))
        .map_err(|e| format!("cannot join the cookie fields: {e}"))?;
    req.insert_header(http::header::COOKIE, joined)
        .map_err(|e| format!("cannot set cookie: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;
    use std::sync::Arc;

    fn config() -> Config {
        Config::from_yaml(
            "t",
            "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as'}]\nroutes:\n- {name: m, path_prefix: /gh, rewrite_prefix: /, upstream: 'http://127.0.0.1:3001'}\n",
        )
        .unwrap()
    }

    #[test]
    fn cookie_fields_are_joined() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.append_header("cookie", "a=1").unwrap();
        req.append_header("cookie", "b=2").unwrap();
        req.append_header("cookie", "c=3").unwrap();
        join_cookies(&mut req).unwrap();
        let all: Vec<_> = req.headers.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
    }

    #[test]
    fn strips_spoofed_identity_and_sets_ours() {
        let c = config();
        let route = &c.routes[0];
        let mut req = RequestHeader::build("POST", b"/gh/mcp?x=1", None).unwrap();
        for (k, v) in [
            ("x-auth-subject", "admin"),
            ("X_Auth_Subject", "admin"),
            ("X-AUTH-SCOPES", "all"),
            ("x_auth_method", "api_key"),
            ("authorization", "Bearer t"),
            ("connection", "keep-alive, X-Keep-Me-Not, Content-Length"),
            ("x-keep-me-not", "1"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-original-url", "/admin"),
            ("content-length", "2"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        let p = crate::principal::Principal {
            method: AuthMethod::Jwt,
            any_audience: false,
            iss: Arc::from("https://as"),
            issuer_name: Arc::from("a"),
            subject: Some("alice\r\nx: y".into()),
            client_id: Some("c1".into()),
            scopes: crate::scope::ScopeSet::parse("mcp:read"),
            audiences: Arc::new([]),
            exp: 0,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: None,
            iat: None,
            azp: None,
        };
        let plan = upstream_request(
            &route.forwarding,
            Some(&p),
            "/gh/mcp",
            req.uri.query(),
            "10.0.0.1".parse().ok(),
            &c.listeners.public,
        )
        .unwrap();
        apply(&mut req, &route.forwarding, &plan).unwrap();
        let get = |n: &str| {
            req.headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("x-auth-subject"), vec!["alice%0D%0Ax:%20y"]);
        assert_eq!(get("x-auth-scopes"), vec!["mcp:read"]);
        assert_eq!(get("x-auth-issuer"), vec!["https://as"]);
        assert_eq!(get("x-auth-method"), vec!["oauth"]);
        assert!(get("x_auth_method").is_empty());
        assert!(get("x_auth_subject").is_empty());
        assert!(get("authorization").is_empty());
        assert!(get("x-keep-me-not").is_empty());
        assert!(get("x-original-url").is_empty());
        assert_eq!(get("content-length"), vec!["2"]);
        assert_eq!(get("x-forwarded-for"), vec!["10.0.0.1"]);
        assert_eq!(get("host"), vec!["127.0.0.1:3001"]);
        assert_eq!(req.raw_path(), b"/mcp?x=1");
    }
}
