//! Log output: the tracing subscriber and the buffered sink every line goes through.
//!
//! Lines (audit lines included) are appended to one in-memory buffer and written to stderr
//! by a background thread every [`FLUSH_EVERY`], or sooner once [`FLUSH_AT`] bytes wait, the
//! way Envoy's access logs are flushed. A request never pays a write syscall or a thread
//! wake-up for its audit line. Nothing is dropped: when the buffer reaches [`HARD_LIMIT`]
//! (stderr cannot keep up), the logging thread writes it out itself. [`flush`] empties the
//! buffer before the process exits on its own.
//!
//! No line carries a control character but its final newline ([`escape_line`], applied to
//! every formatted event whatever its fields): a value from a client or the admin API
//! cannot forge a line or drive a terminal. The pretty format has no colours for that
//! reason.
//!
//! pingora logs whole request headers (`Authorization`, the query) at trace level, so its
//! targets never log above debug, whatever `RUST_LOG` asks for; at the default `info` its
//! debug records are not even built. What pingora logs at higher levels is redacted
//! ([`redact_pingora`]) before it is written: a request target's query (the proxy's own
//! request summary has none, but an error's text may quote one) and the raw bytes pingora
//! quotes from a head it could not parse (`buf: ...`, client or upstream bytes alike).

use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing::level_filters::LevelFilter;
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffered bytes that wake the writer before [`FLUSH_EVERY`].
pub const FLUSH_AT: usize = 64 * 1024;
/// Buffered bytes at which the logging thread writes the buffer out itself.
pub const HARD_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Pretty,
}

struct Sink {
    buf: Mutex<Vec<u8>>,
    full: Condvar,
}

static SINK: OnceLock<Sink> = OnceLock::new();
static FORMAT: OnceLock<Format> = OnceLock::new();

/// The `--log-format` of this process (pretty until [`init`]).
pub fn format() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Pretty)
}

fn sink() -> &'static Sink {
    SINK.get_or_init(|| {
        // Without the writer thread (it could not start), lines still go out: at
        // HARD_LIMIT the logging thread writes them itself, and `flush` at exit.
        let _ = std::thread::Builder::new()
            .name("mcpgate-log".into())
            .spawn(writer_loop);
        Sink {
            buf: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            full: Condvar::new(),
        }
    })
}

fn writer_loop() {
    let mut spare = Vec::with_capacity(FLUSH_AT);
    loop {
        let s = sink();
        {
            let Ok(mut buf) = s.buf.lock() else { return };
            if buf.len() < FLUSH_AT {
                buf = match s.full.wait_timeout(buf, FLUSH_EVERY) {
                    Ok((b, _)) => b,
                    Err(_) => return,
                };
            }
            if buf.is_empty() {
                continue;
            }
            std::mem::swap(&mut *buf, &mut spare);
        }
        // stderr's own lock orders this write with `flush` and the hard-limit path. A
        // failed write to stderr has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(&spare);
        spare.clear();
        if spare.capacity() > 4 * FLUSH_AT {
            spare.shrink_to(FLUSH_AT);
        }
    }
}

/// Write out every buffered line now.
pub fn flush() {
    let Some(s) = SINK.get() else { return };
    let Ok(mut buf) = s.buf.lock() else { return };
    let mut err = std::io::stderr().lock();
    // A failed write to stderr has nowhere to be reported.
    let _ = err.write_all(&buf);
    let _ = err.flush();
    buf.clear();
}

/// Append formatted lines to the buffer.
pub fn write_line(line: &[u8]) {
    let s = sink();
    let mut buf = s.buf.lock().unwrap_or_else(|e| e.into_inner());
    let before = buf.len();
    buf.extend_from_slice(line);
    if buf.len() >= HARD_LIMIT {
        // A failed write to stderr has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(&buf);
        buf.clear();
    } else if before < FLUSH_AT && buf.len() >= FLUSH_AT {
        s.full.notify_one();
    }
}

/// What the fmt layer writes a formatted line into; `pingora`: the event comes from one of
/// pingora's targets, whose text is redacted first.
pub struct SinkWriter {
    pingora: bool,
}

/// Makes the [`SinkWriter`] of each event, knowing its target.
struct Sinks;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sinks {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter { pingora: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SinkWriter {
        // pingora logs through the `log` crate: its records arrive with the bridge's
        // target `log` (every `log` record is redacted, pingora's or not).
        SinkWriter {
            pingora: meta.target() == "log" || meta.target().starts_with("pingora"),
        }
    }
}

impl Write for SinkWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.pingora {
            let redacted = redact_pingora(line, format());
            write_line(&escape_line(&redacted, format()));
            return Ok(line.len());
        }
        // The fmt layer hands over one whole event per write. In the pretty format a value
        // is written as it is (`%value`), so a control character in it (a newline, an ESC
        // sequence in an admin-supplied revocation subject...) would forge a line or drive
        // the terminal: every one is escaped, whatever field it came from. The JSON format
        // escapes C0 controls itself; C1 controls and line separators are escaped here.
        write_line(&escape_line(line, format()));
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What replaces redacted text.
pub const REDACTED: &str = "<redacted>";

/// A line of pingora's with what may carry a client's secret removed:
/// - the raw bytes pingora quotes from a head it could not parse (`buf: <bytes>`, up to the
///   last ` cause: ` after them, else the last `, status: `, else the end of the message);
/// - every query string (`?` and what follows up to white space or the end of the message):
///   a request target may carry `?access_token=` or a signed URL's key.
///
/// `format` tells where a message ends: an unescaped `"` in JSON, the line's end otherwise.
pub fn redact_pingora(line: &[u8], format: Format) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let text = String::from_utf8_lossy(line);
    if !text.contains("buf: ") && !text.contains('?') {
        return Cow::Borrowed(line);
    }
    let json = format == Format::Json;
    // The end of the message that contains byte `from`.
    let message_end = |s: &str, from: usize| -> usize {
        let b = s.as_bytes();
        let mut i = from;
        while i < b.len() {
            match b[i] {
                b'\\' if json => i += 2,
                b'"' if json => return i,
                b'\n' => return i,
                _ => i += 1,
            }
        }
        b.len()
    };
    let mut out = text.into_owned();
    // Raw bytes quoted by a parse error.
    let mut search = 0;
    while let Some(at) = out[search..].find("buf: ").map(|i| i + search) {
        let start = at + "buf: ".len();
        let end = message_end(&out, start);
        let within = &out[start..end];
        let cut = within
            .rfind(" cause: ")
            .or_else(|| within.rfind(", status: "))
            .unwrap_or(within.len());
        out.replace_range(start..start + cut, REDACTED);
        search = start + REDACTED.len();
    }
    // Query strings.
    let mut search = 0;
    while let Some(at) = out[search..].find('?').map(|i| i + search) {
        let b = out.as_bytes();
        let start = at + 1;
        let mut i = start;
        while i < b.len() {
            match b[i] {
                b'\\' if json => i += 2,
                b'"' if json => break,
                c if c.is_ascii_whitespace() => break,
                _ => i += 1,
            }
        }
        let end = i.min(b.len());
        if end > start && &out[start..end] != REDACTED {
            out.replace_range(start..end, REDACTED);
        }
        search = start + REDACTED.len().min(out.len() - start);
    }
    Cow::Owned(out.into_bytes())
}

/// A pingora error's text (as the audit line quotes it) with the same redaction as
/// pingora's own lines ([`redact_pingora`]).
pub fn redact_message(text: &str) -> String {
    String::from_utf8_lossy(&redact_pingora(text.as_bytes(), Format::Pretty)).into_owned()
}

/// Whether `c` must not reach a log line as it is: C0 and C1 controls, DEL, and the
/// Unicode line and paragraph separators some viewers break lines at.
fn is_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `line` with every control character but its final newline escaped: in the pretty
/// format as `\n`, `\r`, `\t`, `\x1b`, `\u{9b}`...; in the JSON format, where such a
/// character can only stand inside a string, as the JSON escape `\u009b` (the object is
/// unchanged). Borrowed when there is none (the usual case).
pub fn escape_line(line: &[u8], format: Format) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    use std::fmt::Write as _;
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let text = String::from_utf8_lossy(body);
    if !text.chars().any(is_control) && matches!(text, Cow::Borrowed(_)) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in text.chars() {
        match c {
            c if format == Format::Json && is_control(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && is_control(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_control(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if body.len() != line.len() {
        out.push('\n');
    }
    Cow::Owned(out.into_bytes())
}

/// Whether an event may be logged: pingora's targets stop at debug.
fn below_pingora_trace(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.target().starts_with("pingora") && *meta.level() == Level::TRACE)
}

/// Install the process-wide subscriber: `RUST_LOG` (default `info`), pingora capped at
/// debug, lines in `format` through the buffered sink.
pub fn init(format: Format) {
    // Set once per process; a second `init` (tests) keeps the first format.
    let _ = FORMAT.set(format);
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = env.and(filter_fn(below_pingora_trace).with_max_level_hint(LevelFilter::TRACE));
    // No colours: they are escape sequences, and every one in a line is escaped (see
    // `SinkWriter`); logs are read from files and collectors more than from terminals.
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Sinks);
    let layer = match format {
        Format::Json => layer.json().with_filter(filter).boxed(),
        Format::Pretty => layer.with_filter(filter).boxed(),
    };
    // Fails only when a subscriber is installed already (a second `init`).
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Finding 10: a request target's query and the raw bytes of a head pingora could not
    /// parse never reach a line of pingora's, in either format; the rest of the line stays.
    #[test]
    fn pingora_lines_lose_queries_and_raw_bytes() {
        let pretty = "2026-12-06T05:05:05Z ERROR pingora_proxy: Fail to proxy: Upstream \
             InvalidHTTPHeader context: Peer: addr: 127.0.0.1:18082 cause:  context: buf: \
             garbage\\r\\nAuthorization: Bearer SECRET1 cause: fake cause: invalid HTTP version, \
             status: 502, tries: 1, retry: false, GET /open/x?access_token=SECRET2&api_key=SECRET3, \
             Host: 127.0.0.1\n";
        let out = String::from_utf8(redact_pingora(pretty.as_bytes(), Format::Pretty).into_owned())
            .unwrap();
        assert!(!out.contains("SECRET"), "{out}");
        assert!(
            out.contains("buf: <redacted> cause: invalid HTTP version, status: 502"),
            "{out}"
        );
        assert!(
            out.contains("GET /open/x?<redacted> Host: 127.0.0.1\n"),
            "{out}"
        );
        let json = r#"{"level":"ERROR","fields":{"message":"Fail to proxy: buf: HTTP/1.1 200 OK\r\nX: \"SECRET4\" cause: invalid header name, status: 502, GET /a?t=SECRET5\"x, Host: h","log.target":"pingora_proxy"},"target":"pingora_proxy"}"#;
        let out = redact_pingora(json.as_bytes(), Format::Json);
        let text = String::from_utf8(out.into_owned()).unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["fields"]["message"],
            "Fail to proxy: buf: <redacted> cause: invalid header name, status: 502, GET /a?<redacted> Host: h"
        );
        // A message whose buf is last, and one without any of it.
        let out = redact_pingora(b"x buf: a b c\n", Format::Pretty);
        assert_eq!(&*out, b"x buf: <redacted>\n");
        let plain = b"ERROR pingora_core: Accept() failed\n";
        assert!(matches!(
            redact_pingora(plain, Format::Pretty),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let plain = b"2026-01-01T00:00:00Z  INFO mcpgate: ok value=\"r\xc3\xa9\"\n";
        assert!(matches!(
            escape_line(plain, Format::Pretty),
            std::borrow::Cow::Borrowed(_)
        ));
        let forged = "INFO revocation recorded value=a\n2026-01-01 ERROR forged\x1b[31mred\r\t\u{9b}2J\u{2028}x\x00\x7f\n";
        let out =
            String::from_utf8(escape_line(forged.as_bytes(), Format::Pretty).into_owned()).unwrap();
        assert_eq!(
            out,
            "INFO revocation recorded value=a\\n2026-01-01 ERROR forged\\x1b[31mred\\r\\t\\u{9b}2J\\u{2028}x\\x00\\x7f\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'));
        // Invalid UTF-8 is replaced, never passed through.
        let out = escape_line(b"a\xff\x1bb\n", Format::Pretty);
        assert_eq!(
            String::from_utf8(out.into_owned()).unwrap(),
            "a\u{fffd}\\x1bb\n"
        );
        // JSON: the same characters as JSON escapes; the object is unchanged.
        let line = "{\"fields\":{\"value\":\"a\u{9b}b\u{2028}\\u001b\"}}\n";
        let out =
            String::from_utf8(escape_line(line.as_bytes(), Format::Json).into_owned()).unwrap();
        assert_eq!(
            out,
            "{\"fields\":{\"value\":\"a\\u009bb\\u2028\\u001b\"}}\n"
        );
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(line).unwrap(),
            serde_json::from_str(&out).unwrap(),
        );
        assert_eq!(a, b);
        // No trailing newline: none added.
        assert_eq!(&*escape_line(b"a\nb", Format::Pretty), b"a\\nb");
    }
}
