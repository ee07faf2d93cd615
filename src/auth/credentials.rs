//! Credentials: what the client presented, and RFC 6750 §2 syntax errors.
//!
//! Second step of the request flow, before any token is looked at: exactly one
//! `Authorization` header, scheme compared case-insensitively, a token in `b64token`
//! syntax. A token in the query string is never honoured (MCP forbids it); presenting it
//! alongside a header is two methods at once and a 400 (RFC 6750 §2).
//!
//! On routes that accept legacy API keys, a key comes from the configured header
//! (`X-API-Key` by default) or `Authorization: ApiKey <key>`; a Bearer token takes
//! precedence on routes that also accept OAuth, and two keys are a 400.

use http::{HeaderMap, HeaderName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No usable credentials: no header, or a scheme we do not accept (`Basic`...).
    None,
    Bearer(&'a str),
    /// `Authorization: DPoP <token>`: a sender-constrained token; its proof is in the
    /// `DPoP` header (RFC 9449 §7.1).
    Dpop(&'a str),
    /// A legacy API key (only on routes that accept them).
    ApiKey(&'a str),
}

/// Malformed credentials: rendered as 400 `invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    MultipleAuthorization,
    HeaderAndQuery,
    EmptyToken,
    MalformedToken,
    TooLarge,
    MultipleApiKeys,
    MalformedApiKey,
}

impl CredentialError {
    pub fn describe(self) -> &'static str {
        match self {
            CredentialError::MultipleAuthorization => "more than one Authorization header",
            CredentialError::HeaderAndQuery => {
                "access token sent in both the Authorization header and the query string"
            }
            CredentialError::EmptyToken => "Bearer scheme without a token",
            CredentialError::MalformedToken => "Bearer token is not valid b64token syntax",
            CredentialError::TooLarge => "Authorization header is too large",
            CredentialError::MultipleApiKeys => "more than one API key",
            CredentialError::MalformedApiKey => "API key is empty or not visible ASCII",
        }
    }
}

/// Largest Authorization header we look at; larger ones are refused without copying.
pub const MAX_AUTHORIZATION: usize = 16 * 1024;

/// `B64TOKEN[b]`: whether byte `b` may appear in a b64token (one table lookup per byte:
/// this runs over every token of every request).
static B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

fn is_b64token_char(b: u8) -> bool {
    B64TOKEN[usize::from(b)]
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &[u8]) -> bool {
    let body_end = t.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body_end > 0 && t[..body_end].iter().all(|&b| is_b64token_char(b))
}

/// Whether the query string carries an `access_token` parameter (name compared decoded).
pub fn query_has_token(query: Option<&str>) -> bool {
    let Some(q) = query else { return false };
    q.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        decoded.eq_ignore_ascii_case("access_token")
    })
}

/// Extract the credentials of a request on an OAuth-only route.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
) -> Result<Credentials<'a>, CredentialError> {
    extract_for(headers, query, true, None)
}

/// Extract the credentials a route accepts: Bearer tokens when `oauth`, API keys (in
/// `api_key_header` or `Authorization: ApiKey`) when `api_key_header` is set. A Bearer
/// token wins over an API key sent alongside; on a route without OAuth a Bearer token is
/// not a credential at all.
pub fn extract_for<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
    oauth: bool,
    api_key_header: Option<&HeaderName>,
) -> Result<Credentials<'a>, CredentialError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(CredentialError::MultipleAuthorization);
    }
    let in_query = oauth && query_has_token(query);
    let mut key_in_authorization = None;
    if let Some(value) = first {
        let raw = value.as_bytes();
        if raw.len() > MAX_AUTHORIZATION {
            return Err(CredentialError::TooLarge);
        }
        let (scheme, rest) = match raw.iter().position(|&b| b == b' ') {
            Some(i) => (&raw[..i], &raw[i..]),
            None => (raw, &raw[raw.len()..]),
        };
        if oauth && scheme.eq_ignore_ascii_case(b"bearer") {
            if in_query {
                return Err(CredentialError::HeaderAndQuery);
            }
            return bearer_token(rest).map(Credentials::Bearer);
        }
        if oauth && scheme.eq_ignore_ascii_case(b"dpop") {
            if in_query {
                return Err(CredentialError::HeaderAndQuery);
            }
            return bearer_token(rest).map(Credentials::Dpop);
        }
        if in_query {
            return Err(CredentialError::HeaderAndQuery);
        }
        if api_key_header.is_some() && scheme.eq_ignore_ascii_case(b"apikey") {
            key_in_authorization = Some(api_key(rest)?);
        }
    }
    let Some(name) = api_key_header else {
        return Ok(Credentials::None);
    };
    let mut keys = headers.get_all(name).iter();
    let key_header = keys.next();
    if keys.next().is_some() {
        return Err(CredentialError::MultipleApiKeys);
    }
    match (key_in_authorization, key_header) {
        (Some(_), Some(_)) => Err(CredentialError::MultipleApiKeys),
        (Some(k), None) => Ok(Credentials::ApiKey(k)),
        (None, Some(v)) => api_key(v.as_bytes()).map(Credentials::ApiKey),
        (None, None) => Ok(Credentials::None),
    }
}

/// An API key: visible ASCII, surrounding spaces ignored.
fn api_key(raw: &[u8]) -> Result<&str, CredentialError> {
    if raw.len() > MAX_AUTHORIZATION {
        return Err(CredentialError::TooLarge);
    }
    let key = trim_ascii_spaces(raw);
    if key.is_empty() || !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(CredentialError::MalformedApiKey);
    }
    std::str::from_utf8(key).map_err(|_| CredentialError::MalformedApiKey)
}

/// The token after `Bearer`: `1*SP b64token`.
/// The token after `Bearer ` or `DPoP ` (the same b64token syntax).
fn bearer_token(rest: &[u8]) -> Result<&str, CredentialError> {
    // 1*SP between scheme and token; surrounding whitespace is already trimmed by HTTP.
    let token = trim_ascii_spaces(rest);
    if token.is_empty() {
        return Err(CredentialError::EmptyToken);
    }
    if !is_b64token(token) {
        return Err(CredentialError::MalformedToken);
    }
    // b64token characters are ASCII, so this cannot fail; stay panic-free anyway.
    std::str::from_utf8(token).map_err(|_| CredentialError::MalformedToken)
}

fn trim_ascii_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ').map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn bearer_syntax() {
        assert_eq!(
            extract(&h(&["Bearer abc.def-_~+/=="]), None),
            Ok(Credentials::Bearer("abc.def-_~+/=="))
        );
        assert_eq!(
            extract(&h(&["bearer abc"]), None),
            Ok(Credentials::Bearer("abc"))
        );
        assert_eq!(
            extract(&h(&["BEARER  abc"]), None),
            Ok(Credentials::Bearer("abc"))
        );
        assert_eq!(
            extract(&h(&["Bearer"]), None),
            Err(CredentialError::EmptyToken)
        );
        assert_eq!(
            extract(&h(&["Bearer a b"]), None),
            Err(CredentialError::MalformedToken)
        );
        assert_eq!(
            extract(&h(&["Bearer a,b"]), None),
            Err(CredentialError::MalformedToken)
        );
        assert_eq!(
            extract(&h(&["Bearer a\"b"]), None),
            Err(CredentialError::MalformedToken)
        );
        assert_eq!(
            extract(&h(&["Bearer ==="]), None),
            Err(CredentialError::MalformedToken)
        );
        assert_eq!(
            extract(&h(&["Basic dXNlcjpw"]), None),
            Ok(Credentials::None)
        );
        assert_eq!(extract(&h(&[]), None), Ok(Credentials::None));
        assert_eq!(
            extract(&h(&["Bearer a", "Bearer b"]), None),
            Err(CredentialError::MultipleAuthorization)
        );
    }

    #[test]
    fn api_keys() {
        let name = HeaderName::from_static("x-api-key");
        let hk = |auth: &[&str], keys: &[&str]| {
            let mut m = h(auth);
            for k in keys {
                m.append("x-api-key", k.parse().unwrap());
            }
            m
        };
        let both =
            |m: &HeaderMap| extract_for(m, None, true, Some(&name)).map(|c| format!("{c:?}"));
        let key_only =
            |m: &HeaderMap| extract_for(m, None, false, Some(&name)).map(|c| format!("{c:?}"));
        assert_eq!(both(&hk(&[], &["k1"])), Ok("ApiKey(\"k1\")".into()));
        assert_eq!(both(&hk(&["ApiKey k2"], &[])), Ok("ApiKey(\"k2\")".into()));
        assert_eq!(
            both(&hk(&["apikey  k2 "], &[])),
            Ok("ApiKey(\"k2\")".into())
        );
        // A Bearer token wins on routes with OAuth; it is no credential without it.
        assert_eq!(
            both(&hk(&["Bearer t"], &["k1"])),
            Ok("Bearer(\"t\")".into())
        );
        assert_eq!(
            key_only(&hk(&["Bearer t"], &["k1"])),
            Ok("ApiKey(\"k1\")".into())
        );
        assert_eq!(key_only(&hk(&["Bearer t"], &[])), Ok("None".into()));
        assert_eq!(
            both(&hk(&["ApiKey k2"], &["k1"])),
            Err(CredentialError::MultipleApiKeys)
        );
        assert_eq!(
            both(&hk(&[], &["k1", "k1"])),
            Err(CredentialError::MultipleApiKeys)
        );
        assert_eq!(
            both(&hk(&["ApiKey"], &[])),
            Err(CredentialError::MalformedApiKey)
        );
        assert_eq!(both(&hk(&[], &[""])), Err(CredentialError::MalformedApiKey));
        assert_eq!(
            both(&hk(&["ApiKey a b"], &[])),
            Err(CredentialError::MalformedApiKey)
        );
        // Without API keys on the route, the ApiKey scheme and the header mean nothing.
        assert_eq!(
            extract(&hk(&["ApiKey k2"], &["k1"]), None),
            Ok(Credentials::None)
        );
    }

    #[test]
    fn query_tokens() {
        assert_eq!(
            extract(&h(&[]), Some("access_token=x")),
            Ok(Credentials::None)
        );
        assert_eq!(
            extract(&h(&["Bearer a"]), Some("x=1&access_token=x")),
            Err(CredentialError::HeaderAndQuery)
        );
        assert_eq!(
            extract(&h(&["Bearer a"]), Some("access%5Ftoken=x")),
            Err(CredentialError::HeaderAndQuery)
        );
        assert_eq!(
            extract(&h(&["Bearer a"]), Some("token=x")),
            Ok(Credentials::Bearer("a"))
        );
    }
}
