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

use std::mem::size_of;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hashlink::LinkedHashMap;

use super::{
    gcra, gcra_refund, nanos, Claim, RateDecision, RateLimit, Record, Store, StoreError,
    StoredAnswer,
};
use crate::prometheus;

/// The memory budget when none is configured (`MEMORY_STORE_MIB`).
pub const DEFAULT_BUDGET: u64 = 8 << 20;

/// What an entry costs besides its key, its value and what the value holds on the heap:
/// the map's links and table slot and the allocator's headers. Measured on the
/// benchmark: with this, the process grows by about the budget once the maps fill it.
const NODE_OVERHEAD: usize = 96;

/// Keys under which the idempotency guard keeps answers to repeats without a key
/// (`DEDUPE_WINDOW`): history, unlike `Idempotency-Key` answers (`idem:key:`).
const DEDUPE_PREFIX: &str = "idem:dedupe:";

/// Keys of Telegram links (`chat:` by number, `chat-owner:` by chat): user data.
const LINK_PREFIXES: [&str; 2] = ["chat:", "chat-owner:"];

/// Guard entries looked at for having lapsed each time the budget is exceeded.
const GUARD_LOOKS: usize = 2;

/// When only guard state is left over the budget, every guard entry is looked at for
/// having lapsed, at most this often: a pass costs a walk over all of them.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What an entry is, for the eviction order and the eviction metric's `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Record,
    Dedupe,
    Link,
    Idempotency,
    Rate,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Record,
        Kind::Dedupe,
        Kind::Link,
        Kind::Idempotency,
        Kind::Rate,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Record => "record",
            Kind::Dedupe => "dedupe",
            Kind::Link => "link",
            Kind::Idempotency => "idempotency",
            Kind::Rate => "rate",
        }
    }

    /// A plain value's kind: a link, or else a record.
    fn of_value(key: &str) -> Kind {
        if LINK_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) {
            Kind::Link
        } else {
            Kind::Record
        }
    }

    /// An idempotency record's kind: a dedupe entry, or else a keyed one.
    fn of_claim(key: &str) -> Kind {
        if key.starts_with(DEDUPE_PREFIX) {
            Kind::Dedupe
        } else {
            Kind::Idempotency
        }
    }
}

/// Entries the store dropped by itself, by kind and by whether they were still live;
/// counted under the lock, reported to the metrics after it.
#[derive(Default)]
struct Tally([[u32; 2]; Kind::ALL.len()]);

impl Tally {
    fn note(&mut self, kind: Kind, live: bool) {
        self.0[kind as usize][usize::from(live)] += 1;
    }

    fn add(&mut self, other: &mut Tally) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter_mut()) {
            for (mine, theirs) in mine.iter_mut().zip(theirs.iter_mut()) {
                *mine += std::mem::take(theirs);
            }
        }
    }

    fn report(&self) {
        for (kind, counts) in Kind::ALL.iter().zip(&self.0) {
            for (live, &count) in ["false", "true"].into_iter().zip(counts) {
                if count > 0 {
                    metrics::counter!(
                        prometheus::STORE_EVICTIONS,
                        "kind" => kind.label(),
                        "live" => live
                    )
                    .increment(u64::from(count));
                }
            }
        }
    }
}

/// A value with the instant it lapses, if it does.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    expires_at: Option<Instant>,
}

impl<V> Timed<V> {
    fn lapsed(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
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

/// What one entry counts against the budget.
fn weight<V: HeapSize>(key: &str, value: &Timed<V>) -> usize {
    key.len()
        + size_of::<Box<str>>()
        + size_of::<Timed<V>>()
        + value.value.heap_size()
        + NODE_OVERHEAD
}

/// Entries of one kind, least recently written (or used) first, and what they weigh.
struct Entries<V> {
    map: LinkedHashMap<Box<str>, Timed<V>>,
    bytes: usize,
    /// The kind of an entry, by its key.
    kind: fn(&str) -> Kind,
    /// What this map dropped by itself since last reported.
    dropped: Tally,
}

impl Entries<Box<str>> {
    /// Whether `key` holds `expected` and has not lapsed.
    fn holds(&mut self, key: &str, expected: &str, now: Instant) -> bool {
        self.live(key, now)
            .is_some_and(|current| **current == *expected)
    }
}

impl<V: HeapSize> Entries<V> {
    fn new(kind: fn(&str) -> Kind) -> Self {
        Entries {
            map: LinkedHashMap::new(),
            bytes: 0,
            kind,
            dropped: Tally::default(),
        }
    }

    /// Stores `value` under `key` as the most recently written entry.
    fn set(&mut self, key: &str, value: V, expires_at: Option<Instant>) {
        let value = Timed { value, expires_at };
        let added = weight(key, &value);
        // An existing key keeps its allocation and moves to the back.
        match self.map.to_back(key) {
            Some(entry) => {
                self.bytes -= weight(key, entry);
                *entry = value;
            }
            None => {
                self.map.insert(key.into(), value);
            }
        }
        self.bytes += added;
    }

    /// Removes `key` at the caller's request (not an eviction).
    fn remove(&mut self, key: &str) -> Option<Timed<V>> {
        let old = self.map.remove(key)?;
        self.bytes -= weight(key, &old);
        Some(old)
    }

    /// Changes the entry under `key` in place, keeping its position.
    fn update(&mut self, key: &str, change: impl FnOnce(&mut Timed<V>)) {
        if let Some(entry) = self.map.get_mut(key) {
            self.bytes -= weight(key, entry);
            change(entry);
            self.bytes += weight(key, entry);
        }
    }

    /// The value under `key` unless it has lapsed; a lapsed one is dropped.
    fn live(&mut self, key: &str, now: Instant) -> Option<&V> {
        if self.map.get(key)?.lapsed(now) {
            self.remove(key);
            self.dropped.note((self.kind)(key), false);
            return None;
        }
        self.map.get(key).map(|entry| &entry.value)
    }

    /// Drops the oldest entry; false when there is none.
    fn evict_oldest(&mut self, now: Instant) -> bool {
        match self.map.pop_front() {
            Some((key, old)) => {
                self.bytes -= weight(&key, &old);
                self.dropped.note((self.kind)(&key), !old.lapsed(now));
                true
            }
            None => false,
        }
    }

    /// Drops lapsed entries from the front. Entries behind a live one wait until they
    /// are read, reach the front or a sweep finds them: this costs nothing when nothing
    /// has lapsed.
    fn drop_lapsed(&mut self, now: Instant) {
        while self.map.front().is_some_and(|(_, entry)| entry.lapsed(now)) {
            self.evict_oldest(now);
        }
    }

    /// Looks at up to `count` entries from the front: drops lapsed ones and moves live
    /// ones to the back. For guard state, which is never given up by age so its order
    /// does not matter, this finds lapsed entries hidden behind live ones a few at a
    /// time, at a bounded cost per call.
    fn rotate(&mut self, now: Instant, count: usize) {
        for _ in 0..count {
            match self.map.pop_front() {
                Some((key, entry)) if entry.lapsed(now) => {
                    self.bytes -= weight(&key, &entry);
                    self.dropped.note((self.kind)(&key), false);
                }
                Some((key, entry)) => {
                    self.map.insert(key, entry);
                }
                None => break,
            }
        }
    }

    /// Drops every lapsed entry.
    fn sweep(&mut self, now: Instant) {
        let Entries {
            map,
            bytes,
            kind,
            dropped,
        } = self;
        map.retain(|key, entry| {
            if entry.lapsed(now) {
                *bytes -= weight(key, entry);
                dropped.note(kind(key), false);
                false
            } else {
                true
            }
        });
    }
}

/// Everything the store holds.
struct Inner {
    /// Message records, their index by provider id and any other plain value that is
    /// not a link: history, oldest written first.
    records: Entries<Box<str>>,
    /// Answers to repeats within `DEDUPE_WINDOW`: history, oldest written first.
    dedupe: Entries<Record>,
    /// Telegram links: user data, least recently used first.
    links: Entries<Box<str>>,
    /// Guard state: claims in flight (keyed or dedupe) and `Idempotency-Key` answers.
    claims: Entries<Record>,
    /// Guard state: GCRA theoretical arrival times, in nanoseconds since `epoch`.
    rates: Entries<u64>,
    budget: usize,
    /// Live guard state alone outweighed the budget when last looked at.
    overloaded: bool,
    last_sweep: Option<Instant>,
}

impl Inner {
    fn bytes(&self) -> usize {
        self.records.bytes
            + self.dedupe.bytes
            + self.links.bytes
            + self.claims.bytes
            + self.rates.bytes
    }

    fn over(&self) -> bool {
        self.bytes() > self.budget
    }

    /// Gives up entries in the eviction order until the store fits its budget, and
    /// notes whether guard state alone keeps it over.
    fn make_room(&mut self, now: Instant) {
        // Lapsed entries first, over budget or not (so the fill reported is what is
        // live): those at the front of each map, which costs nothing when none has
        // lapsed. History lapses in about the order it was written (one lifetime per
        // kind), so its front is where its lapsed entries are.
        self.records.drop_lapsed(now);
        self.dedupe.drop_lapsed(now);
        self.links.drop_lapsed(now);
        self.claims.drop_lapsed(now);
        self.rates.drop_lapsed(now);
        if !self.over() {
            self.overloaded = false;
            return;
        }
        // And a few guard entries hidden behind live ones.
        self.claims.rotate(now, GUARD_LOOKS);
        self.rates.rotate(now, GUARD_LOOKS);
        while self.over() && self.records.evict_oldest(now) {}
        while self.over() && self.dedupe.evict_oldest(now) {}
        while self.over() && self.links.evict_oldest(now) {}
        // Only guard state is left: look for every lapsed entry before saying the store
        // is full of live guard state.
        if self.over() && self.last_sweep.is_none_or(|at| now >= at + SWEEP_EVERY) {
            self.last_sweep = Some(now);
            self.claims.sweep(now);
            self.rates.sweep(now);
        }
        self.overloaded = self.over();
    }

    /// What the store dropped since last asked.
    fn take_dropped(&mut self) -> Tally {
        let mut tally = Tally::default();
        tally.add(&mut self.records.dropped);
        tally.add(&mut self.dedupe.dropped);
        tally.add(&mut self.links.dropped);
        tally.add(&mut self.claims.dropped);
        tally.add(&mut self.rates.dropped);
        tally
    }

    /// The idempotency record under `key`, unless it has lapsed.
    fn held(&mut self, key: &str, now: Instant) -> Option<&Record> {
        if self.claims.live(key, now).is_some() {
            return self.claims.map.get(key).map(|entry| &entry.value);
        }
        self.dedupe.live(key, now)
    }

    /// The map a plain value under `key` lives in.
    fn values(&mut self, key: &str) -> &mut Entries<Box<str>> {
        match Kind::of_value(key) {
            Kind::Link => &mut self.links,
            _ => &mut self.records,
        }
    }
}

/// State in this process only, within about its memory budget (see the module docs for
/// what goes first when it is spent).
pub struct MemoryStore {
    inner: Mutex<Inner>,
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
            overloaded: AtomicBool::new(false),
            epoch: Instant::now(),
        }
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
        let now_ns = self.nanos_at(now);
        self.with(|inner| {
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
            inner.make_room(now);
            RateDecision::Allowed
        })
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

    fn memory_bytes(&self) -> u64 {
        self.with(|inner| inner.bytes() as u64)
    }

    fn overloaded(&self) -> bool {
        self.overloaded_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
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
