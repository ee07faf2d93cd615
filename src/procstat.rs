//! The standard `process_*` metrics (CPU seconds, memory, open and maximum file
//! descriptors, start time), read from `/proc/self` at each scrape.
//!
//! The prometheus crate's `process` feature does the same through the procfs crate; these
//! six values are a few lines of `/proc` parsing, so no dependency is added. On a system
//! without `/proc` the families stay at zero.

use std::sync::OnceLock;

use prometheus::{Counter, Gauge, Opts, Registry};

struct Process {
    cpu: Counter,
    resident: Gauge,
    virtual_: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start: Gauge,
}

static PROCESS: OnceLock<Option<Process>> = OnceLock::new();

fn make(r: &Registry) -> Option<Process> {
    let g = |name: &str, help: &str| -> Option<Gauge> {
        let g = Gauge::with_opts(Opts::new(name, help)).ok()?;
        r.register(Box::new(g.clone())).ok()?;
        Some(g)
    };
    let cpu = Counter::with_opts(Opts::new(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
    ))
    .ok()?;
    r.register(Box::new(cpu.clone())).ok()?;
    Some(Process {
        cpu,
        resident: g(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?,
        virtual_: g(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?,
        open_fds: g("process_open_fds", "Number of open file descriptors.")?,
        max_fds: g(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )?,
        start: g(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?,
    })
}

/// Register the families in `r` (once) and read their first values.
pub fn register(r: &Registry) {
    PROCESS.get_or_init(|| make(r));
    update();
}

/// Read `/proc/self` into the gauges (before a scrape).
pub fn update() {
    let Some(Some(p)) = PROCESS.get() else {
        return;
    };
    if let Some(s) = read_stat() {
        let cpu = s.cpu_seconds;
        let now = p.cpu.get();
        if cpu > now {
            p.cpu.inc_by(cpu - now);
        }
        p.resident.set(s.resident_bytes);
        p.virtual_.set(s.virtual_bytes);
        p.start.set(s.start_time);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        p.open_fds.set(dir.count() as f64);
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| max_open_files(&l))
    {
        p.max_fds.set(max);
    }
}

struct Stat {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time: f64,
}

fn read_stat() -> Option<Stat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    parse_stat(&stat, &boot, ticks as f64, page as f64)
}

/// `/proc/self/stat` and `/proc/stat` → the values (`ticks` per second, `page` bytes).
fn parse_stat(stat: &str, boot: &str, ticks: f64, page: f64) -> Option<Stat> {
    if ticks <= 0.0 || page <= 0.0 {
        return None;
    }
    // The command name (field 2) may hold spaces and parentheses: fields 3.. follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    Some(Stat {
        // Fields 14 (utime), 15 (stime), 22 (starttime), 23 (vsize), 24 (rss): index - 3.
        cpu_seconds: (n(11)? + n(12)?) / ticks,
        start_time: btime + n(19)? / ticks,
        virtual_bytes: n(20)?,
        resident_bytes: n(21)? * page,
    })
}

fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn stat_fields() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    9 0 5000 104857600 2560 18446744073709551615";
        let s = parse_stat(stat, "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096.0).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.start_time, 1_700_000_050.0);
        assert_eq!(s.virtual_bytes, 104_857_600.0);
        assert_eq!(s.resident_bytes, 2560.0 * 4096.0);
    }

    #[test]
    fn limits() {
        let l = "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(l), Some(1024.0));
    }

    #[test]
    fn this_process_reads() {
        assert!(read_stat().is_some_and(|s| s.start_time > 1.0e9 && s.resident_bytes > 0.0));
    }
}
