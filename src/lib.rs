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
pub mod background;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod config;
pub mod connections;
pub mod error;
pub mod failmode;
pub mod identity;
pub mod listeners;
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
pub mod server;
pub mod state;
pub mod store;
pub mod streams;
pub mod upstream;

pub use proxy::Gateway;
pub use server::{build_server, install_crypto_provider, RunOptions};

/// Write out every buffered log line (before the process exits on its own).
pub fn flush_logs() {
    logs::flush();
}
