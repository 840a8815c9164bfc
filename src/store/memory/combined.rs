//! The memory store's operations that span kinds of state: a claim and the rate limits
//! of one send, checked and written under one lock.

use std::time::{Duration, Instant};

use super::MemoryStore;
use crate::store::{ClaimAndCount, RateDecision, RateLimit, Record};

impl MemoryStore {
    /// [`Store::claim_and_acquire`](crate::store::Store::claim_and_acquire) at the
    /// instant `now`, for `(key, token, fingerprint, ttl)`: nothing is written unless
    /// the key is free and every limit admits the event.
    pub fn claim_and_acquire_at(
        &self,
        (key, token, fingerprint, ttl): (&str, &str, &str, Duration),
        limits: &[RateLimit<'_>],
        now: Instant,
    ) -> ClaimAndCount {
        self.with(|inner| {
            if let Some(held) = inner.held(key, now) {
                return ClaimAndCount::Held(held.clone().into_claim());
            }
            if let RateDecision::Limited { limit, retry_after } = self.count(inner, limits, now) {
                return ClaimAndCount::Limited { limit, retry_after };
            }
            let record = Record::InFlight {
                token: token.to_owned(),
                fingerprint: fingerprint.to_owned(),
            };
            inner.claims.set(key, record, Some(now + ttl));
            inner.make_room(now);
            ClaimAndCount::Claimed
        })
    }
}
