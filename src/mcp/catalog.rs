//! What the gateway learned from the tool lists it passed on, per upstream MCP server: each
//! tool's `Mcp-Param-*` declarations ([`crate::mcp::params`]) and the hash of its definition
//! ([`crate::mcp::pins`]), refreshed by every list that passes, and the first definition seen
//! of each (the pins of routes without a pinned file).
//!
//! Fed on the way back (the list judge of `lists`, before any filtering, so a tool hidden
//! from one caller is still known), read on the way in (the `tools/call` checks). A server is
//! the upstream origin plus the path the route forwards to, so two MCP servers behind one
//! origin are two servers. Bounded: at most [`MAX_TOOLS`] tools are remembered (least
//! recently used forgotten first); a forgotten tool is unknown again, and its `Mcp-Param-*`
//! headers are forwarded unchecked until the next list names it.

use std::sync::Arc;

use moka::sync::Cache;
use serde_json::{Map, Value};

use crate::mcp::params::{declarations, Declaration};
use crate::mcp::pins::{definition_hash, Hash};

/// Tools remembered, over every server.
pub const MAX_TOOLS: u64 = 100_000;

/// What the last list said about a tool.
#[derive(Debug)]
pub struct Seen {
    /// Its `Mcp-Param-*` declarations; `None` when its annotations are invalid.
    pub params: Option<Arc<[Declaration]>>,
    pub hash: Hash,
}

type Key = (Arc<str>, Box<str>);

pub struct Catalog {
    seen: Cache<Key, Arc<Seen>>,
    first: Cache<Key, Hash>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            seen: Cache::builder().max_capacity(MAX_TOOLS).build(),
            first: Cache::builder().max_capacity(MAX_TOOLS).build(),
        }
    }
}

/// What [`Catalog::learn`] found.
#[derive(Debug)]
pub struct Learned {
    pub hash: Hash,
    /// The definition differs from the one the previous list gave (or it is new).
    pub changed: bool,
    /// The first definition this process saw of the tool (its pin without a file).
    pub first: Hash,
}

impl Catalog {
    /// Record a tool as a list gives it (`tool` has a string `name`).
    pub fn learn(&self, server: &Arc<str>, name: &str, tool: &Map<String, Value>) -> Learned {
        let hash = definition_hash(tool);
        let key = (server.clone(), Box::from(name));
        let before = self.seen.get(&key).map(|s| s.hash);
        if before != Some(hash) {
            let params = declarations(tool).map(Arc::from);
            self.seen
                .insert(key.clone(), Arc::new(Seen { params, hash }));
        }
        let first = *self.first.entry(key).or_insert(hash).value();
        Learned {
            hash,
            changed: before != Some(hash),
            first,
        }
    }

    /// What the last list said about `name`, if one did.
    pub fn seen(&self, server: &Arc<str>, name: &str) -> Option<Arc<Seen>> {
        self.seen.get(&(server.clone(), Box::from(name)))
    }

    /// The first definition seen of `name`, if any.
    pub fn first(&self, server: &Arc<str>, name: &str) -> Option<Hash> {
        self.first.get(&(server.clone(), Box::from(name)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_refresh_what_is_known_and_the_first_definition_stays() {
        let c = Catalog::default();
        let s: Arc<str> = Arc::from("http://a:80/mcp");
        let other: Arc<str> = Arc::from("http://a:80/other");
        let v1 = json!({"name":"t","inputSchema":{"properties":{"r":{"type":"string","x-mcp-header":"R"}}}});
        let v2 = json!({"name":"t","inputSchema":{"properties":{"q":{"type":"string","x-mcp-header":"Q"}}}});
        let l = c.learn(&s, "t", v1.as_object().unwrap());
        assert!(l.changed);
        assert_eq!(l.first, l.hash);
        assert!(!c.learn(&s, "t", v1.as_object().unwrap()).changed);
        let l2 = c.learn(&s, "t", v2.as_object().unwrap());
        assert!(l2.changed);
        assert_eq!(l2.first, l.hash);
        assert_eq!(
            &*c.seen(&s, "t").unwrap().params.as_ref().unwrap()[0].header,
            "mcp-param-q"
        );
        assert!(c.seen(&other, "t").is_none());
        assert_eq!(c.first(&s, "t"), Some(l.hash));
    }
}
