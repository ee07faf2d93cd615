//! Scopes and audiences: the shared vocabulary of the token step, the policy step and the
//! configuration.
//!
//! Bottom layer (imports nothing of ours): RFC 6749 scope-token syntax, `scope_hierarchy`
//! compiled into the ancestors of each scope, a route's required scopes pre-resolved
//! against it ([`RequiredScope`]), and the canonical form of audience and resource URLs
//! (RFC 8707 comparisons).

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// A required scope together with every token scope that satisfies it
/// (itself and its ancestors in `scope_hierarchy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredScope {
    pub name: String,
    pub satisfied_by: Vec<String>,
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
        let all_children: HashSet<&String> = h.values().flatten().collect();
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
        RequiredScope {
            name: name.to_string(),
            satisfied_by,
        }
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
    fn hierarchy_cycles_are_refused() {
        let mut h = BTreeMap::new();
        h.insert("a".to_string(), vec!["b".to_string()]);
        h.insert("b".to_string(), vec!["a".to_string()]);
        assert!(Hierarchy::compile(&h).unwrap_err().contains("cycle"));
    }
}
