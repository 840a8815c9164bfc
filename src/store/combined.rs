//! The operations of one send that touch several kinds of state, made of the plain
//! operations one after the other: what a store does when it cannot do them in one step
//! (and what the stores that can must decide alike).

use std::future::Future;
use std::time::Duration;

use super::{Claim, ClaimAndCount, PutAndSettle, RateDecision, Settle, Store, StoreError};

/// [`Store::claim`], then `acquire` (the limits' [`Store::rate_acquire`]) when claimed,
/// then [`Store::release`] when a limit refuses.
pub(crate) async fn claim_then_acquire(
    store: &(impl Store + ?Sized),
    (key, token, fingerprint, ttl): (&str, &str, &str, Duration),
    acquire: impl Future<Output = Result<RateDecision, StoreError>>,
) -> Result<ClaimAndCount, StoreError> {
    match store.claim(key, token, fingerprint, ttl).await? {
        Claim::Claimed => {}
        held => return Ok(ClaimAndCount::Held(held)),
    }
    match acquire.await {
        Ok(RateDecision::Allowed) => Ok(ClaimAndCount::Claimed),
        Ok(RateDecision::Limited { limit, retry_after }) => {
            store.release(key, token).await?;
            Ok(ClaimAndCount::Limited { limit, retry_after })
        }
        Err(error) => {
            // Nothing was counted: the claim goes too (else it lapses by itself).
            let _ = store.release(key, token).await;
            Err(error)
        }
    }
}

/// [`Store::put`], then [`Store::finish`] or [`Store::release`].
pub(crate) async fn put_then_settle(
    store: &(impl Store + ?Sized),
    entries: &[(&str, &str)],
    ttl: Option<Duration>,
    claim: &Settle<'_>,
) -> PutAndSettle {
    let put = store.put(entries, ttl).await;
    let settle = match claim.answer {
        Some((answer, keep)) => {
            store
                .finish(claim.key, claim.token, claim.fingerprint, answer, keep)
                .await
        }
        None => store.release(claim.key, claim.token).await,
    };
    PutAndSettle { put, settle }
}
