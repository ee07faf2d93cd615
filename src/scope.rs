//! Scopes and audiences: the shared vocabulary of the token step, the policy step and the
//! configuration.
//!
//! Bottom layer (imports nothing of ours): RFC 6749 scope-token syntax, `scope_hierarchy`
//! compiled into the ancestors of each scope, a route's required scopes pre-resolved
//! against it ([`RequiredScope`]), a principal's scopes compiled once ([`ScopeSet`]), and
//! the canonical form of audience and resource URLs (RFC 8707 comparisons).
//!
//! Scopes are compared as ids, not strings: every scope a config names and every scope of
//! a verified token gets a [`ScopeId`] in one process-wide table, so a request's scope check
//! is a binary search in a principal's sorted ids for each id a route pre-resolved, with no
//! string splitting. The table only grows (ids stay valid across reloads, so a cached
//! principal keeps matching); token scopes are added while it has room
//! ([`MAX_TOKEN_SCOPES`]), and a principal with a scope that got no id falls back to
//! comparing its text, so a full table costs speed, never a wrong answer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock, RwLock};

/// RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E.
pub fn check_scope_token(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope {s:?} is not a valid scope token (printable ASCII without space, '\"' or '\\')"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Interned scopes
// ---------------------------------------------------------------------------------------------

/// A scope's id in the process's scope table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeId(u32);

/// Scopes from verified tokens that get an id; past it, they are compared by text. Only
/// verified tokens reach the table, so this bounds what an issuer's scope variety costs.
pub const MAX_TOKEN_SCOPES: usize = 65_536;

static TABLE: LazyLock<RwLock<HashMap<Box<str>, ScopeId>>> = LazyLock::new(RwLock::default);

/// The id of `s`, added when new: always for scopes the config names (`always`), while
/// the table has room for the others.
fn intern_id(s: &str, always: bool) -> Option<ScopeId> {
    // A poisoned lock only means a thread panicked between two complete inserts.
    if let Some(&id) = TABLE.read().unwrap_or_else(|e| e.into_inner()).get(s) {
        return Some(id);
    }
    let mut table = TABLE.write().unwrap_or_else(|e| e.into_inner());
    if let Some(&id) = table.get(s) {
        return Some(id);
    }
    if !always && table.len() >= MAX_TOKEN_SCOPES {
        return None;
    }
    let id = ScopeId(u32::try_from(table.len()).ok()?);
    table.insert(Box::from(s), id);
    Some(id)
}

/// The id of a scope the config names (a required scope, an ancestor, a rule's scope).
pub fn config_scope(s: &str) -> ScopeId {
    // Config scopes are never refused; `None` only past u32::MAX scopes.
    intern_id(s, true).unwrap_or(ScopeId(u32::MAX))
}

/// A principal's scopes, compiled once when it is verified (or its key file loaded): the
/// space-separated list as forwarded upstream, and the sorted ids of its scopes.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ScopeSet {
    text: Box<str>,
    ids: Box<[ScopeId]>,
    /// Some scope has no id (the table was full): membership falls back to the text.
    partial: bool,
    /// The text is visible ASCII and spaces without `%`: forwarded as is.
    header_safe: bool,
}

impl ScopeSet {
    /// The set of a space-separated scope list (as [`merge`] builds it).
    pub fn new(text: &str) -> ScopeSet {
        let mut ids = Vec::new();
        let mut partial = false;
        for t in text.split(' ').filter(|t| !t.is_empty()) {
            match intern_id(t, false) {
                Some(id) => ids.push(id),
                None => partial = true,
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ScopeSet {
            header_safe: text
                .bytes()
                .all(|b| b == b' ' || ((0x21..=0x7e).contains(&b) && b != b'%')),
            text: Box::from(text),
            ids: ids.into_boxed_slice(),
            partial,
        }
    }

    /// A shared set of `text` (for principals not interned elsewhere).
    pub fn parse(text: &str) -> Arc<ScopeSet> {
        Arc::new(ScopeSet::new(text))
    }

    /// The space-separated list, as the upstream receives it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the list is forwarded as is (no byte needs percent-encoding).
    pub fn header_safe(&self) -> bool {
        self.header_safe
    }

    /// Whether the set holds scope `id` (named `name`, for a set whose table was full).
    pub fn contains(&self, id: ScopeId, name: &str) -> bool {
        self.ids.binary_search(&id).is_ok()
            || (self.partial && self.text.split(' ').any(|t| t == name))
    }
}

/// A required scope together with every token scope that satisfies it (itself and its
/// ancestors in `scope_hierarchy`), resolved to ids when the config compiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredScope {
    pub name: String,
    pub satisfied_by: Vec<String>,
    /// The ids of `satisfied_by`, in the same order.
    ids: Vec<ScopeId>,
}

impl RequiredScope {
    /// `name`, satisfied by exactly the scopes `satisfied_by` (itself included).
    pub fn new(name: &str, satisfied_by: Vec<String>) -> RequiredScope {
        RequiredScope {
            name: name.to_string(),
            ids: satisfied_by.iter().map(|s| config_scope(s)).collect(),
            satisfied_by,
        }
    }

    /// Whether `scopes` satisfy this requirement: one id lookup per satisfying scope.
    pub fn satisfied(&self, scopes: &ScopeSet) -> bool {
        self.ids
            .iter()
            .zip(&self.satisfied_by)
            .any(|(id, name)| scopes.contains(*id, name))
    }
}

/// `scope_hierarchy`, compiled: for each scope, the scopes that imply it (its ancestors).
#[derive(Debug, Clone, Default)]
pub struct Hierarchy {
    ancestors: HashMap<String, Vec<String>>,
}

impl Hierarchy {
    /// Check the scope tokens and the absence of cycles; compute every scope's ancestors.
    pub fn compile(h: &BTreeMap<String, Vec<String>>) -> Result<Hierarchy, String> {
        for (parent, children) in h {
            check_scope_token(parent)?;
            for c in children {
                check_scope_token(c)?;
            }
        }
        let mut ancestors: HashMap<String, Vec<String>> = HashMap::new();
        // Walk up from each child; the graph is small, so a simple DFS per child is fine.
        // In sorted order, so a cycle is always reported through the same scope.
        let all_children: BTreeSet<&String> = h.values().flatten().collect();
        for child in all_children {
            let mut seen = HashSet::new();
            let mut stack = vec![child.clone()];
            while let Some(s) = stack.pop() {
                for (parent, children) in h {
                    if children.contains(&s) {
                        if parent == child {
                            return Err(format!("scope_hierarchy has a cycle through {child:?}"));
                        }
                        if seen.insert(parent.clone()) {
                            stack.push(parent.clone());
                        }
                    }
                }
            }
            let mut v: Vec<String> = seen.into_iter().collect();
            v.sort();
            ancestors.insert(child.clone(), v);
        }
        Ok(Hierarchy { ancestors })
    }

    /// `name` as a required scope: satisfied by itself and by each of its ancestors.
    pub fn required(&self, name: &str) -> RequiredScope {
        let mut satisfied_by = vec![name.to_string()];
        if let Some(anc) = self.ancestors.get(name) {
            satisfied_by.extend(anc.iter().cloned());
        }
        RequiredScope::new(name, satisfied_by)
    }
}

/// The space-separated union of scope lists, in order of first appearance: the one place a
/// token's `scope` and `scp` (JWT) or an introspection answer's `scope` become the scopes
/// of a principal. Empty tokens (repeated spaces) are dropped.
pub fn merge<'a>(lists: impl IntoIterator<Item = &'a str>) -> String {
    let mut scopes = String::new();
    for list in lists {
        for t in list.split(' ').filter(|t| !t.is_empty()) {
            if !scopes.split(' ').any(|x| x == t) {
                if !scopes.is_empty() {
                    scopes.push(' ');
                }
                scopes.push_str(t);
            }
        }
    }
    scopes
}

/// Canonical form of an audience / resource URL for comparison: scheme and host
/// lower-cased, nothing else touched (SPEC-CHECKLIST §9.1).
pub fn canonical_audience(s: &str) -> String {
    if let Some(idx) = s.find("://") {
        let after = &s[idx + 3..];
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let mut out = String::with_capacity(s.len());
        out.push_str(&s[..idx + 3].to_ascii_lowercase());
        out.push_str(&after[..end].to_ascii_lowercase());
        out.push_str(&after[end..]);
        out
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn canonical_audience_lowercases_scheme_and_host_only() {
        assert_eq!(
            canonical_audience("HTTPS://MCP.Example.COM/Mcp"),
            "https://mcp.example.com/Mcp"
        );
        assert_eq!(canonical_audience("urn:x:Y"), "urn:x:Y");
    }

    #[test]
    fn merge_keeps_first_appearance_and_drops_repeats() {
        assert_eq!(merge(["a  b", "b c", "a"]), "a b c");
        assert_eq!(merge(["", " "]), "");
    }

    #[test]
    fn scope_sets_match_by_id_and_exactly() {
        let h = Hierarchy::compile(&BTreeMap::from([(
            "files".to_string(),
            vec!["files:read".to_string()],
        )]))
        .unwrap();
        let read = h.required("files:read");
        assert!(read.satisfied(&ScopeSet::new("a files:read")));
        assert!(read.satisfied(&ScopeSet::new("files")));
        assert!(!read.satisfied(&ScopeSet::new("files:readx files:write")));
        assert!(!read.satisfied(&ScopeSet::new("")));
        let set = ScopeSet::new("b  a b");
        assert_eq!(set.as_str(), "b  a b");
        assert!(set.header_safe());
        assert!(!ScopeSet::new("a%20b").header_safe());
    }

    #[test]
    fn a_set_past_the_table_falls_back_to_its_text() {
        let set = ScopeSet {
            text: "never-interned-scope x".into(),
            ids: Box::new([]),
            partial: true,
            header_safe: true,
        };
        let need = RequiredScope::new("never-interned-scope", vec!["never-interned-scope".into()]);
        assert!(need.satisfied(&set));
        let other = RequiredScope::new("y", vec!["y".into()]);
        assert!(!other.satisfied(&set));
    }

    #[test]
    fn hierarchy_cycles_are_refused() {
        let mut h = BTreeMap::new();
        h.insert("a".to_string(), vec!["b".to_string()]);
        h.insert("b".to_string(), vec!["a".to_string()]);
        assert!(Hierarchy::compile(&h).unwrap_err().contains("cycle"));
    }
}
