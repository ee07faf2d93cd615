//! Prometheus metrics: names, help texts and the registry the admin listener serves.
//!
//! Label sets are bounded: route and issuer names from the config and fixed reason
//! enums, never subjects or tokens.

use std::sync::LazyLock;

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

struct Metrics {
    registry: Registry,
    requests: Option<IntCounterVec>,
    jwks_fetches: Option<IntCounterVec>,
    jwks_keys: Option<IntGaugeVec>,
    token_cache: Option<IntCounterVec>,
    reloads: Option<IntCounterVec>,
    reload_ok: Option<IntGaugeVec>,
    reload_time: Option<IntGaugeVec>,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
    r.register(Box::new(c.clone())).ok()?;
    Some(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).ok()?;
    r.register(Box::new(g.clone())).ok()?;
    Some(g)
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let build = gauge(
        &registry,
        "mcpgate_build_info",
        "Build information; the value is always 1.",
        &["version"],
    );
    if let Some(b) = &build {
        b.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    }
    Metrics {
        requests: counter(
            &registry,
            "mcpgate_requests_total",
            "Requests by route, decision (allow, deny, metadata) and reason.",
            &["route", "decision", "reason"],
        ),
        jwks_fetches: counter(
            &registry,
            "mcpgate_jwks_refreshes_total",
            "JWKS fetches by issuer and result.",
            &["issuer", "result"],
        ),
        jwks_keys: gauge(
            &registry,
            "mcpgate_jwks_keys",
            "Usable verification keys per issuer (one per key and algorithm).",
            &["issuer"],
        ),
        token_cache: counter(
            &registry,
            "mcpgate_cache_requests_total",
            "Verified-token cache lookups by result.",
            &["cache", "result"],
        ),
        reloads: counter(
            &registry,
            "mcpgate_config_reloads_total",
            "Configuration reloads by result (success, error).",
            &["result"],
        ),
        reload_ok: gauge(
            &registry,
            "mcpgate_config_last_reload_successful",
            "1 if the last configuration reload succeeded, 0 if the file was rejected.",
            &[],
        ),
        reload_time: gauge(
            &registry,
            "mcpgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            &[],
        ),
        registry,
    }
});

/// Record a reload attempt.
pub fn config_reload(ok: bool) {
    if let Some(c) = &METRICS.reloads {
        c.with_label_values(&[if ok { "success" } else { "error" }])
            .inc();
    }
    config_state(ok);
}

/// Record whether the configuration on disk is the one serving.
pub fn config_state(ok: bool) {
    let m = &*METRICS;
    if let Some(g) = &m.reload_ok {
        g.with_label_values(&[] as &[&str]).set(ok as i64);
    }
    if ok {
        if let Some(g) = &m.reload_time {
            g.with_label_values(&[] as &[&str])
                .set(crate::jwks::now_unix());
        }
    }
}

pub fn request(route: &str, decision: &str, reason: &str) {
    if let Some(c) = &METRICS.requests {
        c.with_label_values(&[route, decision, reason]).inc();
    }
}

pub fn jwks_fetch(issuer: &str, ok: bool, keys: usize) {
    if let Some(c) = &METRICS.jwks_fetches {
        c.with_label_values(&[issuer, if ok { "success" } else { "error" }])
            .inc();
    }
    if ok {
        if let Some(g) = &METRICS.jwks_keys {
            g.with_label_values(&[issuer]).set(keys as i64);
        }
    }
}

pub fn token_cache(hit: bool) {
    if let Some(c) = &METRICS.token_cache {
        c.with_label_values(&["token", if hit { "hit" } else { "miss" }])
            .inc();
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut buf);
    buf
}
