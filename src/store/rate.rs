//! A rate limit's shape, `N/DURATION`, and the GCRA arithmetic both stores count it
//! with.

use std::time::Duration;

/// `N/DURATION`: at most N events per sliding DURATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u32,
    pub per: Duration,
}

/// Below this time between two events a rate must divide its period into whole
/// nanoseconds. The stores count time in nanoseconds: at one or more microseconds
/// between events, rounding the interval down to whole nanoseconds changes a rate by
/// under 0.1%; below it only an exact interval keeps the rate what it says.
pub const MIN_RATE_INTERVAL: Duration = Duration::from_micros(1);

impl RateSpec {
    /// Whether the limiter counts this rate as written: its interval is a whole number of
    /// nanoseconds, or long enough that rounding it to one does not matter.
    pub fn is_exact(&self) -> bool {
        self.interval() >= MIN_RATE_INTERVAL
            || self.per.as_nanos() % u128::from(self.count.max(1)) == 0
    }

    /// The time between two events at the sustained rate: `per / count`, rounded down
    /// to a whole nanosecond, at least one.
    pub fn interval(&self) -> Duration {
        let nanos = self.per.as_nanos() / u128::from(self.count.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1))
    }
}

/// GCRA in nanoseconds: given the stored theoretical arrival time (`tat`) and `now`,
/// returns the new `tat` to store, or how long to wait (never zero).
///
/// Each event moves `tat` one interval (`per / count`) ahead of the later of itself and
/// `now`; an event is admitted while `tat` stays within `count` intervals of `now`. So a
/// burst of exactly `count` fits at one instant, and one more each interval after it.
pub(super) fn gcra(tat: Option<u64>, now: u64, spec: RateSpec) -> Result<u64, Duration> {
    let (interval, window) = gcra_steps(spec);
    let tat = tat.map_or(now, |tat| tat.max(now));
    let ahead = (tat - now).saturating_add(interval);
    if ahead > window {
        Err(Duration::from_nanos(ahead - window))
    } else {
        Ok(now.saturating_add(ahead))
    }
}

/// A limit's interval and window (`count` intervals: how far ahead of now a counter may
/// run), in nanoseconds.
pub(super) fn gcra_steps(spec: RateSpec) -> (u64, u64) {
    let interval = nanos(spec.interval());
    (
        interval,
        interval.saturating_mul(u64::from(spec.count.max(1))),
    )
}

/// Gives one event back to a GCRA counter: `tat` moves one interval back, never before
/// `now`. `None` when nothing is left to count (the counter may go).
pub(super) fn gcra_refund(tat: u64, now: u64, spec: RateSpec) -> Option<u64> {
    let tat = tat.saturating_sub(nanos(spec.interval()));
    (tat > now).then_some(tat)
}

pub(super) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_of_count_then_one_per_interval() {
        let spec = RateSpec {
            count: 5,
            per: Duration::from_secs(10),
        };
        let second = 1_000_000_000;
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(gcra(tat, second, spec).expect("within the burst"));
        }
        assert_eq!(gcra(tat, second, spec), Err(Duration::from_secs(2)));
        // One interval later exactly one more fits.
        let later = gcra(tat, 3 * second, spec).expect("replenished");
        assert_eq!(
            gcra(Some(later), 3 * second, spec),
            Err(Duration::from_secs(2))
        );
    }

    #[test]
    fn gcra_counts_rates_finer_than_a_millisecond() {
        // A million a second: the burst is a million, not the thousand milliseconds of a
        // second, and the wait after it is one microsecond, not zero.
        let spec = RateSpec {
            count: 1_000_000,
            per: Duration::from_secs(1),
        };
        let mut tat = None;
        for _ in 0..1_000_000 {
            tat = Some(gcra(tat, 0, spec).expect("within the burst"));
        }
        assert_eq!(gcra(tat, 0, spec), Err(Duration::from_micros(1)));
        assert!(gcra(tat, 1_000, spec).is_ok());
    }

    #[test]
    fn a_refund_moves_back_one_interval_but_not_before_now() {
        let spec = RateSpec {
            count: 2,
            per: Duration::from_secs(10),
        };
        let tat = gcra(gcra(None, 0, spec).ok(), 0, spec).unwrap();
        assert!(gcra(Some(tat), 0, spec).is_err());
        let refunded = gcra_refund(tat, 0, spec);
        assert_eq!(refunded, Some(5_000_000_000));
        assert!(gcra(refunded, 0, spec).is_ok());
        assert_eq!(gcra_refund(5_000_000_000, 0, spec), None);
        assert_eq!(gcra_refund(5_000_000_000, 4_000_000_000, spec), None);
    }
}
