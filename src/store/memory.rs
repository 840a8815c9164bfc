//! The in-process store: bounded, expiring maps. The default, and what each replica
//! falls back to while Redis is unreachable.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hashlink::LinkedHashMap;
use moka::ops::compute::Op;
use moka::sync::Cache;
use moka::Expiry;

use super::{gcra, Claim, RateDecision, RateLimit, Record, Store, StoreError, StoredAnswer};

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
    /// Held while the limits of one send are checked and counted.
    rate_lock: Mutex<()>,
    records: Cache<String, Timed<Record>>,
    values: Mutex<Values>,
    epoch: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            rates: timed_cache(),
            rate_lock: Mutex::new(()),
            records: timed_cache(),
            values: Mutex::new(Values::default()),
            epoch: Instant::now(),
        }
    }
}

/// Plain values: message records and their index by provider id, kept for
/// `MESSAGE_RETENTION`, and Telegram links, kept until deleted. At most [`CAPACITY`]
/// of them together.
///
/// Not a cache like the maps above: every send writes two records, all with the same
/// lifetime, and few are read again, so the order they were written in is the order
/// they expire in. Expired records are dropped from the front as new ones come; when
/// the map is full the oldest record goes first, and a link (least recently used) only
/// when no record is left, since users would have to link again. Measured on the
/// benchmark, this holds a send's two records in about half the memory of a moka cache
/// (which keeps a frequency sketch, a timer and queue nodes per entry) for a fraction
/// of the work.
struct Values {
    /// Values with a lifetime, oldest first.
    timed: LinkedHashMap<Box<str>, Timed<Box<str>>>,
    /// Values kept until deleted, least recently used first.
    forever: LinkedHashMap<Box<str>, Box<str>>,
    capacity: usize,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            timed: LinkedHashMap::new(),
            forever: LinkedHashMap::new(),
            capacity: CAPACITY as usize,
        }
    }
}

impl Values {
    fn len(&self) -> usize {
        self.timed.len() + self.forever.len()
    }

    /// Drops expired values from the front, then the oldest ones while over capacity.
    fn trim(&mut self, now: Instant) {
        while self
            .timed
            .front()
            .is_some_and(|(_, value)| value.expires_at <= now)
        {
            self.timed.pop_front();
        }
        while self.len() > self.capacity {
            if self.timed.pop_front().is_none() {
                self.forever.pop_front();
            }
        }
    }
}

impl MemoryStore {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn values(&self) -> MutexGuard<'_, Values> {
        // A panic while holding the lock cannot leave the maps half-changed.
        self.values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    async fn rate_acquire(&self, limits: &[RateLimit<'_>]) -> Result<RateDecision, StoreError> {
        // One check-and-count at a time: the limits of one send are counted together.
        let _counting = self
            .rate_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.now_ms();
        let mut counted = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            let tat = self.rates.get(limit.key).map(|entry| entry.value);
            match gcra(tat, now, limit.spec) {
                Ok(new_tat) => counted.push(new_tat),
                Err(retry_after) => {
                    return Ok(RateDecision::Limited {
                        limit: index,
                        retry_after,
                    })
                }
            }
        }
        for (limit, new_tat) in limits.iter().zip(counted) {
            self.rates.insert(
                limit.key.to_owned(),
                Timed {
                    value: new_tat,
                    expires_at: self.epoch + Duration::from_millis(new_tat),
                },
            );
        }
        Ok(RateDecision::Allowed)
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

    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        for &(key, value) in entries {
            match ttl {
                Some(ttl) => {
                    values.forever.remove(key);
                    values.timed.insert(
                        key.into(),
                        Timed {
                            value: value.into(),
                            expires_at: now + ttl,
                        },
                    );
                }
                None => {
                    values.timed.remove(key);
                    values.forever.insert(key.into(), value.into());
                }
            }
        }
        values.trim(now);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        if let Some(timed) = values.timed.get(key) {
            if timed.expires_at > now {
                return Ok(Some(timed.value.to_string()));
            }
            values.timed.remove(key);
            return Ok(None);
        }
        Ok(values.forever.to_back(key).map(|value| value.to_string()))
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        if let Some(timed) = values.timed.get_mut(key) {
            if timed.expires_at > now && *timed.value == *expected {
                // Same place and lifetime: a status update does not extend a record.
                timed.value = new.into();
                return Ok(true);
            }
            return Ok(false);
        }
        match values.forever.get_mut(key) {
            Some(value) if **value == *expected => {
                *value = new.into();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut values = self.values();
        values.timed.remove(key);
        values.forever.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(capacity: usize) -> MemoryStore {
        let store = MemoryStore::default();
        store.values().capacity = capacity;
        store
    }

    #[tokio::test]
    async fn a_full_map_drops_the_oldest_record_before_any_link() {
        let store = small(3);
        let hour = Some(Duration::from_secs(3600));
        store.put(&[("chat:a", "1")], None).await.unwrap();
        store.put(&[("msg:1", "one")], hour).await.unwrap();
        store.put(&[("msg:2", "two")], hour).await.unwrap();
        store.put(&[("msg:3", "three")], hour).await.unwrap();
        assert_eq!(store.get("msg:1").await.unwrap(), None);
        assert_eq!(store.get("msg:3").await.unwrap().as_deref(), Some("three"));
        assert_eq!(store.get("chat:a").await.unwrap().as_deref(), Some("1"));
        // Only links left: the least recently used one goes.
        let store = small(2);
        store.put(&[("chat:a", "1")], None).await.unwrap();
        store.put(&[("chat:b", "2")], None).await.unwrap();
        store.get("chat:a").await.unwrap();
        store.put(&[("chat:c", "3")], None).await.unwrap();
        assert_eq!(store.get("chat:b").await.unwrap(), None);
        assert_eq!(store.get("chat:a").await.unwrap().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn expired_values_are_gone_and_make_room() {
        let store = small(10);
        store
            .put(&[("msg:old", "x")], Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(store.get("msg:old").await.unwrap(), None);
        assert!(!store.replace("msg:old", "x", "y").await.unwrap());
        store
            .put(&[("msg:gone", "x")], Some(Duration::from_millis(1)))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        store
            .put(&[("msg:new", "y")], Some(Duration::from_secs(60)))
            .await
            .unwrap();
        let values = store.values();
        assert_eq!(
            values.timed.len(),
            1,
            "expired records are dropped on write"
        );
    }

    #[tokio::test]
    async fn a_value_moves_between_lifetimes() {
        let store = small(10);
        store
            .put(&[("k", "timed")], Some(Duration::from_secs(60)))
            .await
            .unwrap();
        store.put(&[("k", "kept")], None).await.unwrap();
        assert_eq!(store.values().len(), 1);
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some("kept"));
        assert!(store.replace("k", "kept", "changed").await.unwrap());
        store.delete("k").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
    }
}
