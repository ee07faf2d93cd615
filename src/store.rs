//! The shared state store (the `state` section, which this module owns): one Redis client per process, for what replicas must share
//! (issue 9): DPoP proof `jti`s and the revocation list.
//!
//! Side work, off the request path except for the one `SET NX PX` a DPoP request makes.
//! Every call runs on this store's own small runtime (never on a pingora worker), under a
//! deadline (`timeout_ms` on the request path, at least one second for background and
//! admin calls), behind a circuit breaker: after `breaker_failures` consecutive failures
//! calls fail at once for `breaker_open_ms`, then one probe is let through; a success
//! closes it. What a feature does when a call fails is its own `fail` policy (see
//! `dpop` and `revocation`). Redis being down never blocks startup: the connection is
//! made lazily and re-made by the `ConnectionManager` after errors.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::compile::{relative_to, strip_one_newline, CompileError};
pub use crate::failmode::FailMode;
use crate::metrics::{self, RedisOp, RedisResult};

// ---------------------------------------------------------------------------------------------
// The `state` section
// ---------------------------------------------------------------------------------------------

/// Background and admin calls (sync, writes) wait at least this long, whatever the
/// request-path `timeout_ms`: they are not on a request's clock.
const MIN_BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// Pauses of the connection manager between reconnection attempts: short, since the next
/// call retries anyway.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// At most one "decided without Redis" line per this many milliseconds (with the count).
const LOUD_LOG_EVERY_MS: u64 = 10_000;

/// `state`: what replicas share, and what happens when the shared store is unreachable.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub redis: Option<FileRedis>,
    #[serde(default)]
    pub dpop_replay: FileStateFeature,
    #[serde(default)]
    pub revocations: FileRevocations,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://` (TLS).
    pub url: String,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Deadline of one call on the request path (the DPoP `SET NX`).
    #[serde(default = "default_redis_timeout")]
    pub timeout_ms: u64,
    /// Deadline of one connection attempt.
    #[serde(default = "default_redis_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// PEM CA bundle for `rediss://` (default: the system trust store).
    pub ca_file: Option<PathBuf>,
    /// Consecutive failed calls that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls at once before letting one probe through.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// `/readyz` answers 503 while Redis is unreachable, or while this replica's
    /// revocation list diverges from Redis's and cannot be reconciled.
    #[serde(default)]
    pub readyz: bool,
    /// A secret (at least 32 bytes) every replica shares: revocation entries and the
    /// list's head (epoch, version, digest) are authenticated with HMAC-SHA256 under it.
    pub hmac_key_file: Option<PathBuf>,
}

fn default_key_prefix() -> String {
    "mcpgate:".to_string()
}
fn default_redis_timeout() -> u64 {
    50
}
fn default_redis_connect_timeout() -> u64 {
    1000
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_breaker_open_ms() -> u64 {
    1000
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileStateFeature {
    pub fail: Option<FailMode>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRevocations {
    pub fail: Option<FailMode>,
    /// How long the local copy may go unconfirmed against Redis before a request counts
    /// as decided without Redis (refused with `fail: closed`, counted with `fail: open`).
    pub max_stale_seconds: Option<u64>,
}

/// Compiled `state` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    pub redis: Option<RedisSettings>,
    /// DPoP replay when Redis cannot answer (default closed).
    pub dpop_replay_fail: FailMode,
    /// Revocation checks when the local copy cannot be confirmed (default open).
    pub revocations_fail: FailMode,
    /// The longest the local copy may go unconfirmed before the fail policy applies.
    pub revocations_max_stale: Duration,
}

/// Compiled `state.redis`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The URL as configured, credentials included: never log it (see [`Self::redacted`]).
    pub url: String,
    /// The URL with its password replaced, for logs and `mcpgate check`.
    pub redacted: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// PEM read from `ca_file` when the config was compiled.
    pub ca_pem: Option<Vec<u8>>,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub readyz: bool,
    pub hmac_key_file: Option<PathBuf>,
    /// The key read from `hmac_key_file` when the config was compiled (never printed).
    pub hmac_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.redacted)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Deadline of background and admin calls (sync, writes): never below one second.
    pub fn background_timeout(&self) -> Duration {
        self.timeout.max(MIN_BACKGROUND_TIMEOUT)
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

/// The URL with any password replaced by `***`.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        // A URL with a password has a host, so setting it cannot fail.
        Ok(mut u) if u.password().is_some() => match u.set_password(Some("***")) {
            Ok(()) => u.to_string(),
            Err(()) => "(unparsable URL)".to_string(),
        },
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".to_string(),
    }
}

/// Check and compile the `state` section; `config_file` resolves relative paths.
pub fn compile(config_file: &str, f: FileState) -> Result<StateSettings, CompileError> {
    let redis = f.redis.map(|r| compile_redis(config_file, r)).transpose()?;
    let max_stale = f.revocations.max_stale_seconds.unwrap_or(5);
    if !(1..=3600).contains(&max_stale) {
        return Err(CompileError::new(
            "state.revocations.max_stale_seconds",
            "state.revocations.max_stale_seconds must be between 1 and 3600",
        ));
    }
    if redis.is_none()
        && (f.dpop_replay.fail.is_some()
            || f.revocations.fail.is_some()
            || f.revocations.max_stale_seconds.is_some())
    {
        return Err(CompileError::new(
            "state",
            "state: fail policies need state.redis (without it, state is local)",
        ));
    }
    Ok(StateSettings {
        redis,
        dpop_replay_fail: f.dpop_replay.fail.unwrap_or(FailMode::Closed),
        revocations_fail: f.revocations.fail.unwrap_or(FailMode::Open),
        revocations_max_stale: Duration::from_secs(max_stale),
    })
}

/// `state.redis`: the URL (never logged with its password), bounds, and the files it names.
fn compile_redis(config_file: &str, r: FileRedis) -> Result<RedisSettings, CompileError> {
    let redacted = redact_url(&r.url);
    let at =
        |field: &str, reason: String| CompileError::new(format!("state.redis.{field}"), reason);
    let u = url::Url::parse(&r.url)
        .map_err(|e| at("url", format!("state.redis.url {redacted}: {e}")))?;
    if u.scheme() != "redis" && u.scheme() != "rediss" {
        return Err(at(
            "url",
            format!("state.redis.url {redacted}: the scheme must be redis:// or rediss:// (TLS)"),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(at("url", format!("state.redis.url {redacted}: no host")));
    }
    redis::Client::open(r.url.as_str())
        .map_err(|e| at("url", format!("state.redis.url {redacted}: {e}")))?;
    if r.key_prefix.len() > 64 || r.key_prefix.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(at(
            "key_prefix",
            "state.redis.key_prefix must be at most 64 visible ASCII characters".into(),
        ));
    }
    for (field, value, range) in [
        ("timeout_ms", r.timeout_ms, 1..=10_000),
        ("connect_timeout_ms", r.connect_timeout_ms, 10..=30_000),
        ("breaker_failures", u64::from(r.breaker_failures), 1..=100),
        ("breaker_open_ms", r.breaker_open_ms, 100..=60_000),
    ] {
        if !range.contains(&value) {
            return Err(at(
                field,
                format!(
                    "state.redis.{field} must be between {} and {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
    }
    let ca_file = r.ca_file.map(|p| relative_to(config_file, p));
    let ca_pem = match &ca_file {
        None => None,
        Some(_) if u.scheme() != "rediss" => {
            return Err(at(
                "ca_file",
                "state.redis.ca_file needs a rediss:// URL".into(),
            ))
        }
        Some(p) => Some(read_ca(p).map_err(|e| at("ca_file", e))?),
    };
    let hmac_key_file = r.hmac_key_file.map(|p| relative_to(config_file, p));
    let hmac_key = hmac_key_file
        .as_deref()
        .map(read_hmac_key)
        .transpose()
        .map_err(|e| at("hmac_key_file", e))?;
    Ok(RedisSettings {
        url: r.url,
        redacted,
        key_prefix: r.key_prefix,
        timeout: Duration::from_millis(r.timeout_ms),
        connect_timeout: Duration::from_millis(r.connect_timeout_ms),
        ca_file,
        ca_pem,
        breaker_failures: r.breaker_failures,
        breaker_open: Duration::from_millis(r.breaker_open_ms),
        readyz: r.readyz,
        hmac_key_file,
        hmac_key,
    })
}

/// `state.redis.ca_file`: PEM with at least one certificate.
fn read_ca(p: &Path) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(p).map_err(|e| format!("state.redis.ca_file {}: {e}", p.display()))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("state.redis.ca_file {}: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "state.redis.ca_file {}: no certificate found",
            p.display()
        ));
    }
    Ok(pem)
}

/// `state.redis.hmac_key_file`: at least 32 bytes (one trailing newline stripped).
fn read_hmac_key(p: &Path) -> Result<Vec<u8>, String> {
    let raw =
        std::fs::read(p).map_err(|e| format!("state.redis.hmac_key_file {}: {e}", p.display()))?;
    let key = strip_one_newline(&raw);
    if key.len() < 32 {
        return Err(format!(
            "state.redis.hmac_key_file {}: the key must be at least 32 bytes \
             (e.g. `openssl rand -base64 48`)",
            p.display()
        ));
    }
    Ok(key.to_vec())
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The breaker is open: Redis was not asked.
    CircuitOpen,
    /// No answer within the deadline.
    Timeout,
    /// A connection or command error.
    Redis(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::CircuitOpen => f.write_str("circuit breaker open"),
            StoreError::Timeout => f.write_str("timed out"),
            StoreError::Redis(e) => write!(f, "{e}"),
        }
    }
}

/// A consecutive-failure circuit breaker (lock-free).
pub struct Breaker {
    threshold: u32,
    open_for_ms: u64,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which calls fail at once.
    open_until_ms: AtomicU64,
    epoch: Instant,
    ever_ok: AtomicBool,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for_ms: open_for.as_millis() as u64,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            ever_ok: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a call may go to Redis now. While open, no; once the open period is
    /// over, exactly one caller (the probe) gets `true` per period.
    pub fn allow(&self) -> bool {
        if self.failures.load(Ordering::Acquire) < self.threshold {
            return true;
        }
        let until = self.open_until_ms.load(Ordering::Acquire);
        let now = self.now_ms();
        if now < until {
            return false;
        }
        self.open_until_ms
            .compare_exchange(
                until,
                now + self.open_for_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Record a success; returns true when this closed an open breaker.
    pub fn success(&self) -> bool {
        self.ever_ok.store(true, Ordering::Release);
        self.failures.swap(0, Ordering::AcqRel) >= self.threshold
    }

    /// Record a failure; returns true when this opened the breaker.
    pub fn failure(&self) -> bool {
        let n = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if n >= self.threshold {
            self.open_until_ms
                .store(self.now_ms() + self.open_for_ms, Ordering::Release);
        }
        n == self.threshold
    }

    pub fn is_open(&self) -> bool {
        self.failures.load(Ordering::Acquire) >= self.threshold
    }

    /// Redis answered at least once and the breaker is closed.
    pub fn healthy(&self) -> bool {
        self.ever_ok.load(Ordering::Acquire) && !self.is_open()
    }
}

/// Loud but bounded logging of decisions made without Redis: the first one at once,
/// then at most one line every 10 seconds, each with the count since the last line.
#[derive(Default)]
pub struct LoudLog {
    /// Unix milliseconds of the last line (0: none yet).
    last_ms: AtomicU64,
    count: AtomicU64,
}

impl LoudLog {
    pub fn error(&self, log: impl FnOnce(u64)) {
        self.count.fetch_add(1, Ordering::AcqRel);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
            .max(1);
        let last = self.last_ms.load(Ordering::Acquire);
        if (last == 0 || now.saturating_sub(last) >= LOUD_LOG_EVERY_MS)
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            log(self.count.swap(0, Ordering::AcqRel));
        }
    }
}

/// Metric handles of the store's operations.
pub struct Ops {
    pub dpop_replay: RedisOp,
    pub revocations_sync: RedisOp,
    pub revocations_write: RedisOp,
}

/// The Redis client of this process.
pub struct Store {
    runtime: tokio::runtime::Runtime,
    client: redis::Client,
    conn: ConnectionManager,
    pub settings: RedisSettings,
    pub breaker: Breaker,
    pub ops: Ops,
}

fn client(settings: &RedisSettings) -> Result<redis::Client, String> {
    let url = settings.url.as_str();
    let e = |e: redis::RedisError| format!("state.redis.url {}: {e}", settings.redacted);
    match &settings.ca_pem {
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        )
        .map_err(e),
        None => redis::Client::open(url).map_err(e),
    }
}

impl Store {
    /// Set up the client (no connection is made yet).
    pub fn new(settings: &RedisSettings) -> Result<Arc<Store>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcpgate-redis")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Redis runtime: {e}"))?;
        let client = client(settings)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.background_timeout()))
            // Reconnection is retried by the next call; keep each attempt short.
            .set_number_of_retries(1)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let conn = {
            // The manager spawns its reconnection tasks on the runtime it is made in.
            let _guard = runtime.enter();
            ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(|e| format!("state.redis: {e}"))?
        };
        if !settings.tls() && !is_loopback(&settings.url) {
            tracing::warn!(
                url = %settings.redacted,
                "state.redis.url is plain redis:// to a non-loopback host: use rediss:// (TLS) \
                 unless the network path is trusted"
            );
        }
        metrics::register_state_metrics(true);
        Ok(Arc::new(Store {
            runtime,
            client,
            conn,
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_open),
            settings: settings.clone(),
            ops: Ops {
                dpop_replay: RedisOp::new("dpop_replay"),
                revocations_sync: RedisOp::new("revocations_sync"),
                revocations_write: RedisOp::new("revocations_write"),
            },
        }))
    }

    /// `key_prefix` + `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.settings.key_prefix)
    }

    /// Run on the store's runtime.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(fut);
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// One call: through the breaker, on the store runtime, within `timeout`, counted.
    pub async fn call<T, F, Fut>(
        &self,
        op: &RedisOp,
        timeout: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        if !self.breaker.allow() {
            op.record(RedisResult::CircuitOpen, None);
            return Err(StoreError::CircuitOpen);
        }
        let fut = f(self.conn.clone());
        let started = Instant::now();
        let joined = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, fut).await })
            .await;
        let seconds = Some(started.elapsed().as_secs_f64());
        let result = match joined {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(StoreError::Redis(e.to_string())),
            Ok(Err(_)) => Err(StoreError::Timeout),
            Err(e) => Err(StoreError::Redis(format!("task failed: {e}"))),
        };
        match &result {
            Ok(_) => {
                op.record(RedisResult::Ok, seconds);
                if self.breaker.success() {
                    metrics::redis_circuit(false);
                    tracing::warn!("Redis answers again: circuit breaker closed");
                }
            }
            Err(e) => {
                op.record(
                    if *e == StoreError::Timeout {
                        RedisResult::Timeout
                    } else {
                        RedisResult::Error
                    },
                    seconds,
                );
                if self.breaker.failure() {
                    metrics::redis_circuit(true);
                    tracing::error!(
                        error = %e,
                        failures = self.settings.breaker_failures,
                        open_ms = self.settings.breaker_open.as_millis() as u64,
                        "Redis unreachable: circuit breaker open, calls fail at once"
                    );
                }
            }
        }
        result
    }

    /// `SET key 1 NX PX ttl`: true when the key was absent (first use), false when it
    /// was there (a replay). Request-path deadline.
    pub async fn set_nx(&self, suffix: &[u8; 32], ttl: Duration) -> Result<bool, StoreError> {
        let key = self.key(&format!("dpop:{}", URL_SAFE_NO_PAD.encode(suffix)));
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.call(
            &self.ops.dpop_replay,
            self.settings.timeout,
            move |mut c| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            },
        )
        .await
    }
}

fn is_loopback(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| crate::compile::is_loopback_url(&u))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn loud_log_is_rate_limited_and_counts() {
        let l = LoudLog::default();
        let mut lines = Vec::new();
        for _ in 0..5 {
            l.error(|n| lines.push(n));
        }
        assert_eq!(lines, vec![1], "one line at once, then quiet");
        l.last_ms.store(1, Ordering::Release);
        l.error(|n| lines.push(n));
        assert_eq!(
            lines,
            vec![1, 5],
            "the next line carries the count since the last"
        );
    }

    #[test]
    fn breaker_opens_after_threshold_and_lets_one_probe_through() {
        let b = Breaker::new(3, Duration::from_millis(40));
        assert!(b.allow() && !b.healthy());
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.allow(), "below the threshold calls go through");
        assert!(b.failure(), "the third failure opens it");
        assert!(b.is_open());
        assert!(!b.allow(), "open: fail at once");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "after the open period, one probe");
        assert!(!b.allow(), "and only one");
        assert!(
            !b.failure(),
            "a failed probe keeps it open (not a new opening)"
        );
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        assert!(b.success(), "a good probe closes it");
        assert!(b.allow() && b.healthy() && !b.is_open());
        assert!(!b.success());
    }
}
