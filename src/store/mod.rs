//! Shared state: rate-limit counters, idempotency records, plain records (message
//! status, Telegram links) and pending channel fallbacks, behind one trait with an
//! in-process memory implementation and a Redis one for several replicas.
//!
//! Keys are built by the callers from digests or ids, never from raw numbers or text.
//! The one value that holds a phone number and a message is a pending channel
//! fallback's payload (the SMS still to send): it lives no longer than the message's
//! time to live and is deleted when the fallback is finished (sent, or found not worth
//! sending) or cancelled.

mod combined;
mod fallback;
pub mod memory;
pub mod rate;
pub mod redis;
mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

pub use fallback::{FallbackStore, ERROR_INTERVAL};
pub use rate::RateSpec;
use types::Record;
pub use types::{
    Claim, ClaimAndCount, PutAndSettle, RateDecision, RateLimit, Settle, StoreError, StoreHealth,
    StoredAnswer, TakenFallback,
};

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

    /// Whether the store answers now and serves as it should.
    async fn health(&self) -> StoreHealth {
        StoreHealth {
            reachable: self.ping().await.is_ok(),
            degraded: false,
            overloaded: self.overloaded(),
        }
    }

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

    /// [`Store::claim`], and when that claims the key, [`Store::rate_acquire`] with
    /// `limits`, as one operation: when a limit refuses, the key is left free (a refused
    /// send holds no claim). Decides exactly as the two calls one after the other (this
    /// default) do; a store may take one round trip for both.
    async fn claim_and_acquire(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
        limits: &[RateLimit<'_>],
    ) -> Result<ClaimAndCount, StoreError> {
        let claim = (key, token, fingerprint, ttl);
        combined::claim_then_acquire(self, claim, self.rate_acquire(limits)).await
    }

    /// [`Store::put`] of `entries`, and [`Store::finish`] or [`Store::release`] of a
    /// claim, as one operation, each part's outcome on its own. This default runs them
    /// one after the other; a store may take one round trip for both.
    async fn put_and_settle(
        &self,
        entries: &[(&str, &str)],
        ttl: Option<Duration>,
        claim: &Settle<'_>,
    ) -> PutAndSettle {
        combined::put_then_settle(self, entries, ttl, claim).await
    }

    /// Stores each value under its key, for `ttl` or (with `None`) until deleted: all in
    /// one step, except on a Redis Cluster for keys in different slots, which are
    /// written one after another in the order given (see [`redis`]).
    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError>;

    /// The value under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Replaces the value under `key` with `new` only if it is still `expected`, keeping
    /// its expiry. Returns whether it did.
    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Deletes `key` only if its value is still `expected`. Returns whether it did.
    async fn delete_if(&self, key: &str, expected: &str) -> Result<bool, StoreError>;

    /// Keeps a pending channel fallback for message `id`: due `delay` from now, its
    /// `payload` (which holds the destination and the code, so it lives at most `ttl`,
    /// the message's own lifetime) kept until it is finished or cancelled. Scheduling the
    /// same id again replaces it, leased or not.
    async fn schedule_fallback(
        &self,
        id: &str,
        payload: &str,
        delay: Duration,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Drops message `id`'s fallback, waiting or leased, if any; returns whether there
    /// was one.
    async fn cancel_fallback(&self, id: &str) -> Result<bool, StoreError>;

    /// Makes message `id`'s fallback due now, if it is still waiting (not one a taker
    /// holds: that one is being sent); returns whether it did.
    async fn hasten_fallback(&self, id: &str) -> Result<bool, StoreError>;

    /// Takes up to `limit` fallbacks that are due, or whose lease ran out (their taker
    /// stopped before finishing them), atomically, and leases each to the caller for
    /// `lease`: while the lease runs no other caller (no other replica) takes it, and
    /// when it runs out before [`Store::finish_fallback`] the fallback is taken again
    /// (marked [`TakenFallback::retaken`]). A fallback whose payload lapsed is dropped.
    async fn take_due_fallbacks(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<TakenFallback>, StoreError>;

    /// Ends message `id`'s fallback once the taker is done with it (the SMS leg saved,
    /// or nothing to send): its lease and payload are deleted.
    async fn finish_fallback(&self, id: &str) -> Result<(), StoreError>;

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

/// Which store to open and how (read from the environment by the configuration).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `REDIS_URL`: one server, or with `redis_cluster` one or more seeds of a cluster
    /// (a comma list).
    pub redis_url: Option<SecretString>,
    /// `REDIS_CLUSTER`: `redis_url` names a Redis Cluster.
    pub redis_cluster: bool,
    /// `REDIS_TIMEOUT`: the longest one store operation may take, within
    /// `REQUEST_DEADLINE`.
    pub redis_timeout: Duration,
    /// Most memory the in-process store may use, in bytes (`MEMORY_STORE_MIB`).
    pub memory_bytes: u64,
}

/// The store the application uses: memory, or Redis (`REDIS_URL`, a cluster with
/// `REDIS_CLUSTER`) with a per-replica memory fallback, the memory within
/// `MEMORY_STORE_MIB`. A Redis Cluster's connection runs on the Tokio runtime this is
/// called on.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    let memory = memory::MemoryStore::with_budget(settings.memory_bytes);
    Ok(match &settings.redis_url {
        None => Arc::new(memory),
        Some(url) => {
            let topology = if settings.redis_cluster {
                redis::Topology::Cluster
            } else {
                redis::Topology::Single
            };
            let redis = redis::RedisStore::connect_with(url, topology, settings.redis_timeout)?;
            Arc::new(FallbackStore::new(Box::new(redis), memory))
        }
    })
}
