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
