//! The mirrored MCP headers (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`): their
//! spelling, and whether they agree with the body (2026-07-28 Server Validation).
//!
//! Each appears at most once and only with hyphens (an upstream folding `_` to `-` would
//! read a value we never checked); a 2026-07-28 request must mirror method and name.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderMap;

use crate::error::jsonrpc::HEADER_MISMATCH;
use crate::error::{McpError, Refusal};
use crate::mcp::body::Calls;

/// The first protocol revision whose clients must mirror method and name into headers.
pub const HEADERS_REQUIRED_FROM: &str = "2026-07-28";

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
/// A request is modern (method and name must be mirrored) when either the header or the
/// body's `_meta` claims 2026-07-28 or later; a body that claims it needs the header too,
/// with the same value.
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
        data: None,
    };
    let body_version = calls.mirror.as_ref().and_then(|m| m.version.as_deref());
    match (protocol, body_version) {
        (Some(h), Some(b)) if h != b.as_bytes() => {
            return Err(mismatch(
                "Header mismatch: MCP-Protocol-Version does not match the body's _meta protocol version",
            ))
        }
        (None, Some(b)) if b >= HEADERS_REQUIRED_FROM => {
            return Err(mismatch(
                "Header mismatch: MCP-Protocol-Version header is missing",
            ))
        }
        _ => {}
    }
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

/// The mirrored MCP headers of a request.
pub struct Mirrored<'a> {
    pub method: Option<&'a [u8]>,
    pub name: Option<&'a [u8]>,
    pub version: Option<&'a [u8]>,
}

impl Mirrored<'_> {
    /// `Mcp-Method` or `Mcp-Name` is present: they describe a body.
    pub fn describe_body(&self) -> bool {
        self.method.is_some() || self.name.is_some()
    }

    /// `MCP-Protocol-Version` is 2026-07-28 or later: method and name must be mirrored.
    pub fn modern(&self) -> bool {
        self.version
            .is_some_and(|v| v >= HEADERS_REQUIRED_FROM.as_bytes())
    }
}

/// A `HeaderMismatch` refusal (400, JSON-RPC -32020).
pub fn mismatch(message: &'static str) -> Refusal {
    Refusal::Mcp(McpError::new(HEADER_MISMATCH, message))
}

const MIRRORED: [&str; 3] = ["mcp-method", "mcp-name", "mcp-protocol-version"];

/// The mirrored headers of a request, refused when one is repeated or spelled with `_`.
pub fn mirrored(headers: &HeaderMap) -> Result<Mirrored<'_>, Refusal> {
    for name in headers.keys() {
        let n = name.as_str();
        let underscored = MIRRORED.iter().any(|m| {
            n != *m
                && n.len() == m.len()
                && n.bytes()
                    .zip(m.bytes())
                    .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
        });
        if underscored {
            // An upstream folding `_` to `-` would read a value we never checked.
            return Err(mismatch(
                "Header mismatch: a mirrored MCP header is spelled with '_'",
            ));
        }
    }
    for n in MIRRORED {
        if headers.get_all(n).iter().nth(1).is_some() {
            // An intermediary reading the other copy would see another value.
            return Err(mismatch(
                "Header mismatch: a mirrored MCP header appears more than once",
            ));
        }
    }
    let get = |n: &str| headers.get(n).map(|v| v.as_bytes());
    Ok(Mirrored {
        method: get("mcp-method"),
        name: get("mcp-name"),
        version: get("mcp-protocol-version"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::mcp::body::parse;

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

    /// Item 1 of issue 17: the header and the body's `_meta` claim must agree, and a body
    /// that claims 2026-07-28 needs the header.
    #[test]
    fn protocol_version_header_and_body_agree() {
        let modern = |v: &str| {
            parse(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"{v}"}}}}}}"#
            ).as_bytes())
            .unwrap()
        };
        let c = modern("2026-07-28");
        let m = Some(&b"tools/list"[..]);
        assert!(check_headers(&c, Some(b"2026-07-28"), m, None).is_ok());
        for (h, why) in [
            (Some(&b"2025-11-25"[..]), "differs"),
            (Some(b"2026-07-29"), "differs"),
            (None, "missing"),
        ] {
            let e = check_headers(&c, h, m, None).unwrap_err();
            assert_eq!(
                (e.code, e.id.as_deref()),
                (HEADER_MISMATCH, Some("1")),
                "{why}"
            );
        }
        // An older claim in the body without the header is the legacy shape: no rule.
        assert!(check_headers(&modern("2025-11-25"), None, None, None).is_ok());
        assert!(check_headers(&modern("2025-11-25"), Some(b"2026-07-28"), m, None).is_err());
        // A body without a claim: only the header speaks.
        let legacy = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert!(check_headers(&legacy, Some(b"2025-11-25"), None, None).is_ok());
        // A claim that is not a string, or a _meta that is not an object: refused.
        for bad in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":20260728}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{},"_Meta":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"a","io.modelcontextprotocol/protocolversion":"b"}}}"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
