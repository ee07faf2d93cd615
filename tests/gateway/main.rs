//! Black-box integration tests for the `mcpgate` binary.
//!
//! Each test starts its own gateway process (`mcpgate run` on free loopback ports), mock IdP and
//! recording upstream through [`harness`] (one launcher, one upstream, one IdP, one raw
//! client, configs from `fixtures/`), sends real HTTP, and checks the status, the RFC 6750
//! challenge, the JSON body and what the upstream received. Every gateway's log is checked
//! for leaked credentials when the gateway is dropped. Tests are named after the item of
//! `SPEC-CHECKLIST.md` they cover (`c<section>_<item>_...`).
//!
//! Set `MCPGATE_BIN` to test another build, `MCPGATE_TEST_LOG` to change the gateway's `RUST_LOG`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apikeys;
mod challenges;
mod check_online;
mod cli;
mod connections;
mod dev;
mod doctor;
mod dpop;
mod failclosed_request;
mod failclosed_response;
mod faults;
mod harness;
mod introspection;
mod issuers;
mod jwks;
mod jwt;
mod limits;
mod mcp;
mod mcp2026;
mod observability;
mod ops;
mod paths;
mod prm;
mod redteam;
mod routing_exact;
mod scaleout;
mod schema;
mod upstream;
mod upstream_auth;
mod upstream_tls;
mod verdicts;
