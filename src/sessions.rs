//! `Mcp-Session-Id` binding: a session belongs to the subject that opened it.
//!
//! MCP revisions up to 2025-11-25 let the upstream mint a session id. A session is never
//! authentication (every request still needs its token), but a stolen or guessed id must
//! not let another subject into someone's session: when the upstream issues an id, we
//! remember it against the token's issuer and subject; a request that presents it with
//! another identity is answered 404, as for an unknown session, and never forwarded.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::auth::Principal;

/// (route name, session id).
type SessionKey = (Arc<str>, Box<str>);
/// (iss, sub) of the token that opened a session.
type Owner = Arc<(Arc<str>, Option<Box<str>>)>;

pub struct SessionBindings {
    cache: Cache<SessionKey, Owner>,
}

impl Default for SessionBindings {
    fn default() -> Self {
        SessionBindings {
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
        }
    }
}

impl SessionBindings {
    /// Record the owner of a session the upstream just issued (first owner wins).
    pub fn bind(&self, route: &Arc<str>, session: &str, p: &Principal) {
        let key = (route.clone(), Box::from(session));
        let owner = Arc::new((p.iss.clone(), p.subject.clone()));
        self.cache.entry(key).or_insert(owner);
    }

    /// Whether `p` may use `session` on `route` (unknown sessions are the upstream's call).
    pub fn allows(&self, route: &Arc<str>, session: &str, p: &Principal) -> bool {
        match self.cache.get(&(route.clone(), Box::from(session))) {
            Some(owner) => *owner.0 == *p.iss && owner.1 == p.subject,
            None => true,
        }
    }
}
