//! A rate limit's shape, `N/DURATION`, as the stores count it.

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
