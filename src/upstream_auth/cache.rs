//! Exchanged tokens, cached per caller token and route.
//!
//! An entry is keyed by the SHA-256 of the caller's access token (the subject token) and the
//! fingerprint of the route's AS settings (its target, scopes, client and everything else),
//! so a token exchanged for one route is never sent to another, nor reused after a setting
//! changed; `scope_map` routes derive their scopes from the caller's token, which the key
//! already names. An entry never outlives the exchanged token's usable life
//! ([`super::client_credentials::usable_for`]) nor the subject token's `exp`; a refusal of
//! the AS is kept for [`REFUSAL_CACHE`] (bounded the same way), so a client retrying a
//! refused token does not hammer the AS; so is a failure of the AS answering for the token
//! (a 5xx, garbage, a stall: anything after the token was sent), so that one token costs
//! the AS at most one call per [`REFUSAL_CACHE`] whatever it makes the AS do. A failure
//! before anything was sent (the breaker open, discovery, no connection) is not kept. The
//! cache holds at most `token_cache.max_entries` entries, and concurrent first requests of
//! one caller make one exchange (moka's single-flight; they share its outcome).
//!
//! Revocation drops what was derived from a revoked token: when the revocation list
//! changes, a background sweep removes every entry whose subject it now refuses; and a
//! request whose token is refused (invalid, inactive at introspection, revoked) drops the
//! entries of that token ([`ExchangeCache::forget`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::caller_key;
use super::client::{unavailable, AsClient};
use super::client_credentials::{actor_token, usable_for};
use super::exchange::{Ask, Failure, Target, TYPE_ACCESS_TOKEN, TYPE_JWT};
use super::{Fingerprint, Sent, SubjectTokenType};
use crate::auth::revocation::Revocations;
use crate::background::Fetcher;
use crate::clock::now_unix;
use crate::error::Refusal;
use crate::metrics;
use crate::principal::{AuthMethod, Principal, TokenHash};

/// How long the AS's refusal of a caller's token, or its failure answering for it, is
/// remembered.
pub const REFUSAL_CACHE: Duration = Duration::from_secs(5);

type Key = (TokenHash, Fingerprint);

/// What the AS answered for a caller's token.
#[derive(Clone)]
pub enum Outcome {
    Issued {
        sent: Sent,
        subject: Arc<Principal>,
        ttl: Duration,
    },
    Refused {
        as_error: &'static str,
        subject: Arc<Principal>,
        ttl: Duration,
    },
    /// The AS failed answering for this token (503 until it expires).
    Failed {
        failure: Failure,
        subject: Arc<Principal>,
        ttl: Duration,
    },
}

impl Outcome {
    fn subject(&self) -> &Principal {
        match self {
            Outcome::Issued { subject, .. }
            | Outcome::Refused { subject, .. }
            | Outcome::Failed { subject, .. } => subject,
        }
    }
}

struct OutcomeExpiry;

impl moka::Expiry<Key, Outcome> for OutcomeExpiry {
    fn expire_after_create(&self, _k: &Key, v: &Outcome, _now: Instant) -> Option<Duration> {
        Some(match v {
            Outcome::Issued { ttl, .. }
            | Outcome::Refused { ttl, .. }
            | Outcome::Failed { ttl, .. } => *ttl,
        })
    }
}

/// The exchanged-token cache (shared by every snapshot; sized at start).
pub struct ExchangeCache {
    cache: moka::future::Cache<Key, Outcome>,
}

/// How long something derived from `subject` may be kept, at most `cap`.
fn bounded_by_subject(subject: &Principal, cap: Duration) -> Duration {
    let left = u64::try_from(subject.exp - now_unix()).unwrap_or(0);
    cap.min(Duration::from_secs(left))
}

impl ExchangeCache {
    pub fn new(max_entries: u64) -> Arc<ExchangeCache> {
        Arc::new(ExchangeCache {
            cache: moka::future::Cache::builder()
                .max_capacity(max_entries.max(1))
                .expire_after(OutcomeExpiry)
                .build(),
        })
    }

    /// The credential `client`'s route sends upstream for the caller `p` whose token is
    /// `token` (hash `hash`), asking for `scope`: cached, or exchanged now.
    pub async fn exchanged(
        &self,
        client: &Arc<AsClient>,
        p: &Arc<Principal>,
        token: &str,
        hash: &TokenHash,
        scope: Option<String>,
    ) -> Result<Option<Sent>, Refusal> {
        let key = (*hash, client.cfg.fingerprint);
        let outcome = match self.cache.get(&key).await {
            Some(o) => {
                metrics::upstream_token_cache(true);
                o
            }
            None => {
                let init = exchange(client, p, token, scope);
                match self.cache.entry(key).or_try_insert_with(init).await {
                    Ok(e) => {
                        metrics::upstream_token_cache(!e.is_fresh());
                        e.into_value()
                    }
                    Err(e) => {
                        metrics::upstream_token_cache(false);
                        return Err(unavailable(&e));
                    }
                }
            }
        };
        match outcome {
            Outcome::Issued { sent, .. } => Ok(Some(sent)),
            Outcome::Refused { as_error, .. } => Err(Refusal::UpstreamCredentialRefused {
                route: client.cfg.route.clone(),
                as_error,
            }),
            Outcome::Failed { failure, .. } => Err(unavailable(&failure)),
        }
    }

    /// Drop what was exchanged for the token `hash` on the routes `fingerprints`.
    pub async fn forget(&self, hash: &TokenHash, fingerprints: impl Iterator<Item = Fingerprint>) {
        for f in fingerprints {
            self.cache.invalidate(&(*hash, f)).await;
        }
    }

    /// Drop every entry whose subject the revocation list now refuses; how many.
    pub async fn sweep(&self, revocations: &Revocations) -> usize {
        let now = now_unix();
        let doomed: Vec<Arc<Key>> = self
            .cache
            .iter()
            .filter(|(_, v)| revocations.revoked(v.subject(), now).is_some())
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            self.cache.invalidate(&**k).await;
        }
        doomed.len()
    }

    /// Sweep on every change of the revocation list, in the background.
    pub fn start_eviction(self: &Arc<Self>, revocations: Arc<Revocations>, fetcher: &Fetcher) {
        let me = self.clone();
        let mut changes = revocations.changes();
        fetcher.spawn(async move {
            while changes.changed().await.is_ok() {
                let n = me.sweep(&revocations).await;
                if n > 0 {
                    tracing::info!(
                        dropped = n,
                        "revocation: exchanged upstream tokens derived from revoked tokens dropped"
                    );
                }
            }
        });
    }

    /// How many entries it holds (after moka's pending housekeeping).
    pub async fn entries(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

/// One exchange (the cache makes it single-flight per caller token and route).
async fn exchange(
    client: &Arc<AsClient>,
    p: &Arc<Principal>,
    token: &str,
    scope: Option<String>,
) -> Result<Outcome, Failure> {
    let cfg = &client.cfg;
    let actor = match &cfg.actor {
        Some(_) => Some(actor_token(client).await?),
        None => None,
    };
    let subject_type = match (cfg.subject_token_type, p.method) {
        (SubjectTokenType::Jwt, AuthMethod::Jwt) => TYPE_JWT,
        _ => TYPE_ACCESS_TOKEN,
    };
    let ask = Ask::Exchange {
        subject: token,
        subject_type,
        actor: actor.as_ref().map(|a| a.token.as_str()),
    };
    let target = Target {
        audience: &cfg.audience,
        resource: &cfg.resource,
        scope: scope.as_deref(),
    };
    match client.call(ask, target, Some(caller_key(p))).await {
        Ok(issued) => {
            let sent = Sent::of(cfg, &issued.token).ok_or(Failure::Garbage(
                "the access_token cannot be sent in a header",
            ))?;
            Ok(Outcome::Issued {
                sent,
                ttl: bounded_by_subject(p, usable_for(issued.expires_in)),
                subject: p.clone(),
            })
        }
        Err(Failure::Refused(as_error)) => Ok(Outcome::Refused {
            as_error,
            ttl: bounded_by_subject(p, REFUSAL_CACHE),
            subject: p.clone(),
        }),
        Err(failure) if failure.sent() => Ok(Outcome::Failed {
            failure,
            ttl: bounded_by_subject(p, REFUSAL_CACHE),
            subject: p.clone(),
        }),
        Err(e) => Err(e),
    }
}
