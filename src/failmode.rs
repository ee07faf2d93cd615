//! What a feature does when the shared store (Redis) cannot answer: shared vocabulary of the
//! `state` section (which sets it per feature), DPoP replay and revocations (which apply it).
//!
//! Bottom layer: it imports nothing of ours.

use schemars::JsonSchema;
use serde::Deserialize;

/// What a feature does when Redis cannot answer.
#[derive(Debug, Deserialize, JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Refuse what cannot be checked (503).
    Closed,
    /// Decide without Redis (local state only), counted and logged.
    Open,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::Open => "open",
        }
    }
}
