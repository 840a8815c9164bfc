//! The values the stores trade in: errors, rate limits and their verdicts, idempotency
//! claims and answers, and health.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RateSpec;

/// The store could not be reached or answered nonsense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// One limit to count an event against: its key and its rate.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit<'a> {
    pub key: &'a str,
    pub spec: RateSpec,
}

/// A rate limiter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// `limit` (its place in the list asked about) refused first; nothing was counted.
    Limited {
        limit: usize,
        retry_after: Duration,
    },
}

/// The answer given to a request, kept so that a repeat gets the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    /// The JSON body, as sent.
    pub body: String,
    /// The `Retry-After` seconds sent with it, if any (absent in answers kept before
    /// it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// What an idempotency key stands for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller now owns the key and must `finish` or `release` it.
    Claimed,
    /// Another request holds the key and has not finished.
    InFlight { fingerprint: String },
    /// A request with this key finished with this answer.
    Done {
        fingerprint: String,
        answer: StoredAnswer,
    },
}

/// What [`Store::claim_and_acquire`](super::Store::claim_and_acquire) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAndCount {
    /// The key was free: the caller holds it now, and every limit counted the event.
    Claimed,
    /// The key was free but `limit` (its place in the list asked about) refused first:
    /// nothing was counted, and the key is left free.
    Limited { limit: usize, retry_after: Duration },
    /// Another request holds the key ([`Claim::InFlight`] or [`Claim::Done`]): nothing
    /// was counted.
    Held(Claim),
}

/// A claim to settle together with a write (see
/// [`Store::put_and_settle`](super::Store::put_and_settle)): its key and holder, and
/// either the final answer to keep or nothing, to give the key up.
#[derive(Debug, Clone, Copy)]
pub struct Settle<'a> {
    pub key: &'a str,
    pub token: &'a str,
    pub fingerprint: &'a str,
    /// The answer and how long to keep it ([`Store::finish`](super::Store::finish)), or
    /// `None` to release the key ([`Store::release`](super::Store::release)).
    pub answer: Option<(&'a StoredAnswer, Duration)>,
}

/// What [`Store::put_and_settle`](super::Store::put_and_settle) did, each part on its
/// own: one may fail while the other succeeds.
#[derive(Debug)]
pub struct PutAndSettle {
    pub put: Result<(), StoreError>,
    pub settle: Result<(), StoreError>,
}

/// The record kept under an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(super) enum Record {
    InFlight {
        token: String,
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        answer: StoredAnswer,
    },
}

impl Record {
    pub(super) fn into_claim(self) -> Claim {
        match self {
            Record::InFlight { fingerprint, .. } => Claim::InFlight { fingerprint },
            Record::Done {
                fingerprint,
                answer,
            } => Claim::Done {
                fingerprint,
                answer,
            },
        }
    }
}

/// How a store is doing, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// It answers now.
    pub reachable: bool,
    /// Operations failed lately and were served from this process's memory instead.
    pub degraded: bool,
    /// Live guard state fills the memory budget: sends are refused (see
    /// [`Store::overloaded`]).
    pub overloaded: bool,
}

impl StoreHealth {
    pub fn is_ready(self) -> bool {
        self.reachable && !self.degraded && !self.overloaded
    }
}

/// A pending channel fallback taken from the store by [`Store::take_due_fallbacks`]:
/// leased to the taker, whom no other caller competes with until the lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenFallback {
    /// The message's id.
    pub id: String,
    /// What [`Store::schedule_fallback`] was given.
    pub payload: String,
    /// Made due by [`Store::hasten_fallback`] (a failure report) rather than by time.
    pub hastened: bool,
    /// Taken again after an earlier taker's lease ran out without
    /// [`Store::finish_fallback`]: that taker may have sent it before it stopped.
    pub retaken: bool,
}
