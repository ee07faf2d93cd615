//! RFC 7662 token introspection: the client that asks an issuer about an opaque token,
//! and the per-issuer cache of its answers.
//!
//! The token step of the request flow, for tokens that are not JWTs (or whose issuer
//! sets `token_format: opaque`). [`Introspector::authenticate`] looks the token up by
//! SHA-256 in a bounded moka cache; on a miss, one request per token (single-flight:
//! concurrent requests for the same token wait for the same call) POSTs
//! `token=…&token_type_hint=access_token` to the issuer's introspection endpoint with
//! the gateway's client credentials, on the shared [`Fetcher`] runtime and pool. The
//! answer is judged as strictly as a JWT ([`evaluate`]): `active` must be the boolean
//! `true`, `iss` (when present) the issuer, `aud` present (unless `require_aud: false`),
//! `exp`/`nbf` current, no sender constraint. Active answers are cached until the
//! earlier of `exp` and `cache_max_seconds`; refusals for `negative_cache_seconds`. An
//! issuer that cannot answer (unreachable, past `timeout_ms`, 5xx, not JSON, or refusing
//! our credentials) is never cached and gives 503: the caller is not at fault.
//! The audience is checked against the route in `policy`, on every request.
//!
//! Introspectors live in the [`crate::state::Snapshot`] beside the key stores and are
//! kept across reloads while their issuer's settings do not change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::jwt::check_times;
use crate::background::Fetcher;
use crate::clock::now_unix;
use crate::error::Refusal;
use crate::metrics;
use crate::principal::{hash_prefix, AuthMethod, Principal, TokenHash};
use crate::scope::canonical_audience;

/// Largest introspection response we read.
const MAX_BODY: usize = 64 * 1024;
/// After a failed endpoint discovery, wait this long before trying again.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// A secret from the config: never printed.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// How the gateway authenticates to the introspection endpoint (RFC 7662 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// One issuer's compiled introspection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionConfig {
    /// `None`: discovered from the issuer's metadata (`introspection_endpoint`).
    pub endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_method: ClientAuth,
    pub cache_max: Duration,
    pub negative_cache: Duration,
    pub timeout: Duration,
    pub require_aud: bool,
    /// The call budget: a token bucket of `burst` calls refilled at this rate.
    pub max_calls_per_second: u32,
    pub burst: u32,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
}

/// An issuer's `introspection` block.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileIntrospection {
    /// Default: the `introspection_endpoint` of the issuer's metadata.
    pub endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default)]
    pub auth_method: ClientAuth,
    #[serde(default = "default_introspection_cache")]
    pub cache_max_seconds: u64,
    #[serde(default = "default_negative_cache")]
    pub negative_cache_seconds: u64,
    #[serde(default = "default_introspection_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_true")]
    pub require_aud: bool,
    /// Introspection calls per second this issuer may receive from one replica (a token
    /// bucket refilled at this rate); past it, uncached tokens get 503.
    #[serde(default = "default_introspection_rate")]
    pub max_calls_per_second: u32,
    /// Calls allowed at once above the rate (the bucket's size).
    #[serde(default = "default_introspection_burst")]
    pub burst: u32,
    /// Consecutive failed calls (timeout, transport error, 5xx, not RFC 7662) that stop
    /// calls to the AS for `breaker_open_ms`.
    #[serde(default = "default_introspection_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_introspection_breaker_open")]
    pub breaker_open_ms: u64,
}

fn default_introspection_rate() -> u32 {
    50
}
fn default_introspection_burst() -> u32 {
    100
}
fn default_introspection_breaker_failures() -> u32 {
    5
}
fn default_introspection_breaker_open() -> u64 {
    2000
}

fn default_introspection_cache() -> u64 {
    300
}
fn default_negative_cache() -> u64 {
    5
}
fn default_introspection_timeout() -> u64 {
    2000
}
fn default_true() -> bool {
    true
}

/// What introspection needs of its issuer entry (built by `IssuerConfig::introspected`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub name: Arc<str>,
    pub issuer: Arc<str>,
    pub clock_skew: u64,
    pub config: IntrospectionConfig,
    /// The issuer's `ca_file`: the CA its endpoints are verified with.
    pub ca: Option<crate::background::TrustRoots>,
}

/// Validate the `introspection` block of an issuer.
pub fn compile(f: FileIntrospection) -> Result<IntrospectionConfig, String> {
    let ctx = |e: String| format!("introspection: {e}");
    if let Some(e) = &f.endpoint {
        crate::compile::check_fetch_url("endpoint", e).map_err(ctx)?;
    }
    if f.client_id.is_empty() {
        return Err(ctx("client_id must not be empty".into()));
    }
    if f.client_secret.expose().is_empty() {
        return Err(ctx("client_secret must not be empty".into()));
    }
    if f.cache_max_seconds > 3600 {
        return Err(ctx(
            "cache_max_seconds must be at most 3600 (it bounds how long a revoked token keeps working)"
                .into(),
        ));
    }
    if f.negative_cache_seconds > 300 {
        return Err(ctx("negative_cache_seconds must be at most 300".into()));
    }
    if !(100..=30_000).contains(&f.timeout_ms) {
        return Err(ctx("timeout_ms must be between 100 and 30000".into()));
    }
    if !(1..=10_000).contains(&f.max_calls_per_second) {
        return Err(ctx(
            "max_calls_per_second must be between 1 and 10000".into()
        ));
    }
    if !(1..=100_000).contains(&f.burst) {
        return Err(ctx("burst must be between 1 and 100000".into()));
    }
    if !(1..=100).contains(&f.breaker_failures) {
        return Err(ctx("breaker_failures must be between 1 and 100".into()));
    }
    if !(100..=60_000).contains(&f.breaker_open_ms) {
        return Err(ctx("breaker_open_ms must be between 100 and 60000".into()));
    }
    Ok(IntrospectionConfig {
        endpoint: f.endpoint,
        client_id: f.client_id,
        client_secret: f.client_secret,
        auth_method: f.auth_method,
        cache_max: Duration::from_secs(f.cache_max_seconds),
        negative_cache: Duration::from_secs(f.negative_cache_seconds),
        timeout: Duration::from_millis(f.timeout_ms),
        require_aud: f.require_aud,
        max_calls_per_second: f.max_calls_per_second,
        burst: f.burst,
        breaker_failures: f.breaker_failures,
        breaker_open: Duration::from_millis(f.breaker_open_ms),
    })
}

/// What the issuer said about a token, as cached.
#[derive(Clone)]
pub enum Outcome {
    /// Active and acceptable; cached for the duration.
    Active(Arc<Principal>, Duration),
    /// Inactive, or active but unacceptable (the reason goes to the client).
    Refused(&'static str, Duration),
}

/// Why the issuer could not answer. Never cached; the client gets 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The introspection endpoint is not configured and discovery failed.
    Discovery(String),
    Timeout,
    Transport(String),
    /// 401/403: the AS refused the gateway's own client credentials.
    Unauthorized(u16),
    Status(u16),
    /// 200, but not a JSON object (an HTML error page, a proxy's login form...).
    NotJson,
    TooLarge,
    /// Not asked: the issuer's call budget is spent (`max_calls_per_second`, `burst`).
    RateLimited,
    /// Not asked: the AS failed `breaker_failures` times in a row; the breaker is open.
    CircuitOpen,
}

impl Failure {
    fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unauthorized(_) => "unauthorized",
            Failure::RateLimited => "rate_limited",
            Failure::CircuitOpen => "circuit_open",
            _ => "error",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Discovery(e) => write!(f, "introspection endpoint discovery failed: {e}"),
            Failure::Timeout => f.write_str("introspection timed out"),
            Failure::Transport(e) => write!(f, "introspection request failed: {e}"),
            Failure::Unauthorized(s) => write!(f, "introspection endpoint answered HTTP {s}"),
            Failure::Status(s) => write!(f, "introspection endpoint answered HTTP {s}"),
            Failure::NotJson => f.write_str("introspection response is not a JSON object"),
            Failure::TooLarge => {
                write!(f, "introspection response is larger than {MAX_BODY} bytes")
            }
            Failure::RateLimited => f.write_str("the issuer's introspection budget is spent"),
            Failure::CircuitOpen => {
                f.write_str("the introspection endpoint keeps failing (circuit breaker open)")
            }
        }
    }
}

struct OutcomeExpiry;

impl moka::Expiry<TokenHash, Outcome> for OutcomeExpiry {
    fn expire_after_create(&self, _k: &TokenHash, v: &Outcome, _now: Instant) -> Option<Duration> {
        Some(match v {
            Outcome::Active(_, d) | Outcome::Refused(_, d) => *d,
        })
    }
}

/// A token bucket: `burst` calls at once, refilled at `rate` per second.
struct Bucket {
    rate: f64,
    burst: f64,
    /// Tokens left, and when they were counted.
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            state: std::sync::Mutex::new((f64::from(burst), now)),
        }
    }

    /// Take one call from the budget at `now`; false when it is spent.
    fn take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now.max(s.1);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The introspection client and answer cache of one issuer.
pub struct Introspector {
    pub issuer: Issuer,
    capacity: u64,
    fetcher: Arc<Fetcher>,
    /// The HTTP client of this issuer (its `ca_file`, or the shared one).
    client: reqwest::Client,
    endpoint: tokio::sync::OnceCell<String>,
    /// Milliseconds since `epoch` of the last failed discovery (`u64::MAX`: none).
    discovery_failed_ms: AtomicU64,
    epoch: Instant,
    cache: moka::future::Cache<TokenHash, Outcome>,
    /// Calls to the AS: at most the budget, and none while the AS keeps failing.
    budget: Bucket,
    breaker: crate::store::Breaker,
    /// Bounded logging of calls refused by the budget or the breaker.
    loud: crate::store::LoudLog,
}

impl Introspector {
    /// The client of `issuer`, caching at most `capacity` answers.
    pub fn new(issuer: Issuer, capacity: u64, fetcher: Arc<Fetcher>) -> Arc<Introspector> {
        let config = &issuer.config;
        let cache = moka::future::Cache::builder()
            .max_capacity(capacity)
            .expire_after(OutcomeExpiry)
            .build();
        Arc::new(Introspector {
            budget: Bucket::new(config.max_calls_per_second, config.burst, Instant::now()),
            breaker: crate::store::Breaker::new(config.breaker_failures, config.breaker_open),
            // Never redirected: the call carries the gateway's secret and the caller's
            // token, and a 3xx is an answer that makes no sense (503).
            client: fetcher.unredirected_client_for(issuer.ca.as_ref()),
            issuer,
            capacity,
            fetcher,
            endpoint: tokio::sync::OnceCell::new(),
            discovery_failed_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            cache,
            loud: crate::store::LoudLog::default(),
        })
    }

    /// Whether this introspector (and its cache) can serve `issuer` after a reload:
    /// same issuer, same introspection settings, same values baked into cached answers.
    pub fn serves(&self, issuer: &Issuer, capacity: u64) -> bool {
        self.capacity == capacity && self.issuer == *issuer
    }

    /// Validate an opaque token (issuer-level checks; `policy` checks the audience).
    pub async fn authenticate(
        self: &Arc<Self>,
        token: &str,
        hash: &TokenHash,
    ) -> Result<Arc<Principal>, Refusal> {
        let outcome = match self.cache.get(hash).await {
            // The hot path: no allocation, no call.
            Some(o) => {
                metrics::introspection_cache(true);
                o
            }
            None => {
                let me = self.clone();
                let owned = token.to_string();
                let key = *hash;
                let entry = self
                    .cache
                    .entry(key)
                    .or_try_insert_with(async move { me.introspect(owned, key).await })
                    .await;
                match entry {
                    Ok(e) => {
                        metrics::introspection_cache(!e.is_fresh());
                        e.into_value()
                    }
                    Err(e) => {
                        metrics::introspection_cache(false);
                        return Err(Refusal::IntrospectionUnavailable(match *e {
                            Failure::RateLimited => {
                                "too many unknown tokens: the issuer's introspection budget is \
                                 spent, retry later"
                            }
                            Failure::CircuitOpen => {
                                "the authorization server keeps failing and is not asked for now"
                            }
                            _ => "the authorization server could not be asked about the token",
                        }));
                    }
                }
            }
        };
        match outcome {
            Outcome::Active(p, _) => {
                check_times(p.exp, p.nbf, None, p.skew, now_unix())
                    .map_err(|e| Refusal::InvalidToken(e.0))?;
                Ok(p)
            }
            Outcome::Refused(reason, _) => Err(Refusal::InvalidToken(reason)),
        }
    }

    /// Whether a call may go to the AS now: the breaker is closed (or lets this one probe
    /// through) and the budget has a call left. Counted and logged (bounded) when not.
    fn may_call(&self, hash: &TokenHash) -> Result<(), Failure> {
        let refused = if !self.breaker.allow() {
            Failure::CircuitOpen
        } else if !self.budget.take(Instant::now()) {
            Failure::RateLimited
        } else {
            return Ok(());
        };
        let name = &self.issuer.name;
        metrics::introspection_refused(name, refused.label());
        let token = hash_prefix(hash);
        self.loud.error(|n| {
            tracing::warn!(issuer = %name, token, refused_since_last_line = n, reason = %refused,
                "introspection call not made; answering 503")
        });
        Err(refused)
    }

    /// One introspection call (the cache makes it single-flight per token).
    async fn introspect(&self, token: String, hash: TokenHash) -> Result<Outcome, Failure> {
        self.may_call(&hash)?;
        let name = &self.issuer.name;
        let started = Instant::now();
        let result = match self.endpoint().await {
            Ok(endpoint) => {
                let client = self.client.clone();
                let config = self.issuer.config.clone();
                self.fetcher
                    .run(post(client, endpoint, config, token))
                    .await
                    .unwrap_or_else(|| Err(Failure::Transport("fetch runtime is gone".into())))
            }
            Err(e) => Err(e),
        };
        let seconds = started.elapsed().as_secs_f64();
        let outcome =
            result.and_then(|(status, body)| evaluate(status, &body, &self.issuer, now_unix()));
        match &outcome {
            Ok(_) => {
                if self.breaker.success() {
                    tracing::warn!(issuer = %name, "the introspection endpoint answers again: circuit breaker closed");
                }
            }
            Err(e) => {
                if self.breaker.failure() {
                    tracing::error!(issuer = %name, error = %e,
                        failures = self.issuer.config.breaker_failures,
                        open_ms = self.issuer.config.breaker_open.as_millis() as u64,
                        "the introspection endpoint keeps failing: circuit breaker open, \
                         uncached opaque tokens get 503 without a call");
                }
            }
        }
        let token = hash_prefix(&hash);
        match &outcome {
            Ok(Outcome::Active(p, ttl)) => {
                metrics::introspection_call(name, "active", seconds);
                tracing::debug!(issuer = %name, token, subject = p.subject.as_deref(),
                    cache_seconds = ttl.as_secs(), "token introspected: active");
            }
            Ok(Outcome::Refused(reason, _)) => {
                metrics::introspection_call(name, "inactive", seconds);
                tracing::debug!(issuer = %name, token, reason, "token introspected: refused");
            }
            Err(e @ Failure::Unauthorized(status)) => {
                metrics::introspection_call(name, e.label(), seconds);
                tracing::error!(issuer = %name, token, status,
                    "the introspection endpoint refused mcpgate's client credentials: \
                     check issuers[].introspection client_id, client_secret and auth_method; \
                     every opaque token of this issuer gets 503 until it is fixed");
            }
            Err(e) => {
                metrics::introspection_call(name, e.label(), seconds);
                tracing::warn!(issuer = %name, token, error = %e, "introspection failed; answering 503");
            }
        }
        outcome
    }

    /// The configured endpoint, or the one in the issuer's metadata (looked up once;
    /// a failure is retried at most every few seconds).
    async fn endpoint(&self) -> Result<String, Failure> {
        if let Some(e) = &self.issuer.config.endpoint {
            return Ok(e.clone());
        }
        if let Some(e) = self.endpoint.get() {
            return Ok(e.clone());
        }
        let failed = self.discovery_failed_ms.load(Ordering::Relaxed);
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if failed != u64::MAX && now_ms.saturating_sub(failed) < DISCOVERY_RETRY.as_millis() as u64
        {
            return Err(Failure::Discovery(
                "failed recently; not retrying yet".into(),
            ));
        }
        let client = self.client.clone();
        let issuer = self.issuer.issuer.clone();
        let found = self
            .endpoint
            .get_or_try_init(|| async {
                let r = self
                    .fetcher
                    .run(async move {
                        crate::auth::discovery::discover(&client, &issuer, "introspection_endpoint").await
                    })
                    .await
                    .unwrap_or_else(|| Err("fetch runtime is gone".into()));
                if r.is_err() {
                    self.discovery_failed_ms
                        .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                } else if let Ok(e) = &r {
                    tracing::info!(issuer = %self.issuer.name, endpoint = %e, "introspection endpoint discovered");
                }
                r
            })
            .await;
        found.cloned().map_err(Failure::Discovery)
    }

    pub fn cached_answers(&self) -> u64 {
        self.cache.entry_count()
    }
}

/// POST the token; returns the status and (capped) body.
pub async fn post(
    client: reqwest::Client,
    endpoint: String,
    config: IntrospectionConfig,
    token: String,
) -> Result<(u16, Vec<u8>), Failure> {
    use crate::background::{client_secret_basic, post_form, PostError};
    // The serializer is not `Send`: the form is finished before the call awaits.
    let (body, authorization) = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", &token)
            .append_pair("token_type_hint", "access_token");
        let authorization = match config.auth_method {
            ClientAuth::ClientSecretBasic => Some(client_secret_basic(
                &config.client_id,
                config.client_secret.expose(),
            )),
            ClientAuth::ClientSecretPost => {
                form.append_pair("client_id", &config.client_id)
                    .append_pair("client_secret", config.client_secret.expose());
                None
            }
        };
        (form.finish(), authorization)
    };
    post_form(
        &client,
        &endpoint,
        body,
        authorization,
        config.timeout,
        MAX_BODY,
    )
    .await
    .map_err(|e| match e {
        PostError::Timeout => Failure::Timeout,
        PostError::TooLarge => Failure::TooLarge,
        // Without the URL: it is in the config; the cause by kind (DNS, connect, TLS).
        PostError::Transport(e) => Failure::Transport(crate::background::describe(&e)),
    })
}

/// The members of an introspection response we read. Every one is optional and typed
/// loosely, so a wrong type is our refusal, not a parse failure; duplicate members are
/// a parse failure.
#[derive(Deserialize)]
struct Answer {
    active: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    scope: Option<Value>,
    sub: Option<Value>,
    client_id: Option<Value>,
    azp: Option<Value>,
    token_type: Option<Value>,
    token_use: Option<Value>,
    cnf: Option<Value>,
    jti: Option<Value>,
    iat: Option<Value>,
}

fn opt_str<'a>(v: &'a Option<Value>, bad: &'static str) -> Result<Option<&'a str>, &'static str> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad),
    }
}

fn opt_time(v: &Option<Value>, bad: &'static str) -> Result<Option<i64>, &'static str> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => crate::auth::jwt::numeric_date(n, bad)
            .map(Some)
            .map_err(|e| e.0),
        Some(_) => Err(bad),
    }
}

/// Judge an introspection answer (status and body) for `issuer` at `now`.
pub fn evaluate(status: u16, body: &[u8], issuer: &Issuer, now: i64) -> Result<Outcome, Failure> {
    match status {
        200 => {}
        401 | 403 => return Err(Failure::Unauthorized(status)),
        s => return Err(Failure::Status(s)),
    }
    let config = &issuer.config;
    let refused = |reason: &'static str| Outcome::Refused(reason, config.negative_cache);
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(_) => {
            // A JSON object that does not fit (duplicate members) is a bad answer about
            // this token; anything else means the endpoint is not answering RFC 7662.
            return match serde_json::from_slice::<serde_json::Map<String, Value>>(body) {
                Ok(_) => Ok(refused("the introspection response is malformed")),
                Err(_) => Err(Failure::NotJson),
            };
        }
    };
    if !serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object()) {
        return Err(Failure::NotJson);
    }
    match judge(&answer, issuer, now) {
        Ok(p) => {
            let left = if p.exp == NO_EXP {
                config.cache_max
            } else {
                Duration::from_secs((p.exp - now).max(0) as u64).min(config.cache_max)
            };
            Ok(Outcome::Active(Arc::new(p), left))
        }
        Err(reason) => Ok(refused(reason)),
    }
}

/// `exp` of an introspected token whose answer has none: the cache bounds its life.
const NO_EXP: i64 = i64::MAX / 4;

fn judge(a: &Answer, issuer: &Issuer, now: i64) -> Result<Principal, &'static str> {
    let config = &issuer.config;
    // RFC 7662 §2.2: `active` is REQUIRED and a boolean; "true" (a string) is not true.
    if a.active != Some(Value::Bool(true)) {
        return Err("the token is not active");
    }
    // A bound token carries its key thumbprint; whether it was presented with a proof
    // is checked where the presentation is known (proxy / dpop).
    let cnf_jkt = crate::auth::jwt::cnf_jkt(a.cnf.as_ref()).map_err(|e| e.0)?;
    if let Some(t) = opt_str(
        &a.token_type,
        "the token_type in the introspection response is malformed",
    )? {
        // RFC 9449 §6.2: a DPoP-bound token may be introspected as token_type "DPoP".
        let dpop = t.eq_ignore_ascii_case("dpop");
        if !t.eq_ignore_ascii_case("bearer") && !dpop {
            return Err("the token is not a Bearer or DPoP access token (token_type)");
        }
        if dpop && a.cnf.is_none() {
            return Err("the token is of type DPoP but has no cnf.jkt");
        }
    }
    if let Some(u) = opt_str(
        &a.token_use,
        "the token_use in the introspection response is malformed",
    )? {
        if u != "access_token" {
            return Err("the token is not an access token (token_use)");
        }
    }
    if let Some(iss) = opt_str(&a.iss, "the token iss is malformed")? {
        if *iss != *issuer.issuer {
            return Err("the token issuer does not match the introspecting issuer");
        }
    }
    let skew = issuer.clock_skew as i64;
    let exp = opt_time(&a.exp, "the token exp is not a valid NumericDate")?;
    let nbf = opt_time(&a.nbf, "the token nbf is not a valid NumericDate")?;
    check_times(exp.unwrap_or(NO_EXP), nbf, None, skew, now).map_err(|e| e.0)?;
    let audiences: Vec<Box<str>> = match &a.aud {
        None => Vec::new(),
        Some(Value::String(s)) => vec![canonical_audience(s).into_boxed_str()],
        Some(Value::Array(v)) => v
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(canonical_audience(s).into_boxed_str()),
                _ => Err("the token aud is malformed"),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("the token aud is malformed"),
    };
    if audiences.is_empty() && config.require_aud {
        return Err("the introspection response has no aud for this resource");
    }
    let scopes = crate::scope::merge(opt_str(&a.scope, "the token scope is malformed")?);
    let subject = opt_str(&a.sub, "the token sub is malformed")?;
    let client_id = opt_str(&a.client_id, "the token client_id is malformed")?;
    let azp = opt_str(&a.azp, "the token azp is malformed")?;
    let client_id = client_id.or(azp);
    let azp = azp.filter(|a| Some(*a) != client_id);
    let jti = opt_str(&a.jti, "the token jti is malformed")?;
    let iat = opt_time(&a.iat, "the token iat is not a valid NumericDate")?;
    Ok(Principal {
        method: AuthMethod::Introspection,
        iss: issuer.issuer.clone(),
        issuer_name: issuer.name.clone(),
        subject: subject.map(Box::from),
        client_id: client_id.map(Arc::from),
        scopes: crate::scope::ScopeSet::parse(&scopes),
        any_audience: audiences.is_empty(),
        audiences: Arc::from(audiences),
        exp: exp.unwrap_or(NO_EXP),
        nbf,
        skew,
        cnf_jkt,
        jti: jti.map(Box::from),
        iat,
        azp: azp.map(Arc::from),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;

    fn issuer(extra: &str) -> Issuer {
        let c = Config::from_yaml(
            "t",
            &format!(
                "listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}\nadmin: {{address: '127.0.0.1:2'}}\nissuers:\n- name: a\n  issuer: 'https://as.example.com'\n  token_format: opaque\n  introspection: {{client_id: gw, client_secret: s, cache_max_seconds: 60, negative_cache_seconds: 3{extra}}}\nroutes: [{{name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3'}}]\n"
            ),
        )
        .unwrap();
        c.issuers[0].introspected().unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    fn eval(body: &str) -> Result<Outcome, Failure> {
        evaluate(200, body.as_bytes(), &issuer(""), NOW)
    }

    fn refused(body: &str) -> &'static str {
        match eval(body) {
            Ok(Outcome::Refused(r, d)) => {
                assert_eq!(d, Duration::from_secs(3));
                r
            }
            Ok(Outcome::Active(..)) => panic!("accepted: {body}"),
            Err(e) => panic!("failure {e}: {body}"),
        }
    }

    #[test]
    fn active_answer_becomes_a_principal() {
        let body = format!(
            r#"{{"active":true,"iss":"https://as.example.com","aud":["x","HTTPS://MCP.example.com/mcp"],"exp":{},"scope":"a b a","sub":"alice","client_id":"c1","token_type":"Bearer"}}"#,
            NOW + 30
        );
        let Ok(Outcome::Active(p, ttl)) = eval(&body) else {
            panic!()
        };
        assert_eq!(ttl, Duration::from_secs(30));
        assert_eq!(p.scopes.as_str(), "a b");
        assert_eq!(p.subject.as_deref(), Some("alice"));
        assert_eq!(p.client_id.as_deref(), Some("c1"));
        assert_eq!(&*p.audiences[1], "https://mcp.example.com/mcp");
        assert!(!p.any_audience);
        assert_eq!(p.method, AuthMethod::Introspection);
        // Without exp, the cache bound applies.
        let Ok(Outcome::Active(_, ttl)) = eval(r#"{"active":true,"aud":"x"}"#) else {
            panic!()
        };
        assert_eq!(ttl, Duration::from_secs(60));
        // A DPoP-bound token keeps its key thumbprint for the proof check.
        let Ok(Outcome::Active(p, _)) =
            eval(r#"{"active":true,"aud":"x","token_type":"DPoP","cnf":{"jkt":"abc"}}"#)
        else {
            panic!()
        };
        assert_eq!(p.cnf_jkt.as_deref(), Some("abc"));
    }

    #[test]
    fn strict_about_active_and_claims() {
        for body in [
            r#"{"active":false}"#,
            r#"{"active":"true","aud":"x"}"#,
            r#"{"active":1,"aud":"x"}"#,
            r#"{"aud":"x"}"#,
            r#"{"active":null,"aud":"x"}"#,
            r#"{"active":true,"active":true,"aud":"x"}"#,
            r#"{"active":true}"#,
            r#"{"active":true,"aud":7}"#,
            r#"{"active":true,"aud":["x",7]}"#,
            r#"{"active":true,"aud":"x","iss":"https://as.example.com/"}"#,
            r#"{"active":true,"aud":"x","exp":1000}"#,
            r#"{"active":true,"aud":"x","exp":"1900000000"}"#,
            r#"{"active":true,"aud":"x","nbf":1900000000}"#,
            r#"{"active":true,"aud":"x","cnf":{}}"#,
            r#"{"active":true,"aud":"x","cnf":{"x5t#S256":"abc"}}"#,
            r#"{"active":true,"aud":"x","token_type":"DPoP"}"#,
            r#"{"active":true,"aud":"x","token_use":"refresh_token"}"#,
            r#"{"active":true,"aud":"x","scope":["a"]}"#,
            r#"{"active":true,"aud":"x","sub":5}"#,
        ] {
            refused(body);
        }
    }

    #[test]
    fn broken_answers_are_failures() {
        assert_eq!(
            eval("<html><body>Sign in</body></html>").err(),
            Some(Failure::NotJson)
        );
        assert_eq!(eval("[true]").err(), Some(Failure::NotJson));
        assert_eq!(eval("").err(), Some(Failure::NotJson));
        let i = issuer("");
        assert_eq!(
            evaluate(401, b"{}", &i, NOW).err(),
            Some(Failure::Unauthorized(401))
        );
        assert_eq!(
            evaluate(503, b"{}", &i, NOW).err(),
            Some(Failure::Status(503))
        );
    }

    #[test]
    fn require_aud_false_accepts_a_missing_aud_only() {
        let i = issuer(", require_aud: false");
        let Ok(Outcome::Active(p, _)) = evaluate(200, br#"{"active":true}"#, &i, NOW) else {
            panic!()
        };
        assert!(p.any_audience);
        let Ok(Outcome::Active(p, _)) = evaluate(200, br#"{"active":true,"aud":"x"}"#, &i, NOW)
        else {
            panic!()
        };
        assert!(!p.any_audience, "a present aud is still checked");
    }

    #[test]
    fn config_rules() {
        let base = |issuers: &str, route: &str| {
            format!("listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}\nadmin: {{address: '127.0.0.1:2'}}\nissuers:\n{issuers}routes: [{{name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3'{route}}}]\n")
        };
        let intro = |name: &str| {
            format!("- {{name: {name}, issuer: 'https://{name}.example.com', introspection: {{client_id: gw, client_secret: s}}}}\n")
        };
        let two = format!("{}{}", intro("a"), intro("b"));
        let e = Config::from_yaml("t", &base(&two, "")).unwrap_err();
        assert!(e.reason.contains("a, b"), "{e}");
        assert!(Config::from_yaml("t", &base(&two, ", issuers: [b]")).is_ok());
        let opaque_without = "- {name: a, issuer: 'https://a.example.com', token_format: opaque}\n";
        assert!(Config::from_yaml("t", &base(opaque_without, "")).is_err());
        for bad in [
            "timeout_ms: 10",
            "cache_max_seconds: 100000",
            "negative_cache_seconds: 1000",
            "endpoint: 'http://as.example.com/introspect'",
            "client_secret: ''",
            "auth_method: private_key_jwt",
        ] {
            let issuers = format!("- {{name: a, issuer: 'https://a.example.com', introspection: {{client_id: gw, client_secret: s, {bad}}}}}\n")
                .replace("client_secret: s, client_secret: ''", "client_secret: ''");
            assert!(
                Config::from_yaml("t", &base(&issuers, "")).is_err(),
                "{bad}"
            );
        }
        let c = Config::from_yaml("t", &base(&intro("a"), "")).unwrap();
        let i = c.issuers[0].introspection.as_ref().unwrap();
        assert_eq!(i.cache_max, Duration::from_secs(300));
        assert_eq!(i.negative_cache, Duration::from_secs(5));
        assert_eq!(i.timeout, Duration::from_millis(2000));
        assert!(i.require_aud);
        assert_eq!(i.auth_method, ClientAuth::ClientSecretBasic);
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let b = Bucket::new(10, 3, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0), "the burst");
        assert!(!b.take(t0), "spent");
        assert!(
            !b.take(t0 + Duration::from_millis(50)),
            "half a call refilled"
        );
        assert!(
            b.take(t0 + Duration::from_millis(100)),
            "one call per 100 ms"
        );
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long it was idle.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
        // A clock read out of order does not mint calls.
        assert!(!b.take(t0));
    }

    #[test]
    fn budget_settings_are_checked() {
        let c = |extra: &str| {
            Config::from_yaml(
                "t",
                &format!(
                    "listen: {{address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}}\nadmin: {{address: '127.0.0.1:2'}}\nissuers:\n- name: a\n  issuer: 'https://as.example.com'\n  introspection: {{client_id: gw, client_secret: s{extra}}}\nroutes: [{{name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3'}}]\n"
                ),
            )
        };
        let d = c("").unwrap();
        let i = d.issuers[0].introspection.as_ref().unwrap();
        assert_eq!((i.max_calls_per_second, i.burst), (50, 100));
        assert_eq!(i.breaker_failures, 5);
        assert_eq!(i.breaker_open, Duration::from_secs(2));
        for bad in [
            ", max_calls_per_second: 0",
            ", burst: 0",
            ", breaker_failures: 0",
            ", breaker_open_ms: 10",
        ] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let i = issuer("");
        let dbg = format!("{i:?}");
        assert!(dbg.contains("Secret(****)"), "{dbg}");
        assert!(!dbg.contains("client_secret: \"s\""), "{dbg}");
    }
}
