//! Rate limits and quotas (`limits.rate`, `limits.concurrency`, `limits.trusted_proxies`, and
//! a route's `limits`): how much each identity, client and agent may do, keyed by what the
//! gateway verified, shared exactly by every replica through Redis.
//!
//! The last step before the identity headers, after the policy: by then the principal is
//! verified and the MCP operation known, and a request the policy refuses has spent
//! nothing. [`Limiter::admit`] takes a slot of `streams_per_subject` (`streams`), then
//! decides every bucket the request touches — one per limit that applies and per key it
//! names (`key`) — all or nothing: with `state.redis` in one atomic Redis round trip
//! (`shared`), without it in this replica's buckets (`buckets`), both by the GCRA of
//! `gcra`. A refusal is a 429 with `Retry-After` and the `RateLimit`/`RateLimit-Policy`
//! fields, rendered by `respond`; nothing is forwarded.
//!
//! Owns its part of the `limits` section (the connection and size settings there are
//! `connections`'), and a route's `limits`: the strict file types and their compile steps.
//! A limit's buckets are keyed by a fingerprint of its definition, so a reload that leaves
//! a definition unchanged keeps its buckets (local ones live in the gateway's state, not in
//! the config; Redis ones are named by it).

pub mod buckets;
pub mod gcra;
pub mod key;
pub mod shared;
pub mod streams;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::compile::CompileError;
use crate::error::{Refusal, Throttle};
use crate::failmode::FailMode;
use crate::mcp::body::{Calls, Op};
use crate::metrics::{LimitMetrics, LimitResult};
use crate::store::Store;

use buckets::Buckets;
use gcra::Cell;
pub use key::{KeyPart, Kind, Target, TrustedProxies, Who};
use streams::{Slot, Streams};

/// The name of the concurrency policy in `RateLimit-Policy`, metrics and bodies (reserved).
pub const STREAMS_POLICY: &str = "streams_per_subject";
/// `Retry-After` of a request over `streams_per_subject`: streams end unannounced, so retry
/// soon.
pub const STREAMS_RETRY_AFTER: u64 = 1;
/// Bounds of a limit's numbers.
const MAX_COUNT: u64 = 1_000_000;
const MAX_BURST: u64 = 1_000_000;
const MAX_STREAMS: u32 = 100_000;
/// The longest a bucket may take to fill (`burst × period / count`), in microseconds.
const MAX_TOLERANCE_US: u64 = 10 * 366 * 86_400 * 1_000_000;

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// One entry of `limits.rate` (or of a route's `limits.rate`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRate {
    pub name: String,
    pub key: Vec<KeyPart>,
    /// `<count>/<second|minute|hour|day>`.
    pub rate: String,
    /// Units a full bucket holds (default: the rate's count).
    pub burst: Option<u64>,
    /// Only calls of these tools count (globs, as in a route's `tools`).
    pub tools: Option<Vec<String>>,
    /// Only these resources count (globs on the canonical URI, as in a route's `resources`).
    pub resources: Option<Vec<String>>,
    /// Only these prompts count.
    pub prompts: Option<Vec<String>>,
    /// Redis cannot answer: `open` decides with this replica's buckets, `closed` refuses.
    pub fail: Option<FailMode>,
}

/// `limits.concurrency` (or a route's).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConcurrency {
    pub streams_per_subject: u32,
}

/// A route's `limits`: its own limits (a name of `limits.rate` overrides that one on this
/// route) and its own concurrency cap.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRouteLimits {
    #[serde(default)]
    pub rate: Vec<FileRate>,
    pub concurrency: Option<FileConcurrency>,
}

// ---------------------------------------------------------------------------------------------
// Compiled
// ---------------------------------------------------------------------------------------------

/// A compiled rate limit.
#[derive(Debug)]
pub struct Limit {
    pub name: Arc<str>,
    /// The route that defines it; `None` for `limits.rate` (its buckets are shared by every
    /// route it applies to, unless `route` is part of its key).
    pub scope: Option<Arc<str>>,
    pub key: Box<[KeyPart]>,
    pub count: u64,
    /// Seconds.
    pub period: u64,
    pub burst: u64,
    pub cell: Cell,
    /// Only these operations count (`tools`, `resources`, `prompts`); `None`: every request.
    pub filter: Option<Filter>,
    pub fail: FailMode,
    /// Of the definition (scope, name, key, rate, burst, filters), not of `fail`: a reload
    /// that keeps it keeps the buckets.
    pub fingerprint: u64,
    /// `"name";q=…;w=…;mcpgate-burst=…`.
    policy_item: String,
    pub metrics: LimitMetrics,
}

/// Which operations a limit counts.
#[derive(Debug, Default)]
pub struct Filter {
    pub tools: Vec<wildmatch::WildMatch>,
    pub resources: Vec<wildmatch::WildMatch>,
    pub prompts: Vec<wildmatch::WildMatch>,
    /// The patterns as written, for the summary.
    pub patterns: Vec<String>,
}

impl Filter {
    fn matches(&self, (kind, name): Target<'_>) -> bool {
        let list = match kind {
            Kind::Tool => &self.tools,
            Kind::Resource => &self.resources,
            Kind::Prompt => &self.prompts,
        };
        list.iter().any(|m| m.matches(name))
    }
}

impl Limit {
    /// Whether its buckets depend on the MCP operation (the route must read the body).
    fn needs_operation(&self) -> bool {
        self.filter.is_some() || self.key.contains(&KeyPart::Tool)
    }

    /// `600/minute burst 60 key [issuer, subject]` (and the filter), for the summary.
    pub fn describe(&self) -> String {
        let unit = match self.period {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            _ => "day",
        };
        let key: Vec<&str> = self.key.iter().map(|k| k.as_str()).collect();
        let mut s = format!(
            "{} {}/{unit} burst {} key [{}]",
            self.name,
            self.count,
            self.burst,
            key.join(", ")
        );
        if let Some(f) = &self.filter {
            s.push_str(&format!(" on [{}]", f.patterns.join(", ")));
        }
        s
    }
}

/// The cap on open requests per identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCap {
    pub max: u32,
    /// The route that sets it; `None` for `limits.concurrency` (counted across routes).
    pub scope: Option<Arc<str>>,
}

/// The top-level `limits.rate`, `limits.concurrency` and `limits.trusted_proxies`.
#[derive(Debug, Default)]
pub struct Quotas {
    pub rate: Vec<Arc<Limit>>,
    pub streams: Option<StreamCap>,
    pub trusted: Arc<TrustedProxies>,
    /// `state.redis` is set: rate limits are shared by every replica.
    pub shared: bool,
}

/// What applies on one route: `limits.rate` with the route's overrides and additions, and the
/// route's concurrency cap or the top-level one.
#[derive(Debug, Default)]
pub struct RouteQuotas {
    pub rate: Vec<Arc<Limit>>,
    pub streams: Option<StreamCap>,
    pub trusted: Arc<TrustedProxies>,
}

impl RouteQuotas {
    /// Whether a limit of the route counts operations: the route then reads and judges
    /// every request body as a policy route does (an operation it cannot see cannot be
    /// counted, so a body it cannot read is refused).
    pub fn needs_operation(&self) -> bool {
        self.rate.iter().any(|l| l.needs_operation())
    }

    pub fn is_empty(&self) -> bool {
        self.rate.is_empty() && self.streams.is_none()
    }
}

/// `<count>/<unit>` → (count, seconds).
fn parse_rate(s: &str) -> Result<(u64, u64), String> {
    let bad = || {
        format!("rate {s:?}: write it as <count>/<unit>, the unit one of second, minute, hour, day")
    };
    let (count, unit) = s.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    let period = match unit.trim() {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return Err(bad()),
    };
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(format!("rate {s:?}: the count must be 1 to {MAX_COUNT}"));
    }
    Ok((count, period))
}

/// A limit name: it appears in a quoted structured-field string, a metric label and a log
/// line, so it is kept to a plain token.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "name {name:?}: 1 to 64 letters, digits, '_', '-' or '.'"
        ));
    }
    if name == STREAMS_POLICY {
        return Err(format!("name {name:?} is reserved for limits.concurrency"));
    }
    Ok(())
}

fn patterns(field: &str, list: &[String], resource: bool) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!(
            "{field}: give at least one pattern, or leave it out"
        ));
    }
    list.iter()
        .map(|p| {
            if p.is_empty() {
                return Err(format!("{field}: empty pattern"));
            }
            if resource {
                crate::mcp::resource_uri::canonical_pattern(p).ok_or_else(|| {
                    format!(
                        "{field}: pattern {p:?} holds a malformed percent-encoding or a control character"
                    )
                })
            } else {
                Ok(p.clone())
            }
        })
        .collect()
}

/// Compile one limit defined in `scope` (`None`: top level).
fn compile_limit(f: &FileRate, scope: Option<&str>, shared: bool) -> Result<Limit, CompileError> {
    let err = |field: &str, reason: String| CompileError::new(field, reason);
    check_name(&f.name).map_err(|e| err("name", e))?;
    if f.key.is_empty() {
        return Err(err("key", "key: name at least one part".into()));
    }
    for (i, k) in f.key.iter().enumerate() {
        if f.key[..i].contains(k) {
            return Err(err("key", format!("key: {} twice", k.as_str())));
        }
    }
    let (count, period) = parse_rate(&f.rate).map_err(|e| err("rate", e))?;
    let burst = f.burst.unwrap_or(count);
    if !(1..=MAX_BURST).contains(&burst) {
        return Err(err("burst", format!("burst must be 1 to {MAX_BURST}")));
    }
    let interval = (period * 1_000_000 / count).max(1);
    let tolerance = interval
        .checked_mul(burst)
        .filter(|t| *t <= MAX_TOLERANCE_US)
        .ok_or_else(|| {
            err(
                "burst",
                "burst × (period / count) must be at most 10 years".into(),
            )
        })?;
    if f.fail.is_some() && !shared {
        return Err(err(
            "fail",
            "fail: needs state.redis (without it, limits are per replica)".into(),
        ));
    }
    let mut filter: Option<Filter> = None;
    for (field, list, kind) in [
        ("tools", &f.tools, Kind::Tool),
        ("resources", &f.resources, Kind::Resource),
        ("prompts", &f.prompts, Kind::Prompt),
    ] {
        let Some(list) = list else { continue };
        let pats = patterns(field, list, kind == Kind::Resource).map_err(|e| err(field, e))?;
        let fl = filter.get_or_insert_with(Filter::default);
        let matchers: Vec<wildmatch::WildMatch> =
            pats.iter().map(|p| wildmatch::WildMatch::new(p)).collect();
        match kind {
            Kind::Tool => fl.tools = matchers,
            Kind::Resource => fl.resources = matchers,
            Kind::Prompt => fl.prompts = matchers,
        }
        fl.patterns
            .extend(pats.iter().map(|p| format!("{field}:{p}")));
    }
    let definition = format!(
        "{scope:?}\n{}\n{:?}\n{count}/{period}\n{burst}\n{:?}",
        f.name,
        f.key,
        filter.as_ref().map(|fl| &fl.patterns)
    );
    let digest = Sha256::digest(definition.as_bytes());
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&digest[..8]);
    Ok(Limit {
        policy_item: format!("\"{}\";q={count};w={period};mcpgate-burst={burst}", f.name),
        metrics: LimitMetrics::new(&f.name),
        name: Arc::from(f.name.as_str()),
        scope: scope.map(Arc::from),
        key: f.key.clone().into_boxed_slice(),
        count,
        period,
        burst,
        cell: Cell {
            interval,
            tolerance,
        },
        filter,
        fail: f.fail.unwrap_or(FailMode::Open),
        fingerprint: u64::from_be_bytes(fp),
    })
}

fn compile_streams(
    f: Option<&FileConcurrency>,
    scope: Option<&str>,
) -> Result<Option<StreamCap>, CompileError> {
    let Some(f) = f else { return Ok(None) };
    if !(1..=MAX_STREAMS).contains(&f.streams_per_subject) {
        return Err(CompileError::new(
            "concurrency.streams_per_subject",
            format!("concurrency.streams_per_subject must be 1 to {MAX_STREAMS}"),
        ));
    }
    Ok(Some(StreamCap {
        max: f.streams_per_subject,
        scope: scope.map(Arc::from),
    }))
}

/// A list of limits defined in one place: unique names.
fn compile_list(
    list: &[FileRate],
    scope: Option<&str>,
    shared: bool,
) -> Result<Vec<Arc<Limit>>, CompileError> {
    let mut out: Vec<Arc<Limit>> = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let at = format!("rate[{i}]");
        let l = compile_limit(f, scope, shared).map_err(|e| {
            e.within(&at)
                .prefixed(&format!("limits.{at} ({:?}): ", f.name))
        })?;
        if out.iter().any(|o| o.name == l.name) {
            return Err(CompileError::new(
                format!("{at}.name"),
                format!("rate limit {:?} is defined twice", f.name),
            ));
        }
        out.push(Arc::new(l));
    }
    Ok(out)
}

/// Compile the top-level parts of `limits`; `shared`: `state.redis` is set.
pub fn compile(
    rate: &[FileRate],
    concurrency: Option<&FileConcurrency>,
    trusted_proxies: &[String],
    shared: bool,
) -> Result<Quotas, CompileError> {
    let rate = compile_list(rate, None, shared).map_err(|e| e.within("limits"))?;
    let streams = compile_streams(concurrency, None).map_err(|e| e.within("limits"))?;
    let trusted = TrustedProxies::compile(trusted_proxies)
        .map_err(|e| CompileError::new("limits.trusted_proxies", e))?;
    Ok(Quotas {
        rate,
        streams,
        trusted: Arc::new(trusted),
        shared,
    })
}

/// What applies on route `route`: the top-level limits, each replaced by the route's limit of
/// the same name, then the route's other limits; the route's cap or the top-level one.
/// Errors are at `limits…` within the route.
pub fn compile_route(
    route: &str,
    f: Option<&FileRouteLimits>,
    top: &Quotas,
) -> Result<RouteQuotas, CompileError> {
    let own = match f {
        Some(f) => {
            compile_list(&f.rate, Some(route), top.shared).map_err(|e| e.within("limits"))?
        }
        None => Vec::new(),
    };
    let mut rate: Vec<Arc<Limit>> = top
        .rate
        .iter()
        .map(|l| match own.iter().find(|o| o.name == l.name) {
            Some(o) => o.clone(),
            None => l.clone(),
        })
        .collect();
    for o in &own {
        if !rate.iter().any(|l| Arc::ptr_eq(l, o)) {
            rate.push(o.clone());
        }
    }
    let streams = match f.and_then(|f| f.concurrency.as_ref()) {
        Some(c) => compile_streams(Some(c), Some(route)).map_err(|e| e.within("limits"))?,
        None => top.streams.clone(),
    };
    Ok(RouteQuotas {
        rate,
        streams,
        trusted: top.trusted.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Deciding
// ---------------------------------------------------------------------------------------------

/// What a request is limited on.
pub struct Request<'a> {
    pub who: Who<'a>,
    /// The body's JSON-RPC messages, when the route read it.
    pub calls: Option<&'a Calls>,
}

/// The rate limiter of the process: local buckets, stream slots, and Redis when configured.
/// Lives in the gateway's state across reloads.
pub struct Limiter {
    buckets: Buckets,
    streams: Arc<Streams>,
    shared: Option<shared::Shared>,
    /// Keys the local bucket hashes (random per process: a client cannot aim at a bucket).
    hasher: std::hash::RandomState,
}

/// One bucket a request touches.
struct Planned<'a> {
    limit: &'a Limit,
    /// The operation target, when the limit keys by `tool`.
    target: Option<Target<'a>>,
    cost: u64,
    local: u64,
}

/// What one bucket shows after the decision.
struct Seen {
    allowed: bool,
    /// µs until full, as the bucket stands after the decision.
    reset_after: u64,
    retry_after: u64,
}

/// The named targets of one operation: the ways it may be counted (several for a method the
/// gateway does not know, whose `params.name` may be a tool or a prompt).
fn targets(op: &Op) -> Vec<Vec<Target<'_>>> {
    match op {
        Op::ToolsCall(n) => vec![vec![(Kind::Tool, n.as_str())]],
        Op::ResourcesRead(u)
        | Op::ResourcesSubscribe(u)
        | Op::ResourcesUnsubscribe(u)
        | Op::CompleteResource(u) => vec![vec![(Kind::Resource, u.as_str())]],
        Op::PromptsGet(n) | Op::CompletePrompt(n) => vec![vec![(Kind::Prompt, n.as_str())]],
        Op::SubscriptionsListen(uris) if !uris.is_empty() => uris
            .iter()
            .map(|u| vec![(Kind::Resource, u.as_str())])
            .collect(),
        Op::Unknown { name, uri, .. } => {
            let mut alt = Vec::new();
            if let Some(n) = name {
                alt.push((Kind::Tool, n.as_str()));
                alt.push((Kind::Prompt, n.as_str()));
            }
            if let Some(u) = uri {
                alt.push((Kind::Resource, u.as_str()));
            }
            vec![alt]
        }
        _ => vec![Vec::new()],
    }
}

impl Limiter {
    pub fn new(store: Option<Arc<Store>>) -> Limiter {
        crate::metrics::register_limit_metrics();
        Limiter {
            buckets: Buckets::new(),
            streams: Arc::new(Streams::default()),
            shared: store.map(shared::Shared::new),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The local key of `limit`'s bucket for this request and target.
    fn local_key(&self, limit: &Limit, who: &Who<'_>, target: Option<Target<'_>>) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(limit.fingerprint);
        for part in limit.key.iter() {
            key::write(*part, who, target, &mut h);
        }
        h.finish()
    }

    /// The Redis key of the same bucket (the same on every replica).
    fn shared_key(
        prefix: &str,
        limit: &Limit,
        who: &Who<'_>,
        target: Option<Target<'_>>,
    ) -> String {
        let mut h = Sha256::new();
        for part in limit.key.iter() {
            key::write(*part, who, target, &mut h);
        }
        let d = h.finalize();
        let mut s = String::with_capacity(prefix.len() + 17 + 32);
        s.push_str(prefix);
        s.push_str(&format!("{:016x}:", limit.fingerprint));
        for b in &d[..16] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The buckets `req` touches, one per limit that applies and key it names, costs summed.
    fn plan<'a>(&self, limits: &'a [Arc<Limit>], req: &Request<'a>) -> Vec<Planned<'a>> {
        let ops: &[Op] = req.calls.map_or(&[], |c| &c.ops);
        let mut out: Vec<Planned<'a>> = Vec::with_capacity(limits.len());
        for limit in limits {
            let keyed_by_target = limit.key.contains(&KeyPart::Tool);
            let mut add = |target: Option<Target<'a>>, cost: u64| {
                let target = if keyed_by_target { target } else { None };
                let local = self.local_key(limit, &req.who, target);
                match out
                    .iter_mut()
                    .find(|p| std::ptr::eq(p.limit, &**limit) && p.local == local)
                {
                    Some(p) => p.cost += cost,
                    None => out.push(Planned {
                        limit,
                        target,
                        cost,
                        local,
                    }),
                }
            };
            match (&limit.filter, keyed_by_target) {
                (Some(f), _) => {
                    for op in ops {
                        for alternatives in targets(op) {
                            if let Some(t) = alternatives.into_iter().find(|t| f.matches(*t)) {
                                add(Some(t), 1);
                            }
                        }
                    }
                }
                (None, true) if !ops.is_empty() => {
                    for op in ops {
                        for alternatives in targets(op) {
                            add(alternatives.first().copied(), 1);
                        }
                    }
                }
                // Every request counts, each message of a batch as one.
                (None, _) => add(None, ops.len().max(1) as u64),
            }
        }
        out
    }

    /// Admit `req` under `q`: a stream slot (kept by the caller until the answer is complete)
    /// and every rate limit, or the refusal. Redis, when configured, is asked once.
    pub async fn admit(&self, q: &RouteQuotas, req: &Request<'_>) -> Result<Option<Slot>, Refusal> {
        let slot = match &q.streams {
            Some(cap) => Some(self.stream_slot(cap, req)?),
            None => None,
        };
        if q.rate.is_empty() {
            return Ok(slot);
        }
        let planned = self.plan(&q.rate, req);
        if planned.is_empty() {
            return Ok(slot);
        }
        let seen = self.decide(&planned, &req.who).await?;
        let allowed = seen.iter().all(|s| s.allowed);
        for (i, p) in planned.iter().enumerate() {
            // One count per limit: limited if any of its buckets refused.
            if planned[..i].iter().any(|o| std::ptr::eq(o.limit, p.limit)) {
                continue;
            }
            let limited = planned
                .iter()
                .zip(&seen)
                .any(|(o, s)| std::ptr::eq(o.limit, p.limit) && !s.allowed);
            p.limit.metrics.record(if limited {
                LimitResult::Limited
            } else {
                LimitResult::Allowed
            });
        }
        if allowed {
            return Ok(slot);
        }
        Err(Refusal::RateLimited(Box::new(throttle(
            &planned, &seen, req,
        ))))
    }

    /// A slot of the route's concurrency cap for the caller, or the refusal.
    fn stream_slot(&self, cap: &StreamCap, req: &Request<'_>) -> Result<Slot, Refusal> {
        let mut h = self.hasher.build_hasher();
        let scope = cap.scope.as_deref().unwrap_or("");
        h.write(scope.as_bytes());
        h.write_u8(0xff);
        key::write_subject(&req.who, &mut h);
        if let Some(slot) = self.streams.acquire(h.finish(), cap.max) {
            crate::metrics::stream_limit(LimitResult::Allowed);
            return Ok(slot);
        }
        crate::metrics::stream_limit(LimitResult::Limited);
        Err(Refusal::TooManyStreams(Box::new(Throttle {
            limit: STREAMS_POLICY.into(),
            retry_after: STREAMS_RETRY_AFTER,
            policy: format!(
                "\"{STREAMS_POLICY}\";q={};qu=\"concurrent-requests\"",
                cap.max
            )
            .into(),
            state: format!("\"{STREAMS_POLICY}\";r=0").into(),
            jsonrpc_id: jsonrpc_id(req.calls),
        })))
    }

    /// Decide every planned bucket, all or nothing: in Redis when configured (this replica's
    /// buckets follow what it decided), else here. Redis unable to answer: a limit with
    /// `fail: closed` refuses (503), otherwise this replica decides alone.
    async fn decide(&self, planned: &[Planned<'_>], who: &Who<'_>) -> Result<Vec<Seen>, Refusal> {
        let Some(shared) = &self.shared else {
            return Ok(self.decide_here(planned));
        };
        let prefix = shared.prefix();
        let buckets: Vec<shared::Bucket> = planned
            .iter()
            .map(|p| shared::Bucket {
                key: Self::shared_key(&prefix, p.limit, who, p.target),
                cell: p.limit.cell,
                cost: p.cost,
            })
            .collect();
        match shared.decide(&buckets).await {
            Ok(d) => {
                let now = self.buckets.now();
                Ok(planned
                    .iter()
                    .zip(d.buckets)
                    .map(|(p, (reset_after, retry_after))| {
                        let allowed = retry_after == 0;
                        // Taken only if every bucket allowed it.
                        let reset_after = if allowed && !d.allowed {
                            reset_after.saturating_sub(p.limit.cell.interval * p.cost)
                        } else {
                            reset_after
                        };
                        self.buckets.mirror(p.local, reset_after, now);
                        Seen {
                            allowed,
                            reset_after,
                            retry_after,
                        }
                    })
                    .collect())
            }
            Err(e) => {
                if planned.iter().any(|p| p.limit.fail == FailMode::Closed) {
                    for (i, p) in planned.iter().enumerate() {
                        if !planned[..i].iter().any(|o| std::ptr::eq(o.limit, p.limit)) {
                            p.limit.metrics.record(LimitResult::Unavailable);
                        }
                    }
                    tracing::warn!(error = %e, "Redis cannot answer: rate-limited request refused (fail: closed)");
                    return Err(Refusal::StateUnavailable(
                        "the rate limit store is unavailable",
                    ));
                }
                crate::metrics::state_fail_open("rate_limits");
                shared.loud.error(|n| {
                    tracing::error!(
                        error = %e,
                        decided_without_redis = n,
                        "Redis cannot answer: rate limits are enforced by this replica alone \
                         (fail: open)"
                    )
                });
                Ok(self.decide_here(planned))
            }
        }
    }

    /// Decide in this replica's buckets: take from each, give everything back if one refuses.
    fn decide_here(&self, planned: &[Planned<'_>]) -> Vec<Seen> {
        let now = self.buckets.now();
        let outcomes: Vec<gcra::Outcome> = planned
            .iter()
            .map(|p| self.buckets.take(p.local, p.limit.cell, p.cost, now))
            .collect();
        let all = outcomes.iter().all(|o| o.allowed);
        planned
            .iter()
            .zip(outcomes)
            .map(|(p, o)| {
                let mut reset_after = o.reset_after;
                if o.allowed && !all {
                    self.buckets.give_back(p.local, p.limit.cell, p.cost);
                    reset_after = reset_after.saturating_sub(p.limit.cell.interval * p.cost);
                }
                Seen {
                    allowed: o.allowed,
                    reset_after,
                    retry_after: o.retry_after,
                }
            })
            .collect()
    }

    /// Slots of `streams_per_subject` held now.
    pub fn streams_open(&self) -> i64 {
        self.streams.open()
    }
}

/// The JSON-RPC id of a single request, for an error in the JSON-RPC shape.
fn jsonrpc_id(calls: Option<&Calls>) -> Option<Box<str>> {
    calls.filter(|c| !c.batch).and_then(|c| c.id.clone())
}

/// Seconds, rounded up, at least one.
fn ceil_seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000).max(1)
}

/// The 429 of a refused request: the limit with the longest wait, and the RateLimit fields
/// of every limit that applied (`r` units left now, `t` seconds until one more).
fn throttle(planned: &[Planned<'_>], seen: &[Seen], req: &Request<'_>) -> Throttle {
    let mut policy: Vec<&str> = Vec::new();
    let mut state: Vec<String> = Vec::new();
    let mut worst: Option<(&Limit, u64)> = None;
    for (i, p) in planned.iter().enumerate() {
        if planned[..i].iter().any(|o| std::ptr::eq(o.limit, p.limit)) {
            continue;
        }
        // A limit's state: its fullest-spent bucket of this request.
        let mine = || {
            planned
                .iter()
                .zip(seen)
                .filter(|(o, _)| std::ptr::eq(o.limit, p.limit))
                .map(|(_, s)| s)
        };
        let retry = mine().map(|s| s.retry_after).max().unwrap_or(0);
        let (left, next) = mine()
            .map(|s| {
                let (left, next) = gcra::remaining(p.limit.cell, s.reset_after);
                if s.allowed {
                    (left, next)
                } else {
                    (0, s.retry_after)
                }
            })
            .min_by_key(|(left, _)| *left)
            .unwrap_or((0, 0));
        let t = if retry > 0 { retry } else { next };
        policy.push(&p.limit.policy_item);
        state.push(format!(
            "\"{}\";r={left};t={}",
            p.limit.name,
            if t == 0 { 0 } else { ceil_seconds(t) }
        ));
        if retry > 0 && worst.is_none_or(|(_, w)| retry > w) {
            worst = Some((p.limit, retry));
        }
    }
    let (limit, retry) = worst.map_or(("", 0), |(l, r)| (&*l.name, r));
    Throttle {
        limit: limit.into(),
        retry_after: ceil_seconds(retry),
        policy: policy.join(", ").into(),
        state: state.join(", ").into(),
        jsonrpc_id: jsonrpc_id(req.calls),
    }
}

#[cfg(test)]
mod tests;
