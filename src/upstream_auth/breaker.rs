//! The circuit breaker of a route's token endpoint. It opens only on evidence that the AS
//! itself is failing, never on what one caller can cause.
//!
//! An exchange carries the caller's token, and an AS may fail for that token alone (a 500
//! on one user's account, a garbled answer, a stall): such a failure is blamed on the
//! caller ([`Blame::Caller`], keyed by the token's issuer and subject, not by the token,
//! since one user can hold many tokens), and one caller counts once however often it
//! fails. A failure no caller's token can cause ([`Blame::As`]: the gateway's own
//! client-credentials or actor token request, a token endpoint that does not accept the
//! connection, a failed discovery) counts every time. The breaker opens when
//! `breaker_failures` of these, counted so, come in a row with no answer that makes sense in
//! between (one caller alone never opens it, even with a threshold of 1); it then answers without calling for `breaker_open_ms`, after which it is closed
//! and the count starts over (so no one caller can hold it open by being the probe).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::principal::Principal;

/// Who a caller is for the breaker: the SHA-256 of the token's issuer and subject.
pub type CallerKey = [u8; 32];

/// The caller of `p`: its issuer and subject (a token without `sub` is "no subject" of its
/// issuer: all such callers are one).
pub fn caller_key(p: &Principal) -> CallerKey {
    let mut h = sha2::Sha256::new();
    h.update(p.iss.as_bytes());
    h.update([0]);
    match &p.subject {
        Some(s) => {
            h.update([1]);
            h.update(s.as_bytes());
        }
        None => h.update([0]),
    }
    h.finalize().into()
}

/// Whose failing a failed call may show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The AS's: no caller's token was involved, or none had left the gateway.
    As,
    /// Possibly this caller's alone: the AS failed answering for the caller's token.
    Caller(CallerKey),
}

#[derive(Default)]
struct State {
    /// The distinct callers that failed since the last good answer.
    callers: Vec<CallerKey>,
    /// The failures of [`Blame::As`] since the last good answer.
    as_failures: u32,
    /// Calls fail at once until then.
    open_until: Option<Instant>,
    /// The breaker was open and has closed; the next good answer is logged.
    reopened: bool,
}

/// One route's breaker at its token endpoint.
pub struct AsBreaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl AsBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> AsBreaker {
        AsBreaker {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the AS at `now`: not while open; once the open period is
    /// over, the breaker is closed with nothing counted.
    pub fn allow(&self, now: Instant) -> bool {
        let mut s = self.state();
        match s.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                *s = State {
                    reopened: true,
                    ..State::default()
                };
                true
            }
            None => true,
        }
    }

    /// An answer that makes sense: the count starts over. True when this is the first one
    /// since the breaker was open.
    pub fn success(&self) -> bool {
        let mut s = self.state();
        let reopened = s.reopened;
        *s = State::default();
        reopened
    }

    /// A failure blamed on `blame` at `now`; true when this opened the breaker.
    pub fn failure(&self, blame: Blame, now: Instant) -> bool {
        let mut s = self.state();
        if s.open_until.is_some_and(|until| now < until) {
            // A call let through before the breaker opened, ending late.
            return false;
        }
        match blame {
            Blame::As => s.as_failures = s.as_failures.saturating_add(1),
            Blame::Caller(k) => {
                if !s.callers.contains(&k) {
                    s.callers.push(k);
                }
            }
        }
        let evidence = s.as_failures.saturating_add(s.callers.len() as u32);
        // One caller alone is never evidence, even with a threshold of 1.
        let one_caller_alone = s.as_failures == 0 && s.callers.len() == 1;
        if evidence < self.threshold || one_caller_alone {
            return false;
        }
        *s = State {
            open_until: Some(now + self.open_for),
            ..State::default()
        };
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn k(n: u8) -> Blame {
        Blame::Caller([n; 32])
    }

    #[test]
    fn one_caller_never_opens_it() {
        let b = AsBreaker::new(2, Duration::from_secs(10));
        let t = Instant::now();
        for _ in 0..1000 {
            assert!(!b.failure(k(1), t));
            assert!(b.allow(t));
        }
    }

    #[test]
    fn one_caller_alone_never_opens_it_even_at_a_threshold_of_one() {
        let t = Instant::now();
        let b = AsBreaker::new(1, Duration::from_secs(10));
        assert!(!b.failure(k(1), t));
        assert!(!b.failure(k(1), t));
        assert!(b.allow(t));
        assert!(b.failure(k(2), t));
        let b = AsBreaker::new(1, Duration::from_secs(10));
        assert!(b.failure(Blame::As, t));
    }

    #[test]
    fn distinct_callers_or_the_as_open_it() {
        let t = Instant::now();
        let b = AsBreaker::new(3, Duration::from_secs(10));
        assert!(!b.failure(k(1), t));
        assert!(!b.failure(k(1), t));
        assert!(!b.failure(k(2), t));
        assert!(b.failure(k(3), t));
        assert!(!b.allow(t + Duration::from_secs(9)));
        // Closed after the period, the count starting over: one caller cannot reopen it.
        let later = t + Duration::from_secs(10);
        assert!(b.allow(later));
        for _ in 0..10 {
            assert!(!b.failure(k(1), later));
        }
        assert!(b.allow(later));
        // The gateway's own failures count every time.
        let b = AsBreaker::new(3, Duration::from_secs(10));
        assert!(!b.failure(Blame::As, t));
        assert!(!b.failure(Blame::As, t));
        assert!(b.failure(Blame::As, t));
        assert!(!b.allow(t));
        // Mixed.
        let b = AsBreaker::new(3, Duration::from_secs(10));
        assert!(!b.failure(k(1), t));
        assert!(!b.failure(Blame::As, t));
        assert!(b.failure(k(2), t));
    }

    #[test]
    fn a_good_answer_starts_the_count_over() {
        let t = Instant::now();
        let b = AsBreaker::new(2, Duration::from_secs(10));
        assert!(!b.failure(k(1), t));
        assert!(!b.success());
        assert!(!b.failure(k(2), t));
        assert!(!b.success());
        assert!(!b.failure(k(3), t));
        assert!(b.failure(k(4), t));
        // A late failure while open does not extend it.
        assert!(!b.failure(k(5), t + Duration::from_secs(5)));
        assert!(b.allow(t + Duration::from_secs(10)));
        assert!(
            b.success(),
            "the first good answer after opening is reported"
        );
        assert!(!b.success());
    }
}
