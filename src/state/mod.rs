//! Gateway state: the config snapshot the request path reads, and how a new config
//! replaces it.
//!
//! A [`Snapshot`] pairs a compiled config with the key store and the introspection
//! client (and cache) of each of its issuers, so one `ArcSwap` load per request gives a
//! consistent view of all three (STYLE rule 3). [`GatewayState::apply`] builds the next
//! snapshot, keeping the warm key stores and introspection caches of issuers whose
//! settings did not change, and swaps it in atomically; requests in flight finish on
//! the snapshot they started with.

pub mod reload;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::{Authenticator, Issuers};
use crate::background::Fetcher;
use crate::config::Config;
use crate::upstream::Resolver;

/// A compiled config and the runtime of its issuer entries (key stores, introspection
/// clients), swapped together.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub issuers: Issuers,
    /// The clients of the routes' authorization servers for upstream credentials.
    pub upstream: crate::upstream_auth::Clients,
}

pub struct GatewayState {
    pub snapshot: ArcSwap<Snapshot>,
    pub auth: Authenticator,
    pub fetcher: Arc<Fetcher>,
    pub resolver: Resolver,
    pub sessions: crate::mcp::sessions::SessionBindings,
    /// What the tool lists that passed said of each tool, per upstream MCP server.
    pub catalog: crate::mcp::catalog::Catalog,
    /// DPoP proof `jti`s already seen (sized and timed by the config at start; shared
    /// through Redis when `state.redis` is set).
    pub replay: Box<dyn crate::auth::dpop::ReplayStore>,
    /// The Redis client (`state.redis`), made at start.
    pub store: Option<Arc<crate::store::Store>>,
    /// The revocation list, checked on every request.
    pub revocations: Arc<crate::auth::revocation::Revocations>,
    /// Rate-limit buckets and stream slots (kept across reloads; shared through Redis when
    /// `state.redis` is set).
    pub limiter: crate::quota::Limiter,
    /// Tokens exchanged for upstreams (`upstream_auth: token_exchange`), sized at start
    /// by `token_cache.max_entries`, swept when the revocation list changes.
    pub upstream_tokens: Arc<crate::upstream_auth::ExchangeCache>,
    /// Requests between `request_filter` and the end of their response.
    in_flight: Arc<AtomicUsize>,
}

/// Counts one request in flight until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayState")
    }
}

impl GatewayState {
    pub fn new(config: Config) -> Result<GatewayState, String> {
        let fetcher = Fetcher::new()?;
        let auth = Authenticator::new(config.token_cache_entries);
        let local = crate::auth::dpop::LocalReplay::new(
            config.dpop.replay_entries,
            std::time::Duration::from_secs(
                (config.dpop.iat_past + config.dpop.iat_future).max(1) as u64
            ),
        );
        let store = config
            .state
            .redis
            .as_ref()
            .map(crate::store::Store::new)
            .transpose()?;
        let replay: Box<dyn crate::auth::dpop::ReplayStore> = match &store {
            Some(store) => Box::new(crate::auth::dpop::SharedReplay {
                local,
                store: store.clone(),
                fail: config.state.dpop_replay_fail,
                loud: Default::default(),
            }),
            None => Box::new(local),
        };
        let revocations = Arc::new(crate::auth::revocation::Revocations::new(
            &config.state,
            store.clone(),
        ));
        revocations.start();
        let limiter = crate::quota::Limiter::new(store.clone());
        let upstream_tokens = crate::upstream_auth::ExchangeCache::new(config.token_cache_entries);
        upstream_tokens.start_eviction(revocations.clone(), &fetcher);
        let snapshot = build_snapshot(Arc::new(config), None, &fetcher);
        Ok(GatewayState {
            snapshot: ArcSwap::from_pointee(snapshot),
            auth,
            fetcher,
            resolver: Resolver::default(),
            sessions: crate::mcp::sessions::SessionBindings::default(),
            catalog: crate::mcp::catalog::Catalog::default(),
            replay,
            store,
            revocations,
            limiter,
            upstream_tokens,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn enter(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.in_flight.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn config(&self) -> Arc<Config> {
        self.snapshot.load().config.clone()
    }

    /// Swap in a new config. Returns notes for the log about what cannot apply live.
    pub fn apply(&self, config: Config) -> Vec<String> {
        let old = self.snapshot.load_full();
        let mut notes = Vec::new();
        if old.config.listeners.address != config.listeners.address {
            notes.push(format!(
                "listen.address changed ({} -> {}): takes effect on restart",
                old.config.listeners.address, config.listeners.address
            ));
        }
        if old.config.listeners.admin_address != config.listeners.admin_address {
            notes.push(format!(
                "admin.address changed ({} -> {}): takes effect on restart",
                old.config.listeners.admin_address, config.listeners.admin_address
            ));
        }
        if old.config.listeners.threads != config.listeners.threads {
            notes.push("listen.threads changed: takes effect on restart".to_string());
        }
        if old.config.listeners.tls.is_some() != config.listeners.tls.is_some() {
            notes.push("listen.tls added or removed: takes effect on restart".to_string());
        }
        if old.config.token_cache_entries != config.token_cache_entries {
            notes.push("token_cache.max_entries changed: takes effect on restart".to_string());
        }
        if old.config.connections.idle_timeout != config.connections.idle_timeout {
            notes.push(
                "limits.idle_timeout_seconds changed: applies to HTTP/1.1 connections accepted \
                 from now on, to HTTP/2 on restart"
                    .to_string(),
            );
        }
        if old.config.state != config.state {
            notes.push(
                "state (Redis settings, fail policies) changed: takes effect on restart"
                    .to_string(),
            );
        }
        // Cached verdicts need no clearing: each is keyed by the fingerprint of the issuer
        // entry that made it, so an entry whose settings changed (or that is gone) finds
        // none of its old verdicts, on the next request.
        let next = build_snapshot(Arc::new(config), Some(&old), &self.fetcher);
        self.snapshot.store(Arc::new(next));
        notes
    }

    /// Why `/readyz` should fail because of Redis: configured with `readyz: true` and
    /// not answering (never answered, or the circuit breaker is open).
    pub fn redis_unready(&self) -> bool {
        match &self.store {
            Some(s) => s.settings.readyz && !s.breaker.healthy(),
            None => false,
        }
    }

    /// Why `/readyz` should fail because of the revocation list: configured with
    /// `state.redis.readyz: true` and Redis's list diverges from this replica's copy
    /// without having been reconciled yet.
    pub fn revocations_unready(&self) -> bool {
        match &self.store {
            Some(s) => s.settings.readyz && self.revocations.diverged(),
            None => false,
        }
    }

    /// Names of issuers used by a route that have no usable keys.
    pub fn unready_issuers(&self) -> Vec<String> {
        let snap = self.snapshot.load();
        snap.issuers.unready(&snap.config.issuers_in_use())
    }
}

fn build_snapshot(config: Arc<Config>, old: Option<&Snapshot>, fetcher: &Arc<Fetcher>) -> Snapshot {
    let issuers = Issuers::build(
        &config.issuers,
        &config.issuers_in_use(),
        config.token_cache_entries,
        old.map(|o| &o.issuers),
        fetcher,
    );
    let upstream = crate::upstream_auth::Clients::build(
        config.routes.iter().map(|r| &r.upstream_auth),
        old.map(|o| &o.upstream),
        fetcher,
    );
    Snapshot {
        config,
        issuers,
        upstream,
    }
}
