//! Pending channel fallbacks in this process: by due time and by message id, within a
//! share of the memory budget, lost with the process.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::store::{StoreError, TakenFallback};

/// What one pending fallback costs besides its id and payload: two map entries.
const ENTRY_OVERHEAD: usize = 160;

struct Pending {
    due: Instant,
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
                seq: self.seq,
                hastened: false,
                payload: payload.into(),
                expires_at,
            },
        );
        self.bytes += added;
        Ok(())
    }

    /// Drops `id`'s pending fallback; returns whether there was one.
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
        let Some(pending) = self.by_id.get_mut(id) else {
            return false;
        };
        self.by_due.remove(&(pending.due, pending.seq, id.into()));
        pending.due = now;
        pending.hastened = true;
        self.by_due.insert((now, pending.seq, id.into()));
        true
    }

    /// Takes up to `limit` due fallbacks; lapsed ones met on the way are dropped.
    pub(super) fn take_due(&mut self, limit: usize, now: Instant) -> Vec<TakenFallback> {
        let mut taken = Vec::new();
        while taken.len() < limit {
            let Some((due, _, id)) = self.by_due.first() else {
                break;
            };
            if *due > now {
                break;
            }
            let id = id.clone();
            let Some((id, pending)) = self.remove(&id) else {
                break;
            };
            if pending.expires_at > now {
                taken.push(TakenFallback {
                    id: id.into(),
                    payload: pending.payload.into(),
                    hastened: pending.hastened,
                });
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

        let taken = pending.take_due(10, now + 2 * second);
        let ids: Vec<_> = taken.iter().map(|t| (t.id.as_str(), t.hastened)).collect();
        assert_eq!(ids, [("a", false), ("c", true), ("b", false)]);
        assert!(pending.take_due(10, later).is_empty());
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
        assert_eq!(pending.take_due(1, now).len(), 1);
        assert_eq!(pending.bytes(), 0);
    }
}
