//! mcpgate: an OAuth 2.1 resource-server gateway for MCP servers, on pingora.
//!
//! A request flows one way: listener → [`routing`] (host, path, metadata) → [`cors`] →
//! [`credentials`] → [`auth`] (token) → [`policy`] → [`identity`] headers → upstream.
//! Every refusal leaves through [`error::Refusal`]. Side work (JWKS refresh in
//! [`jwks`], config reload in [`reload`]) runs in the background; the request path reads
//! one lock-free [`state::Snapshot`] per request.
//!
//! [`Gateway`] is what pingora runs; [`build_server`] assembles the pingora `Server`
//! (public proxy service, admin service) used by `mcpgate run` and `mcpgate dev`.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection_limits;
pub mod connections;
pub mod error;
pub mod identity;
pub mod logs;
pub mod mcp;
pub mod metadata;
pub mod metrics;
pub mod path;
pub mod principal;
pub mod proxy;
pub mod respond;
pub mod routing;
pub mod scope;
pub mod state;
pub mod store;
pub mod streams;
pub mod tls;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use crate::config::Config;
use crate::state::GatewayState;

/// The pingora proxy application.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

/// Write out every buffered log line (before the process exits on its own).
pub fn flush_logs() {
    logs::flush();
}

/// Install the process-wide rustls crypto provider exactly once (rustls 0.23 panics
/// when several are compiled in and none is chosen).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Options of the running process that are not part of the config file.
#[derive(Default)]
pub struct RunOptions {
    /// Watch this file (and what it references) and reload on change or SIGHUP.
    pub watch: Option<PathBuf>,
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
        // Let pingora close its listeners first.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(grace);
        while st.in_flight() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::info!(in_flight = st.in_flight(), "drained; exiting");
        flush_logs();
        std::process::exit(0);
    });
}

/// Assemble a pingora server with the public proxy and the admin listener.
pub fn build_server(
    config: Config,
    opts: RunOptions,
) -> Result<(Server, Arc<GatewayState>), String> {
    install_crypto_provider();
    let listen = config.listen_address.clone();
    let admin_addr = config.admin_address.clone();
    let tls = config.tls.is_some();
    let grace = config.shutdown_grace_seconds;
    let config_idle = config.connections.idle_timeout;
    let conf = ServerConf {
        threads: config.threads,
        // pingora sleeps the whole grace period after SIGTERM; `drain_on_sigterm`
        // exits as soon as the requests in flight are done.
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    routing::log_warnings(&config);
    let state = Arc::new(GatewayState::new(config)?);
    metrics::config_state(true);
    drain_on_sigterm(&state, grace);
    if let Some(path) = opts.watch {
        state::reload::spawn(path, state.clone())?;
    }

    let gateway = Gateway {
        state: state.clone(),
    };
    let mut http = pingora_proxy::http_proxy(&server.configuration, gateway);
    // HTTP/2 connections without an open stream close after the idle timeout (HTTP/1.1
    // idle and head deadlines are `connections::Watched`'s).
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(config_idle);
    http.server_options = Some(options);
    metrics::register_connection_metrics();
    let limits_state = state.clone();
    let guard = connections::Guard {
        inner: Arc::new(http),
        table: Arc::default(),
        limits: Box::new(move || limits_state.snapshot.load().config.connections.clone()),
    };
    let mut proxy = Service::new("mcpgate proxy".to_string(), guard);
    if tls {
        let mut settings =
            TlsSettings::intermediate("", "").map_err(|e| format!("TLS settings: {e}"))?;
        settings.set_cert_resolver(Arc::new(tls::SnapshotCertResolver {
            state: state.clone(),
        }));
        settings.enable_h2();
        proxy.add_tls_with_settings(&listen, None, settings);
    } else {
        proxy.add_tcp(&listen);
    }
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
