//! The process: the pingora `Server` with the public proxy and the admin listener, the
//! certificate resolver of the public listener, and draining on SIGTERM.
//!
//! Top layer: used by `mcpgate run` and `mcpgate dev` (and the benches). Nothing here
//! decides a request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
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
) -> Result<Service<connections::Guard<pingora_proxy::HttpProxy<proxy::Gateway>>>, String> {
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
    proxy.add_tcp(&listeners.address);
    Ok(proxy)
}

/// Assemble a pingora server with the public proxy and the admin listener.
pub fn build_server(
    config: Config,
    opts: RunOptions,
) -> Result<(Server, Arc<GatewayState>), String> {
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
    let admin_addr = config.listeners.admin_address.clone();
    let state = Arc::new(GatewayState::new(config)?);
    metrics::config_state(true);
    drain_on_sigterm(&state, grace);
    if let Some(path) = opts.watch {
        state::reload::spawn(path, state.clone())?;
    }
    let proxy = proxy_service(&server, &state)?;
    server.add_service(proxy);
    let mut admin = Service::new(
        "mcpgate admin".to_string(),
        admin::Admin {
            state: state.clone(),
        },
    );
    admin.add_tcp(&admin_addr);
    server.add_service(admin);
    Ok((server, state))
}

/// `mcpgate run`: load the config at `path`, serve it, reload it when it changes.
pub fn run(path: &std::path::Path) -> std::process::ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let opts = RunOptions {
        watch: Some(path.to_path_buf()),
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
