//! Prometheus metrics: names, help texts and the registry the admin listener serves.
//!
//! Label sets are bounded: route and issuer names from the config and fixed reason
//! enums, never subjects or tokens.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::error::Reason;
use crate::observe::{STATUS_CLASSES, UPSTREAM_ERROR_KINDS};

struct Metrics {
    registry: Registry,
    requests: Option<IntCounterVec>,
    jwks_fetches: Option<IntCounterVec>,
    jwks_keys: Option<IntGaugeVec>,
    token_hit: Option<IntCounter>,
    token_miss: Option<IntCounter>,
    introspection_hit: Option<IntCounter>,
    introspection_miss: Option<IntCounter>,
    upstream_token_hit: Option<IntCounter>,
    upstream_token_miss: Option<IntCounter>,
    introspections: Option<IntCounterVec>,
    introspection_seconds: Option<HistogramVec>,
    reloads: Option<IntCounterVec>,
    reload_ok: Option<IntGaugeVec>,
    reload_time: Option<IntGaugeVec>,
    decision_seconds: Option<HistogramVec>,
    upstream_seconds: Option<HistogramVec>,
    jwks_age: Option<IntGaugeVec>,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Option<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
    r.register(Box::new(c.clone())).ok()?;
    Some(c)
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Option<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["route"]).ok()?;
    r.register(Box::new(h.clone())).ok()?;
    Some(h)
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
    let cache_counter = counter(
        &registry,
        "mcpgate_cache_requests_total",
        "Cache lookups by cache and result (hit, miss).",
        &["cache", "result"],
    );
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
        token_hit: cache_counter
            .as_ref()
            .map(|c| c.with_label_values(&["token", "hit"])),
        token_miss: cache_counter
            .as_ref()
            .map(|c| c.with_label_values(&["token", "miss"])),
        introspection_hit: cache_counter
            .as_ref()
            .map(|c| c.with_label_values(&["introspection", "hit"])),
        introspection_miss: cache_counter
            .as_ref()
            .map(|c| c.with_label_values(&["introspection", "miss"])),
        upstream_token_hit: cache_counter
            .as_ref()
            .map(|c| c.with_label_values(&["upstream_token", "hit"])),
        upstream_token_miss: cache_counter
            .as_ref()
            .map(|c| c.with_label_values(&["upstream_token", "miss"])),
        introspections: counter(
            &registry,
            "mcpgate_introspection_requests_total",
            "RFC 7662 introspection calls by issuer and result \
             (active, inactive, timeout, unauthorized, error; rate_limited and circuit_open: \
             not made).",
            &["issuer", "result"],
        ),
        introspection_seconds: HistogramVec::new(
            HistogramOpts::new(
                "mcpgate_introspection_seconds",
                "Duration of RFC 7662 introspection calls, by issuer.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["issuer"],
        )
        .ok()
        .and_then(|h| registry.register(Box::new(h.clone())).ok().map(|()| h)),
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
        decision_seconds: histogram(
            &registry,
            "mcpgate_auth_decision_seconds",
            "Time to decide a request (routing, token validation, policy), by route.",
            vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025,
                0.1, 0.5, 2.5,
            ],
        ),
        upstream_seconds: histogram(
            &registry,
            "mcpgate_upstream_seconds",
            "Time from the decision to the end of the upstream response, by route; answers \
             that are not open-ended streams (those are in mcpgate_upstream_stream_seconds).",
            vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
            ],
        ),
        jwks_age: gauge(
            &registry,
            "mcpgate_jwks_age_seconds",
            "Seconds since the last successful JWKS fetch, per issuer.",
            &["issuer"],
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
                .set(crate::clock::now_unix());
        }
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
    let c = if hit {
        &METRICS.token_hit
    } else {
        &METRICS.token_miss
    };
    if let Some(c) = c {
        c.inc();
    }
}

/// An introspection cache lookup (waiting for a call already in flight counts as a hit).
pub fn introspection_cache(hit: bool) {
    let c = if hit {
        &METRICS.introspection_hit
    } else {
        &METRICS.introspection_miss
    };
    if let Some(c) = c {
        c.inc();
    }
}

/// Every `result` of `mcpgate_introspection_requests_total`.
pub const INTROSPECTION_RESULTS: [&str; 7] = [
    "active",
    "inactive",
    "timeout",
    "unauthorized",
    "error",
    "rate_limited",
    "circuit_open",
];

/// Expose an introspecting issuer's series (at zero) from the start.
pub fn introspection_series(issuer: &str) {
    if let Some(c) = &METRICS.introspections {
        for r in INTROSPECTION_RESULTS {
            c.with_label_values(&[issuer, r]);
        }
    }
    if let Some(h) = &METRICS.introspection_seconds {
        h.with_label_values(&[issuer]);
    }
}

/// One introspection call: its result label and duration.
pub fn introspection_call(issuer: &str, result: &str, seconds: f64) {
    if let Some(c) = &METRICS.introspections {
        c.with_label_values(&[issuer, result]).inc();
    }
    if let Some(h) = &METRICS.introspection_seconds {
        h.with_label_values(&[issuer]).observe(seconds);
    }
}

/// An introspection call not made (`rate_limited`, `circuit_open`): counted with the
/// calls, without a duration.
pub fn introspection_refused(issuer: &str, result: &str) {
    if let Some(c) = &METRICS.introspections {
        c.with_label_values(&[issuer, result]).inc();
    }
}

/// An exchanged-token cache lookup (waiting for an exchange already in flight counts as a
/// hit).
pub fn upstream_token_cache(hit: bool) {
    let c = if hit {
        &METRICS.upstream_token_hit
    } else {
        &METRICS.upstream_token_miss
    };
    if let Some(c) = c {
        c.inc();
    }
}

static UPSTREAM_TOKEN_REQUESTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_upstream_token_requests_total",
        "Token endpoint calls for upstream credentials, by route, grant (token_exchange, \
         client_credentials) and result (issued, refused, client_refused, invalid_response, \
         timeout, error; circuit_open: not made).",
        &["route", "grant", "result"],
    )
});

static UPSTREAM_TOKEN_SECONDS: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "mcpgate_upstream_token_request_seconds",
            "Duration of token endpoint calls for upstream credentials, by route and grant.",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["route", "grant"],
    )
    .ok()?;
    METRICS.registry.register(Box::new(h.clone())).ok()?;
    Some(h)
});

static UPSTREAM_TOKEN_RENEWALS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_upstream_token_renewals_total",
        "Client-credentials tokens renewed in the background ahead of their expiry, by route.",
        &["route"],
    )
});

/// A token endpoint call for an upstream credential (`seconds`: none when not made).
pub fn upstream_token_request(route: &str, grant: &str, result: &str, seconds: Option<f64>) {
    if let Some(c) = &*UPSTREAM_TOKEN_REQUESTS {
        c.with_label_values(&[route, grant, result]).inc();
    }
    if let (Some(h), Some(s)) = (&*UPSTREAM_TOKEN_SECONDS, seconds) {
        h.with_label_values(&[route, grant]).observe(s);
    }
}

/// A client-credentials token renewed ahead of its expiry.
pub fn upstream_token_renewal(route: &str) {
    if let Some(c) = &*UPSTREAM_TOKEN_RENEWALS {
        c.with_label_values(&[route]).inc();
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> Vec<u8> {
    crate::procstat::update();
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&METRICS.registry.gather(), &mut buf) {
        tracing::error!(error = %e, "metrics could not be encoded");
    }
    buf
}

/// Metric handles of one route, resolved when the config is compiled so the request
/// path never looks up a label set.
#[derive(Debug)]
pub struct RouteMetrics {
    name: Box<str>,
    /// `decision="allow"` by how the forwarded request ended: `ok`, then
    /// [`FORWARD_FAILURES`] (the upstream failed, the gateway answered).
    allow: [Option<IntCounter>; 1 + FORWARD_FAILURES.len()],
    /// One counter per [`Reason`], indexed by it: every reason has its series from the
    /// start, and a denial cannot miss its counter.
    deny: [Option<IntCounter>; Reason::COUNT],
    decision: Option<Histogram>,
    upstream: Option<Histogram>,
    ttfb: Option<Histogram>,
    stream: Option<Histogram>,
    /// `mcpgate_responses_total` by source (upstream, gateway) and status class.
    responses: [[Option<IntCounter>; STATUS_CLASSES.len()]; 2],
    upstream_errors: [Option<IntCounter>; UPSTREAM_ERROR_KINDS.len()],
}

/// How a forwarded request can end other than `ok` (`fail_to_proxy`'s answers).
pub const FORWARD_FAILURES: [Reason; 5] = [
    Reason::UpstreamError,
    Reason::UpstreamTimeout,
    Reason::InternalError,
    Reason::BodyTooLarge,
    Reason::BadRequest,
];

/// Who wrote a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Upstream = 0,
    Gateway = 1,
}

impl RouteMetrics {
    pub fn new(route: &str, answer_reasons: &[&str]) -> RouteMetrics {
        let m = &*METRICS;
        LazyLock::force(&STREAMS_EXPIRED);
        LazyLock::force(&ANSWERS_REFUSED);
        LazyLock::force(&PARAMS_UNCHECKED);
        LazyLock::force(&TOOL_CHANGES);
        let counter = |decision: &str, reason: &str| {
            m.requests
                .as_ref()
                .map(|c| c.with_label_values(&[route, decision, reason]))
        };
        let per_route =
            |h: &Option<HistogramVec>| h.as_ref().map(|h| h.with_label_values(&[route]));
        let r = &*ROUTE_SERIES;
        if let Some(c) = &*STREAMS_EXPIRED {
            c.with_label_values(&[route]);
        }
        if let Some(c) = &*STREAMS_REVOKED {
            c.with_label_values(&[route]);
        }
        if let Some(c) = &*ANSWERS_REFUSED {
            for why in answer_reasons {
                c.with_label_values(&[route, why]);
            }
        }
        RouteMetrics {
            name: route.into(),
            allow: std::array::from_fn(|i| match i {
                0 => counter("allow", "ok"),
                _ => counter("allow", FORWARD_FAILURES[i - 1].as_str()),
            }),
            deny: std::array::from_fn(|i| counter("deny", Reason::ALL[i].as_str())),
            decision: per_route(&m.decision_seconds),
            upstream: per_route(&m.upstream_seconds),
            ttfb: per_route(&r.ttfb),
            stream: per_route(&r.stream),
            responses: std::array::from_fn(|src| {
                std::array::from_fn(|class| {
                    r.responses.as_ref().map(|c| {
                        c.with_label_values(&[
                            route,
                            ["upstream", "gateway"][src],
                            STATUS_CLASSES[class],
                        ])
                    })
                })
            }),
            upstream_errors: std::array::from_fn(|k| {
                r.upstream_errors
                    .as_ref()
                    .map(|c| c.with_label_values(&[route, UPSTREAM_ERROR_KINDS[k]]))
            }),
        }
    }

    /// A request decided to be forwarded (counted in `mcpgate_requests_total` when it
    /// ends, with [`RouteMetrics::forwarded`]).
    pub fn allow(&self, decision_seconds: f64) {
        if let Some(h) = &self.decision {
            h.observe(decision_seconds);
        }
    }

    /// How a forwarded request ended: `None` when the upstream answered, else the reason of
    /// the gateway's own answer (`upstream_error`, `upstream_timeout`...).
    pub fn forwarded(&self, failure: Option<Reason>) {
        let i = match failure {
            None => Some(0),
            Some(r) => FORWARD_FAILURES.iter().position(|f| *f == r).map(|i| i + 1),
        };
        match i.and_then(|i| self.allow[i].as_ref()) {
            Some(c) => c.inc(),
            // A failure outside the table (none today): counted all the same.
            None => {
                if let (Some(c), Some(r)) = (&METRICS.requests, failure) {
                    c.with_label_values(&[self.name(), "allow", r.as_str()])
                        .inc();
                }
            }
        }
    }

    /// A response went out: its status (0 when none was written) and who wrote it.
    pub fn response(&self, source: Source, status: u16) {
        if let Some(c) = crate::observe::status_class(status)
            .and_then(|class| self.responses[source as usize][class].as_ref())
        {
            c.inc();
        }
    }

    /// The upstream failed: connect or read error of kind `kind` ([`UPSTREAM_ERROR_KINDS`]).
    pub fn upstream_error(&self, kind: usize) {
        if let Some(c) = self.upstream_errors.get(kind).and_then(|c| c.as_ref()) {
            c.inc();
        }
    }

    /// Time from the decision to the upstream's response header.
    pub fn ttfb(&self, seconds: f64) {
        if let Some(h) = &self.ttfb {
            h.observe(seconds);
        }
    }

    /// Time from the decision to the end of an open-ended (streamed) response.
    pub fn stream(&self, seconds: f64) {
        if let Some(h) = &self.stream {
            h.observe(seconds);
        }
    }

    pub fn deny(&self, reason: Reason, decision_seconds: f64) {
        if let Some(c) = &self.deny[reason as usize] {
            c.inc();
        }
        if let Some(h) = &self.decision {
            h.observe(decision_seconds);
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    pub fn upstream(&self, seconds: f64) {
        if let Some(h) = &self.upstream {
            h.observe(seconds);
        }
    }
}

/// Per-route families beyond requests and decision time.
struct RouteSeries {
    ttfb: Option<HistogramVec>,
    stream: Option<HistogramVec>,
    responses: Option<IntCounterVec>,
    upstream_errors: Option<IntCounterVec>,
}

static ROUTE_SERIES: LazyLock<RouteSeries> = LazyLock::new(|| {
    let r = &METRICS.registry;
    RouteSeries {
        ttfb: histogram(
            r,
            "mcpgate_upstream_ttfb_seconds",
            "Time from the decision to the upstream's response header (time to first byte), \
             by route.",
            vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
            ],
        ),
        stream: histogram(
            r,
            "mcpgate_upstream_stream_seconds",
            "Time from the decision to the end of an open-ended upstream response (an SSE \
             stream, a response without a length), by route.",
            vec![
                1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14_400.0, 86_400.0,
            ],
        ),
        responses: counter(
            r,
            "mcpgate_responses_total",
            "Responses by route, source (upstream: the MCP server's answer; gateway: the \
             gateway's own) and status class (1xx to 5xx).",
            &["route", "source", "class"],
        ),
        upstream_errors: counter(
            r,
            "mcpgate_upstream_errors_total",
            "Upstream connect and read failures by route and kind (refused, timeout, reset, \
             tls, protocol, other).",
            &["route", "kind"],
        ),
    }
});

/// Requests being handled (public listener), and open-ended responses being streamed.
static IN_FLIGHT: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_requests_in_flight",
        "Requests on the public listener being handled now.",
        &[],
    )
});

static STREAMS_OPEN: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_streams_open",
        "Open-ended upstream responses (SSE streams) being relayed now.",
        &[],
    )
});

/// One unit of a gauge, given back when dropped.
#[derive(Debug)]
pub struct Held(Option<prometheus::IntGauge>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

fn hold(g: &Option<IntGaugeVec>) -> Held {
    let g = g.as_ref().map(|g| g.with_label_values(&[] as &[&str]));
    if let Some(g) = &g {
        g.inc();
    }
    Held(g)
}

/// A request in flight until the handle is dropped.
pub fn request_in_flight() -> Held {
    hold(&IN_FLIGHT)
}

/// A stream open until the handle is dropped.
pub fn stream_open() -> Held {
    hold(&STREAMS_OPEN)
}

/// Register every family that has no per-route or per-issuer label, so that each is
/// exposed (at zero) from the start; with the process metrics.
pub fn register_global_metrics() {
    let m = &*METRICS;
    LazyLock::force(&ROUTE_SERIES);
    for g in [&*IN_FLIGHT, &*STREAMS_OPEN].into_iter().flatten() {
        g.with_label_values(&[] as &[&str]);
    }
    if let Some(c) = &m.reloads {
        for r in ["success", "error"] {
            c.with_label_values(&[r]);
        }
    }
    crate::procstat::register(&m.registry);
}

/// Handles for requests that matched no route (label `route=""`).
pub static UNROUTED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new("", &[]));

static STREAMS_EXPIRED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_streams_closed_token_expired_total",
        "Response streams closed because the token that opened them expired.",
        &["route"],
    )
});

static ANSWERS_REFUSED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_upstream_answers_refused_total",
        "Upstream answers on filter_tools_list routes replaced by a JSON-RPC error because the \
         gateway could not read them, by route and reason.",
        &["route", "reason"],
    )
});

static PARAMS_UNCHECKED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_mcp_param_unchecked_total",
        "tools/call requests whose Mcp-Param-* headers were forwarded unchecked because no \
         tools/list answer that passed gave the tool's schema (or gave an invalid one), by route.",
        &["route"],
    )
});

static SESSIONS_UNKNOWN: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_sessions_unknown_total",
        "Requests presenting an Mcp-Session-Id this process holds no binding for (after a \
         restart, on another replica), forwarded to the upstream (unknown_sessions: forward).",
        &["route"],
    )
});

static TOOL_CHANGES: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_tool_definition_changes_total",
        "Tool definitions that differ from their pin (pin_tools), seen in a tools/list answer \
         or called, by route and mode (enforce: hidden and refused; report: let through).",
        &["route", "mode"],
    )
});

/// A `tools/call` whose `Mcp-Param-*` headers were forwarded unchecked (schema unknown).
pub fn mcp_params_unchecked(route: &str) {
    if let Some(c) = &*PARAMS_UNCHECKED {
        c.with_label_values(&[route]).inc();
    }
}

/// An `Mcp-Session-Id` with no binding here was forwarded (`unknown_sessions: forward`).
pub fn session_unknown_forwarded(route: &str) {
    if let Some(c) = &*SESSIONS_UNKNOWN {
        c.with_label_values(&[route]).inc();
    }
}

/// A tool definition that differs from its pin.
pub fn tool_definition_changed(route: &str, mode: &str) {
    if let Some(c) = &*TOOL_CHANGES {
        c.with_label_values(&[route, mode]).inc();
    }
}

/// An upstream answer the gateway could not read and replaced (`lists`).
pub fn answer_refused(route: &str, reason: &str) {
    if let Some(c) = &*ANSWERS_REFUSED {
        c.with_label_values(&[route, reason]).inc();
    }
}

pub fn stream_closed_expired(route: &str) {
    if let Some(c) = &*STREAMS_EXPIRED {
        c.with_label_values(&[route]).inc();
    }
}

/// Update per-issuer key ages just before a scrape.
pub fn jwks_age(issuer: &str, age_seconds: i64) {
    if let Some(g) = &METRICS.jwks_age {
        g.with_label_values(&[issuer]).set(age_seconds);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state (Redis): calls, breaker, fail-open decisions, revocations.
// ---------------------------------------------------------------------------------------------

static REDIS_CALLS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_redis_calls_total",
        "Redis calls by operation and result (ok, error, timeout, circuit_open).",
        &["op", "result"],
    )
});

static REDIS_SECONDS: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "mcpgate_redis_call_seconds",
            "Duration of Redis calls that reached Redis (not those refused by the open circuit), by operation.",
        )
        .buckets(vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
        &["op"],
    )
    .ok()?;
    METRICS.registry.register(Box::new(h.clone())).ok()?;
    Some(h)
});

static REDIS_CIRCUIT: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_redis_circuit_open",
        "1 while the Redis circuit breaker is open (calls fail at once), else 0.",
        &[],
    )
});

static FAIL_OPEN: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_state_fail_open_total",
        "Requests decided without Redis because it could not answer and the feature fails open \
         (feature: dpop_replay, revocations).",
        &["feature"],
    )
});

static REVOCATIONS_APPLIED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_revocations_applied_total",
        "Revocations this replica applied to its cache, by kind (jti, subject, client_id).",
        &["kind"],
    )
});

static REVOCATIONS_ACTIVE: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_revocations_active",
        "Unexpired revocations in this replica's cache.",
        &[],
    )
});

static REVOCATIONS_AGE: LazyLock<Option<prometheus::GaugeVec>> = LazyLock::new(|| {
    let g = prometheus::GaugeVec::new(
        Opts::new(
            "mcpgate_revocations_cache_age_seconds",
            "Seconds since this replica last confirmed its revocation cache against Redis \
             (0 without Redis).",
        ),
        &[],
    )
    .ok()?;
    METRICS.registry.register(Box::new(g.clone())).ok()?;
    Some(g)
});

static STREAMS_REVOKED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_streams_closed_token_revoked_total",
        "Response streams closed because the token that opened them was revoked.",
        &["route"],
    )
});

static REVOCATIONS_DIVERGENCE: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_revocations_divergence_total",
        "Times this replica found Redis's revocation list diverging from its own copy, by \
         reason (epoch: Redis lost or replaced the list; version: it went back; digest: \
         entries deleted, altered or added without a head; unauthenticated: the head does not \
         authenticate; missing: a revocation this replica holds is absent). Each is reconciled \
         by writing back the union.",
        &["reason"],
    )
});

static REVOCATIONS_DIVERGED: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_revocations_diverged",
        "1 while Redis's revocation list diverges from this replica's and is not reconciled yet.",
        &[],
    )
});

static REVOCATIONS_INTEGRITY: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_revocations_integrity_failures_total",
        "Revocation entries (what=entry) and list heads (what=head) in Redis that are not \
         mcpgate's or do not authenticate under state.redis.hmac_key_file; ignored. Counted \
         at each load that sees them.",
        &["what"],
    )
});

/// Register the shared-state metrics so that they are exposed (at zero) from the start.
pub fn register_state_metrics(redis: bool) {
    let touch = |c: &Option<IntCounterVec>, labels: &[&str]| {
        if let Some(c) = c {
            for l in labels {
                c.with_label_values(&[*l]);
            }
        }
    };
    touch(&REVOCATIONS_APPLIED, &["jti", "subject", "client_id"]);
    if let Some(g) = &*REVOCATIONS_ACTIVE {
        g.with_label_values(&[] as &[&str]);
    }
    LazyLock::force(&REVOCATIONS_AGE);
    LazyLock::force(&STREAMS_REVOKED);
    if redis {
        LazyLock::force(&REDIS_CALLS);
        LazyLock::force(&REDIS_SECONDS);
        touch(&FAIL_OPEN, &["dpop_replay", "revocations"]);
        touch(
            &REVOCATIONS_DIVERGENCE,
            &["epoch", "version", "digest", "unauthenticated", "missing"],
        );
        touch(&REVOCATIONS_INTEGRITY, &["entry", "head"]);
        redis_circuit(false);
        revocations_diverged(false);
    }
}

/// Handles of one Redis operation, resolved once.
pub struct RedisOp {
    ok: Option<IntCounter>,
    error: Option<IntCounter>,
    timeout: Option<IntCounter>,
    circuit_open: Option<IntCounter>,
    seconds: Option<Histogram>,
}

/// How a Redis call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisResult {
    Ok,
    Error,
    Timeout,
    CircuitOpen,
}

impl RedisOp {
    pub fn new(op: &str) -> RedisOp {
        let c = |result: &str| {
            REDIS_CALLS
                .as_ref()
                .map(|c| c.with_label_values(&[op, result]))
        };
        RedisOp {
            ok: c("ok"),
            error: c("error"),
            timeout: c("timeout"),
            circuit_open: c("circuit_open"),
            seconds: REDIS_SECONDS.as_ref().map(|h| h.with_label_values(&[op])),
        }
    }

    /// Count one call; `seconds` is `None` for calls that never reached Redis.
    pub fn record(&self, result: RedisResult, seconds: Option<f64>) {
        let c = match result {
            RedisResult::Ok => &self.ok,
            RedisResult::Error => &self.error,
            RedisResult::Timeout => &self.timeout,
            RedisResult::CircuitOpen => &self.circuit_open,
        };
        if let Some(c) = c {
            c.inc();
        }
        if let (Some(h), Some(s)) = (&self.seconds, seconds) {
            h.observe(s);
        }
    }
}

pub fn redis_circuit(open: bool) {
    if let Some(g) = &*REDIS_CIRCUIT {
        g.with_label_values(&[] as &[&str]).set(open as i64);
    }
}

/// A request decided without Redis under `fail: open`.
pub fn state_fail_open(feature: &str) {
    if let Some(c) = &*FAIL_OPEN {
        c.with_label_values(&[feature]).inc();
    }
}

pub fn revocation_applied(kind: &str) {
    if let Some(c) = &*REVOCATIONS_APPLIED {
        c.with_label_values(&[kind]).inc();
    }
}

pub fn revocations_active(n: usize) {
    if let Some(g) = &*REVOCATIONS_ACTIVE {
        g.with_label_values(&[] as &[&str]).set(n as i64);
    }
}

pub fn revocations_age(seconds: f64) {
    if let Some(g) = &*REVOCATIONS_AGE {
        g.with_label_values(&[] as &[&str]).set(seconds);
    }
}

pub fn stream_closed_revoked(route: &str) {
    if let Some(c) = &*STREAMS_REVOKED {
        c.with_label_values(&[route]).inc();
    }
}

// ---------------------------------------------------------------------------------------------
// Connections of the public listener (caps and deadlines, `connections.rs`).
// ---------------------------------------------------------------------------------------------

static CONNECTIONS_OPEN: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_connections_open",
        "Client connections open on the public listener.",
        &[],
    )
});

static REQUESTS_OPEN: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_requests_open",
        "Requests being served on the public listener (each holds places against the connection caps).",
        &[],
    )
});

static TLS_HANDSHAKE_FAILURES: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_tls_handshake_failures_total",
        "Client TLS handshakes that failed (a deadline is counted in mcpgate_connection_timeouts_total).",
        &[],
    )
});

static CONNECTIONS_REFUSED: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_connections_refused_total",
        "Client connections closed at once because a cap was reached (reason: per_address, total).",
        &["reason"],
    )
});

static CONNECTION_TIMEOUTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_connection_timeouts_total",
        "Client connections and requests ended by a deadline (kind: tls_handshake, request_head, request_body, idle).",
        &["kind"],
    )
});

/// Register the connection metrics so that they are exposed (at zero) from the start.
pub fn register_connection_metrics() {
    connections_open(0);
    requests_open(0);
    if let Some(c) = &*TLS_HANDSHAKE_FAILURES {
        c.with_label_values(&[] as &[&str]);
    }
    if let Some(c) = &*CONNECTIONS_REFUSED {
        for r in ["per_address", "total"] {
            c.with_label_values(&[r]);
        }
    }
    if let Some(c) = &*CONNECTION_TIMEOUTS {
        for k in ["tls_handshake", "request_head", "request_body", "idle"] {
            c.with_label_values(&[k]);
        }
    }
}

/// One more (`+1`) or one fewer (`-1`) open client connection.
pub fn connections_open(delta: i64) {
    if let Some(g) = &*CONNECTIONS_OPEN {
        g.with_label_values(&[] as &[&str]).add(delta);
    }
}

/// One more (`+1`) or one fewer (`-1`) request being served.
pub fn requests_open(delta: i64) {
    if let Some(g) = &*REQUESTS_OPEN {
        g.with_label_values(&[] as &[&str]).add(delta);
    }
}

pub fn tls_handshake_failed() {
    if let Some(c) = &*TLS_HANDSHAKE_FAILURES {
        c.with_label_values(&[] as &[&str]).inc();
    }
}

pub fn connection_refused(reason: &str) {
    if let Some(c) = &*CONNECTIONS_REFUSED {
        c.with_label_values(&[reason]).inc();
    }
}

pub fn connection_timeout(kind: &str) {
    if let Some(c) = &*CONNECTION_TIMEOUTS {
        c.with_label_values(&[kind]).inc();
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits and stream caps (`quota`).
// ---------------------------------------------------------------------------------------------

static LIMIT_DECISIONS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    counter(
        &METRICS.registry,
        "mcpgate_rate_limit_decisions_total",
        "Rate-limit decisions by limit and result (allowed: this limit let the request through; \
         limited: it refused it; unavailable: Redis could not answer and the limit fails closed). \
         limit=\"streams_per_subject\" is the concurrency cap.",
        &["limit", "result"],
    )
});

static STREAM_SLOTS: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    gauge(
        &METRICS.registry,
        "mcpgate_stream_slots_held",
        "Requests holding a slot of limits.concurrency.streams_per_subject on this replica: \
         open response streams and requests still waiting for their answer's head.",
        &[],
    )
});

/// How a limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitResult {
    Allowed,
    Limited,
    Unavailable,
}

/// The decision counters of one limit, resolved when the config is compiled.
#[derive(Debug)]
pub struct LimitMetrics {
    allowed: Option<IntCounter>,
    limited: Option<IntCounter>,
    unavailable: Option<IntCounter>,
}

impl LimitMetrics {
    pub fn new(limit: &str) -> LimitMetrics {
        let c = |result: &str| {
            LIMIT_DECISIONS
                .as_ref()
                .map(|c| c.with_label_values(&[limit, result]))
        };
        LimitMetrics {
            allowed: c("allowed"),
            limited: c("limited"),
            unavailable: c("unavailable"),
        }
    }

    pub fn record(&self, result: LimitResult) {
        let c = match result {
            LimitResult::Allowed => &self.allowed,
            LimitResult::Limited => &self.limited,
            LimitResult::Unavailable => &self.unavailable,
        };
        if let Some(c) = c {
            c.inc();
        }
    }
}

static STREAM_LIMIT: LazyLock<LimitMetrics> =
    LazyLock::new(|| LimitMetrics::new("streams_per_subject"));

/// Register the limit metrics so that they are exposed from the start.
pub fn register_limit_metrics() {
    LazyLock::force(&LIMIT_DECISIONS);
    stream_slots_held(0);
}

/// A decision of the concurrency cap.
pub fn stream_limit(result: LimitResult) {
    STREAM_LIMIT.record(result);
}

/// One more (`+1`) or one fewer (`-1`) slot of `streams_per_subject` held.
pub fn stream_slots_held(delta: i64) {
    if let Some(g) = &*STREAM_SLOTS {
        g.with_label_values(&[] as &[&str]).add(delta);
    }
}

/// A divergence between Redis's revocation list and this replica's was found.
pub fn revocations_divergence(reason: &str) {
    if let Some(c) = &*REVOCATIONS_DIVERGENCE {
        c.with_label_values(&[reason]).inc();
    }
}

pub fn revocations_diverged(diverged: bool) {
    if let Some(g) = &*REVOCATIONS_DIVERGED {
        g.with_label_values(&[] as &[&str]).set(diverged as i64);
    }
}

/// `n` entries or heads in Redis failed authentication (`what`: entry, head).
pub fn revocations_integrity_failures(what: &str, n: usize) {
    if let Some(c) = &*REVOCATIONS_INTEGRITY {
        c.with_label_values(&[what]).inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Every reason has its deny series from the moment a route is compiled (at zero), and
    /// a denial counts in its own series.
    #[test]
    fn every_reason_is_preregistered_per_route() {
        let m = RouteMetrics::new("metrics-test-route", &[]);
        m.deny(Reason::ToolScope, 0.001);
        let text = String::from_utf8(render()).unwrap();
        for r in Reason::ALL {
            let series = format!(
                "mcpgate_requests_total{{decision=\"deny\",reason=\"{}\",route=\"metrics-test-route\"}}",
                r.as_str()
            );
            let line = text
                .lines()
                .find(|l| l.starts_with(&series))
                .unwrap_or_else(|| panic!("no series {series}"));
            let want = if *r == Reason::ToolScope { " 1" } else { " 0" };
            assert!(line.ends_with(want), "{line}");
        }
    }
}
