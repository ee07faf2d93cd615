//! What one caller may see of an upstream's lists: the [`View`] the list judge of
//! [`crate::mcp::lists`] asks, built per answer from the route's policy, the caller's
//! principal and the [`Catalog`] of the route's upstream server.
//!
//! - tools (`filter_tools_list`): the tool rules, as for calling; with `pin_tools` in
//!   `enforce` mode, also hidden when the definition differs from its pin;
//! - resources and resource templates (`filter_resources_list`): the resource rules, as for
//!   reading, on the URI (or template) in its canonical spelling; one that cannot be put in
//!   it is hidden;
//! - prompts (`filter_prompts_list`): the prompt rules, as for getting.
//!
//! Every tool of a tool list answering a `tools/list` (filtered or not) is recorded in the
//! catalog first: its `Mcp-Param-*` declarations and its definition's hash. The definition
//! changes found (against the pins) are kept for the caller to count and log.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::McpError;
use crate::mcp::catalog::Catalog;
use crate::mcp::lists::{Kind, View};
use crate::mcp::pins::{Hash, PinMode, Verdict};
use crate::mcp::policy::{visible, Listed, Policy};
use crate::principal::Principal;
use crate::scope::RequiredScope;

/// A tool whose definition differs from its pin (or is not in the pinned file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tool: String,
    pub verdict: Verdict,
    /// The definition seen now.
    pub seen: Hash,
}

/// One caller's view of one answer.
pub struct CallerView<'a> {
    pub required: &'a [RequiredScope],
    pub policy: &'a Policy,
    pub principal: Option<&'a Principal>,
    pub catalog: &'a Catalog,
    pub server: &'a Arc<str>,
    /// The answer is to a `tools/list`: its tools are learned.
    pub learn: bool,
    /// Now, in Unix seconds (for the `ttlMs` bound).
    pub now: i64,
    /// Definition changes found in this answer.
    pub changes: RefCell<Vec<Change>>,
}

impl CallerView<'_> {
    /// Whether a tool's definition (hash `seen`) is hidden by `pin_tools` in `enforce` mode.
    fn pin_hides(&self, name: &str, item: &Map<String, Value>) -> bool {
        let Some(pins) = &self.policy.pins else {
            return false;
        };
        if pins.mode != PinMode::Enforce {
            return false;
        }
        let seen = crate::mcp::pins::definition_hash(item);
        let verdict = pins.verdict(name, &seen, || self.catalog.first(self.server, name));
        verdict != Verdict::Pinned
    }
}

impl View for CallerView<'_> {
    fn filters(&self, kind: Kind) -> bool {
        match kind {
            Kind::Tools => self.policy.filter_tools_list || self.policy.pins_enforced(),
            Kind::Resources | Kind::ResourceTemplates => self.policy.filter_resources_list,
            Kind::Prompts => self.policy.filter_prompts_list,
        }
    }

    fn keep(&self, kind: Kind, name: &str, item: &Map<String, Value>) -> bool {
        let (what, name) = match kind {
            Kind::Tools => {
                if self.pin_hides(name, item) {
                    return false;
                }
                if !self.policy.filter_tools_list {
                    return true;
                }
                (Listed::Tool, name.to_string())
            }
            Kind::Resources | Kind::ResourceTemplates => {
                match crate::mcp::resource_uri::normalize(name) {
                    Ok(n) => (Listed::Resource, n),
                    Err(_) => return false,
                }
            }
            Kind::Prompts => (Listed::Prompt, name.to_string()),
        };
        visible(self.required, self.policy, self.principal, what, &name)
    }

    fn saw_tool(&self, name: &str, item: &Map<String, Value>) {
        if !self.learn {
            return;
        }
        let learned = self.catalog.learn(self.server, name, item);
        if let Some(pins) = &self.policy.pins {
            let verdict = pins.verdict(name, &learned.hash, || Some(learned.first));
            if verdict != Verdict::Pinned {
                self.changes.borrow_mut().push(Change {
                    tool: name.to_string(),
                    verdict,
                    seen: learned.hash,
                });
            }
        }
    }

    fn ttl_cap_ms(&self) -> Option<u64> {
        let p = self.principal?;
        Some((p.exp.saturating_sub(self.now).max(0) as u64).saturating_mul(1000))
    }
}

/// Whether a `tools/call` of `name` is refused by `pin_tools` (`enforce` only): the last
/// list that passed gave a definition other than the pin, or the pinned file does not list
/// the tool. A tool no list has named yet is not refused here (its definition is unknown;
/// the next list that names it is checked).
pub fn call_refused(policy: &Policy, catalog: &Catalog, server: &Arc<str>, name: &str) -> bool {
    call_verdict(policy, catalog, server, name)
        .is_some_and(|(mode, v)| mode == PinMode::Enforce && v != Verdict::Pinned)
}

/// The pin verdict on the definition last seen of `name` (with the route's mode), if the
/// route pins and a list named the tool (or the pinned file does not list it).
pub fn call_verdict(
    policy: &Policy,
    catalog: &Catalog,
    server: &Arc<str>,
    name: &str,
) -> Option<(PinMode, Verdict)> {
    let pins = policy.pins.as_ref()?;
    let seen = catalog.seen(server, name);
    let verdict = match (&pins.file, seen) {
        (Some((_, listed)), None) if !listed.contains_key(name) => Verdict::Unlisted,
        (_, None) => return None,
        (_, Some(s)) => pins.verdict(name, &s.hash, || catalog.first(server, name)),
    };
    Some((pins.mode, verdict))
}

/// What [`check_calls`] let through without checking, for the caller to count and log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallNotes {
    /// A `tools/call` carried `Mcp-Param-*` headers for a tool whose schema is unknown (or
    /// invalid): forwarded unchanged, as the spec requires of intermediaries.
    pub params_unchecked: bool,
    /// Tools called whose definitions differ from their pins (`pin_tools` in `report` mode).
    pub changed: Vec<String>,
}

/// The `tools/call`s of a request against what the lists taught: `pin_tools` (403
/// `tool_changed` in `enforce` mode) and, for a single message, the `Mcp-Param-*` headers
/// against its arguments (400, -32020) when its tool's declarations are known. `body` is
/// the request body the calls were parsed from.
pub fn check_calls(
    policy: &Policy,
    catalog: &Catalog,
    server: &Arc<str>,
    headers: &http::HeaderMap,
    body: &[u8],
    calls: &crate::mcp::body::Calls,
) -> Result<CallNotes, crate::error::Refusal> {
    use crate::mcp::body::Op;
    let mut notes = CallNotes::default();
    for op in &calls.ops {
        // A method not in the table that names something may be taken for a tool call by the
        // upstream (`Tools/Call`): its name is held to the tool's pin as well.
        let name = match op {
            Op::ToolsCall(name)
            | Op::Unknown {
                name: Some(name), ..
            } => name,
            _ => continue,
        };
        match call_verdict(policy, catalog, server, name) {
            Some((PinMode::Enforce, v)) if v != Verdict::Pinned => {
                return Err(crate::error::Refusal::ToolChanged)
            }
            Some((PinMode::Report, v)) if v != Verdict::Pinned => notes.changed.push(name.clone()),
            _ => {}
        }
    }
    let sent = headers
        .keys()
        .any(|k| k.as_str().starts_with(crate::mcp::params::PREFIX));
    if calls.batch && sent {
        // The headers mirror one message; on a batch they could describe any element.
        return Err(crate::error::Refusal::Mcp(McpError::new(
            crate::error::jsonrpc::HEADER_MISMATCH,
            "Header mismatch: Mcp-Param headers on a batch",
        )));
    }
    let (Some(mirror), false) = (calls.mirror.as_ref(), calls.batch) else {
        return Ok(notes);
    };
    let Some(Op::ToolsCall(name)) = calls.ops.first() else {
        return Ok(notes);
    };
    let decls = catalog.seen(server, name).and_then(|s| s.params.clone());
    let Some(decls) = decls else {
        notes.params_unchecked = sent;
        return Ok(notes);
    };
    let modern_header = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v >= crate::mcp::headers::HEADERS_REQUIRED_FROM);
    let modern_body = mirror
        .version
        .as_deref()
        .is_some_and(|v| v >= crate::mcp::headers::HEADERS_REQUIRED_FROM);
    let arguments = mirror.arguments.clone().and_then(|r| body.get(r));
    crate::mcp::params::check(
        &decls,
        headers,
        arguments,
        modern_header || modern_body,
        calls.id.as_deref(),
    )
    .map_err(crate::error::Refusal::Mcp)?;
    Ok(notes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::Refusal;
    use crate::mcp::body::parse;
    use crate::mcp::pins::Pins;
    use serde_json::json;

    fn policy(mode: Option<PinMode>) -> Policy {
        Policy {
            pins: mode.map(|mode| Pins { mode, file: None }),
            ..Policy::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn calls_against_pins_and_params() {
        let catalog = Catalog::default();
        let server: Arc<str> = Arc::from("http://u/mcp");
        let v1 = json!({"name":"t","inputSchema":{"properties":{"r":{"type":"string","x-mcp-header":"R"}}}});
        let v2 = json!({"name":"t","description":"changed","inputSchema":{"properties":{"r":{"type":"string","x-mcp-header":"R"}}}});
        let enforce = policy(Some(PinMode::Enforce));
        let check = |p: &Policy, h: &[(&str, &str)], body: &str| {
            check_calls(
                p,
                &catalog,
                &server,
                &headers(h),
                body.as_bytes(),
                &parse(body.as_bytes()).unwrap(),
            )
        };
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"r":"x"}}}"#;
        // Unknown tool: headers forwarded, noted.
        assert!(
            check(&enforce, &[("mcp-param-r", "y")], call)
                .unwrap()
                .params_unchecked
        );
        catalog.learn(&server, "t", v1.as_object().unwrap());
        assert_eq!(
            check(&enforce, &[("mcp-param-r", "x")], call).unwrap(),
            CallNotes::default()
        );
        assert!(matches!(
            check(&enforce, &[("mcp-param-r", "y")], call),
            Err(Refusal::Mcp(_))
        ));
        // Mcp-Param headers on a batch: refused; a batch without them is judged on pins.
        let batch = format!("[{call}]");
        assert!(matches!(
            check(&enforce, &[("mcp-param-r", "x")], &batch),
            Err(Refusal::Mcp(_))
        ));
        assert!(check(&enforce, &[], &batch).is_ok());
        // The definition changes: enforce refuses (a misspelt method too), report notes.
        catalog.learn(&server, "t", v2.as_object().unwrap());
        assert!(matches!(
            check(&enforce, &[("mcp-param-r", "x")], call),
            Err(Refusal::ToolChanged)
        ));
        assert!(matches!(
            check(&enforce, &[], &batch),
            Err(Refusal::ToolChanged)
        ));
        let odd = r#"{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"t"}}"#;
        assert!(matches!(
            check(&enforce, &[], odd),
            Err(Refusal::ToolChanged)
        ));
        let report = policy(Some(PinMode::Report));
        assert_eq!(
            check(&report, &[("mcp-param-r", "x")], call)
                .unwrap()
                .changed,
            ["t"]
        );
        assert_eq!(
            check(&policy(None), &[("mcp-param-r", "x")], call).unwrap(),
            CallNotes::default()
        );
    }
}
