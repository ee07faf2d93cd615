//! `concurrency.streams_per_subject`: how many requests one identity may have open at once on
//! this replica, counted until their answer turns out to be complete (a body of known length)
//! or, for a stream (SSE, or any body without a length), until it ends.
//!
//! A [`Slot`] is taken before the request is forwarded and given back when dropped: by the
//! proxy when the answer's head shows a complete body, or with the request's context when
//! the exchange ends however it ends (finished, failed, the client gone, the stream cut by
//! its watchdog). Nothing else has to remember to give it back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::metrics;

const SHARDS: usize = 16;

/// Open slots per identity key.
#[derive(Default)]
pub struct Streams {
    shards: [Mutex<HashMap<u64, u32>>; SHARDS],
    open: AtomicI64,
}

/// One open request of an identity; given back when dropped.
pub struct Slot {
    streams: Arc<Streams>,
    key: u64,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Streams {
    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u32>> {
        // Counters only: a poisoned shard is still consistent.
        self.shards[(key as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for identity `key` if it holds fewer than `max`; `None` when it holds `max`.
    pub fn acquire(self: &Arc<Self>, key: u64, max: u32) -> Option<Slot> {
        {
            let mut shard = self.shard(key);
            let n = shard.entry(key).or_insert(0);
            if *n >= max {
                return None;
            }
            *n += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        metrics::stream_slots_held(1);
        Some(Slot {
            streams: self.clone(),
            key,
        })
    }

    /// Slots held by identity `key`.
    pub fn held(&self, key: u64) -> u32 {
        self.shard(key).get(&key).copied().unwrap_or(0)
    }

    /// Slots held in all.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut shard = self.streams.shard(self.key);
            if let Some(n) = shard.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    shard.remove(&self.key);
                }
            }
        }
        self.streams.open.fetch_sub(1, Ordering::AcqRel);
        metrics::stream_slots_held(-1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn slots_are_capped_per_identity_and_given_back_on_drop() {
        let s = Arc::new(Streams::default());
        let a: Vec<Slot> = (0..3).filter_map(|_| s.acquire(1, 3)).collect();
        assert_eq!(a.len(), 3);
        assert!(s.acquire(1, 3).is_none(), "the fourth of identity 1");
        let b = s.acquire(2, 3).unwrap();
        assert_eq!((s.held(1), s.held(2), s.open()), (3, 1, 4));
        drop(a);
        assert_eq!(s.held(1), 0);
        assert!(s.acquire(1, 3).is_some());
        drop(b);
        assert_eq!(s.open(), 0);
        assert!(s.shards.iter().all(|m| m.lock().unwrap().is_empty()));
    }
}
