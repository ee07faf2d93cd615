//! RFC 6750 challenges, strictly parsed, and the assertions every refusal test makes: the
//! status, the challenge and the gateway's JSON body.

use serde_json::Value;

use super::http::Resp;

// ---------------------------------------------------------------------------------------------
// RFC 6750 challenge parsing
// ---------------------------------------------------------------------------------------------

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Strict parser: `scheme 1*SP name="value" *( OWS "," OWS name="value" )`; quoted values may only
/// contain `%x20-21 / %x23-5B / %x5D-7E` (RFC 6750 §3), so no escapes; duplicate names rejected.
pub fn parse_challenge(v: &str) -> Result<Challenge, String> {
    if !v.chars().all(|c| (' '..='~').contains(&c)) {
        return Err("non visible-ASCII character".into());
    }
    let (scheme, rest) = match v.split_once(' ') {
        Some((s, r)) => (s, r),
        None => (v, ""),
    };
    if scheme.is_empty() || !scheme.chars().all(is_tchar) {
        return Err(format!("bad scheme {scheme:?}"));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i] == ' ' {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    while i < chars.len() {
        let start = i;
        while i < chars.len() && is_tchar(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if name.is_empty() {
            return Err(format!("expected a parameter name at {i}"));
        }
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(format!("expected '=' after {name}"));
        }
        i += 1;
        skip_ws(&mut i);
        let value: String = if i < chars.len() && chars[i] == '"' {
            i += 1;
            let vs = i;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    return Err(format!("backslash in value of {name}"));
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(format!("unterminated value of {name}"));
            }
            let val = chars[vs..i].iter().collect();
            i += 1;
            val
        } else {
            let vs = i;
            while i < chars.len() && is_tchar(chars[i]) {
                i += 1;
            }
            chars[vs..i].iter().collect()
        };
        if params.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(format!("duplicate parameter {name}"));
        }
        params.push((name, value));
        skip_ws(&mut i);
        if i < chars.len() {
            if chars[i] != ',' {
                return Err(format!("expected ',' at {i}"));
            }
            i += 1;
            skip_ws(&mut i);
        }
    }
    Ok(Challenge {
        scheme: scheme.to_string(),
        params,
    })
}

// ---------------------------------------------------------------------------------------------
// Assertions on refusals
// ---------------------------------------------------------------------------------------------

/// JSON body `{"error": code, "error_description": "..."}` with `application/json`.
pub fn assert_json_error(r: &Resp, code: Option<&str>) {
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "refusal content-type should be application/json: {r}"
    );
    let v = r.json();
    let err = v.get("error").and_then(Value::as_str);
    assert!(err.is_some(), "refusal body lacks string `error`: {r}");
    if let Some(code) = code {
        assert_eq!(err, Some(code), "error code: {r}");
    }
    assert!(
        v.get("error_description").is_some_and(Value::is_string),
        "refusal body lacks string `error_description`: {r}"
    );
}

/// 401 with a Bearer challenge carrying `resource_metadata` and no `error`.
pub fn assert_401_no_error(r: &Resp, prm: &str, scope: Option<&str>) {
    assert_eq!(r.status, 401, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("resource_metadata"), Some(prm), "{r}");
    assert_eq!(c.param("scope"), scope, "{r}");
    assert_eq!(c.param("error"), None, "no error= expected: {r}");
    assert_json_error(r, None);
}

/// 401 `error="invalid_token"` with `resource_metadata`.
pub fn assert_invalid_token(r: &Resp, prm: &str) {
    assert_eq!(r.status, 401, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("error"), Some("invalid_token"), "{r}");
    assert_eq!(c.param("resource_metadata"), Some(prm), "{r}");
    assert!(
        c.param("error_description").is_some_and(|d| !d.is_empty()),
        "error_description expected: {r}"
    );
    assert_json_error(r, Some("invalid_token"));
}

/// 400 `error="invalid_request"` Bearer challenge.
pub fn assert_invalid_request(r: &Resp) {
    assert_eq!(r.status, 400, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("error"), Some("invalid_request"), "{r}");
    assert_json_error(r, Some("invalid_request"));
}

/// 403 `error="insufficient_scope"` naming `scope`.
pub fn assert_insufficient_scope(r: &Resp, scope: &str, prm: &str) {
    assert_eq!(r.status, 403, "{r}");
    let c = r.challenge();
    assert!(c.scheme.eq_ignore_ascii_case("bearer"), "{r}");
    assert_eq!(c.param("error"), Some("insufficient_scope"), "{r}");
    assert_eq!(c.param("scope"), Some(scope), "{r}");
    assert_eq!(c.param("resource_metadata"), Some(prm), "{r}");
    assert_json_error(r, Some("insufficient_scope"));
}
