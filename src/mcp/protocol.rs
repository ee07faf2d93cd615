//! MCP protocol versions a route lets through (`protocol_versions`, 2026-07-28
//! basic/transports/streamable-http "Protocol Version Header").
//!
//! The gateway is transparent to versions unless a route lists the ones its upstream speaks:
//! then a request naming another version gets 400 with the spec's
//! `UnsupportedProtocolVersion` JSON-RPC error (-32022, `data: {supported, requested}`), so a
//! dual-era client reads it as "a modern server: retry with one of `supported`" rather than
//! falling back blindly. The version a request names is its `MCP-Protocol-Version` header,
//! else its body's `_meta` claim (a body claiming one without the header is refused earlier,
//! [`crate::mcp::headers::check_headers`]); an `initialize` without either is a legacy
//! negotiation and passes (its answer names the version the server chose, and every later
//! request carries it); any other request without either is taken as 2025-03-26, as the
//! spec tells servers to.

use crate::compile::CompileError;
use crate::error::jsonrpc::UNSUPPORTED_PROTOCOL_VERSION;
use crate::error::{McpError, Refusal};
use crate::mcp::body::Calls;

/// The version a request without `MCP-Protocol-Version` (nor a body claim) is taken for.
pub const ASSUMED_WITHOUT_HEADER: &str = "2025-03-26";

/// Check a route's `protocol_versions`: dates as the spec writes versions (`YYYY-MM-DD`),
/// at least one, no repeats. `None` (absent): transparent.
pub fn compile(list: Option<&[String]>) -> Result<Vec<String>, CompileError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let bad = |r: String| CompileError::new("protocol_versions", r);
    if list.is_empty() {
        return Err(bad(
            "protocol_versions: list at least one version, or leave it out".into(),
        ));
    }
    for (i, v) in list.iter().enumerate() {
        let date = v.len() == 10
            && v.bytes().enumerate().all(|(j, b)| match j {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !date {
            return Err(bad(format!(
                "protocol_versions: {v:?} is not a protocol version (YYYY-MM-DD)"
            )));
        }
        if list[..i].contains(v) {
            return Err(bad(format!("protocol_versions: {v:?} is listed twice")));
        }
    }
    Ok(list.to_vec())
}

/// The version a request names (see the module docs); `None` for a legacy `initialize`.
fn requested<'a>(header: Option<&'a [u8]>, calls: Option<&'a Calls>) -> Option<&'a [u8]> {
    let mirror = calls.and_then(|c| c.mirror.as_ref());
    if let Some(h) = header {
        return Some(h);
    }
    if let Some(v) = mirror.and_then(|m| m.version.as_deref()) {
        return Some(v.as_bytes());
    }
    if mirror.and_then(|m| m.method.as_deref()) == Some("initialize") {
        return None;
    }
    Some(ASSUMED_WITHOUT_HEADER.as_bytes())
}

/// Whether the route lets the request's version through. `supported` empty: any version.
pub fn check(
    supported: &[String],
    header: Option<&[u8]>,
    calls: Option<&Calls>,
) -> Result<(), Refusal> {
    if supported.is_empty() {
        return Ok(());
    }
    let Some(v) = requested(header, calls) else {
        return Ok(());
    };
    if supported.iter().any(|s| s.as_bytes() == v) {
        return Ok(());
    }
    let data = serde_json::json!({
        "supported": supported,
        "requested": String::from_utf8_lossy(v),
    });
    Err(Refusal::Mcp(McpError {
        code: UNSUPPORTED_PROTOCOL_VERSION,
        message: "Unsupported protocol version",
        id: calls.and_then(|c| c.id.clone()),
        data: Some(data.to_string().into_boxed_str()),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::mcp::body::parse;

    fn list() -> Vec<String> {
        compile(Some(&["2026-07-28".to_string(), "2025-11-25".to_string()])).unwrap()
    }

    fn version_of(r: Result<(), Refusal>) -> Option<serde_json::Value> {
        match r {
            Ok(()) => None,
            Err(Refusal::Mcp(e)) => {
                assert_eq!(e.code, -32022);
                Some(serde_json::from_str(e.data.as_deref().unwrap()).unwrap())
            }
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn versions_outside_the_list_get_unsupported_protocol_version() {
        let l = list();
        let body = |b: &str| parse(b.as_bytes()).unwrap();
        let plain = body(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
        assert!(check(&l, Some(b"2025-11-25"), Some(&plain)).is_ok());
        assert!(check(&l, Some(b"2026-07-28"), None).is_ok());
        let d = version_of(check(&l, Some(b"2025-06-18"), Some(&plain))).unwrap();
        assert_eq!(
            d["supported"],
            serde_json::json!(["2026-07-28", "2025-11-25"])
        );
        assert_eq!(d["requested"], "2025-06-18");
        // Case-sensitive values: a spelling variant is another version.
        assert!(check(&l, Some(b"2026-07-28 "), None).is_err());
        // No header: the body's claim, else 2025-03-26; a legacy initialize passes.
        let claim = body(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2024-11-05"}}}"#,
        );
        assert_eq!(
            version_of(check(&l, None, Some(&claim))).unwrap()["requested"],
            "2024-11-05"
        );
        assert_eq!(
            version_of(check(&l, None, Some(&plain))).unwrap()["requested"],
            ASSUMED_WITHOUT_HEADER
        );
        assert_eq!(
            version_of(check(&l, None, None)).unwrap()["requested"],
            ASSUMED_WITHOUT_HEADER
        );
        let init = body(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05"}}"#,
        );
        assert!(check(&l, None, Some(&init)).is_ok());
        // No list: transparent.
        assert!(check(&[], Some(b"1900-01-01"), Some(&plain)).is_ok());
    }

    #[test]
    fn lists_are_checked_at_load() {
        assert!(compile(None).unwrap().is_empty());
        for bad in [
            vec![],
            vec!["2026-7-28"],
            vec!["latest"],
            vec!["2025-11-25", "2025-11-25"],
        ] {
            let bad: Vec<String> = bad.into_iter().map(String::from).collect();
            assert!(compile(Some(&bad)).is_err(), "{bad:?}");
        }
    }
}
