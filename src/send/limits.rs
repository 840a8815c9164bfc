//! Stage 4: the rate limits (per number, block of numbers, caller, region, global),
//! counted in the shared store before dispatch and given back when the send provably
//! went nowhere.

use otp_relay_providers::OutboundMessage;

use super::SendError;
use crate::guards::access::Identity;
use crate::guards::rate;
use crate::guards::Limits;
use crate::store::Store;

/// Counts the send against the limits, or refuses it.
pub async fn acquire(
    store: &dyn Store,
    limits: &Limits,
    message: &OutboundMessage,
    caller: &Identity,
) -> Result<(), SendError> {
    match rate::check(store, limits, &message.to, caller).await? {
        Ok(()) => Ok(()),
        Err(rate::Refused::Limited(limited)) => {
            tracing::warn!(
                to = %message.to.masked(),
                scope = limited.scope.as_str(),
                "rate limit reached"
            );
            Err(SendError::RateLimited(limited))
        }
        Err(rate::Refused::Overloaded) => {
            tracing::warn!("memory store full of live limits and claims: refusing sends");
            Err(SendError::Overloaded)
        }
    }
}

/// Nothing reached a provider: the send uses up nobody's allowance.
pub async fn refund(
    store: &dyn Store,
    limits: &Limits,
    message: &OutboundMessage,
    caller: &Identity,
) {
    if let Err(error) = rate::refund(store, limits, &message.to, caller).await {
        tracing::warn!(%error, "could not give back the rate-limit allowance");
    }
}
