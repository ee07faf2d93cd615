//! Fuzz targets: every parser that sees attacker bytes, each with the invariants it must
//! keep, not only "no panic".
//!
//! One implementation serves two drivers: the cargo-fuzz project in `fuzz/` (libFuzzer, on
//! nightly, with the `fuzzing` feature) calls these functions from its targets, and the
//! unit test at the bottom replays every file of `fuzz/corpus/<target>/` through them on
//! stable Rust, so a regression caught once by the fuzzer stays caught by `cargo test`.
//! Compiled only for tests and with the `fuzzing` feature: nothing here is in the binary.
//!
//! Each target drives the same functions the request path calls (`proxy::steps`, the
//! token verification of `auth::token`, `mcp::shape`, `mcp::lists`, `path`,
//! `mcp::resource_uri`, `config`) over a fixed configuration and a fixed key set, and
//! checks its verdict against an independent, simpler statement of the policy (an
//! *oracle*): a forwarded request names only operations the route allows, a filtered list
//! holds no tool the caller could not call, the forwarded path is the authorized one, a
//! verified signature was made by a key holder, normalising twice changes nothing.
//!
//! Invariant failures panic: that is how a fuzz target reports a bug.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora_http::RequestHeader;
use serde_json::{json, Value};

use crate::auth::check_audience;
use crate::auth::credentials::{self, Credentials};
use crate::auth::dpop::{self, Expect};
use crate::auth::jwt::{self, Algorithm, Shape, VerifyKey};
use crate::auth::token::Authenticator;
use crate::config::Config;
use crate::error::Refusal;
use crate::mcp::body::METHODS_NAMING_NOTHING;
use crate::mcp::lists::{filter_json, Judged, SseFilter};
use crate::mcp::policy::tool_visible;
use crate::mcp::resource_uri;
use crate::mcp::shape::{self, RoutePolicy};
use crate::principal::{AuthMethod, Principal};
use crate::proxy::steps;
use crate::routing::Target;

pub type FuzzTarget = fn(&[u8]);

/// Every target, by the name of its corpus directory and its `fuzz/fuzz_targets` file.
pub const TARGETS: &[(&str, FuzzTarget)] = &[
    ("credentials", credentials),
    ("jwt", jwt),
    ("dpop", dpop),
    ("mcp_request", mcp_request),
    ("list_filter", list_filter),
    ("path_route", path_route),
    ("resource_uri", resource_uri),
    ("config", config),
];

/// The fixed clock of every target.
pub const NOW: i64 = 1_800_000_000;
/// The issuer of the fixed key set.
pub const ISSUER: &str = "https://as.example.com";
/// The access token DPoP proofs are bound to (`ath`).
pub const DPOP_ACCESS_TOKEN: &str = "fuzz-access-token";
/// The URI DPoP proofs must name, normalized.
pub const DPOP_HTU: &str = "https://mcp.example.com:443/mcp";

/// A P-256 key (PKCS#8), made for these tests only.
const P256_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOl2trMWhbIKgazvxq6xBMQNfCCX97k9P9ASM+n40UFqhRANCAAR0LUJrxiFHxJ4daXbWycRU54ouyFIyFaTI6SkG46/jJwFqddSObbc73NUSwMqYojNPuut7+Yi5FiFps5UUmpKI";
/// An Ed25519 seed, made for these tests only.
const ED25519_SEED: [u8; 32] = [7; 32];

const CONFIG: &str = r#"
listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}
admin: {address: '127.0.0.1:2'}
issuers:
- {name: a, issuer: 'https://as.example.com', jwks_uri: 'https://as.example.com/jwks'}
routes:
- name: deny
  path_prefix: /deny
  upstream: 'http://127.0.0.1:3'
  scopes: [mcp:tools]
  tools: {"read_*": [mcp:read], "delete_*": [mcp:admin]}
  resources: {"file:///public/*": []}
  prompts: {"safe_*": []}
  default_tool_policy: deny
- name: allow
  path_prefix: /allow
  upstream: 'http://127.0.0.1:3'
  scopes: [mcp:tools]
  tools: {"delete_*": [mcp:admin], "*": []}
  filter_tools_list: true
- name: plain
  path_prefix: /mcp
  upstream: 'http://127.0.0.1:3'
- name: admin
  path_prefix: /mcp/admin
  upstream: 'http://127.0.0.1:3'
  scopes: [mcp:admin]
- name: other-host
  host: other.example
  path_prefix: /mcp
  upstream: 'http://127.0.0.1:3'
- name: rewritten
  path_prefix: /gh
  rewrite_prefix: /api
  upstream: 'http://127.0.0.1:3'
- name: open
  path_prefix: /open
  upstream: 'http://127.0.0.1:3'
  auth: none
"#;
const DENY: usize = 0;
const ALLOW: usize = 1;

/// What every target shares: the compiled config, the key set, what was signed.
pub struct Ctx {
    pub config: Config,
    pub auth: Authenticator,
    pub keys: Vec<VerifyKey>,
    /// Signing inputs (`header.payload`) of the JWTs the key holders signed.
    pub signed: HashSet<String>,
    /// Signing inputs of the DPoP proofs the key holders signed.
    pub dpop_signed: HashSet<String>,
}

fn p256() -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &STANDARD.decode(P256_PKCS8).unwrap(),
    )
    .unwrap()
}

fn ed25519() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&ED25519_SEED).unwrap()
}

fn public_jwks() -> (Value, Value) {
    let p = p256();
    let pk = p.public_key().as_ref();
    let ec = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&pk[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&pk[33..65])});
    let ed = json!({"kty": "OKP", "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(ed25519().public_key().as_ref())});
    (ec, ed)
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// The JWTs the seed corpus holds, signed: (header, claims). Only these signing inputs
/// can ever verify.
fn jwt_seeds() -> Vec<(Value, Value)> {
    let claims = |extra: Value| {
        let mut c = json!({"iss": ISSUER, "sub": "alice", "aud": "https://mcp.example.com/deny",
            "exp": NOW + 3600, "iat": NOW - 10, "jti": "j1", "client_id": "c1", "scope": "mcp:tools"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    vec![
        (
            json!({"alg": "ES256", "kid": "p256", "typ": "at+jwt"}),
            claims(json!({})),
        ),
        (json!({"alg": "EdDSA", "kid": "ed"}), claims(json!({}))),
        (json!({"alg": "ES256", "typ": "JWT"}), claims(json!({}))),
        (
            json!({"alg": "ES256", "kid": "p256"}),
            claims(json!({"exp": NOW - 59})),
        ),
        (
            json!({"alg": "ES256", "kid": "p256"}),
            claims(json!({"exp": NOW - 60})),
        ),
        (
            json!({"alg": "EdDSA", "kid": "ed"}),
            claims(json!({"nbf": NOW + 61, "iat": NOW + 60})),
        ),
        (
            json!({"alg": "EdDSA", "kid": "ed"}),
            claims(
                json!({"aud": ["https://other", "https://mcp.example.com/deny"],
                "scp": ["mcp:tools", "mcp:read"], "cnf": {"jkt": "abc"}}),
            ),
        ),
        (
            json!({"alg": "ES256", "kid": "p256", "typ": "dpop+jwt"}),
            claims(json!({})),
        ),
        (
            json!({"alg": "EdDSA", "kid": "ed"}),
            claims(json!({"exp": 1.5e9, "sub": ""})),
        ),
        (
            json!({"alg": "EdDSA", "kid": "ed"}),
            claims(json!({"iss": "https://as.example.com/"})),
        ),
    ]
}

/// The DPoP proofs the seed corpus holds: (alg, claims); the header carries the key.
fn dpop_seeds() -> Vec<(&'static str, Value)> {
    let ath = dpop::ath(DPOP_ACCESS_TOKEN);
    let c = |htm: &str, htu: &str, iat: i64| json!({"jti": format!("{htm}{htu}{iat}"), "htm": htm, "htu": htu, "iat": iat, "ath": ath});
    vec![
        ("ES256", c("POST", "https://mcp.example.com/mcp", NOW)),
        ("EdDSA", c("POST", "https://mcp.example.com/mcp", NOW - 300)),
        (
            "ES256",
            c("POST", "https://MCP.example.com:443/%6Dcp", NOW + 300),
        ),
        ("EdDSA", c("POST", "https://mcp.example.com/mcp", NOW + 301)),
        ("ES256", c("GET", "https://mcp.example.com/mcp", NOW)),
        ("EdDSA", c("POST", "https://mcp.example.com/mcp?x=1", NOW)),
        ("ES256", c("POST", "https://mcp.example.com./mcp", NOW)),
    ]
}

fn sign(alg: &str, input: &str) -> Vec<u8> {
    match alg {
        "ES256" => p256()
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec(),
        _ => ed25519().sign(input.as_bytes()).as_ref().to_vec(),
    }
}

fn dpop_header(alg: &str) -> Value {
    let (ec, ed) = public_jwks();
    json!({"typ": "dpop+jwt", "alg": alg, "jwk": if alg == "ES256" { ec } else { ed }})
}

/// The signed seed tokens and proofs, compact.
pub fn signed_seed_tokens() -> (Vec<String>, Vec<String>) {
    let jwts = jwt_seeds()
        .into_iter()
        .map(|(h, c)| {
            let input = format!("{}.{}", b64json(&h), b64json(&c));
            let sig = sign(h["alg"].as_str().unwrap(), &input);
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        })
        .collect();
    let proofs = dpop_seeds()
        .into_iter()
        .map(|(alg, c)| {
            let input = format!("{}.{}", b64json(&dpop_header(alg)), b64json(&c));
            let sig = sign(alg, &input);
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        })
        .collect();
    (jwts, proofs)
}

/// The shared context, built once.
pub fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let config = Config::from_yaml("fuzz", CONFIG).unwrap();
        let (mut ec, mut ed) = public_jwks();
        ec["kid"] = json!("p256");
        ed["kid"] = json!("ed");
        let jwks = serde_json::to_vec(&json!({"keys": [ec, ed]})).unwrap();
        let (keys, skipped) = jwt::parse_jwks(&jwks, &Algorithm::ALL).unwrap();
        assert!(skipped.is_empty());
        let signed = jwt_seeds()
            .into_iter()
            .map(|(h, c)| format!("{}.{}", b64json(&h), b64json(&c)))
            .collect();
        let dpop_signed = dpop_seeds()
            .into_iter()
            .map(|(alg, c)| format!("{}.{}", b64json(&dpop_header(alg)), b64json(&c)))
            .collect();
        Ctx {
            config,
            auth: Authenticator::new(1000),
            keys,
            signed,
            dpop_signed,
        }
    })
}

/// A principal holding `scopes`, for the policy targets.
pub fn principal(scopes: &str) -> Principal {
    Principal {
        method: AuthMethod::Jwt,
        any_audience: true,
        iss: Arc::from(ISSUER),
        issuer_name: Arc::from("a"),
        subject: Some("alice".into()),
        client_id: None,
        scopes: crate::scope::ScopeSet::parse(scopes),
        audiences: Arc::new([]),
        exp: NOW + 3600,
        nbf: None,
        skew: 0,
        cnf_jkt: None,
        azp: None,
        jti: None,
        iat: None,
    }
}

/// Split `name: value` lines into headers (lines that are not valid headers are skipped);
/// a line starting with `?` is the query.
fn headers_of(lines: &[u8]) -> (HeaderMap, Option<String>) {
    let mut h = HeaderMap::new();
    let mut query = None;
    for line in lines.split(|&b| b == b'\n') {
        if let Some(q) = line.strip_prefix(b"?") {
            query = std::str::from_utf8(q).ok().map(str::to_string);
            continue;
        }
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (n, v) = (&line[..i], &line[i + 1..]);
        let v = v.strip_prefix(b" ").unwrap_or(v);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            h.append(n, v);
        }
    }
    (h, query)
}

// ---------------------------------------------------------------------------------------------
// credentials: Authorization, DPoP scheme, API key headers
// ---------------------------------------------------------------------------------------------

/// RFC 6750 §2.1 b64token, written out independently.
fn oracle_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Input: one flag byte (bit 0: the route takes no OAuth; bit 1: it takes `X-API-Key`),
/// then header lines.
pub fn credentials(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let oauth = flags & 1 == 0;
    let key_header = (flags & 2 != 0).then(|| HeaderName::from_static("x-api-key"));
    let (headers, query) = headers_of(rest);
    let r = credentials::extract_for(&headers, query.as_deref(), oauth, key_header.as_ref());
    let auths: Vec<&HeaderValue> = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .collect();
    if auths.len() > 1 {
        assert!(r.is_err(), "two Authorization headers accepted");
    }
    match r {
        Ok(Credentials::Bearer(t)) | Ok(Credentials::Dpop(t)) => {
            assert!(oauth, "a token taken on a route without OAuth");
            assert!(!credentials::query_has_token(query.as_deref()));
            assert!(oracle_b64token(t), "token {t:?} is not a b64token");
            let v = auths[0].as_bytes();
            let trimmed = &v[..v.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1)];
            assert!(trimmed.ends_with(t.as_bytes()));
            let head = &trimmed[..trimmed.len() - t.len()];
            let scheme_len = head.iter().position(|&b| b == b' ').expect("no separator");
            assert!(head[scheme_len..].iter().all(|&b| b == b' '));
            let scheme = &head[..scheme_len];
            let dpop = matches!(r, Ok(Credentials::Dpop(_)));
            assert!(scheme.eq_ignore_ascii_case(if dpop { b"dpop" } else { b"bearer" }));
            assert_eq!(steps::dpop_used(&headers), dpop);
        }
        Ok(Credentials::ApiKey(k)) => {
            assert!(
                key_header.is_some(),
                "an API key taken on a route without keys"
            );
            assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()));
        }
        Ok(Credentials::None) => {
            if oauth {
                for v in &auths {
                    let s = v.as_bytes();
                    let scheme = s.split(|&b| b == b' ').next().unwrap_or(s);
                    assert!(
                        !scheme.eq_ignore_ascii_case(b"bearer")
                            && !scheme.eq_ignore_ascii_case(b"dpop"),
                        "a Bearer/DPoP header read as no credentials"
                    );
                }
            }
        }
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// jwt: parse + verify with the fixed key set, as the token step does
// ---------------------------------------------------------------------------------------------

/// The token step's verdict for a JWT on the `deny` route, over the fixed key set.
pub fn verify_token(token: &str, now: i64) -> Result<Principal, Refusal> {
    let c = ctx();
    verify_token_with(&c.config, &c.auth, &c.keys, token, now)
}

/// The token step's verdict for a JWT on the first route of `config`, checked with
/// `keys` by its first issuer entry: the entry picked by the unverified `iss` (as
/// `auth::token` does), then the entry's verification, then the route's audience.
pub fn verify_token_with(
    config: &Config,
    auth: &Authenticator,
    keys: &[VerifyKey],
    token: &str,
    now: i64,
) -> Result<Principal, Refusal> {
    let issuer = &config.issuers[0];
    match jwt::shape(token) {
        Shape::Jwt { iss: Some(iss) } if *iss == *issuer.issuer => {}
        Shape::Jwt { .. } => {
            return Err(Refusal::InvalidToken(
                "token issuer is not accepted on this route",
            ))
        }
        Shape::Opaque => return Err(Refusal::InvalidToken("token is not a JWT")),
    }
    let parsed = jwt::parse(token).map_err(|e| Refusal::InvalidToken(e.0))?;
    let p = auth.verify_with_keys(issuer, keys, &parsed, now)?;
    check_audience(&config.routes[0].resource.audiences, &p)?;
    Ok(p)
}

pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let c = ctx();
    let shape = jwt::shape(token);
    if let Ok(parsed) = jwt::parse(token) {
        // The issuer that judges a token is picked from the same `iss` that is verified.
        assert_eq!(
            shape,
            Shape::Jwt {
                iss: parsed.claims.iss.clone()
            },
            "shape and parse disagree"
        );
        let signing_input = std::str::from_utf8(parsed.signing_input).unwrap();
        if c.auth
            .verify_with_keys(&c.config.issuers[0], &c.keys, &parsed, NOW)
            .is_ok()
        {
            assert!(
                c.signed.contains(signing_input),
                "a signature nobody made verified: {token}"
            );
        }
    }
    if let Ok(p) = verify_token(token, NOW) {
        assert!(
            p.exp + 60 > NOW,
            "expired token accepted (RFC 7519: now must be before exp)"
        );
        assert_eq!(&*p.iss, ISSUER);
        assert!(p.nbf.is_none_or(|n| n <= NOW + 60));
    }
}

// ---------------------------------------------------------------------------------------------
// dpop: proof parse + verify, htu normalization
// ---------------------------------------------------------------------------------------------

pub fn dpop(data: &[u8]) {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let c = ctx();
    let want = Expect {
        method: "POST",
        htu: DPOP_HTU,
        access_token: DPOP_ACCESS_TOKEN,
        algs: &Algorithm::ALL,
        now: NOW,
        past: 300,
        future: 300,
        nonce: None,
    };
    if let Ok(p) = dpop::verify(proof, &want) {
        let (input, _) = proof.rsplit_once('.').unwrap();
        assert!(
            c.dpop_signed.contains(input),
            "a proof nobody signed verified: {proof}"
        );
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(input.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(Some(p.jkt), dpop::thumbprint(&header["jwk"]));
        assert!((NOW - 300..=NOW + 300).contains(&p.iat));
    }
    if let Some(n) = dpop::normalize_htu(proof) {
        assert_eq!(
            dpop::normalize_htu(&n).as_deref(),
            Some(n.as_str()),
            "htu normalization is not idempotent"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// mcp_request: JSON-RPC body parse + policy decision
// ---------------------------------------------------------------------------------------------

/// A resource URI the `deny` route's `file:///public/*` rule covers, judged independently:
/// one percent-decoding, then a plain `file:` URI under `/public/` with no `..` segment, no
/// backslash, no control character and nothing left encoded. A `.` segment names the
/// directory it is in, on any reading, so it may stay (`/public/./a` is `/public/a`).
fn oracle_public_uri(u: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(u).decode_utf8_lossy();
    let lower = decoded.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("file:///") {
        r
    } else if let Some(r) = lower.strip_prefix("file://localhost/") {
        r
    } else {
        return false;
    };
    let path_start = decoded.len() - rest.len();
    let path = &decoded[path_start..];
    path.starts_with("public/")
        && !path.contains(['\\', '%'])
        && !path.chars().any(char::is_control)
        && !path.split('/').any(|s| s == "..")
}

/// Whether one message may reach the `deny` route's upstream for a caller with only
/// `mcp:tools`: no tool (every rule needs another scope, the default denies), resources
/// under `file:///public/`, prompts `safe_*`, and the methods that name nothing.
fn oracle_deny_route_allows(msg: &Value) -> bool {
    let Some(m) = msg.get("method") else {
        return true; // a response from the client asks for nothing
    };
    let Some(m) = m.as_str() else {
        return false;
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let s = |v: &Value| v.as_str().map(str::to_string);
    match m {
        "tools/call" => false,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            s(&params["uri"]).is_some_and(|u| oracle_public_uri(&u))
        }
        "prompts/get" => s(&params["name"]).is_some_and(|n| n.starts_with("safe_")),
        "completion/complete" => match params["ref"]["type"].as_str() {
            Some("ref/prompt") => s(&params["ref"]["name"]).is_some_and(|n| n.starts_with("safe_")),
            Some("ref/resource") => s(&params["ref"]["uri"]).is_some_and(|u| oracle_public_uri(&u)),
            _ => false,
        },
        "subscriptions/listen" => params["notifications"]["resourceSubscriptions"]
            .as_array()
            .is_none_or(|a| a.iter().all(|u| u.as_str().is_some_and(oracle_public_uri))),
        m => METHODS_NAMING_NOTHING.contains(&m),
    }
}

/// A JSON document as a `Value`, read without `Value`'s own `Deserialize`: that one treats
/// a member named `$serde_json::private::RawValue` (the `raw_value` feature's token, also
/// when spelled with escapes) as a raw value and fails on valid JSON an upstream reads as
/// written (found by the campaign, mcp_request). Duplicate members: the last one wins.
struct PlainJson(Value);

impl<'de> serde::Deserialize<'de> for PlainJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PlainJson;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, b: bool) -> Result<PlainJson, E> {
                Ok(PlainJson(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<PlainJson, E> {
                Ok(PlainJson(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<PlainJson, E> {
                Ok(PlainJson(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<PlainJson, E> {
                Ok(PlainJson(
                    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E>(self, s: &str) -> Result<PlainJson, E> {
                Ok(PlainJson(Value::String(s.to_string())))
            }
            fn visit_unit<E>(self) -> Result<PlainJson, E> {
                Ok(PlainJson(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PlainJson, A::Error> {
                let mut out = Vec::new();
                while let Some(PlainJson(v)) = seq.next_element()? {
                    out.push(v);
                }
                Ok(PlainJson(Value::Array(out)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PlainJson, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(k) = map.next_key::<String>()? {
                    let PlainJson(v) = map.next_value()?;
                    out.insert(k, v);
                }
                Ok(PlainJson(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Input: the method on the first line, header lines, a blank line, the body.
pub fn mcp_request(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let (method, header_lines) = match head.iter().position(|&b| b == b'\n') {
        Some(i) => (&head[..i], &head[i + 1..]),
        None => (head, &b""[..]),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let (headers, _) = headers_of(header_lines);
    let c = ctx();
    let p = principal("mcp:tools");
    let route = &c.config.routes[DENY];
    let rp = RoutePolicy {
        required: &route.auth.scopes,
        policy: &route.mcp,
    };
    if shape::judge(rp, Some(&p), &method, &headers, body).is_err() {
        return;
    }
    // Forwarded on the deny route: the oracle must agree with everything in it.
    assert!(
        matches!(method.as_str(), "POST" | "GET" | "DELETE" | "OPTIONS"),
        "method {method} forwarded on a policy route"
    );
    if body.is_empty() {
        return;
    }
    assert_eq!(method.as_str(), "POST", "a body forwarded on a non-POST");
    for v in headers.get_all(http::header::CONTENT_ENCODING) {
        assert!(
            v.to_str().is_ok_and(|s| s
                .split(',')
                .all(|c| c.trim().eq_ignore_ascii_case("identity"))),
            "an encoded body forwarded"
        );
    }
    let doc = serde_json::from_slice::<PlainJson>(body)
        .unwrap_or_else(|_| {
            panic!(
                "forwarded a body that is not JSON: {:?}",
                String::from_utf8_lossy(body)
            )
        })
        .0;
    let msgs = match &doc {
        Value::Array(a) => a.iter().collect::<Vec<_>>(),
        one => vec![one],
    };
    for m in msgs {
        assert!(
            oracle_deny_route_allows(m),
            "forwarded a denied operation: {m}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// list_filter: SSE and JSON tool-list filtering
// ---------------------------------------------------------------------------------------------

/// Every tool named in a tool list of `v` (a message or a batch), found the way clients
/// may read it: member names in any letter case; a result with `content` is a tool's
/// output, not a list.
fn oracle_listed_tools(v: &Value, out: &mut Vec<String>) {
    let msgs = match v {
        Value::Array(a) => a.iter().collect::<Vec<_>>(),
        one => vec![one],
    };
    for m in msgs {
        let Some(m) = m.as_object() else { continue };
        for (_, r) in m.iter().filter(|(k, _)| k.eq_ignore_ascii_case("result")) {
            let Some(r) = r.as_object() else { continue };
            if r.keys().any(|k| k.eq_ignore_ascii_case("content")) {
                continue;
            }
            for (_, tools) in r.iter().filter(|(k, _)| k.eq_ignore_ascii_case("tools")) {
                for t in tools.as_array().into_iter().flatten() {
                    for (_, n) in t
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| k.eq_ignore_ascii_case("name"))
                    {
                        if let Some(n) = n.as_str() {
                            out.push(n.to_string());
                        }
                    }
                }
            }
        }
    }
}

/// The data of each event of an SSE stream, parsed independently.
fn oracle_sse_data(stream: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(stream)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut events = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    for line in text.split('\n') {
        if line.is_empty() {
            events.extend(data.take());
        } else if let Some(v) = line.strip_prefix("data") {
            if v.is_empty() || v.starts_with(':') {
                let v = v.strip_prefix(':').unwrap_or(v);
                let v = v.strip_prefix(' ').unwrap_or(v);
                let d = data.get_or_insert_with(Vec::new);
                if !d.is_empty() {
                    d.push(b'\n');
                }
                d.extend_from_slice(v.as_bytes());
            }
        }
    }
    events.extend(data);
    events
}

/// Input: one byte seeding the chunking, then the upstream's answer.
pub fn list_filter(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let c = ctx();
    let p = principal("mcp:tools");
    let route = &c.config.routes[ALLOW];
    let keep = |name: &str| tool_visible(&route.auth.scopes, &route.mcp, Some(&p), name);
    let visible = |name: &str| !name.starts_with("delete_");

    // SSE: the same output and verdict whatever the chunking.
    let run = |chunks: &mut dyn Iterator<Item = &[u8]>| {
        let mut f = SseFilter::new();
        let mut out = Vec::new();
        let mut r = Ok(());
        for ch in chunks {
            r = f.push(ch, &keep, &mut out);
            if r.is_err() {
                break;
            }
        }
        if r.is_ok() {
            r = f.finish(&keep, &mut out);
        }
        (out, r)
    };
    let whole = run(&mut std::iter::once(stream));
    let step = usize::from(seed % 7) + 1;
    let pieces = run(&mut stream.chunks(step));
    assert_eq!(
        whole, pieces,
        "SSE filtering depends on chunking (step {step})"
    );
    if whole.1.is_ok() {
        for d in oracle_sse_data(&whole.0) {
            if let Ok(v) = serde_json::from_slice::<Value>(&d) {
                let mut names = Vec::new();
                oracle_listed_tools(&v, &mut names);
                for n in names {
                    assert!(visible(&n), "SSE list shows denied tool {n}");
                }
            }
        }
    }

    // JSON: a filtered list, or an unchanged document that held none to filter.
    match filter_json(stream, &keep) {
        Ok(Judged::Filtered(out)) => {
            let v: Value = serde_json::from_slice(&out).expect("filtered output is not JSON");
            let mut names = Vec::new();
            oracle_listed_tools(&v, &mut names);
            for n in names {
                assert!(visible(&n), "JSON list shows denied tool {n}");
            }
        }
        Ok(Judged::Unchanged) => {
            if let Ok(v) = serde_json::from_slice::<Value>(stream) {
                let mut names = Vec::new();
                oracle_listed_tools(&v, &mut names);
                for n in names {
                    assert!(visible(&n), "unchanged JSON shows denied tool {n}");
                }
            }
        }
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// path_route: path normalization, route lookup, the forwarded path
// ---------------------------------------------------------------------------------------------

/// Input: the request target on the first line, the `Host` on the second.
pub fn path_route(data: &[u8]) {
    let (target, host) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    if let Ok(s) = std::str::from_utf8(target) {
        if let Ok(n) = crate::path::normalize(s) {
            assert_eq!(
                crate::path::normalize(&n).as_ref(),
                Ok(&n),
                "path normalization is not idempotent"
            );
        }
    }
    let Ok(mut req) = RequestHeader::build("GET", target, None) else {
        return;
    };
    if let Some(h) = host {
        let Ok(h) = HeaderValue::from_bytes(h) else {
            return;
        };
        if req.insert_header(http::header::HOST, h).is_err() {
            return;
        }
    }
    let c = ctx();
    let Ok(Target::Route { index, path }) = steps::route(&c.config, &req) else {
        return;
    };
    assert_eq!(
        crate::path::normalize(req.uri.path()).as_ref(),
        Ok(&path),
        "the routed path is not the request's normalized path"
    );
    let route = &c.config.routes[index];
    let prefix = &route.matching.path_prefix;
    assert!(
        crate::path::has_prefix_ignore_ascii_case(&path, prefix),
        "{path} routed to {prefix}"
    );
    // Longest prefix: no route of a longer prefix (for any host) matches this path and host.
    let host_of = |r: &crate::config::Route| r.matching.host.clone();
    for other in c.config.routes.iter() {
        let op = &other.matching.path_prefix;
        if op.len() > prefix.len()
            && crate::path::has_prefix_ignore_ascii_case(&path, op)
            && (host_of(other).is_none() || host_of(other) == host_of(route))
        {
            panic!("{path} routed to {prefix}, not to the longer {op}");
        }
    }
    // The upstream receives exactly the path that was authorized.
    let p = principal("mcp:tools");
    let up = steps::identity(
        route,
        Some(&p),
        &path,
        req.uri.query(),
        None,
        &c.config.listeners.public,
    )
    .expect("identity refused a routed request");
    let forwarded = up.target.split('?').next().unwrap_or("");
    match &route.forwarding.rewrite {
        None => assert_eq!(
            forwarded, path,
            "forwarded path differs from the authorized one"
        ),
        Some(rw) => {
            let rest = &path[prefix.len()..];
            assert_eq!(
                forwarded,
                format!("{}{}", rw.trim_end_matches('/'), rest),
                "rewritten path differs"
            );
        }
    }
    assert_eq!(up.target.split_once('?').map(|x| x.1), req.uri.query());
}

// ---------------------------------------------------------------------------------------------
// resource_uri
// ---------------------------------------------------------------------------------------------

pub fn resource_uri(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = resource_uri::normalize(s) {
        assert_eq!(
            resource_uri::normalize(&n).as_ref(),
            Ok(&n),
            "resource URI normalization is not idempotent"
        );
        assert!(
            !n.split(['/', '?', '#']).any(|seg| seg == ".."),
            "a dot-dot segment survived: {n}"
        );
    }
    if let Some(p) = resource_uri::canonical_pattern(s) {
        assert_eq!(
            resource_uri::canonical_pattern(&p).as_ref(),
            Some(&p),
            "pattern canonicalization is not idempotent"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// config: YAML bytes → compiled config
// ---------------------------------------------------------------------------------------------

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > 64 * 1024 {
        return;
    }
    match Config::from_yaml("fuzz.yaml", text) {
        Ok(c) => {
            // Deterministic: the same text compiles to the same routes.
            let again = Config::from_yaml("fuzz.yaml", text).expect("second compile failed");
            let names = |c: &Config| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&c), names(&again));
            assert_ne!(c.listeners.address, c.listeners.admin_address);
        }
        Err(e) => {
            assert!(!e.reason.is_empty(), "an error without a reason");
            assert!(!e.to_string().is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target)
    }

    /// Every committed corpus file (seeds and regressions) through its target, on stable.
    #[test]
    fn fuzz_corpora_replay() {
        for (name, target) in TARGETS {
            let dir = corpus_dir(name);
            let mut n = 0;
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files {
                let data = std::fs::read(&f).unwrap();
                let r = std::panic::catch_unwind(|| target(&data));
                assert!(r.is_ok(), "{name}: {} breaks an invariant", f.display());
                n += 1;
            }
            assert!(n >= 3, "{name}: only {n} corpus files");
        }
    }

    /// The seed tokens verify as intended: the targets' oracles are not vacuous.
    #[test]
    fn seeds_exercise_the_accepting_paths() {
        let (jwts, proofs) = signed_seed_tokens();
        assert!(verify_token(&jwts[0], NOW).is_ok());
        assert!(verify_token(&jwts[1], NOW).is_ok());
        assert!(
            verify_token(&jwts[3], NOW).is_ok(),
            "exp one second inside the skew"
        );
        assert!(verify_token(&jwts[4], NOW).is_err(), "exp at the skew edge");
        let want = |m| Expect {
            method: m,
            htu: DPOP_HTU,
            access_token: DPOP_ACCESS_TOKEN,
            algs: &Algorithm::ALL,
            now: NOW,
            past: 300,
            future: 300,
            nonce: None,
        };
        assert!(dpop::verify(&proofs[0], &want("POST")).is_ok());
        assert!(dpop::verify(&proofs[2], &want("POST")).is_ok());
        assert!(dpop::verify(&proofs[3], &want("POST")).is_err());
    }

    /// Differential verification against jose (tests/interop/differential/run.sh runs it
    /// with the generated vectors and jose's verdicts; skipped without them).
    #[test]
    #[ignore]
    fn differential_against_jose() {
        let (Ok(vpath), Ok(jpath)) = (
            std::env::var("MCPGATE_DIFFERENTIAL_VECTORS"),
            std::env::var("MCPGATE_DIFFERENTIAL_VERDICTS"),
        ) else {
            panic!("set MCPGATE_DIFFERENTIAL_VECTORS and MCPGATE_DIFFERENTIAL_VERDICTS");
        };
        let v: Value = serde_json::from_slice(&std::fs::read(&vpath).unwrap()).unwrap();
        let theirs: Value = serde_json::from_slice(&std::fs::read(&jpath).unwrap()).unwrap();
        let now = v["now"].as_i64().unwrap();
        let yaml = format!(
            "listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}\n\
             admin: {{address: '127.0.0.1:2'}}\n\
             issuers: [{{name: a, issuer: '{}', jwks_uri: 'https://as.example.com/jwks', clock_skew_seconds: {}}}]\n\
             routes: [{{name: r, path_prefix: /deny, upstream: 'http://127.0.0.1:3'}}]\n",
            v["issuer"].as_str().unwrap(),
            v["skew"].as_i64().unwrap()
        );
        let config = Config::from_yaml("differential", &yaml).unwrap();
        assert_eq!(
            config.routes[0].resource.audiences,
            vec![v["audience"].as_str().unwrap().to_string()]
        );
        let auth = Authenticator::new(10);
        let jwks = serde_json::to_vec(&v["jwks"]).unwrap();
        let (keys, _) = jwt::parse_jwks(&jwks, &config.issuers[0].algorithms).unwrap();
        let mut disagree = Vec::new();
        let (mut n, mut accepted) = (0, 0);
        for t in v["jwt"].as_array().unwrap() {
            let id = t["id"].as_u64().unwrap().to_string();
            let token = t["token"].as_str().unwrap();
            let ours = verify_token_with(&config, &auth, &keys, token, now);
            let their = &theirs["jwt"][&id];
            n += 1;
            accepted += usize::from(ours.is_ok());
            if ours.is_ok() != their["ok"].as_bool().unwrap() {
                disagree.push(format!(
                    "JWT {id} [{}]: mcpgate {:?}, jose {}\n    {token}",
                    t["note"].as_str().unwrap(),
                    ours.as_ref()
                        .map(|_| "accepts")
                        .map_err(|e| e.description()),
                    their
                ));
            }
        }
        let d = &v["dpop"];
        let htu = dpop::normalize_htu(d["htu"].as_str().unwrap()).unwrap();
        let want = Expect {
            method: d["method"].as_str().unwrap(),
            htu: &htu,
            access_token: d["access_token"].as_str().unwrap(),
            algs: &config.dpop.algorithms,
            now,
            past: d["past"].as_i64().unwrap(),
            future: d["future"].as_i64().unwrap(),
            nonce: None,
        };
        let (mut m, mut proofs_ok) = (0, 0);
        for p in d["vectors"].as_array().unwrap() {
            let id = p["id"].as_u64().unwrap().to_string();
            let proof = p["proof"].as_str().unwrap();
            let ours = dpop::verify(proof, &want);
            let their = &theirs["dpop"][&id];
            m += 1;
            proofs_ok += usize::from(ours.is_ok());
            let same = match (&ours, their["ok"].as_bool().unwrap()) {
                (Ok(pr), true) => their["jkt"].as_str() == Some(pr.jkt.as_str()),
                (Err(_), false) => true,
                _ => false,
            };
            if !same {
                disagree.push(format!(
                    "DPoP {id} [{}]: mcpgate {:?}, jose {}\n    {proof}",
                    p["note"].as_str().unwrap(),
                    ours.map(|p| p.jkt),
                    their
                ));
            }
        }
        println!(
            "differential: {n} JWTs ({accepted} accepted), {m} DPoP proofs ({proofs_ok} accepted), {} disagreements",
            disagree.len()
        );
        assert!(
            accepted > 0 && proofs_ok > 0,
            "no vector was accepted: the generator is broken"
        );
        assert!(
            disagree.is_empty(),
            "{} disagreements (vectors in {vpath}):\n{}",
            disagree.len(),
            disagree.join("\n")
        );
    }

    /// Writes the seed corpora (`cargo test --lib write_seed_corpora -- --ignored`).
    #[test]
    #[ignore]
    fn write_seed_corpora() {
        let write = |target: &str, seeds: Vec<Vec<u8>>| {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, s) in seeds.into_iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
            }
        };
        let b = |s: &str| s.as_bytes().to_vec();
        let (jwts, proofs) = signed_seed_tokens();
        write(
            "credentials",
            vec![
                b("\0authorization: Bearer abc.def-ghi_~+/=="),
                b("\0authorization: DPoP eyJ.eyJ.sig\ndpop: x"),
                b("\0authorization: bearer   tok  \n?a=1&access_token=x"),
                b("\0authorization: Bearer a\nauthorization: Bearer b"),
                b("\x02x-api-key: k3y-value\nauthorization: ApiKey other"),
                b("\x03authorization: Bearer tok"),
                b("\0authorization: Basic dXNlcjpwYXNz"),
                b("\0authorization: Bearer a b"),
                b("\x02authorization: ApiKey \x7fkey"),
            ],
        );
        let mut jwt_seeds: Vec<Vec<u8>> = jwts.iter().map(|t| b(t)).collect();
        let h = |v: Value| b64json(&v);
        let claims = h(json!({"iss": ISSUER, "exp": NOW + 60, "aud": "x"}));
        for bad in [
            json!({"alg": "none"}),
            json!({"alg": "HS256", "kid": "p256"}),
            json!({"alg": "ES256", "crit": ["exp"]}),
            json!({"alg": "ES256", "jwk": {"kty": "EC"}}),
            json!({"alg": "ES256", "kid": 1}),
        ] {
            jwt_seeds.push(format!("{}.{claims}.AAAA", h(bad)).into_bytes());
        }
        jwt_seeds.push(b("2YotnFZFEjr1zCsicMWpAA"));
        write("jwt", jwt_seeds);
        let mut dpop_seeds: Vec<Vec<u8>> = proofs.iter().map(|t| b(t)).collect();
        dpop_seeds.push(b("HTTPS://MCP.example.com:443/./mcp/../mcp"));
        dpop_seeds.push(b("https://[::1]:8443/%2e%2E/x"));
        write("dpop", dpop_seeds);
        let req = |m: &str, h: &str, body: &str| format!("{m}\n{h}\n\n{body}").into_bytes();
        let msg = |rest: &str| format!(r#"{{"jsonrpc":"2.0","id":1,{rest}}}"#);
        write(
            "mcp_request",
            vec![
                req(
                    "POST",
                    "content-type: application/json",
                    &msg(r#""method":"tools/call","params":{"name":"delete_all"}"#),
                ),
                req(
                    "POST",
                    "content-type: application/json",
                    &msg(r#""method":"resources/read","params":{"uri":"file:///public/a.txt"}"#),
                ),
                req(
                    "POST",
                    "content-type: text/plain",
                    &msg(
                        r#""method":"resources/read","params":{"uri":"file:///public/%2e%2e/etc/passwd"}"#,
                    ),
                ),
                req(
                    "POST",
                    "",
                    &format!(
                        "[{},{}]",
                        msg(r#""method":"ping""#),
                        msg(r#""method":"prompts/get","params":{"name":"safe_x"}"#)
                    ),
                ),
                req(
                    "POST",
                    "mcp-method: tools/list",
                    &msg(r#""method":"tools/list""#),
                ),
                req(
                    "post",
                    "",
                    &msg(r#""method":"tools/call","params":{"name":"x"}"#),
                ),
                req("GET", "", ""),
                req("DELETE", "", "{}"),
                req("POST", "content-encoding: gzip", &msg(r#""method":"ping""#)),
                req(
                    "POST",
                    "",
                    &msg(
                        r#""method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///public/{x}"},"argument":{"name":"a","value":""}}"#,
                    ),
                ),
                req(
                    "POST",
                    "",
                    &msg(
                        r#""method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///public/a","file:///secret"]}}"#,
                    ),
                ),
                req("POST", "", &msg(r#""method":"ping","method":"tools/call""#)),
            ],
        );
        let list = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_a"},{"name":"delete_b"},{"Name":"delete_c"},{"name":1}]}}"#;
        write(
            "list_filter",
            vec![
                format!("\x03{list}").into_bytes(),
                format!("\x01event: message\ndata: {list}\n\n: keep-alive\n\n").into_bytes(),
                format!("\x05data: {}\r\ndata: {}\r\n\r\n", &list[..40], &list[40..]).into_bytes(),
                b("\x02[{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"Tools\":[{\"name\":\"delete_x\"}]}}]"),
                b("\x04{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[],\"tools\":[{\"name\":\"delete_x\"}]}}"),
                b"\x06\xef\xbb\xbfdata: {}\n\n".to_vec(),
                b("\x00{\"result\":{\"tools\":[]},\"RESULT\":{\"tools\":[{\"name\":\"delete_x\"}]}}"),
                b("\x01garbage line\n\n"),
            ],
        );
        write(
            "path_route",
            vec![
                b("/mcp\nmcp.example.com"),
                b("/MCP/Admin/x?q=1\nmcp.example.com"),
                b("/mcp/%61dmin\nmcp.example.com"),
                b("/mcp/./admin/../admin\nmcp.example.com"),
                b("/gh/repos/x\nmcp.example.com"),
                b("/mcp\nother.example."),
                b("/mcp;x=1/admin\nmcp.example.com"),
                b("/mcp//admin\nmcp.example.com"),
                b("http://mcp.example.com/mcp/admin\nmcp.example.com"),
                b("/deny%2fx\nmcp.example.com"),
            ],
        );
        write(
            "resource_uri",
            vec![
                b("file:///public/a.txt"),
                b("FILE://localhost/public/%7e/x"),
                b("https://Example.COM:443/a/./b/../c?x#y"),
                b("file:///public/%2e%2e/secret"),
                b("file:///public/{name}"),
                b("urn:x:y"),
                b("file:///public/*"),
                b("file:///a b/é"),
            ],
        );
        write(
            "config",
            vec![
                CONFIG.as_bytes().to_vec(),
                b("listen: {address: '127.0.0.1:1', public_url: 'https://x'}\nadmin: {address: '127.0.0.1:1'}\nroutes: []\n"),
                b("listen: {address: '127.0.0.1:1', public_url: 'https://x'}\nadmin: {address: '127.0.0.1:2'}\nissuers: [{name: a, issuer: 'https://as', algorithms: [HS256]}]\nroutes:\n- {name: r, path_prefix: /a, upstream: 'http://127.0.0.1:3', tools: {'x': [s]}}\n"),
                b("listen: {address: ${UNSET_FUZZ_VAR}}\n"),
                b("routes: [{name: a, path_prefix: '/a/../b'}]"),
                b("scope_hierarchy: {a: [b], b: [a]}"),
            ],
        );
    }
}
