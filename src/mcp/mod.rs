//! MCP awareness: what a JSON-RPC request asks for, what it takes to be allowed, and what
//! the client may see of the answer.
//!
//! Sits between the token step and the upstream for routes with an MCP policy (or requests
//! carrying the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers), and on the way back on
//! `filter_tools_list` routes:
//!
//! - [`shape`]: what a request on a policy route may look like (methods, bodies, mirrored
//!   headers): the three steps `head` → read the body → `body` → `authorize`;
//! - [`body`]: the JSON-RPC parse of a request body into operations;
//! - [`headers`]: the mirrored headers and their agreement with the body;
//! - [`params`]: `Mcp-Param-*` headers against the `tools/call` arguments (SEP-2243);
//! - [`json`]: JSON read strictly (a repeated member is an error);
//! - [`protocol`]: the protocol versions a route lets through;
//! - [`policy`]: the route's tool, resource and prompt rules against a principal's scopes;
//! - [`resource_uri`]: resource URIs in one canonical spelling;
//! - [`sessions`]: `Mcp-Session-Id` bound to the upstream and the identity that opened it;
//! - [`lists`]: the way back: tool, resource and prompt lists filtered (and marked
//!   private), unreadable answers refused;
//! - [`catalog`]: what the lists that passed said of each tool, per upstream server;
//! - [`pins`]: tool-definition pinning (`pin_tools`);
//! - [`view`]: what one caller may see of a list, and what a list teaches the catalog.

pub mod body;
pub mod catalog;
pub mod headers;
pub mod json;
pub mod lists;
pub mod params;
pub mod pins;
pub mod policy;
pub mod protocol;
pub mod resource_uri;
pub mod sessions;
pub mod shape;
pub mod view;
