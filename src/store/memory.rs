//! The in-process store: maps held to a memory budget. The default, and what each
//! replica falls back to while Redis is unreachable.
//!
//! Every map is a `LinkedHashMap` in the order entries were last written, behind a
//! mutex, with a running count of what its entries weigh. Entries lapse at their own
//! time (checked when read, dropped from the front as new ones come); past its budget a
//! map drops its oldest entries. Each store call takes one lock, briefly, and never
//! holds it across an `await`.

use std::mem::size_of;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hashlink::LinkedHashMap;

use super::{gcra, Claim, RateDecision, RateLimit, Record, Store, StoreError, StoredAnswer};

/// The memory budget when none is configured (`MEMORY_STORE_MIB`).
pub const DEFAULT_BUDGET: u64 = 8 << 20;

/// What an entry costs besides its key, its value and what the value holds on the heap:
/// the map's links and table slot and the allocator's headers. Measured on the
/// benchmark: with this, the process grows by about the budget once the maps fill it.
const NODE_OVERHEAD: usize = 96;

/// A value with the instant it lapses.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    expires_at: Instant,
}

/// Bytes a value holds on the heap, for the memory budget.
trait HeapSize {
    fn heap_size(&self) -> usize;
}

impl HeapSize for Box<str> {
    fn heap_size(&self) -> usize {
        self.len()
    }
}

impl HeapSize for u64 {
    fn heap_size(&self) -> usize {
        0
    }
}

impl HeapSize for Record {
    fn heap_size(&self) -> usize {
        match self {
            Record::InFlight { token, fingerprint } => token.len() + fingerprint.len(),
            Record::Done {
                fingerprint,
                answer,
            } => fingerprint.len() + answer.body.len(),
        }
    }
}

impl<V: HeapSize> HeapSize for Timed<V> {
    fn heap_size(&self) -> usize {
        self.value.heap_size()
    }
}

/// What one entry counts against the budget.
fn weight<V: HeapSize>(key: &str, value: &V) -> usize {
    key.len() + size_of::<Box<str>>() + size_of::<V>() + value.heap_size() + NODE_OVERHEAD
}

/// Entries, least recently written first, and what they weigh together.
struct Entries<V> {
    map: LinkedHashMap<Box<str>, V>,
    bytes: usize,
}

impl<V: HeapSize> Entries<V> {
    fn new() -> Self {
        Entries {
            map: LinkedHashMap::new(),
            bytes: 0,
        }
    }

    /// Stores `value` under `key` as the most recently written entry.
    fn insert(&mut self, key: &str, value: V) {
        self.remove(key);
        self.bytes += weight(key, &value);
        self.map.insert(key.into(), value);
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        let old = self.map.remove(key)?;
        self.bytes -= weight(key, &old);
        Some(old)
    }

    /// Changes the value under `key` in place, keeping its position.
    fn update(&mut self, key: &str, change: impl FnOnce(&mut V)) {
        if let Some(value) = self.map.get_mut(key) {
            self.bytes -= weight(key, value);
            change(value);
            self.bytes += weight(key, value);
        }
    }

    fn pop_oldest(&mut self) -> bool {
        match self.map.pop_front() {
            Some((key, old)) => {
                self.bytes -= weight(&key, &old);
                true
            }
            None => false,
        }
    }
}

impl<V: HeapSize> Entries<Timed<V>> {
    /// The value under `key` unless it has lapsed; a lapsed one is dropped.
    fn live(&mut self, key: &str, now: Instant) -> Option<&V> {
        if self.map.get(key)?.expires_at <= now {
            self.remove(key);
            return None;
        }
        self.map.get(key).map(|entry| &entry.value)
    }

    /// Drops lapsed entries from the front. Entries behind a live one wait until they
    /// are read or reach the front: lifetimes differ, so this is not all of them, but
    /// it costs nothing when nothing has lapsed.
    fn drop_lapsed(&mut self, now: Instant) {
        while self
            .map
            .front()
            .is_some_and(|(_, entry)| entry.expires_at <= now)
        {
            self.pop_oldest();
        }
    }

    /// Drops lapsed entries, then the oldest ones while over `budget`.
    fn trim(&mut self, now: Instant, budget: usize) {
        self.drop_lapsed(now);
        while self.bytes > budget && self.pop_oldest() {}
    }
}

/// Guard state that lapses: rate counters or idempotency records, within a budget.
struct Expiring<V> {
    entries: Entries<Timed<V>>,
    budget: usize,
}

impl<V: HeapSize> Expiring<V> {
    fn new(budget: usize) -> Self {
        Expiring {
            entries: Entries::new(),
            budget,
        }
    }

    fn insert(&mut self, key: &str, value: V, expires_at: Instant, now: Instant) {
        self.entries.insert(key, Timed { value, expires_at });
        self.entries.trim(now, self.budget);
    }
}

/// Plain values: message records and their index by provider id, kept for
/// `MESSAGE_RETENTION`, and Telegram links, kept until deleted, weighing at most
/// `budget` bytes together.
///
/// Every send writes two records, all with the same lifetime, and few are read again,
/// so the order they were written in is the order they lapse in. When the budget is
/// spent the oldest record goes first, and a link (least recently used) only when no
/// record is left, since users would have to link again.
struct Values {
    /// Values with a lifetime, oldest first.
    timed: Entries<Timed<Box<str>>>,
    /// Values kept until deleted, least recently used first.
    forever: Entries<Box<str>>,
    budget: usize,
}

impl Values {
    fn new(budget: usize) -> Self {
        Values {
            timed: Entries::new(),
            forever: Entries::new(),
            budget,
        }
    }

    fn bytes(&self) -> usize {
        self.timed.bytes + self.forever.bytes
    }

    fn remove(&mut self, key: &str) {
        if self.timed.remove(key).is_none() {
            self.forever.remove(key);
        }
    }

    /// Drops lapsed values, then the oldest ones while over budget.
    fn trim(&mut self, now: Instant) {
        self.timed.drop_lapsed(now);
        while self.bytes() > self.budget {
            if !self.timed.pop_oldest() && !self.forever.pop_oldest() {
                break;
            }
        }
    }
}

/// State in this process only, within about its memory budget: half for plain values
/// (message records and Telegram links), a quarter each for rate counters and
/// idempotency records. Guard state has shares of its own so that a burst of sends,
/// whose records fill their half, cannot push out the limits and claims that guard the
/// next ones.
pub struct MemoryStore {
    /// GCRA theoretical arrival times, in milliseconds since `epoch`.
    rates: Mutex<Expiring<u64>>,
    claims: Mutex<Expiring<Record>>,
    values: Mutex<Values>,
    epoch: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_budget(DEFAULT_BUDGET)
    }
}

/// Locks a map. Nothing panics while one is held, so a poisoned lock holds whole data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// A store that keeps its maps within about `budget` bytes.
    pub fn with_budget(budget: u64) -> Self {
        let share = |part: u64| usize::try_from(budget / part).unwrap_or(usize::MAX);
        MemoryStore {
            rates: Mutex::new(Expiring::new(share(4))),
            claims: Mutex::new(Expiring::new(share(4))),
            values: Mutex::new(Values::new(share(2))),
            epoch: Instant::now(),
        }
    }

    fn values(&self) -> MutexGuard<'_, Values> {
        lock(&self.values)
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
        // One lock for all the limits of a send: they are checked and counted together.
        let mut rates = lock(&self.rates);
        let now = Instant::now();
        let now_ms = now.duration_since(self.epoch).as_millis() as u64;
        let mut counted = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            let tat = rates.entries.live(limit.key, now).copied();
            match gcra(tat, now_ms, limit.spec) {
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
            let expires_at = self.epoch + Duration::from_millis(new_tat);
            rates.insert(limit.key, new_tat, expires_at, now);
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
        let mut claims = lock(&self.claims);
        if let Some(held) = claims.entries.live(key, now) {
            return Ok(held.clone().into_claim());
        }
        let record = Record::InFlight {
            token: token.to_owned(),
            fingerprint: fingerprint.to_owned(),
        };
        claims.insert(key, record, now + ttl, now);
        Ok(Claim::Claimed)
    }

    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        let mut claims = lock(&self.claims);
        let held = claims.entries.live(key, Instant::now());
        Ok(held.cloned().map(Record::into_claim))
    }

    async fn finish(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut claims = lock(&self.claims);
        match claims.entries.live(key, now) {
            // Another request took the key after ours lapsed: its claim stands.
            Some(Record::InFlight { token: holder, .. }) if holder != token => {}
            Some(Record::Done { .. }) => {}
            _ => {
                let done = Record::Done {
                    fingerprint: fingerprint.to_owned(),
                    answer: answer.clone(),
                };
                claims.insert(key, done, now + ttl, now);
            }
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut claims = lock(&self.claims);
        let held = claims.entries.live(key, Instant::now());
        if matches!(held, Some(Record::InFlight { token: holder, .. }) if holder == token) {
            claims.entries.remove(key);
        }
        Ok(())
    }

    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        for &(key, value) in entries {
            // `insert` replaces the key in its own map; only the other one needs clearing.
            match ttl {
                Some(ttl) => {
                    values.forever.remove(key);
                    let value = value.into();
                    let expires_at = now + ttl;
                    values.timed.insert(key, Timed { value, expires_at });
                }
                None => {
                    values.timed.remove(key);
                    values.forever.insert(key, value.into());
                }
            }
        }
        values.trim(now);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        if values.timed.map.contains_key(key) {
            return Ok(values.timed.live(key, now).map(ToString::to_string));
        }
        Ok(values
            .forever
            .map
            .to_back(key)
            .map(|value| value.to_string()))
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut values = self.values();
        let Values { timed, forever, .. } = &mut *values;
        let replaced = if timed.map.contains_key(key) {
            let current = timed.live(key, now);
            let matches = current.is_some_and(|current| **current == *expected);
            if matches {
                // Same place and lifetime: a status update does not extend a record.
                timed.update(key, |entry| entry.value = new.into());
            }
            matches
        } else {
            let matches = forever.map.get(key).is_some_and(|v| **v == *expected);
            if matches {
                forever.update(key, |value| *value = new.into());
            }
            matches
        };
        values.trim(now);
        Ok(replaced)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.values().remove(key);
        Ok(())
    }

    fn memory_bytes(&self) -> u64 {
        let rates = lock(&self.rates).entries.bytes;
        let claims = lock(&self.claims).entries.bytes;
        (rates + claims + self.values().bytes()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateSpec;
    use proptest::prelude::*;

    /// A store whose plain values may weigh `budget` bytes.
    fn small(budget: usize) -> MemoryStore {
        let store = MemoryStore::default();
        store.values().budget = budget;
        store
    }

    /// What entries weigh, counted afresh.
    fn recount<V: HeapSize>(entries: &Entries<V>) -> usize {
        entries
            .map
            .iter()
            .map(|(key, value)| weight(key, value))
            .sum()
    }

    /// What a value with a lifetime weighs.
    fn timed(key: &str, value: &str) -> usize {
        let value = Timed {
            value: Box::<str>::from(value),
            expires_at: Instant::now(),
        };
        weight(key, &value)
    }

    /// What a value kept until deleted weighs.
    fn kept(key: &str, value: &str) -> usize {
        weight(key, &Box::<str>::from(value))
    }

    /// What the plain values weigh, counted afresh.
    fn recount_values(values: &Values) -> usize {
        recount(&values.timed) + recount(&values.forever)
    }

    #[tokio::test]
    async fn a_full_map_drops_the_oldest_record_before_any_link() {
        let budget = kept("chat:a", "1") + timed("msg:2", "two") + timed("msg:3", "three");
        let store = small(budget);
        let hour = Some(Duration::from_secs(3600));
        store.put(&[("chat:a", "1")], None).await.unwrap();
        store.put(&[("msg:1", "one")], hour).await.unwrap();
        store.put(&[("msg:2", "two")], hour).await.unwrap();
        store.put(&[("msg:3", "three")], hour).await.unwrap();
        assert_eq!(store.get("msg:1").await.unwrap(), None);
        assert_eq!(store.get("msg:2").await.unwrap().as_deref(), Some("two"));
        assert_eq!(store.get("msg:3").await.unwrap().as_deref(), Some("three"));
        assert_eq!(store.get("chat:a").await.unwrap().as_deref(), Some("1"));
        // Only links left: the least recently used one goes.
        let store = small(2 * kept("chat:a", "1"));
        store.put(&[("chat:a", "1")], None).await.unwrap();
        store.put(&[("chat:b", "2")], None).await.unwrap();
        store.get("chat:a").await.unwrap();
        store.put(&[("chat:c", "3")], None).await.unwrap();
        assert_eq!(store.get("chat:b").await.unwrap(), None);
        assert_eq!(store.get("chat:a").await.unwrap().as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn a_record_that_grows_past_the_budget_pushes_out_the_oldest() {
        let hour = Some(Duration::from_secs(3600));
        let store = small(timed("msg:1", "a") + timed("msg:2", "b"));
        store
            .put(&[("msg:1", "a"), ("msg:2", "b")], hour)
            .await
            .unwrap();
        assert!(store.replace("msg:2", "b", "bigger").await.unwrap());
        assert_eq!(store.get("msg:1").await.unwrap(), None);
        assert_eq!(store.get("msg:2").await.unwrap().as_deref(), Some("bigger"));
        let values = store.values();
        assert_eq!(values.bytes(), recount_values(&values));
    }

    /// One operation on the plain values, for the property below.
    #[derive(Debug, Clone)]
    enum Step {
        Put {
            key: u8,
            len: usize,
            ttl: Option<u64>,
        },
        Replace {
            key: u8,
            len: usize,
        },
        Get {
            key: u8,
        },
        Delete {
            key: u8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let key = 0u8..12;
        let len = 0usize..300;
        prop_oneof![
            (key.clone(), len.clone(), prop::option::of(0u64..2))
                .prop_map(|(key, len, ttl)| { Step::Put { key, len, ttl } }),
            (key.clone(), len).prop_map(|(key, len)| Step::Replace { key, len }),
            key.clone().prop_map(|key| Step::Get { key }),
            key.prop_map(|key| Step::Delete { key }),
        ]
    }

    proptest! {
        /// Whatever is written, replaced, read or deleted, the running weight is what
        /// the values weigh and never more than the budget.
        #[test]
        fn the_values_stay_within_their_budget(steps in prop::collection::vec(step(), 1..60)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let budget = 5 * timed("msg:00", &"x".repeat(150));
            let store = small(budget);
            runtime.block_on(async {
                for step in steps {
                    match step {
                        Step::Put { key, len, ttl } => {
                            let ttl = ttl.map(|hours| Duration::from_secs(hours * 3600));
                            let key = format!("msg:{key:02}");
                            store.put(&[(&key, &"v".repeat(len))], ttl).await.unwrap();
                        }
                        Step::Replace { key, len } => {
                            let key = format!("msg:{key:02}");
                            if let Some(current) = store.get(&key).await.unwrap() {
                                let new = "r".repeat(len);
                                store.replace(&key, &current, &new).await.unwrap();
                            }
                        }
                        Step::Get { key } => {
                            store.get(&format!("msg:{key:02}")).await.unwrap();
                        }
                        Step::Delete { key } => {
                            store.delete(&format!("msg:{key:02}")).await.unwrap();
                        }
                    }
                    let values = store.values();
                    prop_assert_eq!(values.bytes(), recount_values(&values));
                    prop_assert!(values.bytes() <= budget, "{} > {}", values.bytes(), budget);
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn guard_state_stays_within_its_share_of_the_budget() {
        let budget = 64 * 1024;
        let store = MemoryStore::with_budget(budget);
        let answer = StoredAnswer {
            status: 200,
            body: "x".repeat(200),
        };
        let ttl = Duration::from_secs(60);
        let spec = RateSpec {
            count: 5,
            per: Duration::from_secs(600),
        };
        let written = 2_000;
        for n in 0..written {
            let key = format!("idem:{n}");
            store.claim(&key, "token", "fp", ttl).await.unwrap();
            store
                .finish(&key, "token", "fp", &answer, ttl)
                .await
                .unwrap();
            let key = format!("rate:{n}");
            let decision = store
                .rate_acquire(&[RateLimit { key: &key, spec }])
                .await
                .unwrap();
            assert_eq!(decision, RateDecision::Allowed);
        }
        let share = (budget / 4) as usize;
        // Each entry weighs at least the fixed overhead, so a share holds at most this many.
        let most = share / NODE_OVERHEAD;
        let rates = lock(&store.rates);
        let claims = lock(&store.claims);
        for (map, bytes, recounted, entries) in [
            (
                "rates",
                rates.entries.bytes,
                recount(&rates.entries),
                rates.entries.map.len(),
            ),
            (
                "claims",
                claims.entries.bytes,
                recount(&claims.entries),
                claims.entries.map.len(),
            ),
        ] {
            assert_eq!(bytes, recounted, "{map}");
            assert!(bytes <= share, "{map}: {bytes} > {share}");
            assert!(
                entries > 0 && entries <= most,
                "{map}: {entries} of {written} kept"
            );
        }
        // The newest are the ones kept.
        let newest = format!("idem:{}", written - 1);
        assert!(claims.entries.map.contains_key(newest.as_str()));
        assert!(!claims.entries.map.contains_key("idem:0"));
    }

    #[tokio::test]
    async fn memory_bytes_is_what_every_map_weighs() {
        let store = MemoryStore::default();
        assert_eq!(store.memory_bytes(), 0);
        let spec = RateSpec {
            count: 5,
            per: Duration::from_secs(600),
        };
        let minute = Duration::from_secs(60);
        let limit = RateLimit {
            key: "rate:a",
            spec,
        };
        store.rate_acquire(&[limit]).await.unwrap();
        store.claim("idem:a", "token", "fp", minute).await.unwrap();
        store
            .put(&[("msg:1", "record")], Some(minute))
            .await
            .unwrap();
        store.put(&[("chat:a", "1")], None).await.unwrap();
        let rates = recount(&lock(&store.rates).entries);
        let claims = recount(&lock(&store.claims).entries);
        assert!(rates > 0 && claims > 0);
        let expected = rates + claims + timed("msg:1", "record") + kept("chat:a", "1");
        assert_eq!(store.memory_bytes(), expected as u64);
    }

    #[tokio::test]
    async fn expired_values_are_gone_and_make_room() {
        let store = small(10 * timed("msg:new", "y"));
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
            values.timed.map.len(),
            1,
            "expired records are dropped on write"
        );
    }

    #[tokio::test]
    async fn a_value_moves_between_lifetimes() {
        let store = small(10 * timed("k", "changed"));
        store
            .put(&[("k", "timed")], Some(Duration::from_secs(60)))
            .await
            .unwrap();
        store.put(&[("k", "kept")], None).await.unwrap();
        {
            let values = store.values();
            assert_eq!((values.timed.map.len(), values.forever.map.len()), (0, 1));
            assert_eq!(values.bytes(), recount_values(&values));
        }
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some("kept"));
        assert!(store.replace("k", "kept", "changed").await.unwrap());
        store.delete("k").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.values().bytes(), 0);
    }
}
