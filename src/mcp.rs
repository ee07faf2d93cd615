//! MCP awareness: what a JSON-RPC request asks for, and what it takes to be allowed.
//!
//! Sits between the token step and the upstream for routes with tool-level policy
//! (or requests carrying the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers): the buffered
//! POST body is parsed once into [`Call`]s (method plus tool name, resource URI or prompt
//! name), the mirrored headers are checked against the body, and each call is matched
//! against the route's ordered glob patterns to find the extra scopes it needs.
//! The body is forwarded unchanged.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::RequiredScope;

/// JSON-RPC error codes we answer with.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const HEADER_MISMATCH: i64 = -32020;

/// The first protocol revision whose clients must mirror method and name into headers.
pub const HEADERS_REQUIRED_FROM: &str = "2026-07-28";

/// Why an MCP request was refused before reaching the upstream (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpError {
    pub code: i64,
    pub message: &'static str,
    /// The request id, as raw JSON, when known.
    pub id: Option<Box<str>>,
}

impl McpError {
    fn new(code: i64, message: &'static str) -> McpError {
        McpError {
            code,
            message,
            id: None,
        }
    }

    /// JSON-RPC error response body.
    pub fn body(&self) -> Vec<u8> {
        let id = self.id.as_deref().unwrap_or("null");
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{},"message":{}}}}}"#,
            self.code,
            serde_json::Value::from(self.message)
        )
        .into_bytes()
    }
}

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
                walk_members(map, &["name", "uri"], |k, m| {
                    let v = m.next_value::<Str<'de>>()?.0;
                    match k {
                        "name" => p.name = Some(v),
                        _ => p.uri = Some(v),
                    }
                    Ok(())
                })?;
                Ok(p)
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

/// What one JSON-RPC message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    ToolsCall(String),
    ResourcesRead(String),
    PromptsGet(String),
    ToolsList,
    /// Any other method, or a response/notification we do not police.
    Other(String),
}

impl Op {
    pub fn method(&self) -> &str {
        match self {
            Op::ToolsCall(_) => "tools/call",
            Op::ResourcesRead(_) => "resources/read",
            Op::PromptsGet(_) => "prompts/get",
            Op::ToolsList => "tools/list",
            Op::Other(m) => m,
        }
    }

    /// The value mirrored in `Mcp-Name`, for the methods that have one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Op::ToolsCall(n) | Op::ResourcesRead(n) | Op::PromptsGet(n) => Some(n),
            _ => None,
        }
    }
}

/// A parsed request body: one message or a batch.
#[derive(Debug)]
pub struct Calls {
    pub ops: Vec<Op>,
    pub batch: bool,
    /// Raw id of a single request, for error bodies.
    pub id: Option<Box<str>>,
}

fn op_of(m: Message<'_>) -> Result<Op, McpError> {
    let Some(method) = m.method else {
        if m.response {
            // A JSON-RPC response from the client (allowed before 2026-07-28): asks nothing.
            return Ok(Op::Other(String::new()));
        }
        return Err(McpError::new(
            INVALID_REQUEST,
            "message has neither a method nor a result or error",
        ));
    };
    let need = |v: Option<Cow<'_, str>>, what: &'static str| {
        v.map(|s| s.into_owned())
            .ok_or_else(|| McpError::new(INVALID_REQUEST, what))
    };
    let params = m.params;
    let (name, uri) = match params {
        Some(p) => (p.name, p.uri),
        None => (None, None),
    };
    Ok(match method.as_ref() {
        "tools/call" => Op::ToolsCall(need(name, "tools/call without params.name")?),
        "resources/read" => Op::ResourcesRead(need(uri, "resources/read without params.uri")?),
        "prompts/get" => Op::PromptsGet(need(name, "prompts/get without params.name")?),
        "tools/list" => Op::ToolsList,
        other => Op::Other(other.to_string()),
    })
}

/// Parse a POST body. Malformed JSON or a non-object message is an error.
pub fn parse(body: &[u8]) -> Result<Calls, McpError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let msgs: Vec<Message<'_>> = serde_json::from_slice(body)
            .map_err(|_| McpError::new(PARSE_ERROR, "Parse error: body is not a JSON-RPC batch"))?;
        if msgs.is_empty() {
            return Err(McpError::new(INVALID_REQUEST, "empty JSON-RPC batch"));
        }
        let ops = msgs.into_iter().map(op_of).collect::<Result<Vec<_>, _>>()?;
        return Ok(Calls {
            ops,
            batch: true,
            id: None,
        });
    }
    let m: Message<'_> = serde_json::from_slice(body)
        .map_err(|_| McpError::new(PARSE_ERROR, "Parse error: body is not a JSON-RPC message"))?;
    let id = m.id.map(|r| Box::from(r.get()));
    let op = op_of(m).map_err(|mut e| {
        e.id = id.clone();
        e
    })?;
    Ok(Calls {
        ops: vec![op],
        batch: false,
        id,
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
    let Some(op) = calls.ops.first() else {
        return Ok(());
    };
    if op.method().is_empty() {
        return Ok(()); // a response: carries no method
    }
    match method {
        None if modern => return Err(mismatch("Header mismatch: Mcp-Method header is missing")),
        None => {}
        Some(m) if m != op.method().as_bytes() => {
            return Err(mismatch(
                "Header mismatch: Mcp-Method does not match the body method",
            ))
        }
        Some(_) => {}
    }
    match (op.name(), name) {
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

    /// Extra scopes for an operation (first matching pattern, in config order).
    pub fn need<'a>(&'a self, op: &Op) -> Need<'a> {
        match op {
            Op::ToolsCall(n) => self.lookup(&self.tools, n),
            Op::ResourcesRead(u) => self.lookup(&self.resources, u),
            Op::PromptsGet(n) => self.lookup(&self.prompts, n),
            _ => Need::Scopes(&[]),
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
