//! Stage 4: the rate limits (per number, block of numbers, caller, region, global),
//! counted in the shared store before dispatch and given back when the send provably
//! went nowhere. When the send has an idempotency key they are counted with its claim
//! (stage 3) in one store operation: [`counting`] names them for it.

use otp_relay_providers::OutboundMessage;

use super::SendError;
use crate::guards::access::Identity;
use crate::guards::rate::{self, Counting, Limited};
use crate::guards::Limits;
use crate::store::Store;

/// The limits to count with the idempotency claim; `None` while the store is
/// [overloaded](Store::overloaded), which [`acquire`] then refuses.
pub fn counting(
    store: &dyn Store,
    limits: &Limits,
    message: &OutboundMessage,
    caller: &Identity,
) -> Option<Counting> {
    (!store.overloaded()).then(|| Counting::new(limits, &message.to, caller))
}

/// Counts the send against the limits, or refuses it.
pub async fn acquire(
    store: &dyn Store,
    limits: &Limits,
    message: &OutboundMessage,
    caller: &Identity,
) -> Result<(), SendError> {
    match rate::check(store, limits, &message.to, caller).await? {
        Ok(()) => Ok(()),
        Err(rate::Refused::Limited(limited)) => Err(refused(message, limited)),
        Err(rate::Refused::Overloaded) => {
            tracing::warn!("memory store full of live limits and claims: refusing sends");
            Err(SendError::Overloaded)
        }
    }
}

/// The refusal of a send a limit refused, logged.
pub fn refused(message: &OutboundMessage, limited: Limited) -> SendError {
    tracing::warn!(
        to = %message.to.masked(),
        scope = limited.scope.as_str(),
        "rate limit reached"
    );
    SendError::RateLimited(limited)
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
