//! Log output: the tracing subscriber and the buffered sink every line goes through.
//!
//! Lines (audit lines included) are appended to one in-memory buffer and written to stderr
//! by a background thread every [`FLUSH_EVERY`], or sooner once [`FLUSH_AT`] bytes wait, the
//! way Envoy's access logs are flushed. A request never pays a write syscall or a thread
//! wake-up for its audit line. Nothing is dropped: when the buffer reaches [`HARD_LIMIT`]
//! (stderr cannot keep up), the logging thread writes it out itself. [`flush`] empties the
//! buffer before the process exits on its own.
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
        // stderr's own lock orders this write with `flush` and the hard-limit path.
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
        write_line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether an event may be logged: pingora's targets stop at debug.
fn below_pingora_trace(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.target().starts_with("pingora") && *meta.level() == Level::TRACE)
}

/// Install the process-wide subscriber: `RUST_LOG` (default `info`), pingora capped at
/// debug, lines in `format` through the buffered sink.
pub fn init(format: Format) {
    let _ = FORMAT.set(format);
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = env.and(filter_fn(below_pingora_trace).with_max_level_hint(LevelFilter::TRACE));
    let layer = tracing_subscriber::fmt::layer().with_writer(|| SinkWriter);
    let layer = match format {
        Format::Json => layer.json().with_filter(filter).boxed(),
        Format::Pretty => layer.with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
