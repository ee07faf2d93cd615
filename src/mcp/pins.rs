//! Tool-definition pinning (`pin_tools`): a route remembers what each tool of its upstream
//! looked like when it was approved, and notices when an answer describes it differently.
//!
//! A tool's definition is its `name`, `description`, `inputSchema` and `annotations`; its
//! pin is the SHA-256 of those members in canonical JSON ([`definition_hash`]: object keys
//! sorted at every depth, no white space, absent members left out). The pin comes from the
//! route's pinned file when it has one (`pin_tools.file`, written by `mcpgate pin`: the
//! file is the approved set, and a tool it does not list is not approved), else from the
//! first definition of the tool this gateway process saw in an answer (kept per upstream in
//! [`crate::mcp::catalog`]). With `mode: enforce` a tool whose definition differs from its
//! pin is removed from `tools/list` answers and a `tools/call` of it is refused (403
//! `tool_changed`); with `mode: report` both pass, and the change is counted
//! (`mcpgate_tool_definition_changes_total`) and written to the audit log. The EMA
//! extension's §7.2.1 ("tool snapshot tracking") asks for this; MCP itself does not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::compile::{yaml_error, CompileError};

/// Largest pinned file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// What a route does with a tool whose definition differs from its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PinMode {
    /// Hide it from lists and refuse its calls.
    Enforce,
    /// Let it through; count and log the change.
    Report,
}

impl PinMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PinMode::Enforce => "enforce",
            PinMode::Report => "report",
        }
    }
}

/// A route's `pin_tools`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilePins {
    pub mode: PinMode,
    /// The pinned file (relative to the config file); without it, first-seen definitions.
    pub file: Option<PathBuf>,
}

/// The pinned file: what `mcpgate pin` writes.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinFile {
    pub tools: Vec<PinnedTool>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedTool {
    pub name: String,
    /// [`definition_hash`] in hex.
    pub sha256: String,
}

pub type Hash = [u8; 32];

/// A route's compiled `pin_tools`.
#[derive(Debug)]
pub struct Pins {
    pub mode: PinMode,
    /// The pinned file and its pins; `None`: first-seen definitions.
    pub file: Option<(PathBuf, HashMap<Box<str>, Hash>)>,
}

/// How a tool's definition compares with its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The definition is the pinned one.
    Pinned,
    /// It differs from the pin.
    Changed,
    /// The pinned file does not list the tool.
    Unlisted,
}

impl Pins {
    /// Check and load a route's `pin_tools` (`config_file` locates a relative file).
    pub fn compile(f: FilePins, config_file: &str) -> Result<Pins, CompileError> {
        let file = match f.file {
            None => None,
            Some(p) => {
                let path = crate::compile::relative_to(config_file, p);
                let pins = load(&path)?;
                Some((path, pins))
            }
        };
        Ok(Pins { mode: f.mode, file })
    }

    /// The verdict on a definition hashing to `hash`, whose first-seen pin is `first` (when
    /// there is no pinned file).
    pub fn verdict(
        &self,
        name: &str,
        hash: &Hash,
        first: impl FnOnce() -> Option<Hash>,
    ) -> Verdict {
        let pinned = match &self.file {
            Some((_, pins)) => match pins.get(name) {
                Some(p) => *p,
                None => return Verdict::Unlisted,
            },
            None => match first() {
                Some(p) => p,
                None => return Verdict::Pinned,
            },
        };
        if pinned == *hash {
            Verdict::Pinned
        } else {
            Verdict::Changed
        }
    }

    /// The file to watch, if any.
    pub fn path(&self) -> Option<&PathBuf> {
        self.file.as_ref().map(|(p, _)| p)
    }
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash in hex, for the audit line and the pinned file.
pub fn to_hex(h: &Hash) -> String {
    hex(h)
}

fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Read a pinned file.
pub fn load(path: &Path) -> Result<HashMap<Box<str>, Hash>, CompileError> {
    let name = path.display().to_string();
    let err = |reason: String| CompileError::in_file(&name, None, None, reason);
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read pinned file: {e}")))?;
    if meta.len() > MAX_FILE {
        return Err(err(format!("pinned file is larger than {MAX_FILE} bytes")));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("cannot read pinned file: {e}")))?;
    let parsed: PinFile = serde_yaml::from_str(&text).map_err(|e| {
        let (line, column, reason) = yaml_error(&e);
        CompileError::in_file(&name, line, column, reason)
    })?;
    let mut out = HashMap::with_capacity(parsed.tools.len());
    for t in parsed.tools {
        let h = parse_hex(&t.sha256).ok_or_else(|| {
            err(format!(
                "tool {:?}: sha256 must be 64 hex digits (the output of `mcpgate pin`)",
                t.name
            ))
        })?;
        if out.insert(t.name.clone().into_boxed_str(), h).is_some() {
            return Err(err(format!("tool {:?} is listed twice", t.name)));
        }
    }
    Ok(out)
}

/// The members of a tool that make its definition.
pub const DEFINITION: [&str; 4] = ["name", "description", "inputSchema", "annotations"];

/// Write `v` as canonical JSON: object keys sorted (by their UTF-8 bytes) at every depth, no
/// white space, strings and numbers as serde_json writes them.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                canonical(&o[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The pin of a tool definition: SHA-256 of its [`DEFINITION`] members in canonical JSON.
pub fn definition_hash(tool: &Map<String, Value>) -> Hash {
    let mut def = Map::new();
    for k in DEFINITION {
        if let Some(v) = tool.get(k) {
            def.insert(k.to_string(), v.clone());
        }
    }
    let mut text = String::new();
    canonical(&Value::Object(def), &mut text);
    Sha256::digest(text.as_bytes()).into()
}

/// The pinned file for `tools` (definitions as a `tools/list` answer gives them), sorted by
/// name, with a comment saying what it is.
pub fn render_file(route: &str, tools: &[Map<String, Value>]) -> Result<String, String> {
    let mut pins: Vec<PinnedTool> = tools
        .iter()
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?.to_string();
            Some(PinnedTool {
                name,
                sha256: hex(&definition_hash(t)),
            })
        })
        .collect();
    pins.sort_by(|a, b| a.name.cmp(&b.name));
    for w in pins.windows(2) {
        if w[0].name == w[1].name {
            return Err(format!("the upstream lists tool {:?} twice", w[0].name));
        }
    }
    let yaml = serde_yaml::to_string(&PinFile { tools: pins }).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Tool definitions of route {route:?} approved by `mcpgate pin`: SHA-256 of each tool's\n\
         # name, description, inputSchema and annotations (canonical JSON). Review, then point\n\
         # the route's pin_tools.file here.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_hash_covers_the_definition_and_nothing_else() {
        let a = obj(
            json!({"name":"t","description":"d","inputSchema":{"type":"object","properties":{"b":{},"a":{}}}}),
        );
        // Key order and members outside the definition do not matter...
        let b = obj(
            json!({"inputSchema":{"properties":{"a":{},"b":{}},"type":"object"},"title":"x","description":"d","name":"t","_meta":{"k":1}}),
        );
        assert_eq!(definition_hash(&a), definition_hash(&b));
        // ...every member of it does.
        for changed in [
            json!({"name":"t","description":"d2","inputSchema":{"type":"object","properties":{"b":{},"a":{}}}}),
            json!({"name":"t","description":"d","inputSchema":{"type":"object","properties":{"b":{},"a":{},"c":{}}}}),
            json!({"name":"t","description":"d","inputSchema":{"type":"object","properties":{"b":{},"a":{}}},"annotations":{"destructiveHint":true}}),
            json!({"name":"u","description":"d","inputSchema":{"type":"object","properties":{"b":{},"a":{}}}}),
            json!({"name":"t","inputSchema":{"type":"object","properties":{"b":{},"a":{}}}}),
        ] {
            assert_ne!(
                definition_hash(&a),
                definition_hash(&obj(changed.clone())),
                "{changed}"
            );
        }
        let mut s = String::new();
        canonical(&json!({"b":[1,{"d":"é","c":null}],"a":true}), &mut s);
        assert_eq!(s, r#"{"a":true,"b":[1,{"c":null,"d":"é"}]}"#);
    }

    #[test]
    fn verdicts_against_a_file_or_the_first_definition() {
        let t = obj(json!({"name":"t","description":"d"}));
        let h = definition_hash(&t);
        let first = Pins {
            mode: PinMode::Enforce,
            file: None,
        };
        assert_eq!(first.verdict("t", &h, || None), Verdict::Pinned);
        assert_eq!(first.verdict("t", &h, || Some(h)), Verdict::Pinned);
        assert_eq!(first.verdict("t", &h, || Some([0; 32])), Verdict::Changed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.yaml");
        std::fs::write(&path, render_file("r", std::slice::from_ref(&t)).unwrap()).unwrap();
        let filed = Pins::compile(
            FilePins {
                mode: PinMode::Report,
                file: Some(path.clone()),
            },
            "c.yaml",
        )
        .unwrap();
        assert_eq!(filed.verdict("t", &h, || None), Verdict::Pinned);
        assert_eq!(filed.verdict("t", &[1; 32], || None), Verdict::Changed);
        assert_eq!(filed.verdict("other", &h, || None), Verdict::Unlisted);
        for bad in [
            "tools: [{name: t, sha256: xyz}]",
            "tools: [{name: t, sha256: 0000000000000000000000000000000000000000000000000000000000000000}, {name: t, sha256: 0000000000000000000000000000000000000000000000000000000000000000}]",
            "tools: []\nextra: 1",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(load(&path).is_err(), "{bad}");
        }
    }
}
