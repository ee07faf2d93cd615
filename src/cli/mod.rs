//! The subcommands of `mcpgate` other than serving: each a plain function `main.rs` calls.
//!
//! - [`dev`]: the embedded default with a development issuer and a demo MCP server;

pub mod dev;
