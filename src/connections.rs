//! Connection policy of the public listener (the `limits` section, which this module owns): caps on open connections (per client address
//! and in total), a deadline for the whole request head, an idle keep-alive timeout, and
//! the pingora pages that are answered before any request reaches the proxy.
//!
//! Sits in front of the request flow: [`Guard`] is the pingora `ServerApp` the listener
//! runs; it admits or refuses each connection (after the TLS handshake, which pingora
//! bounds at 60 s), wraps its stream in a [`Watched`] and hands it to the proxy. The proxy
//! marks each request's start and end ([`request_started`], [`request_done`]) so the
//! stream knows which deadline applies:
//!
//! - waiting for a request (idle keep-alive): `idle_timeout`, then the connection closes;
//! - a request head arriving (from its first byte, or from the accept for a new
//!   connection): `request_head_timeout` for the *whole* head, however it is dribbled;
//! - a request being served: none (streams may idle; bodies have their own bounds).
//!
//! HTTP/2 connections get the head deadline until the client preface has arrived; pingora
//! then closes them after `idle_timeout` without an open stream (a stream only counts once
//! its whole header block has arrived, so a dribbled HEADERS is bounded by it too).
//!
//! pingora answers some malformed HTTP/1.1 requests itself, before any hook runs (a head
//! that does not parse: 400; `CONNECT`: 405), with its own page (`Server: Pingora`, no
//! body). Such a page can only be written outside a request, so [`Watched`] replaces any
//! response written there by the gateway's JSON page for the same status.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::compile::{At, CompileError};
use crate::error::Cap;
use crate::metrics;

// ---------------------------------------------------------------------------------------------
// The `limits` section
// ---------------------------------------------------------------------------------------------

/// `limits`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Largest body read and judged before forwarding on routes that inspect MCP bodies.
    #[serde(default = "default_max_inspected_body_bytes")]
    pub max_inspected_body_bytes: usize,
    #[serde(default = "default_request_head_timeout")]
    pub request_head_timeout_seconds: u64,
    #[serde(default = "default_request_body_timeout")]
    pub request_body_timeout_seconds: u64,
    #[serde(default = "default_send_timeout")]
    pub send_timeout_seconds: u64,
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_seconds: u64,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: u32,
    /// Default: 256, or `max_connections` when that is lower.
    #[serde(default)]
    pub max_connections_per_address: Option<usize>,
    /// Default: from the open-file limit ([`Budget`]).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Rate limits, the concurrency cap and the proxies trusted for `X-Forwarded-For`:
    /// `quota`'s part of the section, compiled there.
    #[serde(default)]
    pub rate: Vec<crate::quota::FileRate>,
    pub concurrency: Option<crate::quota::FileConcurrency>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            max_inspected_body_bytes: default_max_inspected_body_bytes(),
            request_head_timeout_seconds: default_request_head_timeout(),
            request_body_timeout_seconds: default_request_body_timeout(),
            send_timeout_seconds: default_send_timeout(),
            tls_handshake_timeout_seconds: default_tls_handshake_timeout(),
            idle_timeout_seconds: default_idle_timeout(),
            max_streams_per_connection: default_max_streams(),
            max_connections_per_address: None,
            max_connections: None,
            rate: Vec::new(),
            concurrency: None,
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_max_header_bytes() -> usize {
    32 * 1024
}
fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_max_inspected_body_bytes() -> usize {
    1024 * 1024
}
/// The most `limits.max_inspected_body_bytes` may be: each inspected body is held whole in
/// memory while it is judged.
pub const MAX_INSPECTED_BODY_BYTES: usize = 64 * 1024 * 1024;
fn default_request_head_timeout() -> u64 {
    10
}
fn default_request_body_timeout() -> u64 {
    60
}
fn default_send_timeout() -> u64 {
    30
}
fn default_tls_handshake_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_max_streams() -> u32 {
    32
}
/// `max_connections_per_address` when the file does not set it (at most `max_connections`).
const DEFAULT_MAX_PER_ADDRESS: usize = 256;

/// The request-size part of `limits`: checked on each request head (and streamed body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Request headers larger than this (names and values) get 431.
    pub max_header_bytes: usize,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: u64,
    /// Bodies the gateway reads and judges before forwarding (MCP policy routes, mirrored
    /// headers) larger than this get 413.
    pub max_inspected_body_bytes: usize,
}

/// Check and compile `limits`: the connection caps and deadlines, and the request sizes.
pub fn compile(f: &FileLimits) -> Result<(Limits, RequestLimits), CompileError> {
    if f.max_header_bytes < 1024 {
        return Err(CompileError::new(
            "limits.max_header_bytes",
            "limits.max_header_bytes must be at least 1024",
        ));
    }
    let connections = Limits::compile(f, Budget::of_process()).at("limits")?;
    if !(1024..=MAX_INSPECTED_BODY_BYTES).contains(&f.max_inspected_body_bytes) {
        return Err(CompileError::new(
            "limits.max_inspected_body_bytes",
            format!(
                "limits.max_inspected_body_bytes must be between 1024 and {MAX_INSPECTED_BODY_BYTES}"
            ),
        ));
    }
    let requests = RequestLimits {
        max_header_bytes: f.max_header_bytes,
        max_body_bytes: f.max_body_bytes,
        max_inspected_body_bytes: f.max_inspected_body_bytes,
    };
    Ok((connections, requests))
}

/// The compiled `limits` settings that govern connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub request_head_timeout: Duration,
    /// The whole request body must arrive within this of the request head.
    pub request_body_timeout: Duration,
    /// A write to the client that makes no progress for this long ends the connection.
    pub send_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` of HTTP/2 connections.
    pub max_streams: u32,
    /// Places (see [`Table`]) one client address may hold.
    pub max_per_address: usize,
    /// Places all clients together may hold.
    pub max_total: usize,
    /// The descriptor budget `max_total` was derived from, when the file does not set it.
    pub budget: Option<Budget>,
}

/// The open-file limit assumed when it cannot be read (the usual soft default).
const NOFILE_UNKNOWN: u64 = 1024;
/// Descriptors the process keeps for itself, whatever its clients do: standard streams,
/// the two listeners, the runtimes' epoll and eventfd descriptors, the file watcher (28
/// measured at rest, with any number of threads), plus headroom for the Redis connections,
/// key set fetches, reloads reading files, DNS lookups and admin scrapes.
pub const RESERVED_DESCRIPTORS: u64 = 64;
/// Bounds of the idle upstream connection pool (a sixteenth of the open-file limit).
const MIN_POOL: u64 = 16;
const MAX_POOL: u64 = 1024;
/// Bounds of the default `max_connections`.
const MIN_DEFAULT_PLACES: u64 = 16;
const MAX_DEFAULT_PLACES: u64 = 1_000_000;
/// Places a request takes while it is served: the upstream connection it holds (or the
/// connection of the introspection call it waits for), and the duplicate of that connection
/// a response stream's watchdog may hold.
pub const PLACES_PER_REQUEST: usize = 2;

/// How the open-file limit is shared: what the process keeps, the idle upstream pool, and
/// the places left for clients (the default `max_connections`).
///
/// `pool = ulimit -n / 16` (within 16 and 1024) idle upstream connections kept for reuse;
/// `places = ulimit -n − 64 − pool` (at least 16): one per client connection (a TLS
/// handshake included, from the accept) and [`PLACES_PER_REQUEST`] per request being
/// served. With every place taken, the process still has its 64 and the pool's descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub nofile: u64,
    pub pool: usize,
    pub places: usize,
}

impl Budget {
    pub fn of_nofile(nofile: u64) -> Budget {
        let pool = (nofile / 16).clamp(MIN_POOL, MAX_POOL);
        let places = nofile
            .saturating_sub(RESERVED_DESCRIPTORS + pool)
            .clamp(MIN_DEFAULT_PLACES, MAX_DEFAULT_PLACES);
        Budget {
            nofile,
            pool: usize::try_from(pool).unwrap_or(MAX_POOL as usize),
            places: usize::try_from(places).unwrap_or(MAX_DEFAULT_PLACES as usize),
        }
    }

    /// The budget of this process's soft open-file limit.
    pub fn of_process() -> Budget {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur
        } else {
            NOFILE_UNKNOWN
        };
        Budget::of_nofile(soft)
    }

    /// Whether the open-file limit is too low for the arithmetic to leave the minimum.
    pub fn cramped(&self) -> bool {
        self.nofile < RESERVED_DESCRIPTORS + MIN_POOL + MIN_DEFAULT_PLACES
    }
}

impl Limits {
    /// Check and compile the file values (seconds and counts); `budget` gives the
    /// default caps.
    fn compile(f: &FileLimits, budget: Budget) -> Result<Limits, String> {
        for (name, value, range) in [
            (
                "request_head_timeout_seconds",
                f.request_head_timeout_seconds,
                1..=300,
            ),
            (
                "request_body_timeout_seconds",
                f.request_body_timeout_seconds,
                1..=3600,
            ),
            ("send_timeout_seconds", f.send_timeout_seconds, 1..=3600),
            (
                "tls_handshake_timeout_seconds",
                f.tls_handshake_timeout_seconds,
                1..=60,
            ),
            ("idle_timeout_seconds", f.idle_timeout_seconds, 1..=3600),
            (
                "max_streams_per_connection",
                u64::from(f.max_streams_per_connection),
                1..=1000,
            ),
        ] {
            if !range.contains(&value) {
                return Err(format!(
                    "limits.{name} must be {} to {}",
                    range.start(),
                    range.end()
                ));
            }
        }
        let max_total = f.max_connections.unwrap_or(budget.places);
        let max_per_address = f
            .max_connections_per_address
            .unwrap_or(DEFAULT_MAX_PER_ADDRESS.min(max_total));
        if max_total == 0 || max_per_address == 0 {
            return Err(
                "limits.max_connections and max_connections_per_address must be at least 1".into(),
            );
        }
        if max_per_address > max_total {
            return Err(match f.max_connections {
                Some(_) => {
                    "limits.max_connections_per_address must not exceed limits.max_connections"
                        .into()
                }
                None => format!(
                    "limits.max_connections_per_address ({max_per_address}) exceeds the default \
                     limits.max_connections ({max_total}, from the open-file limit {}): raise \
                     `ulimit -n` or set limits.max_connections",
                    budget.nofile
                ),
            });
        }
        Ok(Limits {
            request_head_timeout: Duration::from_secs(f.request_head_timeout_seconds),
            request_body_timeout: Duration::from_secs(f.request_body_timeout_seconds),
            send_timeout: Duration::from_secs(f.send_timeout_seconds),
            tls_handshake_timeout: Duration::from_secs(f.tls_handshake_timeout_seconds),
            idle_timeout: Duration::from_secs(f.idle_timeout_seconds),
            max_streams: f.max_streams_per_connection,
            max_per_address,
            max_total,
            budget: f.max_connections.is_none().then_some(budget),
        })
    }
}

/// Why a connection or a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerAddress,
    Total,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerAddress => "per_address",
            Refused::Total => "total",
        }
    }

    /// The cap, as a request's refusal names it.
    pub fn cap(self) -> Cap {
        match self {
            Refused::PerAddress => Cap::PerAddress,
            Refused::Total => Cap::Total,
        }
    }
}

/// What clients hold, in *places*: one per open client connection (from the accept, TLS
/// handshake included) and [`PLACES_PER_REQUEST`] per request being served (the upstream
/// connection it holds, or the introspection call it waits for, and the duplicate descriptor
/// a response stream's watchdog may hold). Counted in total and per client address against
/// `max_connections` and `max_connections_per_address`, so that HTTP/2 streams, however many
/// connections carry them, are bounded together with the connections: every place is a
/// descriptor the process may need.
#[derive(Default)]
pub struct Table {
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// What a [`Slot`] holds places for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connection,
    Request,
}

/// Places held by one admitted connection or request; freed when dropped.
pub struct Slot {
    table: Arc<Table>,
    address: Option<IpAddr>,
    kind: Kind,
    places: usize,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("address", &self.address)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Table {
    /// Admit a connection from `address` under `limits`, or say why not.
    pub fn admit(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<Slot, Refused> {
        self.take(address, limits, Kind::Connection, 1)
    }

    /// Admit a request from `address` (its connection already holds a place), or say why not.
    pub fn admit_request(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        limits: &Limits,
    ) -> Result<Slot, Refused> {
        self.take(address, limits, Kind::Request, PLACES_PER_REQUEST)
    }

    fn take(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        limits: &Limits,
        kind: Kind,
        places: usize,
    ) -> Result<Slot, Refused> {
        let mut per = self
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.total.load(Ordering::Relaxed) + places > limits.max_total {
            return Err(Refused::Total);
        }
        if let Some(a) = address {
            let n = per.entry(a).or_insert(0);
            if *n + places > limits.max_per_address {
                if *n == 0 {
                    per.remove(&a);
                }
                return Err(Refused::PerAddress);
            }
            *n += places;
        }
        self.total.fetch_add(places, Ordering::Relaxed);
        match kind {
            Kind::Connection => metrics::connections_open(1),
            Kind::Request => metrics::requests_open(1),
        }
        Ok(Slot {
            table: self.clone(),
            address,
            kind,
            places,
        })
    }

    /// Places held now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self
            .table
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(a) = self.address {
            if let Some(n) = per.get_mut(&a) {
                *n = n.saturating_sub(self.places);
                if *n == 0 {
                    per.remove(&a);
                }
            }
        }
        self.table.total.fetch_sub(self.places, Ordering::Relaxed);
        match self.kind {
            Kind::Connection => metrics::connections_open(-1),
            Kind::Request => metrics::requests_open(-1),
        }
    }
}

/// The listener's application: admits connections at the accept, runs the TLS handshake
/// under its deadline, watches the connection's deadlines, then hands it to `inner` (the
/// pingora proxy). `limits` is read for each new connection, so a reload applies to the
/// connections accepted after it.
pub struct Guard<A> {
    pub inner: Arc<A>,
    pub table: Arc<Table>,
    pub limits: Box<dyn Fn() -> Limits + Send + Sync>,
    /// The TLS acceptor of a TLS listener (pingora's listener then only accepts TCP: the
    /// handshake is ours, so that it is counted and has a deadline).
    pub tls: Option<Acceptor>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guard<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let limits = (self.limits)();
        let address = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match self.table.admit(address, &limits) {
            Ok(s) => s,
            Err(why) => {
                metrics::connection_refused(why.label());
                // Dropping the stream closes the connection.
                return None;
            }
        };
        let stream: Stream = match &self.tls {
            None => stream,
            Some(acceptor) => {
                let handshake = acceptor.tls_handshake(Plain(stream));
                match tokio::time::timeout(limits.tls_handshake_timeout, handshake).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        metrics::tls_handshake_failed();
                        return None;
                    }
                    Err(_) => {
                        metrics::connection_timeout("tls_handshake");
                        return None;
                    }
                }
            }
        };
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let watched: Stream = Box::new(Watched::new(stream, &limits, h2, accepted));
        let mut next = self.inner.process_new(watched, shutdown).await;
        // pingora's HTTP app serves a connection to its end and returns nothing; a stream
        // handed back would be served again under the same slot.
        while let Some(s) = next {
            next = self.inner.process_new(s, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The accepted TCP stream under our TLS handshake: pingora's TLS stream wraps a concrete
/// `IO` type, which its boxed `Stream` is not.
#[derive(Debug)]
struct Plain(Stream);

impl AsyncRead for Plain {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Plain {
    async fn shutdown(&mut self) {
        self.0.shutdown().await;
    }
}

impl UniqueID for Plain {
    fn id(&self) -> UniqueIDType {
        self.0.id()
    }
}

impl Ssl for Plain {}

impl GetTimingDigest for Plain {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_timing_digest()
    }
}

impl GetProxyDigest for Plain {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.0.get_proxy_digest()
    }
}

impl GetSocketDigest for Plain {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.0.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for Plain {}

const WAITING: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// A client stream with the connection's deadlines (see the module docs).
pub struct Watched {
    inner: Stream,
    phase: AtomicU8,
    h2: bool,
    /// Bytes of an HTTP/2 connection read so far (its preface is 24 bytes).
    read: usize,
    head_timeout: Duration,
    idle_timeout: Duration,
    /// Start of the current wait: accept, end of the last request, or first head byte.
    since: Instant,
    /// Set by [`request_done`]: the idle wait starts at the next read.
    restart: AtomicBool,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// The gateway's page replacing one pingora wrote, still to be sent.
    own_page: Vec<u8>,
    replacing: bool,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl Watched {
    /// `accepted`: when the connection was accepted (the head deadline counts from there,
    /// the TLS handshake included).
    fn new(inner: Stream, limits: &Limits, h2: bool, accepted: Instant) -> Watched {
        let now = accepted;
        Watched {
            inner,
            // A new connection is there to send a request: the head deadline runs.
            phase: AtomicU8::new(HEAD),
            h2,
            read: 0,
            head_timeout: limits.request_head_timeout,
            idle_timeout: limits.idle_timeout,
            since: now,
            restart: AtomicBool::new(false),
            timer: Box::pin(tokio::time::sleep_until(now + limits.request_head_timeout)),
            armed: None,
            own_page: Vec::new(),
            replacing: false,
        }
    }

    /// The deadline of the current phase, if any.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        match self.phase.load(Ordering::Acquire) {
            WAITING => Some((self.since + self.idle_timeout, "idle")),
            HEAD => Some((self.since + self.head_timeout, "request_head")),
            _ => None,
        }
    }

    fn poll_own_page(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.own_page.is_empty() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.own_page) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.own_page.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Find the connection's [`Watched`] stream behind a session (HTTP/1.1 only).
fn watched(session: &ServerSession) -> Option<&Watched> {
    session.stream()?.as_any().downcast_ref::<Watched>()
}

/// A request head has been read: no deadline while it is served.
pub fn request_started(session: &ServerSession) {
    if let Some(w) = watched(session) {
        w.phase.store(BUSY, Ordering::Release);
    }
}

/// The answer is complete: the connection waits for the next request (idle timeout).
pub fn request_done(session: &ServerSession) {
    if let Some(w) = watched(session) {
        w.restart.store(true, Ordering::Release);
        w.phase.store(WAITING, Ordering::Release);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.restart.swap(false, Ordering::AcqRel) {
            // First read after an answer: the idle wait starts now.
            this.since = Instant::now();
        }
        let phase = this.phase.load(Ordering::Acquire);
        let deadline = this.deadline();
        if let Some((at, kind)) = deadline {
            if this.armed != Some(at) {
                this.timer.as_mut().reset(at);
                this.armed = Some(at);
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                metrics::connection_timeout(kind);
                this.phase.store(BUSY, Ordering::Release);
                return match kind {
                    // Closing an idle keep-alive connection: end of stream.
                    "idle" => Poll::Ready(Ok(())),
                    _ => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request head not received in time",
                    ))),
                };
            }
        } else {
            this.armed = None;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let n = buf.filled().len() - before;
            if n > 0 {
                if phase == WAITING {
                    // The next request's first bytes: its head deadline starts.
                    this.phase.store(HEAD, Ordering::Release);
                    this.since = Instant::now();
                }
                if this.h2 {
                    this.read += n;
                    if this.read >= 24 {
                        // Preface received: pingora's HTTP/2 idle timeout takes over.
                        this.phase.store(BUSY, Ordering::Release);
                    }
                }
            }
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if !this.h2 && !this.replacing && this.phase.load(Ordering::Acquire) != BUSY {
            if let Some(status) = pingora_page_status(buf) {
                this.replacing = true;
                this.own_page = crate::respond::own_page(status);
            }
        }
        if this.replacing {
            // pingora's page is swallowed; ours goes out in its place.
            return match this.poll_own_page(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.poll_own_page(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.poll_own_page(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// The status of a response pingora writes with its own error page (`Server: Pingora`).
fn pingora_page_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    let status = std::str::from_utf8(rest.get(2..5)?).ok()?.parse().ok()?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = buf[..head_end].to_ascii_lowercase();
    head.windows(17)
        .any(|w| w == b"\r\nserver: pingora")
        .then_some(status)
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        // The connection is closing: a page that cannot be flushed now has no reader.
        let _ = std::future::poll_fn(|cx| self.poll_own_page(cx)).await;
        self.inner.shutdown().await;
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: pingora_core::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn file(per: Option<usize>, total: Option<usize>) -> FileLimits {
        FileLimits {
            max_connections_per_address: per,
            max_connections: total,
            ..FileLimits::default()
        }
    }

    fn limits(per: usize, total: usize) -> Limits {
        Limits::compile(&file(Some(per), Some(total)), Budget::of_nofile(1024)).unwrap()
    }

    #[test]
    fn caps_per_address_and_total() {
        let t = Arc::new(Table::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let l = limits(2, 3);
        let s1 = t.admit(Some(a), &l).unwrap();
        let _s2 = t.admit(Some(a), &l).unwrap();
        assert_eq!(t.admit(Some(a), &l).err(), Some(Refused::PerAddress));
        let _s3 = t.admit(Some(b), &l).unwrap();
        assert_eq!(t.admit(Some(b), &l).err(), Some(Refused::Total));
        drop(s1);
        assert_eq!(t.open(), 2);
        let _s4 = t.admit(Some(a), &l).unwrap();
    }

    /// A request takes two places beside its connection's one: HTTP/2 streams on any
    /// number of connections count against the same caps as the connections.
    #[test]
    fn requests_take_places_against_the_same_caps() {
        let t = Arc::new(Table::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let l = limits(5, 8);
        let _c1 = t.admit(Some(a), &l).unwrap();
        let r1 = t.admit_request(Some(a), &l).unwrap();
        let _r2 = t.admit_request(Some(a), &l).unwrap();
        assert_eq!(t.open(), 5);
        // The address holds 5 places: neither a request nor a connection fits.
        assert_eq!(
            t.admit_request(Some(a), &l).err(),
            Some(Refused::PerAddress)
        );
        assert_eq!(t.admit(Some(a), &l).err(), Some(Refused::PerAddress));
        let _c2 = t.admit(Some(b), &l).unwrap();
        let _r3 = t.admit_request(Some(b), &l).unwrap();
        // 8 of 8 places taken: the total cap refuses another address's request.
        assert_eq!(t.admit_request(Some(b), &l).err(), Some(Refused::Total));
        drop(r1);
        assert_eq!(t.open(), 6);
        let _r4 = t.admit_request(Some(a), &l).unwrap();
        assert_eq!(t.open(), 8);
    }

    #[test]
    fn compile_checks_ranges() {
        let budget = Budget::of_nofile(1024);
        let bad = |f: FileLimits| Limits::compile(&f, budget).is_err();
        assert!(bad(FileLimits {
            request_head_timeout_seconds: 0,
            ..FileLimits::default()
        }));
        assert!(bad(FileLimits {
            idle_timeout_seconds: 0,
            ..FileLimits::default()
        }));
        assert!(bad(FileLimits {
            request_body_timeout_seconds: 0,
            ..FileLimits::default()
        }));
        assert!(bad(FileLimits {
            send_timeout_seconds: 0,
            ..FileLimits::default()
        }));
        assert!(bad(FileLimits {
            tls_handshake_timeout_seconds: 61,
            ..FileLimits::default()
        }));
        assert!(bad(FileLimits {
            max_streams_per_connection: 0,
            ..FileLimits::default()
        }));
        assert!(bad(file(Some(2), Some(1))));
        assert!(bad(file(Some(0), Some(1))));
        assert!(
            bad(file(Some(10_000), None)),
            "explicit per-address over the derived total"
        );
    }

    /// Finding 11: the defaults are consistent whatever the open-file limit, and leave the
    /// process its own descriptors and the idle upstream pool.
    #[test]
    fn default_caps_fit_any_open_file_limit() {
        for nofile in [
            0,
            1,
            64,
            100,
            256,
            511,
            512,
            1024,
            4096,
            65_536,
            1 << 20,
            u64::MAX,
        ] {
            let budget = Budget::of_nofile(nofile);
            let l = Limits::compile(&FileLimits::default(), budget)
                .unwrap_or_else(|e| panic!("ulimit -n {nofile}: {e}"));
            assert!(l.max_per_address <= l.max_total, "{nofile}");
            assert!(l.max_total >= 16, "{nofile}");
            if !budget.cramped() {
                let used = RESERVED_DESCRIPTORS + budget.pool as u64 + l.max_total as u64;
                assert!(used <= nofile, "ulimit -n {nofile}: {used} descriptors");
            }
        }
        let b = Budget::of_nofile(256);
        assert_eq!((b.pool, b.places), (16, 176));
        let b = Budget::of_nofile(511);
        assert_eq!((b.pool, b.places), (31, 416));
        let b = Budget::of_nofile(1024);
        assert_eq!((b.pool, b.places), (64, 896));
        assert_eq!(
            Limits::compile(&FileLimits::default(), b)
                .unwrap()
                .max_per_address,
            256
        );
        assert!(!Budget::of_nofile(100).cramped());
        let b = Budget::of_nofile(90);
        assert!(b.cramped());
        let l = Limits::compile(&FileLimits::default(), b).unwrap();
        assert_eq!((l.max_total, l.max_per_address), (16, 16));
    }

    #[test]
    fn pingora_pages_are_recognised() {
        let page = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(pingora_page_status(page), Some(400));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\r\n";
        assert_eq!(pingora_page_status(ours), None);
        assert_eq!(pingora_page_status(b"0\r\n\r\n"), None);
        // A body that merely mentions the header is not a page.
        let body = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n\r\nServer: Pingora\r\n";
        assert_eq!(pingora_page_status(body), None);
    }
}
