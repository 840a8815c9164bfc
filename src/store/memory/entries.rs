//! The store's maps: entries of one kind in write (or use) order, with what they weigh
//! against the budget and what they dropped by themselves.

use std::mem::size_of;
use std::time::Instant;

use hashlink::LinkedHashMap;

use crate::prometheus;
use crate::store::Record;

/// What an entry costs besides its key, its value and what the value holds on the heap:
/// the map's links and table slot and the allocator's headers. Measured on the
/// benchmark: with this, the process grows by about the budget once the maps fill it.
const NODE_OVERHEAD: usize = 96;

/// Keys under which the idempotency guard keeps answers to repeats without a key
/// (`DEDUPE_WINDOW`): history, unlike `Idempotency-Key` answers (`idem:key:`).
const DEDUPE_PREFIX: &str = "idem:dedupe:";

/// Keys of Telegram links (`chat:` by number, `chat-owner:` by chat): user data.
const LINK_PREFIXES: [&str; 2] = ["chat:", "chat-owner:"];

/// What an entry is, for the eviction order and the eviction metric's `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Record,
    Dedupe,
    Link,
    Idempotency,
    Rate,
}

impl Kind {
    pub(super) const ALL: [Kind; 5] = [
        Kind::Record,
        Kind::Dedupe,
        Kind::Link,
        Kind::Idempotency,
        Kind::Rate,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Record => "record",
            Kind::Dedupe => "dedupe",
            Kind::Link => "link",
            Kind::Idempotency => "idempotency",
            Kind::Rate => "rate",
        }
    }

    /// A plain value's kind: a link, or else a record.
    pub(super) fn of_value(key: &str) -> Kind {
        if LINK_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) {
            Kind::Link
        } else {
            Kind::Record
        }
    }

    /// An idempotency record's kind: a dedupe entry, or else a keyed one.
    pub(super) fn of_claim(key: &str) -> Kind {
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
pub(super) struct Tally(pub(super) [[u32; 2]; Kind::ALL.len()]);

impl Tally {
    pub(super) fn note(&mut self, kind: Kind, live: bool) {
        self.0[kind as usize][usize::from(live)] += 1;
    }

    pub(super) fn add(&mut self, other: &mut Tally) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter_mut()) {
            for (mine, theirs) in mine.iter_mut().zip(theirs.iter_mut()) {
                *mine += std::mem::take(theirs);
            }
        }
    }

    pub(super) fn report(&self) {
        for (kind, counts) in Kind::ALL.iter().zip(&self.0) {
            for (live, &count) in ["false", "true"].into_iter().zip(counts) {
                if count > 0 {
                    prometheus::counter(
                        prometheus::STORE_EVICTIONS,
                        &[("kind", kind.label()), ("live", live)],
                    )
                    .increment(u64::from(count));
                }
            }
        }
    }
}

/// A value with the instant it lapses, if it does.
#[derive(Clone)]
pub(super) struct Timed<V> {
    pub(super) value: V,
    pub(super) expires_at: Option<Instant>,
}

impl<V> Timed<V> {
    pub(super) fn lapsed(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Bytes a value holds on the heap, for the memory budget.
pub(super) trait HeapSize {
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
pub(super) fn weight<V: HeapSize>(key: &str, value: &Timed<V>) -> usize {
    key.len()
        + size_of::<Box<str>>()
        + size_of::<Timed<V>>()
        + value.value.heap_size()
        + NODE_OVERHEAD
}

/// Entries of one kind, least recently written (or used) first, and what they weigh.
pub(super) struct Entries<V> {
    pub(super) map: LinkedHashMap<Box<str>, Timed<V>>,
    pub(super) bytes: usize,
    /// The kind of an entry, by its key.
    pub(super) kind: fn(&str) -> Kind,
    /// What this map dropped by itself since last reported.
    pub(super) dropped: Tally,
}

impl Entries<Box<str>> {
    /// Whether `key` holds `expected` and has not lapsed.
    pub(super) fn holds(&mut self, key: &str, expected: &str, now: Instant) -> bool {
        self.live(key, now)
            .is_some_and(|current| **current == *expected)
    }
}

impl<V: HeapSize> Entries<V> {
    pub(super) fn new(kind: fn(&str) -> Kind) -> Self {
        Entries {
            map: LinkedHashMap::new(),
            bytes: 0,
            kind,
            dropped: Tally::default(),
        }
    }

    /// Stores `value` under `key` as the most recently written entry.
    pub(super) fn set(&mut self, key: &str, value: V, expires_at: Option<Instant>) {
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
    pub(super) fn remove(&mut self, key: &str) -> Option<Timed<V>> {
        let old = self.map.remove(key)?;
        self.bytes -= weight(key, &old);
        Some(old)
    }

    /// Changes the entry under `key` in place, keeping its position.
    pub(super) fn update(&mut self, key: &str, change: impl FnOnce(&mut Timed<V>)) {
        if let Some(entry) = self.map.get_mut(key) {
            self.bytes -= weight(key, entry);
            change(entry);
            self.bytes += weight(key, entry);
        }
    }

    /// The value under `key` unless it has lapsed; a lapsed one is dropped.
    pub(super) fn live(&mut self, key: &str, now: Instant) -> Option<&V> {
        if self.map.get(key)?.lapsed(now) {
            self.remove(key);
            self.dropped.note((self.kind)(key), false);
            return None;
        }
        self.map.get(key).map(|entry| &entry.value)
    }

    /// Drops the oldest entry; false when there is none.
    pub(super) fn evict_oldest(&mut self, now: Instant) -> bool {
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
    pub(super) fn drop_lapsed(&mut self, now: Instant) {
        while self.map.front().is_some_and(|(_, entry)| entry.lapsed(now)) {
            self.evict_oldest(now);
        }
    }

    /// Looks at up to `count` entries from the front: drops lapsed ones and moves live
    /// ones to the back. For guard state, which is never given up by age so its order
    /// does not matter, this finds lapsed entries hidden behind live ones a few at a
    /// time, at a bounded cost per call.
    pub(super) fn rotate(&mut self, now: Instant, count: usize) {
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
    pub(super) fn sweep(&mut self, now: Instant) {
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
