//! The MCP request body: one JSON-RPC message or a batch, parsed once into [`Calls`] (each
//! message's [`Op`]: method plus tool name, canonical resource URI or prompt name).
//!
//! Method names are compared exactly as the spec writes them ([`METHODS_NAMING`],
//! [`METHODS_NAMING_NOTHING`]); any other string is an unknown method, decided by
//! `default_tool_policy`. Members the policy reads are refused when repeated or spelled in
//! another letter case. The body itself is forwarded unchanged.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::jsonrpc::{INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR};
use crate::error::McpError;

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
    /// `tools/call`'s `arguments`, kept raw (the `Mcp-Param-*` check reads them when the
    /// tool declares headers).
    arguments: Option<&'a RawValue>,
    /// `_meta`, read for the 2026-07-28 protocol version claim.
    meta: Option<&'a RawValue>,
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
                let policed = ["name", "uri", "ref", "notifications", "arguments", "_meta"];
                walk_members(map, &policed, |k, m| {
                    match k {
                        "name" => p.name = Some(m.next_value::<Str<'de>>()?.0),
                        "uri" => p.uri = Some(m.next_value::<Str<'de>>()?.0),
                        "ref" => p.reference = Some(m.next_value::<&'de RawValue>()?),
                        "arguments" => p.arguments = Some(m.next_value::<&'de RawValue>()?),
                        "_meta" => p.meta = Some(m.next_value::<&'de RawValue>()?),
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

/// The key of a 2026-07-28 request's protocol version claim in `params._meta`.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// `params._meta`: the protocol version a 2026-07-28 request claims.
#[derive(Default)]
struct Meta<'a> {
    version: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Meta<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Meta<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a _meta object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Meta<'de>, A::Error> {
                let mut r = Meta::default();
                walk_members(map, &[META_PROTOCOL_VERSION], |_, m| {
                    r.version = Some(m.next_value::<Str<'de>>()?.0);
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
/// names no tool, resource or prompt. The ones that do are matched in `op_of`; any
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
/// spelling ([`crate::mcp::resource_uri::normalize`]).
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

/// The raw values of a single message that the mirrored headers (`Mcp-Method`, `Mcp-Name`,
/// `MCP-Protocol-Version`, `Mcp-Param-*`) must agree with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mirror {
    /// `None` for a JSON-RPC response.
    pub method: Option<String>,
    /// `params.name` or `params.uri` as sent, for the methods whose name is mirrored
    /// (`tools/call`, `resources/read`, `prompts/get`).
    pub name: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` (2026-07-28 requests).
    pub version: Option<String>,
    /// Where `params.arguments` of a `tools/call` sits in the body (byte range).
    pub arguments: Option<std::ops::Range<usize>>,
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
    crate::mcp::resource_uri::normalize(raw)
        .map_err(|e| McpError::new(INVALID_PARAMS, e.describe()))
}

/// The operation of one message, and what its mirrored headers must agree with. `body` is
/// the whole request body `m` was parsed from (raw values are located in it).
fn op_of(m: Message<'_>, body: &[u8]) -> Result<(Op, Mirror), McpError> {
    let Some(method) = m.method else {
        if m.response {
            // A JSON-RPC response from the client (allowed before 2026-07-28): asks nothing.
            return Ok((Op::Response, Mirror::default()));
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
    let version = match params.meta {
        None => None,
        Some(raw) => serde_json::from_str::<Meta<'_>>(raw.get())
            .map_err(|_| {
                McpError::new(
                    INVALID_PARAMS,
                    "params._meta must be an object whose protocol version is a string",
                )
            })?
            .version
            .map(Cow::into_owned),
    };
    // A raw value borrows from the body: its place in it (checked, never assumed).
    let arguments = params.arguments.and_then(|a| {
        let at = (a.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
        let range = at..at + a.get().len();
        (body.get(range.clone()) == Some(a.get().as_bytes())).then_some(range)
    });
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
        version,
        arguments: if matches!(op, Op::ToolsCall(_)) {
            arguments
        } else {
            None
        },
    };
    Ok((op, mirror))
}

/// Parse a request body. Malformed JSON or a non-object message is an error, and so is
/// a URI or reference the gateway cannot judge.
pub fn parse(body: &[u8]) -> Result<Calls, McpError> {
    // JSON between systems is UTF-8 (RFC 8259 8.1). serde_json checks UTF-8 only in the
    // strings it keeps, not in the members skipped (`jsonrpc`, `id`, unknown ones): the
    // whole body is checked here, so that what is forwarded is the JSON that was judged,
    // whatever decoder the upstream uses.
    if std::str::from_utf8(body).is_err() {
        return Err(McpError::new(PARSE_ERROR, "Parse error: body is not UTF-8"));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let msgs: Vec<Message<'_>> = serde_json::from_slice(body)
            .map_err(|_| McpError::new(PARSE_ERROR, "Parse error: body is not a JSON-RPC batch"))?;
        if msgs.is_empty() {
            return Err(McpError::new(INVALID_REQUEST, "empty JSON-RPC batch"));
        }
        let mut ops = Vec::with_capacity(msgs.len());
        for m in msgs {
            let (op, mirror) = op_of(m, body)?;
            // A protocol version claim exists from 2026-07-28 on, and batches only before
            // 2025-06-18: no version has both, so nothing can judge such a message.
            if mirror.version.is_some() {
                return Err(McpError::new(
                    INVALID_REQUEST,
                    "a JSON-RPC batch cannot carry a _meta protocol version claim",
                ));
            }
            ops.push(op);
        }
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
    let (op, mirror) = op_of(m, body).map_err(|mut e| {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::mcp::headers::check_headers;
    use crate::mcp::policy::Rule;

    #[test]
    fn batches_with_a_protocol_version_claim_are_refused() {
        for b in [
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-06-18"}}}]"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}]"#,
        ] {
            let e = parse(b.as_bytes()).unwrap_err();
            assert_eq!(e.code, INVALID_REQUEST, "{b}");
        }
        let ok = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
        assert!(parse(ok.as_bytes()).unwrap().batch);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_even_in_unread_members() {
        // Found by the mcp_request fuzz target (fuzz/corpus/mcp_request/regress-*): a
        // `jsonrpc` string holding bytes that are not UTF-8 was forwarded.
        for body in [
            &b"{\"jsonrpc\":\"4\xC9\xC9.0\",\"id\":1,\"method\":\"ping\"}"[..],
            b"{\"jsonrpc\":\"2.0\",\"id\":\"\xFF\",\"method\":\"ping\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":{\"\xE0\":[\"\x85\"]}}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"cursor\":\"\xC0\"}}",
            b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"y\":\"\xED\xA0\x80\"}]",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\xFF",
        ] {
            let e = parse(body).err().unwrap_or_else(|| panic!("{body:?} parsed"));
            assert_eq!(e.code, PARSE_ERROR, "{body:?}");
        }
        assert!(
            parse(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xC3\xA9\"}").is_ok()
        );
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
}
