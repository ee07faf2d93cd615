//! The revocation list as it lives in Redis, and how a replica decides whether Redis's
//! copy can be trusted: the list's *head*, entry authentication and divergence.
//!
//! Layout (`<p>` is `state.redis.key_prefix`):
//! - `<p>revocations`, a hash: one field per revocation (its id), the value its JSON,
//!   with a `mac` member when `state.redis.hmac_key_file` is set;
//! - `<p>revocations:head`, a string: the JSON `{"epoch", "version", "digest", "mac"?}`.
//!   `epoch` is random, made when the list is first created in a Redis (or re-created
//!   after Redis lost it); `version` grows with every write; `digest` is the SHA-256 of
//!   the whole list (entries sorted by id); `mac` is the HMAC-SHA256 of the three;
//! - `<p>revocations`, the pub/sub channel announcing each new version.
//!
//! Writers never read-modify-write in two steps: every write is one Lua script that
//! compares the head with the one the writer based its change on and only then sets
//! entries, deletes entries and sets the new head (compare-and-set), so a head always
//! describes the list beside it when both were written by mcpgate.
//!
//! A replica judges what it loads ([`judge`]): Redis's copy *diverges* from its own when
//! the head is missing although the replica had confirmed one, has another epoch, a
//! lower version, does not authenticate, does not match the entries beside it, or when
//! an unexpired revocation the replica holds is missing. Revocations are only ever added
//! (they leave by expiring), so the replica then writes back the union of both copies.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Revocation;
use crate::store::{Store, StoreError};

/// The compare-and-set write. KEYS: hash, head. ARGV: the expected head (`""`: none),
/// the new head, the number of fields to set, then field/value pairs, then the fields to
/// delete. Returns 1 when applied, 0 when the head was not the expected one.
const WRITE: &str = r#"
local cur = redis.call('GET', KEYS[2])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#;

/// The key names of one list.
pub struct Keys {
    pub hash: String,
    pub head: String,
    pub channel: String,
}

/// The head of the list: what a replica confirms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub epoch: String,
    pub version: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Authentication of entries and heads (HMAC-SHA256 under `hmac_key_file`, bound to the
/// key prefix), and the list digest. Without a key nothing is authenticated: whoever can
/// write to Redis can then add or cancel revocations.
pub struct Integrity {
    key: Option<hmac::Key>,
    prefix: String,
}

impl Integrity {
    pub fn new(key: Option<&[u8]>, prefix: &str) -> Integrity {
        Integrity {
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
            prefix: prefix.to_string(),
        }
    }

    pub fn authenticated(&self) -> bool {
        self.key.is_some()
    }

    fn sign(&self, parts: &[&[u8]]) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut ctx = hmac::Context::with_key(key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        Some(URL_SAFE_NO_PAD.encode(ctx.sign().as_ref()))
    }

    fn verify(&self, parts: &[&[u8]], mac: Option<&str>) -> bool {
        let Some(key) = &self.key else { return true };
        let Some(tag) = mac.and_then(|m| URL_SAFE_NO_PAD.decode(m).ok()) else {
            return false;
        };
        let mut msg = Vec::new();
        for p in parts {
            msg.extend_from_slice(&(p.len() as u64).to_be_bytes());
            msg.extend_from_slice(p);
        }
        hmac::verify(key, &msg, &tag).is_ok()
    }

    fn entry_parts<'a>(&'a self, canonical: &'a str) -> [&'a [u8]; 3] {
        [
            b"mcpgate revocation v1",
            self.prefix.as_bytes(),
            canonical.as_bytes(),
        ]
    }

    /// The hash value of `r`.
    pub fn encode(&self, r: &Revocation) -> Result<String, serde_json::Error> {
        let canonical = serde_json::to_string(r)?;
        let mut v = serde_json::to_value(r)?;
        if let (Some(mac), Some(o)) = (self.sign(&self.entry_parts(&canonical)), v.as_object_mut())
        {
            o.insert("mac".into(), serde_json::Value::String(mac));
        }
        serde_json::to_string(&v)
    }

    /// The revocation in hash field `field`, if it is one and (with a key) authentic.
    pub fn decode(&self, field: &str, value: &str) -> Result<Revocation, &'static str> {
        let mut v: serde_json::Value =
            serde_json::from_str(value).map_err(|_| "not a JSON revocation")?;
        let mac = v
            .as_object_mut()
            .and_then(|o| o.remove("mac"))
            .and_then(|m| m.as_str().map(String::from));
        let r: Revocation = serde_json::from_value(v).map_err(|_| "not a JSON revocation")?;
        if r.id != field {
            return Err("the field is not the revocation's id");
        }
        let canonical = serde_json::to_string(&r).map_err(|_| "not a JSON revocation")?;
        if !self.verify(&self.entry_parts(&canonical), mac.as_deref()) {
            return Err("the revocation does not authenticate (HMAC)");
        }
        Ok(r)
    }

    fn head_parts<'a>(
        &'a self,
        epoch: &'a str,
        version: &'a str,
        digest: &'a str,
    ) -> [&'a [u8]; 5] {
        [
            b"mcpgate revocations head v1",
            self.prefix.as_bytes(),
            epoch.as_bytes(),
            version.as_bytes(),
            digest.as_bytes(),
        ]
    }

    /// A head for this list state, authenticated when there is a key.
    pub fn head(&self, epoch: String, version: u64, entries: &[&Revocation]) -> Head {
        let digest = digest(entries);
        let v = version.to_string();
        let mac = self.sign(&self.head_parts(&epoch, &v, &digest));
        Head {
            epoch,
            version,
            digest,
            mac,
        }
    }

    /// Whether `h` was written by a replica holding the key (always, without one).
    pub fn head_ok(&self, h: &Head) -> bool {
        let v = h.version.to_string();
        self.verify(&self.head_parts(&h.epoch, &v, &h.digest), h.mac.as_deref())
    }
}

/// SHA-256 of the entries sorted by id, each as its JSON and a newline.
pub fn digest(entries: &[&Revocation]) -> String {
    let mut sorted: Vec<&&Revocation> = entries.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Sha256::new();
    for r in sorted {
        if let Ok(j) = serde_json::to_string(r) {
            h.update(j.as_bytes());
        }
        h.update(b"\n");
    }
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// What the head key held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadState {
    Absent,
    /// Parsed and (with a key) authentic.
    Valid(Head),
    /// Present but not a head, or it does not authenticate.
    Invalid,
}

/// One consistent read of the list.
pub struct Loaded {
    /// The head string as stored (for the compare-and-set), `None` when absent.
    pub raw: Option<String>,
    pub head: HeadState,
    /// Authentic entries by id (expired ones included: the head's digest covers them).
    pub entries: HashMap<String, Revocation>,
    /// Every field of the hash (what `HLEN` counts).
    pub fields: HashSet<String>,
    /// Fields that are not authentic revocations (ignored).
    pub rejected: usize,
}

impl Loaded {
    /// Whether the authentic entries are exactly what the head describes.
    pub fn matches_head(&self, h: &Head) -> bool {
        let all: Vec<&Revocation> = self.entries.values().collect();
        digest(&all) == h.digest
    }
}

/// Read head and hash in one transaction and judge every entry.
pub async fn load(store: &Store, keys: &Keys, integrity: &Integrity) -> Result<Loaded, StoreError> {
    let (head_key, hash) = (keys.head.clone(), keys.hash.clone());
    let (raw, all): (Option<String>, HashMap<String, String>) = store
        .call(
            &store.ops.revocations_sync,
            store.settings.background_timeout(),
            move |mut c| async move {
                redis::pipe()
                    .atomic()
                    .get(&head_key)
                    .hgetall(&hash)
                    .query_async(&mut c)
                    .await
            },
        )
        .await?;
    let head = match &raw {
        None => HeadState::Absent,
        Some(s) => match serde_json::from_str::<Head>(s) {
            Ok(h) if integrity.head_ok(&h) => HeadState::Valid(h),
            _ => HeadState::Invalid,
        },
    };
    let mut entries = HashMap::with_capacity(all.len());
    let mut fields = HashSet::with_capacity(all.len());
    let mut rejected = 0;
    for (field, value) in all {
        match integrity.decode(&field, &value) {
            Ok(r) => {
                entries.insert(field.clone(), r);
            }
            Err(why) => {
                rejected += 1;
                tracing::debug!(field = %field, why, "ignoring a revocation entry in Redis");
            }
        }
        fields.insert(field);
    }
    Ok(Loaded {
        raw,
        head,
        entries,
        fields,
        rejected,
    })
}

/// The head string and the hash length (the cheap check of every poll).
pub async fn poll(store: &Store, keys: &Keys) -> Result<(Option<String>, u64), StoreError> {
    let (head_key, hash) = (keys.head.clone(), keys.hash.clone());
    store
        .call(
            &store.ops.revocations_sync,
            store.settings.background_timeout(),
            move |mut c| async move {
                redis::pipe()
                    .atomic()
                    .get(&head_key)
                    .hlen(&hash)
                    .query_async(&mut c)
                    .await
            },
        )
        .await
}

/// Compare-and-set: when the head is still `expected`, set `put`, delete `delete` and
/// store `head`; then announce the version. The head as stored when applied, `None`
/// when another write came first.
pub async fn write(
    store: &Store,
    keys: &Keys,
    integrity: &Integrity,
    expected: Option<&str>,
    head: &Head,
    put: &[&Revocation],
    delete: &[String],
) -> Result<Option<String>, StoreError> {
    let new_head = serde_json::to_string(head).map_err(|e| StoreError::Redis(e.to_string()))?;
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(WRITE)
        .arg(2)
        .arg(&keys.hash)
        .arg(&keys.head)
        .arg(expected.unwrap_or(""))
        .arg(&new_head)
        .arg(put.len());
    for r in put {
        let value = integrity
            .encode(r)
            .map_err(|e| StoreError::Redis(e.to_string()))?;
        cmd.arg(&r.id).arg(value);
    }
    for f in delete {
        cmd.arg(f);
    }
    let channel = keys.channel.clone();
    let version = head.version;
    let applied = store
        .call(
            &store.ops.revocations_write,
            store.settings.background_timeout(),
            move |mut c| async move {
                let applied: i64 = cmd.query_async(&mut c).await?;
                if applied == 1 {
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(version)
                        .query_async(&mut c)
                        .await?;
                }
                Ok(applied == 1)
            },
        )
        .await?;
    Ok(applied.then_some(new_head))
}

/// Why a replica's copy and Redis's disagree (the `reason` label of
/// `mcpgate_revocations_divergence_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Divergence {
    /// The head does not parse or does not authenticate.
    Unauthenticated,
    /// The head is gone, or has another epoch, than the one confirmed: Redis lost the
    /// list (a restart without persistence, a failover, a flush) or it was replaced.
    Epoch,
    /// Same epoch, lower version: Redis went back to an older state.
    Version,
    /// The authentic entries are not the list the head describes (deleted, altered or
    /// added without a head).
    Digest,
    /// An unexpired revocation this replica holds is not in Redis.
    Missing,
}

impl Divergence {
    pub fn as_str(self) -> &'static str {
        match self {
            Divergence::Unauthenticated => "unauthenticated",
            Divergence::Epoch => "epoch",
            Divergence::Version => "version",
            Divergence::Digest => "digest",
            Divergence::Missing => "missing",
        }
    }
}

/// What this replica last confirmed.
#[derive(Debug, Default, Clone)]
pub struct Confirmed {
    /// At least one load was judged consistent (or reconciled).
    pub loaded: bool,
    pub raw: Option<String>,
    /// `None`: Redis had no list.
    pub epoch: Option<String>,
    pub version: u64,
    /// The hash length that went with it.
    pub fields: u64,
}

/// Whether `loaded` can be taken as the list: `None` when it is consistent with itself
/// and with what this replica confirmed and holds (`local`: its unexpired entries).
pub fn judge(loaded: &Loaded, confirmed: &Confirmed, local: &[Revocation]) -> Option<Divergence> {
    let missing = || {
        local
            .iter()
            .any(|r| loaded.entries.get(&r.id).is_none_or(|x| x != r))
    };
    match &loaded.head {
        HeadState::Invalid => Some(Divergence::Unauthenticated),
        HeadState::Absent => {
            if confirmed.epoch.is_some() {
                Some(Divergence::Epoch)
            } else if !loaded.entries.is_empty() || loaded.rejected > 0 {
                // Entries without a head: written by hand, or by an older mcpgate.
                Some(Divergence::Digest)
            } else if missing() {
                Some(Divergence::Missing)
            } else {
                None
            }
        }
        HeadState::Valid(h) => {
            if confirmed.epoch.as_ref().is_some_and(|e| *e != h.epoch) {
                Some(Divergence::Epoch)
            } else if confirmed.epoch.is_some() && h.version < confirmed.version {
                Some(Divergence::Version)
            } else if !loaded.matches_head(h) {
                Some(Divergence::Digest)
            } else if missing() {
                Some(Divergence::Missing)
            } else {
                None
            }
        }
    }
}

/// The pause before the next reconciling write after one: grows while Redis keeps
/// diverging (two replicas with different keys would otherwise rewrite each other's
/// list at pub/sub speed), back to the minimum once a load is consistent.
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
}

pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::auth::revocation::Kind;

    fn rev(id: &str, value: &str) -> Revocation {
        Revocation {
            id: id.into(),
            kind: Kind::Subject,
            value: value.into(),
            issuer: None,
            revoked_at: 1_800_000_000,
            expires_at: 1_800_086_400,
            reason: Some("test".into()),
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn entries_authenticate_under_the_key_and_prefix() {
        let i = Integrity::new(Some(KEY), "p:");
        let r = rev("a1", "alice");
        let stored = i.encode(&r).unwrap();
        assert!(stored.contains("\"mac\""), "{stored}");
        assert_eq!(i.decode("a1", &stored).unwrap(), r);
        assert!(i.decode("a2", &stored).is_err(), "under another field");
        let altered = stored.replace("alice", "alicf");
        assert!(i.decode("a1", &altered).is_err(), "altered value");
        let cancelled = stored.replace("1800086400", "1800000001");
        assert!(i.decode("a1", &cancelled).is_err(), "altered expiry");
        let plain = Integrity::new(None, "p:").encode(&r).unwrap();
        assert!(i.decode("a1", &plain).is_err(), "no mac");
        assert!(
            Integrity::new(Some(KEY), "q:")
                .decode("a1", &stored)
                .is_err(),
            "other prefix"
        );
        let other_key = Integrity::new(Some(b"another key another key another k"), "p:");
        assert!(other_key.decode("a1", &stored).is_err(), "other key");
        // Without a key: JSON in, JSON out.
        let none = Integrity::new(None, "p:");
        assert_eq!(none.decode("a1", &plain).unwrap(), r);
        assert_eq!(none.decode("a1", &stored).unwrap(), r, "a mac is ignored");
    }

    #[test]
    fn heads_authenticate_epoch_version_and_digest() {
        let i = Integrity::new(Some(KEY), "p:");
        let (a, b) = (rev("a1", "alice"), rev("b1", "bob"));
        let h = i.head("e1".into(), 7, &[&a, &b]);
        assert!(i.head_ok(&h));
        assert_eq!(h.digest, digest(&[&b, &a]), "order does not matter");
        for forged in [
            Head {
                version: 8,
                ..h.clone()
            },
            Head {
                epoch: "e2".into(),
                ..h.clone()
            },
            Head {
                digest: digest(&[&a]),
                ..h.clone()
            },
            Head {
                mac: None,
                ..h.clone()
            },
        ] {
            assert!(!i.head_ok(&forged), "{forged:?}");
        }
        assert!(Integrity::new(None, "p:").head_ok(&Head { mac: None, ..h }));
    }

    fn loaded(head: HeadState, entries: &[&Revocation]) -> Loaded {
        Loaded {
            raw: None,
            head,
            entries: entries
                .iter()
                .map(|r| (r.id.clone(), (*r).clone()))
                .collect(),
            fields: entries.iter().map(|r| r.id.clone()).collect(),
            rejected: 0,
        }
    }

    #[test]
    fn divergence_is_judged_from_head_entries_and_the_local_copy() {
        let i = Integrity::new(Some(KEY), "p:");
        let (a, b) = (rev("a1", "alice"), rev("b1", "bob"));
        let h = i.head("e1".into(), 2, &[&a, &b]);
        let confirmed = Confirmed {
            loaded: true,
            raw: None,
            epoch: Some("e1".into()),
            version: 2,
            fields: 2,
        };
        let fresh = Confirmed::default();
        let ok = loaded(HeadState::Valid(h.clone()), &[&a, &b]);
        assert_eq!(judge(&ok, &confirmed, &[a.clone(), b.clone()]), None);
        assert_eq!(judge(&ok, &fresh, &[]), None, "a fresh replica takes it");
        // Redis restarted empty.
        let empty = loaded(HeadState::Absent, &[]);
        assert_eq!(
            judge(&empty, &confirmed, std::slice::from_ref(&a)),
            Some(Divergence::Epoch)
        );
        assert_eq!(
            judge(&empty, &fresh, &[]),
            None,
            "a new Redis, a new replica"
        );
        // ... and written back up to the same version by another replica.
        let other = i.head("e2".into(), 2, &[&b]);
        let replaced = loaded(HeadState::Valid(other), &[&b]);
        assert_eq!(
            judge(&replaced, &confirmed, &[a.clone(), b.clone()]),
            Some(Divergence::Epoch)
        );
        // An older authentic state (a rollback).
        let old = i.head("e1".into(), 1, &[&a]);
        assert_eq!(
            judge(
                &loaded(HeadState::Valid(old), &[&a]),
                &confirmed,
                &[a.clone(), b.clone()]
            ),
            Some(Divergence::Version)
        );
        // An entry deleted (HDEL) under an unchanged head.
        let deleted = loaded(HeadState::Valid(h.clone()), &[&a]);
        assert_eq!(judge(&deleted, &fresh, &[]), Some(Divergence::Digest));
        // A forged head.
        assert_eq!(
            judge(&loaded(HeadState::Invalid, &[&a, &b]), &confirmed, &[]),
            Some(Divergence::Unauthenticated)
        );
        // Entries without any head (hand-written, or an older mcpgate).
        assert_eq!(
            judge(&loaded(HeadState::Absent, &[&a]), &fresh, &[]),
            Some(Divergence::Digest)
        );
        // Consistent in itself, but without a revocation this replica holds (a writer
        // without the key recomputed the digest).
        let c = rev("c1", "carol");
        assert_eq!(
            judge(&ok, &confirmed, &[a.clone(), c]),
            Some(Divergence::Missing)
        );
    }
}
