//! The in-process store: state held to a memory budget. The default, and what each
//! replica falls back to while Redis is unreachable.
//!
//! Entries sit in a few `LinkedHashMap`s (one per kind, each in the order its entries
//! were last written, or used for links), all behind one mutex, with a running count of
//! what they weigh. Each store call takes the lock once, briefly, and never holds it
//! across an `await`.
//!
//! Past the budget the store gives up, in this order: lapsed entries of any kind (they
//! count as free space), message records (oldest first), dedupe answers (oldest first),
//! then Telegram links (least recently used first: users would have to link again).
//! Live guard state (rate counters, claims in flight and `Idempotency-Key` answers) is
//! never given up: forgetting it would reset a limit or send a code twice. When it alone
//! outweighs the budget the store says it is [overloaded](Store::overloaded), and sends
//! are refused until some of it lapses.
//!
//! Pending channel fallbacks are kept apart, within a quarter of the budget
//! ([`FALLBACK_SHARE`]): past it a new one is refused rather than any other state
//! given up.

mod budget;
mod combined;
mod entries;
mod fallbacks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::rate::{gcra, gcra_refund, nanos};
use super::{
    Claim, ClaimAndCount, RateDecision, RateLimit, Record, Store, StoreError, StoredAnswer,
    TakenFallback,
};
use budget::Inner;
use entries::{Entries, Kind};

/// The memory budget when none is configured (`MEMORY_STORE_MIB`).
pub const DEFAULT_BUDGET: u64 = 8 << 20;

/// Pending channel fallbacks may use one part in this many of the budget.
pub const FALLBACK_SHARE: u64 = 4;

/// State in this process only, within about its memory budget (see the module docs for
/// what goes first when it is spent).
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// Pending channel fallbacks, under a lock of their own.
    fallbacks: Mutex<fallbacks::Fallbacks>,
    /// Mirrors `Inner::overloaded`, so that the usual answer takes no lock.
    overloaded: AtomicBool,
    epoch: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_budget(DEFAULT_BUDGET)
    }
}

impl MemoryStore {
    /// A store that keeps its maps within about `budget` bytes.
    pub fn with_budget(budget: u64) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                records: Entries::new(|_| Kind::Record),
                dedupe: Entries::new(|_| Kind::Dedupe),
                links: Entries::new(|_| Kind::Link),
                claims: Entries::new(Kind::of_claim),
                rates: Entries::new(|_| Kind::Rate),
                budget: usize::try_from(budget).unwrap_or(usize::MAX),
                overloaded: false,
                last_sweep: None,
            }),
            fallbacks: Mutex::new(fallbacks::Fallbacks::new(
                usize::try_from(budget / FALLBACK_SHARE).unwrap_or(usize::MAX),
            )),
            overloaded: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// Runs `f` on the pending fallbacks.
    fn pending<T>(&self, f: impl FnOnce(&mut fallbacks::Fallbacks) -> T) -> T {
        // Nothing panics while the lock is held, so a poisoned lock holds whole data.
        f(&mut self
            .fallbacks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Runs `f` under the lock, then reports what it made the store drop.
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let (result, dropped) = {
            // Nothing panics while the lock is held, so a poisoned lock holds whole data.
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let result = f(&mut inner);
            self.overloaded.store(inner.overloaded, Ordering::Relaxed);
            (result, inner.take_dropped())
        };
        dropped.report();
        result
    }

    #[cfg(test)]
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    fn nanos_at(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }

    /// [`Store::rate_acquire`] at the instant `now` (tests pass instants of their own
    /// rather than wait).
    pub fn rate_acquire_at(&self, limits: &[RateLimit<'_>], now: Instant) -> RateDecision {
        self.with(|inner| {
            let decision = self.count(inner, limits, now);
            if decision == RateDecision::Allowed {
                inner.make_room(now);
            }
            decision
        })
    }

    /// Counts one event against every limit, or none (under the caller's lock).
    fn count(&self, inner: &mut Inner, limits: &[RateLimit<'_>], now: Instant) -> RateDecision {
        let now_ns = self.nanos_at(now);
        // Checked and counted together, under one lock.
        let mut counted = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            let tat = inner.rates.live(limit.key, now).copied();
            match gcra(tat, now_ns, limit.spec) {
                Ok(new_tat) => counted.push(new_tat),
                Err(retry_after) => {
                    return RateDecision::Limited {
                        limit: index,
                        retry_after,
                    }
                }
            }
        }
        for (limit, new_tat) in limits.iter().zip(counted) {
            let expires_at = self.epoch + Duration::from_nanos(new_tat);
            inner.rates.set(limit.key, new_tat, Some(expires_at));
        }
        RateDecision::Allowed
    }

    /// [`Store::rate_refund`] at the instant `now`.
    pub fn rate_refund_at(&self, limits: &[RateLimit<'_>], now: Instant) {
        let now_ns = self.nanos_at(now);
        self.with(|inner| {
            for limit in limits {
                let Some(&tat) = inner.rates.live(limit.key, now) else {
                    continue;
                };
                match gcra_refund(tat, now_ns, limit.spec) {
                    Some(tat) => inner.rates.update(limit.key, |entry| {
                        entry.value = tat;
                        entry.expires_at = Some(self.epoch + Duration::from_nanos(tat));
                    }),
                    None => drop(inner.rates.remove(limit.key)),
                }
            }
        });
    }

    fn overloaded_at(&self, now: Instant) -> bool {
        if !self.overloaded.load(Ordering::Relaxed) {
            return false;
        }
        // Guard state lapses by itself: look again whether it still fills the budget.
        self.with(|inner| {
            inner.make_room(now);
            inner.overloaded
        })
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
        Ok(self.rate_acquire_at(limits, Instant::now()))
    }

    async fn rate_refund(&self, limits: &[RateLimit<'_>]) -> Result<(), StoreError> {
        self.rate_refund_at(limits, Instant::now());
        Ok(())
    }

    async fn claim(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        Ok(self.with(|inner| {
            if let Some(held) = inner.held(key, now) {
                return held.clone().into_claim();
            }
            let record = Record::InFlight {
                token: token.to_owned(),
                fingerprint: fingerprint.to_owned(),
            };
            inner.claims.set(key, record, Some(now + ttl));
            inner.make_room(now);
            Claim::Claimed
        }))
    }

    async fn claim_and_acquire(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
        limits: &[RateLimit<'_>],
    ) -> Result<ClaimAndCount, StoreError> {
        let claim = (key, token, fingerprint, ttl);
        Ok(self.claim_and_acquire_at(claim, limits, Instant::now()))
    }

    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        let now = Instant::now();
        Ok(self.with(|inner| inner.held(key, now).cloned().map(Record::into_claim)))
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
        self.with(|inner| match inner.held(key, now) {
            // Another request took the key after ours lapsed: its claim stands.
            Some(Record::InFlight { token: holder, .. }) if holder != token => {}
            Some(Record::Done { .. }) => {}
            _ => {
                inner.claims.remove(key);
                let done = Record::Done {
                    fingerprint: fingerprint.to_owned(),
                    answer: answer.clone(),
                };
                // A dedupe answer is history; an `Idempotency-Key` answer is a promise.
                let entries = match Kind::of_claim(key) {
                    Kind::Dedupe => &mut inner.dedupe,
                    _ => &mut inner.claims,
                };
                entries.set(key, done, Some(now + ttl));
                inner.make_room(now);
            }
        });
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let now = Instant::now();
        self.with(|inner| {
            let held = inner.claims.live(key, now);
            if matches!(held, Some(Record::InFlight { token: holder, .. }) if holder == token) {
                inner.claims.remove(key);
            }
        });
        Ok(())
    }

    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError> {
        let now = Instant::now();
        let expires_at = ttl.map(|ttl| now + ttl);
        self.with(|inner| {
            for &(key, value) in entries {
                inner.values(key).set(key, value.into(), expires_at);
            }
            inner.make_room(now);
        });
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        Ok(self.with(|inner| {
            let values = inner.values(key);
            let value = values.live(key, now)?.to_string();
            if Kind::of_value(key) == Kind::Link {
                // Links go least recently used first.
                values.map.to_back(key);
            }
            Some(value)
        }))
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.with(|inner| {
            let values = inner.values(key);
            let matches = values.holds(key, expected, now);
            if matches {
                // Same place and lifetime: a status update does not extend a record.
                values.update(key, |entry| entry.value = new.into());
                inner.make_room(now);
            }
            matches
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.with(|inner| inner.values(key).remove(key));
        Ok(())
    }

    async fn delete_if(&self, key: &str, expected: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.with(|inner| {
            let values = inner.values(key);
            let matches = values.holds(key, expected, now);
            if matches {
                values.remove(key);
            }
            matches
        }))
    }

    async fn schedule_fallback(
        &self,
        id: &str,
        payload: &str,
        delay: Duration,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        self.pending(|pending| pending.schedule(id, payload, now + delay, now + ttl))
    }

    async fn cancel_fallback(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.pending(|pending| pending.cancel(id)))
    }

    async fn hasten_fallback(&self, id: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.pending(|pending| pending.hasten(id, now)))
    }

    async fn take_due_fallbacks(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<TakenFallback>, StoreError> {
        let now = Instant::now();
        Ok(self.pending(|pending| pending.take_due(limit, lease, now)))
    }

    async fn finish_fallback(&self, id: &str) -> Result<(), StoreError> {
        self.pending(|pending| pending.finish(id));
        Ok(())
    }

    fn memory_bytes(&self) -> u64 {
        let pending = self.pending(|pending| pending.bytes());
        self.with(|inner| (inner.bytes() + pending) as u64)
    }

    fn overloaded(&self) -> bool {
        self.overloaded_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::entries::{weight, HeapSize, Tally, Timed};
    use super::*;
    use crate::store::RateSpec;
    use proptest::prelude::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// What entries weigh, counted afresh.
    fn recount<V: HeapSize>(entries: &Entries<V>) -> usize {
        entries
            .map
            .iter()
            .map(|(key, value)| weight(key, value))
            .sum()
    }

    /// What the whole store weighs, counted afresh.
    fn recount_all(inner: &Inner) -> usize {
        recount(&inner.records)
            + recount(&inner.dedupe)
            + recount(&inner.links)
            + recount(&inner.claims)
            + recount(&inner.rates)
    }

    /// What a plain value weighs.
    fn value(key: &str, value: &str) -> usize {
        let value = Timed {
            value: Box::<str>::from(value),
            expires_at: None,
        };
        weight(key, &value)
    }

    fn answer(body: &str) -> StoredAnswer {
        StoredAnswer {
            status: 200,
            body: body.into(),
            retry_after: None,
        }
    }

    /// What a finished idempotency record weighs.
    fn done(key: &str, body: &str) -> usize {
        let record = Timed {
            value: Record::Done {
                fingerprint: "fp".into(),
                answer: answer(body),
            },
            expires_at: None,
        };
        weight(key, &record)
    }

    /// What a rate counter weighs.
    fn counter(key: &str) -> usize {
        weight(
            key,
            &Timed {
                value: 0u64,
                expires_at: None,
            },
        )
    }

    const SPEC: RateSpec = RateSpec {
        count: 1,
        per: HOUR,
    };

    async fn answered(store: &MemoryStore, key: &str, body: &str) {
        assert_eq!(
            store.claim(key, "t", "fp", HOUR).await.unwrap(),
            Claim::Claimed
        );
        store
            .finish(key, "t", "fp", &answer(body), HOUR)
            .await
            .unwrap();
    }

    fn limited(store: &MemoryStore, key: &str) -> bool {
        let limit = RateLimit { key, spec: SPEC };
        matches!(
            store.rate_acquire_at(&[limit], Instant::now()),
            RateDecision::Limited { .. }
        )
    }

    #[tokio::test]
    async fn history_goes_first_then_dedupe_answers_then_links_and_guard_state_never() {
        let guard = done("idem:key:a", "x") + counter("rate:number:a");
        let budget =
            guard + value("msg:1", "r") + done("idem:dedupe:1", "d") + value("chat:1", "1");
        let store = MemoryStore::with_budget(budget as u64);
        answered(&store, "idem:key:a", "x").await;
        assert!(!limited(&store, "rate:number:a"));
        store.put(&[("chat:1", "1")], None).await.unwrap();
        answered(&store, "idem:dedupe:1", "d").await;
        store.put(&[("msg:1", "r")], Some(HOUR)).await.unwrap();
        assert_eq!(store.memory_bytes(), budget as u64, "all fit");

        // One more record: the oldest record goes, nothing else.
        store.put(&[("msg:2", "r")], Some(HOUR)).await.unwrap();
        assert_eq!(store.get("msg:1").await.unwrap(), None);
        assert!(store.peek("idem:dedupe:1").await.unwrap().is_some());
        // More guard state: the newest record and then the dedupe answer go, not the link.
        answered(&store, "idem:key:b", "y").await;
        assert_eq!(store.get("msg:2").await.unwrap(), None);
        assert_eq!(store.peek("idem:dedupe:1").await.unwrap(), None);
        assert_eq!(store.get("chat:1").await.unwrap().as_deref(), Some("1"));
        // And more: only the link is left to give.
        answered(&store, "idem:key:c", "z").await;
        assert_eq!(store.get("chat:1").await.unwrap(), None);
        assert!(!store.overloaded());
        for n in 0..50 {
            store
                .put(&[(&format!("msg:x{n}"), "r")], Some(HOUR))
                .await
                .unwrap();
        }
        assert!(matches!(
            store.peek("idem:key:a").await.unwrap(),
            Some(Claim::Done { .. })
        ));
        assert!(store.peek("idem:key:b").await.unwrap().is_some());
        assert!(store.peek("idem:key:c").await.unwrap().is_some());
        assert!(limited(&store, "rate:number:a"), "the counter is kept");

        let inner = store.inner();
        assert_eq!(inner.bytes(), recount_all(&inner));
        assert!(inner.bytes() <= inner.budget);
        // Everything given up was live, and counted by kind.
        let dropped = &inner.records.dropped.0;
        assert_eq!(dropped[Kind::Record as usize], [0, 0], "reported already");
    }

    #[test]
    fn dropped_entries_are_counted_by_kind_and_liveness() {
        let store = MemoryStore::with_budget(value("chat:1", "1") as u64);
        let now = Instant::now();
        let mut inner = store.inner();
        inner.records.set("msg:1", "r".into(), Some(now + HOUR));
        inner.records.set("msg:0", "r".into(), Some(now));
        inner.make_room(now);
        inner.links.set("chat:1", "1".into(), None);
        inner.make_room(now);
        let tally = inner.take_dropped();
        assert_eq!(tally.0[Kind::Record as usize], [1, 1]);
        assert_eq!(tally.0[Kind::Link as usize], [0, 0]);
        assert_eq!(inner.take_dropped().0, Tally::default().0, "taken once");
    }

    #[tokio::test]
    async fn live_guard_state_past_the_budget_overloads_the_store_until_it_lapses() {
        let budget = 20 * counter("rate:number:00");
        let store = MemoryStore::with_budget(budget as u64);
        store.put(&[("msg:1", "record")], Some(HOUR)).await.unwrap();
        let now = Instant::now();
        let mut n = 0;
        while !store.overloaded_at(now) {
            let key = format!("rate:number:{n:02}");
            let limit = RateLimit {
                key: &key,
                spec: SPEC,
            };
            assert_eq!(store.rate_acquire_at(&[limit], now), RateDecision::Allowed);
            n += 1;
            assert!(n <= 21, "never overloaded");
        }
        assert_eq!(n, 21);
        assert_eq!(
            store.get("msg:1").await.unwrap(),
            None,
            "records went first"
        );
        // Every counter is still counting.
        for n in 0..21 {
            let key = format!("rate:number:{n:02}");
            let limit = RateLimit {
                key: &key,
                spec: SPEC,
            };
            assert!(matches!(
                store.rate_acquire_at(&[limit], now),
                RateDecision::Limited { .. }
            ));
        }
        // Once they lapse, the store takes sends again.
        assert!(store.overloaded_at(now + HOUR / 2));
        assert!(!store.overloaded_at(now + HOUR));
        assert!(store.memory_bytes() <= budget as u64);
    }

    #[tokio::test]
    async fn lapsed_entries_behind_live_ones_make_room_before_live_history_goes() {
        let budget = 3 * counter("rate:number:0") + value("msg:1", "r");
        let store = MemoryStore::with_budget(budget as u64);
        let now = Instant::now();
        let short = RateSpec {
            count: 1,
            per: Duration::from_secs(1),
        };
        let acquire = |key: &str, spec| {
            let limit = RateLimit { key, spec };
            assert_eq!(store.rate_acquire_at(&[limit], now), RateDecision::Allowed);
        };
        acquire("rate:number:0", SPEC);
        acquire("rate:number:1", short);
        acquire("rate:number:2", SPEC);
        store.put(&[("msg:1", "r")], Some(HOUR)).await.unwrap();
        // Later, the short counter (behind a live one) has lapsed: it makes the room.
        let later = now + Duration::from_secs(2);
        let limit = RateLimit {
            key: "rate:number:3",
            spec: SPEC,
        };
        assert_eq!(
            store.rate_acquire_at(&[limit], later),
            RateDecision::Allowed
        );
        assert_eq!(store.get("msg:1").await.unwrap().as_deref(), Some("r"));
    }

    #[tokio::test]
    async fn a_record_that_grows_past_the_budget_pushes_out_the_oldest() {
        let store = MemoryStore::with_budget((value("msg:1", "a") + value("msg:2", "b")) as u64);
        store
            .put(&[("msg:1", "a"), ("msg:2", "b")], Some(HOUR))
            .await
            .unwrap();
        assert!(store.replace("msg:2", "b", "bigger").await.unwrap());
        assert_eq!(store.get("msg:1").await.unwrap(), None);
        assert_eq!(store.get("msg:2").await.unwrap().as_deref(), Some("bigger"));
        let inner = store.inner();
        assert_eq!(inner.bytes(), recount_all(&inner));
    }

    #[tokio::test]
    async fn links_go_least_recently_used_first() {
        let store = MemoryStore::with_budget(2 * value("chat:a", "1") as u64);
        store.put(&[("chat:a", "1")], None).await.unwrap();
        store.put(&[("chat:b", "2")], None).await.unwrap();
        store.get("chat:a").await.unwrap();
        store.put(&[("chat:c", "3")], None).await.unwrap();
        assert_eq!(store.get("chat:b").await.unwrap(), None);
        assert_eq!(store.get("chat:a").await.unwrap().as_deref(), Some("1"));
    }

    /// One operation on the store, for the property below.
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
        Answer {
            key: u8,
            len: usize,
            dedupe: bool,
        },
        Count {
            key: u8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let key = 0u8..12;
        let len = 0usize..300;
        prop_oneof![
            (key.clone(), len.clone(), prop::option::of(0u64..2))
                .prop_map(|(key, len, ttl)| Step::Put { key, len, ttl }),
            (key.clone(), len.clone()).prop_map(|(key, len)| Step::Replace { key, len }),
            key.clone().prop_map(|key| Step::Get { key }),
            key.clone().prop_map(|key| Step::Delete { key }),
            (key.clone(), len, any::<bool>()).prop_map(|(key, len, dedupe)| Step::Answer {
                key,
                len,
                dedupe
            }),
            key.prop_map(|key| Step::Count { key }),
        ]
    }

    /// A record or a link, by the key's number.
    fn value_key(key: u8) -> String {
        if key % 3 == 0 {
            format!("chat:{key:02}")
        } else {
            format!("msg:{key:02}")
        }
    }

    proptest! {
        /// Whatever is written, replaced, read, deleted, answered or counted, the running
        /// weight is what the entries weigh, and never more than the budget unless live
        /// guard state alone outweighs it (then nothing else is left, and the store says
        /// it is overloaded).
        #[test]
        fn the_store_stays_within_its_budget(steps in prop::collection::vec(step(), 1..60)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let budget = 5 * value("msg:00", &"x".repeat(150));
            let store = MemoryStore::with_budget(budget as u64);
            runtime.block_on(async {
                for step in steps {
                    match step {
                        Step::Put { key, len, ttl } => {
                            let ttl = ttl.map(|hours| HOUR * hours as u32);
                            let key = value_key(key);
                            store.put(&[(&key, &"v".repeat(len))], ttl).await.unwrap();
                        }
                        Step::Replace { key, len } => {
                            let key = value_key(key);
                            if let Some(current) = store.get(&key).await.unwrap() {
                                let new = "r".repeat(len);
                                store.replace(&key, &current, &new).await.unwrap();
                            }
                        }
                        Step::Get { key } => {
                            store.get(&value_key(key)).await.unwrap();
                        }
                        Step::Delete { key } => {
                            store.delete(&value_key(key)).await.unwrap();
                        }
                        Step::Answer { key, len, dedupe } => {
                            let kind = if dedupe { "dedupe" } else { "key" };
                            let key = format!("idem:{kind}:{key:02}");
                            if store.claim(&key, "t", "fp", HOUR).await.unwrap() == Claim::Claimed {
                                let body = "b".repeat(len);
                                store.finish(&key, "t", "fp", &answer(&body), HOUR).await.unwrap();
                            }
                        }
                        Step::Count { key } => {
                            let key = format!("rate:number:{key:02}");
                            store.rate_acquire(&[RateLimit { key: &key, spec: SPEC }]).await.unwrap();
                        }
                    }
                    let overloaded = store.overloaded();
                    let inner = store.inner();
                    prop_assert_eq!(inner.bytes(), recount_all(&inner));
                    if inner.bytes() > budget {
                        prop_assert!(overloaded);
                        let history = inner.records.map.len() + inner.dedupe.map.len() + inner.links.map.len();
                        prop_assert_eq!(history, 0);
                    } else {
                        prop_assert!(!overloaded);
                    }
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn memory_bytes_is_what_every_map_weighs() {
        let store = MemoryStore::default();
        assert_eq!(store.memory_bytes(), 0);
        let limit = RateLimit {
            key: "rate:a",
            spec: SPEC,
        };
        store.rate_acquire(&[limit]).await.unwrap();
        store.claim("idem:a", "token", "fp", HOUR).await.unwrap();
        store.put(&[("msg:1", "record")], Some(HOUR)).await.unwrap();
        store.put(&[("chat:a", "1")], None).await.unwrap();
        let expected = {
            let inner = store.inner();
            assert!(inner.rates.bytes > 0 && inner.claims.bytes > 0);
            inner.rates.bytes + inner.claims.bytes + value("msg:1", "record") + value("chat:a", "1")
        };
        assert_eq!(store.memory_bytes(), expected as u64);
    }

    #[tokio::test]
    async fn expired_values_are_gone() {
        let store = MemoryStore::default();
        store
            .put(&[("msg:old", "x")], Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(store.get("msg:old").await.unwrap(), None);
        assert!(!store.replace("msg:old", "x", "y").await.unwrap());
        assert_eq!(store.memory_bytes(), 0, "dropped when read");
        // Lapsed entries are dropped as new ones come, within the budget too, so the
        // reported fill is what is live.
        store
            .put(&[("msg:old", "x")], Some(Duration::ZERO))
            .await
            .unwrap();
        store.put(&[("msg:new", "y")], Some(HOUR)).await.unwrap();
        assert_eq!(store.memory_bytes(), value("msg:new", "y") as u64);
    }

    #[tokio::test]
    async fn a_value_changes_lifetime() {
        let store = MemoryStore::default();
        store
            .put(&[("k", "timed")], Some(Duration::ZERO))
            .await
            .unwrap();
        store.put(&[("k", "kept")], None).await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some("kept"));
        assert!(store.replace("k", "kept", "changed").await.unwrap());
        {
            let inner = store.inner();
            assert_eq!(inner.records.map.len(), 1);
            assert_eq!(inner.bytes(), recount_all(&inner));
        }
        store.delete("k").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.memory_bytes(), 0);
    }
}
