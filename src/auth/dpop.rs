//! DPoP (RFC 9449): proof-of-possession checks for sender-constrained access tokens.
//!
//! Runs in the token step when a request says `Authorization: DPoP <token>`: the one
//! `DPoP` header must be a JWS of type `dpop+jwt`, signed with an allow-listed
//! asymmetric algorithm by the public key in its own `jwk` header, for this request's
//! method and URI (computed from the configured public URL, never from Host), recent
//! (`iat` window), for this token (`ath`), not seen before (`jti` replay store), and,
//! where the route asks for it, carrying a nonce we issued. The token's `cnf.jkt` must
//! then equal the RFC 7638 thumbprint of that key (checked by the caller with
//! [`Proof::jkt`]).
//!
//! Nonces are stateless: an HMAC over a time step with a configured secret, so that
//! replicas agree without sharing state. The replay store is a small trait: the local
//! [`LocalReplay`], or [`SharedReplay`] (the local cache as a first filter, then one
//! atomic `SET NX PX` in Redis so that a proof used at one replica is refused at the
//! others). [`authorize`] is a plain function; the one replay lookup, which may go to
//! Redis, is [`check_replay`], awaited by the proxy right after it.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use moka::sync::Cache;
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::jwt::{self, Algorithm};
use crate::auth::Presented;
use crate::compile::{At, CompileError};
use crate::error::Refusal;
use crate::principal::Principal;

// ---------------------------------------------------------------------------------------------
// The `dpop` section and a route's `dpop` settings
// ---------------------------------------------------------------------------------------------

/// DPoP proof settings shared by every route (RFC 9449).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileDpop {
    /// Proof algorithms accepted (asymmetric only).
    pub algorithms: Option<Vec<String>>,
    /// How old a proof's `iat` may be.
    #[serde(default = "default_dpop_window")]
    pub iat_past_seconds: u64,
    /// How far in the future a proof's `iat` may be (client clock ahead).
    #[serde(default = "default_dpop_window")]
    pub iat_future_seconds: u64,
    /// Secret for stateless server nonces; give every replica the same one. Default: a
    /// random secret per process (fine for a single replica).
    pub nonce_secret: Option<String>,
    /// How long a nonce stays valid (it is accepted for one more period after).
    #[serde(default = "default_dpop_window")]
    pub nonce_lifetime_seconds: u64,
    /// Proof `jti`s remembered for replay detection.
    #[serde(default = "default_replay_entries")]
    pub replay_cache_entries: u64,
}

impl Default for FileDpop {
    fn default() -> Self {
        FileDpop {
            algorithms: None,
            iat_past_seconds: default_dpop_window(),
            iat_future_seconds: default_dpop_window(),
            nonce_secret: None,
            nonce_lifetime_seconds: default_dpop_window(),
            replay_cache_entries: default_replay_entries(),
        }
    }
}

fn default_dpop_window() -> u64 {
    300
}
fn default_replay_entries() -> u64 {
    1_000_000
}

/// Whether a route accepts DPoP-bound tokens.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// Only Bearer tokens; the DPoP scheme is refused and never advertised.
    Disabled,
    /// Bearer and DPoP; a DPoP-bound token must come with its proof.
    #[default]
    Allowed,
    /// DPoP only: Bearer presentations and unbound tokens are refused.
    Required,
}

/// Compiled DPoP settings.
pub struct DpopSettings {
    pub algorithms: Vec<Algorithm>,
    /// `algs="..."` for challenges and `dpop_signing_alg_values_supported`.
    pub algs_param: String,
    pub iat_past: i64,
    pub iat_future: i64,
    pub nonces: crate::auth::dpop::Nonces,
    pub replay_entries: u64,
}

impl std::fmt::Debug for DpopSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopSettings")
            .field("algorithms", &self.algorithms)
            .field("iat_past", &self.iat_past)
            .field("iat_future", &self.iat_future)
            .finish()
    }
}

/// A random secret for this process's DPoP nonces when none is configured.
/// `None` if the system's random source failed: the config is then refused rather than
/// nonces made predictable by an all-zero secret.
fn process_nonce_secret() -> Option<&'static [u8; 32]> {
    static SECRET: std::sync::LazyLock<Option<[u8; 32]>> = std::sync::LazyLock::new(|| {
        let mut s = [0u8; 32];
        aws_lc_rs::rand::fill(&mut s).ok().map(|()| s)
    });
    SECRET.as_ref()
}

/// Check and compile the `dpop` section.
pub fn compile(f: &FileDpop) -> Result<DpopSettings, CompileError> {
    compile_settings(f).at("dpop")
}

fn compile_settings(f: &FileDpop) -> Result<DpopSettings, String> {
    let algorithms = match &f.algorithms {
        None => Algorithm::ALL.to_vec(),
        Some(list) if list.is_empty() => return Err("dpop.algorithms must not be empty".into()),
        Some(list) => list
            .iter()
            .map(|a| {
                Algorithm::parse(a).ok_or_else(|| {
                    format!("dpop.algorithms: {a:?} is not an allowed asymmetric algorithm")
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if f.iat_past_seconds > 3600 || f.iat_future_seconds > 3600 {
        return Err("dpop iat windows must be at most 3600 seconds".into());
    }
    if f.nonce_lifetime_seconds < 10 {
        return Err("dpop.nonce_lifetime_seconds must be at least 10".into());
    }
    let secret: &[u8] = match &f.nonce_secret {
        Some(s) if s.len() < 16 => {
            return Err("dpop.nonce_secret must be at least 16 characters".into())
        }
        Some(s) => s.as_bytes(),
        None => process_nonce_secret()
            .ok_or("dpop: the system's random source failed; set dpop.nonce_secret")?,
    };
    let algs_param = algorithms
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(DpopSettings {
        algorithms,
        algs_param,
        iat_past: f.iat_past_seconds as i64,
        iat_future: f.iat_future_seconds as i64,
        nonces: Nonces::new(secret, f.nonce_lifetime_seconds as i64),
        replay_entries: f.replay_cache_entries.max(1),
    })
}

/// A route's DPoP settings: `dpop` and `dpop_nonce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDpop {
    pub mode: DpopMode,
    /// Require a server-issued nonce in proofs (`use_dpop_nonce`).
    pub nonce: bool,
}

impl RouteDpop {
    pub fn compile(mode: DpopMode, nonce: bool) -> Result<RouteDpop, CompileError> {
        if nonce && mode == DpopMode::Disabled {
            return Err(CompileError::new(
                "dpop_nonce",
                "dpop_nonce needs dpop: allowed or required",
            ));
        }
        Ok(RouteDpop { mode, nonce })
    }

    /// The proof algorithms a route offers (empty when it refuses DPoP).
    pub fn offered<'a>(&self, settings: &'a DpopSettings) -> &'a [Algorithm] {
        match self.mode {
            DpopMode::Disabled => &[],
            _ => &settings.algorithms,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Proofs
// ---------------------------------------------------------------------------------------------

/// Why a proof was refused. Most are `invalid_dpop_proof`; a missing or stale nonce is
/// `use_dpop_nonce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopError {
    InvalidProof(&'static str),
    UseNonce,
}

fn bad(why: &'static str) -> DpopError {
    DpopError::InvalidProof(why)
}

/// base64url(SHA-256(access token)): the proof's `ath`.
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url): the required members only, in
/// lexicographic order, no whitespace.
pub fn thumbprint(jwk: &serde_json::Value) -> Option<String> {
    let get = |k: &str| jwk.get(k).and_then(|v| v.as_str());
    let members: Vec<(&str, &str)> = match get("kty")? {
        "RSA" => vec![("e", get("e")?), ("kty", "RSA"), ("n", get("n")?)],
        "EC" => vec![
            ("crv", get("crv")?),
            ("kty", "EC"),
            ("x", get("x")?),
            ("y", get("y")?),
        ],
        "OKP" => vec![("crv", get("crv")?), ("kty", "OKP"), ("x", get("x")?)],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        // Member values are base64url strings and registered names; JSON-encode anyway.
        canonical.push_str(&format!("\"{k}\":{}", serde_json::Value::from(*v)));
    }
    canonical.push('}');
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// Normalize an HTTP URI for `htu` comparison (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2-3)
/// into `scheme://host:port/path`: scheme and host lower-cased, the default port made
/// explicit, and the path normalized by [`crate::path::normalize`], the request path's
/// own normalizer (`/%6Dcp` is `/mcp`). Nothing else is interpreted: the host is kept as
/// written (no trailing-dot stripping, no IPv4 forms such as `0x7f.0.0.1`), and anything
/// but `scheme://host[:port][/path]` in visible ASCII is `None` (white space, userinfo, a
/// query or fragment, a port with a leading zero), so it never matches.
pub fn normalize_htu(s: &str) -> Option<String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) || s.contains(['?', '#']) {
        return None;
    }
    let (scheme, rest) = s.split_once("://")?;
    let (scheme, default_port) = if scheme.eq_ignore_ascii_case("https") {
        ("https", 443)
    } else if scheme.eq_ignore_ascii_case("http") {
        ("http", 80)
    } else {
        return None;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rfind(':') {
        // A bracketed IPv6 literal's colons are not a port separator.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let host_ok = if let Some(literal) = host.strip_prefix('[') {
        literal.strip_suffix(']').is_some_and(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if !host_ok {
        return None;
    }
    let port: u16 = match port {
        None => default_port,
        Some(p)
            if !p.is_empty() && !p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            p.parse().ok()?
        }
        Some(_) => return None,
    };
    let path = crate::path::normalize(path).ok()?;
    Some(format!(
        "{scheme}://{}:{port}{path}",
        host.to_ascii_lowercase()
    ))
}

#[derive(Deserialize)]
struct ProofHeader {
    typ: Option<serde_json::Value>,
    alg: serde_json::Value,
    jwk: Option<serde_json::Value>,
    // Present (even null) means refused: we implement no JWS extension (RFC 7515 §4.1.11),
    // and `b64: false` would sign the payload unencoded.
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    b64: Option<serde_json::Value>,
}

/// A member that is present, whatever its value (null included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<serde_json::Value>,
    htm: Option<serde_json::Value>,
    htu: Option<serde_json::Value>,
    iat: Option<serde_json::Number>,
    ath: Option<serde_json::Value>,
    nonce: Option<serde_json::Value>,
}

/// What a proof must match.
pub struct Expect<'a> {
    pub method: &'a str,
    /// The request URI without query, already normalized with [`normalize_htu`].
    pub htu: &'a str,
    pub access_token: &'a str,
    pub algs: &'a [Algorithm],
    pub now: i64,
    /// Accepted `iat` range: `now - past ..= now + future`.
    pub past: i64,
    pub future: i64,
    pub nonce: Option<&'a Nonces>,
}

/// A verified proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

impl Proof {
    /// Replay-store key: the `jti` together with the normalized `htu` it was for.
    pub fn replay_key(&self, htu: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.jti.as_bytes());
        h.update([0]);
        h.update(htu.as_bytes());
        h.finalize().into()
    }
}

fn string(
    v: Option<serde_json::Value>,
    missing: &'static str,
    not_string: &'static str,
) -> Result<String, DpopError> {
    match v {
        None => Err(bad(missing)),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(bad(not_string)),
    }
}

/// Verify one DPoP proof JWS against the request (RFC 9449 §4.3 steps 2-11, except the
/// replay and `cnf` checks, which need state and the token).
pub fn verify(proof: &str, want: &Expect<'_>) -> Result<Proof, DpopError> {
    if proof.len() > 8192 {
        return Err(bad("DPoP proof is too large"));
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("DPoP proof is not a compact JWS"));
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad("DPoP proof segment is not base64url"))
    };
    let (header_raw, claims_raw) = (decode(h)?, decode(p)?);
    // RFC 7515 §5.2 (4, 6): each must be UTF-8. serde_json checks UTF-8 only in the strings
    // it keeps, not in members it skips, so the check is made here, on the whole segment
    // (as jwt::parse does for tokens).
    if std::str::from_utf8(&header_raw).is_err() || std::str::from_utf8(&claims_raw).is_err() {
        return Err(bad("DPoP proof header or claims are not UTF-8"));
    }
    let header: ProofHeader = serde_json::from_slice(&header_raw)
        .map_err(|_| bad("DPoP proof header is not valid JSON"))?;
    let claims: ProofClaims = serde_json::from_slice(&claims_raw)
        .map_err(|_| bad("DPoP proof claims are not a valid JSON object"))?;
    let signature = decode(sig)?;

    if header.crit.is_some() || header.b64.is_some() {
        return Err(bad(
            "DPoP proof header uses crit/b64 extensions, which are not supported",
        ));
    }
    let typ = string(
        header.typ,
        "DPoP proof has no typ",
        "DPoP proof typ is not a string",
    )?;
    if !typ.eq_ignore_ascii_case("dpop+jwt") && !typ.eq_ignore_ascii_case("application/dpop+jwt") {
        return Err(bad("DPoP proof typ is not dpop+jwt"));
    }
    let alg = match &header.alg {
        serde_json::Value::String(a) => Algorithm::parse(a)
            .ok_or(bad("DPoP proof alg is not an allowed asymmetric algorithm"))?,
        _ => return Err(bad("DPoP proof alg is not a string")),
    };
    if !want.algs.contains(&alg) {
        return Err(bad("DPoP proof alg is not allowed"));
    }
    let jwk = header.jwk.ok_or(bad("DPoP proof has no jwk"))?;
    let key = jwt::proof_key(&jwk, alg).map_err(bad)?;
    let signing_input = &proof.as_bytes()[..h.len() + 1 + p.len()];
    key.verify_sig(signing_input, &signature)
        .map_err(|_| bad("DPoP proof signature is invalid"))?;

    let jti = string(
        claims.jti,
        "DPoP proof has no jti",
        "DPoP proof jti is not a string",
    )?;
    if jti.is_empty() || jti.len() > 256 {
        return Err(bad("DPoP proof jti is empty or longer than 256 characters"));
    }
    let htm = string(
        claims.htm,
        "DPoP proof has no htm",
        "DPoP proof htm is not a string",
    )?;
    if htm != want.method {
        return Err(bad("DPoP proof htm does not match the request method"));
    }
    let htu = string(
        claims.htu,
        "DPoP proof has no htu",
        "DPoP proof htu is not a string",
    )?;
    if normalize_htu(&htu).as_deref() != Some(want.htu) {
        return Err(bad("DPoP proof htu does not match the request URI"));
    }
    let iat = claims.iat.ok_or(bad("DPoP proof has no iat"))?;
    let iat = iat
        .as_i64()
        .ok_or(bad("DPoP proof iat is not an integer"))?;
    if iat < want.now - want.past || iat > want.now + want.future {
        return Err(bad("DPoP proof iat is outside the accepted window"));
    }
    let ath_claim = string(
        claims.ath,
        "DPoP proof has no ath",
        "DPoP proof ath is not a string",
    )?;
    if ath_claim != ath(want.access_token) {
        return Err(bad("DPoP proof ath does not match the access token"));
    }
    if let Some(nonces) = want.nonce {
        match claims.nonce {
            Some(serde_json::Value::String(n)) if nonces.valid(&n, want.now) => {}
            _ => return Err(DpopError::UseNonce),
        }
    }
    let jkt = thumbprint(&jwk).ok_or(bad("DPoP proof jwk cannot be thumbprinted"))?;
    Ok(Proof { jkt, jti, iat })
}

/// What of a request a proof is judged against: plain data, no session.
pub struct ProofRequest<'a> {
    pub method: &'a str,
    pub headers: &'a http::HeaderMap,
    /// `scheme://host[:port]` clients use for the route (from `listen.public_url`).
    pub origin: &'a str,
    /// The request's normalized path (the one that was routed and authorized).
    pub path: &'a str,
}

/// A proof that passed every check but the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Thumbprint of the proof key.
    pub jkt: String,
    /// What the replay store remembers ([`Proof::replay_key`]).
    pub replay_key: [u8; 32],
    /// How long the proof stays acceptable (the whole `iat` window).
    pub window: Duration,
}

/// Judge how a verified token was presented on `route` (RFC 9449 §7): a bound token only
/// with the DPoP scheme and a valid proof by its key, the DPoP scheme only where the
/// route allows it, and only bound tokens where the route requires DPoP. Returns the
/// checked proof when there was one; the caller then runs [`check_replay`].
pub fn authorize(
    settings: &DpopSettings,
    route: RouteDpop,
    req: &ProofRequest<'_>,
    principal: &Principal,
    presented: Presented<'_>,
    now: i64,
) -> Result<Option<Checked>, Refusal> {
    let token = match presented {
        Presented::ApiKey => return Ok(None),
        Presented::Bearer if route.mode == DpopMode::Required => {
            return Err(Refusal::InvalidToken(
                "this resource requires a DPoP-bound token sent with the DPoP scheme",
            ))
        }
        Presented::Bearer if principal.cnf_jkt.is_some() => {
            return Err(Refusal::InvalidToken(
                "a DPoP-bound token must be sent with the DPoP scheme and a proof",
            ))
        }
        Presented::Bearer => return Ok(None),
        Presented::Dpop(_) if route.mode == DpopMode::Disabled => {
            return Err(Refusal::InvalidToken("this resource does not accept DPoP"))
        }
        Presented::Dpop(token) => token,
    };
    let mut proofs = req.headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => return Err(Refusal::DpopProof("the request has no DPoP proof")),
        (Some(_), Some(_)) => {
            return Err(Refusal::DpopProof(
                "the request has more than one DPoP proof",
            ))
        }
        (Some(p), None) => p
            .to_str()
            .map_err(|_| Refusal::DpopProof("the DPoP proof is not ASCII"))?,
    };
    if proof.contains(',') {
        return Err(Refusal::DpopProof(
            "the request has more than one DPoP proof",
        ));
    }
    // htu from the configured public origin and the request's normalized path (the one
    // that was routed and authorized); never from Host or X-Forwarded-*.
    let htu = normalize_htu(&format!("{}{}", req.origin, req.path))
        .ok_or(Refusal::BadRequest("the request URI cannot be normalized"))?;
    let want = Expect {
        method: req.method,
        htu: &htu,
        access_token: token,
        algs: &settings.algorithms,
        now,
        past: settings.iat_past,
        future: settings.iat_future,
        nonce: route.nonce.then_some(&settings.nonces),
    };
    let proof = verify(proof, &want).map_err(|e| match e {
        DpopError::InvalidProof(why) => Refusal::DpopProof(why),
        DpopError::UseNonce => Refusal::DpopNonce(settings.nonces.issue(now).into_boxed_str()),
    })?;
    let Some(bound) = principal.cnf_jkt.as_deref() else {
        return Err(Refusal::InvalidToken(
            "the token is not DPoP-bound (no cnf.jkt) but was sent with the DPoP scheme",
        ));
    };
    if bound != proof.jkt {
        return Err(Refusal::InvalidToken(
            "the token is bound to a different key than the DPoP proof's",
        ));
    }
    let window = Duration::from_secs((settings.iat_past + settings.iat_future).max(1) as u64);
    Ok(Some(Checked {
        replay_key: proof.replay_key(&htu),
        jkt: proof.jkt,
        window,
    }))
}

/// RFC 9449 §11.1: a proof is accepted once. A replay is `invalid_dpop_proof`; a store
/// that cannot answer (and fails closed) is 503.
pub async fn check_replay(replay: &dyn ReplayStore, checked: &Checked) -> Result<(), Refusal> {
    match replay.first_use(checked.replay_key, checked.window).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::DpopProof("the DPoP proof was already used")),
        Err(ReplayUnavailable) => Err(Refusal::StateUnavailable(
            "the DPoP replay store is unavailable",
        )),
    }
}

/// The replay store could not tell whether a proof was used before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayUnavailable;

/// Where proof `jti`s are remembered for their validity window.
#[async_trait::async_trait]
pub trait ReplayStore: Send + Sync {
    /// `Ok(true)` the first time `key` is seen within `ttl`; `Ok(false)` for a replay.
    async fn first_use(&self, key: [u8; 32], ttl: Duration) -> Result<bool, ReplayUnavailable>;
}

/// A bounded in-process replay store.
pub struct LocalReplay {
    cache: Cache<[u8; 32], ()>,
}

impl LocalReplay {
    /// `window`: how long a proof stays acceptable (the whole `iat` window).
    pub fn new(capacity: u64, window: Duration) -> LocalReplay {
        LocalReplay {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
        }
    }
}

impl LocalReplay {
    /// True the first time `key` is seen (within the window).
    pub fn insert(&self, key: [u8; 32]) -> bool {
        self.cache.entry(key).or_insert(()).is_fresh()
    }

    /// Forget `key` (a proof that was not accepted after all).
    pub fn forget(&self, key: &[u8; 32]) {
        self.cache.invalidate(key);
    }
}

#[async_trait::async_trait]
impl ReplayStore for LocalReplay {
    async fn first_use(&self, key: [u8; 32], _ttl: Duration) -> Result<bool, ReplayUnavailable> {
        Ok(self.insert(key))
    }
}

/// Replay protection shared by every replica: [`LocalReplay`] first (a proof replayed at
/// this replica never reaches Redis), then `SET NX PX` in Redis, the atomic first-use
/// test across replicas. When Redis cannot answer: `fail: closed` refuses the proof (and
/// forgets it locally, so the same proof is judged again on a retry), `fail: open`
/// accepts it on the local judgement alone, counted in
/// `mcpgate_state_fail_open_total{feature="dpop_replay"}` and logged.
pub struct SharedReplay {
    pub local: LocalReplay,
    pub store: std::sync::Arc<crate::store::Store>,
    pub fail: crate::failmode::FailMode,
    pub loud: crate::store::LoudLog,
}

#[async_trait::async_trait]
impl ReplayStore for SharedReplay {
    async fn first_use(&self, key: [u8; 32], ttl: Duration) -> Result<bool, ReplayUnavailable> {
        if !self.local.insert(key) {
            return Ok(false);
        }
        match self.store.set_nx(&key, ttl).await {
            Ok(first) => Ok(first),
            Err(e) => match self.fail {
                crate::failmode::FailMode::Closed => {
                    self.local.forget(&key);
                    Err(ReplayUnavailable)
                }
                crate::failmode::FailMode::Open => {
                    crate::metrics::state_fail_open("dpop_replay");
                    self.loud.error(|n| {
                        tracing::error!(
                            error = %e,
                            decided_without_redis = n,
                            "Redis cannot answer: DPoP proofs are checked for replay at this \
                             replica only (state.dpop_replay.fail: open)"
                        )
                    });
                    Ok(true)
                }
            },
        }
    }
}

/// Stateless server nonces: `base64url(step || HMAC(secret, step)[..16])`, valid for
/// the current and the previous time step.
pub struct Nonces {
    key: hmac::Key,
    step_seconds: i64,
}

impl Nonces {
    pub fn new(secret: &[u8], step_seconds: i64) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            step_seconds: step_seconds.max(1),
        }
    }

    fn mac(&self, step: u64) -> [u8; 16] {
        let tag = hmac::sign(&self.key, &step.to_be_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }

    pub fn issue(&self, now: i64) -> String {
        let step = (now / self.step_seconds) as u64;
        let mut raw = Vec::with_capacity(24);
        raw.extend_from_slice(&step.to_be_bytes());
        raw.extend_from_slice(&self.mac(step));
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn valid(&self, nonce: &str, now: i64) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 24 {
            return false;
        }
        let mut step_bytes = [0u8; 8];
        step_bytes.copy_from_slice(&raw[..8]);
        let step = u64::from_be_bytes(step_bytes);
        let current = (now / self.step_seconds) as u64;
        if step != current && step + 1 != current {
            return false;
        }
        let expected = self.mac(step);
        // Constant-time comparison of the tag.
        aws_lc_rs::constant_time::verify_slices_are_equal(&raw[8..], &expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    #[test]
    fn rfc7638_section_3_1_thumbprint() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn rfc8037_a3_ed25519_thumbprint() {
        let jwk =
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rfc9449_examples() {
        let jwk = json!({"kty":"EC","crv":"P-256",
            "x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"});
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    /// RFC 9449 Figure 13: a real proof whose signature verifies, with the clock fixed at
    /// its iat; then one edit per negative case.
    #[test]
    fn rfc9449_figure_13_known_answer() {
        let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
        let token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
        let htu = normalize_htu("https://resource.example.org/protectedresource").unwrap();
        let want = Expect {
            method: "GET",
            htu: &htu,
            access_token: token,
            algs: &[Algorithm::ES256],
            now: 1_562_262_618,
            past: 300,
            future: 300,
            nonce: None,
        };
        let p = verify(proof, &want).unwrap();
        assert_eq!(p.jkt, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
        assert_eq!(p.jti, "e1j3V_bKic8-LAEB");
        // one edit per negative
        assert!(verify(
            proof,
            &Expect {
                method: "POST",
                ..want_clone(&want)
            }
        )
        .is_err());
        let other = normalize_htu("https://resource.example.org/other").unwrap();
        assert!(verify(
            proof,
            &Expect {
                htu: &other,
                ..want_clone(&want)
            }
        )
        .is_err());
        assert!(verify(
            proof,
            &Expect {
                access_token: "other",
                ..want_clone(&want)
            }
        )
        .is_err());
        assert!(verify(
            proof,
            &Expect {
                now: 1_562_262_618 + 301,
                ..want_clone(&want)
            }
        )
        .is_err());
        assert!(verify(
            proof,
            &Expect {
                algs: &[Algorithm::RS256],
                ..want_clone(&want)
            }
        )
        .is_err());
        let tampered = proof.replace(".2oW9", ".3oW9");
        assert!(verify(&tampered, &want).is_err());
        let upper = normalize_htu("HTTPS://RESOURCE.EXAMPLE.ORG:443/protectedresource").unwrap();
        assert_eq!(upper, htu);
    }

    fn want_clone<'a>(w: &Expect<'a>) -> Expect<'a> {
        Expect {
            method: w.method,
            htu: w.htu,
            access_token: w.access_token,
            algs: w.algs,
            now: w.now,
            past: w.past,
            future: w.future,
            nonce: w.nonce,
        }
    }

    fn es256_proof(header_extra: serde_json::Value, claims: serde_json::Value) -> String {
        es256_proof_raw(header_extra, claims, b"ODD")
    }

    /// A proof whose segments hold the bytes `odd` in place of each string `"ODD"`, signed.
    fn es256_proof_raw(
        header_extra: serde_json::Value,
        claims: serde_json::Value,
        odd: &[u8],
    ) -> String {
        let splice = |v: &serde_json::Value| {
            let text = serde_json::to_vec(v).unwrap();
            let mut out = Vec::new();
            let mut rest = text.as_slice();
            while let Some(i) = rest.windows(5).position(|w| w == b"\"ODD\"") {
                out.extend_from_slice(&rest[..=i]);
                out.extend_from_slice(odd);
                out.push(b'"');
                rest = &rest[i + 5..];
            }
            out.extend_from_slice(rest);
            out
        };
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let pt = kp.public_key().as_ref();
        let mut header = json!({"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256",
            "x": URL_SAFE_NO_PAD.encode(&pt[1..33]), "y": URL_SAFE_NO_PAD.encode(&pt[33..])}});
        if let Some(m) = header_extra.as_object() {
            for (k, v) in m {
                header[k] = v.clone();
            }
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(splice(&header)),
            URL_SAFE_NO_PAD.encode(splice(&claims))
        );
        let sig = kp.sign(&rng, input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn htu_is_compared_after_the_requests_normalization_only() {
        let want = normalize_htu("https://mcp.example.com/mcp").unwrap();
        assert_eq!(want, "https://mcp.example.com:443/mcp");
        let same = [
            "https://mcp.example.com/mcp",
            "HTTPS://MCP.EXAMPLE.COM/mcp",
            "https://mcp.example.com:443/mcp",
            "https://mcp.example.com/%6Dcp",
            "https://mcp.example.com/%6dc%70",
        ];
        for h in same {
            assert_eq!(normalize_htu(h).as_deref(), Some(want.as_str()), "{h}");
        }
        let other = [
            "https://mcp.example.com./mcp",
            " https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp ",
            "https://mcp.example.com/mcp\t",
            "https:// mcp.example.com/mcp",
            "https://user@mcp.example.com/mcp",
            "https://user:pw@mcp.example.com/mcp",
            "https://mcp.example.com/mcp#f",
            "https://mcp.example.com/mcp#",
            "https://mcp.example.com/mcp?",
            "https://mcp.example.com/mcp?x=1",
            "https://mcp.example.com:0443/mcp",
            "https://mcp.example.com:/mcp",
            "https://mcp.example.com:8443/mcp",
            "https://mcp.example.com:65536/mcp",
            "http://mcp.example.com/mcp",
            "https://mcp.example.com/MCP",
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com/x/../mcp",
            "https://mcp.example.com/mcp/.",
            "https://mcp.example.com//mcp",
            "https://mcp.example.com/mcp.",
            "https://mcp.example.com/mcp%2f",
            "https://mcp%2eexample.com/mcp",
            "https:/mcp.example.com/mcp",
            "https:mcp.example.com/mcp",
            "wss://mcp.example.com/mcp",
            "//mcp.example.com/mcp",
            "https://mcp.example.com\\@evil.example/mcp",
            "https://evil.example#@mcp.example.com/mcp",
            "https://mcp.example.com.evil.example/mcp",
            "https://xn--mcp-example.com/mcp",
            "",
        ];
        for h in other {
            assert_ne!(normalize_htu(h).as_deref(), Some(want.as_str()), "{h:?}");
        }

        let want = normalize_htu("http://127.0.0.1:8080/mcp").unwrap();
        for h in [
            "http://127.0.0.1.:8080/mcp",
            "http://0x7f.0.0.1:8080/mcp",
            "http://0x7f000001:8080/mcp",
            "http://2130706433:8080/mcp",
            "http://127.1:8080/mcp",
            "http://0177.0.0.1:8080/mcp",
            "http://127.000.000.001:8080/mcp",
            "http://[::ffff:127.0.0.1]:8080/mcp",
            "http://localhost:8080/mcp",
            "http://127.0.0.1:8080 /mcp",
        ] {
            assert_ne!(normalize_htu(h).as_deref(), Some(want.as_str()), "{h}");
        }
        let v6 = normalize_htu("http://[::1]:8080/mcp").unwrap();
        assert_eq!(v6, "http://[::1]:8080/mcp");
        assert_eq!(
            normalize_htu("http://[::1]:8080/%6dcp").as_deref(),
            Some(v6.as_str())
        );
        assert_ne!(
            normalize_htu("http://[0:0::1]:8080/mcp").as_deref(),
            Some(v6.as_str())
        );
        assert_eq!(normalize_htu("http://[::1/mcp"), None);
    }

    #[test]
    fn invalid_utf8_in_an_unread_member_is_refused() {
        // The JWT's gap (jwt::tests::invalid_utf8_in_an_unread_member_is_refused): serde_json
        // checks UTF-8 only in the strings it keeps, not in members it skips.
        let htu = "https://mcp.example.com/mcp";
        let base = json!({"jti":"j1","htm":"POST","htu":htu,"iat":1000,"ath":ath("tok")});
        let canonical = normalize_htu(htu).unwrap();
        let want = Expect {
            method: "POST",
            htu: &canonical,
            access_token: "tok",
            algs: &Algorithm::ALL,
            now: 1000,
            past: 300,
            future: 300,
            nonce: None,
        };
        let mut claims = base.clone();
        claims["x"] = json!("ODD");
        // Valid UTF-8 in the same places is accepted: the test can fail.
        for odd in [&b"\xC3\xA9"[..], b"ok"] {
            assert!(verify(
                &es256_proof_raw(json!({"x":"ODD"}), base.clone(), odd),
                &want
            )
            .is_ok());
            assert!(verify(&es256_proof_raw(json!({}), claims.clone(), odd), &want).is_ok());
        }
        for odd in [&b"\x85"[..], b"\xFF", b"\xED\xA0\x80", b"\xC9"] {
            for p in [
                es256_proof_raw(json!({"x":"ODD"}), base.clone(), odd),
                es256_proof_raw(json!({"x":{"y":["ODD"]}}), base.clone(), odd),
                es256_proof_raw(json!({}), claims.clone(), odd),
            ] {
                assert_eq!(
                    verify(&p, &want).err(),
                    Some(bad("DPoP proof header or claims are not UTF-8")),
                    "{odd:?}"
                );
            }
        }
    }

    #[test]
    fn refuses_bad_proofs() {
        let htu = "https://mcp.example.com/mcp";
        let base = json!({"jti":"j1","htm":"POST","htu":htu,"iat":1000,"ath":ath("tok")});
        let canonical = normalize_htu(htu).unwrap();
        let want = Expect {
            method: "POST",
            htu: &canonical,
            access_token: "tok",
            algs: &Algorithm::ALL,
            now: 1000,
            past: 300,
            future: 300,
            nonce: None,
        };
        assert!(verify(&es256_proof(json!({}), base.clone()), &want).is_ok());
        let with = |k: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k] = v;
            es256_proof(json!({}), c)
        };
        let without = |k: &str| {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove(k);
            es256_proof(json!({}), c)
        };
        for p in [
            without("jti"),
            without("htm"),
            without("htu"),
            without("iat"),
            without("ath"),
            with("htm", json!("post")),
            with("htu", json!("https://mcp.example.com/mcp?x=1")),
            with("htu", json!("https://internal:8080/mcp")),
            with("iat", json!(1000 + 303)),
            with("iat", json!(1000 - 303)),
            with("iat", json!(1000.5)),
            with("jti", json!("x".repeat(257))),
            with("ath", json!(ath("other"))),
            es256_proof(json!({"typ":"JWT"}), base.clone()),
            es256_proof(json!({"alg":"none"}), base.clone()),
            es256_proof(json!({"alg":"HS256"}), base.clone()),
            es256_proof(json!({"alg":"RS256"}), base.clone()),
            es256_proof(
                json!({"jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}}),
                base.clone(),
            ),
            es256_proof(json!({"jwk": null}), base.clone()),
            // JWS extensions we do not implement (found by the differential test).
            es256_proof(json!({"crit": ["exp"]}), base.clone()),
            es256_proof(json!({"crit": []}), base.clone()),
            es256_proof(json!({"crit": null}), base.clone()),
            es256_proof(json!({"b64": false, "crit": ["b64"]}), base.clone()),
            "not-a-jwt".to_string(),
        ] {
            assert!(verify(&p, &want).is_err(), "{p}");
        }
        // iat 10 s in the past is fine
        assert!(verify(&with("iat", json!(990)), &want).is_ok());
        // HTTPS://MCP.EXAMPLE.COM:443/mcp normalizes to the same htu
        assert!(verify(
            &with("htu", json!("HTTPS://MCP.EXAMPLE.COM:443/mcp")),
            &want
        )
        .is_ok());
    }

    #[test]
    fn nonces_rotate_and_verify() {
        let n = Nonces::new(b"secret", 300);
        let nonce = n.issue(1_000_000);
        assert!(n.valid(&nonce, 1_000_000));
        assert!(n.valid(&nonce, 1_000_000 + 300));
        assert!(!n.valid(&nonce, 1_000_000 + 700));
        assert!(!Nonces::new(b"other", 300).valid(&nonce, 1_000_000));
        assert!(!n.valid("garbage", 1_000_000));
        let base =
            json!({"jti":"j1","htm":"GET","htu":"https://h/x","iat":1_000_000,"ath":ath("t")});
        let want = Expect {
            method: "GET",
            htu: "https://h:443/x",
            access_token: "t",
            algs: &Algorithm::ALL,
            now: 1_000_000,
            past: 300,
            future: 300,
            nonce: Some(&n),
        };
        assert_eq!(
            verify(&es256_proof(json!({}), base.clone()), &want),
            Err(DpopError::UseNonce)
        );
        let mut c = base.clone();
        c["nonce"] = json!(nonce);
        assert!(verify(&es256_proof(json!({}), c), &want).is_ok());
    }

    #[tokio::test]
    async fn replay_store_remembers() {
        let r = LocalReplay::new(100, Duration::from_secs(600));
        let ttl = Duration::from_secs(600);
        assert_eq!(r.first_use([1; 32], ttl).await, Ok(true));
        assert_eq!(r.first_use([1; 32], ttl).await, Ok(false));
        assert_eq!(r.first_use([2; 32], ttl).await, Ok(true));
        r.forget(&[1; 32]);
        assert_eq!(r.first_use([1; 32], ttl).await, Ok(true));
    }

    struct Down;

    #[async_trait::async_trait]
    impl ReplayStore for Down {
        async fn first_use(&self, _: [u8; 32], _: Duration) -> Result<bool, ReplayUnavailable> {
            Err(ReplayUnavailable)
        }
    }

    #[tokio::test]
    async fn replay_outcomes_become_refusals() {
        let c = Checked {
            jkt: "j".into(),
            replay_key: [7; 32],
            window: Duration::from_secs(60),
        };
        let local = LocalReplay::new(10, Duration::from_secs(60));
        assert_eq!(check_replay(&local, &c).await, Ok(()));
        assert_eq!(
            check_replay(&local, &c).await,
            Err(Refusal::DpopProof("the DPoP proof was already used"))
        );
        let r = check_replay(&Down, &c).await.unwrap_err();
        assert_eq!(r.status(), 503);
        assert_eq!(r.reason().as_str(), "state_unavailable");
    }
}
