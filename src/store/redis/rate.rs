//! Rate limits on Redis: the GCRA scripts' invocations, on the server's clock or, for
//! tests, a fixed one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::RedisStore;
use crate::store::{RateDecision, RateLimit, StoreError};

impl RedisStore {
    /// [`Store::rate_acquire`] as if the server's clock read `at`, for tests: counters
    /// written so are kept until deleted.
    pub async fn rate_acquire_at(
        &self,
        limits: &[RateLimit<'_>],
        at: SystemTime,
    ) -> Result<RateDecision, StoreError> {
        self.rate_acquire_on(limits, Some(at)).await
    }

    /// [`Store::rate_refund`] as if the server's clock read `at`, for tests.
    pub async fn rate_refund_at(
        &self,
        limits: &[RateLimit<'_>],
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.rate_refund_on(limits, Some(at)).await
    }

    pub(super) async fn rate_acquire_on(
        &self,
        limits: &[RateLimit<'_>],
        at: Option<SystemTime>,
    ) -> Result<RateDecision, StoreError> {
        let mut invocation = self.rate.prepare_invoke();
        clock(&mut invocation, at);
        for limit in limits {
            let (interval, window) = crate::store::rate::gcra_steps(limit.spec);
            invocation
                .key(self.key(limit.key))
                .arg(interval)
                .arg(window);
        }
        let (refused, wait): (usize, u64) = self
            .bounded(
                |mut connection| async move { Ok(invocation.invoke_async(&mut connection).await?) },
            )
            .await?;
        Ok(match refused.checked_sub(1) {
            None => RateDecision::Allowed,
            Some(limit) => RateDecision::Limited {
                limit,
                retry_after: Duration::from_nanos(wait.max(1)),
            },
        })
    }

    pub(super) async fn rate_refund_on(
        &self,
        limits: &[RateLimit<'_>],
        at: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let mut invocation = self.refund.prepare_invoke();
        clock(&mut invocation, at);
        for limit in limits {
            invocation
                .key(self.key(limit.key))
                .arg(crate::store::rate::nanos(limit.spec.interval()));
        }
        self.bounded(|mut connection| async move {
            Ok(invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map(drop)?)
        })
        .await
    }
}

/// The clock arguments of the rate scripts: empty for the server's own, else `at`.
pub(super) fn clock(invocation: &mut redis::ScriptInvocation<'_>, at: Option<SystemTime>) {
    match at.map(|at| at.duration_since(UNIX_EPOCH).unwrap_or_default()) {
        None => invocation.arg("").arg(""),
        Some(since) => invocation.arg(since.as_secs()).arg(since.subsec_micros()),
    };
}
