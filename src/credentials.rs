//! Credentials: what the client presented, and RFC 6750 §2 syntax errors.
//!
//! Second step of the request flow, before any token is looked at: exactly one
//! `Authorization` header, scheme compared case-insensitively, a token in `b64token`
//! syntax. A token in the query string is never honoured (MCP forbids it); presenting it
//! alongside a header is two methods at once and a 400 (RFC 6750 §2).

use http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No usable credentials: no header, or a scheme we do not accept (`Basic`...).
    None,
    Bearer(&'a str),
}

/// Malformed credentials: rendered as 400 `invalid_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    MultipleAuthorization,
    HeaderAndQuery,
    EmptyToken,
    MalformedToken,
    TooLarge,
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
        }
    }
}

/// Largest Authorization header we look at; larger ones are refused without copying.
pub const MAX_AUTHORIZATION: usize = 16 * 1024;

fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
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

/// Extract the credentials of a request.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
) -> Result<Credentials<'a>, CredentialError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(CredentialError::MultipleAuthorization);
    }
    let in_query = query_has_token(query);
    let Some(value) = first else {
        return Ok(Credentials::None);
    };
    let raw = value.as_bytes();
    if raw.len() > MAX_AUTHORIZATION {
        return Err(CredentialError::TooLarge);
    }
    let (scheme, rest) = match raw.iter().position(|&b| b == b' ') {
        Some(i) => (&raw[..i], &raw[i..]),
        None => (raw, &raw[raw.len()..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        if in_query {
            return Err(CredentialError::HeaderAndQuery);
        }
        return Ok(Credentials::None);
    }
    if in_query {
        return Err(CredentialError::HeaderAndQuery);
    }
    // 1*SP between scheme and token; surrounding whitespace is already trimmed by HTTP.
    let token = trim_ascii_spaces(rest);
    if token.is_empty() {
        return Err(CredentialError::EmptyToken);
    }
    if !is_b64token(token) {
        return Err(CredentialError::MalformedToken);
    }
    // b64token characters are ASCII, so this cannot fail; stay panic-free anyway.
    match std::str::from_utf8(token) {
        Ok(t) => Ok(Credentials::Bearer(t)),
        Err(_) => Err(CredentialError::MalformedToken),
    }
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
