//! GCRA, the generic cell rate algorithm: a token bucket kept as one timestamp per key.
//!
//! A limit of `count` per `period` with a burst of `burst` is a [`Cell`]: the emission
//! interval `T = period / count` and the tolerance `τ = burst · T`. A bucket stores only its
//! theoretical arrival time (TAT): the moment it will be full again. A request taking `c`
//! units at `now` moves it to `max(TAT, now) + c·T`, and is allowed when that is at most
//! `now + τ`; a refused request changes nothing. So `burst` requests pass at once from a
//! full bucket, then one every `T`, and in any interval `t` at most `burst + t / T` pass.
//!
//! Plain arithmetic on integers (microseconds), shared by the local buckets
//! (`quota::buckets`) and mirrored line for line by the Redis script (`quota::shared`), so
//! both decide alike. No clock here: the caller passes `now`.

/// One limit's bucket shape, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cell {
    /// `T`: one unit is earned back every `interval`.
    pub interval: u64,
    /// `τ = burst · T`: how far ahead of now the TAT may run.
    pub tolerance: u64,
}

/// The decision on one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// The TAT to store when allowed (unchanged, never below `now`, when refused).
    pub tat: u64,
    /// When refused: how long until the request would be allowed.
    pub retry_after: u64,
    /// How long until the bucket is full again (after this decision).
    pub reset_after: u64,
}

/// Decide a request taking `cost` units from the bucket whose stored TAT is `stored`
/// (`None`: never used, or full).
pub fn decide(stored: Option<u64>, now: u64, cell: Cell, cost: u64) -> Outcome {
    let tat = stored.map_or(now, |t| t.max(now));
    let next = tat.saturating_add(cell.interval.saturating_mul(cost));
    let allow_at = next.saturating_sub(cell.tolerance);
    if now < allow_at {
        Outcome {
            allowed: false,
            tat,
            retry_after: allow_at - now,
            reset_after: tat - now,
        }
    } else {
        Outcome {
            allowed: true,
            tat: next,
            retry_after: 0,
            reset_after: next - now,
        }
    }
}

/// What a bucket holds `reset_after` before it is full: the units available now, and how
/// long until one more is (0 when full).
pub fn remaining(cell: Cell, reset_after: u64) -> (u64, u64) {
    let interval = cell.interval.max(1);
    let slack = cell.tolerance.saturating_sub(reset_after);
    let units = slack / interval;
    let next = if reset_after == 0 {
        0
    } else {
        interval - slack % interval
    };
    (units, next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// 10 per second, burst 5: T = 100 ms, τ = 500 ms.
    const CELL: Cell = Cell {
        interval: 100_000,
        tolerance: 500_000,
    };

    /// Run requests of one unit at the given times (µs); the ones allowed.
    fn run(times: &[u64]) -> Vec<bool> {
        let mut tat = None;
        times
            .iter()
            .map(|&now| {
                let o = decide(tat, now, CELL, 1);
                if o.allowed {
                    tat = Some(o.tat);
                }
                o.allowed
            })
            .collect()
    }

    #[test]
    fn a_full_bucket_passes_burst_at_once_then_one_per_interval() {
        let at_once = run(&[0; 7]);
        assert_eq!(at_once, [true, true, true, true, true, false, false]);
        // After the burst, one unit comes back every 100 ms.
        let mut times = vec![0; 5];
        times.extend([50_000, 100_000, 150_000, 200_000, 200_000]);
        assert_eq!(
            run(&times)[5..],
            [false, true, false, true, false],
            "one per interval after the burst"
        );
    }

    /// In any interval `t` at most `burst + t / T` requests pass, and a client sending
    /// faster than the rate gets that many (within one).
    #[test]
    fn the_count_in_a_window_is_burst_plus_rate() {
        // A request every 7 ms for a little over 3 s: 5 + 3 s × 10/s = 35 allowed.
        let times: Vec<u64> = (0..=430).map(|i| i * 7_000).collect();
        let allowed = run(&times).iter().filter(|a| **a).count();
        assert!((35..=36).contains(&allowed), "{allowed}");
        // Every window of 1 s holds at most 5 + 10 = 15.
        let res = run(&times);
        let passed: Vec<u64> = times
            .iter()
            .zip(&res)
            .filter(|(_, a)| **a)
            .map(|(t, _)| *t)
            .collect();
        for (i, start) in passed.iter().enumerate() {
            let within = passed[i..]
                .iter()
                .take_while(|t| **t < start + 1_000_000)
                .count();
            assert!(within <= 15, "{within} in the second from {start}");
        }
    }

    #[test]
    fn a_refusal_changes_nothing_and_says_when_to_retry() {
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(decide(tat, 0, CELL, 1).tat);
        }
        let o = decide(tat, 30_000, CELL, 1);
        assert!(!o.allowed);
        assert_eq!(o.tat, tat.unwrap(), "unchanged");
        assert_eq!(o.retry_after, 70_000, "the next unit, at 100 ms");
        assert_eq!(o.reset_after, 470_000, "full again at 500 ms");
        assert!(decide(tat, 30_000 + o.retry_after, CELL, 1).allowed);
        // A cost of two needs two units back.
        let o = decide(tat, 30_000, CELL, 2);
        assert_eq!(o.retry_after, 170_000);
    }

    #[test]
    fn remaining_units_and_the_next_one() {
        assert_eq!(remaining(CELL, 0), (5, 0), "full");
        assert_eq!(remaining(CELL, 100_000), (4, 100_000));
        assert_eq!(remaining(CELL, 130_000), (3, 30_000));
        assert_eq!(remaining(CELL, 500_000), (0, 100_000), "empty");
        let o = decide(None, 0, CELL, 1);
        assert_eq!(remaining(CELL, o.reset_after), (4, 100_000));
    }

    /// The largest cell the config allows (one a day, a 10-year tolerance) and a cost no
    /// body can reach: refused, no overflow; a saturated TAT refuses too.
    #[test]
    fn extremes_refuse_instead_of_overflowing() {
        let cell = Cell {
            interval: 86_400_000_000,
            tolerance: 10 * 366 * 86_400_000_000,
        };
        let o = decide(None, 0, cell, u64::MAX / 2);
        assert!(!o.allowed);
        assert!(decide(Some(u64::MAX), 1, cell, 1).retry_after > 0);
        assert!(decide(None, u64::MAX / 4, cell, 3660).allowed);
    }
}
