//! The audit log: one line per auth decision, target `mcpgate::audit`, at `info`.
//!
//! Filtered like every other event (`RUST_LOG=mcpgate::audit=off` turns it off), shaped
//! like the other lines of the chosen `--log-format` (the JSON object tracing-subscriber
//! writes, with the decision under `fields`), but formatted here into a reused per-thread
//! buffer and handed to the log sink: going through tracing's generic visitor and
//! serde_json cost more per request than the rest of an `auth: none` request's own work.
//! Never a token: `token` (and `upstream_credential`, the credential the upstream got) is a
//! 12-hex-digit SHA-256 prefix.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::logs::{self, Format};

/// One auth decision. `None` fields are left out of the line.
pub struct Record<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub decision: &'static str,
    /// The refusal's reason label (as in `mcpgate_requests_total`), `ok` when allowed.
    pub reason: &'a str,
    /// What the client was told (`error_description`), when refused.
    pub description: Option<&'a str>,
    /// The rate limit (or `streams_per_subject`) that refused it.
    pub limit: Option<&'a str>,
    pub status: u16,
    pub auth_method: Option<&'static str>,
    pub issuer: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub token: Option<&'a str>,
    pub dpop_jkt: Option<&'a str>,
    pub mcp_method: Option<&'a str>,
    pub mcp_name: Option<&'a str>,
    pub decision_us: u64,
    pub upstream_error: Option<&'a str>,
    /// The route's `upstream_auth` mode, unless `none`.
    pub upstream_auth: Option<&'static str>,
    /// 12-hex-digit SHA-256 prefix of the credential the upstream received from us (or,
    /// with `forward`, of the client's token), never the credential.
    pub upstream_credential: Option<&'a str>,
    /// `X-Request-Id` (the client's when sane, else generated).
    pub request_id: Option<&'a str>,
    /// The client's address (the peer of the public listener).
    pub client: Option<&'a str>,
    /// `User-Agent`, bounded (`observe::user_agent`); escaped like every value.
    pub user_agent: Option<&'a str>,
}

/// Whether `RUST_LOG` lets audit lines through.
pub fn enabled() -> bool {
    tracing::enabled!(target: "mcpgate::audit", tracing::Level::INFO)
}

/// Write `r` to the log (the caller checked [`enabled`]).
pub fn write(r: &Record<'_>) {
    thread_local!(static LINE: RefCell<String> = RefCell::new(String::with_capacity(512)));
    LINE.with_borrow_mut(|line| {
        line.clear();
        format(line, r, logs::format(), SystemTime::now());
        logs::write_line(line.as_bytes());
    });
}

fn format(out: &mut String, r: &Record<'_>, f: Format, now: SystemTime) {
    let mut line = Line::new(out, f);
    match f {
        Format::Json => {
            line.out.push_str("{\"timestamp\":\"");
            timestamp(line.out, now);
            line.out.push_str("\",\"level\":\"INFO\",\"fields\":{");
        }
        Format::Pretty => {
            timestamp(line.out, now);
            line.out.push_str("  INFO mcpgate::audit:");
        }
    }
    line.plain("request_id", r.request_id);
    line.str("route", Some(r.route));
    line.str("method", Some(r.method));
    line.str("path", Some(r.path));
    line.str("decision", Some(r.decision));
    line.str("reason", Some(r.reason));
    line.str("description", r.description);
    line.str("limit", r.limit);
    line.num("status", u64::from(r.status));
    line.str("auth_method", r.auth_method);
    line.str("issuer", r.issuer);
    line.str("subject", r.subject);
    line.str("client_id", r.client_id);
    line.str("token", r.token);
    line.str("dpop_jkt", r.dpop_jkt);
    line.str("mcp_method", r.mcp_method);
    line.str("mcp_name", r.mcp_name);
    line.num("decision_us", r.decision_us);
    line.str("upstream_error", r.upstream_error);
    line.str("upstream_auth", r.upstream_auth);
    line.str("upstream_credential", r.upstream_credential);
    line.plain("client", r.client);
    line.str("user_agent", r.user_agent);
    match f {
        Format::Json => line.out.push_str("},\"target\":\"mcpgate::audit\"}\n"),
        Format::Pretty => line.out.push('\n'),
    }
}

struct Line<'o> {
    out: &'o mut String,
    format: Format,
    first: bool,
}

impl<'o> Line<'o> {
    fn new(out: &'o mut String, format: Format) -> Line<'o> {
        Line {
            out,
            format,
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        match self.format {
            Format::Json => {
                if !self.first {
                    self.out.push(',');
                }
                self.out.push('"');
                self.out.push_str(k);
                self.out.push_str("\":");
            }
            Format::Pretty => {
                self.out.push(' ');
                self.out.push_str(k);
                self.out.push('=');
            }
        }
        self.first = false;
    }

    fn str(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.key(k);
            json_string(self.out, v);
        }
    }

    /// A value known to need no escaping (a checked request id, an IP address): quoted as
    /// is, without the per-byte scan. Anything else goes through [`json_string`].
    fn plain(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            if !v.bytes().all(plain_byte) {
                return self.str(k, Some(v));
            }
            self.key(k);
            self.out.push('"');
            self.out.push_str(v);
            self.out.push('"');
        }
    }

    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        push_uint(self.out, v, 1);
    }
}

/// A byte that is the same in a JSON string and needs no escape in either format: the
/// request id's charset (`observe::request_id`) and what an IP address is written with.
fn plain_byte(b: u8) -> bool {
    PLAIN[usize::from(b)]
}

const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'/' | b'+' | b'=');
        i += 1;
    }
    t
};

/// `s` as a JSON string (also how the pretty format quotes values: a value can never
/// break the line, fake another field or drive a terminal). C0 and C1 controls, DEL and
/// the Unicode line separators are escaped (`\u009b`, `\u2028`).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut clean = 0;
    let bytes = s.as_bytes();
    // Every character that needs escaping starts at an ASCII byte, 0xC2 (C1: U+0080 to
    // U+009F) or 0xE2 (U+2028, U+2029), so slicing at it keeps UTF-8 intact.
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (esc, len): (&str, usize) = match b {
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            b'\n' => ("\\n", 1),
            b'\r' => ("\\r", 1),
            b'\t' => ("\\t", 1),
            0..=0x1f | 0x7f => ("", 1),
            0xc2 if bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)) => ("", 2),
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && bytes.get(i + 2).is_some_and(|n| *n == 0xa8 || *n == 0xa9) =>
            {
                ("", 3)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[clean..i]);
        if esc.is_empty() {
            let c = s[i..i + len].chars().next().map_or(0, |c| c as u32);
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.push_str(esc);
        }
        i += len;
        clean = i;
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

/// RFC 3339 UTC with microseconds, like tracing-subscriber's default timer.
fn timestamp(out: &mut String, now: SystemTime) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_date((secs / 86_400) as i64);
    let s = secs % 86_400;
    push_uint(out, y.max(0) as u64, 4);
    out.push('-');
    push_uint(out, u64::from(m), 2);
    out.push('-');
    push_uint(out, u64::from(day), 2);
    out.push('T');
    push_uint(out, s / 3600, 2);
    out.push(':');
    push_uint(out, s / 60 % 60, 2);
    out.push(':');
    push_uint(out, s % 60, 2);
    out.push('.');
    push_uint(out, u64::from(d.subsec_micros()), 6);
    out.push('Z');
}

/// `v` in decimal, zero-padded to at least `width` digits (no `fmt` machinery: this runs
/// several times per request).
fn push_uint(out: &mut String, mut v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(digits.len() - width.min(digits.len()));
    for &b in &digits[start..] {
        out.push(b as char);
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_date(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that leap days end each 400/100/4-year cycle.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::Duration;

    fn record() -> Record<'static> {
        Record {
            route: "mcp",
            method: "POST",
            path: "/mcp",
            decision: "allow",
            reason: "ok",
            description: None,
            limit: None,
            status: 200,
            auth_method: Some("jwt"),
            issuer: Some("as"),
            subject: Some("al\"ice\n\u{1}x\u{9b}\u{2028}é"),
            client_id: None,
            token: Some("0123456789ab"),
            dpop_jkt: None,
            mcp_method: Some("tools/call"),
            mcp_name: Some("ré"),
            decision_us: 17,
            upstream_error: None,
            upstream_auth: None,
            upstream_credential: None,
            request_id: None,
            client: None,
            user_agent: None,
        }
    }

    /// The instruction cost of one line, measured under callgrind (bench/README.md):
    /// `AUDIT_LINES=N valgrind --tool=callgrind <test binary> --ignored --exact
    /// audit::tests::line_cost`, once with N=0 and once with N large; the difference divided
    /// by N is the cost of one line. `AUDIT_FIELDS=old` leaves out the request id, client
    /// address and user agent (the line before issue 18).
    #[test]
    #[ignore]
    fn line_cost() {
        let n: usize = std::env::var("AUDIT_LINES").map_or(0, |v| v.parse().unwrap());
        let old = std::env::var("AUDIT_FIELDS").is_ok_and(|v| v == "old");
        let mut r = record();
        r.subject = Some("alice@example.com");
        r.mcp_name = Some("search_repositories");
        if !old {
            r.request_id = Some("0f8fad5bd9cb469fa16570867728950e");
            r.client = Some("203.0.113.7");
            r.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) inspector/0.17.2 node/22.19");
        }
        let mut s = String::with_capacity(512);
        let mut total = 0;
        for i in 0..n {
            s.clear();
            let t = UNIX_EPOCH + Duration::from_micros(1_795_413_398_530_835 + i as u64);
            format(&mut s, std::hint::black_box(&r), Format::Json, t);
            total += s.len();
        }
        std::hint::black_box(total);
    }

    /// A "plain" value that is not plain after all is escaped like any other.
    #[test]
    fn plain_values_fall_back_to_escaping() {
        let mut r = record();
        r.request_id = Some("ok-id_1.2:3@4/5+6=");
        r.client = Some("a\"b\n");
        let mut s = String::new();
        format(&mut s, &r, Format::Json, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["fields"]["request_id"], "ok-id_1.2:3@4/5+6=");
        assert_eq!(v["fields"]["client"], "a\"b\n");
    }

    #[test]
    fn decimal() {
        let f = |v, w| {
            let mut s = String::new();
            push_uint(&mut s, v, w);
            s
        };
        assert_eq!(f(0, 1), "0");
        assert_eq!(f(7, 2), "07");
        assert_eq!(f(1234, 2), "1234");
        assert_eq!(f(42, 6), "000042");
        assert_eq!(f(u64::MAX, 1), u64::MAX.to_string());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        // 2026-11-23
        assert_eq!(civil_date(20_780), (2026, 11, 23));
    }

    #[test]
    fn json_line_is_one_object_with_the_decision_under_fields() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_413_398_530_835);
        let mut s = String::new();
        format(&mut s, &record(), Format::Json, t);
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["timestamp"], "2026-11-23T05:56:38.530835Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "mcpgate::audit");
        let f = &v["fields"];
        assert_eq!(f["subject"], "al\"ice\n\u{1}x\u{9b}\u{2028}é");
        assert_eq!(f["status"], 200);
        assert_eq!(f["decision_us"], 17);
        assert_eq!(f["mcp_name"], "ré");
        assert!(f.get("client_id").is_none());
        assert_eq!(f.as_object().unwrap().len(), 13);
        let r = Record {
            upstream_auth: Some("token_exchange"),
            upstream_credential: Some("a1b2c3d4e5f6"),
            ..record()
        };
        let mut s = String::new();
        format(&mut s, &r, Format::Json, t);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["fields"]["upstream_auth"], "token_exchange");
        assert_eq!(v["fields"]["upstream_credential"], "a1b2c3d4e5f6");
    }

    #[test]
    fn pretty_line_quotes_values() {
        let mut s = String::new();
        format(&mut s, &record(), Format::Pretty, UNIX_EPOCH);
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000000Z  INFO mcpgate::audit: route=\"mcp\" method=\"POST\" \
             path=\"/mcp\" decision=\"allow\" reason=\"ok\" status=200 auth_method=\"jwt\" \
             issuer=\"as\" subject=\"al\\\"ice\\n\\u0001x\\u009b\\u2028é\" token=\"0123456789ab\" \
             mcp_method=\"tools/call\" mcp_name=\"ré\" decision_us=17\n"
        );
    }
}
