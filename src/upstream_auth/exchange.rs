//! The token endpoint client: the request of each grant (RFC 8693 token exchange, RFC 6749
//! §4.4 client credentials), the POST, and the judgment of the answer.
//!
//! [`form`] and [`judge`] are plain functions (unit-tested here); [`post`] runs on the
//! background fetch runtime. An answer is never trusted blindly: a success must be a JSON
//! object with a non-empty `access_token` that can travel in a header, `token_type` Bearer,
//! for an exchange `issued_token_type` equal to the requested access token type, and a
//! sensible `expires_in`; a refusal is reduced to its `error` code, one of a fixed set (the
//! AS's own text is never repeated to anyone).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::client_auth::ClientAuth;

pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Largest token endpoint answer read.
const MAX_BODY: usize = 64 * 1024;
/// Largest token accepted (it travels in a request header upstream).
const MAX_TOKEN: usize = 16 * 1024;
/// Longest `expires_in` believed (a year); longer is nonsense.
const MAX_EXPIRES_IN: u64 = 366 * 86_400;

/// The AS error codes that mean "no, for this request" (RFC 6749 §5.2, RFC 8693 §2.2.2),
/// and those that plainly concern the caller's token or its user (RFC 6750 §3.1
/// `invalid_token`, RFC 8628 `expired_token`, OpenID Connect's `consent_required`,
/// `interaction_required`, `login_required`): a token exchange refused with one of them is
/// a 403 naming the code. Every other code (`invalid_client`, `unsupported_grant_type`,
/// `server_error`, unknown ones) means the gateway cannot get an answer now: 503.
pub const REFUSALS: &[&str] = &[
    "invalid_request",
    "invalid_grant",
    "invalid_target",
    "invalid_scope",
    "unauthorized_client",
    "access_denied",
    "invalid_token",
    "expired_token",
    "consent_required",
    "interaction_required",
    "login_required",
];

/// What is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// RFC 8693: `subject` (the validated access token) for the target.
    Exchange {
        subject: &'a str,
        subject_type: &'static str,
        /// The gateway's own token, for delegation (`act`).
        actor: Option<&'a str>,
    },
    /// RFC 6749 §4.4: the gateway's own token.
    ClientCredentials,
}

/// Where the token is for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub audience: &'a [String],
    pub resource: &'a [String],
    /// Space-separated, when any.
    pub scope: Option<&'a str>,
}

/// Why no token came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The AS refused the request with one of [`REFUSALS`].
    Refused(&'static str),
    /// The AS refused the gateway's own client (`invalid_client`, a 401) or answered
    /// another error code: an operator's problem.
    Misconfigured(String),
    /// The endpoint is not configured and discovery failed.
    Discovery(String),
    Timeout,
    /// The token endpoint did not accept the connection (nothing was sent).
    Unreachable(String),
    /// The exchange failed after the request was sent (reset, hang-up).
    Transport(String),
    /// A status that is neither 200 nor an RFC 6749 error.
    Status(u16),
    /// 200 but not a usable token answer; what is wrong with it.
    Garbage(&'static str),
    TooLarge,
    /// Not asked: the AS failed `breaker_failures` times in a row.
    CircuitOpen,
    /// The client assertion could not be made.
    Signing(String),
}

impl Failure {
    /// The `result` label of `mcpgate_upstream_token_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Refused(_) => "refused",
            Failure::Misconfigured(_) => "client_refused",
            Failure::Timeout => "timeout",
            Failure::CircuitOpen => "circuit_open",
            Failure::Garbage(_) | Failure::TooLarge => "invalid_response",
            _ => "error",
        }
    }

    /// Whether this counts against the AS in the circuit breaker: everything but an
    /// answer that makes sense (a refusal of this one request).
    pub fn breaks(&self) -> bool {
        !matches!(self, Failure::Refused(_) | Failure::CircuitOpen)
    }

    /// Whether the request reached the token endpoint (and with it, for an exchange, the
    /// caller's token): the AS's answer, or lack of one, may be about that request alone.
    /// Not for a failure before sending (discovery, the assertion, the connection) nor a
    /// call the breaker refused.
    pub fn sent(&self) -> bool {
        !matches!(
            self,
            Failure::Discovery(_)
                | Failure::Signing(_)
                | Failure::Unreachable(_)
                | Failure::CircuitOpen
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(c) => write!(f, "the authorization server refused: {c}"),
            Failure::Misconfigured(c) => write!(
                f,
                "the authorization server refused the gateway's request ({c}): check the route's \
                 upstream_auth client_id, credentials and grant at the AS"
            ),
            Failure::Discovery(e) => write!(f, "token endpoint discovery failed: {e}"),
            Failure::Timeout => f.write_str("the token endpoint did not answer in time"),
            Failure::Unreachable(e) => write!(f, "the token endpoint is unreachable: {e}"),
            Failure::Transport(e) => write!(f, "token request failed: {e}"),
            Failure::Status(s) => write!(f, "the token endpoint answered HTTP {s}"),
            Failure::Garbage(why) => write!(f, "the token endpoint's answer is unusable: {why}"),
            Failure::TooLarge => write!(f, "the token endpoint's answer is over {MAX_BODY} bytes"),
            Failure::CircuitOpen => {
                f.write_str("the token endpoint keeps failing (circuit breaker open)")
            }
            Failure::Signing(e) => write!(f, "the client assertion could not be made: {e}"),
        }
    }
}

/// The body of a token request and the `Authorization` value the client authentication
/// needs. `default_aud`: a client assertion's audience when none is configured.
pub fn form(
    grant: Ask<'_>,
    target: Target<'_>,
    client: &ClientAuth,
    default_aud: &str,
    now: i64,
) -> Result<(String, Option<String>), Failure> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match grant {
        Ask::Exchange {
            subject,
            subject_type,
            actor,
        } => {
            form.append_pair("grant_type", GRANT_TOKEN_EXCHANGE)
                .append_pair("subject_token", subject)
                .append_pair("subject_token_type", subject_type)
                .append_pair("requested_token_type", TYPE_ACCESS_TOKEN);
            if let Some(a) = actor {
                form.append_pair("actor_token", a)
                    .append_pair("actor_token_type", TYPE_ACCESS_TOKEN);
            }
        }
        Ask::ClientCredentials => {
            form.append_pair("grant_type", "client_credentials");
        }
    }
    for a in target.audience {
        form.append_pair("audience", a);
    }
    for r in target.resource {
        form.append_pair("resource", r);
    }
    if let Some(s) = target.scope {
        form.append_pair("scope", s);
    }
    let auth = client
        .apply(&mut form, default_aud, now)
        .map_err(Failure::Signing)?;
    Ok((form.finish(), auth))
}

/// A token the AS issued, as judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    /// `None`: the answer had no `expires_in`.
    pub expires_in: Option<u64>,
}

/// The members of a token answer we read, loosely typed so that a wrong type is our
/// judgment and a repeated member a parse failure.
#[derive(Deserialize)]
struct Answer {
    access_token: Option<Value>,
    token_type: Option<Value>,
    issued_token_type: Option<Value>,
    expires_in: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<Value>,
}

/// Judge a token endpoint's answer (`status`, `body`) to a request for `grant`.
pub fn judge(exchange: bool, status: u16, body: &[u8]) -> Result<Issued, Failure> {
    if (400..500).contains(&status) {
        return Err(refusal(status, body));
    }
    if status != 200 {
        return Err(Failure::Status(status));
    }
    if !serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object()) {
        return Err(Failure::Garbage("not a JSON object"));
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|_| Failure::Garbage("a member appears twice"))?;
    let token = match &a.access_token {
        Some(Value::String(t)) if !t.is_empty() => t,
        _ => return Err(Failure::Garbage("no access_token")),
    };
    if token.len() > MAX_TOKEN || !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Failure::Garbage(
            "the access_token cannot be sent in a header (over 16 KiB, or not visible ASCII)",
        ));
    }
    match &a.token_type {
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        _ => return Err(Failure::Garbage("token_type is not Bearer")),
    }
    if exchange {
        match &a.issued_token_type {
            Some(Value::String(t)) if t == TYPE_ACCESS_TOKEN => {}
            _ => {
                return Err(Failure::Garbage(
                    "issued_token_type is not urn:ietf:params:oauth:token-type:access_token",
                ))
            }
        }
    }
    let expires_in = match &a.expires_in {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or(Failure::Garbage("expires_in is not a positive integer"))?,
        ),
        // Some servers send it as a string ("3599").
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Some(
            s.parse::<u64>()
                .map_err(|_| Failure::Garbage("expires_in is too large"))?,
        ),
        Some(_) => return Err(Failure::Garbage("expires_in is not a number")),
    };
    if let Some(e) = expires_in {
        if e == 0 || e > MAX_EXPIRES_IN {
            return Err(Failure::Garbage("expires_in is 0 or over a year"));
        }
    }
    Ok(Issued {
        token: token.clone(),
        expires_in,
    })
}

/// An error answer (4xx): the code when it is a refusal, else the operator's problem.
fn refusal(status: u16, body: &[u8]) -> Failure {
    let code = serde_json::from_slice::<ErrorAnswer>(body)
        .ok()
        .and_then(|e| match e.error {
            Some(Value::String(c)) => Some(c),
            _ => None,
        });
    let Some(code) = code else {
        return Failure::Status(status);
    };
    match REFUSALS.iter().find(|r| **r == code) {
        // invalid_client comes with 401; a "refusal" code with 401 is still our client.
        Some(r) if status != 401 => Failure::Refused(r),
        _ => Failure::Misconfigured(printable_code(&code)),
    }
}

/// An AS error code for our log: at most 64 characters of RFC 6749's `error` alphabet.
fn printable_code(code: &str) -> String {
    code.chars()
        .take(64)
        .map(|c| {
            if c == ' ' || c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// POST a token request; the status and the (capped) body.
pub async fn post(
    client: reqwest::Client,
    endpoint: String,
    body: String,
    authorization: Option<String>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), Failure> {
    use crate::background::{post_form, PostError};
    post_form(&client, &endpoint, body, authorization, timeout, MAX_BODY)
        .await
        .map_err(|e| match e {
            PostError::Timeout => Failure::Timeout,
            PostError::TooLarge => Failure::TooLarge,
            // Without the URL: it is in the config, and the error chain is enough.
            PostError::Transport(e) if e.is_connect() => {
                Failure::Unreachable(e.without_url().to_string())
            }
            PostError::Transport(e) => Failure::Transport(e.without_url().to_string()),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::upstream_auth::client_auth::{Method, SecretText};

    fn client() -> ClientAuth {
        ClientAuth {
            client_id: "gw".into(),
            method: Method::Post(SecretText::from_file_bytes(b"pw").unwrap()),
        }
    }

    fn decode(body: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn exchange_request_has_every_rfc8693_parameter() {
        let aud = vec!["https://api".to_string(), "other".to_string()];
        let res = vec!["https://api.example.com/x?y=1".to_string()];
        let (body, auth) = form(
            Ask::Exchange {
                subject: "sub.tok+/=",
                subject_type: TYPE_JWT,
                actor: Some("act"),
            },
            Target {
                audience: &aud,
                resource: &res,
                scope: Some("a b"),
            },
            &client(),
            "x",
            0,
        )
        .unwrap();
        assert_eq!(auth, None);
        let f = decode(&body);
        let want: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", "sub.tok+/="),
            ("subject_token_type", TYPE_JWT),
            ("requested_token_type", TYPE_ACCESS_TOKEN),
            ("actor_token", "act"),
            ("actor_token_type", TYPE_ACCESS_TOKEN),
            ("audience", "https://api"),
            ("audience", "other"),
            ("resource", "https://api.example.com/x?y=1"),
            ("scope", "a b"),
            ("client_id", "gw"),
            ("client_secret", "pw"),
        ];
        let got: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn client_credentials_request_and_no_actor_without_one() {
        let (body, _) = form(
            Ask::ClientCredentials,
            Target {
                audience: &[],
                resource: &[],
                scope: None,
            },
            &client(),
            "x",
            0,
        )
        .unwrap();
        assert_eq!(
            body,
            "grant_type=client_credentials&client_id=gw&client_secret=pw"
        );
        let (body, _) = form(
            Ask::Exchange {
                subject: "s",
                subject_type: TYPE_ACCESS_TOKEN,
                actor: None,
            },
            Target {
                audience: &[],
                resource: &[],
                scope: None,
            },
            &client(),
            "x",
            0,
        )
        .unwrap();
        assert!(!body.contains("actor_token"), "{body}");
    }

    const GOOD: &str = r#"{"access_token":"xt-1","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":300}"#;

    #[test]
    fn a_good_answer_is_a_token() {
        assert_eq!(
            judge(true, 200, GOOD.as_bytes()),
            Ok(Issued {
                token: "xt-1".into(),
                expires_in: Some(300)
            })
        );
        let cc = r#"{"access_token":"cc","token_type":"bearer","expires_in":"60"}"#;
        assert_eq!(
            judge(false, 200, cc.as_bytes()).unwrap().expires_in,
            Some(60)
        );
        let no_exp = r#"{"access_token":"cc","token_type":"Bearer"}"#;
        assert_eq!(
            judge(false, 200, no_exp.as_bytes()).unwrap().expires_in,
            None
        );
    }

    #[test]
    fn answers_are_never_trusted_blindly() {
        for (exchange, body) in [
            (
                true,
                r#"{"token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (
                true,
                r#"{"access_token":"","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (
                true,
                r#"{"access_token":7,"token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (
                true,
                r#"{"access_token":"a b","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (
                true,
                r#"{"access_token":"a\r\nx: y","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (
                true,
                r#"{"access_token":"a","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (
                true,
                r#"{"access_token":"a","token_type":"DPoP","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (
                true,
                r#"{"access_token":"a","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (true, r#"{"access_token":"a","token_type":"Bearer"}"#),
            (
                true,
                r#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:id_token"}"#,
            ),
            (
                true,
                r#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":0}"#,
            ),
            (
                true,
                r#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":-5}"#,
            ),
            (
                true,
                r#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":1.5}"#,
            ),
            (
                true,
                r#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":99999999999}"#,
            ),
            (
                true,
                r#"{"access_token":"a","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":"soon"}"#,
            ),
            (
                true,
                r#"{"access_token":"a","access_token":"b","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#,
            ),
            (false, r#"["access_token"]"#),
            (false, "<html>login</html>"),
            (false, ""),
        ] {
            let r = judge(exchange, 200, body.as_bytes());
            assert!(matches!(r, Err(Failure::Garbage(_))), "{body}: {r:?}");
        }
    }

    #[test]
    fn refusals_are_reduced_to_their_code() {
        for code in REFUSALS {
            let body = format!(r#"{{"error":"{code}","error_description":"<script>no</script>"}}"#);
            assert_eq!(
                judge(true, 400, body.as_bytes()),
                Err(Failure::Refused(code))
            );
        }
        assert_eq!(
            judge(true, 401, br#"{"error":"invalid_client"}"#),
            Err(Failure::Misconfigured("invalid_client".into()))
        );
        assert_eq!(
            judge(true, 401, br#"{"error":"invalid_grant"}"#),
            Err(Failure::Misconfigured("invalid_grant".into()))
        );
        assert_eq!(
            judge(true, 400, br#"{"error":"unsupported_grant_type"}"#),
            Err(Failure::Misconfigured("unsupported_grant_type".into()))
        );
        assert_eq!(
            judge(true, 400, br#"{"error":"x\u001b[31m"}"#),
            Err(Failure::Misconfigured("x?[31m".into()))
        );
        assert_eq!(judge(true, 400, b"<html>"), Err(Failure::Status(400)));
        assert_eq!(judge(true, 404, b"{}"), Err(Failure::Status(404)));
        assert_eq!(
            judge(true, 500, br#"{"error":"invalid_grant"}"#),
            Err(Failure::Status(500))
        );
        assert_eq!(judge(true, 302, b""), Err(Failure::Status(302)));
        assert!(Failure::Refused("invalid_grant").label() == "refused");
        assert!(!Failure::Refused("invalid_grant").breaks());
        assert!(Failure::Timeout.breaks() && Failure::Misconfigured("x".into()).breaks());
        // Sent: what the AS did with the request may be about the caller's token.
        for f in [
            Failure::Timeout,
            Failure::Transport("reset".into()),
            Failure::Status(500),
            Failure::Garbage("x"),
            Failure::TooLarge,
            Failure::Misconfigured("x".into()),
        ] {
            assert!(f.sent(), "{f:?}");
        }
        for f in [
            Failure::Unreachable("refused".into()),
            Failure::Discovery("x".into()),
            Failure::Signing("x".into()),
            Failure::CircuitOpen,
        ] {
            assert!(!f.sent(), "{f:?}");
        }
    }
}
