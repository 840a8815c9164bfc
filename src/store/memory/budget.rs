//! Everything the memory store holds, and the order in which it gives entries up when
//! they outweigh its budget.

use std::time::{Duration, Instant};

use super::entries::{Entries, Kind, Tally};
use crate::store::Record;

/// Guard entries looked at for having lapsed each time the budget is exceeded.
const GUARD_LOOKS: usize = 2;

/// When only guard state is left over the budget, every guard entry is looked at for
/// having lapsed, at most this often: a pass costs a walk over all of them.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Everything the store holds.
pub(super) struct Inner {
    /// Message records, their index by provider id and any other plain value that is
    /// not a link: history, oldest written first.
    pub(super) records: Entries<Box<str>>,
    /// Answers to repeats within `DEDUPE_WINDOW`: history, oldest written first.
    pub(super) dedupe: Entries<Record>,
    /// Telegram links: user data, least recently used first.
    pub(super) links: Entries<Box<str>>,
    /// Guard state: claims in flight (keyed or dedupe) and `Idempotency-Key` answers.
    pub(super) claims: Entries<Record>,
    /// Guard state: GCRA theoretical arrival times, in nanoseconds since `epoch`.
    pub(super) rates: Entries<u64>,
    pub(super) budget: usize,
    /// Live guard state alone outweighed the budget when last looked at.
    pub(super) overloaded: bool,
    pub(super) last_sweep: Option<Instant>,
}

impl Inner {
    pub(super) fn bytes(&self) -> usize {
        self.records.bytes
            + self.dedupe.bytes
            + self.links.bytes
            + self.claims.bytes
            + self.rates.bytes
    }

    pub(super) fn over(&self) -> bool {
        self.bytes() > self.budget
    }

    /// Gives up entries in the eviction order until the store fits its budget, and
    /// notes whether guard state alone keeps it over.
    pub(super) fn make_room(&mut self, now: Instant) {
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
    pub(super) fn take_dropped(&mut self) -> Tally {
        let mut tally = Tally::default();
        tally.add(&mut self.records.dropped);
        tally.add(&mut self.dedupe.dropped);
        tally.add(&mut self.links.dropped);
        tally.add(&mut self.claims.dropped);
        tally.add(&mut self.rates.dropped);
        tally
    }

    /// The idempotency record under `key`, unless it has lapsed.
    pub(super) fn held(&mut self, key: &str, now: Instant) -> Option<&Record> {
        if self.claims.live(key, now).is_some() {
            return self.claims.map.get(key).map(|entry| &entry.value);
        }
        self.dedupe.live(key, now)
    }

    /// The map a plain value under `key` lives in.
    pub(super) fn values(&mut self, key: &str) -> &mut Entries<Box<str>> {
        match Kind::of_value(key) {
            Kind::Link => &mut self.links,
            _ => &mut self.records,
        }
    }
}
