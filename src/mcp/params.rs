//! `Mcp-Param-{Name}` headers (SEP-2243; 2026-07-28 basic/transports/streamable-http "Custom
//! Headers from Tool Parameters", server/tools "x-mcp-header"): a tool's input schema may
//! mark primitive properties with `"x-mcp-header": "Name"`, and a 2026-07-28 client then
//! mirrors each such argument of a `tools/call` into `Mcp-Param-Name`, so that
//! intermediaries can route on it. Any server that reads the body must check that the
//! header, decoded, equals the argument; an upstream that predates 2026-07-28 does not, so
//! the gateway does.
//!
//! - [`declarations`]: the headers a tool declares, read from its `inputSchema` as a
//!   `tools/list` answer carries it (statically reachable through `properties` only; a tool
//!   with an annotation anywhere else, a name that is not an RFC 9110 token, two names equal
//!   but for case, or an annotation on a type other than integer, string, boolean is
//!   invalid, and the gateway learns nothing of it);
//! - [`decode`]: a header value, plain or in the `=?base64?…?=` sentinel form;
//! - [`check`]: a `tools/call` against its tool's declarations: a present, non-null argument
//!   needs its header (on a 2026-07-28 request) and the decoded header must equal it
//!   (numbers compared as exact decimals); a header for an absent argument, a repeated header, a
//!   declared header spelled with `_`, or a sentinel that does not decode is refused too
//!   (400, -32020). Headers no declaration names are forwarded untouched, as the spec
//!   requires of intermediaries.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::error::jsonrpc::HEADER_MISMATCH;
use crate::error::McpError;

/// The header prefix, lower-case.
pub const PREFIX: &str = "mcp-param-";
/// Most declarations learned per tool (a schema with more is not learned).
pub const MAX_DECLARATIONS: usize = 64;
/// Deepest property path followed.
const MAX_DEPTH: usize = 16;

/// One `x-mcp-header` annotation: the header (lower-case, with [`PREFIX`]) and the path of
/// its property from the arguments' root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub header: Box<str>,
    pub path: Box<[Box<str>]>,
}

/// RFC 9110 `tchar`.
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Every `x-mcp-header` member anywhere in `v` (to compare with those statically reachable).
fn count_annotations(v: &Value) -> usize {
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| usize::from(k == "x-mcp-header") + count_annotations(v))
            .sum(),
        Value::Array(a) => a.iter().map(count_annotations).sum(),
        _ => 0,
    }
}

/// Walk `properties` from `schema`, collecting annotated properties.
fn walk(
    schema: &Map<String, Value>,
    path: &mut Vec<Box<str>>,
    out: &mut Vec<Declaration>,
) -> Result<(), ()> {
    let Some(props) = schema.get("properties") else {
        return Ok(());
    };
    let props = props.as_object().ok_or(())?;
    if path.len() >= MAX_DEPTH {
        return Err(());
    }
    for (name, prop) in props {
        let Some(prop) = prop.as_object() else {
            continue;
        };
        path.push(name.as_str().into());
        if let Some(h) = prop.get("x-mcp-header") {
            let h = h.as_str().ok_or(())?;
            let primitive = matches!(
                prop.get("type").and_then(Value::as_str),
                Some("integer" | "string" | "boolean")
            );
            if h.is_empty() || !h.bytes().all(tchar) || !primitive {
                return Err(());
            }
            let header = format!("{PREFIX}{}", h.to_ascii_lowercase()).into_boxed_str();
            if out.iter().any(|d| d.header == header) || out.len() >= MAX_DECLARATIONS {
                return Err(());
            }
            out.push(Declaration {
                header,
                path: path.clone().into_boxed_slice(),
            });
        }
        walk(prop, path, out)?;
        path.pop();
    }
    Ok(())
}

/// The headers a tool declares, from its definition in a `tools/list` answer; `None` when
/// its annotations are invalid (the spec has clients drop such a tool; the gateway then
/// knows nothing of it and checks nothing).
pub fn declarations(tool: &Map<String, Value>) -> Option<Vec<Declaration>> {
    let Some(schema) = tool.get("inputSchema") else {
        return Some(Vec::new());
    };
    let schema = schema.as_object()?;
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out).ok()?;
    (count_annotations(&Value::Object(schema.clone())) == out.len()).then_some(out)
}

/// Decode a header value: the `=?base64?…?=` sentinel (markers case-sensitive, padded
/// standard Base64 of UTF-8), or the value itself (visible ASCII, spaces and tabs inside).
/// `None`: a sentinel that does not decode, or bytes no value may have.
pub fn decode(raw: &[u8]) -> Option<String> {
    if let Some(inner) = raw
        .strip_prefix(b"=?base64?")
        .and_then(|r| r.strip_suffix(b"?="))
    {
        return String::from_utf8(STANDARD.decode(inner).ok()?).ok();
    }
    let plain = raw
        .iter()
        .all(|&b| (0x20..=0x7e).contains(&b) || b == b'\t');
    plain.then(|| String::from_utf8_lossy(raw).into_owned())
}

/// `-?digits(.digits)?` without leading zeros, as an exact decimal: (negative, integer
/// digits, fraction digits without trailing zeros). `42`, `42.0` and `42.00` are one value;
/// `042`, `+42`, `4e1`, `0x2a` are not decimals here. Exact, never through a float: a header
/// that differs from the argument in the 17th digit is a different number.
fn decimal(s: &str) -> Option<(bool, &str, &str)> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    let ok = !int.is_empty()
        && !frac.is_empty()
        && (int == "0" || !int.starts_with('0'))
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    // `-0` is `0`.
    let neg = neg && !(int == "0" && frac.is_empty());
    Some((neg, int, frac))
}

/// Whether a decoded header equals the argument's value (numbers as exact decimals).
fn equals(header: &str, value: &Value) -> bool {
    match value {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => {
            // serde_json writes integers exactly and other numbers in their shortest
            // round-trip form (an exponent form is no decimal: refused).
            let text = n.to_string();
            match (decimal(header), decimal(&text)) {
                (Some(h), Some(v)) => h == v,
                _ => false,
            }
        }
        _ => false,
    }
}

/// The value at `path` in the arguments (`None`: absent or `null`).
fn value_at<'v>(args: Option<&'v Value>, path: &[Box<str>]) -> Option<&'v Value> {
    let mut v = args?;
    for k in path {
        v = v.as_object()?.get(&**k)?;
    }
    (!v.is_null()).then_some(v)
}

/// A header name equal to `wanted` once `_` is read as `-` (an upstream folding it would read
/// a value we never checked).
fn folds_to(name: &str, wanted: &str) -> bool {
    name.len() == wanted.len()
        && name
            .bytes()
            .zip(wanted.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-') || (a == b'-' && b == b'_'))
}

/// Check a `tools/call`'s `Mcp-Param-*` headers against its arguments (`arguments`: the raw
/// JSON of `params.arguments`, if any) for a tool declaring `decls`. `modern`: a 2026-07-28
/// request, whose client must send every header (an older client sends none, and is only
/// held to the headers it does send).
pub fn check(
    decls: &[Declaration],
    headers: &HeaderMap,
    arguments: Option<&[u8]>,
    modern: bool,
    id: Option<&str>,
) -> Result<(), McpError> {
    if decls.is_empty() {
        return Ok(());
    }
    let mismatch = |message| McpError {
        code: HEADER_MISMATCH,
        message,
        id: id.map(Box::from),
        data: None,
    };
    let args: Option<Value> = match arguments {
        None => None,
        // Parsed strictly: a repeated member could be read either way by the upstream.
        Some(raw) => Some(
            crate::mcp::json::strict_json(raw)
                .map_err(|_| mismatch("Header mismatch: params.arguments repeats a member"))?,
        ),
    };
    for d in decls {
        for name in headers.keys() {
            if name.as_str() != &*d.header && folds_to(name.as_str(), &d.header) {
                return Err(mismatch(
                    "Header mismatch: an Mcp-Param header is spelled with '_' for '-' or the reverse",
                ));
            }
        }
        let mut all = headers.get_all(&*d.header).iter();
        let header = all.next();
        if all.next().is_some() {
            return Err(mismatch(
                "Header mismatch: an Mcp-Param header appears more than once",
            ));
        }
        match (header, value_at(args.as_ref(), &d.path)) {
            (None, None) => {}
            (None, Some(_)) if modern => {
                return Err(mismatch(
                    "Header mismatch: an Mcp-Param header the tool declares is missing",
                ))
            }
            (None, Some(_)) => {}
            (Some(_), None) => {
                return Err(mismatch(
                    "Header mismatch: an Mcp-Param header names an argument the body does not have",
                ))
            }
            (Some(h), Some(v)) => {
                let decoded = decode(h.as_bytes()).ok_or_else(|| {
                    mismatch("Header mismatch: an Mcp-Param header is not a valid encoded value")
                })?;
                if !equals(&decoded, v) {
                    return Err(mismatch(
                        "Header mismatch: an Mcp-Param header does not match the argument",
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn tool(schema: Value) -> Map<String, Value> {
        json!({"name": "t", "inputSchema": schema})
            .as_object()
            .unwrap()
            .clone()
    }

    fn sql() -> Vec<Declaration> {
        declarations(&tool(json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"},
            "target": {"type": "object", "properties": {
                "db": {"type": "string", "x-mcp-header": "DB"}
            }},
            "query": {"type": "string"}
        }})))
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        h
    }

    fn run(h: &[(&str, &str)], args: &str, modern: bool) -> Result<(), McpError> {
        check(
            &sql(),
            &headers(h),
            Some(args.as_bytes()),
            modern,
            Some("1"),
        )
    }

    #[test]
    fn declarations_follow_properties_only() {
        let d = sql();
        let mut names: Vec<&str> = d.iter().map(|d| &*d.header).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "mcp-param-db",
                "mcp-param-dry-run",
                "mcp-param-limit",
                "mcp-param-region"
            ]
        );
        let db = d.iter().find(|d| &*d.header == "mcp-param-db").unwrap();
        assert_eq!(&*db.path, [Box::from("target"), Box::from("db")]);
        for bad in [
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A\r\n"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"}, "b": {"type": "string", "x-mcp-header": "x"}}}),
            json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"oneOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": 7}}}),
        ] {
            assert_eq!(declarations(&tool(bad.clone())), None, "{bad}");
        }
        assert_eq!(declarations(&tool(json!({"type": "object"}))), Some(vec![]));
    }

    #[test]
    fn values_decode_plain_or_from_the_sentinel() {
        assert_eq!(decode(b"us-west1").as_deref(), Some("us-west1"));
        assert_eq!(decode(b"us west 1").as_deref(), Some("us west 1"));
        assert_eq!(
            decode(b"=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            decode(b"=?base64?IHBhZGRlZCA=?=").as_deref(),
            Some(" padded ")
        );
        assert_eq!(
            decode(b"=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=").as_deref(),
            Some("=?base64?literal?=")
        );
        // Both spellings of the empty string.
        assert_eq!(decode(b"").as_deref(), Some(""));
        assert_eq!(decode(b"=?base64??=").as_deref(), Some(""));
        // Bad padding or characters in a sentinel: refused; other markers are literal.
        assert_eq!(decode(b"=?base64?SGVsbG8?="), None);
        assert_eq!(decode(b"=?base64?SGV*bG8=?="), None);
        assert_eq!(decode(b"=?base64?//79?="), None); // not UTF-8
        assert_eq!(
            decode(b"=?BASE64?SGVsbG8=?=").as_deref(),
            Some("=?BASE64?SGVsbG8=?=")
        );
        assert_eq!(
            decode(b"=?base64?SGVsbG8=").as_deref(),
            Some("=?base64?SGVsbG8=")
        );
        assert_eq!(decode("é".as_bytes()), None);
    }

    #[test]
    fn numbers_compare_as_exact_decimals() {
        let v = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert!(equals("9007199254740992", &v("9007199254740992")));
        assert!(!equals("9007199254740993", &v("9007199254740992")));
        assert!(!equals("9007199254740992", &v("9007199254740993")));
        assert!(equals("42", &v("42.0")));
        assert!(equals("-0", &v("0")));
        assert!(equals("42.5", &v("42.5")));
        assert!(!equals("42.50000000000000001", &v("42.5")));
        assert!(!equals("042", &v("42")));
        assert!(!equals("1e21", &v("1e21")));
    }

    #[test]
    fn headers_must_equal_the_arguments() {
        let args =
            r#"{"region":"us-west1","limit":42,"dry":false,"target":{"db":"main"},"query":"x"}"#;
        let all = [
            ("mcp-param-region", "us-west1"),
            ("Mcp-Param-Limit", "42"),
            ("mcp-param-dry-run", "false"),
            ("mcp-param-db", "=?base64?bWFpbg==?="),
        ];
        assert!(run(&all, args, true).is_ok());
        // Numbers compare as exact decimals.
        for v in ["42.0", "42.00", "42"] {
            let mut h = all;
            h[1].1 = v;
            assert!(run(&h, args, true).is_ok(), "{v}");
        }
        for v in [
            "43",
            "42.5",
            "4e1",
            "+42",
            "0x2a",
            " 42",
            "",
            "042",
            "42.0000000000000001",
        ] {
            let mut h = all;
            h[1].1 = v;
            let e = run(&h, args, true).unwrap_err();
            assert_eq!(
                (e.code, e.id.as_deref()),
                (HEADER_MISMATCH, Some("1")),
                "{v}"
            );
        }
        // A mismatch, a missing header on a modern request, a header without its argument.
        let mut h = all;
        h[0].1 = "eu-west1";
        assert!(run(&h, args, true).is_err());
        assert!(run(&all[1..], args, true).is_err());
        assert!(
            run(&all[1..], args, false).is_ok(),
            "an older client sends none"
        );
        assert!(run(
            &all,
            r#"{"limit":42,"dry":false,"target":{"db":"main"}}"#,
            true
        )
        .is_err());
        // null is absent: no header expected, none allowed.
        assert!(run(
            &all[1..],
            r#"{"region":null,"limit":42,"dry":false,"target":{"db":"main"}}"#,
            true
        )
        .is_ok());
        // Repeated, underscored, or undecodable: refused.
        let twice = [
            all[0],
            all[1],
            all[2],
            all[3],
            ("mcp-param-region", "us-west1"),
        ];
        assert!(run(&twice, args, true).is_err());
        let under = [all[0], all[1], all[2], all[3], ("mcp_param_region", "x")];
        assert!(run(&under, args, true).is_err());
        let mut h = all;
        h[3].1 = "=?base64?bWFpbg?=";
        assert!(run(&h, args, true).is_err());
        // A repeated argument member is ambiguous.
        assert!(run(
            &all,
            r#"{"region":"us-west1","region":"eu","limit":42,"dry":false,"target":{"db":"main"}}"#,
            true
        )
        .is_err());
        // Undeclared Mcp-Param headers pass untouched.
        let extra = [
            all[0],
            all[1],
            all[2],
            all[3],
            ("mcp-param-other", "anything"),
        ];
        assert!(run(&extra, args, true).is_ok());
        // Empty strings, both forms.
        let d = declarations(&tool(
            json!({"properties": {"s": {"type": "string", "x-mcp-header": "S"}}}),
        ))
        .unwrap();
        for v in ["", "=?base64??="] {
            assert!(check(
                &d,
                &headers(&[("mcp-param-s", v)]),
                Some(br#"{"s":""}"#),
                true,
                None
            )
            .is_ok());
        }
    }
}
