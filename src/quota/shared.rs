//! Limits shared by every replica: the GCRA of `quota::gcra` run in Redis, atomically, in one
//! round trip per decision.
//!
//! One Lua script takes every bucket a request touches (each limit that applies, each key a
//! batch names), reads Redis's own clock (`TIME`, so replicas never disagree about now),
//! decides each bucket as `gcra::decide` does, and commits all of them only if all allow
//! the request: a refusal by one limit takes nothing from the others. A bucket is a string
//! key holding its TAT in microseconds, with an expiry at the moment it is full again (an
//! idle key costs Redis nothing). It is sent as `EVALSHA`; a Redis that does not know the
//! script yet (started, restarted or flushed since) answers `NOSCRIPT` and gets it once by
//! `EVAL`, which also caches it. The call goes through the store's runtime, deadline
//! (`state.redis.timeout_ms`), breaker and metrics (`op="rate_limit"`): never on a pingora
//! worker, never longer than the deadline.
//!
//! Keys: `<key_prefix>rl:<limit fingerprint>:<SHA-256 of the key parts, 128 bits>`. The
//! script touches several keys, so it needs them on one node: a Redis Cluster is not
//! supported (nor is it by the other shared features).

use std::sync::Arc;

use redis::{ErrorKind, ServerErrorKind};

use crate::metrics::RedisOp;
use crate::store::{Store, StoreError};

use super::gcra::Cell;

/// The GCRA of `gcra::decide` over every key of `KEYS`, all or nothing.
/// `ARGV[3i-2]`, `ARGV[3i-1]`, `ARGV[3i]`: key i's interval and tolerance (µs) and cost.
/// Returns `{allowed, reset_1, retry_1, ..., reset_n, retry_n}` in microseconds.
/// `%d` formats the TAT exactly: `tostring` would print a large number in exponent form.
pub const SCRIPT: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local next_tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  local next_tat = tat + cost * interval
  local allow_at = next_tat - tolerance
  if now < allow_at then
    out[1] = 0
    out[2 * i] = tat - now
    out[2 * i + 1] = allow_at - now
  else
    out[2 * i] = next_tat - now
    out[2 * i + 1] = 0
    next_tats[i] = next_tat
  end
end
if out[1] == 1 then
  for i = 1, #KEYS do
    local ms = math.ceil((next_tats[i] - now) / 1000)
    if ms < 1 then ms = 1 end
    redis.call('SET', KEYS[i], string.format('%d', next_tats[i]), 'PX', ms)
  end
end
return out
"#;

/// One bucket of a shared decision.
pub struct Bucket {
    pub key: String,
    pub cell: Cell,
    pub cost: u64,
}

/// What Redis decided for each bucket, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub allowed: bool,
    /// Per bucket: (reset_after, retry_after) in µs.
    pub buckets: Vec<(u64, u64)>,
}

/// The Redis side of the limits: the store, the script's hash, the metric handles.
pub struct Shared {
    pub store: Arc<Store>,
    sha: String,
    op: RedisOp,
    /// Decisions made without Redis (`fail: open`), logged loudly but boundedly.
    pub loud: crate::store::LoudLog,
}

impl Shared {
    pub fn new(store: Arc<Store>) -> Shared {
        Shared {
            store,
            sha: redis::Script::new(SCRIPT).get_hash().to_string(),
            op: RedisOp::new("rate_limit"),
            loud: Default::default(),
        }
    }

    /// `<key_prefix>rl:`.
    pub fn prefix(&self) -> String {
        self.store.key("rl:")
    }

    /// Decide every bucket in one atomic round trip, within the request-path deadline.
    pub async fn decide(&self, buckets: &[Bucket]) -> Result<Decided, StoreError> {
        let n = buckets.len();
        let mut keys = Vec::with_capacity(n);
        let mut args = Vec::with_capacity(3 * n);
        for b in buckets {
            keys.push(b.key.clone());
            args.extend([b.cell.interval, b.cell.tolerance, b.cost]);
        }
        let sha = self.sha.clone();
        let timeout = self.store.settings.timeout;
        let raw: Vec<i64> = self
            .store
            .call(&self.op, timeout, move |mut c| async move {
                let cmd = |first: &str, body: &str| {
                    let mut cmd = redis::cmd(first);
                    cmd.arg(body).arg(keys.len()).arg(&keys).arg(&args);
                    cmd
                };
                match cmd("EVALSHA", &sha).query_async(&mut c).await {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        cmd("EVAL", SCRIPT).query_async(&mut c).await
                    }
                    other => other,
                }
            })
            .await?;
        parse(&raw, n).ok_or_else(|| {
            StoreError::Redis(format!("unexpected rate-limit script answer: {raw:?}"))
        })
    }
}

/// The script's answer for `n` buckets.
fn parse(raw: &[i64], n: usize) -> Option<Decided> {
    if raw.len() != 1 + 2 * n {
        return None;
    }
    let nonneg = |v: i64| u64::try_from(v).ok();
    let buckets = raw[1..]
        .chunks(2)
        .map(|c| Some((nonneg(c[0])?, nonneg(c[1])?)))
        .collect::<Option<Vec<_>>>()?;
    Some(Decided {
        allowed: raw[0] == 1,
        buckets,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn answers_are_checked() {
        assert_eq!(
            parse(&[1, 10, 0, 20, 0], 2),
            Some(Decided {
                allowed: true,
                buckets: vec![(10, 0), (20, 0)]
            })
        );
        assert_eq!(parse(&[0, 10, 5], 1).map(|d| d.allowed), Some(false));
        assert_eq!(parse(&[1, 10], 1), None, "too short");
        assert_eq!(parse(&[1, -1, 0], 1), None, "negative");
    }
}
