//! The subcommands of `mcpgate` other than serving, each a plain function `main.rs` calls:
//! [`check`] (and its [`online`] checks), [`doctor`], [`schema`], [`dev`] (the embedded default
//! with a development issuer and a demo MCP server), [`hash_key`], [`revoke`] (a client of the
//! admin listener) and [`pin`] (the pinned tool definitions of a route's server).

pub mod check;
pub mod dev;
pub mod doctor;
pub mod hash_key;
pub mod online;
pub mod pin;
pub mod revoke;
pub mod schema;
