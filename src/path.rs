//! Request path normalization: the first step of the request flow.
//!
//! The gateway authorizes a path and the upstream receives a path; they must be the
//! same string, or a path trick (`/mcp/../admin`, `%2f`, overlong UTF-8...) lets a token
//! for one route reach another (SPEC-CHECKLIST §7.4). So every path is decoded once into
//! segments, refused when it holds anything an upstream could interpret differently, and
//! re-encoded in one canonical form that is used both for route matching and upstream.
//!
//! Route prefixes match ASCII-case-insensitively by default ([`has_prefix_ignore_ascii_case`]),
//! so the spellings that other servers may also treat as the same path are refused here
//! rather than routed elsewhere: a segment ending in `.` or beginning or ending in white
//! space (Windows and some frameworks trim them), and any non-ASCII character that a case
//! mapping or compatibility normalization (NFKC) turns into ASCII (`ſ` → `S`, `K` (Kelvin) →
//! `k`, fullwidth `ａ` → `a`, `ﬁ` → `fi`), or that is white space or a control character.
//! After this, every server that compares paths case-insensitively, by ASCII or by Unicode
//! rules, agrees with the gateway on which prefix a path is under.

use std::fmt::Write;

/// Why a path was refused (rendered as a 400 `invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    TooLong,
    BadByte,
    Backslash,
    Semicolon,
    BadPercent,
    EncodedSeparator,
    ControlCharacter,
    DotSegment,
    EmptySegment,
    NotUtf8,
    TrailingDot,
    EdgeWhitespace,
    FoldsToAscii,
}

impl PathError {
    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "request path must start with '/'",
            PathError::TooLong => "request path is too long",
            PathError::BadByte => "request path contains a byte that is not printable ASCII",
            PathError::Backslash => "request path contains '\\'",
            PathError::Semicolon => "request path contains ';' (path parameters are not accepted)",
            PathError::BadPercent => "request path contains a malformed percent-encoding",
            PathError::EncodedSeparator => "request path contains an encoded '/' or '\\'",
            PathError::ControlCharacter => "request path contains a control character",
            PathError::DotSegment => "request path contains a '.' or '..' segment",
            PathError::EmptySegment => "request path contains an empty segment ('//')",
            PathError::NotUtf8 => "request path does not decode to valid UTF-8",
            PathError::TrailingDot => "request path contains a segment ending in '.'",
            PathError::EdgeWhitespace => {
                "request path contains a segment beginning or ending in white space"
            }
            PathError::FoldsToAscii => {
                "request path contains a non-ASCII character that can be read as ASCII or as white space"
            }
        }
    }
}

const MAX_PATH: usize = 8192;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Characters kept literally in a canonical segment: RFC 3986 unreserved and the
/// sub-delims that every server treats as data, plus ':' and '@' (pchar), minus ';'.
fn keep_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// Normalize a raw request path (no query). Returns the canonical encoded path.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if bytes.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    // Fast path: already canonical (the overwhelmingly common case).
    if is_canonical(bytes) {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let segments: Vec<&[u8]> = bytes[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    let mut decoded = Vec::with_capacity(64);
    for (i, seg) in segments.iter().enumerate() {
        decoded.clear();
        let mut j = 0;
        while j < seg.len() {
            let b = seg[j];
            match b {
                b'%' => {
                    let (Some(h), Some(l)) = (
                        seg.get(j + 1).copied().and_then(hex),
                        seg.get(j + 2).copied().and_then(hex),
                    ) else {
                        return Err(PathError::BadPercent);
                    };
                    let d = (h << 4) | l;
                    match d {
                        b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                        0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                        _ => decoded.push(d),
                    }
                    j += 3;
                }
                b'\\' => return Err(PathError::Backslash),
                b';' => return Err(PathError::Semicolon),
                0x21..=0x7e => {
                    decoded.push(b);
                    j += 1;
                }
                _ => return Err(PathError::BadByte),
            }
        }
        if decoded.is_empty() && i != last {
            return Err(PathError::EmptySegment);
        }
        if decoded == b"." || decoded == b".." {
            return Err(PathError::DotSegment);
        }
        let Ok(text) = std::str::from_utf8(&decoded) else {
            return Err(PathError::NotUtf8);
        };
        check_segment(text)?;
        out.push('/');
        for &d in &decoded {
            if keep_literal(d) {
                out.push(d as char);
            } else {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{d:02X}");
            }
        }
    }
    Ok(out)
}

/// A decoded segment that other servers could read as another one: ending in `.`
/// (`/admin.` is `/admin` to Windows and IIS), beginning or ending in white space
/// (trimmed by some frameworks), or holding a non-ASCII character that a case mapping or
/// NFKC turns into ASCII, or that is white space or a control character.
pub fn check_segment(seg: &str) -> Result<(), PathError> {
    if seg.ends_with('.') {
        return Err(PathError::TrailingDot);
    }
    let edge_space = |c: Option<char>| c.is_some_and(char::is_whitespace);
    if edge_space(seg.chars().next()) || edge_space(seg.chars().next_back()) {
        return Err(PathError::EdgeWhitespace);
    }
    check_text(seg)
}

/// Decoded text (a path segment, a resource URI's part) holding no non-ASCII character
/// that a case mapping or NFKC turns into ASCII (`．` → `.`, `‥` → `..`, `ｓ` → `s`), or
/// that is white space or a control character: [`PathError::FoldsToAscii`].
pub fn check_text(seg: &str) -> Result<(), PathError> {
    if seg.is_ascii() {
        return Ok(());
    }
    let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc();
    let reads_as_ascii = |s: &str| nfkc.normalize(s).bytes().any(|b| b.is_ascii());
    for c in seg.chars().filter(|c| !c.is_ascii()) {
        if c.is_whitespace() || c.is_control() {
            return Err(PathError::FoldsToAscii);
        }
        let mut buf = [0u8; 4];
        let alone: &str = c.encode_utf8(&mut buf);
        let lower: String = c.to_lowercase().collect();
        let upper: String = c.to_uppercase().collect();
        if [alone, lower.as_str(), upper.as_str()]
            .into_iter()
            .any(reads_as_ascii)
        {
            return Err(PathError::FoldsToAscii);
        }
    }
    Ok(())
}

/// True when `bytes` has only literal characters, no empty or dot segments and no
/// segment ending in `.`.
fn is_canonical(bytes: &[u8]) -> bool {
    let mut seg_start = 1;
    for i in 1..=bytes.len() {
        let end = i == bytes.len();
        if end || bytes[i] == b'/' {
            let seg = &bytes[seg_start..i];
            if (seg.is_empty() && !end) || seg.last() == Some(&b'.') {
                return false;
            }
            seg_start = i + 1;
        } else if !keep_literal(bytes[i]) {
            return false;
        }
    }
    true
}

/// Whether `path` is `prefix` or lies below it on a segment boundary.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// [`has_prefix`] with ASCII letters compared case-insensitively (`/ADMIN/x` is under
/// `/admin`). Both are normalized, so they are ASCII: the match has `prefix`'s length.
pub fn has_prefix_ignore_ascii_case(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.as_bytes().get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix.as_bytes()) => {
            matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
        }
        _ => false,
    }
}

/// Replace `prefix` by `rewrite` at the start of `path` (both normalized).
pub fn rewrite(path: &str, prefix: &str, rewrite: &str) -> String {
    let rest = if prefix == "/" {
        path
    } else {
        &path[prefix.len().min(path.len())..]
    };
    if rewrite == "/" {
        if rest.is_empty() {
            "/".to_string()
        } else {
            rest.to_string()
        }
    } else {
        format!("{rewrite}{rest}")
    }
}

/// A configured prefix (`path_prefix`, `rewrite_prefix`): starts with `/`, no trailing
/// `/` (but `/` itself), and already in the form [`normalize`] gives.
pub fn check_prefix(p: &str, what: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{what} {p:?} must start with '/'"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(format!("{what} {p:?} must not end with '/'"));
    }
    match normalize(p) {
        Ok(n) if n == p => Ok(()),
        _ => Err(format!(
            "{what} {p:?} must be a normalized path (no dot segments, '//', '%', ';' or '\\')"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn canonical_paths_pass_unchanged() {
        for p in ["/", "/mcp", "/mcp/", "/a/b-c_d.e~f", "/a:b@c", "/v1/x=y,z"] {
            assert_eq!(normalize(p).unwrap(), p);
        }
    }

    #[test]
    fn decodes_unreserved() {
        assert_eq!(normalize("/%61dmin/mcp").unwrap(), "/admin/mcp");
        assert_eq!(normalize("/file%2etxt").unwrap(), "/file.txt");
        assert_eq!(normalize("/a%20b").unwrap(), "/a%20b");
        assert_eq!(normalize("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(normalize("/x%3by").unwrap(), "/x%3By");
    }

    #[test]
    fn refuses_tricks() {
        use PathError::*;
        let cases = [
            ("/mcp/../admin/mcp", DotSegment),
            ("/mcp/%2e%2e/admin/mcp", DotSegment),
            ("/mcp/.%2E/admin", DotSegment),
            ("/./admin/mcp", DotSegment),
            ("/admin%2fmcp", EncodedSeparator),
            ("/admin%5cmcp", EncodedSeparator),
            ("//admin/mcp", EmptySegment),
            ("/admin//mcp", EmptySegment),
            ("/admin/mcp;x=1", Semicolon),
            ("/admin/mcp%00", ControlCharacter),
            ("/admin\\mcp", Backslash),
            ("/%c0%ae%c0%ae/admin", NotUtf8),
            ("/a%zz", BadPercent),
            ("/a%2", BadPercent),
            ("relative", NotAbsolute),
            ("/a b", BadByte),
        ];
        for (p, e) in cases {
            assert_eq!(normalize(p), Err(e), "{p}");
        }
    }

    #[test]
    fn refuses_segments_other_servers_trim() {
        use PathError::*;
        let cases = [
            ("/admin.", TrailingDot),
            ("/admin%2e", TrailingDot),
            ("/admin%2E", TrailingDot),
            ("/admin./x", TrailingDot),
            ("/x/admin..", TrailingDot),
            ("/mcp/...", TrailingDot),
            ("/admin%20", EdgeWhitespace),
            ("/%20admin", EdgeWhitespace),
            ("/admin%20/x", EdgeWhitespace),
            ("/admin%20.", TrailingDot),
            ("/admin.%20", EdgeWhitespace),
            ("/admin%09", ControlCharacter),
            ("/admin%0b", ControlCharacter),
            ("/admin%0c", ControlCharacter),
            ("/admin%a0", NotUtf8),
            ("/admin%C2%A0", EdgeWhitespace),
            ("/%E3%80%80admin", EdgeWhitespace),
        ];
        for (p, e) in cases {
            assert_eq!(normalize(p), Err(e), "{p}");
        }
        // Dots and spaces inside a segment, or a leading dot, are data.
        for p in ["/.well-known/x", "/a.b", "/a%20b", "/v1.2/x", "/a/"] {
            assert!(normalize(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn refuses_non_ascii_that_reads_as_ascii() {
        let cases = [
            "/%C5%BFcript",     // ſ (long s): upper-cases to S
            "/adm%C4%B1n",      // ı (dotless i): upper-cases to I
            "/%C4%B0dmin",      // İ: lower-cases to i + combining dot
            "/%E2%84%AAey",     // K (Kelvin sign): lower-cases to k, NFKC K
            "/%EF%BD%81dmin",   // fullwidth a: NFKC a
            "/%EF%BC%A1DMIN",   // fullwidth A
            "/%EF%AC%81le",     // ﬁ ligature: NFKC fi
            "/stra%C3%9Fe",     // ß: upper-cases to SS
            "/admin%E2%80%A4",  // one dot leader: NFKC .
            "/admin%EF%BC%8Fx", // fullwidth solidus: NFKC /
            "/ad%C2%A0min",     // no-break space: NFKC space
            "/ad%E3%80%80min",  // ideographic space
            "/a%E2%80%A8b",     // line separator (white space)
            "/a%C2%85b",        // NEL (C1 control)
            "/%E2%85%AB",       // roman numeral twelve: NFKC XII
        ];
        for p in cases {
            assert_eq!(normalize(p), Err(PathError::FoldsToAscii), "{p}");
        }
        // Non-ASCII letters that stay non-ASCII are data.
        for p in [
            "/caf%C3%A9",
            "/%E6%97%A5%E6%9C%AC",
            "/%D0%BC%D1%86%D0%BF",
            "/%C3%85",
        ] {
            assert!(normalize(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn prefix_matching_ignores_ascii_case() {
        assert!(has_prefix_ignore_ascii_case("/ADMIN", "/admin"));
        assert!(has_prefix_ignore_ascii_case("/Admin/x", "/admin"));
        assert!(has_prefix_ignore_ascii_case("/aDmIn/", "/admin"));
        assert!(!has_prefix_ignore_ascii_case("/ADMINX", "/admin"));
        assert!(!has_prefix_ignore_ascii_case("/ADM", "/admin"));
        assert!(has_prefix_ignore_ascii_case("/x", "/"));
        assert!(has_prefix_ignore_ascii_case("/CAF%C3%A9", "/caf%C3%A9"));
        assert!(!has_prefix("/ADMIN", "/admin"));
    }

    #[test]
    fn prefix_matching_is_segment_aware() {
        assert!(has_prefix("/mcp", "/mcp"));
        assert!(has_prefix("/mcp/x", "/mcp"));
        assert!(!has_prefix("/mcpx", "/mcp"));
        assert!(has_prefix("/anything", "/"));
    }

    #[test]
    fn rewrites() {
        assert_eq!(rewrite("/github/mcp", "/github", "/"), "/mcp");
        assert_eq!(rewrite("/github", "/github", "/"), "/");
        assert_eq!(rewrite("/github/mcp", "/github", "/v1"), "/v1/mcp");
        assert_eq!(rewrite("/x", "/", "/v1"), "/v1/x");
        // A case variant matched by a case-insensitive prefix has the prefix's length.
        assert_eq!(rewrite("/GitHub/MCP", "/github", "/"), "/MCP");
        assert_eq!(rewrite("/GITHUB", "/github", "/v1"), "/v1");
    }
}
