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
//! debug records are not even built.

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

/// What the fmt layer writes a formatted line into.
pub struct SinkWriter;

impl Write for SinkWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
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
        .with_writer(|| SinkWriter);
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
