//! The gateway's own tokens (RFC 6749 §4.4): the route's upstream credential in mode
//! `client_credentials`, and the actor token of a delegating exchange.
//!
//! One token per route (per [`CcSlot`]), shared by every caller. It is fetched on first use
//! (single-flight: concurrent first requests wait for one call, and share its failure), and
//! renewed ahead of its expiry: from three quarters of its lifetime on, the first request
//! starts one renewal in the background and every request keeps using the current token
//! until the new one arrives. A token is never used in the last tenth of its life (at most
//! 30 s): past that, requests wait for a fresh one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{AsClient, CcSlot, Held};
use super::exchange::{Ask, Failure, Target};
use super::Sent;
use crate::metrics;

/// Lifetime assumed for a token whose answer has no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// After a failed background renewal, wait this long before the next one.
const RENEWAL_RETRY: Duration = Duration::from_secs(1);

/// How long a token of `expires_in` seconds may be used: its lifetime minus a tenth (at
/// most 30 s), so that it never reaches the upstream about to expire.
pub fn usable_for(expires_in: Option<u64>) -> Duration {
    let life = expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
    life - (life / 10).min(Duration::from_secs(30))
}

/// When a token of `expires_in` seconds is renewed: at three quarters of its lifetime.
pub fn renew_after(expires_in: Option<u64>) -> Duration {
    let life = expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
    (life / 4 * 3).min(usable_for(expires_in))
}

/// Which of a client's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Own,
    Actor,
}

fn slot(client: &AsClient, which: Which) -> &CcSlot {
    match which {
        Which::Own => &client.own,
        Which::Actor => &client.actor,
    }
}

/// The route's own token, as the upstream receives it.
pub async fn own_token(client: &Arc<AsClient>) -> Result<Sent, Failure> {
    token(client, Which::Own).await.map(|h| h.sent.clone())
}

/// The gateway's token to send as `actor_token`.
pub async fn actor_token(client: &Arc<AsClient>) -> Result<Arc<Held>, Failure> {
    token(client, Which::Actor).await
}

/// The slot's token: the current one (starting its renewal when due), or a fresh one.
async fn token(client: &Arc<AsClient>, which: Which) -> Result<Arc<Held>, Failure> {
    let s = slot(client, which);
    let now = Instant::now();
    if let Some(h) = s.fresh(now) {
        if now >= h.renew_at {
            start_renewal(client, which);
        }
        return Ok(h);
    }
    let asked = Instant::now();
    let _flight = s.flight.lock().await;
    if let Some(h) = s.fresh(Instant::now()) {
        return Ok(h);
    }
    // A fetch that ended while we waited: its failure is ours too (one call, not one per
    // waiter, when the AS is down).
    if let Some((at, f)) = s
        .last_failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        if at >= asked {
            return Err(f);
        }
    }
    match fetch(client, which).await {
        Ok(h) => {
            let h = Arc::new(h);
            s.current.store(Some(h.clone()));
            Ok(h)
        }
        Err(f) => {
            *s.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), f.clone()));
            Err(f)
        }
    }
}

/// Start one background renewal of the slot's token, unless one is running or a failed
/// one is too recent.
fn start_renewal(client: &Arc<AsClient>, which: Which) {
    let s = slot(client, which);
    let now_ms = s.epoch().elapsed().as_millis() as u64;
    if now_ms < s.renewal_not_before_ms.load(Ordering::Acquire) {
        return;
    }
    if s.renewing.swap(true, Ordering::AcqRel) {
        return;
    }
    let c = client.clone();
    client.fetcher.spawn(async move {
        let s = slot(&c, which);
        {
            let _flight = s.flight.lock().await;
            // Someone fetched a new token meanwhile (the old one ran out): done.
            let due = s
                .current
                .load_full()
                .is_none_or(|h| Instant::now() >= h.renew_at);
            if due {
                match fetch(&c, which).await {
                    Ok(h) => {
                        s.current.store(Some(Arc::new(h)));
                        metrics::upstream_token_renewal(&c.cfg.route);
                    }
                    Err(_) => {
                        let next = s.epoch().elapsed() + RENEWAL_RETRY;
                        s.renewal_not_before_ms
                            .store(next.as_millis() as u64, Ordering::Release);
                    }
                }
            }
        }
        s.renewing.store(false, Ordering::Release);
    });
}

/// One client-credentials call for the slot.
async fn fetch(client: &AsClient, which: Which) -> Result<Held, Failure> {
    let cfg = &client.cfg;
    let empty = super::ActorTarget::default();
    let target = match which {
        Which::Own => Target {
            audience: &cfg.audience,
            resource: &cfg.resource,
            scope: match &cfg.scopes {
                super::Scopes::Fixed(s) => s.as_deref(),
                super::Scopes::Map { .. } => None,
            },
        },
        Which::Actor => {
            let a = cfg.actor.as_ref().unwrap_or(&empty);
            Target {
                audience: &a.audience,
                resource: &a.resource,
                scope: a.scope.as_deref(),
            }
        }
    };
    let started = Instant::now();
    let issued = client.call(Ask::ClientCredentials, target, None).await?;
    let sent = Sent::of(cfg, &issued.token).ok_or(Failure::Garbage(
        "the access_token cannot be sent in a header",
    ))?;
    Ok(Held {
        sent,
        renew_at: started + renew_after(issued.expires_in),
        usable_until: started + usable_for(issued.expires_in),
        token: issued.token,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(usable_for(Some(300)), Duration::from_secs(270));
        assert_eq!(renew_after(Some(300)), Duration::from_secs(225));
        assert_eq!(usable_for(Some(3600)), Duration::from_secs(3570));
        assert_eq!(renew_after(Some(3600)), Duration::from_secs(2700));
        assert_eq!(usable_for(Some(4)), Duration::from_millis(3600));
        assert_eq!(renew_after(Some(4)), Duration::from_secs(3));
        assert_eq!(usable_for(None), Duration::from_secs(54));
        assert!(renew_after(Some(1)) <= usable_for(Some(1)));
    }
}
