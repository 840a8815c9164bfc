//! The operations of one send that touch several kinds of state, each in one round trip
//! on a single server: the claim and the limits in one script, the record and the
//! claim's settlement in another. On a cluster their keys sit in different
//! slots, so there they run as the plain operations one after the other.

use std::time::{Duration, SystemTime};

use super::rate::clock;
use super::{in_flight, millis, parse_record, RedisStore, Topology};
use crate::store::combined::{claim_then_acquire, put_then_settle};
use crate::store::{ClaimAndCount, PutAndSettle, RateLimit, Record, Settle, StoreError};

impl RedisStore {
    /// [`Store::claim_and_acquire`](crate::store::Store::claim_and_acquire) as if the
    /// server's clock read `at`, for tests (see [`RedisStore::rate_acquire_at`]).
    pub async fn claim_and_acquire_at(
        &self,
        claim: (&str, &str, &str, Duration),
        limits: &[RateLimit<'_>],
        at: SystemTime,
    ) -> Result<ClaimAndCount, StoreError> {
        self.claim_and_acquire_on(claim, limits, Some(at)).await
    }

    pub(super) async fn claim_and_acquire_on(
        &self,
        (key, token, fingerprint, ttl): (&str, &str, &str, Duration),
        limits: &[RateLimit<'_>],
        at: Option<SystemTime>,
    ) -> Result<ClaimAndCount, StoreError> {
        if self.topology == Topology::Cluster {
            // The rate keys share one slot, the claim's key is elsewhere.
            let acquire = self.rate_acquire_on(limits, at);
            return claim_then_acquire(self, (key, token, fingerprint, ttl), acquire).await;
        }
        let mut invocation = self.claim_rate.prepare_invoke();
        clock(&mut invocation, at);
        for limit in limits {
            let (interval, window) = crate::store::rate::gcra_steps(limit.spec);
            invocation
                .key(self.key(limit.key))
                .arg(interval)
                .arg(window);
        }
        invocation
            .key(self.key(key))
            .arg(in_flight(token, fingerprint))
            .arg(millis(ttl));
        let (verdict, detail): (i64, redis::Value) = self
            .bounded(
                |mut connection| async move { Ok(invocation.invoke_async(&mut connection).await?) },
            )
            .await?;
        Ok(match verdict {
            0 => ClaimAndCount::Claimed,
            -1 => {
                let held: String = redis::from_redis_value(detail).map_err(unreadable)?;
                ClaimAndCount::Held(parse_record(&held)?.into_claim())
            }
            refused => ClaimAndCount::Limited {
                limit: usize::try_from(refused - 1)
                    .ok()
                    .filter(|&limit| limit < limits.len())
                    .ok_or_else(|| StoreError("the claim script named no limit".into()))?,
                retry_after: Duration::from_nanos(
                    redis::from_redis_value::<u64>(detail)
                        .map_err(unreadable)?
                        .max(1),
                ),
            },
        })
    }

    pub(super) async fn put_and_settle_on(
        &self,
        entries: &[(&str, &str)],
        ttl: Option<Duration>,
        claim: &Settle<'_>,
    ) -> PutAndSettle {
        if self.topology == Topology::Cluster {
            // A record, its index and the claim each hash to a slot of their own.
            return put_then_settle(self, entries, ttl, claim).await;
        }
        let mut invocation = self.put_settle.prepare_invoke();
        for &(key, _) in entries {
            invocation.key(self.key(key));
        }
        invocation.key(self.key(claim.key));
        for &(_, value) in entries {
            invocation.arg(value);
        }
        invocation
            .arg(ttl.map(|ttl| millis(ttl).to_string()).unwrap_or_default())
            .arg(in_flight(claim.token, claim.fingerprint));
        if let Some((answer, keep)) = claim.answer {
            let done = serde_json::to_string(&Record::Done {
                fingerprint: claim.fingerprint.to_owned(),
                answer: answer.clone(),
            })
            .expect("a record serializes");
            invocation.arg(done).arg(millis(keep));
        }
        let result = self
            .bounded(|mut connection| async move {
                invocation.invoke_async::<i64>(&mut connection).await?;
                Ok(())
            })
            .await;
        PutAndSettle {
            put: result.clone(),
            settle: result,
        }
    }
}

fn unreadable(_: redis::ParsingError) -> StoreError {
    StoreError("unreadable answer from the claim script".into())
}
