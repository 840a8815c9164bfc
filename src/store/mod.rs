//! Shared state: rate-limit counters, idempotency records and plain records (message
//! status, Telegram links), behind one trait with an in-process memory implementation
//! and a Redis one for several replicas.
//!
//! Keys are built by the callers from digests, never from raw numbers or text, so no
//! store holds a phone number or a message.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::config::RateSpec;

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
enum Record {
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
    fn into_claim(self) -> Claim {
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

/// Shared state for rate limits and idempotency.
///
/// Implementations are atomic per key: two callers (in one process or in two replicas
/// sharing Redis) never both get [`Claim::Claimed`] for a live key, and never both get
/// the last unit of a rate limit.
#[async_trait]
pub trait Store: Send + Sync {
    /// `memory` or `redis`.
    fn backend(&self) -> &'static str;

    /// Whether the store answers now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Counts one event against every limit (GCRA: `count` events per `per`, evenly
    /// replenished), all or nothing: when each admits it, each counts it; when one
    /// refuses, none does, so a refused send uses up nobody's allowance.
    async fn rate_acquire(&self, limits: &[RateLimit<'_>]) -> Result<RateDecision, StoreError>;

    /// Gives back one event that [`Store::rate_acquire`] counted against every limit, for
    /// a send that provably never left: each counter moves back one interval, never to
    /// before now, so a give-back never grants more than the limit's burst.
    async fn rate_refund(&self, limits: &[RateLimit<'_>]) -> Result<(), StoreError>;

    /// Takes `key` for a request whose content hashes to `fingerprint`, if nobody holds
    /// it. `token` identifies this holder; the claim lapses after `ttl`.
    async fn claim(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError>;

    /// What `key` stands for now; `None` when nobody holds it.
    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError>;

    /// Replaces the holder's in-flight claim with the final answer, kept for `ttl`.
    async fn finish(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Gives up the holder's claim so that a repeat may try again.
    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError>;

    /// Stores each value under its key, all in one step, for `ttl` or (with `None`)
    /// until deleted.
    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError>;

    /// The value under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Replaces the value under `key` with `new` only if it is still `expected`, keeping
    /// its expiry. Returns whether it did.
    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Bytes this process holds for the store, as the memory store weighs them (0 for a
    /// store that keeps everything elsewhere).
    fn memory_bytes(&self) -> u64 {
        0
    }

    /// Whether live guard state (rate counters, claims, `Idempotency-Key` answers) alone
    /// fills this process's memory budget, so that new sends must be refused rather than
    /// make the store forget a limit. Always false for a store that keeps everything
    /// elsewhere.
    fn overloaded(&self) -> bool {
        false
    }
}

/// The store the application uses: memory, or Redis with a per-replica memory fallback,
/// the memory within `memory_budget` bytes.
pub fn open(
    redis_url: Option<&SecretString>,
    memory_budget: u64,
) -> Result<Arc<dyn Store>, StoreError> {
    let memory = memory::MemoryStore::with_budget(memory_budget);
    Ok(match redis_url {
        None => Arc::new(memory),
        Some(url) => Arc::new(FallbackStore::new(
            Box::new(redis::RedisStore::connect(url)?),
            memory,
        )),
    })
}

/// A shared store that, while it is unreachable, serves from this process's memory so
/// logins go on (with per-replica limits), and goes back to it as soon as it answers.
pub struct FallbackStore {
    primary: Box<dyn Store>,
    fallback: memory::MemoryStore,
    degraded: AtomicBool,
}

impl FallbackStore {
    pub fn new(primary: Box<dyn Store>, fallback: memory::MemoryStore) -> Self {
        FallbackStore {
            primary,
            fallback,
            degraded: AtomicBool::new(false),
        }
    }

    /// Runs `primary`; when the shared store fails, notes it and runs `fallback`.
    async fn either<T, P, F, Fut>(&self, primary: P, fallback: F) -> Result<T, StoreError>
    where
        P: Future<Output = Result<T, StoreError>>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match primary.await {
            Ok(value) => {
                self.mark(false);
                Ok(value)
            }
            Err(error) => {
                self.mark(true);
                metrics::counter!(crate::prometheus::STORE_ERRORS, "backend" => self.primary.backend())
                    .increment(1);
                tracing::debug!(%error, "state store operation failed; using local memory");
                fallback().await
            }
        }
    }

    fn mark(&self, degraded: bool) {
        if self.degraded.swap(degraded, Ordering::Relaxed) != degraded {
            if degraded {
                tracing::warn!(
                    backend = self.primary.backend(),
                    "state store unreachable: falling back to per-replica memory"
                );
            } else {
                tracing::info!(
                    backend = self.primary.backend(),
                    "state store reachable again"
                );
            }
        }
    }
}

#[async_trait]
impl Store for FallbackStore {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let result = self.primary.ping().await;
        self.mark(result.is_err());
        result
    }

    async fn rate_acquire(&self, limits: &[RateLimit<'_>]) -> Result<RateDecision, StoreError> {
        self.either(self.primary.rate_acquire(limits), || {
            self.fallback.rate_acquire(limits)
        })
        .await
    }

    async fn rate_refund(&self, limits: &[RateLimit<'_>]) -> Result<(), StoreError> {
        self.either(self.primary.rate_refund(limits), || {
            self.fallback.rate_refund(limits)
        })
        .await
    }

    async fn claim(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        self.either(self.primary.claim(key, token, fingerprint, ttl), || {
            self.fallback.claim(key, token, fingerprint, ttl)
        })
        .await
    }

    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        self.either(self.primary.peek(key), || self.fallback.peek(key))
            .await
    }

    async fn finish(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.either(
            self.primary.finish(key, token, fingerprint, answer, ttl),
            || self.fallback.finish(key, token, fingerprint, answer, ttl),
        )
        .await
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        // Release both: the claim may have been taken in either place.
        let local = self.fallback.release(key, token).await;
        self.either(self.primary.release(key, token), || async { local })
            .await
    }

    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError> {
        self.either(self.primary.put(entries, ttl), || {
            self.fallback.put(entries, ttl)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.either(self.primary.get(key), || self.fallback.get(key))
            .await
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        self.either(self.primary.replace(key, expected, new), || {
            self.fallback.replace(key, expected, new)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.either(self.primary.delete(key), || self.fallback.delete(key))
            .await
    }

    fn memory_bytes(&self) -> u64 {
        self.fallback.memory_bytes()
    }

    /// Only while the local memory stands in for the shared store: what it held from an
    /// earlier outage refuses nothing once Redis answers.
    fn overloaded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed) && self.fallback.overloaded()
    }
}

/// GCRA in nanoseconds: given the stored theoretical arrival time (`tat`) and `now`,
/// returns the new `tat` to store, or how long to wait (never zero).
///
/// Each event moves `tat` one interval (`per / count`) ahead of the later of itself and
/// `now`; an event is admitted while `tat` stays within `count` intervals of `now`. So a
/// burst of exactly `count` fits at one instant, and one more each interval after it.
fn gcra(tat: Option<u64>, now: u64, spec: RateSpec) -> Result<u64, Duration> {
    let (interval, window) = gcra_steps(spec);
    let tat = tat.map_or(now, |tat| tat.max(now));
    let ahead = (tat - now).saturating_add(interval);
    if ahead > window {
        Err(Duration::from_nanos(ahead - window))
    } else {
        Ok(now.saturating_add(ahead))
    }
}

/// A limit's interval and window (`count` intervals: how far ahead of now a counter may
/// run), in nanoseconds.
fn gcra_steps(spec: RateSpec) -> (u64, u64) {
    let interval = nanos(spec.interval());
    (
        interval,
        interval.saturating_mul(u64::from(spec.count.max(1))),
    )
}

/// Gives one event back to a GCRA counter: `tat` moves one interval back, never before
/// `now`. `None` when nothing is left to count (the counter may go).
fn gcra_refund(tat: u64, now: u64, spec: RateSpec) -> Option<u64> {
    let tat = tat.saturating_sub(nanos(spec.interval()));
    (tat > now).then_some(tat)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_of_count_then_one_per_interval() {
        let spec = RateSpec {
            count: 5,
            per: Duration::from_secs(10),
        };
        let second = 1_000_000_000;
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(gcra(tat, second, spec).expect("within the burst"));
        }
        assert_eq!(gcra(tat, second, spec), Err(Duration::from_secs(2)));
        // One interval later exactly one more fits.
        let later = gcra(tat, 3 * second, spec).expect("replenished");
        assert_eq!(
            gcra(Some(later), 3 * second, spec),
            Err(Duration::from_secs(2))
        );
    }

    #[test]
    fn gcra_counts_rates_finer_than_a_millisecond() {
        // A million a second: the burst is a million, not the thousand milliseconds of a
        // second, and the wait after it is one microsecond, not zero.
        let spec = RateSpec {
            count: 1_000_000,
            per: Duration::from_secs(1),
        };
        let mut tat = None;
        for _ in 0..1_000_000 {
            tat = Some(gcra(tat, 0, spec).expect("within the burst"));
        }
        assert_eq!(gcra(tat, 0, spec), Err(Duration::from_micros(1)));
        assert!(gcra(tat, 1_000, spec).is_ok());
    }

    #[test]
    fn a_refund_moves_back_one_interval_but_not_before_now() {
        let spec = RateSpec {
            count: 2,
            per: Duration::from_secs(10),
        };
        let tat = gcra(gcra(None, 0, spec).ok(), 0, spec).unwrap();
        assert!(gcra(Some(tat), 0, spec).is_err());
        let refunded = gcra_refund(tat, 0, spec);
        assert_eq!(refunded, Some(5_000_000_000));
        assert!(gcra(refunded, 0, spec).is_ok());
        assert_eq!(gcra_refund(5_000_000_000, 0, spec), None);
        assert_eq!(gcra_refund(5_000_000_000, 4_000_000_000, spec), None);
    }
}
