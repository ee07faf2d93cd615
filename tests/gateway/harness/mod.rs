//! The test harness: one of each thing a black-box test of the gateway needs, every server on
//! loopback and owned by one test.
//!
//! | module | holds |
//! |---|---|
//! | [`gateway`] | the one launcher of the binary ([`Gateway`]: free ports, temp config laid out as asked, captured log checked for credentials on drop, signals, reload helpers) and [`run_cli`] for one-shot commands |
//! | [`env`] | [`Env`]: an IdP, an upstream and a gateway on a rendered fixture, and the common assertions on them |
//! | [`fixtures`] | the YAML fixtures of `tests/gateway/fixtures/` and [`render`] |
//! | [`upstream`] | the one recording upstream ([`Upstream`]) |
//! | [`idp`] | the one mock authorization server ([`MockIdp`]: JWKS, RFC 8414/OIDC metadata, introspection, failure modes) and [`Canary`] |
//! | [`server`] | the one accept loop under every mock, and the replies they give ([`Reply`]) |
//! | [`http`] | the one raw HTTP/1.1 client ([`Req`], [`Resp`], [`Stream`]) and request framing |
//! | [`tls`] | the TLS and HTTP/2 clients and a throw-away CA ([`Pki`]) |
//! | [`metrics`] | the one `/metrics` parser (strict exposition format) |
//! | [`tokens`] | keys, JWS, tokens, DPoP proofs, and the register of secrets logs are checked against |
//! | [`assert`] | RFC 6750 challenge parsing and the refusal assertions |
//! | [`poll`] | waiting for a condition, bounded (no fixed sleeps) |
//! | [`ports`] | ports a test can prove are its own |
//! | [`redis`] | a real `redis-server` for the scale-out tests |
//! | `selftest` | the harness's own tests: its checks can fail |

#![allow(dead_code)] // helpers are shared by many test modules; not all use every one

mod assert;
mod env;
mod fixtures;
mod gateway;
mod http;
mod idp;
mod metrics;
mod poll;
mod ports;
mod redis;
mod selftest;
mod server;
mod tls;
mod tokens;
mod upstream;

pub use assert::*;
pub use env::*;
pub use fixtures::*;
pub use gateway::*;
pub use http::*;
pub use idp::*;
pub use metrics::*;
pub use poll::*;
pub use ports::*;
pub use redis::Redis;
pub use server::*;
pub use tls::*;
pub use tokens::*;
pub use upstream::*;
