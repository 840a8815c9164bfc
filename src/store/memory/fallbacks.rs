//! Pending channel fallbacks in this process: by due time and by message id, within a
//! share of the memory budget, lost with the process. A taken one stays, leased: in the
//! due order at its lease's end, so that a lease that ran out comes due again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::store::{StoreError, TakenFallback};

/// What one pending fallback costs besides its id and payload: two map entries.
const ENTRY_OVERHEAD: usize = 160;

struct Pending {
    /// When it is due, or, leased, when the lease runs out.
    due: Instant,
    leased: bool,
    /// Tells apart two schedules of one id at one instant in the due order.
    seq: u64,
    hastened: bool,
    payload: Box<str>,
    expires_at: Instant,
}

/// The pending fallbacks: each id once, in due order.
pub(super) struct Fallbacks {
    by_id: HashMap<Box<str>, Pending>,
    /// (due, seq, id), soonest first.
    by_due: BTreeSet<(Instant, u64, Box<str>)>,
    bytes: usize,
    budget: usize,
    seq: u64,
}

fn weight(id: &str, payload: &str) -> usize {
    2 * id.len() + payload.len() + ENTRY_OVERHEAD
}

impl Fallbacks {
    /// At most `budget` bytes of pending fallbacks.
    pub(super) fn new(budget: usize) -> Self {
        Fallbacks {
            by_id: HashMap::new(),
            by_due: BTreeSet::new(),
            bytes: 0,
            budget,
            seq: 0,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn schedule(
        &mut self,
        id: &str,
        payload: &str,
        due: Instant,
        expires_at: Instant,
    ) -> Result<(), StoreError> {
        self.remove(id);
        let added = weight(id, payload);
        if self.bytes + added > self.budget {
            return Err(StoreError(
                "pending channel fallbacks fill their share of the memory budget".into(),
            ));
        }
        self.seq += 1;
        self.by_due.insert((due, self.seq, id.into()));
        self.by_id.insert(
            id.into(),
            Pending {
                due,
                leased: false,
                seq: self.seq,
                hastened: false,
                payload: payload.into(),
                expires_at,
            },
        );
        self.bytes += added;
        Ok(())
    }

    /// Drops `id`'s fallback, waiting or leased; returns whether there was one.
    pub(super) fn cancel(&mut self, id: &str) -> bool {
        self.remove(id).is_some()
    }

    fn remove(&mut self, id: &str) -> Option<(Box<str>, Pending)> {
        let (id, pending) = self.by_id.remove_entry(id)?;
        self.by_due.remove(&(pending.due, pending.seq, id.clone()));
        self.bytes -= weight(&id, &pending.payload);
        Some((id, pending))
    }

    pub(super) fn hasten(&mut self, id: &str, now: Instant) -> bool {
        let Some(pending) = self.by_id.get_mut(id).filter(|p| !p.leased) else {
            return false;
        };
        self.by_due.remove(&(pending.due, pending.seq, id.into()));
        pending.due = now;
        pending.hastened = true;
        self.by_due.insert((now, pending.seq, id.into()));
        true
    }

    /// Takes up to `limit` due fallbacks, or ones whose lease ran out, and leases each
    /// for `lease`; lapsed ones met on the way are dropped.
    pub(super) fn take_due(
        &mut self,
        limit: usize,
        lease: Duration,
        now: Instant,
    ) -> Vec<TakenFallback> {
        let mut taken = Vec::new();
        // Back in the due order once the look is over, so that none is met twice.
        let mut leased = Vec::new();
        while taken.len() < limit {
            let Some((due, _, _)) = self.by_due.first() else {
                break;
            };
            if *due > now {
                break;
            }
            let Some((_, seq, id)) = self.by_due.pop_first() else {
                break;
            };
            let lapsed = match self.by_id.get(&id) {
                None => continue,
                Some(pending) => pending.expires_at <= now,
            };
            if lapsed {
                self.remove(&id);
                continue;
            }
            let Some(pending) = self.by_id.get_mut(&id) else {
                continue;
            };
            let retaken = pending.leased;
            pending.leased = true;
            pending.due = now + lease;
            leased.push((pending.due, seq, id.clone()));
            taken.push(TakenFallback {
                id: id.into(),
                payload: pending.payload.to_string(),
                hastened: pending.hastened,
                retaken,
            });
        }
        self.by_due.extend(leased);
        taken
    }

    /// Ends `id`'s fallback: its taker is done with it.
    pub(super) fn finish(&mut self, id: &str) {
        self.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn due_fallbacks_come_out_once_soonest_first_and_lapsed_ones_never() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut pending = Fallbacks::new(10_000);
        let later = now + 60 * second;
        pending
            .schedule("b", "pb", now + 2 * second, later)
            .unwrap();
        pending.schedule("a", "pa", now + second, later).unwrap();
        pending.schedule("gone", "p", now, now).unwrap();
        pending
            .schedule("c", "pc", now + 30 * second, later)
            .unwrap();
        assert!(pending.hasten("c", now + second));
        assert!(!pending.hasten("unknown", now));

        let taken = pending.take_due(10, LEASE, now + 2 * second);
        let ids: Vec<_> = taken.iter().map(|t| (t.id.as_str(), t.hastened)).collect();
        assert_eq!(ids, [("a", false), ("c", true), ("b", false)]);
        assert!(taken.iter().all(|t| !t.retaken));
        // Leased: not again while the lease runs, and a failure report leaves it be.
        assert!(pending.take_due(10, LEASE, now + 3 * second).is_empty());
        assert!(!pending.hasten("a", now + 3 * second));
        pending.finish("a");
        assert!(pending.cancel("b"));
        // The lease of "c" ran out: taken again, still hastened.
        let again = pending.take_due(10, LEASE, now + 13 * second);
        let ids: Vec<_> = again
            .iter()
            .map(|t| (t.id.as_str(), t.hastened, t.retaken))
            .collect();
        assert_eq!(ids, [("c", true, true)]);
        // Past the payload's life a lapsed lease is dropped, not taken.
        assert!(pending.take_due(10, LEASE, later).is_empty());
        assert_eq!(pending.bytes(), 0);
    }

    #[test]
    fn a_full_share_refuses_more_and_a_repeat_replaces() {
        let now = Instant::now();
        let mut pending = Fallbacks::new(weight("a", "p") * 2);
        pending
            .schedule("a", "p", now, now + Duration::from_secs(9))
            .unwrap();
        pending
            .schedule("a", "p", now, now + Duration::from_secs(9))
            .unwrap();
        pending
            .schedule("b", "p", now, now + Duration::from_secs(9))
            .unwrap();
        assert!(pending.schedule("c", "p", now, now).is_err());
        assert!(pending.cancel("a"));
        assert_eq!(pending.take_due(1, LEASE, now).len(), 1);
        // Leased, it still counts until finished.
        assert!(pending.schedule("c", "p", now, now).is_ok());
        assert!(pending.schedule("d", "p", now, now).is_err());
        pending.finish("b");
        pending.finish("c");
        assert_eq!(pending.bytes(), 0);
    }
}
