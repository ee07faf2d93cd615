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

use std::borrow::Cow;
use std::net::IpAddr;

use pingora_http::RequestHeader;

use crate::config::Route;
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
    // A DPoP proof is for us; the upstream never sees it (MCP: no token passthrough).
    "dpop",
    // Client addresses as other proxies assert them.
    "true-client-ip",
    "cf-connecting-ip",
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
    // Every X-Forwarded-* (the gateway sets its own -For, -Proto, -Host): oauth2-proxy's
    // -User, -Email, -Preferred-Username, -Groups, -Access-Token; Envoy's -Client-Cert.
    "x-forwarded-",
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
pub fn check_subject(p: &Principal) -> Result<(), crate::error::Refusal> {
    match p.subject.as_deref() {
        Some("") => Err(crate::error::Refusal::InvalidToken(
            "token has an empty sub",
        )),
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

/// Rewrite the request the upstream will receive.
pub fn prepare_upstream(
    req: &mut RequestHeader,
    route: &Route,
    principal: Option<&Principal>,
    normalized_path: &str,
    client_ip: Option<IpAddr>,
    public: &PublicUrl,
) {
    // 1. Collect every header to drop, by folded name.
    let connection_listed: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| fold(t.trim()))
        .filter(|t| !t.is_empty() && !PROTECTED.contains(&t.as_str()))
        .collect();
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            // Names from the http crate are lower-case already: compare with `_` as `-`
            // without allocating (this runs for every header of every request).
            let n = name.as_str();
            let is = |target: &str| folded_eq(n, target);
            STRIPPED.iter().any(|t| is(t))
                || OTHER_PROXY_PREFIXES.iter().any(|p| folded_prefix(n, p))
                || DEFAULT_IDENTITY.iter().any(|t| is(t))
                || route.identity.folded.iter().any(|t| is(t))
                || connection_listed.iter().any(|t| is(t))
                || (!route.forward_token
                    && (n == "authorization"
                        || route.api_key_header.as_ref().is_some_and(|h| *name == *h)))
        })
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }

    // 2. Path: the normalized, authorized path, rewritten if configured; query as sent.
    let mut target = match &route.rewrite_prefix {
        Some(rw) => path::rewrite(normalized_path, &route.path_prefix, rw),
        None => normalized_path.to_string(),
    };
    if let Some(q) = req.uri.query() {
        target.push('?');
        target.push_str(q);
    }
    if req.raw_path() != target.as_bytes() {
        let _ = req.set_raw_path(target.as_bytes());
    }

    // 3. Host and forwarding headers.
    if !route.preserve_host {
        let _ = req.insert_header(http::header::HOST, route.upstream.authority.as_str());
    }
    if let Some(ip) = client_ip {
        let _ = req.insert_header("x-forwarded-for", ip.to_string());
    }
    let _ = req.insert_header("x-forwarded-proto", public.scheme.as_str());
    let _ = req.insert_header("x-forwarded-host", public.authority.as_str());

    // 4. Identity, from the verified principal only.
    if let Some(p) = principal {
        let id = &route.identity;
        if let Some(s) = &p.subject {
            let _ = req.insert_header(&id.subject, &*header_safe(s));
        }
        if let Some(c) = &p.client_id {
            let _ = req.insert_header(&id.client_id, &*header_safe(c));
        }
        // Scopes are space-separated tokens; each is encoded, the separators kept.
        let scopes = if p.scopes.bytes().all(|b| b == b' ' || is_safe(b)) {
            Cow::Borrowed(&*p.scopes)
        } else {
            let encoded: Vec<Cow<'_, str>> = p.scopes.split(' ').map(header_safe).collect();
            Cow::Owned(encoded.join(" "))
        };
        let _ = req.insert_header(&id.scopes, &*scopes);
        if p.method != AuthMethod::ApiKey {
            let _ = req.insert_header(&id.issuer, &*header_safe(&p.iss));
        }
        let _ = req.insert_header(&id.method, p.method.header_value());
    }
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
            scopes: "mcp:read".into(),
            audiences: Arc::new([]),
            exp: 0,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: None,
            iat: None,
            azp: None,
        };
        prepare_upstream(
            &mut req,
            route,
            Some(&p),
            "/gh/mcp",
            "10.0.0.1".parse().ok(),
            &c.listeners.public,
        );
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
