//! Resource URIs in one canonical spelling, so `resources` rules judge what the upstream reads.
//!
//! Used by the MCP step ([`crate::mcp`]) on every URI a request names (`resources/read`,
//! `resources/subscribe`, `resources/unsubscribe`, a `completion/complete` resource ref,
//! `subscriptions/listen`), before the route's `resources` globs are matched. The body is
//! still forwarded byte for byte; this only decides which rule applies.
//!
//! RFC 3986 §6.2.2 syntax-based normalisation: percent-encoded unreserved characters are
//! decoded, the hex digits of the other escapes upper-cased, characters a URI cannot hold
//! literally (space, `"<>\^`{|}`, non-ASCII) percent-encoded, scheme and host lower-cased,
//! `.` segments removed (§5.2.4); and §6.2.3 for `http`/`https` (default port, empty path)
//! and RFC 8089 for `file` (`file://localhost/` is `file:///`). What an upstream could
//! resolve in several ways is refused instead ([`UriError`]): `..` anywhere in the path
//! (encoded or not), an encoded `/` or `\`, a literal `\`, an encoded `%` (double
//! encoding), `%00`, a control character (literal or encoded), a malformed escape, or no scheme.
//! Normalising a normalised URI changes nothing.

/// Why a resource URI cannot be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    NotAbsolute,
    Control,
    BadEscape,
    Nul,
    EncodedSeparator,
    Backslash,
    DoubleEncoding,
    DotDot,
    /// Escapes that do not decode to UTF-8 (overlong forms such as `%C0%AE`, `%FF`).
    NotUtf8,
    /// What the request-path rules refuse ([`crate::path::check_segment`]): a non-ASCII
    /// character read as ASCII (`．`, `‥`, `․`), white space or a control character, a
    /// path segment ending in `.` or beginning or ending in white space.
    Ambiguous,
}

impl UriError {
    /// A short message for the JSON-RPC error (static, safe in any body).
    pub fn describe(self) -> &'static str {
        match self {
            UriError::NotAbsolute => "resource URI has no scheme",
            UriError::Control => "resource URI contains a control character",
            UriError::BadEscape => "resource URI contains a malformed percent-encoding",
            UriError::Nul => "resource URI contains %00",
            UriError::EncodedSeparator => "resource URI path contains an encoded '/' or '\\'",
            UriError::Backslash => "resource URI path contains '\\'",
            UriError::DoubleEncoding => "resource URI path contains an encoded '%'",
            UriError::DotDot => "resource URI contains '..'",
            UriError::NotUtf8 => "resource URI does not decode to valid UTF-8",
            UriError::Ambiguous => {
                "resource URI contains a character or segment other servers may read differently"
            }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// gen-delims and sub-delims: kept as they are, literal or encoded (decoding one would
/// change what the URI means).
fn reserved(b: u8) -> bool {
    matches!(
        b,
        b':' | b'/'
            | b'?'
            | b'#'
            | b'['
            | b']'
            | b'@'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Authority,
    Path,
    Other,
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Canonical escapes of one component.
fn canon(s: &str, part: Part, out: &mut String) -> Result<(), UriError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(UriError::BadEscape);
            };
            let d = (h << 4) | l;
            match d {
                0 => return Err(UriError::Nul),
                // Encoded like literal: an upstream that strips or splits on a control
                // character would read another name than the rules judged.
                0x01..=0x1f | 0x7f => return Err(UriError::Control),
                b'/' | b'\\' if part != Part::Other => return Err(UriError::EncodedSeparator),
                b'%' if part != Part::Other => return Err(UriError::DoubleEncoding),
                _ if unreserved(d) => out.push(d as char),
                _ => push_escape(out, d),
            }
            i += 3;
            continue;
        }
        match c {
            0..=0x1f | 0x7f => return Err(UriError::Control),
            b'\\' if part != Part::Other => return Err(UriError::Backslash),
            _ if unreserved(c) || reserved(c) => out.push(c as char),
            _ => push_escape(out, c),
        }
        i += 1;
    }
    Ok(())
}

/// RFC 3986 §5.2.4 for a path that holds no `..`: drop `.` segments.
fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let segs: Vec<&str> = path.split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    let last = segs.len().saturating_sub(1);
    for (i, s) in segs.iter().enumerate() {
        if *s == "." {
            // A trailing `.` leaves the directory: `a/.` is `a/`.
            if i == last {
                out.push("");
            }
            continue;
        }
        out.push(s);
    }
    let joined = out.join("/");
    if absolute && !joined.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// The canonical spelling of `uri`, or why it cannot be judged.
pub fn normalize(uri: &str) -> Result<String, UriError> {
    let colon = uri.find(':').ok_or(UriError::NotAbsolute)?;
    let scheme = &uri[..colon];
    let valid_scheme = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid_scheme {
        return Err(UriError::NotAbsolute);
    }
    let scheme = scheme.to_ascii_lowercase();
    let rest = &uri[colon + 1..];
    let (rest, fragment) = match rest.find('#') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (hier, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (authority, path) = match hier.strip_prefix("//") {
        Some(a) => {
            let end = a.find('/').unwrap_or(a.len());
            (Some(&a[..end]), &a[end..])
        }
        None => (None, hier),
    };

    let mut out = String::with_capacity(uri.len() + 8);
    out.push_str(&scheme);
    out.push(':');
    if let Some(a) = authority {
        let mut auth = String::with_capacity(a.len());
        canon(a, Part::Authority, &mut auth)?;
        // Lower-case the host (after any userinfo); escapes keep upper-case hex.
        let host_at = auth.rfind('@').map_or(0, |i| i + 1);
        let (user, host) = auth.split_at(host_at);
        let mut host = lower_keep_escapes(host);
        let default_port = match scheme.as_str() {
            "http" => Some(":80"),
            "https" => Some(":443"),
            _ => None,
        };
        if let Some(p) = default_port {
            if let Some(h) = host.strip_suffix(p) {
                host = h.to_string();
            }
        }
        // A port is digits after the first `:` past an IPv6 literal; an empty one is no
        // port. Anything else there (`host::`, `a:b:80`) has no one reading: refused
        // (found by fuzz/, resource_uri: `host::` lost one `:` per normalisation).
        let literal_end = host.rfind(']').map_or(0, |i| i + 1);
        if let Some(i) = host[literal_end..].find(':').map(|i| literal_end + i) {
            let port = &host[i + 1..];
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UriError::Ambiguous);
            }
            if port.is_empty() {
                host.truncate(i);
            }
        }
        if scheme == "file" && user.is_empty() && host == "localhost" {
            host.clear();
        }
        // The authority under the same rules as the path: `https://../x` names no host
        // the rules could have meant (found by fuzz/, resource_uri).
        let text = decoded(&auth)?;
        if text.contains("..") {
            return Err(UriError::DotDot);
        }
        crate::path::check_text(&text).map_err(|_| UriError::Ambiguous)?;
        out.push_str("//");
        out.push_str(user);
        out.push_str(&host);
    }
    let mut p = String::with_capacity(path.len());
    canon(path, Part::Path, &mut p)?;
    if p.contains("..") {
        return Err(UriError::DotDot);
    }
    let mut p = remove_dot_segments(&p);
    // The request-path rules, on what each segment decodes to.
    for seg in p.split('/') {
        let text = decoded(seg)?;
        if text.contains("..") {
            return Err(UriError::DotDot);
        }
        crate::path::check_segment(&text).map_err(|_| UriError::Ambiguous)?;
    }
    if authority.is_none() && p.starts_with("//") {
        // `/.//x` must not become `//x`, which would read as an authority (RFC 3986 §5.3).
        p.insert_str(0, "/.");
    }
    if p.is_empty() && authority.is_some() && matches!(scheme.as_str(), "http" | "https") {
        p.push('/');
    }
    out.push_str(&p);
    // A query or fragment an upstream may resolve as a path (`?/../../secret`) is judged
    // like one: no `..`, no character read as ASCII, valid UTF-8.
    for (mark, part) in [('?', query), ('#', fragment)] {
        if let Some(q) = part {
            out.push(mark);
            let start = out.len();
            canon(q, Part::Other, &mut out)?;
            let text = decoded(&out[start..])?;
            if text.contains("..") {
                return Err(UriError::DotDot);
            }
            crate::path::check_text(&text).map_err(|_| UriError::Ambiguous)?;
        }
    }
    Ok(out)
}

/// What a canonical component decodes to, as text.
fn decoded(s: &str) -> Result<String, UriError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h << 4) | l);
                i += 3;
                continue;
            }
            return Err(UriError::BadEscape);
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| UriError::NotUtf8)
}

/// Lower-case ASCII letters except the two hex digits of each escape.
fn lower_keep_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut keep = 0;
    for c in s.chars() {
        if keep > 0 {
            keep -= 1;
            out.push(c);
        } else if c == '%' {
            keep = 2;
            out.push(c);
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A `resources` glob in the same spelling as the URIs it is matched against: escapes
/// canonical and the scheme lower-cased. `*` and `?` are reserved characters, so the
/// glob syntax is untouched. `None` when the pattern holds a malformed escape or a
/// control character.
pub fn canonical_pattern(pattern: &str) -> Option<String> {
    // Escapes first, then the scheme: an escape may spell part of the scheme
    // (`%46ILE:` is `FILE:`), and canonicalising the result again must change nothing.
    let mut out = String::with_capacity(pattern.len());
    canon(pattern, Part::Other, &mut out).ok()?;
    if let Some(i) = out.find(':') {
        let scheme = &out[..i];
        if i > 0
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            let lower = scheme.to_ascii_lowercase();
            out.replace_range(..i, &lower);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn canonical_forms() {
        for (raw, want) in [
            ("file:///public/a.txt", "file:///public/a.txt"),
            ("FILE:///public/a.txt", "file:///public/a.txt"),
            ("file:///public/./a.txt", "file:///public/a.txt"),
            ("file:///public/%2e/a.txt", "file:///public/a.txt"),
            ("file:///%70ublic/a%2Etxt", "file:///public/a.txt"),
            ("file://localhost/public/a", "file:///public/a"),
            ("file://LOCALHOST/public/a", "file:///public/a"),
            ("file:///caf%c3%a9", "file:///caf%C3%A9"),
            ("file:///café", "file:///caf%C3%A9"),
            ("file:///my doc", "file:///my%20doc"),
            ("file:///a%3fb", "file:///a%3Fb"),
            ("file:///{path}", "file:///%7Bpath%7D"),
            ("HTTPS://Example.COM:443", "https://example.com/"),
            (
                "http://example.com:80/x?q=%2f#f",
                "http://example.com/x?q=%2F#f",
            ),
            ("https://example.com:8443/x", "https://example.com:8443/x"),
            ("https://[::1]:443/x", "https://[::1]/x"),
            ("postgres://db/table", "postgres://db/table"),
            ("mem:key", "mem:key"),
            ("urn:isbn:123", "urn:isbn:123"),
            ("file:///a/.", "file:///a/"),
            ("file:///a;b", "file:///a;b"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refusals() {
        for (raw, why) in [
            ("file:///public/../etc/passwd", UriError::DotDot),
            ("file:///public/%2e%2e/secret", UriError::DotDot),
            ("file:///public/%2E%2E/secret", UriError::DotDot),
            ("file:///public/.%2e/secret", UriError::DotDot),
            ("file:///public/..;/secret", UriError::DotDot),
            ("file:///public/a..b", UriError::DotDot),
            ("file:///public/..", UriError::DotDot),
            ("mem:../x", UriError::DotDot),
            ("file:///public%2fsecret", UriError::EncodedSeparator),
            ("file:///public%2Fsecret", UriError::EncodedSeparator),
            ("file:///public%5csecret", UriError::EncodedSeparator),
            ("file:///public\\..\\secret", UriError::Backslash),
            ("file:///public/%252e%252e/x", UriError::DoubleEncoding),
            ("file:///a%00.txt", UriError::Nul),
            ("file:///a?x=%00", UriError::Nul),
            ("file:///a%zz", UriError::BadEscape),
            ("file:///a%2", UriError::BadEscape),
            ("file:///a\u{0}b", UriError::Control),
            ("file:///a\nb", UriError::Control),
            // Found by fuzz/ (mcp_request): an encoded control character, anywhere.
            ("file:///public/%3e%1e/etc/passwd", UriError::Control),
            ("file:///public/a%0Ab", UriError::Control),
            ("file:///public/a%7f", UriError::Control),
            ("file:///public/a?x=%09", UriError::Control),
            ("file:///public/a#%0d", UriError::Control),
            ("https://exa%0dmple.com/", UriError::Control),
            // Found by fuzz/ (resource_uri): a port that is not digits.
            ("fiile://\u{448}ulefile::/@", UriError::Ambiguous),
            ("https://example.com::/x", UriError::Ambiguous),
            ("https://a:b:80/x", UriError::Ambiguous),
            ("https://example.com:8o/x", UriError::Ambiguous),
            ("https://[::1/x", UriError::Ambiguous),
            // Found by fuzz/ (resource_uri): `..` in the authority.
            ("https://../c?x#{?c?x]{", UriError::DotDot),
            ("https://a..b/c", UriError::DotDot),
            ("https://%2e%2e/c", UriError::DotDot),
            ("https://\u{ff0e}\u{ff0e}/c", UriError::Ambiguous),
            ("/etc/passwd", UriError::NotAbsolute),
            ("public/a", UriError::NotAbsolute),
            ("", UriError::NotAbsolute),
            ("1file:///a", UriError::NotAbsolute),
            // Red-team finding 6: the request-path rules.
            (
                "file:///public/\u{ff0e}\u{ff0e}/secret",
                UriError::Ambiguous,
            ),
            (
                "file:///public/%EF%BC%8E%EF%BC%8E/secret",
                UriError::Ambiguous,
            ),
            ("file:///public/\u{2025}/secret", UriError::Ambiguous),
            (
                "file:///public/\u{2024}\u{2024}/secret",
                UriError::Ambiguous,
            ),
            (
                "file:///public/%E2%80%A4%E2%80%A4/secret",
                UriError::Ambiguous,
            ),
            ("file:///public/secret./x", UriError::Ambiguous),
            ("file:///public/%20x", UriError::Ambiguous),
            ("file:///public/%C0%AE%C0%AE/secret", UriError::NotUtf8),
            (
                "file:///public/%E0%80%AE%E0%80%AE/secret",
                UriError::NotUtf8,
            ),
            ("file:///public/%FF", UriError::NotUtf8),
            ("file:///public/x?/../../secret", UriError::DotDot),
            ("file:///public/x?%2e%2e/secret", UriError::DotDot),
            ("file:///public/x#/../../secret", UriError::DotDot),
            // The resource_uri fuzz target's finding (fuzz/corpus/resource_uri/regress-*),
            // found on a build without the rule above: `..` in a fragment that holds `?`
            // and a second `#`.
            ("https:tps://Examplex#44~/a..//../c?x#{", UriError::DotDot),
            ("mem:x#a/%2E%2E/b", UriError::DotDot),
            ("file:///public/x?q=\u{ff0e}\u{ff0e}", UriError::Ambiguous),
            ("file:///public/x?q=%FF", UriError::NotUtf8),
        ] {
            assert_eq!(normalize(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        let samples = [
            "file:///public/a.txt",
            "FILE://LocalHost/%70ublic/./caf%c3%a9 x{y}",
            "HTTPS://User@Example.COM:443?q=%2f%41#%7e",
            "http://example.com:",
            "https://[::1]:/x",
            "mem:a/./b/",
            "urn:x:%5Bz%5d",
            "file:///a/.",
            "file:///a/./",
            "x:./a",
            "mem:/.//x",
        ];
        for s in samples {
            let once = normalize(s).unwrap_or_else(|e| panic!("{s}: {e:?}"));
            assert_eq!(normalize(&once).as_deref(), Ok(once.as_str()), "{s}");
        }
    }

    #[test]
    fn patterns_share_the_spelling() {
        assert_eq!(
            canonical_pattern("FILE:///caf%c3%a9/*").as_deref(),
            Some("file:///caf%C3%A9/*")
        );
        assert_eq!(
            canonical_pattern("file:///my docs/?").as_deref(),
            Some("file:///my%20docs/?")
        );
        assert_eq!(canonical_pattern("*").as_deref(), Some("*"));
        // Found by fuzz/ (resource_uri): escapes spelling the scheme are decoded before
        // the scheme is lower-cased, so a second pass changes nothing.
        let once = canonical_pattern("%4e%2eet%2e%2eele://t").unwrap();
        assert_eq!(once, "n.et..ele://t");
        assert_eq!(canonical_pattern(&once).as_deref(), Some(once.as_str()));
        assert_eq!(
            canonical_pattern("%46ILE:///Public/*").as_deref(),
            Some("file:///Public/*")
        );
        assert_eq!(canonical_pattern("file:///%zz"), None);
    }
}
