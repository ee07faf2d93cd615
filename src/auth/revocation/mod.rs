//! Revocations: a list of revoked token ids, subjects and clients, checked on every
//! request (cached tokens included) and shared by every replica through Redis.
//!
//! Runs in the token step, right after authentication: [`Revocations::check`] is a plain
//! function over the [`Principal`] and the local [`RevocationSet`], read through one
//! lock-free `ArcSwap` load: no Redis round trip on the request path. A revocation names
//! a token `jti`, a subject (`sub`) or a client (`client_id` or `azp`), optionally with
//! the issuer it applies to, and expires (`expires_at`). By `jti` it refuses that token;
//! by subject or client it refuses every token issued (`iat`) at or before the
//! revocation plus the issuer's clock skew, so new tokens work again once that skew has
//! passed. API keys are not subject to revocations.
//!
//! With `state.redis`, the list lives in Redis beside a *head* (epoch, version, digest,
//! optionally authenticated with HMAC-SHA256): see [`shared`] for the layout, the
//! compare-and-set writes and how a replica judges what it loads. Each replica polls the
//! head and the hash length every [`POLL`] (which also confirms its copy:
//! `mcpgate_revocations_cache_age_seconds`) and reloads the whole list when either
//! changed, at once on a pub/sub message. When Redis's list diverges from the replica's
//! (lost, rolled back, entries deleted or forged), the replica writes back the union of
//! both, counts it (`mcpgate_revocations_divergence_total`) and, until that succeeds,
//! reports it (`mcpgate_revocations_diverged`, `/readyz` with `state.redis.readyz`).
//! Without Redis the list is local to the process. Writes come from the admin listener
//! (`POST /revocations`, see `admin`) and `mcpgate revoke` (a client of that endpoint,
//! `cli::revoke`).
//!
//! A response stream whose token gets revoked is closed at its next event: the proxy's
//! `response_body_filter` re-checks its principal whenever [`Revocations::generation`]
//! changed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::clock::now_unix_ms as now_ms;
use crate::error::{AdminRefusal, Refusal};
use crate::failmode::FailMode;
use crate::metrics;
use crate::principal::{AuthMethod, Principal};
use crate::store::StateSettings;
use crate::store::{LoudLog, Store, StoreError};

pub mod shared;

/// How often each replica confirms its copy against Redis when no message arrives.
pub const POLL: Duration = Duration::from_millis(500);
/// At most this many unexpired revocations are kept.
pub const MAX_ENTRIES: usize = 100_000;
/// Default and longest lifetime of a revocation.
pub const DEFAULT_EXPIRES_IN: u64 = 86_400;
pub const MAX_EXPIRES_IN: u64 = 366 * 86_400;

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One token, by its `jti`.
    Jti,
    /// Every token of a subject issued at or before the revocation.
    Subject,
    /// Every token of a client issued at or before the revocation.
    ClientId,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Jti => "jti",
            Kind::Subject => "subject",
            Kind::ClientId => "client_id",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Jti => 0,
            Kind::Subject => 1,
            Kind::ClientId => 2,
        }
    }
}

/// One revocation, as stored in Redis and shown by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Random, unique per revocation (so expired entries can be deleted safely).
    pub id: String,
    pub kind: Kind,
    pub value: String,
    /// Only tokens of this `iss` (default: any issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Unix seconds: tokens issued at or before this are revoked (subject, client).
    pub revoked_at: i64,
    /// Unix seconds: the revocation is forgotten after this.
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

struct Mark {
    issuer: Option<Box<str>>,
    at: i64,
    expires: i64,
}

/// An immutable set of revocations, indexed for the request path.
#[derive(Default)]
pub struct RevocationSet {
    by: [HashMap<Box<str>, Vec<Mark>>; 3],
    entries: Vec<Revocation>,
}

impl RevocationSet {
    /// Index the unexpired entries.
    pub fn build(entries: Vec<Revocation>, now: i64) -> RevocationSet {
        let mut set = RevocationSet::default();
        for r in entries.into_iter().filter(|r| r.expires_at > now) {
            set.by[r.kind.index()]
                .entry(Box::from(r.value.as_str()))
                .or_default()
                .push(Mark {
                    issuer: r.issuer.as_deref().map(Box::from),
                    at: r.revoked_at,
                    expires: r.expires_at,
                });
            set.entries.push(r);
        }
        set
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Revocation] {
        &self.entries
    }

    /// Why `p` is revoked at `now`, if it is.
    ///
    /// By subject or client, a token is revoked when it was issued (`iat`) at or before
    /// the revocation *plus the issuer's clock skew*: the gateway accepts an `iat` up to
    /// that skew ahead of its clock, so an AS whose clock runs ahead could otherwise
    /// issue tokens, before the revocation, that look issued after it. The consequence:
    /// new tokens of a revoked subject or client work once `skew` seconds have passed.
    /// The client is the token's `client_id` or its `azp` (either matches).
    pub fn check(&self, p: &Principal, now: i64) -> Option<Kind> {
        if self.entries.is_empty() || p.method == AuthMethod::ApiKey {
            return None;
        }
        let hit = |kind: Kind, value: Option<&str>| {
            let Some(marks) = value.and_then(|v| self.by[kind.index()].get(v)) else {
                return false;
            };
            marks.iter().any(|m| {
                m.expires > now
                    && m.issuer.as_deref().is_none_or(|i| i == &*p.iss)
                    && (kind == Kind::Jti
                        || p.iat
                            .is_none_or(|iat| iat <= m.at.saturating_add(p.skew.max(0))))
            })
        };
        [
            (Kind::Jti, p.jti.as_deref()),
            (Kind::Subject, p.subject.as_deref()),
            (Kind::ClientId, p.client_id.as_deref()),
            (Kind::ClientId, p.azp.as_deref()),
        ]
        .into_iter()
        .find(|&(k, v)| hit(k, v))
        .map(|(k, _)| k)
    }
}

struct Shared {
    store: Arc<Store>,
    keys: shared::Keys,
    integrity: shared::Integrity,
    /// What this replica confirmed, held across the Redis calls of one sync or write so
    /// that they never interleave within the replica.
    state: tokio::sync::Mutex<SyncState>,
    /// Unix ms when the copy was last confirmed current (0: never).
    confirmed_ms: AtomicI64,
    /// Redis's list diverges from this replica's and is not reconciled yet.
    diverged: AtomicBool,
    /// The next sync loads the whole list (a pub/sub message arrived).
    full_load: AtomicBool,
    /// Unix ms of the last whole load.
    loaded_ms: AtomicI64,
    wake: tokio::sync::Notify,
    /// Bounded logging of entries and heads that fail authentication.
    loud: LoudLog,
}

#[derive(Default)]
struct SyncState {
    confirmed: shared::Confirmed,
    /// No reconciling write before this instant (see [`shared::next_backoff`]).
    next_rewrite: Option<std::time::Instant>,
    backoff: Duration,
}

/// The revocation list of this replica.
pub struct Revocations {
    current: ArcSwap<RevocationSet>,
    /// Bumped whenever `current` changes content.
    generation: AtomicU64,
    /// Carries `generation` to the watchdogs of open streams (see `streams`).
    changed: tokio::sync::watch::Sender<u64>,
    shared: Option<Shared>,
    fail: FailMode,
    max_stale_ms: i64,
    loud: LoudLog,
    created_ms: i64,
}

/// Why a revocation could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    Full,
    Unavailable(String),
}

/// Between polls (head and hash length), the whole list is loaded and judged at least
/// this often, so an entry altered in place without a message is seen within a minute.
const FULL_LOAD_EVERY_MS: i64 = 60_000;

/// First pause before resubscribing to the revocation channel (the poll keeps the list
/// current meanwhile), doubled up to [`RESUBSCRIBE_MAX`].
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(250);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// Longest `jti`, subject or client id a revocation may name.
const MAX_VALUE_BYTES: usize = 1024;

/// Seconds before its expiry from which a revocation missing in Redis is not a divergence.
const EXPIRY_GRACE: i64 = 30;

/// Compare-and-set attempts of one `POST /revocations` before it gives up (503).
const WRITE_ATTEMPTS: usize = 4;

impl Revocations {
    /// A list for these settings; `store` when Redis is configured.
    pub fn new(settings: &StateSettings, store: Option<Arc<Store>>) -> Revocations {
        metrics::register_state_metrics(store.is_some());
        let shared = store.map(|store| {
            let key = settings.redis.as_ref().and_then(|r| r.hmac_key.as_deref());
            Shared {
                keys: shared::Keys {
                    hash: store.key("revocations"),
                    head: store.key("revocations:head"),
                    channel: store.key("revocations"),
                },
                integrity: shared::Integrity::new(key, &store.settings.key_prefix),
                store,
                state: tokio::sync::Mutex::new(SyncState::default()),
                confirmed_ms: AtomicI64::new(0),
                diverged: AtomicBool::new(false),
                full_load: AtomicBool::new(false),
                loaded_ms: AtomicI64::new(0),
                wake: tokio::sync::Notify::new(),
                loud: LoudLog::default(),
            }
        });
        Revocations {
            current: ArcSwap::from_pointee(RevocationSet::default()),
            generation: AtomicU64::new(0),
            changed: tokio::sync::watch::Sender::new(0),
            shared,
            fail: settings.revocations_fail,
            max_stale_ms: settings.revocations_max_stale.as_millis() as i64,
            loud: LoudLog::default(),
            created_ms: now_ms(),
        }
    }

    /// Whether revocations are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether Redis's list diverges from this replica's and could not be reconciled yet
    /// (for `/readyz` with `state.redis.readyz`).
    pub fn diverged(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|sh| sh.diverged.load(Ordering::Acquire))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Wakes whenever the list changes content (the value is the new generation).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn snapshot(&self) -> Arc<RevocationSet> {
        self.current.load_full()
    }

    /// Why `p` is revoked, from the local copy.
    pub fn revoked(&self, p: &Principal, now: i64) -> Option<Kind> {
        self.current.load().check(p, now)
    }

    /// Seconds since the local copy was last confirmed against Redis (since start when
    /// it never was; 0 without Redis).
    pub fn age_seconds(&self) -> f64 {
        match &self.shared {
            None => 0.0,
            Some(sh) => {
                let t = match sh.confirmed_ms.load(Ordering::Acquire) {
                    0 => self.created_ms,
                    t => t,
                };
                (now_ms() - t).max(0) as f64 / 1000.0
            }
        }
    }

    /// The request-path check: refuse a revoked token; when the copy could not be
    /// confirmed for `max_stale_seconds`, apply the fail policy.
    pub fn check(&self, p: &Principal, now: i64) -> Result<(), Refusal> {
        if let Some(kind) = self.revoked(p, now) {
            tracing::debug!(kind = kind.as_str(), "token revoked");
            return Err(Refusal::Revoked);
        }
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        if p.method == AuthMethod::ApiKey {
            return Ok(());
        }
        let confirmed = sh.confirmed_ms.load(Ordering::Acquire);
        // Never loaded: `closed` refuses (the list may hold anything); `open` counts from
        // the start, so the first sync at startup is not reported as an outage.
        let since = match (confirmed, self.fail) {
            (0, FailMode::Open) => self.created_ms,
            (t, _) => t,
        };
        if now_ms() - since <= self.max_stale_ms {
            return Ok(());
        }
        match self.fail {
            FailMode::Closed => Err(Refusal::StateUnavailable(
                "the revocation list cannot be confirmed",
            )),
            FailMode::Open => {
                metrics::state_fail_open("revocations");
                self.loud.error(|n| {
                    tracing::error!(
                        age_seconds = self.age_seconds(),
                        decided_without_redis = n,
                        "Redis cannot answer: revocations are checked against this replica's \
                         last copy, which may miss recent revocations (state.revocations.fail: open)"
                    )
                });
                Ok(())
            }
        }
    }

    fn swap(&self, set: RevocationSet) {
        let old = self.current.load();
        let known: HashSet<&str> = old.entries.iter().map(|r| r.id.as_str()).collect();
        let mut changed = set.len() != old.len();
        for r in &set.entries {
            if !known.contains(r.id.as_str()) {
                metrics::revocation_applied(r.kind.as_str());
                changed = true;
                tracing::info!(
                    kind = r.kind.as_str(),
                    issuer = r.issuer.as_deref(),
                    revoked_at = r.revoked_at,
                    expires_at = r.expires_at,
                    reason = r.reason.as_deref(),
                    "revocation applied"
                );
            }
        }
        metrics::revocations_active(set.len());
        drop(known);
        if changed {
            self.current.store(Arc::new(set));
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            self.changed.send_replace(generation);
        }
    }

    /// This replica's revocations that have not expired at `now`.
    fn local(&self, now: i64) -> Vec<Revocation> {
        self.current
            .load()
            .entries
            .iter()
            .filter(|r| r.expires_at > now)
            .cloned()
            .collect()
    }

    /// Record a revocation: in Redis (and then in the local copy) when shared, else in
    /// the local copy only.
    pub async fn add(&self, r: Revocation) -> Result<(), AddError> {
        let now = crate::clock::now_unix();
        if self.current.load().len() >= MAX_ENTRIES {
            return Err(AddError::Full);
        }
        let Some(sh) = &self.shared else {
            let mut entries = self.current.load().entries.clone();
            entries.push(r);
            self.swap(RevocationSet::build(entries, now));
            return Ok(());
        };
        let unavailable = |e: StoreError| AddError::Unavailable(e.to_string());
        let mut st = sh.state.lock().await;
        for _ in 0..WRITE_ATTEMPTS {
            // The write is based on what Redis holds now, judged like any load; the
            // union with this replica's copy and the new entry is written back.
            let loaded = shared::load(&sh.store, &sh.keys, &sh.integrity)
                .await
                .map_err(unavailable)?;
            self.judge(sh, &st, &loaded, now);
            if self
                .rewrite(sh, &mut st, &loaded, Some(&r), now)
                .await
                .map_err(unavailable)?
            {
                return Ok(());
            }
        }
        Err(AddError::Unavailable(
            "the revocation list kept changing under this write".into(),
        ))
    }

    /// Confirm the local copy against Redis: a cheap poll of the head and the hash
    /// length, and a full load when either changed (or with `force`).
    async fn sync(&self, force: bool) -> Result<(), StoreError> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let mut st = sh.state.lock().await;
        let force = force
            || sh.full_load.swap(false, Ordering::AcqRel)
            || now_ms() - sh.loaded_ms.load(Ordering::Acquire) > FULL_LOAD_EVERY_MS;
        if !force && st.confirmed.loaded && !sh.diverged.load(Ordering::Acquire) {
            let (raw, fields) = shared::poll(&sh.store, &sh.keys).await?;
            if raw == st.confirmed.raw && fields == st.confirmed.fields {
                sh.confirmed_ms.store(now_ms(), Ordering::Release);
                return Ok(());
            }
        }
        let loaded = shared::load(&sh.store, &sh.keys, &sh.integrity).await?;
        sh.loaded_ms.store(now_ms(), Ordering::Release);
        let now = crate::clock::now_unix();
        match self.judge(sh, &st, &loaded, now) {
            None => {
                self.adopt(sh, &mut st, &loaded, now);
                if loaded.entries.values().any(|r| r.expires_at <= now) {
                    // Expired entries leave Redis through a write like any other change. A
                    // failed write is harmless: the entries are expired everywhere (every
                    // replica ignores them) and the next sync tries again.
                    if let Err(e) = self.rewrite(sh, &mut st, &loaded, None, now).await {
                        tracing::debug!(error = %e, "expired revocations not removed from Redis yet");
                    }
                }
                Ok(())
            }
            Some(_) => {
                let now_i = std::time::Instant::now();
                if st.next_rewrite.is_some_and(|t| now_i < t) {
                    return Ok(());
                }
                st.backoff = shared::next_backoff(st.backoff);
                st.next_rewrite = Some(now_i + st.backoff);
                if !self.rewrite(sh, &mut st, &loaded, None, now).await? {
                    // Another writer came first: judge its list at once.
                    sh.wake.notify_one();
                }
                Ok(())
            }
        }
    }

    /// Judge a load; count, log and flag a divergence (once per episode) and entries or
    /// heads that fail authentication.
    fn judge(
        &self,
        sh: &Shared,
        st: &SyncState,
        loaded: &shared::Loaded,
        now: i64,
    ) -> Option<shared::Divergence> {
        let head_invalid = loaded.head == shared::HeadState::Invalid;
        if loaded.rejected > 0 || head_invalid {
            if loaded.rejected > 0 {
                metrics::revocations_integrity_failures("entry", loaded.rejected);
            }
            if head_invalid {
                metrics::revocations_integrity_failures("head", 1);
            }
            sh.loud.error(|n| {
                tracing::warn!(
                    rejected_entries = loaded.rejected,
                    head_invalid,
                    authenticated = sh.integrity.authenticated(),
                    loads_since_last_line = n,
                    "revocation data in Redis that is not mcpgate's (or not under this \
                     replica's state.redis.hmac_key_file) is ignored"
                )
            });
        }
        // An entry about to expire may already have been cleaned up by a replica whose
        // clock runs a little ahead: not a divergence.
        let d = shared::judge(loaded, &st.confirmed, &self.local(now + EXPIRY_GRACE))?;
        if !sh.diverged.swap(true, Ordering::AcqRel) {
            metrics::revocations_divergence(d.as_str());
            metrics::revocations_diverged(true);
            tracing::warn!(
                reason = d.as_str(),
                confirmed_epoch = st.confirmed.epoch.as_deref(),
                confirmed_version = st.confirmed.version,
                local = self.current.load().len(),
                in_redis = loaded.entries.len(),
                "the revocation list in Redis diverges from this replica's copy: writing \
                 back the union of both"
            );
        }
        Some(d)
    }

    /// Take a consistent load as the list.
    fn adopt(&self, sh: &Shared, st: &mut SyncState, loaded: &shared::Loaded, now: i64) {
        let mut entries: Vec<Revocation> = loaded.entries.values().cloned().collect();
        entries.sort_by(|a, b| (a.revoked_at, &a.id).cmp(&(b.revoked_at, &b.id)));
        self.swap(RevocationSet::build(entries, now));
        let (epoch, version) = match &loaded.head {
            shared::HeadState::Valid(h) => (Some(h.epoch.clone()), h.version),
            _ => (None, 0),
        };
        st.confirmed = shared::Confirmed {
            loaded: true,
            raw: loaded.raw.clone(),
            epoch,
            version,
            fields: loaded.fields.len() as u64,
        };
        st.backoff = Duration::ZERO;
        st.next_rewrite = None;
        self.resolved(sh);
    }

    fn resolved(&self, sh: &Shared) {
        sh.confirmed_ms.store(now_ms(), Ordering::Release);
        if sh.diverged.swap(false, Ordering::AcqRel) {
            metrics::revocations_diverged(false);
            tracing::info!("the revocation list in Redis and this replica's copy agree again");
        }
    }

    /// Write back the union of Redis's authentic entries, this replica's and `extra`,
    /// without the expired ones, under a new head (compare-and-set against the head
    /// `loaded` read). `Ok(false)`: another write came first.
    async fn rewrite(
        &self,
        sh: &Shared,
        st: &mut SyncState,
        loaded: &shared::Loaded,
        extra: Option<&Revocation>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let local = self.local(now);
        let mut merged: HashMap<&str, &Revocation> = loaded
            .entries
            .values()
            .filter(|r| r.expires_at > now)
            .map(|r| (r.id.as_str(), r))
            .collect();
        for r in local.iter().chain(extra) {
            merged.entry(r.id.as_str()).or_insert(r);
        }
        let put: Vec<&Revocation> = merged
            .values()
            .filter(|r| !loaded.entries.contains_key(&r.id))
            .copied()
            .collect();
        let delete: Vec<String> = loaded
            .entries
            .values()
            .filter(|r| r.expires_at <= now)
            .map(|r| r.id.clone())
            .collect();
        let (epoch, version) = match &loaded.head {
            shared::HeadState::Valid(h) => (h.epoch.clone(), h.version.max(st.confirmed.version)),
            // A new list (or one re-created after Redis lost it): a new, random epoch.
            _ => (
                random_id().ok_or_else(|| {
                    StoreError::Redis("the system's random source failed: no new epoch".into())
                })?,
                st.confirmed.version,
            ),
        };
        let list: Vec<&Revocation> = merged.values().copied().collect();
        let head = sh.integrity.head(epoch, version + 1, &list);
        let Some(raw) = shared::write(
            &sh.store,
            &sh.keys,
            &sh.integrity,
            loaded.raw.as_deref(),
            &head,
            &put,
            &delete,
        )
        .await?
        else {
            return Ok(false);
        };
        let mut fields = loaded.fields.clone();
        fields.extend(put.iter().map(|r| r.id.clone()));
        for d in &delete {
            fields.remove(d);
        }
        let mut entries: Vec<Revocation> = list.into_iter().cloned().collect();
        entries.sort_by(|a, b| (a.revoked_at, &a.id).cmp(&(b.revoked_at, &b.id)));
        st.confirmed = shared::Confirmed {
            loaded: true,
            raw: Some(raw),
            epoch: Some(head.epoch),
            version: head.version,
            fields: fields.len() as u64,
        };
        self.swap(RevocationSet::build(entries, now));
        self.resolved(sh);
        Ok(true)
    }

    /// Start the background sync (poll and pub/sub) on the store's runtime.
    pub fn start(self: &Arc<Self>) {
        let Some(sh) = &self.shared else {
            return;
        };
        let me = self.clone();
        sh.store.spawn(async move {
            let mut failing = false;
            loop {
                match me.sync(false).await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("revocation list confirmed against Redis again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot confirm the revocation list against Redis");
                    }
                    Err(_) => {}
                }
                let Some(sh) = &me.shared else { return };
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = sh.wake.notified() => {}
                }
            }
        });
        let me = self.clone();
        sh.store.spawn(async move { me.subscribe().await });
    }

    /// Listen to the pub/sub channel and wake the sync loop on every message; reconnect
    /// with a growing pause (the poll keeps the list current meanwhile).
    async fn subscribe(&self) {
        use futures_util::StreamExt as _;
        let Some(sh) = &self.shared else { return };
        let mut pause = RESUBSCRIBE_MIN;
        loop {
            let connect = async {
                let mut ps = sh.store.client().get_async_pubsub().await?;
                ps.subscribe(&sh.keys.channel).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(sh.store.settings.connect_timeout, connect).await {
                Ok(Ok(ps)) => {
                    pause = RESUBSCRIBE_MIN;
                    // Anything published before we subscribed is picked up by this sync.
                    sh.wake.notify_one();
                    let mut messages = ps.into_on_message();
                    while messages.next().await.is_some() {
                        // A message announces a write: load the whole list (a write that
                        // keeps the head and the hash length is seen there too).
                        sh.full_load.store(true, Ordering::Release);
                        sh.wake.notify_one();
                    }
                    tracing::debug!("revocation channel closed; resubscribing");
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot subscribe to the revocation channel")
                }
                Err(_) => tracing::debug!("subscribing to the revocation channel timed out"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RESUBSCRIBE_MAX);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The admin API: `POST /revocations` bodies.
// ---------------------------------------------------------------------------------------------

/// The body of `POST /revocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub jti: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    /// Seconds from now (default one day, at most 366 days).
    pub expires_in: Option<u64>,
    pub reason: Option<String>,
}

/// A random revocation id; `None` if the system's random source failed (never a
/// predictable id).
fn random_id() -> Option<String> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Judge a `POST /revocations` body.
pub fn parse_request(body: &[u8], now: i64) -> Result<Revocation, AdminRefusal> {
    let r = check_request(body, now).map_err(AdminRefusal::InvalidRevocation)?;
    let id = random_id().ok_or(AdminRefusal::Internal)?;
    Ok(Revocation { id, ..r })
}

/// The revocation a body asks for (its `id` still empty).
fn check_request(body: &[u8], now: i64) -> Result<Revocation, String> {
    let req: RevokeRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a valid revocation: {e}"))?;
    let named: Vec<(Kind, String)> = [
        (Kind::Jti, req.jti),
        (Kind::Subject, req.subject),
        (Kind::ClientId, req.client_id),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let [(kind, value)] = <[(Kind, String); 1]>::try_from(named)
        .map_err(|_| "name exactly one of jti, subject, client_id".to_string())?;
    if value.is_empty() || value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "{} must be 1 to {MAX_VALUE_BYTES} bytes",
            kind.as_str()
        ));
    }
    if req
        .issuer
        .as_ref()
        .is_some_and(|i| i.is_empty() || i.len() > 2048)
    {
        return Err("issuer must be 1 to 2048 bytes".into());
    }
    if req.reason.as_ref().is_some_and(|r| r.len() > 256) {
        return Err("reason must be at most 256 bytes".into());
    }
    let expires_in = req.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(format!("expires_in must be 1 to {MAX_EXPIRES_IN} seconds"));
    }
    Ok(Revocation {
        id: String::new(),
        kind,
        value,
        issuer: req.issuer,
        revoked_at: now,
        expires_at: now + expires_in as i64,
        reason: req.reason,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn principal(jti: Option<&str>, sub: &str, client: &str, iat: Option<i64>) -> Principal {
        Principal {
            method: AuthMethod::Jwt,
            iss: Arc::from("https://as"),
            issuer_name: Arc::from("as"),
            subject: Some(sub.into()),
            client_id: Some(client.into()),
            scopes: crate::scope::ScopeSet::parse(""),
            audiences: Arc::new([]),
            any_audience: false,
            exp: NOW + 300,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: jti.map(Box::from),
            iat,
            azp: None,
        }
    }

    fn rev(kind: Kind, value: &str, issuer: Option<&str>, at: i64, expires: i64) -> Revocation {
        Revocation {
            id: random_id().unwrap(),
            kind,
            value: value.into(),
            issuer: issuer.map(String::from),
            revoked_at: at,
            expires_at: expires,
            reason: None,
        }
    }

    #[test]
    fn by_jti_refuses_that_token_only() {
        let set = RevocationSet::build(vec![rev(Kind::Jti, "t1", None, NOW, NOW + 60)], NOW);
        let p = principal(Some("t1"), "alice", "app", Some(NOW + 10));
        assert_eq!(set.check(&p, NOW), Some(Kind::Jti), "jti ignores iat");
        assert_eq!(
            set.check(&principal(Some("t2"), "alice", "app", None), NOW),
            None
        );
        assert_eq!(set.check(&principal(None, "alice", "app", None), NOW), None);
        assert_eq!(set.check(&p, NOW + 60), None, "expired revocation");
    }

    #[test]
    fn by_subject_and_client_refuse_tokens_issued_at_or_before() {
        let set = RevocationSet::build(
            vec![
                rev(Kind::Subject, "alice", None, NOW, NOW + 60),
                rev(Kind::ClientId, "app", Some("https://other"), NOW, NOW + 60),
            ],
            NOW,
        );
        let old = principal(None, "alice", "x", Some(NOW - 100));
        assert_eq!(set.check(&old, NOW), Some(Kind::Subject));
        let same_second = principal(None, "alice", "x", Some(NOW));
        assert_eq!(set.check(&same_second, NOW), Some(Kind::Subject));
        let no_iat = principal(None, "alice", "x", None);
        assert_eq!(
            set.check(&no_iat, NOW),
            Some(Kind::Subject),
            "no iat: revoked"
        );
        let newer = principal(None, "alice", "x", Some(NOW + 1));
        assert_eq!(set.check(&newer, NOW + 1), None, "issued after: fine");
        let client = principal(None, "bob", "app", Some(NOW - 1));
        assert_eq!(set.check(&client, NOW), None, "issuer-scoped: other issuer");
        let mut client2 = principal(None, "bob", "app", Some(NOW - 1));
        client2.iss = Arc::from("https://other");
        assert_eq!(set.check(&client2, NOW), Some(Kind::ClientId));
        let mut key = principal(None, "alice", "x", None);
        key.method = AuthMethod::ApiKey;
        assert_eq!(set.check(&key, NOW), None, "API keys are not revoked here");
    }

    #[test]
    fn by_subject_and_client_cover_the_future_skew_and_azp() {
        let set = RevocationSet::build(
            vec![
                rev(Kind::Subject, "alice", None, NOW, NOW + 600),
                rev(Kind::ClientId, "app", None, NOW, NOW + 600),
            ],
            NOW,
        );
        let mut ahead = principal(None, "alice", "x", Some(NOW + 30));
        ahead.skew = 60;
        assert_eq!(
            set.check(&ahead, NOW),
            Some(Kind::Subject),
            "issued up to the skew after the revocation"
        );
        ahead.iat = Some(NOW + 60);
        assert_eq!(set.check(&ahead, NOW), Some(Kind::Subject), "the edge");
        ahead.iat = Some(NOW + 61);
        assert_eq!(
            set.check(&ahead, NOW + 61),
            None,
            "past the skew: new token"
        );
        let mut no_skew = principal(None, "alice", "x", Some(NOW + 1));
        no_skew.skew = 0;
        assert_eq!(set.check(&no_skew, NOW + 1), None);

        let mut by_azp = principal(None, "bob", "other-client", Some(NOW - 1));
        by_azp.azp = Some(Arc::from("app"));
        assert_eq!(
            set.check(&by_azp, NOW),
            Some(Kind::ClientId),
            "azp is the client"
        );
        by_azp.azp = Some(Arc::from("not-app"));
        assert_eq!(set.check(&by_azp, NOW), None);
    }

    #[test]
    fn build_drops_expired() {
        let set = RevocationSet::build(
            vec![
                rev(Kind::Jti, "a", None, NOW - 10, NOW),
                rev(Kind::Jti, "b", None, NOW - 10, NOW + 1),
            ],
            NOW,
        );
        assert_eq!(set.len(), 1);
        assert_eq!(set.entries()[0].value, "b");
    }

    #[test]
    fn requests_are_judged() {
        let r = parse_request(
            br#"{"subject":"alice","expires_in":3600,"reason":"lost laptop"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!((r.kind, r.value.as_str()), (Kind::Subject, "alice"));
        assert_eq!((r.revoked_at, r.expires_at), (NOW, NOW + 3600));
        let d = parse_request(br#"{"jti":"x"}"#, NOW).unwrap();
        assert_eq!(d.expires_at, NOW + DEFAULT_EXPIRES_IN as i64);
        for bad in [
            &br#"{}"#[..],
            br#"{"jti":"a","subject":"b"}"#,
            br#"{"jti":""}"#,
            br#"{"jti":"a","expires_in":0}"#,
            br#"{"jti":"a","bogus":1}"#,
            br#"not json"#,
        ] {
            assert!(
                parse_request(bad, NOW).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn local_list_applies_at_once_and_bumps_the_generation() {
        let settings = StateSettings {
            redis: None,
            dpop_replay_fail: FailMode::Closed,
            revocations_fail: FailMode::Open,
            revocations_max_stale: Duration::from_secs(5),
        };
        let r = Revocations::new(&settings, None);
        let now = crate::clock::now_unix();
        let p = principal(Some("t1"), "alice", "app", Some(now - 5));
        assert!(r.check(&p, now).is_ok());
        let g = r.generation();
        let mut changed = r.changes();
        r.add(rev(Kind::Subject, "alice", None, now, now + 60))
            .await
            .unwrap();
        assert!(r.generation() > g);
        // open streams' watchdogs are woken with the new generation
        assert!(changed.has_changed().unwrap());
        assert_eq!(*changed.borrow_and_update(), r.generation());
        assert_eq!(r.check(&p, now), Err(Refusal::Revoked));
        assert_eq!(r.age_seconds(), 0.0);
    }
}
