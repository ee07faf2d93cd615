//! Key sets per issuer: discovery, periodic refresh, unknown-`kid` refetch, stale-if-error.
//!
//! Side work of the request flow: a background loop per issuer keeps an immutable
//! [`KeySnapshot`] (keys parsed once per fetch) behind an `ArcSwap`; the request path only
//! loads it. When a token names a `kid` we don't have, [`IssuerKeys::refetch`] makes one
//! single-flight, rate-limited fetch. When fetches fail we keep serving the last good keys
//! until `jwks_max_stale_seconds`, then report them unusable (the caller answers 503).
//!
//! Fetches run on the side-work runtime (`background::Fetcher`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::auth::issuer::IssuerConfig;
use crate::auth::jwt::{parse_jwks, VerifyKey};
use crate::background::{get_json, Fetcher};
use crate::clock::now_unix;
use crate::metrics;

/// Minimum time between two on-demand fetches for one issuer (unknown kid, cold start).
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Minimum time between two fetch attempts while an issuer has no keys at all.
const MIN_COLD_RETRY: Duration = Duration::from_secs(2);
/// A JWKS `Cache-Control: max-age` shortens the refresh, within these bounds (seconds): no
/// faster than a minute, never slower than an hour (and never slower than the setting).
const MAX_AGE_FLOOR: u64 = 60;
const MAX_AGE_CEILING: u64 = 3600;
/// Retry pause after a failed periodic fetch, doubled up to [`RETRY_MAX`] (and the
/// issuer's refresh interval).
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The keys of one issuer at one moment.
pub struct KeySnapshot {
    pub keys: Vec<VerifyKey>,
    /// When this set was fetched successfully.
    pub fetched: Instant,
    pub fetched_unix: i64,
}

/// Why no keys can be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysUnavailable {
    NeverFetched,
    TooStale,
}

pub struct IssuerKeys {
    pub config: Arc<IssuerConfig>,
    current: ArcSwapOption<KeySnapshot>,
    jwks_uri: ArcSwapOption<String>,
    fetch_lock: tokio::sync::Mutex<()>,
    /// Monotonic count of successful stores, to let waiters see a fetch completed.
    generation: AtomicU64,
    /// Monotonic count of finished fetch attempts (good or not), so that a caller who waited
    /// for another fetch takes its outcome instead of starting one more.
    attempts: AtomicU64,
    /// Milliseconds since `epoch` of the last on-demand fetch attempt.
    last_attempt_ms: AtomicU64,
    epoch: Instant,
    started: AtomicBool,
    fetcher: Arc<Fetcher>,
    /// The HTTP client of this issuer (its `ca_file`, or the shared one).
    client: reqwest::Client,
}

impl IssuerKeys {
    pub fn new(config: Arc<IssuerConfig>, fetcher: Arc<Fetcher>) -> Arc<IssuerKeys> {
        let jwks_uri = config.jwks_uri.clone().map(Arc::new);
        let client = fetcher.client_for(config.ca.as_ref());
        Arc::new(IssuerKeys {
            client,
            config,
            current: ArcSwapOption::new(None),
            jwks_uri: ArcSwapOption::new(jwks_uri),
            fetch_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            last_attempt_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            started: AtomicBool::new(false),
            fetcher,
        })
    }

    /// Current usable keys, or why there are none.
    pub fn snapshot(&self) -> Result<Arc<KeySnapshot>, KeysUnavailable> {
        match self.current.load_full() {
            None => Err(KeysUnavailable::NeverFetched),
            Some(s) if s.fetched.elapsed() > self.config.max_stale => {
                Err(KeysUnavailable::TooStale)
            }
            Some(s) => Ok(s),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.snapshot().is_ok()
    }

    fn since_last_attempt(&self) -> Option<Duration> {
        let ms = self.last_attempt_ms.load(Ordering::Relaxed);
        if ms == u64::MAX {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(ms)))
    }

    /// One on-demand fetch, single-flight and rate-limited. Returns true when a newer key
    /// set is available afterwards (fetched by us or by a concurrent caller).
    /// A caller that waited while another fetch ran takes that fetch's outcome: one request
    /// never waits for two fetch deadlines back to back.
    pub async fn refetch(self: &Arc<Self>) -> bool {
        let seen = self.generation.load(Ordering::Acquire);
        let tried = self.attempts.load(Ordering::Acquire);
        let _guard = self.fetch_lock.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        if self.attempts.load(Ordering::Acquire) != tried {
            return false;
        }
        let min = if self.current.load().is_none() {
            MIN_COLD_RETRY
        } else {
            MIN_REFETCH_INTERVAL
        };
        // Only on-demand fetches count against the limit: a kid rotated in right after
        // a periodic fetch is still picked up at once.
        if self.since_last_attempt().is_some_and(|d| d < min) {
            return false;
        }
        self.last_attempt_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let me = self.clone();
        matches!(
            self.fetcher
                .run(async move { me.fetch_and_store().await })
                .await,
            Some(Ok(_))
        )
    }

    /// Fetch the JWKS (discovering its URL first if needed) and store it.
    /// Returns the refresh interval suggested by the response.
    async fn fetch_and_store(&self) -> Result<Duration, String> {
        let result = self.fetch().await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let name = &self.config.name;
        match result {
            Ok((keys, skipped, max_age)) => {
                for s in &skipped {
                    tracing::debug!(issuer = %name, "JWKS {s}");
                }
                tracing::info!(issuer = %name, keys = keys.len(), skipped = skipped.len(), "JWKS fetched");
                metrics::jwks_fetch(name, true, keys.len());
                self.current.store(Some(Arc::new(KeySnapshot {
                    keys,
                    fetched: Instant::now(),
                    fetched_unix: now_unix(),
                })));
                self.generation.fetch_add(1, Ordering::AcqRel);
                let base = self.config.refresh;
                let interval = match max_age {
                    Some(s) => Duration::from_secs(s.clamp(MAX_AGE_FLOOR, MAX_AGE_CEILING))
                        .min(base.max(Duration::from_secs(MAX_AGE_FLOOR))),
                    None => base,
                };
                Ok(interval)
            }
            Err(e) => {
                metrics::jwks_fetch(name, false, 0);
                if self.current.load().is_some() {
                    tracing::warn!(issuer = %name, error = %e, "JWKS fetch failed; keeping the last good keys");
                } else {
                    tracing::warn!(issuer = %name, error = %e, "JWKS fetch failed; no keys yet, so this issuer's tokens get 503 until a fetch succeeds");
                }
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<(Vec<VerifyKey>, Vec<String>, Option<u64>), String> {
        let client = &self.client;
        let uri = match self.jwks_uri.load_full() {
            Some(u) => u,
            None => {
                let u = Arc::new(discover_jwks_uri(client, &self.config.issuer).await?);
                self.jwks_uri.store(Some(u.clone()));
                u
            }
        };
        fetch_key_set(client, &uri, &self.config.algorithms).await
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Start the periodic refresh loop on the fetch runtime (once). The loop ends when
    /// no config snapshot refers to this key store any more.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        self.fetcher.spawn(async move {
            let mut backoff = RETRY_MIN;
            loop {
                let wait = {
                    let _guard = me.fetch_lock.lock().await;
                    match me.fetch_and_store().await {
                        Ok(interval) => {
                            backoff = RETRY_MIN;
                            interval
                        }
                        Err(_) => {
                            let w = backoff;
                            backoff = (backoff * 2).min(RETRY_MAX).min(me.config.refresh);
                            w
                        }
                    }
                };
                tokio::time::sleep(wait).await;
                if Arc::strong_count(&me) == 1 {
                    // The gateway dropped this issuer (config reload): stop refreshing.
                    return;
                }
            }
        });
    }

    /// Unix time of the last successful fetch, if any.
    pub fn last_success_unix(&self) -> Option<i64> {
        self.current.load().as_ref().map(|s| s.fetched_unix)
    }

    pub fn key_count(&self) -> usize {
        self.current.load().as_ref().map_or(0, |s| s.keys.len())
    }
}

/// GET and parse a key set: the keys usable with `algorithms`, why the others were
/// skipped, and the response's `max-age`. A set without one usable key is an error.
/// (`mcpgate check --online` calls this too.)
pub async fn fetch_key_set(
    client: &reqwest::Client,
    uri: &str,
    algorithms: &[crate::auth::jwt::Algorithm],
) -> Result<(Vec<VerifyKey>, Vec<String>, Option<u64>), String> {
    let (body, max_age) = get_json(client, uri).await?;
    let (keys, skipped) = parse_jwks(&body, algorithms).map_err(|e| format!("{uri}: {e}"))?;
    if keys.is_empty() {
        return Err(format!(
            "JWKS at {uri} has no usable signing key ({})",
            if skipped.is_empty() {
                "the key set is empty".to_string()
            } else {
                skipped.join("; ")
            }
        ));
    }
    Ok((keys, skipped, max_age))
}

/// RFC 8414 §3 metadata URL (path insertion), then OIDC discovery. The document's
/// `issuer` must equal the configured issuer (RFC 8414 §3.3).
async fn discover_jwks_uri(client: &reqwest::Client, issuer: &str) -> Result<String, String> {
    crate::auth::discovery::discover(client, issuer, "jwks_uri").await
}
