//! The runtime of one route's AS settings: the token endpoint (configured, or discovered
//! from the issuer's metadata once), the circuit breaker, the client-credentials tokens it
//! holds, and the one function that calls the endpoint ([`AsClient::call`]).
//!
//! [`Clients`] holds one [`AsClient`] per route that calls an AS, keyed by the route's
//! fingerprint; it lives in the config snapshot and keeps the clients (their breakers,
//! tokens, discovered endpoints) of routes whose settings did not change across a reload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::breaker::{AsBreaker, Blame, CallerKey};
use super::exchange::{self, Ask, Failure, Issued, Target};
use super::{AsConfig, Fingerprint, Sent, UpstreamAuth};
use crate::background::Fetcher;
use crate::clock::now_unix;
use crate::error::{GatewayFailure, Refusal};
use crate::metrics;
use crate::store::LoudLog;

/// After a failed endpoint discovery, wait this long before trying again.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// One route's client at its authorization server.
pub struct AsClient {
    pub cfg: Arc<AsConfig>,
    pub fetcher: Arc<Fetcher>,
    endpoint: tokio::sync::OnceCell<String>,
    /// Milliseconds since `epoch` of the last failed discovery (`u64::MAX`: none).
    discovery_failed_ms: AtomicU64,
    epoch: Instant,
    breaker: AsBreaker,
    /// Bounded logging of calls the breaker refused.
    loud: LoudLog,
    /// `client_credentials`: the route's token.
    pub own: CcSlot,
    /// `token_exchange` with `actor`: the gateway's token sent as `actor_token`.
    pub actor: CcSlot,
}

impl AsClient {
    fn new(cfg: Arc<AsConfig>, fetcher: Arc<Fetcher>) -> AsClient {
        AsClient {
            breaker: AsBreaker::new(cfg.breaker_failures, cfg.breaker_open),
            cfg,
            fetcher,
            endpoint: tokio::sync::OnceCell::new(),
            discovery_failed_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            loud: LoudLog::default(),
            own: CcSlot::default(),
            actor: CcSlot::default(),
        }
    }

    /// One call to the token endpoint for `grant` and `target`, under the breaker and the
    /// deadline; counted, timed and logged (never a token: hash prefixes only). `caller`:
    /// the caller whose token is exchanged (none for the gateway's own token), whom a
    /// failure after sending is blamed on ([`super::breaker`]).
    pub async fn call(
        &self,
        grant: Ask<'_>,
        target: Target<'_>,
        caller: Option<CallerKey>,
    ) -> Result<Issued, Failure> {
        let cfg = &self.cfg;
        let label = match grant {
            Ask::Exchange { .. } => "token_exchange",
            Ask::ClientCredentials => "client_credentials",
        };
        if !self.breaker.allow(Instant::now()) {
            metrics::upstream_token_request(&cfg.route, label, "circuit_open", None);
            self.loud.error(|n| {
                tracing::warn!(route = %cfg.route, grant = label, refused_since_last_line = n,
                    "token endpoint not asked (circuit breaker open); answering 503")
            });
            return Err(Failure::CircuitOpen);
        }
        let started = Instant::now();
        let result = self.ask(grant, target).await;
        let seconds = started.elapsed().as_secs_f64();
        let outcome = result.and_then(|(status, body)| {
            exchange::judge(matches!(grant, Ask::Exchange { .. }), status, &body)
        });
        match &outcome {
            Err(e) if e.breaks() => {
                let blame = match caller {
                    Some(k) if e.sent() => Blame::Caller(k),
                    _ => Blame::As,
                };
                if self.breaker.failure(blame, Instant::now()) {
                    tracing::error!(route = %cfg.route, error = %e, failures = cfg.breaker_failures,
                        open_ms = cfg.breaker_open.as_millis() as u64,
                        "the token endpoint keeps failing: circuit breaker open, requests that \
                         need a new upstream credential get 503 without a call");
                }
            }
            _ => {
                if self.breaker.success() {
                    tracing::warn!(route = %cfg.route, "the token endpoint answers again after the circuit breaker was open");
                }
            }
        }
        let result = match &outcome {
            Ok(_) => "issued",
            Err(e) => e.label(),
        };
        metrics::upstream_token_request(&cfg.route, label, result, Some(seconds));
        match &outcome {
            Ok(i) => tracing::debug!(route = %cfg.route, grant = label,
                token = %crate::principal::hash_prefix(&crate::principal::token_hash(&i.token)),
                expires_in = i.expires_in, "upstream token issued"),
            Err(Failure::Refused(code)) => {
                tracing::info!(route = %cfg.route, grant = label, error = code, "the authorization server refused the token request")
            }
            Err(e @ Failure::Misconfigured(_)) => {
                tracing::error!(route = %cfg.route, grant = label, error = %e, "upstream token request refused; answering 503")
            }
            Err(e) => {
                tracing::warn!(route = %cfg.route, grant = label, error = %e, "upstream token request failed; answering 503")
            }
        }
        outcome
    }

    /// Build and POST the request (on the fetch runtime).
    async fn ask(&self, grant: Ask<'_>, target: Target<'_>) -> Result<(u16, Vec<u8>), Failure> {
        let endpoint = self.endpoint().await?;
        let aud = self.cfg.assertion_audience(&endpoint).to_string();
        let (body, auth) = exchange::form(grant, target, &self.cfg.client, &aud, now_unix())?;
        // Never redirected: the request carries the client's secret and the caller's token,
        // and a 3xx is an answer that makes no sense (503).
        let client = self.fetcher.unredirected_client();
        self.fetcher
            .run(exchange::post(
                client,
                endpoint,
                body,
                auth,
                self.cfg.timeout,
            ))
            .await
            .unwrap_or_else(|| Err(Failure::Unreachable("fetch runtime is gone".into())))
    }

    /// The configured token endpoint, or the one in the issuer's metadata (looked up once;
    /// a failure is retried at most every few seconds).
    async fn endpoint(&self) -> Result<String, Failure> {
        if let Some(e) = &self.cfg.token_endpoint {
            return Ok(e.clone());
        }
        if let Some(e) = self.endpoint.get() {
            return Ok(e.clone());
        }
        let Some(issuer) = self.cfg.issuer.clone() else {
            return Err(Failure::Discovery("no issuer".into()));
        };
        let failed = self.discovery_failed_ms.load(Ordering::Relaxed);
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        if failed != u64::MAX && now_ms.saturating_sub(failed) < DISCOVERY_RETRY.as_millis() as u64
        {
            return Err(Failure::Discovery(
                "failed recently; not retrying yet".into(),
            ));
        }
        let client = self.fetcher.client();
        let found = self
            .endpoint
            .get_or_try_init(|| async {
                let r = self
                    .fetcher
                    .run(async move {
                        crate::auth::discovery::discover(&client, &issuer, "token_endpoint").await
                    })
                    .await
                    .unwrap_or_else(|| Err("fetch runtime is gone".into()));
                match &r {
                    Err(_) => self
                        .discovery_failed_ms
                        .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed),
                    Ok(e) => {
                        tracing::info!(route = %self.cfg.route, endpoint = %e, "token endpoint discovered")
                    }
                }
                r
            })
            .await;
        found.cloned().map_err(Failure::Discovery)
    }
}

/// A token held by a slot.
pub struct Held {
    pub sent: Sent,
    /// The token itself (sent as `actor_token`).
    pub token: String,
    pub renew_at: Instant,
    pub usable_until: Instant,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("sent", &self.sent).finish()
    }
}

/// One shared token, its single flight and its renewal.
#[derive(Default)]
pub struct CcSlot {
    pub current: ArcSwapOption<Held>,
    /// Held by the one request (or renewal) fetching a token.
    pub flight: tokio::sync::Mutex<()>,
    pub renewing: AtomicBool,
    /// Milliseconds since `epoch` before which no renewal starts (after a failed one).
    pub renewal_not_before_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    /// The last failed fetch and when it ended: callers that waited for it share it.
    pub last_failure: Mutex<Option<(Instant, Failure)>>,
}

impl CcSlot {
    pub fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    pub fn fresh(&self, now: Instant) -> Option<Arc<Held>> {
        self.current.load_full().filter(|h| now < h.usable_until)
    }
}

/// The refusal for a credential that could not be had (503 with `Retry-After`), whatever
/// the reason: the caller is not at fault.
pub fn unavailable(e: &Failure) -> Refusal {
    Refusal::UpstreamCredentialUnavailable(match e {
        Failure::CircuitOpen => {
            "the authorization server keeps failing and is not asked for now; retry later"
        }
        _ => {
            "the authorization server could not issue the credential for the upstream; retry later"
        }
    })
}

/// One [`AsClient`] per route that calls an AS, by fingerprint.
#[derive(Default)]
pub struct Clients {
    map: HashMap<Fingerprint, Arc<AsClient>>,
}

impl Clients {
    /// The clients of `routes`' settings, reusing those of `old` whose settings did not
    /// change (their breakers, tokens and discovered endpoints).
    pub fn build<'a>(
        routes: impl Iterator<Item = &'a UpstreamAuth>,
        old: Option<&Clients>,
        fetcher: &Arc<Fetcher>,
    ) -> Clients {
        let mut map = HashMap::new();
        for cfg in routes.filter_map(UpstreamAuth::as_config) {
            let client = old
                .and_then(|o| o.map.get(&cfg.fingerprint))
                .cloned()
                .unwrap_or_else(|| Arc::new(AsClient::new(cfg.clone(), fetcher.clone())));
            map.insert(cfg.fingerprint, client);
        }
        Clients { map }
    }

    /// The client of `cfg` (always there: built from the same config).
    pub fn get(&self, cfg: &AsConfig) -> Result<&Arc<AsClient>, Refusal> {
        self.map.get(&cfg.fingerprint).ok_or_else(|| {
            tracing::error!(route = %cfg.route, "no client for the route's upstream_auth; refusing");
            Refusal::Gateway(GatewayFailure::Internal)
        })
    }

    /// The fingerprints of the routes that exchange tokens (their cached tokens are keyed
    /// by them).
    pub fn exchange_fingerprints(&self) -> impl Iterator<Item = Fingerprint> + '_ {
        self.map
            .iter()
            .filter(|(_, c)| c.cfg.grant == super::Grant::TokenExchange)
            .map(|(f, _)| *f)
    }
}
