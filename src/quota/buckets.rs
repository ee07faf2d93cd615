//! The local buckets: one GCRA timestamp per bucket key, in a bounded, sharded map.
//!
//! What a replica enforces alone (no `state.redis`), and its fallback while Redis cannot
//! answer (`fail: open`). Keys are 64-bit keyed hashes of the limit and the request's key
//! parts (`quota::key`), so an entry is two words: about 36 bytes per bucket with the
//! table's control bytes and growth slack, [`MAX_BUCKETS`] buckets (36 MB) at most.
//!
//! A bucket whose TAT has passed is full again, exactly as if it were absent: those are
//! dropped first when a shard is full, which loses nothing. Only past [`MAX_BUCKETS`] live
//! buckets (as many identities each sending within its window) are live ones forgotten —
//! an eighth of the full shard, arbitrary ones — and those keys start again from a full
//! bucket; this is logged.
//!
//! Time is this process's monotonic clock in microseconds since the map was made, so the
//! buckets survive config reloads (they live in the gateway's state, not in a config) and
//! never see the wall clock jump.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use super::gcra::{self, Cell, Outcome};

/// The most buckets a replica keeps.
pub const MAX_BUCKETS: usize = 1_000_000;
const SHARDS: usize = 64;
const PER_SHARD: usize = MAX_BUCKETS / SHARDS;

/// The keys are already uniform hashes: use them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<Identity>>;

/// Bucket key → TAT (µs since `epoch`).
pub struct Buckets {
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
    /// Live buckets forgotten because the map was full (logged, bounded).
    evicted: crate::store::LoudLog,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets::new()
    }
}

impl Buckets {
    pub fn new() -> Buckets {
        Buckets {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            epoch: Instant::now(),
            evicted: Default::default(),
        }
    }

    /// Now, in the buckets' time.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn shard(&self, key: u64) -> Option<std::sync::MutexGuard<'_, Shard>> {
        // The low bits pick the table slot inside a shard; the high ones the shard.
        let i = (key >> 58) as usize % SHARDS;
        // A poisoned shard (a panic while held, which nothing here can cause) is taken
        // over as it is: its entries are plain integers, always consistent.
        self.shards
            .get(i)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Decide a request taking `cost` units from bucket `key`, and take them when allowed.
    pub fn take(&self, key: u64, cell: Cell, cost: u64, now: u64) -> Outcome {
        let Some(mut shard) = self.shard(key) else {
            return gcra::decide(None, now, cell, cost);
        };
        let o = gcra::decide(shard.get(&key).copied(), now, cell, cost);
        if o.allowed {
            self.store(&mut shard, key, o.tat, now);
        }
        o
    }

    /// Give back what [`Self::take`] took (another bucket of the same request refused it).
    /// A TAT at or below now means full: subtracting from it changes nothing that matters.
    pub fn give_back(&self, key: u64, cell: Cell, cost: u64) {
        if let Some(mut shard) = self.shard(key) {
            if let Some(tat) = shard.get_mut(&key) {
                *tat = tat.saturating_sub(cell.interval.saturating_mul(cost));
            }
        }
    }

    /// Set bucket `key` to be full again `reset_after` from now (what Redis decided), so
    /// that the fallback starts from the shared state when Redis goes away.
    pub fn mirror(&self, key: u64, reset_after: u64, now: u64) {
        if let Some(mut shard) = self.shard(key) {
            if reset_after == 0 {
                shard.remove(&key);
            } else {
                self.store(&mut shard, key, now.saturating_add(reset_after), now);
            }
        }
    }

    fn store(&self, shard: &mut Shard, key: u64, tat: u64, now: u64) {
        if shard.len() >= PER_SHARD && !shard.contains_key(&key) {
            // Full buckets are the same as absent ones: drop them first.
            shard.retain(|_, t| *t > now);
            if shard.len() >= PER_SHARD {
                let drop: Vec<u64> = shard.keys().take(PER_SHARD / 8).copied().collect();
                for k in &drop {
                    shard.remove(k);
                }
                self.evicted.error(|n| {
                    tracing::warn!(
                        forgotten = n * (PER_SHARD as u64 / 8),
                        max = MAX_BUCKETS,
                        "rate limits: too many live buckets on this replica; some were \
                         forgotten and start again full"
                    )
                });
            }
        }
        shard.insert(key, tat);
    }

    /// Buckets held (tests and the metrics of a scrape).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const CELL: Cell = Cell {
        interval: 1_000,
        tolerance: 3_000,
    };

    #[test]
    fn take_and_give_back() {
        let b = Buckets::new();
        let taken: Vec<bool> = (0..4).map(|_| b.take(7, CELL, 1, 0).allowed).collect();
        assert_eq!(taken, [true, true, true, false]);
        b.give_back(7, CELL, 1);
        assert!(b.take(7, CELL, 1, 0).allowed, "the unit came back");
        assert!(
            b.take(8, CELL, 3, 0).allowed,
            "other keys are other buckets"
        );
        assert!(!b.take(8, CELL, 1, 0).allowed);
    }

    #[test]
    fn mirror_sets_the_shared_state() {
        let b = Buckets::new();
        b.mirror(9, 3_000, 100);
        assert!(!b.take(9, CELL, 1, 100).allowed, "mirrored as empty");
        assert!(b.take(9, CELL, 1, 1_100).allowed);
        b.mirror(9, 0, 1_100);
        assert!(b.is_empty(), "full is absent");
    }

    /// Past the bound, full buckets go first and nothing grows beyond it.
    #[test]
    fn the_map_is_bounded() {
        let b = Buckets::new();
        // Fill one shard (keys with the same top bits) with live buckets.
        let key = |i: u64| (5u64 << 58) | i;
        for i in 0..PER_SHARD as u64 {
            b.take(key(i), CELL, 1, 0);
        }
        assert_eq!(b.len(), PER_SHARD);
        // Later, all of them are full again: a new one replaces them, losing nothing.
        b.take(key(1 << 40), CELL, 1, 10_000);
        assert_eq!(b.len(), 1);
        // Live ones beyond the bound: an eighth is forgotten, the total stays bounded.
        for i in 0..(PER_SHARD as u64 + 10) {
            b.take(key(i), CELL, 1, 20_000);
        }
        assert!(b.len() <= PER_SHARD, "{}", b.len());
    }
}
