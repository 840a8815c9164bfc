//! The in-process store: bounded, expiring maps. The default, and what each replica
//! falls back to while Redis is unreachable.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;

use super::{gcra, Claim, RateDecision, Record, Store, StoreError, StoredAnswer};
use crate::config::RateSpec;

/// Most keys each map holds; past that the least useful entries are evicted.
const CAPACITY: u64 = 200_000;

/// A value with the instant it lapses.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    expires_at: Instant,
}

/// Expires each entry at its own `expires_at`.
struct AtOwnTime;

impl<V> Expiry<String, Timed<V>> for AtOwnTime {
    fn expire_after_create(&self, _: &String, v: &Timed<V>, now: Instant) -> Option<Duration> {
        Some(v.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Timed<V>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.expires_at.saturating_duration_since(now))
    }
}

fn timed_cache<V: Clone + Send + Sync + 'static>() -> Cache<String, Timed<V>> {
    Cache::builder()
        .max_capacity(CAPACITY)
        .expire_after(AtOwnTime)
        .build()
}

/// State in this process only.
pub struct MemoryStore {
    /// GCRA theoretical arrival times, in milliseconds since `epoch`.
    rates: Cache<String, Timed<u64>>,
    records: Cache<String, Timed<Record>>,
    values: Cache<String, Timed<String>>,
    epoch: Instant,
}

/// How long a value stored "until deleted" is kept: long past any process's life.
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            rates: timed_cache(),
            records: timed_cache(),
            values: timed_cache(),
            epoch: Instant::now(),
        }
    }
}

impl MemoryStore {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn live_record(&self, key: &str) -> Option<Record> {
        self.records
            .get(key)
            .filter(|t| t.expires_at > Instant::now())
            .map(|t| t.value)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn rate_acquire(&self, key: &str, spec: RateSpec) -> Result<RateDecision, StoreError> {
        let now = self.now_ms();
        let mut decision = RateDecision::Allowed;
        self.rates
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let tat = current.map(|entry| entry.into_value().value);
                match gcra(tat, now, spec) {
                    Ok(new_tat) => Op::Put(Timed {
                        value: new_tat,
                        expires_at: self.epoch + Duration::from_millis(new_tat),
                    }),
                    Err(retry_after) => {
                        decision = RateDecision::Limited { retry_after };
                        Op::Nop
                    }
                }
            });
        Ok(decision)
    }

    async fn claim(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut claim = Claim::Claimed;
        self.records
            .entry(key.to_owned())
            .and_compute_with(|current| match current.map(|e| e.into_value()) {
                Some(held) if held.expires_at > now => {
                    claim = held.value.into_claim();
                    Op::Nop
                }
                _ => Op::Put(Timed {
                    value: Record::InFlight {
                        token: token.to_owned(),
                        fingerprint: fingerprint.to_owned(),
                    },
                    expires_at: now + ttl,
                }),
            });
        Ok(claim)
    }

    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        Ok(self.live_record(key).map(Record::into_claim))
    }

    async fn finish(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let done = Timed {
            value: Record::Done {
                fingerprint: fingerprint.to_owned(),
                answer: answer.clone(),
            },
            expires_at: Instant::now() + ttl,
        };
        self.records
            .entry(key.to_owned())
            .and_compute_with(|current| match current.map(|e| e.into_value().value) {
                // Another request took the key after ours lapsed: its claim stands.
                Some(Record::InFlight { token: holder, .. }) if holder != token => Op::Nop,
                Some(Record::Done { .. }) => Op::Nop,
                _ => Op::Put(done),
            });
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.records
            .entry(key.to_owned())
            .and_compute_with(|current| match current.map(|e| e.into_value().value) {
                Some(Record::InFlight { token: holder, .. }) if holder == token => Op::Remove,
                _ => Op::Nop,
            });
        Ok(())
    }

    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), StoreError> {
        self.values.insert(
            key.to_owned(),
            Timed {
                value: value.to_owned(),
                expires_at: Instant::now() + ttl.unwrap_or(FOREVER),
            },
        );
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .values
            .get(key)
            .filter(|t| t.expires_at > Instant::now())
            .map(|t| t.value))
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut replaced = false;
        self.values
            .entry(key.to_owned())
            .and_compute_with(|current| match current.map(|e| e.into_value()) {
                Some(held) if held.expires_at > now && held.value == expected => {
                    replaced = true;
                    Op::Put(Timed {
                        value: new.to_owned(),
                        expires_at: held.expires_at,
                    })
                }
                _ => Op::Nop,
            });
        Ok(replaced)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.values.invalidate(key);
        Ok(())
    }
}
