//! Synchronisation by polling for a condition, never a fixed sleep: a test waits for what it
//! needs to see (a status, a metric, a log line, a file, a process exit), bounded, and goes on
//! the moment it holds. Where a test must let time pass (an expiry, a timeout), it polls for
//! the effect with a bound instead of sleeping the whole interval. The waits in this file are
//! the only sleeps of the suite outside [`pace`].

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` every [`POLL`] until it returns true or `limit` passes: `Ok(time taken)`, or
/// `Err(time waited)`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Result<Duration, Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(start.elapsed());
        }
        // Polling interval (the one wait of the async polls).
        tokio::time::sleep(POLL).await;
    }
}

/// [`within`] that panics with `what` when the condition does not hold in time.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(limit, check)
        .await
        .unwrap_or_else(|t| panic!("{what}: not within {limit:?} (waited {t:?})"))
}

/// Checks that `bad` stays false for the whole of `window`, polling it; panics with `what`
/// the moment it turns true. For effects that must never come (a host contacted, a request
/// forwarded after a refusal) and have no event to wait for.
pub async fn never<F, Fut>(window: Duration, what: &str, mut bad: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < window {
        assert!(!bad().await, "{what} (after {:?})", start.elapsed());
        // Polling interval.
        tokio::time::sleep(POLL).await;
    }
    assert!(!bad().await, "{what} (after {:?})", start.elapsed());
}

/// [`within`] for code that cannot await (a `Drop`, a plain `#[test]`).
pub fn within_blocking(
    limit: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<Duration, Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(start.elapsed());
        }
        // Polling interval (the one wait of the blocking polls).
        std::thread::sleep(POLL);
    }
}

/// Deliberate pacing, not synchronisation: the interval between the events of a mock's
/// stream, a slow server's latency, or a client that dribbles its request on purpose. The
/// time itself is what the test sends.
pub async fn pace(d: Duration) {
    tokio::time::sleep(d).await;
}
