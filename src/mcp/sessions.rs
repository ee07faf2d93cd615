//! `Mcp-Session-Id` binding: a session belongs to the identity that opened it.
//!
//! MCP revisions up to 2025-11-25 let the upstream mint a session id. A session is never
//! authentication (every request still needs its token), but a stolen or guessed id must
//! not let another identity into someone's session. When the upstream issues an id, we
//! remember it against the upstream **origin** (scheme, host and port of the route's
//! `upstream`, so every route to that server shares the binding) and the identity that
//! opened it: issuer and subject of a token (its client when it has no subject), an API
//! key's subject, or "anonymous" on an `auth: none` route. A request that presents the id
//! with any other identity, on any route to that upstream, is answered 404, as for an
//! unknown session, and never forwarded. The check runs on every route, with or without
//! an MCP policy and whatever its `auth`.
//!
//! The header itself must be unambiguous ([`session_id`]): one `Mcp-Session-Id` field,
//! visible ASCII without commas (the spec's alphabet, minus the list separator an
//! intermediary would split on), and no `Mcp_Session_Id` spelling that an upstream
//! folding `_` to `-` would read while we did not.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use moka::sync::Cache;

use crate::error::Refusal;
use crate::principal::{AuthMethod, Principal};
use crate::upstream::Upstream;

/// Sessions remembered (least recently used forgotten first: a forgotten session is the
/// upstream's to refuse).
const MAX_SESSIONS: u64 = 100_000;
/// A binding unused this long is forgotten (a day: longer than any MCP session idles).
const SESSION_IDLE: Duration = Duration::from_secs(24 * 3600);

/// (upstream origin, session id).
type SessionKey = (Box<str>, Box<str>);

/// What a route does with an `Mcp-Session-Id` this process holds no binding for (opened
/// before a restart, on another replica, or forgotten): `forward` it to the upstream
/// (whose call it is), or `refuse` it with 404 (`session_unknown`), which MCP clients
/// answer by opening a new session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSessions {
    #[default]
    Forward,
    Refuse,
}

/// Who opened a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    /// A token: the issuer *entry* that verified it (its `name`: two entries may share one
    /// `iss`, e.g. production and staging key sets), and its `sub` (or, without one, its
    /// client).
    OAuth {
        issuer: Arc<str>,
        sub: Option<Box<str>>,
        client: Option<Arc<str>>,
    },
    /// An API key's subject.
    ApiKey(Option<Box<str>>),
    /// A client of an `auth: none` route.
    Anonymous,
}

impl Owner {
    fn of(p: Option<&Principal>) -> Owner {
        match p {
            None => Owner::Anonymous,
            Some(p) if p.method == AuthMethod::ApiKey => Owner::ApiKey(p.subject.clone()),
            Some(p) => Owner::OAuth {
                issuer: p.issuer_name.clone(),
                sub: p.subject.clone(),
                client: if p.subject.is_none() {
                    p.client_id.clone()
                } else {
                    None
                },
            },
        }
    }
}

pub struct SessionBindings {
    cache: Cache<SessionKey, Arc<Owner>>,
}

impl Default for SessionBindings {
    fn default() -> Self {
        SessionBindings {
            cache: Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(SESSION_IDLE)
                .build(),
        }
    }
}

fn key(upstream: &Upstream, session: &str) -> SessionKey {
    (upstream.origin().into_boxed_str(), Box::from(session))
}

/// Whether an identity may use a session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The id is bound to this identity.
    Owner,
    /// The id is bound to another identity.
    Other,
    /// No binding is known here.
    Unknown,
}

impl SessionBindings {
    /// Record the owner of a session the upstream issued in its answer to a request that
    /// presented `presented` (its own `Mcp-Session-Id`, if any). Only a *new* id is bound:
    /// an answer that repeats the id the request presented binds nothing (else, after a
    /// restart, the first identity to present someone's id would take it over), and an id
    /// already bound is never rebound (first owner wins).
    pub fn bind(
        &self,
        upstream: &Upstream,
        session: &str,
        presented: Option<&str>,
        p: Option<&Principal>,
    ) {
        if presented == Some(session) {
            return;
        }
        self.cache
            .entry(key(upstream, session))
            .or_insert(Arc::new(Owner::of(p)));
    }

    /// Where `p` stands with `session` at `upstream`.
    pub fn standing(&self, upstream: &Upstream, session: &str, p: Option<&Principal>) -> Standing {
        match self.cache.get(&key(upstream, session)) {
            Some(owner) if *owner == Owner::of(p) => Standing::Owner,
            Some(_) => Standing::Other,
            None => Standing::Unknown,
        }
    }

    /// Whether `p` may use `session` at `upstream` (unknown sessions are the upstream's call).
    #[cfg(test)]
    fn allows(&self, upstream: &Upstream, session: &str, p: Option<&Principal>) -> bool {
        self.standing(upstream, session, p) != Standing::Other
    }
}

/// The request's session id, if it has one; a refusal when the header is ambiguous:
/// present twice, a comma-joined list, bytes outside visible ASCII (or empty), or spelled
/// with `_` (any case).
pub fn session_id(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    const NAME: &str = "mcp-session-id";
    for name in headers.keys() {
        let n = name.as_str();
        if n != NAME
            && n.len() == NAME.len()
            && n.bytes()
                .zip(NAME.bytes())
                .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
        {
            return Err(Refusal::BadRequest(
                "Mcp-Session-Id must be spelled with hyphens",
            ));
        }
    }
    let mut all = headers.get_all(NAME).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(Refusal::BadRequest("more than one Mcp-Session-Id header"));
    }
    let b = v.as_bytes();
    if b.is_empty() || !b.iter().all(|c| (0x21..=0x7e).contains(c) && *c != b',') {
        return Err(Refusal::BadRequest(
            "Mcp-Session-Id must be one value of visible ASCII characters without commas",
        ));
    }
    // Visible ASCII is valid UTF-8.
    Ok(v.to_str().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn principal(
        method: AuthMethod,
        iss: &str,
        sub: Option<&str>,
        client: Option<&str>,
    ) -> Principal {
        Principal {
            method,
            any_audience: false,
            iss: Arc::from(iss),
            issuer_name: Arc::from("a"),
            subject: sub.map(Box::from),
            client_id: client.map(Arc::from),
            scopes: crate::scope::ScopeSet::parse(""),
            audiences: Arc::new([]),
            exp: i64::MAX / 2,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            azp: None,
            jti: None,
            iat: None,
        }
    }

    #[test]
    fn bound_per_upstream_origin_and_identity() {
        let s = SessionBindings::default();
        let up = Upstream::parse("http://127.0.0.1:3000").unwrap();
        let same = Upstream::parse("http://127.0.0.1:3000/").unwrap();
        let other = Upstream::parse("http://127.0.0.1:3001").unwrap();
        let alice = principal(AuthMethod::Jwt, "https://as", Some("alice"), Some("c1"));
        let alice2 = principal(
            AuthMethod::Introspection,
            "https://as",
            Some("alice"),
            Some("c2"),
        );
        let bob = principal(AuthMethod::Jwt, "https://as", Some("bob"), None);
        let mut alice_elsewhere = principal(AuthMethod::Jwt, "https://other", Some("alice"), None);
        alice_elsewhere.issuer_name = Arc::from("other");
        let key_alice = principal(AuthMethod::ApiKey, "", Some("alice"), Some("k"));
        s.bind(&up, "s1", None, Some(&alice));
        assert!(s.allows(&up, "s1", Some(&alice)));
        assert!(s.allows(&same, "s1", Some(&alice2)));
        for who in [Some(&bob), Some(&alice_elsewhere), Some(&key_alice), None] {
            assert!(!s.allows(&up, "s1", who), "{who:?}");
            assert!(!s.allows(&same, "s1", who), "{who:?}");
        }
        // Another upstream: the id is not ours to judge there.
        assert!(s.allows(&other, "s1", Some(&bob)));
        // An anonymous session is not a token holder's either.
        s.bind(&up, "anon", None, None);
        assert!(s.allows(&up, "anon", None));
        assert!(!s.allows(&up, "anon", Some(&alice)));
        // Tokens without a subject: told apart by client.
        let c1 = principal(AuthMethod::Jwt, "https://as", None, Some("c1"));
        let c2 = principal(AuthMethod::Jwt, "https://as", None, Some("c2"));
        s.bind(&up, "svc", None, Some(&c1));
        assert!(s.allows(&up, "svc", Some(&c1)));
        assert!(!s.allows(&up, "svc", Some(&c2)));
    }

    /// Finding 3: an answer that repeats the id its request presented binds nothing (after
    /// a restart bob presenting alice's id must not become its owner), and a bound id is
    /// never rebound. Finding 4: two issuer entries sharing one `iss` are two owners.
    #[test]
    fn never_rebound_and_keyed_on_the_issuer_entry() {
        let s = SessionBindings::default();
        let up = Upstream::parse("http://127.0.0.1:3000").unwrap();
        let alice = principal(AuthMethod::Jwt, "https://as", Some("alice"), None);
        let bob = principal(AuthMethod::Jwt, "https://as", Some("bob"), None);
        // Bob presents S, unknown here; the upstream echoes it: no binding.
        s.bind(&up, "S", Some("S"), Some(&bob));
        assert_eq!(s.standing(&up, "S", Some(&alice)), Standing::Unknown);
        assert_eq!(s.standing(&up, "S", Some(&bob)), Standing::Unknown);
        // A new id in the answer to a request without one: bound; never rebound.
        s.bind(&up, "T", None, Some(&alice));
        s.bind(&up, "T", None, Some(&bob));
        s.bind(&up, "T", Some("U"), Some(&bob));
        assert_eq!(s.standing(&up, "T", Some(&alice)), Standing::Owner);
        assert_eq!(s.standing(&up, "T", Some(&bob)), Standing::Other);
        // The same iss and sub from another issuer entry is another identity.
        let mut staging = principal(AuthMethod::Jwt, "https://as", Some("alice"), None);
        staging.issuer_name = Arc::from("staging");
        assert_eq!(s.standing(&up, "T", Some(&staging)), Standing::Other);
    }

    #[test]
    fn ambiguous_headers_are_refused() {
        let h = |pairs: &[(&str, &[u8])]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.append(
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(v).unwrap(),
                );
            }
            m
        };
        assert_eq!(session_id(&h(&[])), Ok(None));
        assert_eq!(
            session_id(&h(&[("Mcp-Session-Id", b"abc")])),
            Ok(Some("abc"))
        );
        for bad in [
            h(&[("Mcp-Session-Id", b"a"), ("mcp-session-id", b"b")]),
            h(&[("Mcp-Session-Id", b"a,b")]),
            h(&[("Mcp-Session-Id", b"a b")]),
            h(&[("Mcp-Session-Id", b"a\tb")]),
            h(&[("Mcp-Session-Id", b"caf\xc3\xa9")]),
            h(&[("Mcp-Session-Id", b"")]),
            h(&[("Mcp_Session_Id", b"a")]),
            h(&[("MCP_SESSION-ID", b"a")]),
            h(&[("mcp-session_id", b"a"), ("Mcp-Session-Id", b"a")]),
        ] {
            assert!(session_id(&bad).is_err(), "{bad:?}");
        }
    }
}
