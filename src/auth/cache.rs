//! The verified-token cache (the `token_cache` section): verdicts of issuer entries, keyed
//! by the token's SHA-256 and the entry's fingerprint, and the interner that lets cached
//! principals share their repeated strings.
//!
//! quick_cache rather than moka here: an entry is the 32-byte hash and a pointer stored
//! inline, where moka allocates seven blocks per entry (≈ 600 bytes with its frequency
//! sketch and timer wheel), and this cache holds up to `token_cache.max_entries` of them.
//! It has no TTL: a hit past `exp` (+ skew) is removed and judged again, which refuses it.
//!
//! An entry is keyed by the token's hash and the fingerprint of the issuer entry that
//! verified it (`IssuerConfig::fingerprint`: its name and every setting that shaped the
//! verdict). A route finds only verdicts of the entries it accepts, as they are
//! configured now: a reload that changes an entry's settings makes its verdicts misses.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::issuer::{Fingerprint, IssuerConfig};
use crate::compile::CompileError;
use crate::principal::{Principal, TokenHash};
use crate::scope::ScopeSet;

/// `token_cache`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTokenCache {
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
}

impl Default for FileTokenCache {
    fn default() -> Self {
        FileTokenCache {
            max_entries: default_cache_entries(),
        }
    }
}

fn default_cache_entries() -> u64 {
    100_000
}

/// Check `token_cache`: the number of verdicts kept.
pub fn compile(f: &FileTokenCache) -> Result<u64, CompileError> {
    if f.max_entries == 0 {
        return Err(CompileError::new(
            "token_cache.max_entries",
            "token_cache.max_entries must be at least 1",
        ));
    }
    Ok(f.max_entries)
}

/// Distinct interned values kept, per kind; past that, principals get their own copies.
const INTERN_MAX: usize = 4096;

/// Scope strings, client ids and audience lists repeat across the tokens of an issuer:
/// cached principals share one copy of each. Only verified tokens reach it, and it is
/// bounded, so a stream of distinct values costs no more than not interning.
#[derive(Default)]
struct Interner {
    strs: HashSet<Arc<str>>,
    audiences: HashSet<Arc<[Box<str>]>>,
    /// Scope sets by their text.
    scopes: HashMap<Box<str>, Arc<ScopeSet>>,
}

/// The shared copy of `value` in `set`, or a new one (kept while `set` has room).
fn intern<T: Eq + Hash + ?Sized>(set: &mut HashSet<Arc<T>>, value: &T) -> Arc<T>
where
    Arc<T>: for<'a> From<&'a T>,
{
    if let Some(a) = set.get(value) {
        return a.clone();
    }
    let a = Arc::from(value);
    if set.len() < INTERN_MAX {
        set.insert(a.clone());
    }
    a
}

/// The shared copies of a principal's scopes, client and audiences.
pub type Interned = (Arc<ScopeSet>, Option<Arc<str>>, Arc<[Box<str>]>);

/// Verdicts of issuer entries, and the interner of what they repeat.
pub struct TokenCache {
    cache: quick_cache::sync::Cache<(TokenHash, Fingerprint), Arc<Principal>>,
    interner: Mutex<Interner>,
}

impl TokenCache {
    pub fn new(max_entries: u64) -> TokenCache {
        let n = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        TokenCache {
            cache: quick_cache::sync::Cache::new(n),
            interner: Mutex::new(Interner::default()),
        }
    }

    /// The principal issuer entry `ic` verified `hash` into, unless it has expired.
    pub fn get(&self, hash: &TokenHash, ic: &IssuerConfig, now: i64) -> Option<Arc<Principal>> {
        let key = (*hash, ic.fingerprint);
        let p = self.cache.get(&key)?;
        if now > p.exp + ic.clock_skew as i64 {
            self.cache.remove(&key);
            return None;
        }
        Some(p)
    }

    /// Remember that issuer entry `ic` verified `hash` into `p`.
    pub fn insert(&self, hash: &TokenHash, ic: &IssuerConfig, p: Arc<Principal>) {
        self.cache.insert((*hash, ic.fingerprint), p);
    }

    /// The shared copies of a verified token's scopes, client and audiences.
    pub fn intern(
        &self,
        scopes: &str,
        client_id: Option<&str>,
        audiences: &[Box<str>],
    ) -> Interned {
        // A poisoned lock only means another thread panicked while interning; the sets are
        // still valid (each insert is one call).
        let mut interner = self.interner.lock().unwrap_or_else(|e| e.into_inner());
        let scopes = match interner.scopes.get(scopes) {
            Some(s) => s.clone(),
            None => {
                let set = ScopeSet::parse(scopes);
                if interner.scopes.len() < INTERN_MAX {
                    interner.scopes.insert(Box::from(scopes), set.clone());
                }
                set
            }
        };
        (
            scopes,
            client_id.map(|c| intern(&mut interner.strs, c)),
            intern(&mut interner.audiences, audiences),
        )
    }

    pub fn len(&self) -> u64 {
        self.cache.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}
