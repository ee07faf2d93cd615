//! The connection settings of `limits` (caps and deadlines) and their checks. Shared
//! vocabulary of `config` (which compiles them) and `connections` (which applies them):
//! a leaf that imports nothing of ours.

use std::time::Duration;

/// The compiled `limits` settings that govern connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub request_head_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_per_address: usize,
    pub max_total: usize,
}

/// `max_connections` when the file does not set it: half the process's open-file limit
/// (the other half is for upstream connections and files), within 64 and 100000.
pub fn default_max_total() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    usize::try_from(soft / 2)
        .unwrap_or(100_000)
        .clamp(64, 100_000)
}

impl Limits {
    /// Check and compile the file values (seconds and counts).
    pub fn compile(
        request_head_timeout_seconds: u64,
        idle_timeout_seconds: u64,
        max_connections_per_address: usize,
        max_connections: Option<usize>,
    ) -> Result<Limits, String> {
        if !(1..=300).contains(&request_head_timeout_seconds) {
            return Err("limits.request_head_timeout_seconds must be 1 to 300".into());
        }
        if !(1..=3600).contains(&idle_timeout_seconds) {
            return Err("limits.idle_timeout_seconds must be 1 to 3600".into());
        }
        let max_total = max_connections.unwrap_or_else(default_max_total);
        if max_total == 0 || max_connections_per_address == 0 {
            return Err(
                "limits.max_connections and max_connections_per_address must be at least 1".into(),
            );
        }
        if max_connections_per_address > max_total {
            return Err(
                "limits.max_connections_per_address must not exceed limits.max_connections".into(),
            );
        }
        Ok(Limits {
            request_head_timeout: Duration::from_secs(request_head_timeout_seconds),
            idle_timeout: Duration::from_secs(idle_timeout_seconds),
            max_per_address: max_connections_per_address,
            max_total,
        })
    }
}
