//! mcpgate: an OAuth 2.1 resource-server gateway for MCP servers, on pingora.
//!
//! A request flows one way: listener → [`routing`] (host, path, metadata) →
//! [`credentials`] → [`auth`] (token) → [`policy`] → [`identity`] headers → upstream.
//! Every refusal leaves through [`error::Refusal`]. Side work (JWKS refresh) runs in the
//! background and is read on the hot path through lock-free snapshots.
//!
//! [`Gateway`] is what pingora runs; [`build_server`] assembles the pingora `Server`
//! (public proxy service, admin service) used by `mcpgate run` and `mcpgate dev`.

pub mod admin;
pub mod auth;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod error;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod metadata;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::jwks::Fetcher;

/// State shared by the proxy and the admin listener.
pub struct GatewayState {
    pub config: ArcSwap<Config>,
    pub auth: Authenticator,
    pub fetcher: Arc<Fetcher>,
    pub resolver: upstream::Resolver,
}

impl GatewayState {
    /// Names of issuers used by a route that have no usable keys.
    pub fn unready_issuers(&self) -> Vec<String> {
        let config = self.config.load();
        config
            .issuers_in_use()
            .into_iter()
            .filter_map(|i| {
                let ic = &config.issuers[i];
                match self.auth.issuer_keys(&ic.issuer) {
                    Some(k) if k.is_ready() => None,
                    _ => Some(ic.name.to_string()),
                }
            })
            .collect()
    }
}

/// The pingora proxy application.
pub struct Gateway {
    pub state: Arc<GatewayState>,
}

impl Gateway {
    /// Build the gateway for a compiled config and start its background work.
    pub fn new(config: Config) -> Result<Gateway, String> {
        let fetcher = Fetcher::new()?;
        let auth = Authenticator::new(&config, &fetcher);
        auth.start(&config);
        Ok(Gateway {
            state: Arc::new(GatewayState {
                config: ArcSwap::from_pointee(config),
                auth,
                fetcher,
                resolver: upstream::Resolver::default(),
            }),
        })
    }
}

/// Install the process-wide rustls crypto provider exactly once (rustls 0.23 panics
/// when several are compiled in and none is chosen).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Assemble a pingora server with the public proxy and the admin listener.
pub fn build_server(config: Config) -> Result<(Server, Arc<GatewayState>), String> {
    install_crypto_provider();
    let listen = config.listen_address.clone();
    let admin_addr = config.admin_address.clone();
    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let gateway = Gateway::new(config)?;
    let state = gateway.state.clone();
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "mcpgate proxy",
    );
    proxy.add_tcp(&listen);
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
