//! mcpgate: an OAuth 2.1 resource-server gateway for MCP servers, on pingora.
//!
//! A request flows one way: [`connections`] → [`proxy`], which calls its [`proxy::steps`] in
//! order: route ([`routing`]) → origin ([`routing::cors`]) → credentials and token
//! ([`auth`]) → principal (revocations, audience, subject) → DPoP → session → policy
//! ([`mcp`]) → identity headers ([`identity`]) → upstream. Every response the gateway writes
//! itself leaves through [`respond`]; why a request is refused is an [`error::Refusal`].
//! Side work (key refresh, introspection, Redis, config reload) runs in the background; the
//! request path reads one lock-free [`state::Snapshot`] per request.
//!
//! Layers point one way (`tests/modcycles.py` checks it): the bottom layer ([`error`],
//! [`principal`], [`scope`], [`clock`], [`path`], [`compile`], [`failmode`], [`logs`])
//! imports nothing of ours; domain modules own their sections of the configuration and
//! never import [`config`], which only reads, delegates and aggregates; [`state`],
//! [`proxy`], [`admin`], [`server`] and [`cli`] sit on top.
//!
//! [`Gateway`] is what pingora runs; [`build_server`] assembles the pingora `Server`
//! (public proxy service, admin service) used by `mcpgate run` and `mcpgate dev`.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod background;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod config;
pub mod connections;
pub mod error;
pub mod failmode;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod identity;
pub mod listeners;
pub mod logs;
pub mod mcp;
pub mod metadata;
pub mod metrics;
pub mod observe;
pub mod path;
pub mod principal;
pub mod procstat;
pub mod proxy;
pub mod quota;
pub mod respond;
pub mod routing;
pub mod scope;
pub mod server;
pub mod state;
pub mod store;
pub mod streams;
pub mod upstream;
pub mod upstream_auth;

pub use proxy::Gateway;
pub use server::{build_server, install_crypto_provider, RunOptions};

/// Write out every buffered log line (before the process exits on its own).
pub fn flush_logs() {
    logs::flush();
}
