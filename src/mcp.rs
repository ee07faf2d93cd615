//! MCP awareness: what a JSON-RPC request asks for, and what it takes to be allowed.
//!
//! Sits between the token step and the upstream for routes with tool-level policy
//! (or requests carrying the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers): the buffered
//! request body is parsed once into [`Calls`] (each message's [`Op`]: method plus tool
//! name, canonical resource URI or prompt name), the mirrored headers are checked against
//! the body, and each operation is matched against the route's ordered glob patterns to
//! find the extra scopes it needs. Method names are compared exactly as the spec writes
//! them ([`METHODS_NAMING`], [`METHODS_NAMING_NOTHING`]); any other string is an unknown
//! method, decided by `default_tool_policy`. The body is forwarded unchanged.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

pub use crate::error::jsonrpc::{HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR};
pub use crate::error::McpError;
use crate::scope::RequiredScope;

/// The first protocol revision whose clients must mirror method and name into headers.
pub const HEADERS_REQUIRED_FROM: &str = "2026-07-28";

/// A JSON string, borrowed from the body when it has no escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Walk a JSON object, handing each member we police to `take`. A member whose name
/// equals a policed one but for letter case is refused: an upstream that matches names
/// case-insensitively would otherwise act on a value we never judged. Exact duplicates
/// are refused too.
fn walk_members<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
    policed: &[&str],
    mut take: impl FnMut(&str, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    use serde::de::Error;
    let mut seen: u32 = 0;
    while let Some(key) = map.next_key::<Str<'de>>()? {
        let key = key.0;
        match policed.iter().position(|p| p.eq_ignore_ascii_case(&key)) {
            Some(i) if policed[i] == key => {
                if seen & (1 << i) != 0 {
                    return Err(A::Error::custom("duplicate member"));
                }
                seen |= 1 << i;
                take(policed[i], &mut map)?;
            }
            Some(_) => return Err(A::Error::custom("member name differs only in case")),
            None => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Params<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    /// `completion/complete`'s `ref`, read once the method is known.
    reference: Option<&'a RawValue>,
    /// `subscriptions/listen`'s `notifications`, read once the method is known.
    notifications: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Params<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Params<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a params object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Params<'de>, A::Error> {
                let mut p = Params::default();
                walk_members(map, &["name", "uri", "ref", "notifications"], |k, m| {
                    match k {
                        "name" => p.name = Some(m.next_value::<Str<'de>>()?.0),
                        "uri" => p.uri = Some(m.next_value::<Str<'de>>()?.0),
                        "ref" => p.reference = Some(m.next_value::<&'de RawValue>()?),
                        _ => p.notifications = Some(m.next_value::<&'de RawValue>()?),
                    }
                    Ok(())
                })?;
                Ok(p)
            }
        }
        d.deserialize_map(V)
    }
}

/// `completion/complete`'s `params.ref`: `{"type": "ref/prompt", "name"}` or
/// `{"type": "ref/resource", "uri"}`.
#[derive(Default)]
struct Reference<'a> {
    kind: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Reference<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Reference<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a ref object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Reference<'de>, A::Error> {
                let mut r = Reference::default();
                walk_members(map, &["type", "name", "uri"], |k, m| {
                    let v = Some(m.next_value::<Str<'de>>()?.0);
                    match k {
                        "type" => r.kind = v,
                        "name" => r.name = v,
                        _ => r.uri = v,
                    }
                    Ok(())
                })?;
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

/// `subscriptions/listen`'s `params.notifications.resourceSubscriptions` (2026-07-28).
#[derive(Default)]
struct Listen<'a> {
    resources: Vec<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Listen<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Listen<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a notifications object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Listen<'de>, A::Error> {
                let mut l = Listen::default();
                walk_members(map, &["resourceSubscriptions"], |_, m| {
                    let uris = m.next_value::<Vec<Str<'de>>>()?;
                    l.resources = uris.into_iter().map(|s| s.0).collect();
                    Ok(())
                })?;
                Ok(l)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Default)]
struct Message<'a> {
    method: Option<Cow<'a, str>>,
    id: Option<&'a RawValue>,
    params: Option<Params<'a>>,
    /// Has `result` or `error`: a JSON-RPC response (clients may send them before
    /// 2026-07-28), which asks for nothing.
    response: bool,
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Message<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Message<'de>, A::Error> {
                let mut m = Message::default();
                let policed = ["method", "id", "params", "result", "error", "jsonrpc"];
                walk_members(map, &policed, |k, a| {
                    match k {
                        "method" => m.method = Some(a.next_value::<Str<'de>>()?.0),
                        "id" => m.id = Some(a.next_value::<&'de RawValue>()?),
                        "params" => m.params = Some(a.next_value::<Params<'de>>()?),
                        "result" | "error" => {
                            m.response = true;
                            a.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                    Ok(())
                })?;
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// Every client-to-server method of MCP 2025-06-18, 2025-11-25 and 2026-07-28 (the
/// `ClientRequest` and `ClientNotification` unions of each revision's `schema.ts`) that
/// names no tool, resource or prompt. The ones that do are matched in [`op_of`]; any
/// other string, however close to one of these, is an unknown method.
pub const METHODS_NAMING_NOTHING: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "logging/setLevel",
    // 2025-11-25: tasks
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    // 2026-07-28
    "server/discover",
    // notifications
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
];

/// The methods that name something, each judged by the matching rules.
pub const METHODS_NAMING: &[&str] = &[
    "tools/call",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/get",
    "completion/complete",
    "subscriptions/listen",
];

/// What one JSON-RPC message asks for. Resource URIs are held in their canonical
/// spelling ([`crate::resource_uri::normalize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    ToolsCall(String),
    ResourcesRead(String),
    ResourcesSubscribe(String),
    ResourcesUnsubscribe(String),
    PromptsGet(String),
    /// `completion/complete` with a `ref/prompt`.
    CompletePrompt(String),
    /// `completion/complete` with a `ref/resource` (a URI template).
    CompleteResource(String),
    /// `subscriptions/listen`: the resources it subscribes to (maybe none).
    SubscriptionsListen(Vec<String>),
    ToolsList,
    /// A known method that names nothing.
    Known(&'static str),
    /// A method not in the table (`"Tools/Call"`, `"tools/call "`, a vendor extension...):
    /// decided by `default_tool_policy`, and under `allow` by what its `params.name`
    /// and `params.uri` would name.
    Unknown {
        method: String,
        name: Option<String>,
        uri: Option<String>,
    },
    /// A JSON-RPC response or error from the client: asks for nothing.
    Response,
}

impl Op {
    pub fn method(&self) -> &str {
        match self {
            Op::ToolsCall(_) => "tools/call",
            Op::ResourcesRead(_) => "resources/read",
            Op::ResourcesSubscribe(_) => "resources/subscribe",
            Op::ResourcesUnsubscribe(_) => "resources/unsubscribe",
            Op::PromptsGet(_) => "prompts/get",
            Op::CompletePrompt(_) | Op::CompleteResource(_) => "completion/complete",
            Op::SubscriptionsListen(_) => "subscriptions/listen",
            Op::ToolsList => "tools/list",
            Op::Known(m) => m,
            Op::Unknown { method, .. } => method,
            Op::Response => "",
        }
    }

    /// The tool, resource or prompt this operation names, for the audit line.
    pub fn name(&self) -> Option<&str> {
        match self {
            Op::ToolsCall(n)
            | Op::ResourcesRead(n)
            | Op::ResourcesSubscribe(n)
            | Op::ResourcesUnsubscribe(n)
            | Op::PromptsGet(n)
            | Op::CompletePrompt(n)
            | Op::CompleteResource(n) => Some(n),
            Op::SubscriptionsListen(u) => u.first().map(String::as_str),
            Op::Unknown { name, uri, .. } => name.as_deref().or(uri.as_deref()),
            _ => None,
        }
    }
}

/// The raw values of a single message that `Mcp-Method` and `Mcp-Name` mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `None` for a JSON-RPC response.
    pub method: Option<String>,
    /// `params.name` or `params.uri` as sent, for the methods whose name is mirrored
    /// (`tools/call`, `resources/read`, `prompts/get`).
    pub name: Option<String>,
}

/// A parsed request body: one message or a batch.
#[derive(Debug)]
pub struct Calls {
    pub ops: Vec<Op>,
    pub batch: bool,
    /// Raw id of a single request, for error bodies.
    pub id: Option<Box<str>>,
    /// What the mirrored headers of a single message must equal.
    pub mirror: Option<Mirror>,
}

fn uri_of(raw: &str) -> Result<String, McpError> {
    crate::resource_uri::normalize(raw).map_err(|e| McpError::new(INVALID_PARAMS, e.describe()))
}

fn op_of(m: Message<'_>) -> Result<(Op, Mirror), McpError> {
    let Some(method) = m.method else {
        if m.response {
            // A JSON-RPC response from the client (allowed before 2026-07-28): asks nothing.
            let mirror = Mirror {
                method: None,
                name: None,
            };
            return Ok((Op::Response, mirror));
        }
        return Err(McpError::new(
            INVALID_REQUEST,
            "message has neither a method nor a result or error",
        ));
    };
    let need = |v: Option<&Cow<'_, str>>, what: &'static str| {
        v.map(|s| s.to_string())
            .ok_or_else(|| McpError::new(INVALID_REQUEST, what))
    };
    let params = m.params.unwrap_or_default();
    let mut mirrored = None;
    let op = match method.as_ref() {
        "tools/call" => {
            let n = need(params.name.as_ref(), "tools/call without params.name")?;
            mirrored = Some(n.clone());
            Op::ToolsCall(n)
        }
        "resources/read" => {
            let u = need(params.uri.as_ref(), "resources/read without params.uri")?;
            let canonical = uri_of(&u)?;
            mirrored = Some(u);
            Op::ResourcesRead(canonical)
        }
        "resources/subscribe" => Op::ResourcesSubscribe(uri_of(&need(
            params.uri.as_ref(),
            "resources/subscribe without params.uri",
        )?)?),
        "resources/unsubscribe" => Op::ResourcesUnsubscribe(uri_of(&need(
            params.uri.as_ref(),
            "resources/unsubscribe without params.uri",
        )?)?),
        "prompts/get" => {
            let n = need(params.name.as_ref(), "prompts/get without params.name")?;
            mirrored = Some(n.clone());
            Op::PromptsGet(n)
        }
        "completion/complete" => {
            let bad = || {
                McpError::new(
                    INVALID_PARAMS,
                    "completion/complete needs params.ref of type ref/prompt with a name or ref/resource with a uri",
                )
            };
            let raw = params.reference.ok_or_else(bad)?;
            let r: Reference<'_> = serde_json::from_str(raw.get()).map_err(|_| bad())?;
            match (r.kind.as_deref(), r.name, r.uri) {
                (Some("ref/prompt"), Some(n), None) => Op::CompletePrompt(n.into_owned()),
                (Some("ref/resource"), None, Some(u)) => Op::CompleteResource(uri_of(&u)?),
                _ => return Err(bad()),
            }
        }
        "subscriptions/listen" => {
            let resources = match params.notifications {
                None => Vec::new(),
                Some(raw) => {
                    let l: Listen<'_> = serde_json::from_str(raw.get()).map_err(|_| {
                        McpError::new(
                            INVALID_PARAMS,
                            "subscriptions/listen params.notifications is malformed",
                        )
                    })?;
                    l.resources
                        .iter()
                        .map(|u| uri_of(u))
                        .collect::<Result<Vec<_>, _>>()?
                }
            };
            Op::SubscriptionsListen(resources)
        }
        "tools/list" => Op::ToolsList,
        other => match METHODS_NAMING_NOTHING.iter().find(|k| **k == other) {
            Some(k) => Op::Known(k),
            None => Op::Unknown {
                method: other.to_string(),
                name: params.name.map(Cow::into_owned),
                uri: params.uri.as_deref().map(uri_of).transpose()?,
            },
        },
    };
    let mirror = Mirror {
        method: Some(method.into_owned()),
        name: mirrored,
    };
    Ok((op, mirror))
}

/// Parse a request body. Malformed JSON or a non-object message is an error, and so is
/// a URI or reference the gateway cannot judge.
pub fn parse(body: &[u8]) -> Result<Calls, McpError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let msgs: Vec<Message<'_>> = serde_json::from_slice(body)
            .map_err(|_| McpError::new(PARSE_ERROR, "Parse error: body is not a JSON-RPC batch"))?;
        if msgs.is_empty() {
            return Err(McpError::new(INVALID_REQUEST, "empty JSON-RPC batch"));
        }
        let ops = msgs
            .into_iter()
            .map(|m| op_of(m).map(|(op, _)| op))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Calls {
            ops,
            batch: true,
            id: None,
            mirror: None,
        });
    }
    let m: Message<'_> = serde_json::from_slice(body)
        .map_err(|_| McpError::new(PARSE_ERROR, "Parse error: body is not a JSON-RPC message"))?;
    let id = m.id.map(|r| Box::from(r.get()));
    let (op, mirror) = op_of(m).map_err(|mut e| {
        e.id = id.clone();
        e
    })?;
    Ok(Calls {
        ops: vec![op],
        batch: false,
        id,
        mirror: Some(mirror),
    })
}

/// Decode an `Mcp-Name` value: plain visible ASCII, or the `=?base64?…?=` sentinel.
pub fn decode_header_value(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    if let Some(inner) = s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = STANDARD.decode(inner).ok()?;
        return String::from_utf8(bytes).ok();
    }
    if s.bytes().all(|b| (0x20..=0x7e).contains(&b) || b == b'\t') {
        Some(s.to_string())
    } else {
        None
    }
}

/// Check the mirrored headers against the body (2026-07-28 Server Validation).
/// `protocol` is the `MCP-Protocol-Version` header, `method`/`name` the mirrored headers.
pub fn check_headers(
    calls: &Calls,
    protocol: Option<&[u8]>,
    method: Option<&[u8]>,
    name: Option<&[u8]>,
) -> Result<(), McpError> {
    let mismatch = |message| McpError {
        code: HEADER_MISMATCH,
        message,
        id: calls.id.clone(),
    };
    let modern = protocol
        .and_then(|p| std::str::from_utf8(p).ok())
        .is_some_and(|p| p >= HEADERS_REQUIRED_FROM);
    if method.is_none() && name.is_none() && !modern {
        return Ok(());
    }
    if calls.batch {
        return Err(mismatch(
            "Mcp-Method and Mcp-Name cannot describe a JSON-RPC batch",
        ));
    }
    let Some(mirror) = calls.mirror.as_ref() else {
        return Ok(());
    };
    let Some(body_method) = mirror.method.as_deref() else {
        return Ok(()); // a response: carries no method
    };
    match method {
        None if modern => return Err(mismatch("Header mismatch: Mcp-Method header is missing")),
        None => {}
        Some(m) if m != body_method.as_bytes() => {
            return Err(mismatch(
                "Header mismatch: Mcp-Method does not match the body method",
            ))
        }
        Some(_) => {}
    }
    match (mirror.name.as_deref(), name) {
        (Some(_), None) if modern || method.is_some() => {
            Err(mismatch("Header mismatch: Mcp-Name header is missing"))
        }
        (Some(body), Some(h)) => match decode_header_value(h) {
            Some(v) if v == body => Ok(()),
            Some(_) => Err(mismatch(
                "Header mismatch: Mcp-Name does not match the body",
            )),
            None => Err(mismatch(
                "Header mismatch: Mcp-Name is not a valid header value",
            )),
        },
        (None, Some(_)) => Err(mismatch(
            "Header mismatch: Mcp-Name given for a method without a name",
        )),
        _ => Ok(()),
    }
}

/// One ordered pattern of a tool, resource or prompt policy.
#[derive(Debug)]
pub struct Rule {
    pub pattern: String,
    matcher: wildmatch::WildMatch,
    pub scopes: Vec<RequiredScope>,
}

impl Rule {
    pub fn new(pattern: &str, scopes: Vec<RequiredScope>) -> Rule {
        Rule {
            pattern: pattern.to_string(),
            matcher: wildmatch::WildMatch::new(pattern),
            scopes,
        }
    }

    /// A `resources` rule: its pattern is put in the canonical spelling the URIs are
    /// matched in ([`crate::resource_uri::canonical_pattern`]).
    pub fn resource(self) -> Result<Rule, String> {
        let p = crate::resource_uri::canonical_pattern(&self.pattern).ok_or_else(|| {
            format!(
                "resources: pattern {:?} holds a malformed percent-encoding or a control character",
                self.pattern
            )
        })?;
        Ok(Rule::new(&p, self.scopes))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPolicy {
    #[default]
    Allow,
    Deny,
}

/// A route's MCP policy, compiled.
#[derive(Debug, Default)]
pub struct Policy {
    pub tools: Vec<Rule>,
    pub resources: Vec<Rule>,
    pub prompts: Vec<Rule>,
    pub default: DefaultPolicy,
    pub filter_tools_list: bool,
}

/// What one operation needs beyond the route's scopes.
#[derive(Debug, PartialEq, Eq)]
pub enum Need<'a> {
    Scopes(&'a [RequiredScope]),
    /// No pattern matched and the default is deny.
    Denied,
}

impl Policy {
    /// Whether requests on the route must have their body inspected.
    pub fn inspects(&self) -> bool {
        !self.tools.is_empty()
            || !self.resources.is_empty()
            || !self.prompts.is_empty()
            || self.default == DefaultPolicy::Deny
            || self.filter_tools_list
    }

    fn lookup<'a>(&'a self, rules: &'a [Rule], name: &str) -> Need<'a> {
        match rules.iter().find(|r| r.matcher.matches(name)) {
            Some(r) => Need::Scopes(&r.scopes),
            None if self.default == DefaultPolicy::Deny => Need::Denied,
            None => Need::Scopes(&[]),
        }
    }

    /// What calling tool `name` needs.
    pub fn tool(&self, name: &str) -> Need<'_> {
        self.lookup(&self.tools, name)
    }

    /// What an operation needs beyond the route's scopes: one entry per tool, resource
    /// or prompt it names (first matching pattern, in config order), none when it names
    /// nothing. A method not in the table is `Denied` under `default_tool_policy: deny`;
    /// under `allow` it needs what its `params.name` would need as a tool and as a prompt
    /// and what its `params.uri` would need as a resource, since the gateway cannot know
    /// which the upstream will take it for.
    pub fn needs<'a>(&'a self, op: &Op) -> Vec<Need<'a>> {
        match op {
            Op::ToolsCall(n) => vec![self.lookup(&self.tools, n)],
            Op::ResourcesRead(u)
            | Op::ResourcesSubscribe(u)
            | Op::ResourcesUnsubscribe(u)
            | Op::CompleteResource(u) => vec![self.lookup(&self.resources, u)],
            Op::PromptsGet(n) | Op::CompletePrompt(n) => vec![self.lookup(&self.prompts, n)],
            Op::SubscriptionsListen(uris) => uris
                .iter()
                .map(|u| self.lookup(&self.resources, u))
                .collect(),
            Op::Unknown { .. } if self.default == DefaultPolicy::Deny => vec![Need::Denied],
            Op::Unknown { name, uri, .. } => {
                let mut out = Vec::new();
                if let Some(n) = name {
                    out.push(self.lookup(&self.tools, n));
                    out.push(self.lookup(&self.prompts, n));
                }
                if let Some(u) = uri {
                    out.push(self.lookup(&self.resources, u));
                }
                out
            }
            Op::ToolsList | Op::Known(_) | Op::Response => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn scope(s: &str) -> RequiredScope {
        RequiredScope {
            name: s.into(),
            satisfied_by: vec![s.into()],
        }
    }

    #[test]
    fn parses_calls() {
        let c = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"x":1}}}"#).unwrap();
        assert_eq!(c.ops, vec![Op::ToolsCall("read_file".into())]);
        assert_eq!(c.id.as_deref(), Some("7"));
        let c = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a"}}]"#).unwrap();
        assert!(c.batch);
        assert_eq!(c.ops[1], Op::ResourcesRead("file:///a".into()));
        // escaped names are compared decoded
        let c = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9"}}"#,
        )
        .unwrap();
        assert_eq!(c.ops[0], Op::ToolsCall("café".into()));
        assert_eq!(parse(b"{not json").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse(b"[]").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}}"#)
                .unwrap_err()
                .id
                .as_deref(),
            Some("3")
        );
        assert_eq!(parse(b"42").unwrap_err().code, PARSE_ERROR);
        // case variants and duplicates of policed members are refused
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"Method":"tools/call","Params":{"Name":"rm"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","METHOD":"tools/call"}"#,
        ] {
            assert!(parse(body.as_bytes()).is_err(), "{body}");
        }
        // a message with neither method nor result/error asks for something we cannot see
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1}"#).unwrap_err().code,
            INVALID_REQUEST
        );
        assert!(parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_ok());
        // arguments may use any member names
        assert!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"Name":"x","name":"y"}}}"#).is_ok());
    }

    #[test]
    fn header_validation() {
        let c = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9"}}"#,
        )
        .unwrap();
        let b64 = format!("=?base64?{}?=", STANDARD.encode("café"));
        assert!(check_headers(&c, None, Some(b"tools/call"), Some(b64.as_bytes())).is_ok());
        assert!(check_headers(&c, None, None, None).is_ok());
        assert_eq!(
            check_headers(&c, Some(b"2026-07-28"), None, None)
                .unwrap_err()
                .code,
            HEADER_MISMATCH
        );
        assert!(check_headers(&c, None, Some(b"tools/call"), None).is_err());
        assert!(check_headers(&c, None, Some(b"tools/list"), Some(b64.as_bytes())).is_err());
        let c = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file"}}"#,
        )
        .unwrap();
        assert!(check_headers(&c, None, Some(b"tools/call"), Some(b"read_file")).is_err());
        assert!(check_headers(&c, Some(b"2025-11-25"), None, None).is_ok());
    }

    #[test]
    fn method_table_and_naming_methods() {
        let op = |b: &str| parse(b.as_bytes()).map(|c| c.ops.into_iter().next().unwrap());
        assert_eq!(
            op(
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"FILE:///a/./b"}}"#
            ),
            Ok(Op::ResourcesSubscribe("file:///a/b".into()))
        );
        assert_eq!(
            op(
                r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"b"}}}"#
            ),
            Ok(Op::CompletePrompt("p".into()))
        );
        assert_eq!(
            op(
                r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{x}"}}}"#
            ),
            Ok(Op::CompleteResource("file:///%7Bx%7D".into()))
        );
        assert_eq!(
            op(
                r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///a","file:///b"]}}}"#
            ),
            Ok(Op::SubscriptionsListen(vec![
                "file:///a".into(),
                "file:///b".into()
            ]))
        );
        assert_eq!(
            op(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Op::Known("ping"))
        );
        assert_eq!(
            op(r#"{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"rm"}}"#),
            Ok(Op::Unknown {
                method: "Tools/Call".into(),
                name: Some("rm".into()),
                uri: None
            })
        );
        for bad in [
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"x"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p","uri":"x:y"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"Type":"ref/prompt","name":"p"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a/../b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///%2e%2e/x"]}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":"file:///a"}}}"#,
        ] {
            assert!(op(bad).is_err(), "{bad}");
        }
        // Mcp-Name mirrors the URI as sent, not its canonical spelling.
        let c = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///%61"}}"#,
        )
        .unwrap();
        assert_eq!(c.ops[0], Op::ResourcesRead("file:///a".into()));
        assert!(check_headers(&c, None, Some(b"resources/read"), Some(b"file:///%61")).is_ok());
        assert!(check_headers(&c, None, Some(b"resources/read"), Some(b"file:///a")).is_err());
        // Every method of the table is known.
        for m in METHODS_NAMING_NOTHING {
            let b = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{m}"}}"#);
            assert!(matches!(op(&b), Ok(Op::Known(_) | Op::ToolsList)), "{m}");
        }
        // Bad resource patterns are refused at load.
        assert!(Rule::new("file:///%zz/*", vec![]).resource().is_err());
        assert_eq!(
            Rule::new("FILE:///caf%c3%a9/*", vec![])
                .resource()
                .unwrap()
                .pattern,
            "file:///caf%C3%A9/*"
        );
    }

    impl Policy {
        /// The one need of an operation that names at most one thing.
        fn need<'a>(&'a self, op: &Op) -> Need<'a> {
            let mut n = self.needs(op);
            assert!(n.len() <= 1, "{op:?} names several things");
            n.pop().unwrap_or(Need::Scopes(&[]))
        }
    }

    #[test]
    fn first_matching_pattern_wins() {
        let p = Policy {
            tools: vec![
                Rule::new("read_*", vec![scope("repo:read")]),
                Rule::new("delete_*", vec![scope("repo:admin")]),
                Rule::new("*", vec![]),
            ],
            resources: vec![Rule::new("file:///secrets/*", vec![scope("secrets:read")])],
            ..Policy::default()
        };
        assert!(
            matches!(p.need(&Op::ToolsCall("read_x".into())), Need::Scopes(s) if s[0].name == "repo:read")
        );
        assert!(
            matches!(p.need(&Op::ToolsCall("delete_x".into())), Need::Scopes(s) if s[0].name == "repo:admin")
        );
        assert_eq!(p.need(&Op::ToolsCall("other".into())), Need::Scopes(&[]));
        assert!(
            matches!(p.need(&Op::ResourcesRead("file:///secrets/a/b".into())), Need::Scopes(s) if s.len() == 1)
        );
        let deny = Policy {
            tools: vec![Rule::new("safe_*", vec![])],
            default: DefaultPolicy::Deny,
            ..Policy::default()
        };
        assert_eq!(deny.need(&Op::ToolsCall("rm".into())), Need::Denied);
        assert_eq!(deny.need(&Op::PromptsGet("p".into())), Need::Denied);
        assert_eq!(deny.need(&Op::ToolsList), Need::Scopes(&[]));
    }
}
