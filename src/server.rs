//! The process: the pingora `Server` with the public proxy and the admin listener, the
//! certificate resolver of the public listener, and draining on SIGTERM.
//!
//! Every listening socket is bound here, before pingora starts ([`Bound`]): an address that
//! cannot be had is one error line and a non-zero exit, not pingora's minute of retries and
//! panicking service threads in a process that goes on running. The bound sockets reach
//! pingora through its table of listening file descriptors (the one a graceful upgrade
//! fills), so it never binds them itself.
//!
//! Top layer: used by `mcpgate run` and `mcpgate dev` (and the benches). Nothing here
//! decides a request.

use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{ListenFds, RuntimeOpts, Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::services::{ServiceReadyNotifier, ServiceWithDependents};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::state::GatewayState;
use crate::{admin, connections, metrics, proxy, state};

/// After SIGTERM, how long pingora gets to close its listeners before the drain is timed.
const LISTENERS_CLOSE: Duration = Duration::from_millis(200);
/// How often the drain looks at the requests in flight.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Install the process-wide rustls crypto provider exactly once (rustls 0.23 panics
/// when several are compiled in and none is chosen).
pub fn install_crypto_provider() {
    // Err means a provider is installed already (a second server in the process, a test):
    // that one is aws-lc-rs too, installed by this function.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Options of the running process that are not part of the config file.
#[derive(Default)]
pub struct RunOptions {
    /// Watch this file (and what it references) and reload on change or SIGHUP.
    pub watch: Option<PathBuf>,
    /// The public and admin sockets, when the caller bound them already (`mcpgate dev`
    /// binds every port before it writes its config); bound from the config otherwise.
    pub sockets: Option<GatewaySockets>,
}

/// A TCP socket bound and listening before pingora starts, under the address text pingora
/// is given for it.
#[derive(Debug)]
pub struct Bound {
    addr: String,
    listener: TcpListener,
}

impl Bound {
    /// Binds `addr` (`host:port`; the first address it resolves to, as pingora does) and
    /// listens. The error is one line naming the address: `127.0.0.1:8080 is in use`.
    pub fn bind(addr: &str) -> Result<Bound, String> {
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot listen on {addr}: it resolves to no address"))?;
        // std sets SO_REUSEADDR on Unix, as pingora does: a restart does not wait out the
        // TIME_WAIT connections of the previous process.
        let listener = TcpListener::bind(resolved).map_err(|e| bind_error(addr, &e))?;
        // pingora hands the descriptor to tokio, which needs it non-blocking.
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        Ok(Bound {
            addr: addr.to_string(),
            listener,
        })
    }

    /// The address as given (the key pingora looks the socket up by).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The address the socket is bound to (its port when port 0 was asked for).
    pub fn local_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.listener
            .local_addr()
            .map_err(|e| format!("{}: {e}", self.addr))
    }

    /// The same socket known under another address text (`127.0.0.1:0` bound, then named
    /// by its real port so that the config and the listener agree).
    pub fn rename(self, addr: String) -> Bound {
        Bound {
            addr,
            listener: self.listener,
        }
    }
}

/// The one line for a socket that cannot be had.
fn bind_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("{addr} is in use"),
        std::io::ErrorKind::PermissionDenied => {
            format!("cannot listen on {addr}: permission denied (ports below 1024 need privileges)")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!("cannot listen on {addr}: not an address of this machine")
        }
        _ => format!("cannot listen on {addr}: {e}"),
    }
}

/// The gateway's own two sockets.
#[derive(Debug)]
pub struct GatewaySockets {
    pub public: Bound,
    pub admin: Bound,
}

impl GatewaySockets {
    /// Binds `listen.address` and `admin.address` of `config`, naming the setting that
    /// holds an address that cannot be had.
    pub fn bind(config: &Config) -> Result<GatewaySockets, String> {
        let l = &config.listeners;
        let public = Bound::bind(&l.address).map_err(|e| format!("{e} (listen.address)"))?;
        let admin = Bound::bind(&l.admin_address).map_err(|e| format!("{e} (admin.address)"))?;
        Ok(GatewaySockets { public, admin })
    }
}

/// A pingora service whose sockets were bound before the server started: they are put in
/// the server's table of listening descriptors, where pingora's listener setup takes them
/// instead of binding (and instead of retrying for a minute when the address is taken).
struct Prebound<S> {
    inner: S,
    sockets: Vec<Bound>,
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Prebound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        match &fds {
            Some(table) => {
                let mut table = table.lock();
                for b in self.sockets.drain(..) {
                    table.add(b.addr, b.listener.into_raw_fd());
                }
            }
            // Never on Unix (pingora always passes its table there); pingora binds the
            // addresses itself, so ours are closed first.
            None => self.sockets.clear(),
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
            .await
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }
    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }
    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }
    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// Keeps the process's memory in 4 KiB pages. mimalloc asks for transparent huge pages on
/// its arenas (`madvise`), and then every connection's buffers count in RSS in whole 2 MiB
/// pages, touched or not: an idle SSE stream measured 191 KiB of RSS with them and 71 KiB
/// without, at the same throughput (bench/README.md, "Open streams"). Setting
/// `MIMALLOC_ALLOW_THP` (to anything) leaves the choice to mimalloc.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and changes a flag
        // of this process; it fails (ignored: the page size is not a correctness matter)
        // only on kernels older than 3.15.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Adds `app` to `server` as a plain TCP service on the already bound `socket`.
pub fn add_service<A: ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    name: &str,
    app: A,
    socket: Bound,
) {
    let mut service = Service::new(name.to_string(), app);
    service.add_tcp(socket.addr());
    server.add_service(Prebound {
        inner: service,
        sockets: vec![socket],
    });
}

/// Serves the certificate of the current config snapshot at each TLS handshake, so a
/// reload swaps it without a restart.
#[derive(Debug)]
pub struct SnapshotCertResolver {
    pub state: Arc<GatewayState>,
}

impl ResolvesServerCert for SnapshotCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.state.snapshot.load().config.listeners.tls_key.clone()
    }
}

/// After SIGTERM pingora stops accepting and closes idle keep-alive connections; we
/// exit 0 as soon as no request is in flight (or when the grace period ends).
fn drain_on_sigterm(state: &Arc<GatewayState>, grace: u64) {
    let st = state.clone();
    state.fetcher.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            tracing::warn!("cannot watch SIGTERM; shutdown will wait the whole grace period");
            return;
        };
        if term.recv().await.is_none() {
            return;
        }
        tracing::info!(
            grace_seconds = grace,
            in_flight = st.in_flight(),
            "SIGTERM: draining"
        );
        tokio::time::sleep(LISTENERS_CLOSE).await;
        let deadline = Instant::now() + Duration::from_secs(grace);
        while st.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        tracing::info!(in_flight = st.in_flight(), "drained; exiting");
        crate::logs::flush();
        std::process::exit(0);
    });
}

/// The public proxy service: the pingora HTTP proxy behind the connection guard, which
/// runs the TLS handshake itself on a TLS listener (so that a connection is counted from
/// its accept and its handshake has a deadline).
fn proxy_service(
    server: &Server,
    state: &Arc<GatewayState>,
    socket: Bound,
) -> Result<Prebound<Service<connections::Guard<pingora_proxy::HttpProxy<proxy::Gateway>>>>, String>
{
    let config = state.config();
    let listeners = &config.listeners;
    let table = Arc::new(connections::Table::default());
    let gateway = proxy::Gateway {
        state: state.clone(),
        table: table.clone(),
    };
    let mut http = pingora_proxy::http_proxy(&server.configuration, gateway);
    // HTTP/2 connections without an open stream close after the idle timeout (HTTP/1.1
    // idle and head deadlines are `connections::Watched`'s).
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.connections.idle_timeout);
    http.server_options = Some(options);
    // Concurrent streams per HTTP/2 connection (pingora's default is 100).
    let mut h2 = pingora_core::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(config.connections.max_streams);
    http.h2_options = Some(h2);
    metrics::register_connection_metrics();
    metrics::register_global_metrics();
    let tls = match &listeners.tls {
        None => None,
        Some(_) => {
            let mut settings =
                TlsSettings::intermediate("", "").map_err(|e| format!("TLS settings: {e}"))?;
            settings.set_cert_resolver(Arc::new(SnapshotCertResolver {
                state: state.clone(),
            }));
            settings.enable_h2();
            Some(settings.build())
        }
    };
    let limits_state = state.clone();
    let guard = connections::Guard {
        inner: Arc::new(http),
        table,
        limits: Box::new(move || limits_state.snapshot.load().config.connections.clone()),
        tls,
    };
    let mut proxy = Service::new("mcpgate proxy".to_string(), guard);
    proxy.add_tcp(socket.addr());
    Ok(Prebound {
        inner: proxy,
        sockets: vec![socket],
    })
}

/// Assemble a pingora server with the public proxy and the admin listener.
pub fn build_server(
    config: Config,
    opts: RunOptions,
) -> Result<(Server, Arc<GatewayState>), String> {
    // First of all, before anything starts or logs: the sockets.
    let sockets = match opts.sockets {
        Some(s) => s,
        None => GatewaySockets::bind(&config)?,
    };
    install_crypto_provider();
    let grace = config.listeners.shutdown_grace_seconds;
    // The idle upstream connection pool is part of the descriptor budget (see
    // `connections::Budget`); pingora keeps this many per thread.
    let pool = config
        .connections
        .budget
        .unwrap_or_else(connections::Budget::of_process)
        .pool;
    let conf = ServerConf {
        threads: config.listeners.threads,
        upstream_keepalive_pool_size: pool.div_ceil(config.listeners.threads.max(1)),
        // pingora sleeps the whole grace period after SIGTERM; `drain_on_sigterm`
        // exits as soon as the requests in flight are done.
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    crate::config::log_warnings(&config);
    let state = Arc::new(GatewayState::new(config)?);
    metrics::config_state(true);
    drain_on_sigterm(&state, grace);
    if let Some(path) = opts.watch {
        state::reload::spawn(path, state.clone())?;
    }
    let proxy = proxy_service(&server, &state, sockets.public)?;
    server.add_service(proxy);
    let admin = admin::Admin {
        state: state.clone(),
    };
    add_service(&mut server, "mcpgate admin", admin, sockets.admin);
    Ok((server, state))
}

/// `mcpgate run`: load the config at `path`, serve it, reload it when it changes.
pub fn run(path: &std::path::Path) -> std::process::ExitCode {
    no_transparent_huge_pages();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let opts = RunOptions {
        watch: Some(path.to_path_buf()),
        sockets: None,
    };
    match build_server(config, opts) {
        Ok((server, _)) => server.run_forever(),
        Err(e) => {
            crate::logs::flush();
            eprintln!("mcpgate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
